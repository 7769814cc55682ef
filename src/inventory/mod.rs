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
//! Idempotency keys are remembered per client scope ([`IdempotencyId`]: scope and key): the
//! scope travels inside the logged [`Request`], so apply reads nothing else to tell one
//! client's `order-42` from another's.
//!
//! Not done here, deliberately: input syntax checks that the HTTP layer already performs (length
//! and character set of ids) are re-checked by [`RecordKey::new`] so that a malformed command in
//! the log is rejected identically everywhere rather than trusted.

mod apply;
mod command;
mod log_time;
mod record;

pub use apply::{apply, ApplyContext, Effects, IdempotencyEntry, MemoryState, StateView};
pub use command::{
    Command, CommandResult, IdempotencyId, IdempotencyKey, NewRecord, Operation, Rejection,
    Request, Response, BATCH_RECORDS_MAX, IDEMPOTENCY_KEY_LENGTH_MAX, IDEMPOTENCY_SCOPE_LENGTH_MAX,
};
pub use log_time::{next_log_time, proposal_stamp, LOG_TIME_STEP_MAX_MS};
pub use record::{Record, RecordKey, ValidationError, SKU_LENGTH_MAX, STORE_ID_LENGTH_MAX};
