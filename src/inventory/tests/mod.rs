//! Tests of the inventory domain that cross its files.
//!
//! They live here, beside the files they exercise, because they need several of them at once
//! (`apply` with the reservation lifecycle, stored records with stored answers); kept inside one
//! of those files, a test module would import its own importers and draw a circle.

mod batch;
mod events;
mod reservations;
mod stored_bytes;

use crate::inventory::{
    apply, ApplyContext, Command, Event, IdempotencyKey, MemoryState, Request, Response,
};

/// The log time of the first entry of a [`Log`].
const T0_MS: u64 = 1_767_225_600_000;

/// A log applied to the model state, entry by entry, at a log time the test moves.
struct Log {
    state: MemoryState,
    index: u64,
    now_ms: u64,
}

impl Log {
    fn new() -> Self {
        Log {
            state: MemoryState::default(),
            index: 0,
            now_ms: T0_MS,
        }
    }

    /// Applies `command` (with `idempotency_key`, if any) as the next entry and commits it: the
    /// answer and the events.
    fn answer(
        &mut self,
        command: Command,
        idempotency_key: Option<&str>,
    ) -> (Response, Vec<Event>) {
        self.index += 1;
        let request = Request {
            command,
            proposed_at_ms: self.now_ms,
            idempotency: idempotency_key.map(|key| IdempotencyKey {
                scope: "client:test".into(),
                key: key.into(),
                ttl_ms: 3_600_000,
            }),
        };
        let context = ApplyContext {
            log_index: self.index,
            now_ms: self.now_ms,
        };
        let (response, effects) = apply(&self.state, &request, context);
        let events = effects.events.clone();
        self.state.commit(effects);
        (response, events)
    }
}
