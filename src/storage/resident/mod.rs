//! The state machine's [`Disk`]: the whole state held in memory, made durable as a journal of
//! write batches and, now and then, an image of the whole state, on the [`Fs`] seam.
//!
//! ## Why
//! The state machine used to live in sled, behind a write-behind layer and a read cache. At
//! 100,000 SKUs and batches of thousands of lines, `perf` put ~35% of all CPU in sled's writes
//! (each key a page fragment; every few fragments a copy of the whole node) and ~15% of the
//! leader's in reads that walked sled's tree; at a million records sled's page cache held a
//! fraction of the tree, and a snapshot walked all of it for ~5 s (docs/performance.md,
//! "Scale"). Here a read is a lookup in memory, a write is an insert in memory plus bytes
//! appended to a file, and an image is written from memory. The state is bounded by what the
//! state machine keeps (its retention rules), and a compact map holds it
//! ([`map`]: one allocation per key).
//!
//! ## On disk, in `<data>/state/`
//! - `journal-<n>.jrn`: records of whole write batches, in order (see [`journal`]);
//! - `images/<n>-0.snap`: the whole state, in the snapshot file format (`storage::snapshots`:
//!   checksummed, written to a temp file, fsynced, renamed); its metadata names the first
//!   journal file to replay after it (`n`).
//!
//! Recovery loads the newest image and replays the journal files from its `n` on.
//!
//! ## Writing an image while writes go on
//! An image starts by sealing the journal and starting a new file `n`; then it copies the map a
//! page at a time (applies go on between pages), so each key is captured as of some moment
//! after the start. Replaying every batch from file `n` on over it gives back the exact state:
//! a key written after the start has its last write in those files, and a key not written since
//! was captured as it was at the start. So before the image is made current, the journal from
//! `n` on is fsynced up to a point after the copy ended. Then older journal files go.
//! An image is written once the journal since the last one outgrows the state (at least
//! [`Policy::image_after_bytes`]): disk stays within a few times the live data, and recovery
//! replays at most about one state's worth of batches.
//!
//! ## The guarantees of [`Disk`]
//! 1. all-or-nothing: batches reach a journal record whole, and a record is replayed whole or
//!    not at all (a torn record at the end of the newest file is cut);
//! 2. after `flush`, every batch written before it is in a fsynced journal file;
//! 3. reads see every write at once: they read the map.
//!
//! A crash loses what was not flushed, as before: the Raft log is the durable record, and
//! openraft re-applies what the state machine lost (a snapshot flushes this first, so the log
//! is never purged past what survives here). A failed journal write leaves memory ahead of the
//! disk: every later write and flush reports it, and the state machine stops the node. A
//! failed image is only logged: the journal still holds everything, and the next one retries.
//!
//! ## Who writes images
//! In the product ([`Policy::product`]) a thread of its own (`state image`), so that copying a
//! million records never holds up an apply for more than a page. The same thread fsyncs the
//! journal file every few MiB ([`SYNC_AHEAD_BYTES`]), so that the fsync at a file's roll, which
//! applies wait for, finds little left to write. In the simulation and tests
//! ([`Policy::inline`]), the writer, inline, at the same points in the run: runs stay
//! deterministic.

pub mod journal;
pub mod map;

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use super::fs::{blocking, Fs, FsFile};
use super::snapshots::{self, SnapshotDir};
use super::{Disk, FlushFuture, KeyValue, Order, StorageError, Write, WriteBatch};
use map::Map;

/// When journal records are written and images taken.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Bytes of encoded batches gathered in memory before they are written to the journal as
    /// one record (a `flush` writes them sooner).
    pub record_bytes: usize,
    /// A journal file is closed (fsynced) and the next one started past this size.
    pub file_bytes: u64,
    /// An image is written once the journal since the last one holds this many bytes, or the
    /// state's own size if larger.
    pub image_after_bytes: u64,
    /// Images written by a thread of their own (the product) or by the writer inline.
    pub background: bool,
}

