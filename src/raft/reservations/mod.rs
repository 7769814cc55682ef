//! The reservation state in the state machine: reservations by id, the due index the leader's
//! expiry proposer reads, the retention queue that forgets ended reservations, the held count,
//! and the SKU index that makes the SKU view a point scan. What a reservation *is*, and every
//! transition, is the pure domain's (`inventory::reservation`, `inventory::lifecycle`); this
//! module only stores what apply decided, and keeps the state bounded.
//!
//! ## What is stored (all in the `S` range, so every snapshot carries it; `storage::keys`)
//! - `Sh` + id (u64 BE) -> `Reservation`: every reservation, held or ended, until forgotten.
//! - `Sd` + expiry ms (BE) + id (BE) -> empty: the **due index**, one entry per *held*
//!   reservation. Written when a hold is created, deleted when it ends (point writes in apply).
//!   Read only by [`due_holds`], a bounded range scan off the write path: the leader's expiry
//!   proposer (`app::expiry`) asks it for the holds due at its clock and proposes
//!   `Command::Expire` naming them. The log decides: each replica expires, at that entry, those
//!   of them that are still held and due at the entry's log time, so a hold committed or
//!   released just before is skipped, and every replica ends every hold the same way.
//! - `Se` + number (BE) -> `ReservationId`: the **retention queue** of ended reservations,
//!   numbered in the order they ended (`Sme` next number, `Smo` oldest kept). Log time never goes
//!   back, so the queue is also in order of end time, and the oldest ended is always at its
//!   front: forgetting never searches.
//! - `Smh`: how many reservations are held (`StateView::held_count`, for the cap
//!   `inventory::HELD_RESERVATIONS_MAX`, which apply enforces).
//! - `Sk` + sku + `0x00` + store id -> empty: the **SKU index** of records, written when a
//!   record is created (records are never deleted), so that a SKU's records are found by a scan
//!   of their index entries, not of every record. Records created before it get their entries
//!   at open ([`build_sku_index`]; `Sms` marks the index whole), and after installing a
//!   snapshot that lacks the marker.
//!
//! ## Retention
//! Each command entry, before it applies, forgets at most [`ENDED_FORGOTTEN_PER_ENTRY_MAX`]
//! ended reservations from the front of the queue: while the oldest ended at least
//! [`ENDED_RETENTION_MS`] of log time ago (`ended + retention <= now`), or while more than
//! [`ENDED_RESERVATIONS_KEPT_MAX`] are remembered. A forgotten reservation is gone: reading it
//! answers nothing (the API's 404), and a commit or release naming it is refused as not found.
//! Per entry, never per apply call: batch boundaries differ between nodes and must not change
//! the state. Forgetting keeps up: every reservation is created by its own entry, so at 4
//! per entry the queue drains faster than it fills, even when one expiry entry ends a thousand.
//! These numbers are constants of the replicated state machine, like the idempotency log's:
//! every replica must forget the same reservations at the same entry ([`RetentionSettings`]
//! lets tests use smaller ones).
//!
//! ## One apply call
//! [`Reservations`] is the state as one apply call sees it: the counters, read when the call
//! begins and written when it ends; reads and writes of keys go through the call's
//! `PendingWrites`, so an entry sees what earlier entries of the same call wrote (a hold
//! created and committed in one call). Work per entry is bounded: a few point reads and writes
//! per reservation an entry changes; nothing on the write path scans.
//!
//! ## Invariants
//! Asserted in release builds: a reservation is created held, and only a held one changes;
//! the held count never goes below zero nor above the cap; the queue's front is never past its
//! next number; an entry of the queue names a stored, ended reservation. A broken one stops the
//! node before its batch is written; a storage or decode failure is a `StorageError`, which the
//! state machine returns to openraft (which stops the node too).

mod apply_call;
mod reads;
mod sku_index;

pub use apply_call::Reservations;
pub use reads::{counts, due_holds, reservation, sku_records, store_records};
pub use sku_index::{build_sku_index, sku_index_built, SKU_INDEX_BUILD_RECORDS_PER_BATCH};

/// How long an ended reservation is remembered, in ms of log time: 24 h, long enough for any
/// client retrying a commit or reading the outcome, short enough to bound the state.
pub const ENDED_RETENTION_MS: u64 = 24 * 60 * 60 * 1_000;

/// Most ended reservations remembered: past it the oldest ended are forgotten before their 24 h
/// (a few per entry). ~200 bytes each, ~200 MB at the cap.
pub const ENDED_RESERVATIONS_KEPT_MAX: u64 = 1_000_000;

/// Most ended reservations one log entry forgets: bounded work per entry, and still faster than
/// they can end on average (each reservation is created by an entry of its own).
pub const ENDED_FORGOTTEN_PER_ENTRY_MAX: usize = 4;

/// The retention's two constants, which every replica must share: the product uses
/// [`ENDED_RETENTION_MS`] and [`ENDED_RESERVATIONS_KEPT_MAX`] (the default); tests use smaller
/// ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSettings {
    /// How long an ended reservation is remembered, in ms of log time.
    pub retention_ms: u64,
    /// Most ended reservations remembered.
    pub ended_kept_max: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            retention_ms: ENDED_RETENTION_MS,
            ended_kept_max: ENDED_RESERVATIONS_KEPT_MAX,
        }
    }
}
