//! Where each part of the reservation state is stored (format 5): the packed values, their
//! keys, and the arithmetic from a reservation to its chunk, from a deadline to its due bucket
//! and from a number of the retention queue to its slot, written once, here.
//!
//! Every packed value is a function of the logical state alone (which reservations are
//! remembered, which are held and when they are due, which ended reservations the queue holds
//! from its front), sorted, and absent when it would be empty: so replicas hold the same bytes
//! whatever their apply-call boundaries, and a state upgraded from format 4 holds the bytes a
//! format-5 replica applying the same log holds.

use serde::{Deserialize, Serialize};

use crate::inventory::{Reservation, ReservationId};
use crate::storage::keys;

/// Log entries whose reservations share a chunk. An id names the entry that created its
/// reservation, so it names its chunk: `log index / LOG_ENTRIES_PER_CHUNK`. Most entries create
/// at most one reservation (a hold or a cart), so a chunk holds at most 32: ~3 KB of one-line
/// holds, written as one value per apply call however many of them change; a batch entry
/// creates up to `inventory::BATCH_HOLD_LINES_MAX` (100) one-line holds, about a 100-line
/// cart's bytes, so a chunk stays within a few hundred KB. A
/// constant of the replicated state machine: every replica must lay the state out the same way.
pub const LOG_ENTRIES_PER_CHUNK: u64 = 32;

/// Ended reservations per slot of the retention queue: a slot of 64 (id, end time) pairs is
/// ~1 KB. A constant of the replicated state machine, like the chunk size.
pub const ENDED_PER_SLOT: u64 = 64;

/// Milliseconds of deadline per due window: the due index groups held reservations by the 10 ms
/// window their deadline falls in, and by chunk within it. Within a window the buckets are by
/// chunk, not by deadline, so the expiry proposer reads a window whole before it sorts it:
/// windows of a second made it read and sort every hold of an expiry storm (100,000 due in
/// one second) on each of its rounds; 10 ms windows hold a hundredth of that, and a chunk's
/// holds (32 entries, a few ms of log at load) still share one or two buckets.
pub const DUE_WINDOW_MS: u64 = 10;

/// A chunk of reservations: those created by the entries of one [`LOG_ENTRIES_PER_CHUNK`]
/// range of log indices that are still remembered, held or ended, in id order.
pub type Chunk = Vec<Reservation>;

/// A held reservation in a due bucket: its id and the millisecond of its deadline within the
/// bucket's window (the key holds the window). A bucket is in (millisecond, id) order: the
/// order of deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Due {
    pub ms_in_window: u16,
    pub id: ReservationId,
}

/// An ended reservation in a slot of the retention queue, and the log time it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub id: ReservationId,
    pub ended_at_ms: u64,
}

/// The chunk that holds reservation `id`.
pub fn chunk_of(id: ReservationId) -> u64 {
    id.log_index() / LOG_ENTRIES_PER_CHUNK
}

/// Where chunk `chunk` is stored: `Sc` + its number (big-endian, so chunks sort by number).
pub fn chunk_key(chunk: u64) -> Vec<u8> {
    [keys::RESERVATION_CHUNKS_START, &chunk.to_be_bytes()].concat()
}

/// A due bucket: the held reservations of one chunk due in one window of [`DUE_WINDOW_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DueBucket {
    /// The window: deadline ms / [`DUE_WINDOW_MS`].
    pub window: u64,
    pub chunk: u64,
}

impl DueBucket {
    /// The bucket of `reservation`'s deadline, and its entry there.
    pub fn of(reservation: &Reservation) -> (Self, Due) {
        let bucket = Self {
            window: reservation.expires_at_ms / DUE_WINDOW_MS,
            chunk: chunk_of(reservation.id),
        };
        let due = Due {
            ms_in_window: (reservation.expires_at_ms % DUE_WINDOW_MS) as u16,
            id: reservation.id,
        };
        (bucket, due)
    }

    /// The deadline of `due`, an entry of this bucket, in ms of log time.
    pub fn deadline_ms(self, due: Due) -> u64 {
        self.window * DUE_WINDOW_MS + u64::from(due.ms_in_window)
    }

    /// Where the bucket is stored: `Sw` + the window + the chunk (big-endian: buckets sort by
    /// window, so the due index is read in deadline order, a window at a time).
    pub fn key(self) -> Vec<u8> {
        [
            keys::DUE_BUCKETS_START,
            &self.window.to_be_bytes(),
            &self.chunk.to_be_bytes(),
        ]
        .concat()
    }

