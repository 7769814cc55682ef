//! [`Disk`] in memory with crash semantics, for the deterministic simulation and fast tests.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::{Disk, FlushFuture, KeyValue, Order, StorageError, Write, WriteBatch};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct Platters {
    /// What a reader sees: every write made so far.
    current: Map,
    /// What survives a crash: the state as of the last flush.
    durable: Map,
    /// Batches written since the last flush, in order.
    unflushed: Vec<WriteBatch>,
}

/// A simulated disk. Clones share the same platters, so the harness keeps one clone per node
/// across the node's kill and restart and calls [`SimDisk::crash`] in between.
#[derive(Clone, Default)]
pub struct SimDisk {
    platters: Arc<Mutex<Platters>>,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every write that was not flushed, as a power cut would.
    /// Returns how many batches were lost (the simulation reports it).
    pub fn crash(&self) -> usize {
        let mut platters = self.platters.lock().expect("sim disk lock poisoned");
        let lost = platters.unflushed.len();
        platters.current = platters.durable.clone();
        platters.unflushed.clear();
        lost
    }

    /// Erases everything, durable or not (an operator wiping a data directory).
    pub fn wipe(&self) {
        *self.platters.lock().expect("sim disk lock poisoned") = Platters::default();
    }
}

fn apply_to(map: &mut Map, batch: &WriteBatch) {
    for write in &batch.writes {
        match write {
            Write::Put(k, v) => {
                map.insert(k.clone(), v.clone());
            }
            Write::Delete(k) => {
                map.remove(k);
            }
        }
    }
}

impl Disk for SimDisk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let platters = self.platters.lock().expect("sim disk lock poisoned");
        Ok(platters.current.get(key).cloned())
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let platters = self.platters.lock().expect("sim disk lock poisoned");
        let bounds = (
            Bound::Included(start.to_vec()),
            Bound::Excluded(end.to_vec()),
        );
        let range = platters.current.range::<Vec<u8>, _>(bounds);
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(match order {
            Order::Ascending => range.take(limit).map(clone).collect(),
            Order::Descending => range.rev().take(limit).map(clone).collect(),
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut platters = self.platters.lock().expect("sim disk lock poisoned");
        apply_to(&mut platters.current, &batch);
        platters.unflushed.push(batch);
        Ok(())
    }

    fn flush(&self) -> FlushFuture<'_> {
        let mut platters = self.platters.lock().expect("sim disk lock poisoned");
        let unflushed = std::mem::take(&mut platters.unflushed);
        for batch in &unflushed {
            apply_to(&mut platters.durable, batch);
        }
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(disk: &SimDisk, key: &str) {
        let mut batch = WriteBatch::default();
        batch.put(key.as_bytes().to_vec(), b"v".to_vec());
        disk.write(batch).unwrap();
    }

    #[test]
    fn a_crash_loses_exactly_the_unflushed_writes() {
        let disk = SimDisk::new();
        put(&disk, "flushed");
        futures::executor::block_on(disk.flush()).unwrap();
        put(&disk, "unflushed-1");
        put(&disk, "unflushed-2");
        assert!(
            disk.get(b"unflushed-1").unwrap().is_some(),
            "reads see unflushed writes"
        );
        assert_eq!(disk.crash(), 2);
        assert!(disk.get(b"flushed").unwrap().is_some());
        assert!(disk.get(b"unflushed-1").unwrap().is_none());
        assert!(disk.get(b"unflushed-2").unwrap().is_none());
    }

    #[test]
    fn a_wipe_loses_everything() {
        let disk = SimDisk::new();
        put(&disk, "a");
        futures::executor::block_on(disk.flush()).unwrap();
        disk.wipe();
        assert!(disk.get(b"a").unwrap().is_none());
    }
}
