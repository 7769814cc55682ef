//! The key index: where each idempotency identity's entry is, an in-memory map from the
//! identity to its entry number in the log.
//!
//! ## What it is
//! A map from a 64-bit fingerprint of the identity's bytes to the number of the one stored entry
//! with that identity. Two identities may share a fingerprint: the map then holds every number
//! of that fingerprint, and a lookup tries each (the chunk holds the whole identity, so a wrong
//! candidate is simply not it). ~17 bytes per key in a hash table (about 34 MiB at the
//! million-key cap).
//!
//! ## Not state, a cache of it
//! It changes how an entry is found, never which: the state machine gives the same answers on
//! every node whatever this holds, as long as it matches the disk. So it is never written or
//! replicated: it is built from the disk's chunks when a store first applies after opening
//! (one read per chunk), after a snapshot install, and after an apply call that failed half-way
//! ([`SharedKeyIndex`]). No iteration order of the hash map ever leaks out.

use std::collections::HashMap;
use std::hash::Hasher;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::chunks::{chunk_key, chunk_number, Chunk, ChunkLayout};
use crate::storage::fs::blocking;
use crate::storage::{self, decode, keys, Disk, Order, StorageError};

/// Chunks read per scan while building the index from the disk.
const BUILD_SCAN_CHUNKS: usize = 256;

/// The fingerprint of an identity's bytes ([`identity_bytes`](super::identity_bytes)): std's
/// SipHash with fixed keys, the same for the life of the process (nothing stores it), and a
/// full 64-bit collision takes ~2^32 tries to find.
pub(super) fn fingerprint(identity: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(identity);
    hasher.finish()
}

/// Identity fingerprint -> number of the stored entry (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// Fingerprints of exactly one stored identity.
    single: HashMap<u64, u64>,
    /// Fingerprints shared by two or more stored identities: all their numbers.
    shared: HashMap<u64, Vec<u64>>,
    /// How many numbers the two maps hold together (kept, so that counting is free).
    len: usize,
}

impl KeyIndex {
    /// The index of the entries stored on `disk` from its front on, read in pages of
    /// [`BUILD_SCAN_CHUNKS`] chunks.
    pub(super) fn build(disk: &dyn Disk, layout: ChunkLayout) -> Result<Self, StorageError> {
        let front: u64 = storage::read(disk, keys::KEY_FRONT)?.unwrap_or(0);
        let mut index = Self::default();
        let mut start = chunk_key(layout.place(front).chunk);
        loop {
            let page = disk.scan(
                &start,
                keys::KEY_CHUNKS_END,
                Order::Ascending,
                BUILD_SCAN_CHUNKS,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(index);
            };
            start = [last.as_slice(), &[0]].concat();
            for (key, value) in &page {
                let chunk_number = chunk_number(key).ok_or_else(|| {
                    StorageError::Invariant(format!("malformed chunk key {key:?}"))
                })?;
                let chunk: Chunk = decode(key, value)?;
                for (slot, stored) in chunk.iter().enumerate() {
                    let number = layout.number(chunk_number, slot);
                    if let (true, Some(stored)) = (number >= front, stored) {
                        index.insert(fingerprint(&stored.identity), number);
                    }
                }
            }
        }
    }

    /// The entry numbers stored under `fingerprint`: one for each identity that has it.
    pub(super) fn numbers(&self, fingerprint: u64) -> &[u64] {
        match self.shared.get(&fingerprint) {
            Some(numbers) => numbers,
            None => self
                .single
                .get(&fingerprint)
                .map_or(&[], std::slice::from_ref),
        }
    }

    /// Notes an entry stored with this fingerprint and number.
    pub(super) fn insert(&mut self, fingerprint: u64, number: u64) {
        if let Some(numbers) = self.shared.get_mut(&fingerprint) {
            numbers.push(number);
        } else if let Some(other) = self.single.remove(&fingerprint) {
            self.shared.insert(fingerprint, vec![other, number]);
        } else {
            self.single.insert(fingerprint, number);
        }
        self.len += 1;
    }

