//! Upgrading a data directory written by an older stockraft.
//!
//! Format 1 (before the WAL) kept everything in the node's sled database: log entries under
//! `L` + index, the vote, committed id and purge point under `Mv`, `Mc`, `Mp`. Format 2 keeps the
//! log in `wal/` ([`Wal`]); sled holds only the state machine. The values are the same bincode
//! bytes in both formats, so the upgrade copies them as they are:
//!
//! 1. write the vote, committed id, purge point and every entry into a fresh WAL, fsync it, and
//!    write `wal/MIGRATED` (fsynced, directory fsynced): from then on the WAL is the log;
//! 2. delete the `L` and `M` keys and the format-1 snapshot (`Z`, one sled value holding the
//!    whole state) from sled and flush; snapshots are now files, built when needed.
//!
//! A crash during 1 leaves no marker: the next start wipes the partial WAL and redoes it. A crash
//! during 2 leaves the marker: the next start only finishes the deletion. Either way no entry is
//! lost and none is read from two places. Nothing is acknowledged to anyone meanwhile: this runs
//! before Raft starts.
//!
//! Format 3 stores each idempotency entry under its expiry key (`Sx` + expiry + identity), where
//! format 2 kept it under `Si` + identity with an empty `Sx` key beside it (`storage::keys`,
//! `raft::key_index`). [`upgrade_key_layout`] moves the entries, a page at a time, each move
//! one atomic batch (the entry written over its empty expiry key, its `Si` key deleted): a
//! crash leaves every key either moved or not, and the next start moves the rest. A format-2
//! snapshot (a file of a node not yet upgraded, or one kept from before) is moved the same way
//! as it is installed ([`format3_pair`]).
//!
//! Format 4 packs the idempotency entries into the chunks of the idempotency log (`Sq`, see
//! `storage::keys`). [`pack_format3_entries`] numbers the format-3 entries in their order
//! (oldest expiry first: the order format 3 forgot them in) after any already packed, a page at
//! a time, each page one atomic batch (its chunks, the next entry number, its `Sx` keys
//! deleted): a crash leaves whole pages packed and the next start packs the rest. The same
//! format-3 state always packs into the same bytes; but nodes upgrade where each happens to
//! stop, so replicas may pack at different log indices and number their entries differently
//! from then on. Their answers stay the same: format 4 forgets in the order format 3 did
//! (`raft::state_machine`, `ApplyBatch::forget_oldest`). Snapshots of format 3 (and 2) are packed
//! the same way once installed, before the install counts as done.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::fs::Fs;
use super::keys::{KeyChunk, StoredKey};
use super::wal::{Wal, WalOptions};
use super::{decode, encode, keys, Disk, KeyValue, Order, StorageError, WriteBatch};
use crate::inventory::IdempotencyEntry;

/// The marker of a finished step 1.
const MARKER: &str = "MIGRATED";
/// Entries copied per WAL write while migrating.
const ENTRIES_PER_WRITE: usize = 1024;

/// What [`upgrade`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// The directory is already in the current format (or new).
    Current,
    /// A format-1 directory was upgraded; this many log entries moved to the WAL.
    FromFormat1 { entries: usize },
}

fn has_format1_keys(disk: &dyn Disk) -> Result<bool, StorageError> {
    let log = disk.scan(keys::LOG_START, keys::STATE_START, Order::Ascending, 1)?;
    Ok(!log.is_empty() || disk.get(keys::SNAPSHOT)?.is_some())
}

fn io_error(error: StorageError) -> io::Error {
    io::Error::other(error)
}

