//! A backup made from a snapshot file, and what a backup holds in words an operator reads.
//!
//! A snapshot file (`storage::snapshots`) is already the whole state machine at one applied log
//! index, written while applies went on, checked by a crc. A backup is that state re-framed
//! ([`super::format`]) with the cluster id, the log index, term and log time in its header and
//! a SHA-256 over all of it. Two passes over the snapshot, each through a bounded buffer: the
//! first checks its crc, counts the items and finds the log time (kept under `keys::CLOCK`,
//! anywhere in the file), so that the header can say them; the second writes the items.
//! Nothing holds more than one item and the buffers in memory.

use std::io::{self, Write};

use super::format::{BackupWriter, Header, DIGEST_BYTES};
use crate::identity::ClusterId;
use crate::raft::events::FeedPosition;
use crate::raft::SnapshotMeta;
use crate::storage::snapshots::SnapshotFile;
use crate::storage::{decode_in, keys};

/// What a backup holds, counted from its items (`stockraft admin backup --verify` prints it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Contents {
    /// Key/value pairs of the state machine.
    pub items: u64,
    /// Inventory records (one per store and SKU).
    pub records: u64,
    /// Reservations still held (`keys::HELD_COUNT`).
    pub held_reservations: u64,
    /// Idempotency keys remembered (`keys::IDEMPOTENCY_KEY_COUNT`).
    pub idempotency_keys: u64,
    /// Events the feed keeps, and the newest one's seq.
    pub events_kept: u64,
    pub last_event_seq: u64,
    /// The log time of the state (`keys::CLOCK`), ms since the Unix epoch.
    pub log_time_ms: u64,
}

/// Where a backup's counters are decoded from, for their errors.
const PLACE: &str = "the backup's state";

impl Contents {
    /// Counts one item; a counter that does not decode is an error naming its key.
    pub fn count(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.items += 1;
        let decoded = |key: &[u8]| decode_in::<u64>(PLACE, key, value).map_err(|e| e.to_string());
        if key.starts_with(keys::RECORDS_START) {
            self.records += 1;
        } else if key == keys::HELD_COUNT {
            self.held_reservations = decoded(key)?;
        } else if key == keys::IDEMPOTENCY_KEY_COUNT {
            self.idempotency_keys = decoded(key)?;
        } else if key == keys::CLOCK {
            self.log_time_ms = decoded(key)?;
        } else if key == keys::FEED_POSITION {
            let position: FeedPosition = decode_in(PLACE, key, value).map_err(|e| e.to_string())?;
            self.events_kept = (position.last_seq + 1).saturating_sub(position.oldest_seq);
            self.last_event_seq = position.last_seq;
        }
        Ok(())
    }
}

/// A backup written: its header, what it holds, its digest and size.
#[derive(Debug, Clone)]
pub struct Written {
    pub header: Header,
    pub contents: Contents,
    pub digest: [u8; DIGEST_BYTES],
    pub size_bytes: u64,
}

/// Writes a backup of `snapshot` (whose metadata is `meta`) of cluster `cluster` to `sink`
/// (blocking: run it off the async workers). Returns the sink and what was written.
pub fn write_backup<W: Write>(
    snapshot: &SnapshotFile,
    meta: &SnapshotMeta,
    cluster: Option<ClusterId>,
    sink: W,
) -> io::Result<(W, Written)> {
    let mut contents = Contents::default();
    let mut records = snapshot.records()?;
    while let Some((key, value)) = records.next_record()? {
        contents
            .count(&key, &value)
            .map_err(|message| io::Error::new(io::ErrorKind::InvalidData, message))?;
    }
    let log_id = meta.last_log_id.as_ref();
    let header = Header {
        cluster,
        log_index: log_id.map_or(0, |id| id.index),
        log_term: log_id.map_or(0, |id| id.leader_id.term),
        log_time_ms: contents.log_time_ms,
        item_count: contents.items,
    };
    let mut writer = BackupWriter::new(sink, &header)?;
    let mut records = snapshot.records()?;
    while let Some((key, value)) = records.next_record()? {
        writer.push(&key, &value)?;
    }
    let (sink, digest, size_bytes) = writer.finish()?;
    Ok((
        sink,
        Written {
            header,
            contents,
            digest,
            size_bytes,
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::backup::format;
    use crate::raft::LogId;
    use crate::storage::encode;
    use crate::storage::fs::SimFs;
    use crate::storage::snapshots::{file_name, SnapshotDir};
    use openraft::vote::RaftLeaderIdExt;

    #[test]
    fn a_backup_of_a_snapshot_holds_its_items_and_says_its_point_and_log_time() {
        let dir = SnapshotDir::open(Arc::new(SimFs::new()), Path::new("/node/snapshots")).unwrap();
        let leader =
            <crate::raft::TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(4, 1);
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(leader, 77)),
            last_membership: Default::default(),
        };
        let mut writer = dir.writer(&file_name(77, 4), &encode(&meta)).unwrap();
        let items: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (keys::HELD_COUNT.to_vec(), encode(&2u64)),
            (keys::CLOCK.to_vec(), encode(&1_765_000_000_123u64)),
            (b"Sr\x02s1\0a".to_vec(), b"record a".to_vec()),
            (b"Sr\x02s1\0b".to_vec(), b"record b".to_vec()),
        ];
        for (key, value) in &items {
            writer.push(key, value).unwrap();
        }
        let snapshot = writer.finish().unwrap();
        let cluster = Some(ClusterId(42));
        let (bytes, written) = write_backup(&snapshot, &meta, cluster, Vec::new()).unwrap();
        assert_eq!(written.size_bytes, bytes.len() as u64);
        assert_eq!(written.contents.records, 2);
        assert_eq!(written.contents.held_reservations, 2);
        let mut read = Vec::new();
        let header =
            format::verify(&bytes[..], |k, v| read.push((k.to_vec(), v.to_vec()))).unwrap();
        assert_eq!(read, items);
        assert_eq!(header, written.header);
        assert_eq!(
            (
                header.cluster,
                header.log_index,
                header.log_term,
                header.log_time_ms
            ),
            (cluster, 77, 4, 1_765_000_000_123)
        );
    }
}