    /// The bucket stored under `key`, if it is a due-bucket key.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let rest = key.strip_prefix(keys::DUE_BUCKETS_START)?;
        let (window, chunk) = rest.split_first_chunk::<8>()?;
        let chunk: [u8; 8] = chunk.try_into().ok()?;
        Some(Self {
            window: u64::from_be_bytes(*window),
            chunk: u64::from_be_bytes(chunk),
        })
    }

    /// The first key of the buckets of windows after the one `ms` falls in: the end of a scan
    /// for what is due at `ms`.
    pub fn scan_end_after(ms: u64) -> Vec<u8> {
        match (ms / DUE_WINDOW_MS).checked_add(1) {
            Some(next_window) => [keys::DUE_BUCKETS_START, &next_window.to_be_bytes()].concat(),
            None => keys::DUE_BUCKETS_END.to_vec(),
        }
    }
}

/// The slot of the retention queue that holds number `number`.
pub fn slot_of(number: u64) -> u64 {
    number / ENDED_PER_SLOT
}

/// The first number slot `slot` holds room for.
pub fn slot_start(slot: u64) -> u64 {
    slot * ENDED_PER_SLOT
}

/// Where slot `slot` is stored: `Sf` + its number (big-endian).
pub fn slot_key(slot: u64) -> Vec<u8> {
    [keys::ENDED_SLOTS_START, &slot.to_be_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(log_index: u64) -> ReservationId {
        ReservationId::new(log_index, 0).unwrap()
    }

    #[test]
    fn an_id_names_its_chunk_by_the_entry_that_created_it() {
        assert_eq!(chunk_of(id(0)), 0);
        assert_eq!(chunk_of(id(31)), 0);
        assert_eq!(chunk_of(id(32)), 1);
        assert_eq!(chunk_of(ReservationId::new(33, 7).unwrap()), 1);
        assert!(chunk_key(255) < chunk_key(256));
        assert!(chunk_key(u64::MAX).as_slice() < keys::RESERVATION_CHUNKS_END);
    }

    #[test]
    fn due_buckets_sort_by_window_then_chunk_and_round_trip() {
        let bucket = |window, chunk| DueBucket { window, chunk };
        assert!(bucket(5, u64::MAX).key() < bucket(6, 0).key());
        assert!(bucket(5, 1).key() < bucket(5, 2).key());
        assert!(bucket(u64::MAX, u64::MAX).key().as_slice() < keys::DUE_BUCKETS_END);
        assert_eq!(
            DueBucket::from_key(&bucket(7, 42).key()),
            Some(bucket(7, 42))
        );
        assert_eq!(DueBucket::from_key(&chunk_key(7)), None);
        assert!(bucket(5, u64::MAX).key() < DueBucket::scan_end_after(59));
        assert!(DueBucket::scan_end_after(59) <= bucket(6, 0).key());
        let last_window = bucket(u64::MAX / DUE_WINDOW_MS, u64::MAX);
        assert!(last_window.key() < DueBucket::scan_end_after(u64::MAX));
        assert!(DueBucket::scan_end_after(u64::MAX).as_slice() <= keys::DUE_BUCKETS_END);
    }

    #[test]
    fn a_deadline_is_its_bucket_window_and_its_millisecond_within_it() {
        let reservation = Reservation {
            id: id(70),
            status: crate::inventory::ReservationStatus::Held,
            lines: Vec::new(),
            created_at_ms: 1,
            updated_at_ms: 1,
            expires_at_ms: 1_700_000_012_345,
        };
        let (bucket, due) = DueBucket::of(&reservation);
        assert_eq!(
            bucket,
            DueBucket {
                window: 170_000_001_234,
                chunk: 2
            }
        );
        assert_eq!(due.ms_in_window, 5);
        assert_eq!(bucket.deadline_ms(due), reservation.expires_at_ms);
    }

    #[test]
    fn numbers_of_the_retention_queue_fill_slots_of_64() {
        assert_eq!((slot_of(0), slot_of(63), slot_of(64)), (0, 0, 1));
        assert_eq!(slot_start(slot_of(130)), 128);
        assert!(slot_key(1) < slot_key(256));
        assert!(slot_key(u64::MAX).as_slice() < keys::ENDED_SLOTS_END);
    }
}
