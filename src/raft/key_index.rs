//! Where each idempotency key is stored: an in-memory index from a key's identity to its entry
//! number in the idempotency log.
//!
//! ## Why
//! Idempotency entries live in the idempotency log (`storage::keys`: chunks of 32 entries in
//! the order they were stored, the oldest forgotten first), so that storing and forgetting one
//! costs sled nothing per entry: the newest chunk is rewritten in memory and handed to sled once
//! per checkpoint, and a whole chunk is deleted at once. Format 3 kept each entry under its own
//! sled key, in expiry order: at the key cap (a million keys) every keyed write inserted one
//! sled key and deleted another (~6 µs of sled each, on every node) and read the next keys to
//! evict back from sled; throughput at the cap fell to ~70% of a fresh cluster's (docs/performance.md,
//! "Aging"). Before that (format 2) each entry also had a sled key at a place as random as its
//! identity. Finding an entry by identity needs its number, and that is what this index keeps.
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
//! (see `raft::state_machine`). No iteration order of the hash map ever leaks out.

use std::collections::HashMap;
use std::hash::Hasher;

use crate::storage::{self, decode, keys, Disk, Order, StorageError};

/// Chunks read per scan while building the index from the disk.
const BUILD_SCAN_CHUNKS: usize = 256;

/// The fingerprint of an identity's bytes (`storage::keys`' identity encoding): std's SipHash
/// with fixed keys, the same for the life of the process (nothing stores it), and a full 64-bit
/// collision takes ~2^32 tries to find.
pub fn fingerprint(identity: &[u8]) -> u64 {
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
}

impl KeyIndex {
    /// The index of the entries stored on `disk` (chunks of `per_chunk` entries), read in pages
    /// of [`BUILD_SCAN_CHUNKS`] chunks.
    pub fn build(disk: &dyn Disk, per_chunk: u64) -> Result<Self, StorageError> {
        let front: u64 = storage::read(disk, keys::KEY_FRONT)?.unwrap_or(0);
        let mut index = Self::default();
        let mut start = keys::key_chunk(front / per_chunk);
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
                let number = keys::key_chunk_number(key).ok_or_else(|| {
                    StorageError::Invariant(format!("malformed chunk key {key:?}"))
                })?;
                let chunk: keys::KeyChunk = decode(key, value)?;
                for (offset, slot) in chunk.iter().enumerate() {
                    let number = number * per_chunk + offset as u64;
                    if let (true, Some(stored)) = (number >= front, slot) {
                        index.insert(fingerprint(&stored.identity), number);
                    }
                }
            }
        }
    }

    /// The entry numbers stored under `fingerprint`: one for each identity that has it.
    pub fn numbers(&self, fingerprint: u64) -> &[u64] {
        match self.shared.get(&fingerprint) {
            Some(numbers) => numbers,
            None => self
                .single
                .get(&fingerprint)
                .map_or(&[], std::slice::from_ref),
        }
    }

    /// Notes an entry stored with this fingerprint and number.
    pub fn insert(&mut self, fingerprint: u64, number: u64) {
        if let Some(numbers) = self.shared.get_mut(&fingerprint) {
            numbers.push(number);
        } else if let Some(other) = self.single.remove(&fingerprint) {
            self.shared.insert(fingerprint, vec![other, number]);
        } else {
            self.single.insert(fingerprint, number);
        }
    }

    /// Forgets one entry stored with this fingerprint and number. An entry the index does not
    /// hold is an invariant broken: the caller read it from the same state.
    pub fn remove(&mut self, fingerprint: u64, number: u64) -> Result<(), StorageError> {
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
            return Ok(());
        }
        match self.single.get(&fingerprint) {
            Some(&held) if held == number => {
                self.single.remove(&fingerprint);
                Ok(())
            }
            _ => Err(missing()),
        }
    }

    /// How many entries the index holds.
    pub fn len(&self) -> usize {
        self.single.len() + self.shared.values().map(Vec::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
