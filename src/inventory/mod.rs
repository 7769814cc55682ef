//! The inventory domain: records, commands and the pure `apply` function.
//!
//! This module is the *meaning* of stockraft. Everything else (Raft, sled, HTTP) exists to feed
//! it the same sequence of [`Request`]s on every node. It therefore obeys three rules:
//!
//! 1. **Pure.** [`apply`] reads only its arguments: the current state (through [`StateView`]),
//!    the request, and an [`ApplyContext`] holding the log index and the log time (derived from
//!    the leaders' stamps by [`next_log_time`], bounded per entry: see `log_time`).
//!    It never reads a clock, draws randomness, does I/O or iterates a `HashMap`. Given the same
//!    log, every replica computes the same state *and the same answers*.
//! 2. **Rejections are values.** A version mismatch, insufficient stock, an arithmetic overflow or
//!    a reused idempotency key is a [`Rejection`]: replicated, stored for idempotent replay, and
//!    returned to the client. Failures (a broken disk) are not this module's business; they live
//!    in `storage` and stop the node.
//! 3. **Effects, not mutation.** [`apply`] returns the [`Effects`] to persist; the state machine
//!    store writes them in one atomic batch together with the applied log id.
//!
//! Reservations (`reservation`, `lifecycle`) hold stock until a deadline in log time, and end
//! exactly once: committed, released, or expired by an entry the leader proposes. Their ids,
//! deadlines and expiry are all derived from the log, so they obey the same three rules.
//!
//! Idempotency keys are remembered per client scope ([`IdempotencyId`]: scope and key): the
//! scope travels inside the logged [`Request`], so apply reads nothing else to tell one
//! client's `order-42` from another's.
//!
//! Not done here, deliberately: input syntax checks that the HTTP layer already performs (length
//! and character set of ids) are re-checked by [`RecordKey::new`] so that a malformed command in
//! the log is rejected identically everywhere rather than trusted.

mod apply;
mod batch;
mod change;
mod command;
mod event;
mod lifecycle;
mod log_time;
mod one_record;
mod packed;
mod record;
mod reservation;
mod state;
#[cfg(test)]
mod tests;

pub use apply::{apply, ApplyContext};
pub use batch::{BATCH_HOLD_LINES_MAX, BATCH_STORED_LINE_BYTES_MAX};
pub use command::{
    BatchLine, BatchResults, CartLine, Command, CommandResult, ErrorPolicy, IdempotencyId,
    IdempotencyKey, LineRefusal, LineResult, NewRecord, Operation, PackedLines, Rejection, Request,
    Response, BATCH_LINES_MAX, BATCH_RECORDS_MAX, IDEMPOTENCY_KEY_LENGTH_MAX,
    IDEMPOTENCY_SCOPE_LENGTH_MAX,
};
pub use event::{Event, EventFilter, EventKind};
pub use log_time::{next_log_time, proposal_stamp, LOG_TIME_STEP_MAX_MS};
pub use packed::{Packed, UnpackError, PACKED_BYTES_MAX};
pub use record::{Record, RecordKey, ValidationError, SKU_LENGTH_MAX, STORE_ID_LENGTH_MAX};
pub use reservation::{
    Reservation, ReservationId, ReservationLine, ReservationStatus, CART_LINES_MAX, EXPIRE_IDS_MAX,
    HELD_RESERVATIONS_MAX, HOLD_TTL_MS_MAX, HOLD_TTL_MS_MIN, RESERVATIONS_PER_ENTRY_MAX,
};
pub use state::{Effects, IdempotencyEntry, KeyMap, MemoryState, StateView};
