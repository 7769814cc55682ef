//! The resident state's ordered map, one allocation per key.
//!
//! Why not `BTreeMap<Vec<u8>, Vec<u8>>`: at a million records the state holds two million
//! small keys (each record and its SKU-index entry), and two `Vec`s per key cost 48 bytes in
//! the tree's nodes plus two allocations. Here an entry is one boxed slice, `[key length,
//! LEB128][key][value]`, 16 bytes in the node and one allocation: about 120 bytes per record
//! and 55 per index entry instead of ~180 and ~100 (docs/performance.md, "Memory").
//!
//! Entries are ordered by key alone, and `Borrow<[u8]>` hands the tree the key, so lookups and
//! ranges take plain `&[u8]` keys.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;

/// One key and its value in a single allocation.
pub struct Entry(Box<[u8]>);

impl Entry {
    pub fn new(key: &[u8], value: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(key.len() + value.len() + 3);
        let mut len = key.len();
        loop {
            let low = (len & 0x7F) as u8;
            len >>= 7;
            if len == 0 {
                bytes.push(low);
                break;
            }
            bytes.push(low | 0x80);
        }
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
        Self(bytes.into_boxed_slice())
    }

    /// Where the key starts, and its length.
    fn key_span(&self) -> (usize, usize) {
        let (mut len, mut shift, mut at) = (0usize, 0, 0);
        loop {
            let byte = self.0[at];
            len |= usize::from(byte & 0x7F) << shift;
            at += 1;
            if byte & 0x80 == 0 {
                return (at, len);
            }
            shift += 7;
        }
    }

    pub fn key(&self) -> &[u8] {
        let (at, len) = self.key_span();
        &self.0[at..at + len]
    }

    pub fn value(&self) -> &[u8] {
        let (at, len) = self.key_span();
        &self.0[at + len..]
    }

    /// Bytes of key and value (what the map counts as its size).
    pub fn payload_bytes(&self) -> usize {
        let (at, _) = self.key_span();
        self.0.len() - at
    }
}

impl Borrow<[u8]> for Entry {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}

/// The state: entries by key, and the bytes of their keys and values.
#[derive(Default)]
pub struct Map {
    entries: BTreeSet<Entry>,
    bytes: u64,
}

impl Map {
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Entry::value)
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        let entry = Entry::new(key, value);
        self.bytes += entry.payload_bytes() as u64;
        if let Some(old) = self.entries.replace(entry) {
            self.bytes -= old.payload_bytes() as u64;
        }
    }

    pub fn delete(&mut self, key: &[u8]) {
        if let Some(old) = self.entries.take(key) {
            self.bytes -= old.payload_bytes() as u64;
        }
    }

    /// Entries with `start <= key` (`start` included or not) and `key < end`, ascending or
    /// descending.
    pub fn range<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
    ) -> std::collections::btree_set::Range<'a, Entry> {
        self.entries.range::<[u8], _>((start, end))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of every key and value held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_keys_and_values_of_any_length() {
        for key_len in [0usize, 1, 127, 128, 300, 20_000] {
            let key = vec![b'k'; key_len];
            let entry = Entry::new(&key, b"value");
            assert_eq!(entry.key(), key.as_slice());
            assert_eq!(entry.value(), b"value");
            assert_eq!(entry.payload_bytes(), key_len + 5);
        }
    }

    #[test]
    fn the_map_orders_replaces_deletes_and_counts_bytes() {
        let mut map = Map::default();
        map.put(b"b", b"22");
        map.put(b"a", b"1");
        map.put(b"c", b"333");
        map.put(b"b", b"x");
        assert_eq!(map.get(b"b"), Some(&b"x"[..]));
        assert_eq!(map.bytes(), 2 + 2 + 4);
        map.delete(b"a");
        map.delete(b"missing");
        assert_eq!(map.bytes(), 2 + 4);
        let keys: Vec<&[u8]> = map
            .range(Bound::Unbounded, Bound::Unbounded)
            .map(Entry::key)
            .collect();
        assert_eq!(keys, vec![&b"b"[..], &b"c"[..]]);
        let down: Vec<&[u8]> = map
            .range(Bound::Included(&b"a"[..]), Bound::Excluded(&b"c"[..]))
            .rev()
            .map(Entry::key)
            .collect();
        assert_eq!(down, vec![&b"b"[..]]);
    }
}
