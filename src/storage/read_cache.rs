//! A bounded map of values known to equal the disk's: what [`super::WriteBehind`] answers reads
//! from before it asks sled.
//!
//! ## Why
//! `perf` on a leader over 200,000 records put 7.7% of its CPU in sled's `get` (every apply
//! reads the record it changes; at that size sled walks its tree through pages that miss the
//! CPU caches: ~5.7 µs a read, against well under one at 1,000 records), and a checkpoint's
//! `apply_batch` holds sled's write lock, so an apply reading sled waits for the whole
//! checkpoint. A hash map hit costs a fraction of that and takes no sled lock.
//!
//! ## What it is
//! Two generations of a hash map. New entries go into the young one; when the young one holds
//! half the byte budget it becomes the old one (the previous old one is dropped). A hit in the
//! old generation moves the entry back into the young one. So the entries read or written
//! within the last half budget's worth survive, memory stays under the budget (plus the maps'
//! own slack), and no per-entry list or clock is kept. The byte count is an estimate: key and
//! value lengths plus [`ENTRY_OVERHEAD`].
//!
//! ## Not state
//! A cache of the disk below, never written or replicated: nodes may hold different entries
//! and still answer alike. Lookups are by key only; no iteration order leaks out.

use std::collections::HashMap;

/// Bytes counted per entry on top of its key and value: two `Vec` headers, the hash table's
/// slot and control byte, and the allocator's rounding of two allocations.
pub const ENTRY_OVERHEAD: usize = 96;

/// See the module docs.
#[derive(Debug, Default)]
pub struct ReadCache {
    young: HashMap<Vec<u8>, Vec<u8>>,
    old: HashMap<Vec<u8>, Vec<u8>>,
    young_bytes: usize,
    /// Bytes a generation may hold before it is turned over; 0 disables the cache.
    generation_bytes: usize,
}

fn cost(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD
}

impl ReadCache {
    /// A cache of about `budget_bytes` (0: caches nothing).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            generation_bytes: budget_bytes / 2,
            ..Self::default()
        }
    }

    /// The value of `key`, if cached.
    pub fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(value) = self.young.get(key) {
            return Some(value.clone());
        }
        let (key, value) = self.old.remove_entry(key)?;
        let found = value.clone();
        self.insert(key, value);
        Some(found)
    }

    /// Records that the disk holds `value` under `key`.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        let entry_cost = cost(&key, &value);
        if entry_cost > self.generation_bytes {
            self.remove(&key);
            return;
        }
        if self.young_bytes + entry_cost > self.generation_bytes {
            self.old = std::mem::take(&mut self.young);
            self.young_bytes = 0;
        }
        // An older copy in the old generation is shadowed by this one: young is looked at first.
        if let Some(previous) = self.young.insert(key.clone(), value) {
            self.young_bytes -= cost(&key, &previous);
        }
        self.young_bytes += entry_cost;
    }

    /// Records that the disk holds nothing under `key`.
    pub fn remove(&mut self, key: &[u8]) {
        if let Some(previous) = self.young.remove(key) {
            self.young_bytes -= cost(key, &previous);
        }
        self.old.remove(key);
    }

    /// Forgets everything (the disk below may have changed without this cache seeing it).
    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
        self.young_bytes = 0;
    }

    /// Entries held (both generations; a key in both counts twice).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// Bytes counted for the entries held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.young_bytes
            + self
                .old
                .iter()
                .map(|(key, value)| cost(key, value))
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Vec<u8> {
        format!("key-{i:06}").into_bytes()
    }

    #[test]
    fn hits_return_what_was_inserted_and_misses_nothing() {
        let mut cache = ReadCache::new(1 << 20);
        assert_eq!(cache.get(b"a"), None);
        cache.insert(b"a".to_vec(), b"1".to_vec());
        cache.insert(b"a".to_vec(), b"2".to_vec());
        assert_eq!(cache.get(b"a"), Some(b"2".to_vec()));
        cache.remove(b"a");
        assert_eq!(cache.get(b"a"), None);
    }

    #[test]
    fn memory_stays_within_the_budget_and_recent_entries_survive() {
        let budget = 64 * 1024;
        let mut cache = ReadCache::new(budget);
        for i in 0..10_000 {
            cache.insert(key(i), vec![7; 40]);
            assert!(cache.bytes() <= budget, "{} bytes after {i}", cache.bytes());
        }
        // The newest half budget's worth is all there; the oldest entries are gone.
        let per_entry = cost(&key(0), &[7; 40]);
        let surely_kept = budget / 2 / per_entry;
        for i in 10_000 - surely_kept..10_000 {
            assert_eq!(cache.get(&key(i)), Some(vec![7; 40]), "entry {i}");
        }
        assert_eq!(cache.get(&key(0)), None);
        assert!(cache.len() < 10_000);
    }

    #[test]
    fn an_entry_read_again_is_kept_across_turnovers() {
        let mut cache = ReadCache::new(16 * 1024);
        cache.insert(b"hot".to_vec(), b"v".to_vec());
        for i in 0..5_000 {
            cache.insert(key(i), vec![0; 20]);
            if i % 20 == 0 {
                assert_eq!(cache.get(b"hot"), Some(b"v".to_vec()), "after {i}");
            }
        }
    }

    #[test]
    fn removal_hides_a_copy_left_in_the_old_generation() {
        let mut cache = ReadCache::new(4 * 1024);
        cache.insert(b"k".to_vec(), b"old".to_vec());
        // Turn the generation over so that "k" sits in the old one.
        let mut i = 0;
        while cache.old.is_empty() {
            cache.insert(key(i), vec![0; 20]);
            i += 1;
        }
        assert!(cache.old.contains_key(&b"k"[..]));
        cache.remove(b"k");
        assert_eq!(cache.get(b"k"), None);
        // An update shadows the old copy the same way.
        cache.insert(b"j".to_vec(), b"1".to_vec());
        cache.old.insert(b"j".to_vec(), b"0".to_vec());
        assert_eq!(cache.get(b"j"), Some(b"1".to_vec()));
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let mut cache = ReadCache::new(0);
        cache.insert(b"a".to_vec(), b"1".to_vec());
        assert_eq!(cache.get(b"a"), None);
    }
}
