//! Snapshot files for the store tests: built from a store, sent to another the way a leader
//! streams them, and as an older stockraft wrote them (another magic, an older state machine
//! inside, the same frame). Included by path, not through `support`, by the store tests, which
//! need no cluster.

use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use stockraft::raft::state_machine::StateMachineStore;
use stockraft::raft::{Snapshot, SnapshotMeta};
use stockraft::storage::fs::{Fs, SimFs};
use stockraft::storage::snapshots::SnapshotFile;
use stockraft::storage::{encode, KeyValue};

/// A snapshot of `store` as of now.
pub async fn built_snapshot(store: &mut StateMachineStore) -> Snapshot {
    store
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

/// Sends `file` to `target` the way a leader streams a snapshot: chunk by chunk into the
/// target's own snapshot directory. Returns the received file.
pub fn transfer(file: &SnapshotFile, target: &StateMachineStore) -> SnapshotFile {
    let chunk = 64 * 1024;
    let mut offset = 0;
    loop {
        let data = file.read_chunk(offset, chunk).unwrap();
        let done = offset + data.len() as u64 >= file.size();
        let received = target
            .snapshot_dir()
            .receive("test", offset, &data, done)
            .unwrap();
        if let Some(received) = received {
            return received;
        }
        offset += data.len() as u64;
    }
}

/// A snapshot file of `pairs` at `meta`, framed as `storage::snapshots` frames every format
/// (magic, metadata, records, trailer with the count and a crc), under `magic`.
pub fn old_snapshot(magic: &[u8; 8], meta: &SnapshotMeta, pairs: &[KeyValue]) -> SnapshotFile {
    let mut bytes = magic.to_vec();
    let meta = encode(meta);
    bytes.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&meta);
    for (key, value) in pairs {
        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(value);
    }
    bytes.extend_from_slice(&u32::MAX.to_le_bytes());
    bytes.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/old")).unwrap();
    let path = Path::new("/old/snapshot.snap");
    fs.open(path, true)
        .unwrap()
        .write_all_at(0, &bytes)
        .unwrap();
    SnapshotFile::open(Arc::new(fs), path.to_path_buf()).unwrap()
}
