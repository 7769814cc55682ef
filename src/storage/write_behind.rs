//! A [`Disk`] that holds recent writes in memory and hands them to the disk below in large
//! batches: the state machine's write path without a sled batch per apply.
//!
//! Why: `perf` on a loaded leader put ~30% of each node's CPU in sled, most of it not in the
//! B-tree but around it: sled 0.34 seals and writes its IO buffer twice for every
//! `apply_batch` (`pin_log` rolls the buffer, then writes the batch manifest), each time waking
//! its thread pool and waiting in `sync_file_range`. The state machine made one batch per
//! apply call, i.e. hundreds per second. Here consecutive batches are merged in memory (a key
//! written by many entries, like a hot SKU or "applied up to", is written once) and reach the
//! disk below as **one** batch every [`CHECKPOINT_WRITES`] writes, or at [`Disk::flush`].
//!
//! The guarantees of [`Disk`] (module `storage`) still hold, because nothing about them depends
//! on when a batch reaches the disk below:
//! 1. all-or-nothing: a checkpoint is one atomic batch holding the union of whole batches, so a
//!    crash leaves the state as of the end of some batch, never inside one (for the state
//!    machine: data and "applied up to" stay in step, and openraft re-applies the rest of the
//!    log, which it keeps until a snapshot, and a snapshot flushes this first);
//! 2. `flush` writes the pending batches below, then flushes the disk below;
//! 3. reads (`get`, `scan`) see the pending writes over the disk below.
//!
//! What a crash loses is what it lost before: writes not yet flushed. Nothing is acknowledged
//! on the strength of the state machine's disk (the Raft log is the durable record), so the
//! only cost is re-applying the unwritten checkpoints' worth of log on restart.
//!
//! ## Who writes a checkpoint
//! In the simulation and most tests ([`WriteBehind::with_checkpoint_writes`]), the writer
//! itself, inline: the simulation has no OS threads, and policy is by count, not by time, so
//! runs stay deterministic. In the product ([`WriteBehind::new`]), a thread of its own: at
//! 200,000 records a checkpoint took ~21 ms (sled walks a large tree for each of ~4,000 keys),
//! and on the node's one runtime thread that was the p99. One checkpoint is in flight at a
//! time; writes keep merging meanwhile, and the writer waits only once
//! [`BACKGROUND_LAG_CHECKPOINTS`] checkpoints' worth is pending (memory stays bounded). A failed
//! background write leaves its writes pending and readable, and the next write or flush
//! reports it (the state machine then stops the node, as for any storage error).
//!
//! ## Reads
//! The pending writes first, then the batch being written, then a cache of values known to
//! equal the disk below's (`read_cache`: read from it, or checkpointed to it), then the disk.
//! The cache matters because sled's `apply_batch` holds a write lock that every sled read
//! waits for: an apply that reads sled would wait for the checkpoint thread. A value read
//! below while a checkpoint started (the `epoch` moved) is not cached: it may be older than
//! what that checkpoint wrote.
//!
//! Concurrency: one writer at a time (the state machine's worker) is the expected use, but
//! writes are serialised here anyway. Readers never wait for a checkpoint to reach the disk:
//! the batch being written stays readable (`writing`) until the disk below has it.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use super::read_cache::ReadCache;
use super::{Disk, FlushFuture, KeyValue, Order, StorageError, Write, WriteBatch};

/// Writes (puts and deletes, counted before merging) after which the pending ones go to the
/// disk below as one batch. At ~15,000 writes/s (5,000 entries/s) that is a few batches per
/// second instead of one per apply; the keys held stay a few hundred KiB.
pub const CHECKPOINT_WRITES: usize = 4096;

/// Pending writes by key: `None` deletes.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

#[derive(Default)]
struct Pending {
    /// Writes not yet handed to the disk below, newest value per key.
    overlay: Overlay,
    /// Writes merged into `overlay` since the last checkpoint (counts overwrites too).
    writes: usize,
    /// The checkpoint being written to the disk below: readable until it is there.
    writing: Option<Arc<Overlay>>,
    /// Values the disk below holds (see `read_cache`): read from it, or checkpointed to it.
    clean: ReadCache,
    /// Checkpoints started and power cuts, counted: a value read from the disk below is cached
    /// only if this did not change while it was read (else it may be older than the disk's).
    epoch: u64,
    /// A background checkpoint's failure, for the next write or flush to report.
    failed: Option<StorageError>,
}

