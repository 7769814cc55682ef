//! The state `apply` reads ([`StateView`]), the writes it returns ([`Effects`]), and an in-memory
//! state holding both ends ([`MemoryState`]): the reference model for tests and the
//! simulation's oracle, and the view the state machine fills with what one entry needs.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::command::{IdempotencyId, Response};
use super::event::Event;
use super::record::{Record, RecordKey};
use super::reservation::{Reservation, ReservationId, ReservationStatus};

/// A hash map for lookups on apply's path: foldhash, several times faster than std's SipHash
/// on short keys (SipHash was ~6% of all CPU under batches of 8,000 lines), and seeded per
/// process like std's, so that no client can choose keys that collide. Apply never iterates
/// one (nothing depends on its order or seed).
pub type KeyMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Read access to the replicated state, as of just before this request.
pub trait StateView {
    fn record(&self, key: &RecordKey) -> Option<Record>;
    /// The live or expired entry of an idempotency key within its scope.
    fn idempotency(&self, id: &IdempotencyId) -> Option<IdempotencyEntry>;
    /// A reservation, held or ended, while it is remembered.
    fn reservation(&self, id: ReservationId) -> Option<Reservation>;
    /// How many reservations are held, over the whole store.
    fn held_count(&self) -> u64;
}

/// What is remembered about an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyEntry {
    /// `Command::fingerprint` of the request that first used the key.
    pub fingerprint: Vec<u8>,
    /// The answer given then, replayed verbatim (with `replayed = true`).
    pub response: Response,
    /// Log time after which the key is forgotten.
    pub expires_at_ms: u64,
}

/// The writes one request causes. Empty when the request was a replay; only the idempotency
/// entry (if keyed) when it was refused or changed nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Each record changed or created, in its new state, at most once per record.
    pub records: Vec<Record>,
    pub idempotency: Option<(IdempotencyId, IdempotencyEntry)>,
    /// Each reservation created or changed, in its new state, at most once per reservation.
    pub reservations: Vec<Reservation>,
    /// What changed, one event per changed record (per line of each changed reservation),
    /// unnumbered (`seq` 0): the state machine numbers and stores them.
    pub events: Vec<Event>,
}

/// An in-memory state: the reference model for tests and the simulation's oracle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    /// Looked up by key, never iterated by apply (nothing depends on its order or hash seed):
    /// a state machine fills it with every record of a batch of up to 10,000 lines, and an
    /// ordered map made each of its lookups a walk comparing long keys.
    pub records: KeyMap<RecordKey, Record>,
    pub idempotency: BTreeMap<IdempotencyId, IdempotencyEntry>,
    pub reservations: BTreeMap<ReservationId, Reservation>,
    /// The reservations of `reservations` that are held. [`MemoryState::commit`] keeps it; a
    /// caller that fills `reservations` with only some of them (a state machine's view of one
    /// entry) sets it to the store's count.
    pub held_count: u64,
    /// The feed: every event committed, numbered from 1 (the model of `raft::events`).
    pub events: Vec<Event>,
}

impl MemoryState {
    pub fn commit(&mut self, effects: Effects) {
        for record in effects.records {
            self.records.insert(record.key.clone(), record);
        }
        if let Some((key, entry)) = effects.idempotency {
            self.idempotency.insert(key, entry);
        }
        for mut event in effects.events {
            event.seq = self.events.len() as u64 + 1;
            self.events.push(event);
        }
        for reservation in effects.reservations {
            let is_held = reservation.status == ReservationStatus::Held;
            let was_held = self
                .reservations
                .insert(reservation.id, reservation)
                .is_some_and(|before| before.status == ReservationStatus::Held);
            match (was_held, is_held) {
                (false, true) => self.held_count += 1,
                (true, false) => {
                    assert!(self.held_count > 0, "more reservations ended than held");
                    self.held_count -= 1;
                }
                _ => {}
            }
        }
    }
}

impl StateView for MemoryState {
    fn record(&self, key: &RecordKey) -> Option<Record> {
        self.records.get(key).cloned()
    }
    fn idempotency(&self, id: &IdempotencyId) -> Option<IdempotencyEntry> {
        self.idempotency.get(id).cloned()
    }
    fn reservation(&self, id: ReservationId) -> Option<Reservation> {
        self.reservations.get(&id).cloned()
    }
    fn held_count(&self) -> u64 {
        self.held_count
    }
}
