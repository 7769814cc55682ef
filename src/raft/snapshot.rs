//! Snapshots of the state machine as files: built from a point-in-time view while applies go
//! on, installed atomically, never held whole in memory.
//!
//! ## Building without stopping applies
//! openraft asks for a builder between two applies (the state machine's
//! `get_snapshot_builder`); that instant is the snapshot point. From then on, until the build
//! ends, every apply first records the *before-image* of each key it is about to write (its
//! value at the snapshot point, or "absent") in a [`Capture`]. The builder walks the state page by
//! page and, for each key, writes the before-image if one was recorded, else the value it read
//! (which is then still the value at the snapshot point: an apply records before it writes).
//! Keys that existed at the point but that a page's scan did not return (deleted since, or
//! hidden from a scan racing the write that re-created them) are written from their
//! before-images with that page. The result is
//! exactly the state at the point, while applies pause only to record a few before-images.
//! Memory: the before-images of keys written during the build, and one page.
//!
//! Before the file is written, the state's disk is flushed: the state on disk is at least the snapshot
//! point, so once openraft purges the log behind the snapshot, a restart needs neither.
//!
//! ## Installing atomically
//! 1. the file becomes the node's current snapshot (`SnapshotDir::adopt`: fsync, rename,
//!    directory fsync), after its checksum was verified;
//! 2. a marker (`keys::INSTALLING`) is written and flushed;
//! 3. the state range is cleared and the snapshot's records loaded, in bounded batches (an
//!    older snapshot's state is then brought to the current format: its idempotency entries
//!    packed into the log, its reservations into chunks);
//! 4. applied id and membership are set, the marker removed, the disk flushed.
//!
//! A crash between 2 and 4 leaves the marker: the store then reports nothing applied, and
//! openraft restores the state machine from the current snapshot (step 1 made it durable) before
//! re-applying the log. A build in progress when an install starts is abandoned (its capture
//! would mix two histories).
//!
//! ## What it works on
//! The state machine hands this module the parts of itself a snapshot needs ([`SnapshotParts`]:
//! its disk, its snapshot directory, the capture, where to report) and the snapshot point; it
//! never hands over the whole store, so this module does not depend on the state machine.

use std::collections::BTreeMap;
use std::io;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftSnapshotBuilder;

use super::idempotency_log::{self, ChunkLayout};
use super::reservations;
use super::types::{LogId, Snapshot, SnapshotMeta, TypeConfig};
use crate::storage::fs::blocking;
use crate::storage::snapshots::{file_name, SnapshotDir, SnapshotFile};
use crate::storage::{
    self, decode_in, encode, keys, Disk, KeyValue, Order, StorageError, WriteBatch,
};
use crate::telemetry::{SnapshotPhase, Telemetry};

/// Keys read per page while walking the state, and written per batch while loading one.
const PAGE_KEYS: usize = 4096;
/// Bytes of records per write batch while loading a snapshot.
const LOAD_BATCH_BYTES: usize = 4 << 20;

/// The parts of the state machine that building and installing a snapshot use.
#[derive(Clone)]
pub struct SnapshotParts {
    /// The state machine's disk: read to build, cleared and loaded to install.
    pub disk: Arc<dyn Disk>,
    /// Where the node's snapshot files are.
    pub dir: SnapshotDir,
    /// The before-images of the build in progress, which apply records into.
    pub capture: Arc<Capture>,
    /// Where builds and installs are reported, if anywhere.
    pub telemetry: Option<Arc<Telemetry>>,
    /// The idempotency log's layout, to pack an older snapshot's entries as it is installed.
    pub chunk_layout: ChunkLayout,
}

/// Before-images recorded while a snapshot is being built.
#[derive(Default)]
pub struct Capture {
    inner: Mutex<CaptureState>,
}

#[derive(Default)]
struct CaptureState {
    /// Bumped by every new build and every install: a build whose generation is no longer
    /// current is abandoned.
    generation: u64,
    /// The active build's before-images: key -> value at the snapshot point (`None`: absent).
    before: Option<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, CaptureState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts recording for a new build; returns its generation.
    fn begin(&self) -> u64 {
        let mut state = self.lock();
        state.generation += 1;
        state.before = Some(BTreeMap::new());
        state.generation
    }

    /// Stops recording for build `generation` (if it is still the active one).
    fn end(&self, generation: u64) {
        let mut state = self.lock();
        if state.generation == generation {
            state.before = None;
        }
    }

    /// Abandons any build in progress (an install is replacing the state).
    fn abandon(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.before = None;
    }

    fn is_current(&self, generation: u64) -> bool {
        self.lock().generation == generation
    }

