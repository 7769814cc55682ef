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
//!
//! ## The newest entries, decoded
//! openraft reads entries back right after they are appended: the leader to send them to each
//! follower, every node to apply them. Read from the WAL, each read decoded the entry again:
//! `perf` on a leader taking batches of 1,000 lines put ~15% of its CPU there (reading the
//! segment, then bincode building every line's strings), twice per entry for two followers.
//! So the newest appended entries are also kept as they were appended ([`Recent`]: a run of
//! consecutive indexes, at most [`RECENT_BYTES_MAX`] of their encoded size), and a read that
//! falls wholly inside it is served from memory. A truncation or purge drops what it covers;
//! anything older is read from the WAL as before.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};

use super::{Entry, LogId, TypeConfig, Vote};
use crate::storage::wal::Wal;
use crate::storage::{decode_in, encode};

/// Most bytes (encoded) of recent entries kept decoded: a few dozen batches of 1,000 lines, a
/// few thousand single writes. Memory is about three times it.
pub const RECENT_BYTES_MAX: usize = 8 << 20;

/// The newest appended entries, consecutive, oldest first (see the module docs).
#[derive(Default)]
struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn push(&mut self, entry: Entry, bytes: usize) {
        let next = self.entries.back().map(|(last, _)| last.log_id.index + 1);
        if next.is_some_and(|next| next != entry.log_id.index) {
            // Not the next index (appends after a truncation always are): start over.
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, bytes));
        self.bytes += bytes;
        while self.bytes > RECENT_BYTES_MAX {
            let Some((_, bytes)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= bytes;
        }
    }

    /// Entries `start..end`, if all of them are here.
    fn get(&self, start: u64, end: u64) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let after_last = first + self.entries.len() as u64;
        if start < first || end > after_last || start >= end {
            return None;
        }
        let skip = (start - first) as usize;
        let take = (end - start) as usize;
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take(take)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }

    /// Drops every entry after `index` (all if `None`).
    fn truncate_after(&mut self, index: Option<u64>) {
        while let Some((last, bytes)) = self.entries.back() {
            if index.is_some_and(|index| last.log_id.index <= index) {
                break;
            }
            self.bytes -= bytes;
            self.entries.pop_back();
        }
    }

    /// Drops every entry up to `index`.
    fn purge(&mut self, index: u64) {
        while let Some((first, bytes)) = self.entries.front() {
            if first.log_id.index > index {
                break;
            }
            self.bytes -= bytes;
            self.entries.pop_front();
        }
    }
}

/// The log store. Cheap to clone: clones share the WAL and the recent entries, which is how
/// the log reader is made.
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    recent: Arc<Mutex<Recent>>,
}

impl LogStore {
    pub fn new(wal: Arc<Wal>) -> Self {
        Self {
            wal,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        // Unbounded: up to the last entry the WAL holds.
        let end = match (end, self.wal.last_index()) {
            (u64::MAX, Some(last)) => last.saturating_add(1),
            (end, _) => end,
        };
        if let Some(entries) = self.recent().get(start, end) {
            return Ok(entries);
        }
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|entry| (entry.log_id.index, encode(entry)))
            .collect();
        if let Err(error) = self.wal.append(&encoded) {
            // What the WAL holds is unknown now: read it from there.
            *self.recent() = Recent::default();
            callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
            return Err(error);
        }
        {
            let mut recent = self.recent();
            for (entry, (_, bytes)) in entries.into_iter().zip(&encoded) {
                recent.push(entry, bytes.len());
            }
        }
        self.wal.flush(move |result| callback.io_completed(result));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let index = last_log_id.map(|log_id| log_id.index);
        self.recent().truncate_after(index);
        self.wal.truncate_after(index)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.recent().purge(log_id.index);
        self.wal.purge(log_id.index, &encode(&log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::storage::fs::SimFs;
    use crate::storage::wal::WalOptions;

    fn blank(index: u64) -> Entry {
        use openraft::vote::RaftLeaderIdExt;
        Entry {
            log_id: LogId::new(
                <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1),
                index,
            ),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|entries| entries.iter().map(|entry| entry.log_id.index).collect())
    }

    #[test]
    fn recent_entries_serve_only_ranges_they_hold_whole_and_follow_truncations_and_purges() {
        let mut recent = Recent::default();
        for index in 5..=9 {
            recent.push(blank(index), 10);
        }
        assert_eq!(indexes(recent.get(6, 9)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(recent.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        // Partly outside: the WAL answers.
        assert_eq!(indexes(recent.get(4, 7)), None);
        assert_eq!(indexes(recent.get(8, 11)), None);
        recent.truncate_after(Some(7));
        assert_eq!(indexes(recent.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(recent.get(7, 9)), None);
        recent.purge(5);
        assert_eq!(indexes(recent.get(5, 7)), None);
        assert_eq!(indexes(recent.get(6, 8)), Some(vec![6, 7]));
        // An append that is not the next index starts over.
        recent.push(blank(20), 10);
        assert_eq!(indexes(recent.get(6, 8)), None);
        assert_eq!(indexes(recent.get(20, 21)), Some(vec![20]));
        recent.truncate_after(None);
        assert_eq!(recent.bytes, 0);
        // Bounded by bytes: the oldest go first.
        for index in 1..=3 {
            recent.push(blank(index), RECENT_BYTES_MAX / 2);
        }
        assert_eq!(indexes(recent.get(1, 2)), None);
        assert_eq!(indexes(recent.get(2, 4)), Some(vec![2, 3]));
    }

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
