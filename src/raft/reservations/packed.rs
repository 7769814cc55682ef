//! The packed values one call reads and changes (chunks, due buckets, slots of the retention
//! queue), decoded: each read from the disk the first time the call needs it, and written back
//! once when the call ends, so that the disk sees one value per changed chunk, bucket or slot
//! per call, never a key per reservation
//! ([`PackedValues`]); and the operations on them ([`PackedState`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::layout::{chunk_key, chunk_of, slot_key, slot_of, slot_start, Due, DueBucket, Ended};
use crate::inventory::{Reservation, ReservationId};
use crate::storage::{self, encode, Disk, StorageError, WriteBatch};

/// Packed values of one kind, by their place `P` (a chunk number, a bucket, a slot number):
/// each a list of items, stored under `key_of(place)`, absent while empty.
pub struct PackedValues<'d, P, T> {
    disk: &'d dyn Disk,
    key_of: fn(P) -> Vec<u8>,
    values: BTreeMap<P, Vec<T>>,
    /// The places this call changed: only those are written.
    changed: BTreeSet<P>,
}

impl<'d, P: Ord + Copy, T: Serialize + DeserializeOwned> PackedValues<'d, P, T> {
    pub fn new(disk: &'d dyn Disk, key_of: fn(P) -> Vec<u8>) -> Self {
        Self {
            disk,
            key_of,
            values: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    /// The value at `place` as this call has left it (empty if nothing is stored there).
    pub fn get(&mut self, place: P) -> Result<&Vec<T>, StorageError> {
        self.load(place)?;
        Ok(&self.values[&place])
    }

    /// The value at `place`, to change: it is written when the call ends.
    pub fn get_mut(&mut self, place: P) -> Result<&mut Vec<T>, StorageError> {
        self.load(place)?;
        self.changed.insert(place);
        Ok(self.values.get_mut(&place).expect("loaded just above"))
    }

    fn load(&mut self, place: P) -> Result<(), StorageError> {
        if !self.values.contains_key(&place) {
            let stored = storage::read(self.disk, &(self.key_of)(place))?;
            self.values.insert(place, stored.unwrap_or_default());
        }
        Ok(())
    }

    /// Adds the call's writes to `batch`: each changed value once, in place order; an empty one
    /// is deleted.
    pub fn write_into(&self, batch: &mut WriteBatch) {
        for place in &self.changed {
            let key = (self.key_of)(*place);
            match &self.values[place] {
                items if items.is_empty() => batch.delete(key),
                items => batch.put(key, encode(items)),
            }
        }
    }
}

/// The packed reservation state one call reads and changes (one apply call, or one page of an
/// upgrade): chunks, due buckets and slots of the retention queue, with the operations on them
/// and the checks that each finds what the state says it holds. The counters (held, the
/// queue's next and front) are the caller's.
pub struct PackedState<'d> {
    /// Reservations, by chunk.
    chunks: PackedValues<'d, u64, Reservation>,
    /// The due index, by bucket.
    due: PackedValues<'d, DueBucket, Due>,
    /// The retention queue, by slot.
    slots: PackedValues<'d, u64, Ended>,
}

impl<'d> PackedState<'d> {
    pub fn new(disk: &'d dyn Disk) -> Self {
        Self {
            chunks: PackedValues::new(disk, chunk_key),
            due: PackedValues::new(disk, DueBucket::key),
            slots: PackedValues::new(disk, slot_key),
        }
    }

    /// Reservation `id`, if it is remembered.
    pub fn reservation(&mut self, id: ReservationId) -> Result<Option<&Reservation>, StorageError> {
        let chunk = self.chunks.get(chunk_of(id))?;
        Ok(position(chunk, id).ok().map(|at| &chunk[at]))
    }

    /// Stores a reservation not stored yet.
    pub fn insert(&mut self, reservation: &Reservation) -> Result<(), StorageError> {
        let id = reservation.id;
        let chunk = self.chunks.get_mut(chunk_of(id))?;
        let at = position(chunk, id)
            .err()
            .ok_or_else(|| invariant(format!("reservation {id} is stored twice")))?;
        chunk.insert(at, reservation.clone());
        Ok(())
    }