    /// Called by apply before it writes `keys`: records the current value of each key not yet
    /// recorded, if a build is in progress. `read` reads a key's current value.
    pub fn record_before_write<'k>(
        &self,
        keys: impl Iterator<Item = &'k Vec<u8>>,
        read: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StorageError>,
    ) -> Result<(), StorageError> {
        let mut state = self.lock();
        let Some(before) = state.before.as_mut() else {
            return Ok(());
        };
        for key in keys {
            if !before.contains_key(key) {
                before.insert(key.clone(), read(key)?);
            }
        }
        Ok(())
    }

    /// The recorded before-image of `key`: `Some(None)` if it was absent at the snapshot point.
    fn before_image(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.lock().before.as_ref()?.get(key).cloned()
    }

    /// The recorded keys from `from` up to `to` that existed at the snapshot point, with their
    /// values then.
    fn existing_before_images(&self, from: &[u8], to: Bound<&[u8]>) -> Vec<KeyValue> {
        let state = self.lock();
        let Some(before) = &state.before else {
            return Vec::new();
        };
        before
            .range::<[u8], _>((Bound::Included(from), to))
            .filter_map(|(key, value)| Some((key.clone(), value.clone()?)))
            .collect()
    }
}

/// Builds one snapshot at the point where it was created (see the module docs).
pub struct SnapshotBuilder {
    parts: SnapshotParts,
    /// The snapshot point, or why it could not be read.
    meta: Result<SnapshotMeta, String>,
    generation: u64,
}

impl SnapshotBuilder {
    /// Starts a build at the snapshot point `meta` (the state as of now, or why it could not
    /// be read): from now on, applies record before-images.
    pub fn begin(parts: SnapshotParts, meta: Result<SnapshotMeta, StorageError>) -> Self {
        let generation = parts.capture.begin();
        Self {
            parts,
            meta: meta.map_err(|error| error.to_string()),
            generation,
        }
    }

    /// Writes the snapshot file (blocking: run it off the async workers).
    fn write(
        parts: &SnapshotParts,
        meta: &SnapshotMeta,
        generation: u64,
    ) -> io::Result<SnapshotFile> {
        let (index, term) = position(meta.last_log_id.as_ref());
        let mut writer = parts.dir.writer(&file_name(index, term), &encode(meta))?;
        let capture = &parts.capture;
        let disk = &parts.disk;
        let mut start = keys::STATE_START.to_vec();
        loop {
            let page = disk.scan(&start, keys::STATE_END, Order::Ascending, PAGE_KEYS)?;
            let last = page.last().map(|(key, _)| key.clone());
            for (key, value) in &page {
                match capture.before_image(key) {
                    Some(Some(before)) => writer.push(key, &before)?,
                    Some(None) => {}
                    None => writer.push(key, value)?,
                }
            }
            // Keys that existed at the point, in the range this page covered (to the end of
            // the state after the last page), that the scan did not return: deleted since (an
            // expired key), or hidden from a scan racing the write that brought them back (a
            // scan is not one point-in-time read). A key is deleted or re-created only by an
            // apply, which recorded its value at the point before the scan could miss it.
            let covered = match &last {
                Some(last) => Bound::Included(last.as_slice()),
                None => Bound::Excluded(keys::STATE_END),
            };
            for (key, value) in capture.existing_before_images(&start, covered) {
                let returned = page
                    .binary_search_by(|(found, _)| found.as_slice().cmp(&key))
                    .is_ok();
                if !returned {
                    writer.push(&key, &value)?;
                }
            }
            let Some(mut next) = last else {
                break;
            };
            next.push(0);
            start = next;
        }
        if !capture.is_current(generation) {
            return Err(io::Error::other(
                "snapshot abandoned: a snapshot was installed while it was being built",
            ));
        }
        writer.finish()
    }
}

/// `(index, term)` of a snapshot point (0, 0 for an empty state machine).
fn position(log_id: Option<&LogId>) -> (u64, u64) {
    log_id.map_or((0, 0), |id| (id.index, id.leader_id.term))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = tokio::time::Instant::now();
        let meta = match &self.meta {
            Ok(meta) => meta.clone(),
            Err(error) => {
                self.parts.capture.end(self.generation);
                return Err(io::Error::other(format!(
                    "cannot build a snapshot: reading the state failed: {error}"
                )));
            }
        };
        // The state durable at least up to the snapshot point before the log behind it may go.
        let flushed = self.parts.disk.flush().await;
        let written = match flushed {
            Ok(()) => {
                let (parts, generation, point) =
                    (self.parts.clone(), self.generation, meta.clone());
                blocking(move || SnapshotBuilder::write(&parts, &point, generation)).await
            }
            Err(error) => Err(error.into()),
        };
        self.parts.capture.end(self.generation);
        let snapshot = written?;
        if let Some(telemetry) = &self.parts.telemetry {
            telemetry.snapshot_done(SnapshotPhase::Build, started.elapsed(), snapshot.size());
        }
        Ok(Snapshot { meta, snapshot })
    }
}

