//! The reservation state as one apply call sees and changes it: [`Reservations`] (see the
//! module docs of `reservations` for what is stored and why).
//!
//! The chunks, due buckets and slots the call touches are read the first time it needs them
//! and held decoded ([`PackedState`]), so an entry sees what the entries before it in the same
//! call wrote; each changed one is written once when the call ends, with the three counters.
//! The work per entry is bounded: storing a reservation changes its chunk, at most two due
//! buckets and one slot (each read at most once per call); forgetting costs at most
//! [`ENDED_FORGOTTEN_PER_ENTRY_MAX`] times a slot and a chunk. Nothing here scans.

use super::layout::Ended;
use super::packed::PackedState;
use super::{RetentionSettings, ENDED_FORGOTTEN_PER_ENTRY_MAX};
use crate::inventory::{Reservation, ReservationId, ReservationStatus};
use crate::storage::{self, encode, keys, Disk, StorageError, WriteBatch};

/// The reservation state as one apply call sees and changes it.
pub struct Reservations<'d> {
    settings: RetentionSettings,
    /// How many reservations are held.
    held: u64,
    /// The number the next ended reservation gets in the retention queue.
    ended_next: u64,
    /// The oldest number of the retention queue not yet forgotten.
    ended_front: u64,
    /// Which counters this call changed: only those are written (see [`Self::finish`]).
    held_changed: bool,
    ended_next_changed: bool,
    ended_front_changed: bool,
    /// The chunks, due buckets and slots this call read or changed.
    packed: PackedState<'d>,
}

impl<'d> Reservations<'d> {
    /// The reservation state stored on `disk`, for one apply call.
    pub fn begin(disk: &'d dyn Disk, settings: RetentionSettings) -> Result<Self, StorageError> {
        Ok(Self {
            settings,
            held: storage::read(disk, keys::HELD_COUNT)?.unwrap_or(0),
            ended_next: storage::read(disk, keys::ENDED_NEXT)?.unwrap_or(0),
            ended_front: storage::read(disk, keys::ENDED_FRONT)?.unwrap_or(0),
            held_changed: false,
            ended_next_changed: false,
            ended_front_changed: false,
            packed: PackedState::new(disk),
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
    pub fn load(&mut self, id: ReservationId) -> Result<Option<Reservation>, StorageError> {
        Ok(self.packed.reservation(id)?.cloned())
    }

    /// Stores `after`, the new state of a reservation that was `before` (`None`: created by this
    /// entry), and keeps the indexes in step: a new hold enters the due index; a hold that ended
    /// leaves it and joins the retention queue.
    pub fn store(
        &mut self,
        before: Option<&Reservation>,
        after: &Reservation,
    ) -> Result<(), StorageError> {
        let is_held = after.status == ReservationStatus::Held;
        let Some(before) = before else {
            assert!(
                is_held,
                "reservation {} was created {}",
                after.id, after.status
            );
            self.packed.insert(after)?;
            self.packed.enter_due_index(after)?;
            self.held += 1;
            self.held_changed = true;
            return Ok(());
        };
        assert_eq!(before.id, after.id, "a reservation keeps its id");
        let was_held = before.status == ReservationStatus::Held;
        assert!(
            was_held || before.status == after.status,
            "reservation {} changed from {} to {}: only a held one changes",
            after.id,
            before.status,
            after.status
        );
        self.packed.replace(after)?;
        if was_held && !is_held {
            self.packed.leave_due_index(before)?;
            assert!(
                self.held > 0,
                "reservation {} ended, but none is held",
                after.id
            );
            self.held -= 1;
            self.held_changed = true;
            self.append_ended(after)?;
        } else if was_held && before.expires_at_ms != after.expires_at_ms {
            self.packed.leave_due_index(before)?;
            self.packed.enter_due_index(after)?;
        }
        Ok(())
    }

    /// Puts `ended` at the back of the retention queue.
    fn append_ended(&mut self, ended: &Reservation) -> Result<(), StorageError> {
        let entry = Ended {
            id: ended.id,
            ended_at_ms: ended.updated_at_ms,
        };
        self.packed
            .push_ended(self.ended_front, self.ended_next, entry)?;
        self.ended_next += 1;
        self.ended_next_changed = true;
        Ok(())
    }

    /// Forgets up to [`ENDED_FORGOTTEN_PER_ENTRY_MAX`] of the oldest ended reservations while
    /// the oldest ended at least the retention before `now_ms` (log time), or while more than the
    /// cap are remembered. Call once per command entry, before it applies.
    pub fn forget_ended(&mut self, now_ms: u64) -> Result<(), StorageError> {
        for _ in 0..ENDED_FORGOTTEN_PER_ENTRY_MAX {
            if self.ended_front == self.ended_next {
                break;
            }
            let oldest = self.packed.front_ended(self.ended_front, self.ended_next)?;
            let past_retention = oldest
                .ended_at_ms
                .saturating_add(self.settings.retention_ms)
                <= now_ms;
            let over_cap = self.ended_count() > self.settings.ended_kept_max;
            if !past_retention && !over_cap {
                break;
            }
            self.packed.pop_ended(self.ended_front)?;
            let forgotten = self.packed.remove(oldest.id)?;
            assert!(
                forgotten.status != ReservationStatus::Held,
                "reservation {} is in the retention queue but held",
                oldest.id
            );
            self.ended_front += 1;
            self.ended_front_changed = true;
        }
        Ok(())
    }

    /// Ends the apply call: asserts the invariants and adds the counters this call changed and
    /// each changed chunk, due bucket and slot to `batch`. (Only the changed ones, so that a
    /// state without reservations keeps its bytes; "changed" is the same whatever the call
    /// boundaries, and every packed value depends on the state alone, so replicas agree byte
    /// for byte.)
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
        self.packed.write_into(batch);
    }
}
