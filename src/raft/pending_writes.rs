//! The writes of one apply call, not yet on disk, and the reads that must see them.
//!
//! One apply call of the state machine applies a run of entries into one atomic write batch,
//! and a later entry of the run depends on the writes of earlier ones (a record created, then
//! reserved; a hold created, then committed; a reservation ended, then forgotten). So every
//! read of the state inside the call goes through [`PendingWrites::get`]: the pending write of
//! the key if there is one (a deletion reads as absent), else the disk. The idempotency log is
//! the one part of the state that keeps its pending writes itself (its chunks).
//!
//! The writes are a hash map, sorted by key only when they leave ([`PendingWrites::write_into`]):
//! a batch of 8,000 lines reads and writes each of its records here, and an ordered map made
//! every one of those a walk down a tree comparing long keys (`perf`: ordered-map searches and
//! their key comparisons were ~40% of all CPU under batches, docs/performance.md). Its
//! iteration order is never looked at, so its per-process hash seed changes nothing
//! (`inventory::KeyMap`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::inventory::KeyMap;
use crate::storage::{decode, encode, Disk, StorageError, WriteBatch};

/// The writes of one apply call: key -> new value, `None` deletes.
pub struct PendingWrites<'d> {
    disk: &'d dyn Disk,
    writes: KeyMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'d> PendingWrites<'d> {
    pub fn new(disk: &'d dyn Disk) -> Self {
        Self {
            disk,
            writes: KeyMap::default(),
        }
    }

    /// The value of `key` as this call has left it so far.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let bytes = match self.writes.get(key) {
            Some(pending) => pending.clone(),
            None => self.disk.get(key)?,
        };
        bytes.map(|bytes| decode(key, &bytes)).transpose()
    }

    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(key, Some(encode(value)));
    }

    /// Writes `key` with an empty value (an index entry, whose key is all it says).
    pub fn put_empty(&mut self, key: Vec<u8>) {
        self.writes.insert(key, Some(Vec::new()));
    }

    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Adds every pending write to `batch`, in key order.
    pub fn write_into(self, batch: &mut WriteBatch) {
        let mut writes: Vec<_> = self.writes.into_iter().collect();
        writes.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        for (key, value) in writes {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
    }
}
