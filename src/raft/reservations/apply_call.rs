//! The reservation state as one apply call sees and changes it: [`Reservations`] (see the
//! module docs of `reservations` for what is stored and why).
//!
//! Every read and write goes through the call's [`PendingWrites`], so an entry sees what the
//! entries before it in the same call wrote; the three counters are held here and written once
//! when the call ends. The work per entry is bounded: a stored reservation costs a few point
//! writes, and forgetting costs at most [`ENDED_FORGOTTEN_PER_ENTRY_MAX`] times two point
//! reads and two deletions. Nothing here scans.

use super::{RetentionSettings, ENDED_FORGOTTEN_PER_ENTRY_MAX};
use crate::inventory::{Reservation, ReservationId, ReservationStatus};
use crate::raft::pending_writes::PendingWrites;
use crate::storage::{self, encode, keys, Disk, StorageError, WriteBatch};

/// The reservation state as one apply call sees and changes it.
pub struct Reservations {
    settings: RetentionSettings,
    /// How many reservations are held.
    held: u64,
    /// The number the next ended reservation gets in the retention queue.
    ended_next: u64,
    /// The oldest number of the retention queue not yet forgotten.
    ended_front: u64,
    /// The reservation at the front of the queue and when it ended, once read in this call
    /// (ended reservations never change, so it holds until the front moves).
    front_entry: Option<(ReservationId, u64)>,
    /// Which counters this call changed: only those are written (see [`Self::finish`]).
    held_changed: bool,
    ended_next_changed: bool,
    ended_front_changed: bool,
}

impl Reservations {
    /// The reservation state stored on `disk`, for one apply call.
    pub fn begin(disk: &dyn Disk, settings: RetentionSettings) -> Result<Self, StorageError> {
        Ok(Self {
            settings,
            held: storage::read(disk, keys::HELD_COUNT)?.unwrap_or(0),
            ended_next: storage::read(disk, keys::ENDED_NEXT)?.unwrap_or(0),
            ended_front: storage::read(disk, keys::ENDED_FRONT)?.unwrap_or(0),
            front_entry: None,
            held_changed: false,
            ended_next_changed: false,
            ended_front_changed: false,
        })
    }

    /// How many reservations are held, as of the entries applied so far.
    pub fn held_count(&self) -> u64 {
        self.held
    }

    /// How many ended reservations are remembered, as of the entries applied so far.
    pub fn ended_count(&self) -> u64 {
        self.ended_next - self.ended_front
    }

    /// A reservation, held or ended, as of the entries applied so far.
    pub fn load(
        &self,
        pending: &PendingWrites<'_>,
        id: ReservationId,
    ) -> Result<Option<Reservation>, StorageError> {
        pending.get(&keys::reservation(id.as_u64()))
    }

    /// Stores `after`, the new state of a reservation that was `before` (`None`: created by this
    /// entry), and keeps the indexes in step: a new hold enters the due index; a hold that ended
    /// leaves it and joins the retention queue.
    pub fn store(
        &mut self,
        pending: &mut PendingWrites<'_>,
        before: Option<&Reservation>,
        after: &Reservation,
    ) {
        let id = after.id.as_u64();
        let is_held = after.status == ReservationStatus::Held;
        if let Some(before) = before {
            assert_eq!(before.id, after.id, "a reservation keeps its id");
            assert!(
                before.status == ReservationStatus::Held || before.status == after.status,
                "reservation {} changed from {} to {}: only a held one changes",
                after.id,
                before.status,
                after.status
            );
        } else {
            assert!(
                is_held,
                "reservation {} was created {}",
                after.id, after.status
            );
        }
        let was_held = before.is_some_and(|before| before.status == ReservationStatus::Held);
        pending.put(keys::reservation(id), after);
        match (before, was_held, is_held) {
            (None, _, true) => {
                pending.put_empty(keys::due(after.expires_at_ms, id));
                self.held += 1;
                self.held_changed = true;
            }
            (Some(before), true, false) => {
                pending.delete(keys::due(before.expires_at_ms, id));
                assert!(
                    self.held > 0,
                    "reservation {} ended, but none is held",
                    after.id
                );
                self.held -= 1;
                self.held_changed = true;
                pending.put(keys::ended(self.ended_next), &after.id);
                self.ended_next += 1;
                self.ended_next_changed = true;
            }
            (Some(before), true, true) if before.expires_at_ms != after.expires_at_ms => {
                pending.delete(keys::due(before.expires_at_ms, id));
                pending.put_empty(keys::due(after.expires_at_ms, id));
            }
            _ => {}
        }
    }

    /// Forgets up to [`ENDED_FORGOTTEN_PER_ENTRY_MAX`] of the oldest ended reservations while
    /// the oldest ended at least the retention before `now_ms` (log time), or while more than the
    /// cap are remembered. Call once per command entry, before it applies.
    pub fn forget_ended(
        &mut self,
        pending: &mut PendingWrites<'_>,
        now_ms: u64,
    ) -> Result<(), StorageError> {
        for _ in 0..ENDED_FORGOTTEN_PER_ENTRY_MAX {
            if self.ended_front == self.ended_next {
                break;
            }
            let (id, ended_at_ms) = self.front_entry(pending)?;
            let past_retention = ended_at_ms.saturating_add(self.settings.retention_ms) <= now_ms;
            let over_cap = self.ended_count() > self.settings.ended_kept_max;
            if !past_retention && !over_cap {
                break;
            }
            pending.delete(keys::ended(self.ended_front));
            pending.delete(keys::reservation(id.as_u64()));
            self.ended_front += 1;
            self.ended_front_changed = true;
            self.front_entry = None;
        }
        Ok(())
    }

    /// The reservation at the front of the retention queue and the log time it ended.
    fn front_entry(
        &mut self,
        pending: &PendingWrites<'_>,
    ) -> Result<(ReservationId, u64), StorageError> {
        if let Some(entry) = self.front_entry {
            return Ok(entry);
        }
        let number = self.ended_front;
        let id: ReservationId = pending.get(&keys::ended(number))?.ok_or_else(|| {
            StorageError::Invariant(format!(
                "ended reservation {number} is below the next one, {}, but not stored",
                self.ended_next
            ))
        })?;
        let reservation = self.load(pending, id)?.ok_or_else(|| {
            StorageError::Invariant(format!(
                "reservation {id} is in the retention queue ({number}) but not stored"
            ))
        })?;
        assert!(
            reservation.status != ReservationStatus::Held,
            "reservation {id} is in the retention queue but held"
        );
        let entry = (id, reservation.updated_at_ms);
        self.front_entry = Some(entry);
        Ok(entry)
    }

    /// Ends the apply call: asserts the invariants and adds the counters this call changed to
    /// `batch`. (Only the changed ones, so that a state without reservations keeps its bytes;
    /// "changed" is the same whatever the call boundaries, so replicas agree byte for byte.)
    pub fn finish(self, batch: &mut WriteBatch) {
        assert!(
            self.ended_front <= self.ended_next,
            "the front of the retention queue ({}) is past its next entry ({})",
            self.ended_front,
            self.ended_next
        );
        assert!(
            self.held <= crate::inventory::HELD_RESERVATIONS_MAX,
            "{} reservations are held, more than the cap",
            self.held
        );
        if self.held_changed {
            batch.put(keys::HELD_COUNT.to_vec(), encode(&self.held));
        }
        if self.ended_next_changed {
            batch.put(keys::ENDED_NEXT.to_vec(), encode(&self.ended_next));
        }
        if self.ended_front_changed {
            batch.put(keys::ENDED_FRONT.to_vec(), encode(&self.ended_front));
        }
    }
}
