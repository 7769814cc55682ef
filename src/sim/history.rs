//! What the simulated clients saw, gathered for the checkers: the plain workload
//! ([`super::workload`]), the hold traffic ([`super::holds`]) and the batch traffic
//! ([`super::batches`]) all write into one [`History`]; the checks read it once the run has
//! converged. Its own file, below them, so that none imports another to share it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::checker::Event;
use crate::client::wire::{ChangeAnswer, ErrorBody, RecordBody, ReservationBody};
use crate::client::{headers, Answer};
use crate::inventory::{ErrorPolicy, Response};

/// The store every simulated record is in (the workload varies SKUs, not stores).
pub const STORE: &str = "s1";

/// Everything the clients saw, in completion order.
#[derive(Debug, Default)]
pub struct History {
    /// Per SKU, the events for the linearizability checker.
    pub events: BTreeMap<String, Vec<Event>>,
    /// Every definite answer per idempotency key: they must all be identical.
    pub keyed_answers: BTreeMap<String, Vec<Reply>>,
    /// Readable lines, for the trace.
    pub lines: Vec<String>,
    /// Problems seen directly by the clients (e.g. an unexpected status).
    pub anomalies: Vec<String>,
    /// Quantities observed below zero.
    pub negative_quantities: Vec<String>,
    /// Every reservation a client learnt the id of, by id: what was asked and what was seen.
    pub reservations: BTreeMap<String, ReservationLog>,
    /// Every definite answer per idempotency key of the hold traffic (as `keyed_answers`).
    pub keyed_hold_answers: BTreeMap<String, Vec<HoldReply>>,
    /// The log index each accepted plain write's answer named (`x-stockraft-log-index`), by
    /// the id of its event in `events`.
    pub log_indexes: BTreeMap<u64, u64>,
    /// Every batch that was proposed or may have been, with what its answer said.
    pub batches: Vec<BatchLog>,
    /// Every definite answer per idempotency key of the batch traffic (the state machine's
    /// response, `replayed` cleared): they must all be identical.
    pub keyed_batch_answers: BTreeMap<String, Vec<Response>>,
    pub(super) next_id: u64,
}

impl History {
    /// Notes an observed record with a negative count or whose `onHand` is not `qty + reserved`.
    pub fn note_record(&mut self, line: &str, record: &RecordBody) {
        if let Err(message) = record_adds_up(record) {
            self.anomalies.push(format!("{line}: {message}"));
        }
    }
}

/// What the clients learnt about one reservation.
#[derive(Debug, Clone, Default)]
pub struct ReservationLog {
    /// The lines the hold or cart asked for, `(sku, units)`, in order.
    pub requested: Vec<(String, i64)>,
    /// The lines a cart's answer showed (`None` for a hold, whose answer shows none).
    pub answered: Option<Vec<(String, i64)>>,
    /// Every status a client saw it in, with when.
    pub observations: Vec<Observation>,
    /// The log index the answer to its accepted commit or release named (the entry that ended
    /// it), if a client had one.
    pub ended_at_log_index: Option<u64>,
}

/// One batch of the batch traffic: its idempotency key if it had one (its events carry it), its
/// policy, its lines' SKUs in order, and what became of it.
#[derive(Debug, Clone)]
pub struct BatchLog {
    pub key: Option<String>,
    pub policy: ErrorPolicy,
    pub skus: Vec<String>,
    pub outcome: BatchOutcome,
}

/// What a batch's answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Applied at `log_index`: `applied[i]` says whether line `i` did (all of them for a
    /// `rejectEverything` batch).
    Answered { log_index: u64, applied: Vec<bool> },
    /// A `rejectEverything` batch refused at `log_index`: no line applied.
    Refused { log_index: u64 },
    /// No definite answer: it may have been applied, or not.
    Unknown,
}

/// One sighting of a reservation's status: between `invoked_at` and `completed_at` (ns since
/// the run started) it was `status` (`held`, `committed`, `released` or `expired`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub status: String,
    pub invoked_at: u64,
    pub completed_at: u64,
}

pub type SharedHistory = Arc<Mutex<History>>;

/// What a node answered to one attempt: its status, and the record it reports or its error.
pub type Reply = (u16, Result<RecordBody, ErrorBody>);

/// What a node answered to one operation of the hold traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldAnswer {
    /// A hold's answer: the record and the reservation id.
    Held(ChangeAnswer),
    /// A cart, commit, release or read: the reservation.
    Reservation(ReservationBody),
}

/// A hold operation's status and its answer or error.
pub type HoldReply = (u16, Result<HoldAnswer, ErrorBody>);

/// Whether an observed record adds up: `onHand == qty + reserved`, none of them negative.
pub fn record_adds_up(record: &RecordBody) -> Result<(), String> {
    if record.qty < 0 || record.reserved < 0 {
        return Err(format!(
            "negative count: qty {} reserved {}",
            record.qty, record.reserved
        ));
    }
    if record.qty.checked_add(record.reserved) != Some(record.on_hand) {
        return Err(format!(
            "onHand {} is not qty {} + reserved {}",
            record.on_hand, record.qty, record.reserved
        ));
    }
    Ok(())
}

/// The log index an accepted write's answer names (`x-stockraft-log-index`: the `logIndex` of
/// its events in the feed), if it names one.
pub fn log_index_of<T>(answer: &Answer<T>) -> Option<u64> {
    answer.header(headers::LOG_INDEX)?.parse().ok()
}