impl Pending {
    /// Moves the pending writes into `writing`; `None` if there are none.
    fn start_checkpoint(&mut self) -> Option<Arc<Overlay>> {
        if self.overlay.is_empty() {
            return None;
        }
        let overlay = Arc::new(std::mem::take(&mut self.overlay));
        self.writes = 0;
        self.writing = Some(overlay.clone());
        self.epoch += 1;
        Some(overlay)
    }
}

impl Shared {
    /// Waits for a checkpoint being written to finish.
    fn wait<'a>(&self, pending: MutexGuard<'a, Pending>) -> MutexGuard<'a, Pending> {
        self.written
            .wait(pending)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pending writes once no checkpoint is being written.
    fn idle(&self) -> MutexGuard<'_, Pending> {
        let mut pending = lock(&self.pending);
        while pending.writing.is_some() {
            pending = self.wait(pending);
        }
        pending
    }

    /// Records how writing `batch` below went, and wakes whoever waits for it. A failure is
    /// kept for the next write or flush to report if `report_later` (the checkpoint thread's
    /// failures; the inline writer returns its own).
    fn finish_checkpoint(
        &self,
        batch: &Overlay,
        written: Result<(), StorageError>,
        report_later: bool,
    ) {
        let mut pending = lock(&self.pending);
        match written {
            Ok(()) => {
                for (key, value) in batch.iter() {
                    match value {
                        Some(value) => pending.clean.insert(key.clone(), value.clone()),
                        None => pending.clean.remove(key),
                    }
                }
            }
            Err(error) => {
                // What the disk below holds is now unknown.
                pending.clean.clear();
                // Keep the writes readable and pending: the next checkpoint tries again (under
                // anything written since, which is newer).
                for (key, value) in batch.iter() {
                    pending
                        .overlay
                        .entry(key.clone())
                        .or_insert_with(|| value.clone());
                }
                if report_later {
                    pending.failed.get_or_insert(error);
                }
            }
        }
        pending.writing = None;
        drop(pending);
        self.written.notify_all();
    }
}

/// The batch that writes `overlay` to the disk below.
fn to_write_batch(overlay: &Overlay) -> WriteBatch {
    let mut writes = WriteBatch::default();
    for (key, value) in overlay.iter() {
        match value {
            Some(value) => writes.put(key.clone(), value.clone()),
            None => writes.delete(key.clone()),
        }
    }
    writes
}

/// What [`WriteBehind`] knows of a key before asking the disk below.
enum Lookup {
    Known(Option<Vec<u8>>),
    /// Read the disk below, then offer what it holds to `cache_read` with this epoch.
    Below {
        epoch: u64,
    },
}

/// See the module docs.
pub struct WriteBehind {
    shared: Arc<Shared>,
    /// Held by the one writer (a write and, if due, its checkpoint).
    writer: Mutex<()>,
    checkpoint_writes: usize,
    /// Where due checkpoints are written, if not by the writer itself.
    background: Option<Background>,
}

/// What the writer and the checkpoint thread share.
struct Shared {
    below: Arc<dyn Disk>,
    pending: Mutex<Pending>,
    /// Notified when a checkpoint finishes (`Pending::writing` back to `None`).
    written: Condvar,
}

/// The checkpoint thread: it writes each batch it receives to the disk below. Dropping the
/// sender ends it; `Drop for WriteBehind` waits for it.
struct Background {
    batches: Option<mpsc::Sender<Arc<Overlay>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How far pending writes may run ahead of a background checkpoint still being written, in
/// checkpoints' worth: past it the writer waits (memory stays bounded if the disk is slow).
const BACKGROUND_LAG_CHECKPOINTS: usize = 4;

impl WriteBehind {
    /// The product's layer: a read cache of about `read_cache_bytes` (0: none), and checkpoints
    /// written by a thread of their own (see the module docs).
    #[cfg(not(madsim))]
    pub fn new(below: Arc<dyn Disk>, read_cache_bytes: usize) -> std::io::Result<Self> {
        Self::with_checkpoint_writes(below, CHECKPOINT_WRITES)
            .with_read_cache(read_cache_bytes)
            .in_background()
    }

