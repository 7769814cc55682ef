//! The reservation state in the state machine: reservations by id, the due index the leader's
//! expiry proposer reads, the retention queue that forgets ended reservations, the held count,
//! and the SKU index that makes the SKU view a point scan. What a reservation *is*, and every
//! transition, is the pure domain's (`inventory::reservation`, `inventory::lifecycle`); this
//! module only stores what apply decided, and keeps the state bounded.
//!
//! ## What is stored (format 5; all in the `S` range, so every snapshot carries it)
//! The reservations and their two indexes are **packed** into a few large values (`layout`
//! says where each part goes, `storage::keys` has the table):
//! - `Sc` + chunk (u64 BE) -> the **chunk**: every reservation, held or ended until forgotten,
//!   created by the [`LOG_ENTRIES_PER_CHUNK`] log entries of that chunk, in id order. An id is
//!   `rsv-<log index>-<n>`, so it names its chunk: a reservation is found with one read.
//! - `Sw` + due window (u64 BE) + chunk (u64 BE) -> a **due bucket**: the held reservations of
//!   that chunk whose deadline falls in that window of [`DUE_WINDOW_MS`] (10 ms; id and
//!   millisecond), in deadline order. Apply enters a hold when it is created and takes it out
//!   when it ends. Read only by [`due_holds`], off the write path: the leader's expiry proposer
//!   (`app::expiry`) asks it for the holds due at its clock, reading the buckets window by
//!   window (a window whole, since its buckets are by chunk), and proposes `Command::Expire`
//!   naming them. The log decides: each replica expires, at that entry, those of them that are
//!   still held and due at the entry's log time, so a hold committed or released just before
//!   is skipped, and every replica ends every hold the same way.
//! - `Sf` + slot (u64 BE) -> a **slot of the retention queue**: up to [`ENDED_PER_SLOT`] ended
//!   reservations (id, end time), numbered in the order they ended (`Sme` next number, `Smo`
//!   oldest kept; number `n` is in slot `n / 64`, and a slot holds its numbers from the front
//!   on). Log time never goes back, so the queue is also in order of end time, and the oldest
//!   ended is always the first of the front's slot: forgetting never searches.
//! - `Smh`: how many reservations are held (`StateView::held_count`, for the cap
//!   `inventory::HELD_RESERVATIONS_MAX`, which apply enforces).
//! - `Sk` + sku + `0x00` + store id -> empty: the **SKU index** of records, written when a
//!   record is created (records are never deleted), so that a SKU's records are found by a scan
//!   of their index entries, not of every record. Records created before it get their entries
//!   at open ([`build_sku_index`]; `Sms` marks the index whole), and after installing a
//!   snapshot that lacks the marker.
//!
//! Each packed value depends on the state alone (sorted, deleted when empty), so replicas hold
//! the same bytes whatever their apply-call boundaries.
//!
//! ## Why packed
//! A plain reserve rewrites a record: one key. (When sled held the state, behind a layer that
//! merged writes, a checkpoint at 1,000 SKUs handed sled at most 1,000 distinct keys.) Format 4 stored a
//! key per reservation, per due entry and per ended reservation, so a hold inserted two fresh
//! sled keys and a commit one more (and rewrote a cold one): ~6 µs of sled each on every node.
//! Holds ran at 0.63-0.72x and commits at 0.52-0.59x of plain reserves, and a million live
//! holds cost ~200 MiB of RSS over their data (docs/performance.md, "Reservations at scale").
//! Packed, as the idempotency log's entries are (its format 4), a run of holds rewrites the
//! newest chunk and its due buckets in memory, and the disk sees each once per apply call. Format
//! 4's keys are packed when a node opens and when an older snapshot is installed
//! ([`upgrade_layout`]; the `upgrade` module says how).
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
//! begins and written when it ends; the chunks, due buckets and slots the call touches, read
//! the first time it needs them, held decoded (so an entry sees what earlier entries of the
//! same call wrote: a hold created and committed in one call) and each changed one written once
//! when the call ends. No other part of the state machine writes these keys. Work per entry is
//! bounded: a reservation an entry stores changes its chunk, one or two due buckets and one
//! slot; forgetting changes at most 4 slots' fronts and chunks; nothing on the write path
//! scans. A chunk is at most 32 reservations (~3 KB of one-line holds; a chunk of 100-line
//! carts is larger, and rarer).
//!
//! ## Invariants
//! Asserted in release builds: a reservation is created held, and only a held one changes;
//! the held count never goes below zero nor above the cap; the queue's front is never past its
//! next number; a forgotten reservation is not held. Checked as the packed values are read and
//! changed (a `StorageError::Invariant` when broken): a reservation is created once and changed
//! only where stored; a held one is in the due index exactly once; a slot holds exactly the
//! numbers from the front (or its start) up to the next; the queue names stored reservations.
//! A broken one stops the node before its batch is written; a storage or decode failure is a
//! `StorageError`, which the state machine returns to openraft (which stops the node too).

mod apply_call;
mod layout;
mod packed;
mod reads;
mod sku_index;
mod upgrade;

pub use apply_call::Reservations;
pub use layout::{
    chunk_key, chunk_of, slot_key, slot_of, Chunk, Due, DueBucket, Ended, DUE_WINDOW_MS,
    ENDED_PER_SLOT, LOG_ENTRIES_PER_CHUNK,
};
pub use reads::{counts, due_holds, remembered, reservation, sku_records, store_records};
pub use sku_index::{build_sku_index, sku_index_built, SKU_INDEX_BUILD_RECORDS_PER_BATCH};
pub use upgrade::{
    format4_due_key, format4_ended_key, format4_reservation_key, pack_format4_reservations,
    upgrade_layout,
};

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