/// Upgrades the data directory to the current format if it is an older one (see the module
/// docs). Call before opening the WAL; blocking.
pub async fn upgrade(
    disk: &dyn Disk,
    fs: Arc<dyn Fs>,
    wal_dir: &Path,
    options: WalOptions,
) -> io::Result<Upgrade> {
    if !has_format1_keys(disk).map_err(io_error)? {
        return Ok(Upgrade::Current);
    }
    let marker = wal_dir.join(MARKER);
    let mut entries = 0;
    if !fs.exists(&marker) {
        entries = copy_log_to_wal(disk, fs.clone(), wal_dir, options).await?;
        let file = fs.open(&marker, true)?;
        file.sync()?;
        fs.sync_dir(wal_dir)?;
    }
    delete_format1_keys(disk).map_err(io_error)?;
    disk.flush().await.map_err(io_error)?;
    tracing::warn!(
        entries,
        "upgraded the data directory from format 1: the Raft log moved from sled to wal/"
    );
    Ok(Upgrade::FromFormat1 { entries })
}

/// Moves format-2 idempotency entries to their format-3 keys, packs format-3 ones into the
/// format-4 idempotency log (chunks of `per_chunk`, see the module docs) and flushes. Returns
/// how many entries moved or were packed. Call before the state machine opens; blocking.
pub async fn upgrade_key_layout(disk: &dyn Disk, per_chunk: u64) -> Result<usize, StorageError> {
    let mut moved = 0;
    loop {
        let page = disk.scan(
            keys::FORMAT2_IDEMPOTENCY_START,
            keys::FORMAT2_IDEMPOTENCY_END,
            Order::Ascending,
            ENTRIES_PER_WRITE,
        )?;
        if page.is_empty() {
            break;
        }
        let mut batch = WriteBatch::default();
        for (key, value) in page {
            batch.delete(key.clone());
            if let Some((new_key, value)) = format3_pair(key, value)? {
                batch.put(new_key, value);
            }
            moved += 1;
        }
        disk.write(batch)?;
    }
    let packed = pack_format3_entries(disk, per_chunk)?;
    if moved + packed > 0 {
        disk.flush().await?;
        tracing::warn!(
            moved,
            packed,
            "upgraded the state machine to format 4: idempotency entries packed into the \
             idempotency log"
        );
    }
    Ok(moved + packed)
}

/// Packs format-3 idempotency entries (`Sx` keys) into the idempotency log, after the entries
/// already there (see the module docs). Returns how many it packed. Does not flush.
pub fn pack_format3_entries(disk: &dyn Disk, per_chunk: u64) -> Result<usize, StorageError> {
    let mut packed = 0;
    loop {
        let page = disk.scan(
            keys::EXPIRY_START,
            keys::EXPIRY_END,
            Order::Ascending,
            ENTRIES_PER_WRITE,
        )?;
        if page.is_empty() {
            return Ok(packed);
        }
        let mut next: u64 = super::read(disk, keys::KEY_NEXT)?.unwrap_or(0);
        let mut number = next / per_chunk;
        let mut chunk: KeyChunk = super::read(disk, &keys::key_chunk(number))?.unwrap_or_default();
        let mut batch = WriteBatch::default();
        for (key, value) in page {
            let (_, identity) = keys::split_expiry(&key)
                .ok_or_else(|| StorageError::Invariant(format!("malformed expiry key {key:?}")))?;
            let stored = StoredKey {
                identity: identity.to_vec(),
                entry: decode(&key, &value)?,
            };
            if next / per_chunk != number {
                batch.put(keys::key_chunk(number), encode(&chunk));
                number = next / per_chunk;
                chunk = KeyChunk::new();
            }
            chunk.push(Some(stored));
            next += 1;
            batch.delete(key);
            packed += 1;
        }
        batch.put(keys::key_chunk(number), encode(&chunk));
        batch.put(keys::KEY_NEXT.to_vec(), encode(&next));
        if disk.get(keys::KEY_FRONT)?.is_none() {
            batch.put(keys::KEY_FRONT.to_vec(), encode(&0u64));
        }
        disk.write(batch)?;
    }
}

