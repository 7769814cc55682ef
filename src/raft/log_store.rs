//! The Raft log and vote, on the write-ahead log ([`Wal`]).
//!
//! Durability rules (see `storage::wal` for how they are kept cheaply):
//! - `append` makes entries readable at once and calls openraft's `IOFlushed` callback only
//!   after the fsync that covers them: when openraft counts this node towards a quorum, the
//!   entry is on stable storage. Concurrent appends and a vote share one fsync.
//! - `save_vote` returns once the vote is durable.
//! - `save_committed` and `truncate_after` ride on the next fsync. An older committed index
//!   after a crash is harmless because a restarted leader never resumes without an election
//!   (`Config::openraft_config`); an undone truncation only brings back entries that were
//!   never acknowledged, and the new leader truncates them again.
//! - `purge` makes its record durable before deleting whole segments.
//!
//! Entries, votes and log ids are bincode, as everywhere on disk; a value that does not decode
//! is a storage error, which stops the node.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::{Entry, LogId, TypeConfig, Vote};
use crate::storage::wal::Wal;
use crate::storage::{decode_in, encode};

/// The log store. Cheap to clone: clones share the WAL, which is how the log reader is made.
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
}

impl LogStore {
    pub fn new(wal: Arc<Wal>) -> Self {
        Self { wal }
    }

    /// The WAL underneath (for its size, in metrics and the snapshot trigger).
    pub fn wal(&self) -> &Arc<Wal> {
        &self.wal
    }
}

impl LogStore {
    /// Decodes `what` read from the WAL; a failure names the WAL's directory and `what`.
    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> io::Result<T> {
        let place = format!("the Raft log {}", self.wal.dir().display());
        Ok(decode_in(&place, what.as_bytes(), bytes)?)
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
        let end = match range.end_bound() {
            Bound::Included(&index) => index.saturating_add(1),
            Bound::Excluded(&index) => index,
            Bound::Unbounded => u64::MAX,
        };
        self.wal
            .entries(start, end)?
            .iter()
            .map(|(index, bytes)| self.decode(&format!("log entry {index}"), bytes))
            .collect()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.wal
            .vote()
            .map(|bytes| self.decode("vote", &bytes))
            .transpose()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self
            .wal
            .purged()
            .map(|(_, bytes)| self.decode("purge point", &bytes))
            .transpose()?;
        let last_log_id = match self.wal.last_entry()? {
            Some((index, bytes)) => Some(
                self.decode::<Entry>(&format!("log entry {index}"), &bytes)?
                    .log_id,
            ),
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
        self.wal.save_vote(&encode(vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.wal.save_committed(&encode(&committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        match self.wal.committed() {
            Some(bytes) => self.decode::<Option<LogId>>("committed log id", &bytes),
            None => Ok(None),
        }
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
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.log_id.index, encode(&entry)))
            .collect();
        if let Err(error) = self.wal.append(&encoded) {
            callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
            return Err(error);
        }
        self.wal.flush(move |result| callback.io_completed(result));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.wal
            .truncate_after(last_log_id.map(|log_id| log_id.index))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.wal.purge(log_id.index, &encode(&log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::storage::fs::SimFs;
    use crate::storage::wal::WalOptions;

    #[test]
    fn a_corrupt_entry_is_an_error_naming_the_raft_log_and_the_index() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let wal = Wal::open(
                Arc::new(SimFs::new()),
                Path::new("/node/wal"),
                WalOptions::default(),
            )
            .unwrap();
            // Well framed by the WAL, but not an entry: a length claiming 2^44 bytes.
            let mut bomb = vec![0xFD];
            bomb.extend_from_slice(&(1u64 << 44).to_le_bytes());
            wal.append(&[(7, bomb)]).unwrap();
            let mut store = LogStore::new(wal);
            let error = store.try_get_log_entries(7..8).await.unwrap_err();
            let message = error.to_string();
            assert!(message.contains("/node/wal"), "{message}");
            assert!(message.contains("log entry 7"), "{message}");
            assert!(
                store.get_log_state().await.is_err(),
                "the last entry is corrupt too"
            );
        });
    }
}