    /// The same with checkpoints written by a thread of their own.
    #[cfg(not(madsim))]
    pub fn in_background(mut self) -> std::io::Result<Self> {
        let (batches, received) = mpsc::channel::<Arc<Overlay>>();
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || {
                for batch in received {
                    // A panic below (sled asserts) must not leave `writing` set for good: the
                    // writer would wait for it forever. It becomes this checkpoint's failure.
                    let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        shared.below.write(to_write_batch(&batch))
                    }))
                    .unwrap_or_else(|_| {
                        Err(StorageError::Disk(
                            "the disk panicked while writing a checkpoint".into(),
                        ))
                    });
                    shared.finish_checkpoint(&batch, written, true);
                }
            })?;
        self.background = Some(Background {
            batches: Some(batches),
            thread: Some(thread),
        });
        Ok(self)
    }

    /// The same with a read cache of about `bytes` (see `read_cache`).
    pub fn with_read_cache(self, bytes: usize) -> Self {
        lock(&self.shared.pending).clean = ReadCache::new(bytes);
        self
    }

    /// A layer whose writer writes each checkpoint itself, after `checkpoint_writes` writes
    /// (the simulation, which has no OS threads, and tests; 1 writes through at once).
    pub fn with_checkpoint_writes(below: Arc<dyn Disk>, checkpoint_writes: usize) -> Self {
        assert!(
            checkpoint_writes > 0,
            "a checkpoint needs at least one write"
        );
        Self {
            shared: Arc::new(Shared {
                below,
                pending: Mutex::default(),
                written: Condvar::new(),
            }),
            writer: Mutex::default(),
            checkpoint_writes,
            background: None,
        }
    }

    /// Forgets the pending writes: what a power cut does to memory. The simulation calls it
    /// when it cuts a node's power; the node must be stopped.
    pub fn discard_pending(&self) {
        let _writer = lock(&self.writer);
        let mut pending = self.shared.idle();
        pending.overlay.clear();
        pending.writes = 0;
        pending.clean.clear();
        pending.epoch += 1;
    }

    /// Keys waiting for the next checkpoint.
    #[cfg(test)]
    fn pending_keys(&self) -> usize {
        lock(&self.shared.pending).overlay.len()
    }

    /// Writes every pending write to the disk below as one batch, here and now, after any
    /// background checkpoint still being written. Caller holds `writer`.
    fn checkpoint(&self, _writer: &MutexGuard<'_, ()>) -> Result<(), StorageError> {
        let batch = {
            let mut pending = self.shared.idle();
            if let Some(failed) = pending.failed.take() {
                return Err(failed);
            }
            match pending.start_checkpoint() {
                Some(batch) => batch,
                None => return Ok(()),
            }
        };
        let written = self.shared.below.write(to_write_batch(&batch));
        self.shared
            .finish_checkpoint(&batch, written.clone(), false);
        written
    }

    /// Hands the pending writes to the checkpoint thread, unless it is still writing the last
    /// ones (then they wait for the next write, or, once [`BACKGROUND_LAG_CHECKPOINTS`] are
    /// pending, the writer waits). Caller holds `writer`.
    fn checkpoint_in_background(
        &self,
        background: &Background,
        _writer: &MutexGuard<'_, ()>,
    ) -> Result<(), StorageError> {
        let mut pending = lock(&self.shared.pending);
        let lag_max = BACKGROUND_LAG_CHECKPOINTS.saturating_mul(self.checkpoint_writes);
        while pending.writing.is_some() && pending.writes >= lag_max {
            pending = self.shared.wait(pending);
        }
        if let Some(failed) = pending.failed.take() {
            return Err(failed);
        }
        if pending.writing.is_some() {
            return Ok(());
        }
        let Some(batch) = pending.start_checkpoint() else {
            return Ok(());
        };
        let sent = background
            .batches
            .as_ref()
            .is_some_and(|batches| batches.send(batch.clone()).is_ok());
        if !sent {
            drop(pending);
            let failed = StorageError::Disk("the checkpoint thread is gone".into());
            self.shared
                .finish_checkpoint(&batch, Err(failed.clone()), false);
            return Err(failed);
        }
        Ok(())
    }

    /// The value of `key` as known here: pending (`Known(None)` if pending deletion), or cached
    /// clean; else the disk below decides.
    fn known_value(&self, key: &[u8]) -> Lookup {
        let mut pending = lock(&self.shared.pending);
        if let Some(value) = pending.overlay.get(key) {
            return Lookup::Known(value.clone());
        }
        if let Some(value) = pending
            .writing
            .as_ref()
            .and_then(|writing| writing.get(key).cloned())
        {
            return Lookup::Known(value);
        }
        match pending.clean.get(key) {
            Some(value) => Lookup::Known(Some(value)),
            None => Lookup::Below {
                epoch: pending.epoch,
            },
        }
    }

    /// Caches `value`, read from the disk below under `key` in `epoch`, if nothing could have
    /// changed it there since.
    fn cache_read(&self, key: &[u8], value: &[u8], epoch: u64) {
        let mut pending = lock(&self.shared.pending);
        if pending.epoch == epoch {
            pending.clean.insert(key.to_vec(), value.to_vec());
        }
    }

    /// The pending writes in `start..end` that can matter to a scan of `limit` pairs in
    /// `order`. Of the newest layer, walking in order, up to and including its `limit`-th put:
    /// those puts survive the merge, so no key past the last of them can be among the first
    /// `limit` pairs. The batch being checkpointed (older, bounded by [`CHECKPOINT_WRITES`],
    /// and present only while a checkpoint runs) is taken whole: the newer layer may delete
    /// its puts.
    fn pending_range(&self, start: &[u8], end: &[u8], order: Order, limit: usize) -> Overlay {
        let bounds = (
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end),
        );
        let pending = lock(&self.shared.pending);
        let mut merged: Overlay = match &pending.writing {
            Some(writing) => writing
                .range::<[u8], _>(bounds)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => Overlay::new(),
        };
        let range = pending.overlay.range::<[u8], _>(bounds);
        let newest: Box<dyn Iterator<Item = _>> = match order {
            Order::Ascending => Box::new(range),
            Order::Descending => Box::new(range.rev()),
        };
        let mut puts = 0;
        for (key, value) in newest {
            merged.insert(key.clone(), value.clone());
            if value.is_some() {
                puts += 1;
                if puts == limit {
                    break;
                }
            }
        }
        merged
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Disk for WriteBehind {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.known_value(key) {
            Lookup::Known(value) => Ok(value),
            Lookup::Below { epoch } => {
                let value = self.shared.below.get(key)?;
                if let Some(value) = &value {
                    self.cache_read(key, value, epoch);
                }
                Ok(value)
            }
        }
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        if limit == 0 || start >= end {
            return Ok(Vec::new());
        }
        let pending = self.pending_range(start, end, order, limit);
        // Only a pending delete can take a key below out of the result (a pending put of a key
        // below replaces it in place): asking for that many more than `limit` leaves at least
        // `limit` (or all there are) after the merge. Counting puts too made an eviction's read
        // of the expiry index walk a checkpoint's worth of new keys in sled each time (a
        // sled-bound 8.5% of a leader at the key cap, waiting on the checkpoint's lock).
        let deletes = pending.values().filter(|value| value.is_none()).count();
        let below = self
            .shared
            .below
            .scan(start, end, order, limit.saturating_add(deletes))?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = below.into_iter().collect();
        for (key, value) in pending {
            match value {
                Some(value) => merged.insert(key, value),
                None => merged.remove(&key),
            };
        }
        Ok(match order {
            Order::Ascending => merged.into_iter().take(limit).collect(),
            Order::Descending => merged.into_iter().rev().take(limit).collect(),
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let writer = lock(&self.writer);
        let due = {
            let mut pending = lock(&self.shared.pending);
            pending.writes += batch.writes.len();
            for write in batch.writes {
                match write {
                    Write::Put(key, value) => pending.overlay.insert(key, Some(value)),
                    Write::Delete(key) => pending.overlay.insert(key, None),
                };
            }
            pending.writes >= self.checkpoint_writes
        };
        if !due {
            return Ok(());
        }
        match &self.background {
            Some(background) => self.checkpoint_in_background(background, &writer),
            None => self.checkpoint(&writer),
        }
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            {
                let writer = lock(&self.writer);
                self.checkpoint(&writer)?;
            }
            self.shared.below.flush().await
        })
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        if let Some(background) = &mut self.background {
            // Closing the channel ends the thread once it has written what it was sent.
            background.batches = None;
            if let Some(thread) = background.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimDisk;

    fn put(key: &str, value: &str) -> Write {
        Write::Put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    fn delete(key: &str) -> Write {
        Write::Delete(key.as_bytes().to_vec())
    }

    fn batch(writes: Vec<Write>) -> WriteBatch {
        WriteBatch { writes }
    }

    fn pairs(found: Vec<KeyValue>) -> Vec<(String, String)> {
        found
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    /// A reference model: a plain map with every write applied at once.
    fn model_apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &WriteBatch) {
        for write in &batch.writes {
            match write {
                Write::Put(k, v) => model.insert(k.clone(), v.clone()),
                Write::Delete(k) => model.remove(k),
            };
        }
    }

    #[test]
    fn reads_see_pending_writes_and_the_disk_below_sees_them_only_at_a_checkpoint() {
        let below = SimDisk::new();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below.clone()), 4);
        disk.write(batch(vec![put("a", "1"), put("b", "2")]))
            .unwrap();
        assert_eq!(disk.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(below.get(b"a").unwrap(), None, "not yet checkpointed");
        disk.write(batch(vec![delete("a"), put("c", "3")])).unwrap();
        // Four writes: checkpointed as one batch, the deletion of `a` included.
        assert_eq!(below.get(b"a").unwrap(), None);
        assert_eq!(below.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(below.get(b"c").unwrap(), Some(b"3".to_vec()));
        assert_eq!(disk.pending_keys(), 0);
        assert_eq!(disk.get(b"a").unwrap(), None);
    }

    #[test]
    fn scans_merge_pending_puts_and_deletes_over_the_disk_below_in_both_orders() {
        let below = SimDisk::new();
        below
            .write(batch(vec![
                put("k1", "old"),
                put("k2", "old"),
                put("k3", "old"),
                put("k5", "old"),
            ]))
            .unwrap();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below), 1000);
        disk.write(batch(vec![
            delete("k1"),
            put("k2", "new"),
            put("k4", "new"),
            delete("k5"),
        ]))
        .unwrap();
        assert_eq!(
            pairs(disk.scan(b"k", b"l", Order::Ascending, 2).unwrap()),
            [("k2".into(), "new".into()), ("k3".into(), "old".into())]
        );
        assert_eq!(
            pairs(disk.scan(b"k", b"l", Order::Descending, 2).unwrap()),
            [("k4".into(), "new".into()), ("k3".into(), "old".into())]
        );
        assert_eq!(
            disk.scan(b"k", b"l", Order::Ascending, 10).unwrap().len(),
            3
        );
        assert!(disk
            .scan(b"k5", b"k6", Order::Ascending, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    #[cfg(not(madsim))] // one mode runs checkpoints on a thread
    fn random_batches_read_like_a_plain_map_whatever_the_checkpoint_size() {
        // A deterministic pseudo-random walk: small key space so that keys are overwritten and
        // deleted often, scans of every size in both orders after every batch.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % bound
        };
        // Inline checkpoints without a cache, then with a small one (it turns over often),
        // then checkpoints on their own thread over that cache.
        let modes = [(1, 0, false), (3, 0, false), (7, 0, false), (64, 0, false)]
            .into_iter()
            .chain([
                (3, 600, false),
                (7, 2000, false),
                (3, 600, true),
                (64, 2000, true),
            ]);
        for (checkpoint_writes, cache_bytes, background) in modes {
            let below = SimDisk::new();
            let disk = WriteBehind::with_checkpoint_writes(Arc::new(below), checkpoint_writes)
                .with_read_cache(cache_bytes);
            let disk = if background {
                disk.in_background().unwrap()
            } else {
                disk
            };
            let mut model = BTreeMap::new();
            for round in 0..300 {
                let writes = (0..1 + next(5))
                    .map(|_| {
                        let key = format!("k{:02}", next(24));
                        if next(3) == 0 {
                            delete(&key)
                        } else {
                            put(&key, &format!("v{round}"))
                        }
                    })
                    .collect();
                let writes = batch(writes);
                model_apply(&mut model, &writes);
                disk.write(writes).unwrap();
                let (start, end) = (format!("k{:02}", next(24)), format!("k{:02}", next(26)));
                let limit = next(12) as usize;
                let (s, e) = (start.as_bytes(), end.as_bytes());
                if start >= end {
                    assert!(disk.scan(s, e, Order::Ascending, 5).unwrap().is_empty());
                } else {
                    let expected: Vec<KeyValue> = model
                        .range(s.to_vec()..e.to_vec())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let ascending: Vec<_> = expected.iter().take(limit).cloned().collect();
                    let descending: Vec<_> = expected.iter().rev().take(limit).cloned().collect();
                    assert_eq!(disk.scan(s, e, Order::Ascending, limit).unwrap(), ascending);
                    assert_eq!(
                        disk.scan(s, e, Order::Descending, limit).unwrap(),
                        descending
                    );
                }
                let probe = format!("k{:02}", next(24));
                assert_eq!(
                    disk.get(probe.as_bytes()).unwrap(),
                    model.get(probe.as_bytes()).cloned()
                );
            }
        }
    }

    #[test]
    fn a_power_cut_keeps_the_state_as_of_the_end_of_some_batch_never_part_of_one() {
        let below = SimDisk::new();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below.clone()), 5);
        let mut states = vec![BTreeMap::new()];
        let mut model = BTreeMap::new();
        for round in 0..40 {
            // Each batch moves two keys in step; a state with one moved and not the other
            // would be a torn batch.
            let value = format!("{round}");
            let writes = batch(vec![put("left", &value), put("right", &value)]);
            model_apply(&mut model, &writes);
            states.push(model.clone());
            disk.write(writes).unwrap();
            if round == 20 {
                futures::executor::block_on(disk.flush()).unwrap();
            }
        }
        disk.discard_pending();
        below.crash();
        let after: BTreeMap<_, _> = disk
            .scan(b"a", b"z", Order::Ascending, usize::MAX)
            .unwrap()
            .into_iter()
            .collect();
        let round = states
            .iter()
            .position(|state| *state == after)
            .expect("the state after a power cut is the state after some whole batch");
        assert!(
            round >= 21,
            "a flushed batch survived the cut (kept round {round})"
        );
    }

    #[test]
    fn a_scan_during_a_checkpoint_sees_deletes_of_the_newer_layer_over_the_batch_being_written() {
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(SimDisk::new()), 1000);
        {
            let mut pending = lock(&disk.shared.pending);
            let writing: Overlay = [("a", "1"), ("b", "2")]
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())))
                .collect();
            pending.writing = Some(Arc::new(writing));
            pending.overlay.insert(b"a".to_vec(), None);
        }
        assert_eq!(
            pairs(disk.scan(b"a", b"z", Order::Ascending, 1).unwrap()),
            [("b".into(), "2".into())]
        );
        assert_eq!(disk.get(b"a").unwrap(), None);
        assert_eq!(disk.get(b"b").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn flush_hands_everything_pending_to_the_disk_below_and_makes_it_durable() {
        let below = SimDisk::new();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below.clone()), 1000);
        disk.write(batch(vec![put("a", "1")])).unwrap();
        futures::executor::block_on(disk.flush()).unwrap();
        disk.discard_pending();
        below.crash();
        assert_eq!(disk.get(b"a").unwrap(), Some(b"1".to_vec()));
    }

    /// A disk below whose writes fail while `failing` is set.
    struct FlakyDisk {
        inner: SimDisk,
        failing: std::sync::atomic::AtomicBool,
        panicking: std::sync::atomic::AtomicBool,
    }

    impl Disk for FlakyDisk {
        fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(key)
        }
        fn scan(
            &self,
            start: &[u8],
            end: &[u8],
            order: Order,
            limit: usize,
        ) -> Result<Vec<KeyValue>, StorageError> {
            self.inner.scan(start, end, order, limit)
        }
        fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
            if self.panicking.load(std::sync::atomic::Ordering::SeqCst) {
                panic!("injected panic below");
            }
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StorageError::Disk("injected".into()));
            }
            self.inner.write(batch)
        }
        fn flush(&self) -> FlushFuture<'_> {
            self.inner.flush()
        }
    }

    #[test]
    #[cfg(not(madsim))]
    fn checkpoints_on_their_own_thread_reach_the_disk_below_and_flush_waits_for_them() {
        let below = SimDisk::new();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below.clone()), 2)
            .in_background()
            .unwrap();
        for i in 0..100 {
            disk.write(batch(vec![put(&format!("k{i:03}"), "v")]))
                .unwrap();
        }
        futures::executor::block_on(disk.flush()).unwrap();
        assert_eq!(lock(&disk.shared.pending).writing, None);
        disk.discard_pending();
        below.crash();
        assert_eq!(
            disk.scan(b"k", b"l", Order::Ascending, usize::MAX)
                .unwrap()
                .len(),
            100,
            "flush returned before every write was durable below"
        );
        drop(disk); // ends and joins the thread
    }

    #[test]
    #[cfg(not(madsim))]
    fn a_failed_background_checkpoint_is_reported_and_its_writes_stay_readable() {
        let below = Arc::new(FlakyDisk {
            inner: SimDisk::new(),
            failing: true.into(),
            panicking: false.into(),
        });
        let disk = WriteBehind::with_checkpoint_writes(below.clone(), 1)
            .in_background()
            .unwrap();
        // The first write hands a checkpoint to the thread; it fails there. A later write or
        // flush reports it.
        disk.write(batch(vec![put("a", "1")])).unwrap();
        let reported = (0..1000).any(|_| disk.write(batch(vec![put("b", "2")])).is_err())
            || futures::executor::block_on(disk.flush()).is_err();
        assert!(reported, "the failure was never reported");
        assert_eq!(disk.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(disk.get(b"b").unwrap(), Some(b"2".to_vec()));
        // Once the disk works again, everything reaches it.
        below
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        futures::executor::block_on(disk.flush()).unwrap();
        assert_eq!(below.inner.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(below.inner.get(b"b").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn a_value_read_below_before_a_checkpoint_changed_it_is_not_cached() {
        let below = SimDisk::new();
        below.write(batch(vec![put("a", "old")])).unwrap();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below.clone()), 1)
            .with_read_cache(1 << 20);
        // A reader finds nothing known and reads the disk below ...
        let Lookup::Below { epoch } = disk.known_value(b"a") else {
            panic!("nothing is known yet")
        };
        let read = below.get(b"a").unwrap().unwrap();
        // ... while a write is checkpointed over it ...
        disk.write(batch(vec![put("a", "new")])).unwrap();
        // ... then offers what it read: too late, it must not be cached.
        disk.cache_read(b"a", &read, epoch);
        assert_eq!(disk.get(b"a").unwrap(), Some(b"new".to_vec()));
        // Without a checkpoint in between, a read is cached (and served without the disk).
        let Lookup::Below { epoch } = disk.known_value(b"z") else {
            panic!("nothing is known of z")
        };
        disk.cache_read(b"z", b"cached", epoch);
        assert_eq!(disk.get(b"z").unwrap(), Some(b"cached".to_vec()));
    }

    #[test]
    fn a_power_cut_forgets_the_read_cache_with_the_pending_writes() {
        let below = SimDisk::new();
        let disk = WriteBehind::with_checkpoint_writes(Arc::new(below.clone()), 1)
            .with_read_cache(1 << 20);
        // Checkpointed (so cached as clean) but never flushed: a power cut loses it below.
        disk.write(batch(vec![put("a", "1")])).unwrap();
        assert_eq!(disk.get(b"a").unwrap(), Some(b"1".to_vec()));
        disk.discard_pending();
        below.crash();
        assert_eq!(
            disk.get(b"a").unwrap(),
            None,
            "served from a cache the cut emptied"
        );
    }

    #[test]
    fn a_failed_inline_checkpoint_is_reported_once_and_the_next_one_retries_it() {
        let below = Arc::new(FlakyDisk {
            inner: SimDisk::new(),
            failing: true.into(),
            panicking: false.into(),
        });
        let disk = WriteBehind::with_checkpoint_writes(below.clone(), 1);
        assert!(disk.write(batch(vec![put("a", "1")])).is_err());
        below
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        disk.write(batch(vec![put("b", "2")])).unwrap();
        assert_eq!(below.inner.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(below.inner.get(b"b").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    #[cfg(not(madsim))]
    fn a_panic_below_a_background_checkpoint_is_reported_not_waited_for_forever() {
        let below = Arc::new(FlakyDisk {
            inner: SimDisk::new(),
            failing: false.into(),
            panicking: true.into(),
        });
        let disk = WriteBehind::with_checkpoint_writes(below.clone(), 1)
            .in_background()
            .unwrap();
        disk.write(batch(vec![put("a", "1")])).unwrap();
        // flush waits for the checkpoint in flight: it must end, and report the failure.
        assert!(futures::executor::block_on(disk.flush()).is_err());
        assert_eq!(disk.get(b"a").unwrap(), Some(b"1".to_vec()));
        below
            .panicking
            .store(false, std::sync::atomic::Ordering::SeqCst);
        futures::executor::block_on(disk.flush()).unwrap();
        assert_eq!(below.inner.get(b"a").unwrap(), Some(b"1".to_vec()));
    }
}
