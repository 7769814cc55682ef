//! What can be asked of the inventory ([`Command`]), what goes into the Raft log ([`Request`]),
//! and what comes back ([`Response`]).
//!
//! These types are the one vocabulary shared by the state machine, the HTTP layer, the CLI, the
//! benchmarks and the simulation. They are serialised into the Raft log, so changing a variant
//! is a storage-format change: add variants at the end, never reorder.

use serde::{Deserialize, Serialize};

use super::record::{Record, RecordKey};

/// Longest accepted `Idempotency-Key`, in bytes (printable ASCII only).
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;
/// Most records one batch create may hold: one log entry, one apply, and a request body that
/// stays under the default 64 KiB limit with the longest ids.
pub const BATCH_RECORDS_MAX: usize = 500;

/// A change to the inventory. Later work (reservations with expiry, carts) adds variants here
/// and arms in `apply::execute`; nothing else in the write path needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a record; refused if it already exists (never overwritten).
    Create {
        key: RecordKey,
        initial_quantity: i64,
    },
    /// Add `delta` (any sign; 0 only makes a new version) to the available quantity.
    Adjust {
        key: RecordKey,
        delta: i64,
        expected_version: Option<u64>,
    },
    /// Take `quantity` (>= 0; 0 only makes a new version) units out of the available quantity.
    Reserve {
        key: RecordKey,
        quantity: i64,
        expected_version: Option<u64>,
    },
    /// Create every record of `records` (1 to [`BATCH_RECORDS_MAX`], distinct keys), or none:
    /// refused as a whole if any exists. For loading a catalogue in one log entry.
    CreateBatch { records: Vec<NewRecord> },
}

/// One record of a [`Command::CreateBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    pub key: RecordKey,
    pub initial_quantity: i64,
}

impl Command {
    pub fn operation(&self) -> Operation {
        match self {
            Command::Create { .. } => Operation::Create,
            Command::Adjust { .. } => Operation::Adjust,
            Command::Reserve { .. } => Operation::Reserve,
            Command::CreateBatch { .. } => Operation::CreateBatch,
        }
    }

    /// Every record this command touches, in the command's order.
    pub fn keys(&self) -> Vec<&RecordKey> {
        match self {
            Command::Create { key, .. }
            | Command::Adjust { key, .. }
            | Command::Reserve { key, .. } => vec![key],
            Command::CreateBatch { records } => records.iter().map(|r| &r.key).collect(),
        }
    }

    /// Canonical bytes identifying this exact request, for idempotency-key reuse detection.
    /// The whole command is kept (not a hash): commands are small and equality is then exact.
    pub fn fingerprint(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("encoding a command into memory cannot fail")
    }
}

/// The kind of a command, kept in the response so the HTTP layer can pick the status code
/// (201 for create/reserve, 200 for adjust) without re-reading the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    Create,
    Adjust,
    Reserve,
    CreateBatch,
}

/// An idempotency key and how long it is remembered, in log time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    /// Time to live, stamped by the leader from its configuration so that every replica expires
    /// the key at the same log time.
    pub ttl_ms: u64,
}

/// One entry of the Raft log's application payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// The proposing leader's wall clock, ms since the Unix epoch. The state machine never reads
    /// a clock; it uses `max(previous log time, proposed_at_ms)` so log time never runs backwards
    /// across leader changes.
    pub proposed_at_ms: u64,
    pub idempotency: Option<IdempotencyKey>,
}

/// A deterministic refusal: replicated, remembered for idempotent replay, shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Rejection {
    #[error("invalid command: {message}")]
    Invalid { message: String },
    #[error("inventory record {key} not found")]
    NotFound { key: RecordKey },
    #[error("inventory record {key} already exists (version {version})")]
    AlreadyExists { key: RecordKey, version: u64 },
    #[error("version mismatch: expected {expected}, current {actual}")]
    VersionMismatch { expected: u64, actual: u64 },
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock { requested: i64, available: i64 },
    #[error("quantity out of range: the result would not fit in a 64-bit integer")]
    Overflow,
    #[error("idempotency key {key:?} was already used for a different request")]
    IdempotencyKeyReused { key: String },
}

/// The outcome of one command: the record as it is after the change (for a batch, the last one
/// created: all were), or why nothing changed.
pub type CommandResult = Result<Record, Rejection>;

/// What the state machine answers for one applied [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub operation: Operation,
    pub result: CommandResult,
    /// True when this answer is the remembered answer of an earlier request with the same
    /// idempotency key; nothing was applied this time.
    pub replayed: bool,
    /// Log index at which the answer was first produced.
    pub log_index: u64,
}
