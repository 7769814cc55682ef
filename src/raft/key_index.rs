//! Where each idempotency key is stored: an in-memory index from a key's identity to its expiry.
//!
//! ## Why
//! An idempotency entry lives in sled under its expiry key (`Sx` + expiry + identity, see
//! `storage::keys`), so the keys of one cluster are stored in the order they were added (log
//! time + a constant TTL): inserts land on sled's rightmost leaf and evictions on its leftmost,
//! both always in cache. Before, each entry also had a key of its own, `Si` + identity, at a
//! place as random as the identity: at the key cap (a million keys) every keyed write inserted
//! one such key and evicted another, each in a leaf sled had to load and copy, and looked the
//! new key up in a third; throughput at the cap fell to ~70% of a fresh cluster's (README,
//! "Aging"). Finding an entry by identity needs its expiry, and that is what this index keeps.
//!
//! ## What it is
//! A map from a 64-bit fingerprint of the identity's bytes to the expiry of the one stored entry
//! with that identity. Two identities may share a fingerprint: the map then holds every expiry
//! of that fingerprint, and a lookup tries each (the sled key holds the whole identity, so a
//! wrong candidate is simply not found). ~17 bytes per key in a hash table (about 34 MiB at the
//! million-key cap) instead of a second sled key of ~50 bytes plus sled's tree around it.
//!
//! ## Not state, a cache of it
//! It changes how an entry is found, never which: the state machine gives the same answers on
//! every node whatever this holds, as long as it matches the disk. So it is never written or
//! replicated: it is built from the disk's `Sx` range when a store first applies after opening
//! (1.3-1.7 s per million keys here, nearly all of it sled walking its pages), after a
//! snapshot install, and after an apply call that failed half-way (see `raft::state_machine`).
//! No iteration order of the hash map ever leaks out.

use std::collections::HashMap;
use std::hash::Hasher;

use crate::storage::{keys, Disk, Order, StorageError};

/// Expiry keys read per scan while building the index from the disk.
const BUILD_SCAN_KEYS: usize = 4096;

/// The fingerprint of an identity's bytes (`storage::keys`' identity encoding): std's SipHash
/// with fixed keys, the same for the life of the process (nothing stores it), and a full 64-bit
/// collision takes ~2^32 tries to find.
pub fn fingerprint(identity: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(identity);
    hasher.finish()
}

/// Identity fingerprint -> expiry ms of the stored entry (see the module docs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    /// Fingerprints of exactly one stored identity.
    single: HashMap<u64, u64>,
    /// Fingerprints shared by two or more stored identities: all their expiries.
    shared: HashMap<u64, Vec<u64>>,
}

impl KeyIndex {
    /// The index of the entries stored on `disk`, read in pages of [`BUILD_SCAN_KEYS`].
    pub fn build(disk: &dyn Disk) -> Result<Self, StorageError> {
        let mut index = Self::default();
        let mut start = keys::EXPIRY_START.to_vec();
        loop {
            let page = disk.scan(&start, keys::EXPIRY_END, Order::Ascending, BUILD_SCAN_KEYS)?;
            let Some((last, _)) = page.last() else {
                return Ok(index);
            };
            start = [last.as_slice(), &[0]].concat();
            for (key, _) in &page {
                let (expires_at_ms, identity) = keys::split_expiry(key).ok_or_else(|| {
                    StorageError::Invariant(format!("malformed expiry key {key:?}"))
                })?;
                index.insert(fingerprint(identity), expires_at_ms);
            }
        }
    }

    /// The expiries stored under `fingerprint`: one for each identity that has it.
    pub fn expiries(&self, fingerprint: u64) -> &[u64] {
        match self.shared.get(&fingerprint) {
            Some(expiries) => expiries,
            None => self
                .single
                .get(&fingerprint)
                .map_or(&[], std::slice::from_ref),
        }
    }

    /// Notes an entry stored with this fingerprint and expiry.
    pub fn insert(&mut self, fingerprint: u64, expires_at_ms: u64) {
        if let Some(expiries) = self.shared.get_mut(&fingerprint) {
            expiries.push(expires_at_ms);
        } else if let Some(other) = self.single.remove(&fingerprint) {
            self.shared.insert(fingerprint, vec![other, expires_at_ms]);
        } else {
            self.single.insert(fingerprint, expires_at_ms);
        }
    }

    /// Forgets one entry stored with this fingerprint and expiry. An entry the index does not
    /// hold is an invariant broken: the caller read it from the same state.
    pub fn remove(&mut self, fingerprint: u64, expires_at_ms: u64) -> Result<(), StorageError> {
        let missing = || {
            StorageError::Invariant(format!(
                "the key index has no entry expiring at {expires_at_ms} ms for fingerprint \
                 {fingerprint:#x}"
            ))
        };
        if let Some(expiries) = self.shared.get_mut(&fingerprint) {
            let position = expiries
                .iter()
                .position(|&expiry| expiry == expires_at_ms)
                .ok_or_else(missing)?;
            expiries.swap_remove(position);
            if let [last] = expiries[..] {
                self.shared.remove(&fingerprint);
                self.single.insert(fingerprint, last);
            }
            return Ok(());
        }
        match self.single.get(&fingerprint) {
            Some(&expiry) if expiry == expires_at_ms => {
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
    fn identities_sharing_a_fingerprint_keep_every_expiry_and_lose_only_their_own() {
        let mut index = KeyIndex::default();
        index.insert(7, 100);
        assert_eq!(index.expiries(7), &[100]);
        index.insert(7, 200);
        index.insert(7, 100); // a third identity, same fingerprint, same expiry
        let mut all = index.expiries(7).to_vec();
        all.sort_unstable();
        assert_eq!(all, vec![100, 100, 200]);
        assert_eq!(index.len(), 3);

        index.remove(7, 100).unwrap();
        let mut left = index.expiries(7).to_vec();
        left.sort_unstable();
        assert_eq!(left, vec![100, 200]);
        index.remove(7, 200).unwrap();
        assert_eq!(index.expiries(7), &[100]);
        assert!(
            index.shared.is_empty(),
            "one identity left: back to a single slot"
        );
        index.remove(7, 100).unwrap();
        assert!(index.expiries(7).is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn removing_an_entry_the_index_does_not_hold_is_an_error() {
        let mut index = KeyIndex::default();
        assert!(index.remove(1, 5).is_err());
        index.insert(1, 5);
        assert!(index.remove(1, 6).is_err(), "another expiry");
        assert!(index.remove(2, 5).is_err(), "another fingerprint");
        index.insert(1, 6);
        assert!(
            index.remove(1, 7).is_err(),
            "a shared fingerprint without that expiry"
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