    /// Stores the new state of a stored reservation.
    pub fn replace(&mut self, reservation: &Reservation) -> Result<(), StorageError> {
        let id = reservation.id;
        let chunk = self.chunks.get_mut(chunk_of(id))?;
        let at = position(chunk, id).map_err(|_| not_stored(id))?;
        chunk[at] = reservation.clone();
        Ok(())
    }

    /// Forgets stored reservation `id`, returning it.
    pub fn remove(&mut self, id: ReservationId) -> Result<Reservation, StorageError> {
        let chunk = self.chunks.get_mut(chunk_of(id))?;
        let at = position(chunk, id).map_err(|_| not_stored(id))?;
        Ok(chunk.remove(at))
    }

    /// Enters held `reservation` into the due index, at its deadline.
    pub fn enter_due_index(&mut self, reservation: &Reservation) -> Result<(), StorageError> {
        let (bucket, due) = DueBucket::of(reservation);
        let items = self.due.get_mut(bucket)?;
        let at = items
            .binary_search(&due)
            .err()
            .ok_or_else(|| invariant(format!("reservation {} is due twice", reservation.id)))?;
        items.insert(at, due);
        Ok(())
    }

    /// Takes `reservation` (as it was while held) out of the due index.
    pub fn leave_due_index(&mut self, reservation: &Reservation) -> Result<(), StorageError> {
        let (bucket, due) = DueBucket::of(reservation);
        let items = self.due.get_mut(bucket)?;
        let at = items.binary_search(&due).map_err(|_| {
            invariant(format!(
                "reservation {} is held but not in the due index",
                reservation.id
            ))
        })?;
        items.remove(at);
        Ok(())
    }

    /// Puts `ended` into the retention queue as number `number`, its next one (the queue's
    /// front is `front`): the slot of `number` must hold every number from the front, or from
    /// its start, up to it.
    pub fn push_ended(
        &mut self,
        front: u64,
        number: u64,
        ended: Ended,
    ) -> Result<(), StorageError> {
        let slot = slot_of(number);
        let first_kept = front.max(slot_start(slot));
        let items = self.slots.get_mut(slot)?;
        if items.len() as u64 != number - first_kept {
            return Err(invariant(format!(
                "ended reservation {number} goes to slot {slot}, which holds {} from {first_kept}",
                items.len()
            )));
        }
        items.push(ended);
        Ok(())
    }

    /// The ended reservation at the front `front` of a queue whose next number is `next`
    /// (`front < next`): the first of its slot, which holds the numbers from the front on.
    pub fn front_ended(&mut self, front: u64, next: u64) -> Result<Ended, StorageError> {
        let slot = slot_of(front);
        let kept = next.min(slot_start(slot + 1)) - front;
        let items = self.slots.get(slot)?;
        match items.first() {
            Some(first) if items.len() as u64 == kept => Ok(*first),
            _ => Err(invariant(format!(
                "slot {slot} of the retention queue holds {} ended reservations, not the {kept} \
                 from its front ({front}) on",
                items.len()
            ))),
        }
    }

    /// Takes the front `front` out of the retention queue (after [`Self::front_ended`] found
    /// it).
    pub fn pop_ended(&mut self, front: u64) -> Result<(), StorageError> {
        let items = self.slots.get_mut(slot_of(front))?;
        if items.is_empty() {
            return Err(invariant(format!(
                "the front of the retention queue ({front}) is not stored"
            )));
        }
        items.remove(0);
        Ok(())
    }