/// A pair of a format-2 or format-3 state as format 3 has it: a format-2 entry moves to its
/// expiry key, format 2's empty expiry keys go (the entry takes their place), anything else is
/// kept as it is.
pub fn format3_pair(key: Vec<u8>, value: Vec<u8>) -> Result<Option<KeyValue>, StorageError> {
    if let Some(identity) = key.strip_prefix(keys::FORMAT2_IDEMPOTENCY_START) {
        let entry: IdempotencyEntry = decode(&key, &value)?;
        return Ok(Some((
            keys::expiry_of_identity(entry.expires_at_ms, identity),
            value,
        )));
    }
    if key.starts_with(keys::EXPIRY_START) && value.is_empty() {
        return Ok(None);
    }
    Ok(Some((key, value)))
}

/// Step 1: a fresh WAL holding the old log. Returns the number of entries copied.
async fn copy_log_to_wal(
    disk: &dyn Disk,
    fs: Arc<dyn Fs>,
    wal_dir: &Path,
    options: WalOptions,
) -> io::Result<usize> {
    // A partial WAL from a crashed earlier attempt is discarded.
    if fs.exists(wal_dir) {
        for name in fs.list(wal_dir)? {
            fs.remove(&wal_dir.join(name))?;
        }
    }
    let wal = Wal::open(fs, wal_dir, options)?;
    if let Some(vote) = disk.get(keys::VOTE).map_err(io_error)? {
        wal.save_vote(&vote).await?;
    }
    if let Some(committed) = disk.get(keys::COMMITTED).map_err(io_error)? {
        wal.save_committed(&committed)?;
    }
    if let Some(purged) = disk.get(keys::PURGED).map_err(io_error)? {
        let log_id: crate::raft::LogId = super::decode(keys::PURGED, &purged).map_err(io_error)?;
        wal.purge(log_id.index, &purged).await?;
    }
    let mut copied = 0;
    let mut start = keys::LOG_START.to_vec();
    loop {
        let pairs = disk
            .scan(&start, keys::LOG_END, Order::Ascending, ENTRIES_PER_WRITE)
            .map_err(io_error)?;
        let Some((last_key, _)) = pairs.last() else {
            break;
        };
        let batch: Vec<(u64, Vec<u8>)> = pairs
            .iter()
            .filter_map(|(key, value)| Some((keys::log_index(key)?, value.clone())))
            .collect();
        wal.append(&batch)?;
        copied += batch.len();
        start = last_key.clone();
        start.push(0);
    }
    wal.sync().await?;
    Ok(copied)
}