impl Policy {
    /// The product's: 256 KiB records, 64 MiB files, an image after max(64 MiB, state) of
    /// journal, on a thread of its own.
    pub fn product() -> Self {
        Self {
            record_bytes: 256 << 10,
            file_bytes: 64 << 20,
            image_after_bytes: 64 << 20,
            background: true,
        }
    }

    /// Small records, files and images written inline: the simulation and tests, where a run
    /// is small and must cross every boundary.
    pub fn inline(record_bytes: usize, file_bytes: u64, image_after_bytes: u64) -> Self {
        Self {
            record_bytes,
            file_bytes,
            image_after_bytes,
            background: false,
        }
    }
}

/// An image's metadata.
#[derive(Debug, Serialize, Deserialize)]
struct ImageMeta {
    /// The first journal file to replay over it.
    replay_from: u64,
}

/// The journal's writer side (under one lock with the image trigger).
struct Journal {
    file: Arc<dyn FsFile>,
    number: u64,
    /// Where the next record goes in `file`.
    offset: u64,
    /// Encoded batches not yet written (see `journal::encode_batch`), and their writes.
    payload: Vec<u8>,
    writes: u32,
    /// A journal file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Journal bytes written since the current image's start.
    since_image: u64,
    /// An image is due or being written.
    imaging: bool,
    /// The image thread has an image to write.
    due: bool,
    /// Bytes written to `file` since it was last fsynced (or handed to the image thread to be).
    unsynced: u64,
    /// The image thread is to fsync the current file ahead of its roll (see [`SYNC_AHEAD_BYTES`]).
    sync_due: bool,
    /// Syncs ahead done (each wakes whoever waits on `wake`).
    synced_ahead: u64,
    /// Why the journal stopped: memory may be ahead of the disk.
    failed: Option<StorageError>,
    /// The image thread is to end.
    stop: bool,
}

struct Shared {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    images: SnapshotDir,
    policy: Policy,
    map: RwLock<Map>,
    journal: Mutex<Journal>,
    /// Wakes the image thread (`due`, `stop`).
    wake: Condvar,
}

/// See the module docs.
pub struct Resident {
    shared: Arc<Shared>,
    image_thread: Option<std::thread::JoinHandle<()>>,
}

/// Keys copied per page while writing an image: applies wait for at most one page.
const IMAGE_PAGE_KEYS: usize = 4096;

/// In the product, the image thread fsyncs the current journal file whenever this much was
/// written to it since: the fsync at its roll, which applies wait for, then has at most this
/// much to write instead of a whole file (tens of ms for 64 MiB). Nothing relies on these
/// fsyncs; `flush` and the roll make durable what must be.
const SYNC_AHEAD_BYTES: u64 = 4 << 20;

fn disk_error(error: io::Error) -> StorageError {
    StorageError::Disk(error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Resident {
    /// Opens (creating) the state in `dir`: the newest image, then the journal after it.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path, policy: Policy) -> Result<Self, StorageError> {
        let (images, map, journal) = recover(&fs, dir)?;
        let shared = Arc::new(Shared {
            fs,
            dir: dir.to_path_buf(),
            images,
            policy,
            map: RwLock::new(map),
            journal: Mutex::new(journal),
            wake: Condvar::new(),
        });
        let image_thread = if policy.background {
            let worker = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("state image".into())
                    .spawn(move || worker.image_loop())
                    .map_err(disk_error)?,
            )
        } else {
            None
        };
        Ok(Self {
            shared,
            image_thread,
        })
    }

    /// What a power cut leaves: the state as the files hold it. The simulation calls it after
    /// it crashed the node's files; the node must be stopped.
    pub fn reload(&self) -> Result<(), StorageError> {
        let shared = &self.shared;
        let mut journal = lock(&shared.journal);
        let mut map = shared.write_map();
        // The directories again too: a wipe takes them (the handle to `images` is its path).
        let (_, recovered, fresh) = recover(&shared.fs, &shared.dir)?;
        *map = recovered;
        let stop = journal.stop;
        *journal = fresh;
        journal.stop = stop;
        Ok(())
    }

    /// Writes an image now (and waits for it): after an upgrade loaded the state, so that the
    /// journal need not hold it.
    pub fn write_image_now(&self) -> Result<(), StorageError> {
        {
            let mut journal = lock(&self.shared.journal);
            while journal.imaging {
                journal = self.shared.wait(journal);
            }
            journal.imaging = true;
        }
        self.shared.write_image()
    }

    /// `flush`, from blocking code.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.shared.flush_sync()
    }

    /// Keys held, and bytes of their keys and values.
    pub fn size(&self) -> (usize, u64) {
        let map = self.shared.read_map();
        (map.len(), map.bytes())
    }
}