    /// Adds each changed chunk, due bucket and slot to `batch`, once.
    pub fn write_into(&self, batch: &mut WriteBatch) {
        self.chunks.write_into(batch);
        self.due.write_into(batch);
        self.slots.write_into(batch);
    }
}

/// Where reservation `id` is in `chunk` (id order): `Ok` if there, else where it would go.
pub fn position(chunk: &[Reservation], id: ReservationId) -> Result<usize, usize> {
    chunk.binary_search_by_key(&id, |reservation| reservation.id)
}

fn invariant(message: String) -> StorageError {
    StorageError::Invariant(message)
}

fn not_stored(id: ReservationId) -> StorageError {
    invariant(format!("reservation {id} is not stored"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{RecordKey, ReservationLine, ReservationStatus};
    use crate::storage::{Disk, SimDisk};

    fn held(log_index: u64, expires_at_ms: u64) -> Reservation {
        Reservation {
            id: ReservationId::new(log_index, 0).unwrap(),
            status: ReservationStatus::Held,
            lines: vec![ReservationLine {
                key: RecordKey::new("s1", "a").unwrap(),
                quantity: 1,
            }],
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
            expires_at_ms,
        }
    }

    fn ended(log_index: u64) -> Ended {
        Ended {
            id: ReservationId::new(log_index, 0).unwrap(),
            ended_at_ms: 2_000,
        }
    }

    fn is_invariant(result: Result<impl std::fmt::Debug, StorageError>) -> bool {
        matches!(result, Err(StorageError::Invariant(_)))
    }

    /// Writes what `change` did to `packed` and reads it back in a new call.
    fn written(disk: &SimDisk, change: impl FnOnce(&mut PackedState<'_>)) {
        let mut packed = PackedState::new(disk);
        change(&mut packed);
        let mut batch = WriteBatch::default();
        packed.write_into(&mut batch);
        disk.write(batch).unwrap();
    }

    #[test]
    fn a_reservation_is_stored_once_and_changed_only_where_stored() {
        let disk = SimDisk::new();
        written(&disk, |packed| packed.insert(&held(40, 5_000)).unwrap());
        let mut packed = PackedState::new(&disk);
        assert_eq!(
            packed.reservation(held(40, 0).id).unwrap(),
            Some(&held(40, 5_000))
        );
        assert!(
            is_invariant(packed.insert(&held(40, 5_000))),
            "created twice"
        );
        assert!(is_invariant(packed.replace(&held(41, 5_000))), "not stored");
        assert!(is_invariant(packed.remove(held(41, 0).id)), "not stored");
        assert_eq!(packed.remove(held(40, 0).id).unwrap(), held(40, 5_000));
        let mut batch = WriteBatch::default();
        packed.write_into(&mut batch);
        disk.write(batch).unwrap();
        assert_eq!(
            disk.get(&chunk_key(1)).unwrap(),
            None,
            "an emptied chunk is deleted"
        );
    }

    #[test]
    fn a_hold_is_in_the_due_index_exactly_once() {
        let disk = SimDisk::new();
        let hold = held(3, 61_250);
        written(&disk, |packed| packed.enter_due_index(&hold).unwrap());
        let mut packed = PackedState::new(&disk);
        assert!(is_invariant(packed.enter_due_index(&hold)), "due twice");
        let moved = held(3, 61_251);
        assert!(is_invariant(packed.leave_due_index(&moved)), "not due then");
        packed.leave_due_index(&hold).unwrap();
        assert!(is_invariant(packed.leave_due_index(&hold)), "left already");
    }

    #[test]
    fn a_slot_holds_exactly_the_numbers_from_the_front_up_to_the_next() {
        let disk = SimDisk::new();
        // Numbers 62 and 63 fill slot 0, 64 opens slot 1.
        written(&disk, |packed| {
            for number in 62..65 {
                packed.push_ended(62, number, ended(number)).unwrap();
            }
        });
        let mut packed = PackedState::new(&disk);
        assert!(
            is_invariant(packed.push_ended(62, 66, ended(66))),
            "65 is missing"
        );
        assert!(
            is_invariant(packed.push_ended(62, 64, ended(64))),
            "64 is there"
        );
        assert_eq!(packed.front_ended(62, 65).unwrap(), ended(62));
        assert!(is_invariant(packed.front_ended(61, 65)), "61 is not kept");
        packed.pop_ended(62).unwrap();
        packed.pop_ended(63).unwrap();
        assert!(is_invariant(packed.front_ended(63, 65)), "63 is gone");
        assert_eq!(packed.front_ended(64, 65).unwrap(), ended(64));
        assert!(is_invariant(packed.pop_ended(0)), "slot 0 is empty now");
    }
}
