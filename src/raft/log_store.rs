//! The Raft log and vote, on a [`Disk`].
//!
//! Durability rule: `save_vote` and `append` return (and `append` calls its `IOFlushed`
//! callback) only after `Disk::flush`, so when openraft counts this node towards a quorum the
//! entry is on stable storage. Truncation is flushed too (a truncated suffix must not reappear
//! after a crash); purge and "committed" need not be, because re-reading purged entries or an
//! older committed index after a crash is harmless.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::{Entry, LogId, TypeConfig, Vote};
use crate::storage::{decode, encode, keys, Disk, Order, StorageError, WriteBatch};

/// The log store. Cheap to clone: clones share the disk, which is how the log reader is made.
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
}

impl LogStore {
    pub fn new(disk: Arc<dyn Disk>) -> Self {
        Self { disk }
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.disk.get(key)? {
            Some(bytes) => Ok(Some(decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn entries(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StorageError> {
        let end_key = match end {
            Bound::Included(index) => match index.checked_add(1) {
                Some(next) => keys::log_entry(next),
                None => keys::LOG_END.to_vec(),
            },
            Bound::Excluded(index) => keys::log_entry(index),
            Bound::Unbounded => keys::LOG_END.to_vec(),
        };
        let pairs = self.disk.scan(
            &keys::log_entry(start),
            &end_key,
            Order::Ascending,
            usize::MAX,
        )?;
        pairs.iter().map(|(k, v)| decode::<Entry>(k, v)).collect()
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let pairs = self
            .disk
            .scan(keys::LOG_START, keys::LOG_END, Order::Descending, 1)?;
        pairs
            .first()
            .map(|(k, v)| decode::<Entry>(k, v))
            .transpose()
    }

    /// Deletes every entry with `start <= index`, in one batch together with `extra` writes.
    fn delete_from(&self, start: u64, mut batch: WriteBatch) -> Result<(), StorageError> {
        let doomed = self.disk.scan(
            &keys::log_entry(start),
            keys::LOG_END,
            Order::Ascending,
            usize::MAX,
        )?;
        for (key, _) in doomed {
            batch.delete(key);
        }
        self.disk.write(batch)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&index) => index,
            Bound::Excluded(&index) => index.saturating_add(1),
            Bound::Unbounded => 0,
        };
        Ok(self.entries(start, range.end_bound().cloned())?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.read(keys::VOTE)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.read(keys::PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(entry) => Some(entry.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put(keys::VOTE.to_vec(), encode(vote));
        self.disk.write(batch)?;
        self.disk.flush().await?;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put(keys::COMMITTED.to_vec(), encode(&committed));
        self.disk.write(batch)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.read::<Option<LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put(keys::log_entry(entry.log_id.index), encode(&entry));
        }
        let result = match self.disk.write(batch) {
            Ok(()) => self.disk.flush().await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                let message = error.to_string();
                callback.io_completed(Err(io::Error::other(message)));
                Err(error.into())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = last_log_id.map_or(0, |log_id| log_id.index + 1);
        self.delete_from(start, WriteBatch::default())?;
        self.disk.flush().await?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut batch = WriteBatch::default();
        batch.put(keys::PURGED.to_vec(), encode(&log_id));
        let doomed = self.disk.scan(
            keys::LOG_START,
            &keys::log_entry(log_id.index.saturating_add(1)),
            Order::Ascending,
            usize::MAX,
        )?;
        for (key, _) in doomed {
            batch.delete(key);
        }
        self.disk.write(batch)?;
        Ok(())
    }
}
