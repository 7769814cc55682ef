//! Reservations in the state machine (essay below, written with the rest).

mod reads;

pub use reads::{due_holds, reservation, sku_records, store_records};
