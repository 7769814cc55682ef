//! Upgrading the Raft log of a data directory written before the WAL (format 1).
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
//! It lives beside the log store, not in `storage`, because reading the purge point takes the
//! Raft types ([`LogId`]). The state machine's own upgrades (its idempotency entries) are the
//! idempotency log's (`raft::idempotency_log::upgrade_key_layout`).

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::types::LogId;
use crate::storage::fs::Fs;
use crate::storage::wal::{Wal, WalOptions};
use crate::storage::{self, keys, Disk, Order, StorageError, WriteBatch};

/// The marker of a finished step 1.
const MARKER: &str = "MIGRATED";
/// Entries copied per WAL write, and keys deleted per batch, while upgrading.
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

/// Upgrades the data directory to the current format if it is an older one (see the module
/// docs). Call before opening the WAL; blocking.
pub async fn upgrade(
    disk: &dyn Disk,
    fs: Arc<dyn Fs>,
    wal_dir: &Path,
    options: WalOptions,
) -> io::Result<Upgrade> {
    if !has_format1_keys(disk)? {
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
    delete_format1_keys(disk)?;
    disk.flush().await?;
    tracing::warn!(
        entries,
        "upgraded the data directory from format 1: the Raft log moved from sled to wal/"
    );
    Ok(Upgrade::FromFormat1 { entries })
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
    if let Some(vote) = disk.get(keys::VOTE)? {
        wal.save_vote(&vote).await?;
    }
    if let Some(committed) = disk.get(keys::COMMITTED)? {
        wal.save_committed(&committed)?;
    }
    if let Some(purged) = disk.get(keys::PURGED)? {
        let log_id: LogId = storage::decode(keys::PURGED, &purged)?;
        wal.purge(log_id.index, &purged).await?;
    }
    let mut copied = 0;
    let mut start = keys::LOG_START.to_vec();
    loop {
        let pairs = disk.scan(&start, keys::LOG_END, Order::Ascending, ENTRIES_PER_WRITE)?;
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
    storage::delete_range(disk, keys::LOG_START, keys::STATE_START, ENTRIES_PER_WRITE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{Entry, TypeConfig, Vote};
    use crate::storage::fs::SimFs;
    use crate::storage::{encode, test_runtime, SimDisk};
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
        test_runtime().block_on(async {
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
        test_runtime().block_on(async {
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
        test_runtime().block_on(async {
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