/// Step 2: the format-1 log keys and snapshot value go (openraft builds a snapshot file when
/// one is needed).
fn delete_format1_keys(disk: &dyn Disk) -> Result<(), StorageError> {
    let mut snapshot = WriteBatch::default();
    snapshot.delete(keys::SNAPSHOT.to_vec());
    disk.write(snapshot)?;
    loop {
        let doomed = disk.scan(
            keys::LOG_START,
            keys::STATE_START,
            Order::Ascending,
            ENTRIES_PER_WRITE,
        )?;
        if doomed.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (key, _) in doomed {
            batch.delete(key);
        }
        disk.write(batch)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, LogId, TypeConfig, Vote};
    use crate::storage::fs::SimFs;
    use crate::storage::{encode, SimDisk};
    use openraft::vote::RaftLeaderIdExt;

    fn log_id(index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(2, 1),
            index,
        )
    }

    /// A format-1 node: entries 6..=9 in sled (1..=5 purged), a vote, a committed id.
    fn format1_disk() -> SimDisk {
        let disk = SimDisk::new();
        let mut batch = WriteBatch::default();
        for index in 6..=9 {
            let entry = Entry {
                log_id: log_id(index),
                payload: openraft::EntryPayload::Blank,
            };
            batch.put(keys::log_entry(index), encode(&entry));
        }
        batch.put(keys::VOTE.to_vec(), encode(&Vote::new(2, 1)));
        batch.put(keys::COMMITTED.to_vec(), encode(&Some(log_id(8))));
        batch.put(keys::PURGED.to_vec(), encode(&log_id(5)));
        batch.put(keys::APPLIED.to_vec(), encode(&Some(log_id(8))));
        disk.write(batch).unwrap();
        disk
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    const WAL_DIR: &str = "/node/wal";

    async fn check_upgraded(disk: &SimDisk, fs: &SimFs) {
        let wal = Wal::open(
            Arc::new(fs.clone()),
            Path::new(WAL_DIR),
            WalOptions::default(),
        )
        .unwrap();
        let indexes: Vec<u64> = wal
            .entries(0, u64::MAX)
            .unwrap()
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(indexes, vec![6, 7, 8, 9]);
        assert_eq!(wal.vote(), Some(encode(&Vote::new(2, 1))));
        assert_eq!(wal.committed(), Some(encode(&Some(log_id(8)))));
        assert_eq!(wal.purged(), Some((5, encode(&log_id(5)))));
        assert!(!has_format1_keys(disk).unwrap(), "format-1 keys are gone");
        assert!(
            disk.get(keys::APPLIED).unwrap().is_some(),
            "the state machine is kept"
        );
    }

    #[test]
    fn a_format1_directory_is_upgraded_once_and_keeps_every_entry_and_the_vote() {
        runtime().block_on(async {
            let (disk, fs) = (format1_disk(), SimFs::new());
            let wal_dir = Path::new(WAL_DIR);
            let done = upgrade(&disk, Arc::new(fs.clone()), wal_dir, WalOptions::default());
            assert_eq!(done.await.unwrap(), Upgrade::FromFormat1 { entries: 4 });
            check_upgraded(&disk, &fs).await;
            let again = upgrade(&disk, Arc::new(fs.clone()), wal_dir, WalOptions::default());
            assert_eq!(again.await.unwrap(), Upgrade::Current);
            check_upgraded(&disk, &fs).await;
        });
    }

    #[test]
    fn an_upgrade_cut_short_is_redone_from_the_old_log() {
        runtime().block_on(async {
            let (disk, fs) = (format1_disk(), SimFs::new());
            let wal_dir = Path::new(WAL_DIR);
            // A crash during step 1: a partial WAL without the marker.
            {
                let partial =
                    Wal::open(Arc::new(fs.clone()), wal_dir, WalOptions::default()).unwrap();
                partial.append(&[(6, b"garbage".to_vec())]).unwrap();
                partial.sync().await.unwrap();
            }
            let done = upgrade(&disk, Arc::new(fs.clone()), wal_dir, WalOptions::default());
            assert_eq!(done.await.unwrap(), Upgrade::FromFormat1 { entries: 4 });
            check_upgraded(&disk, &fs).await;
        });
    }

    #[test]
    fn an_upgrade_cut_after_the_wal_was_written_only_finishes_the_cleanup() {
        runtime().block_on(async {
            let (disk, fs) = (format1_disk(), SimFs::new());
            let wal_dir = Path::new(WAL_DIR);
            let fs_dyn: Arc<dyn Fs> = Arc::new(fs.clone());
            copy_log_to_wal(&disk, fs_dyn.clone(), wal_dir, WalOptions::default())
                .await
                .unwrap();
            fs_dyn
                .open(&wal_dir.join(MARKER), true)
                .unwrap()
                .sync()
                .unwrap();
            fs_dyn.sync_dir(wal_dir).unwrap();
            // The crash: step 2 never ran; the old keys are still there.
            assert!(has_format1_keys(&disk).unwrap());
            let done = upgrade(&disk, fs_dyn, wal_dir, WalOptions::default());
            assert_eq!(done.await.unwrap(), Upgrade::FromFormat1 { entries: 0 });
            check_upgraded(&disk, &fs).await;
        });
    }
}