/// Installs `file` as the state at `meta` (see the module docs).
pub async fn install(
    parts: &SnapshotParts,
    meta: &SnapshotMeta,
    file: SnapshotFile,
) -> io::Result<()> {
    parts.capture.abandon();
    let started = tokio::time::Instant::now();
    let bytes = file.size();
    let (installer, meta) = (parts.clone(), meta.clone());
    let last = meta.last_log_id;
    blocking(move || install_blocking(&installer, &meta, file)).await?;
    let took = started.elapsed();
    // Each install rewrites the whole state, so it is worth a line: a follower installs after
    // falling behind the leader's purged log, a node restores its own snapshot after an install
    // was cut short. (`scripts/soak.sh` counts these lines by their message.)
    tracing::info!(
        bytes,
        last_log_id = ?last,
        seconds = took.as_secs_f64(),
        "installed a snapshot: the whole state replaced"
    );
    if let Some(telemetry) = &parts.telemetry {
        telemetry.snapshot_done(SnapshotPhase::Install, took, bytes);
    }
    Ok(())
}

fn install_blocking(
    parts: &SnapshotParts,
    meta: &SnapshotMeta,
    file: SnapshotFile,
) -> io::Result<()> {
    let file = parts.dir.local_copy(&file)?;
    file.verify()?;
    let (index, term) = position(meta.last_log_id.as_ref());
    let current = parts.dir.adopt(file.path(), &file_name(index, term))?;
    let disk = &*parts.disk;
    let mut marker = WriteBatch::default();
    marker.put(keys::INSTALLING.to_vec(), encode(meta));
    disk.write(marker)?;
    flush_blocking(disk)?;
    // Every key of the state machine goes, a page at a time.
    storage::delete_range(disk, keys::STATE_START, keys::STATE_END, PAGE_KEYS)?;
    let mut records = current.records()?;
    let mut batch = WriteBatch::default();
    let mut batch_bytes = 0;
    while let Some((key, value)) = records.next_record()? {
        if !key.starts_with(keys::STATE_START) {
            return Err(
                StorageError::Invariant(format!("snapshot holds a foreign key {key:?}")).into(),
            );
        }
        // A snapshot written before format 3 is moved to it on the way in.
        let Some((key, value)) = idempotency_log::format3_pair(key, value)? else {
            continue;
        };
        batch_bytes += key.len() + value.len();
        batch.put(key, value);
        if batch_bytes >= LOAD_BATCH_BYTES {
            disk.write(std::mem::take(&mut batch))?;
            batch_bytes = 0;
        }
    }
    disk.write(std::mem::take(&mut batch))?;
    // A snapshot written before format 4 is packed into the idempotency log (still under the
    // install marker: a crash here installs it again).
    idempotency_log::pack_format3_entries(disk, parts.chunk_layout)?;
    // And one written before format 5 has its reservations packed.
    reservations::pack_format4_reservations(disk)?;
    batch.put(keys::APPLIED.to_vec(), encode(&meta.last_log_id));
    batch.put(keys::MEMBERSHIP.to_vec(), encode(&meta.last_membership));
    batch.delete(keys::INSTALLING.to_vec());
    disk.write(batch)?;
    flush_blocking(disk)
}

/// `Disk::flush` from blocking code.
fn flush_blocking(disk: &dyn Disk) -> io::Result<()> {
    futures::executor::block_on(disk.flush()).map_err(io::Error::from)
}

/// The node's current snapshot in `dir` (the newest complete file), with its metadata.
pub fn current(dir: &SnapshotDir) -> io::Result<Option<Snapshot>> {
    let Some(file) = dir.latest()? else {
        return Ok(None);
    };
    let meta = read_meta(&file)?;
    Ok(Some(Snapshot {
        meta,
        snapshot: file,
    }))
}

/// The metadata at the head of a snapshot file; a failure names the file.
fn read_meta(file: &SnapshotFile) -> io::Result<SnapshotMeta> {
    let place = format!("the snapshot {}", file.path().display());
    Ok(decode_in(&place, b"metadata", &file.meta()?)?)
}

/// Whether an install was cut short by a crash (the state machine is then not to be trusted
/// until the current snapshot is installed again).
pub fn install_interrupted(disk: &dyn Disk) -> Result<bool, StorageError> {
    Ok(disk.get(keys::INSTALLING)?.is_some())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::storage::fs::SimFs;

    #[test]
    fn corrupt_snapshot_metadata_is_an_error_naming_the_file() {
        let dir = SnapshotDir::open(Arc::new(SimFs::new()), Path::new("/node/snapshots")).unwrap();
        // A well-framed file whose metadata claims a 2^44-byte string.
        let mut bomb = vec![0, 0, 0xFD];
        bomb.extend_from_slice(&(1u64 << 44).to_le_bytes());
        let file = dir
            .writer(&file_name(3, 1), &bomb)
            .unwrap()
            .finish()
            .unwrap();
        let message = read_meta(&file).unwrap_err().to_string();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("metadata"), "{message}");
    }
}
