//! The inventory domain: records, commands and the pure `apply` function.
//!
//! This module is the *meaning* of stockraft. Everything else (Raft, sled, HTTP) exists to feed
//! it the same sequence of [`Request`]s on every node. It therefore obeys three rules:
//!
//! 1. **Pure.** [`apply`] reads only its arguments: the current state (through [`StateView`]),
//!    the request, and an [`ApplyContext`] holding the log index and the leader-stamped log time.
//!    It never reads a clock, draws randomness, does I/O or iterates a `HashMap`. Given the same
//!    log, every replica computes the same state *and the same answers*.
//! 2. **Rejections are values.** A version mismatch, insufficient stock, an arithmetic overflow or
//!    a reused idempotency key is a [`Rejection`]: replicated, stored for idempotent replay, and
//!    returned to the client. Failures (a broken disk) are not this module's business; they live
//!    in `storage` and stop the node.
//! 3. **Effects, not mutation.** [`apply`] returns the [`Effects`] to persist; the state machine
//!    store writes them in one atomic batch together with the applied log id.
//!
//! Not done here, deliberately: input syntax checks that the HTTP layer already performs (length
//! and character set of ids) are re-checked by [`RecordKey::new`] so that a malformed command in
//! the log is rejected identically everywhere rather than trusted.

mod apply;
mod command;
mod record;

pub use apply::{apply, ApplyContext, Effects, IdempotencyEntry, MemoryState, StateView};
pub use command::{
    Command, CommandResult, IdempotencyKey, NewRecord, Operation, Rejection, Request, Response,
    BATCH_RECORDS_MAX, IDEMPOTENCY_KEY_LENGTH_MAX,
};
pub use record::{Record, RecordKey, ValidationError, SKU_LENGTH_MAX, STORE_ID_LENGTH_MAX};