    /// Forgets one entry stored with this fingerprint and number. An entry the index does not
    /// hold is an invariant broken: the caller read it from the same state.
    pub(super) fn remove(&mut self, fingerprint: u64, number: u64) -> Result<(), StorageError> {
        let missing = || {
            StorageError::Invariant(format!(
                "the key index has no entry number {number} for fingerprint {fingerprint:#x}"
            ))
        };
        if let Some(numbers) = self.shared.get_mut(&fingerprint) {
            let position = numbers
                .iter()
                .position(|&held| held == number)
                .ok_or_else(missing)?;
            numbers.swap_remove(position);
            if let [last] = numbers[..] {
                self.shared.remove(&fingerprint);
                self.single.insert(fingerprint, last);
            }
        } else {
            match self.single.get(&fingerprint) {
                Some(&held) if held == number => self.single.remove(&fingerprint),
                _ => return Err(missing()),
            };
        }
        self.len -= 1;
        Ok(())
    }

    /// How many entries the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The key index between apply calls, shared by the clones of a state-machine store: an apply
/// call takes it out, changes it with the log and puts it back once its batch is written.
/// Empty until built from the disk: after opening, after a snapshot install (the state it
/// described was replaced), and after an apply call that failed half-way (which never put it
/// back).
#[derive(Debug, Clone, Default)]
pub struct SharedKeyIndex {
    slot: Arc<Mutex<Option<KeyIndex>>>,
}

impl SharedKeyIndex {
    /// The index, taken out for one apply call; built from `disk` if there is none, off the
    /// async workers (one scan of every stored entry).
    pub async fn take(&self, disk: &Arc<dyn Disk>, layout: ChunkLayout) -> io::Result<KeyIndex> {
        if let Some(index) = self.lock().take() {
            return Ok(index);
        }
        let disk = disk.clone();
        let index = blocking(move || Ok(KeyIndex::build(&*disk, layout)?)).await?;
        tracing::info!(
            keys = index.len(),
            "built the idempotency key index from the disk"
        );
        Ok(index)
    }

    /// Puts back the index an apply call took, once its batch is written.
    pub fn put_back(&self, index: KeyIndex) {
        *self.lock() = Some(index);
    }

    /// Drops the index: the state it described was replaced.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> MutexGuard<'_, Option<KeyIndex>> {
        self.slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_sharing_a_fingerprint_keep_every_number_and_lose_only_their_own() {
        let mut index = KeyIndex::default();
        index.insert(7, 100);
        assert_eq!(index.numbers(7), &[100]);
        index.insert(7, 200);
        index.insert(7, 100); // (a duplicate number cannot happen; the index does not mind)
        let mut all = index.numbers(7).to_vec();
        all.sort_unstable();
        assert_eq!(all, vec![100, 100, 200]);
        assert_eq!(index.len(), 3);

        index.remove(7, 100).unwrap();
        let mut left = index.numbers(7).to_vec();
        left.sort_unstable();
        assert_eq!(left, vec![100, 200]);
        index.remove(7, 200).unwrap();
        assert_eq!(index.numbers(7), &[100]);
        assert!(
            index.shared.is_empty(),
            "one identity left: back to a single slot"
        );
        index.remove(7, 100).unwrap();
        assert!(index.numbers(7).is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn removing_an_entry_the_index_does_not_hold_is_an_error() {
        let mut index = KeyIndex::default();
        assert!(index.remove(1, 5).is_err());
        index.insert(1, 5);
        assert!(index.remove(1, 6).is_err(), "another number");
        assert!(index.remove(2, 5).is_err(), "another fingerprint");
        index.insert(1, 6);
        assert!(
            index.remove(1, 7).is_err(),
            "a shared fingerprint without that number"
        );
        assert_eq!(index.len(), 2, "failed removals change nothing");
    }

    #[test]
    fn fingerprints_are_stable_and_tell_identities_apart() {
        assert_eq!(fingerprint(b"order-42"), fingerprint(b"order-42"));
        assert_ne!(fingerprint(b"order-42"), fingerprint(b"order-43"));
        assert_ne!(fingerprint(b""), fingerprint(b"\0"));
    }
}