impl Shared {
    fn read_map(&self) -> RwLockReadGuard<'_, Map> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_map(&self) -> RwLockWriteGuard<'_, Map> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `done` holds of the journal (checked whenever `wake` is notified: an image
    /// finished, a sync ahead done), for at most `limit`; whether it held.
    #[cfg(test)]
    fn wait_until(&self, limit: std::time::Duration, done: impl Fn(&Journal) -> bool) -> bool {
        let journal = lock(&self.journal);
        let (journal, _) = self
            .wake
            .wait_timeout_while(journal, limit, |journal| !done(journal))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        done(&journal)
    }

    fn wait<'a>(&self, journal: MutexGuard<'a, Journal>) -> MutexGuard<'a, Journal> {
        self.wake
            .wait(journal)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes the gathered batches as one record (starting a new file first if this one is
    /// full). A failure stops the journal.
    fn seal(&self, journal: &mut Journal) -> Result<(), StorageError> {
        if let Some(failed) = &journal.failed {
            return Err(failed.clone());
        }
        if journal.payload.is_empty() {
            return Ok(());
        }
        let record = journal::frame(&journal.payload);
        let written = (|| {
            if journal.offset > 0 && journal.offset + record.len() as u64 > self.policy.file_bytes {
                self.roll(journal)?;
            }
            journal.file.write_all_at(journal.offset, &record)
        })();
        if let Err(error) = written {
            let error = StorageError::Disk(format!("writing the state journal: {error}"));
            journal.failed = Some(error.clone());
            return Err(error);
        }
        journal.offset += record.len() as u64;
        journal.since_image += record.len() as u64;
        journal.unsynced += record.len() as u64;
        if self.policy.background && journal.unsynced >= SYNC_AHEAD_BYTES {
            journal.unsynced = 0;
            journal.sync_due = true;
            self.wake.notify_all();
        }
        journal.payload.clear();
        journal.writes = 0;
        Ok(())
    }

    /// Closes the current file (fsynced: only the newest file may end torn) and starts the
    /// next.
    fn roll(&self, journal: &mut Journal) -> io::Result<()> {
        journal.file.sync()?;
        journal.unsynced = 0;
        let number = journal.number + 1;
        journal.file = create_file(self.fs.as_ref(), &self.dir, number)?;
        journal.number = number;
        journal.offset = 0;
        journal.dir_dirty = true;
        Ok(())
    }

    fn flush_sync(&self) -> Result<(), StorageError> {
        let (file, dir_dirty) = {
            let mut journal = lock(&self.journal);
            self.seal(&mut journal)?;
            let dir_dirty = std::mem::take(&mut journal.dir_dirty);
            (journal.file.clone(), dir_dirty)
        };
        let synced = file.sync().and_then(|()| {
            if dir_dirty {
                self.fs.sync_dir(&self.dir)
            } else {
                Ok(())
            }
        });
        synced.map_err(|error| {
            let error = StorageError::Disk(format!("syncing the state journal: {error}"));
            lock(&self.journal).failed = Some(error.clone());
            error
        })
    }

    /// Writes one image (see the module docs). The caller set `imaging`; this clears it.
    fn write_image(&self) -> Result<(), StorageError> {
        let result = self.try_write_image();
        lock(&self.journal).imaging = false;
        self.wake.notify_all();
        result
    }

    fn try_write_image(&self) -> Result<(), StorageError> {
        let replay_from = {
            let mut journal = lock(&self.journal);
            self.seal(&mut journal)?;
            if let Err(error) = self.roll(&mut journal) {
                let error = StorageError::Disk(format!("starting a state journal file: {error}"));
                journal.failed = Some(error.clone());
                return Err(error);
            }
            journal.since_image = 0;
            journal.number
        };
        let name = snapshots::file_name(replay_from, 0);
        let meta = super::encode(&ImageMeta { replay_from });
        let mut writer = self.images.writer(&name, &meta).map_err(disk_error)?;
        let copied = (|| {
            let mut start: Option<Vec<u8>> = None;
            loop {
                let page: Vec<KeyValue> = {
                    let map = self.read_map();
                    let from = match &start {
                        Some(after) => Bound::Excluded(after.as_slice()),
                        None => Bound::Unbounded,
                    };
                    map.range(from, Bound::Unbounded)
                        .take(IMAGE_PAGE_KEYS)
                        .map(|entry| (entry.key().to_vec(), entry.value().to_vec()))
                        .collect()
                };
                for (key, value) in &page {
                    writer.push(key, value)?;
                }
                if page.len() < IMAGE_PAGE_KEYS {
                    return Ok(());
                }
                start = page.last().map(|(key, _)| key.clone());
            }
        })();
        if let Err(error) = copied {
            writer.abandon();
            return Err(disk_error(error));
        }
        // Every batch since `replay_from` began, up to past the copy's end, durable first.
        if let Err(error) = self.flush_sync() {
            writer.abandon();
            return Err(error);
        }
        writer.finish().map_err(disk_error)?;
        for (number, path) in journal::list(self.fs.as_ref(), &self.dir).map_err(disk_error)? {
            if number < replay_from {
                self.fs.remove(&path).map_err(disk_error)?;
            }
        }
        Ok(())
    }

    /// The image thread: writes an image whenever one is due, and fsyncs the journal ahead of
    /// its rolls, until told to stop.
    fn image_loop(&self) {
        loop {
            let sync_ahead = {
                let mut journal = lock(&self.journal);
                while !journal.due && !journal.sync_due && !journal.stop {
                    journal = self.wait(journal);
                }
                if journal.stop {
                    return;
                }
                if journal.sync_due {
                    journal.sync_due = false;
                    Some(journal.file.clone())
                } else {
                    journal.due = false;
                    None
                }
            };
            if let Some(file) = sync_ahead {
                // Outside the lock: applies go on. A failure shows again at the roll or flush.
                if let Err(error) = file.sync() {
                    tracing::warn!(%error, "syncing the state journal ahead of its roll failed");
                }
                lock(&self.journal).synced_ahead += 1;
                self.wake.notify_all();
                continue;
            }
            if let Err(error) = self.write_image() {
                tracing::warn!(%error, "writing an image of the state failed; the journal keeps everything, and the next image retries");
            }
        }
    }

    /// Whether the journal has outgrown the state since the last image (and one is not
    /// already under way): then it is marked as under way.
    fn image_due(&self, journal: &mut Journal, state_bytes: u64) -> bool {
        let due = !journal.imaging
            && journal.since_image >= state_bytes.max(self.policy.image_after_bytes);
        if due {
            journal.imaging = true;
        }
        due
    }
}

fn create_file(fs: &dyn Fs, dir: &Path, number: u64) -> io::Result<Arc<dyn FsFile>> {
    let file = fs.open(&dir.join(journal::file_name(number)), true)?;
    file.set_len(0)?;
    Ok(file)
}

/// The state the files in `dir` hold, and a journal writer that continues after it in a new
/// file; the directories are created if missing, and a half-written image is deleted.
fn recover(fs: &Arc<dyn Fs>, dir: &Path) -> Result<(SnapshotDir, Map, Journal), StorageError> {
    fs.create_dir_all(dir).map_err(disk_error)?;
    let images = SnapshotDir::open(fs.clone(), &dir.join("images")).map_err(disk_error)?;
    let fs = fs.as_ref();
    let mut map = Map::default();
    let mut replay_from = 0;
    if let Some(image) = images.latest().map_err(disk_error)? {
        let place = image.path().display().to_string();
        let meta: ImageMeta =
            super::decode_in(&place, b"meta", &image.meta().map_err(disk_error)?)?;
        let mut records = image.records().map_err(disk_error)?;
        while let Some((key, value)) = records.next_record().map_err(disk_error)? {
            map.put(&key, &value);
        }
        replay_from = meta.replay_from;
    }
    let files = journal::list(fs, dir).map_err(disk_error)?;
    let newest = files.last().map(|(number, _)| *number);
    let mut since_image = 0;
    for (number, path) in &files {
        if *number < replay_from {
            // Covered by the image: left behind by a crash before they were deleted.
            fs.remove(path).map_err(disk_error)?;
            continue;
        }
        since_image += journal::replay(fs, path, Some(*number) == newest, &mut map)
            .map_err(disk_error)?
            .bytes;
    }
    let number = newest.map_or(replay_from, |newest| (newest + 1).max(replay_from));
    let file = create_file(fs, dir, number).map_err(disk_error)?;
    fs.sync_dir(dir).map_err(disk_error)?;
    let journal = Journal {
        file,
        number,
        offset: 0,
        payload: Vec::new(),
        writes: 0,
        dir_dirty: false,
        since_image,
        imaging: false,
        due: false,
        unsynced: 0,
        sync_due: false,
        synced_ahead: 0,
        failed: None,
        stop: false,
    };
    Ok((images, map, journal))
}

impl Disk for Resident {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.shared.read_map().get(key).map(<[u8]>::to_vec))
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
        let map = self.shared.read_map();
        let range = map.range(Bound::Included(start), Bound::Excluded(end));
        let pair = |entry: &map::Entry| (entry.key().to_vec(), entry.value().to_vec());
        Ok(match order {
            Order::Ascending => range.take(limit).map(pair).collect(),
            Order::Descending => range.rev().take(limit).map(pair).collect(),
        })
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let shared = &self.shared;
        let image_inline = {
            let mut journal = lock(&shared.journal);
            if let Some(failed) = &journal.failed {
                return Err(failed.clone());
            }
            let Journal {
                payload, writes, ..
            } = &mut *journal;
            journal::encode_batch(payload, writes, &batch);
            if journal.payload.len() >= shared.policy.record_bytes {
                shared.seal(&mut journal)?;
            }
            let state_bytes = {
                let mut map = shared.write_map();
                for write in batch.writes {
                    match write {
                        Write::Put(key, value) => map.put(&key, &value),
                        Write::Delete(key) => map.delete(&key),
                    }
                }
                map.bytes()
            };
            if !shared.image_due(&mut journal, state_bytes) {
                return Ok(());
            }
            if shared.policy.background {
                journal.due = true;
                shared.wake.notify_all();
                false
            } else {
                true
            }
        };
        if image_inline {
            if let Err(error) = shared.write_image() {
                if let Some(failed) = &lock(&shared.journal).failed {
                    return Err(failed.clone());
                }
                tracing::warn!(%error, "writing an image of the state failed; the journal keeps everything, and the next image retries");
            }
        }
        Ok(())
    }

    fn flush(&self) -> FlushFuture<'_> {
        let shared = self.shared.clone();
        Box::pin(async move {
            blocking(move || Ok(shared.flush_sync()))
                .await
                .map_err(disk_error)?
        })
    }
}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Some(thread) = self.image_thread.take() {
            lock(&self.shared.journal).stop = true;
            self.shared.wake.notify_all();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
