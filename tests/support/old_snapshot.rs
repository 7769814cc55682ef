//! Snapshot files as an older stockraft wrote them (another magic, an older state machine
//! inside, the same frame), for tests that install them. Included by path, not through
//! `support`, by the store tests, which need no cluster.

use std::path::Path;
use std::sync::Arc;

use stockraft::raft::SnapshotMeta;
use stockraft::storage::fs::{Fs, SimFs};
use stockraft::storage::snapshots::SnapshotFile;
use stockraft::storage::{encode, KeyValue};

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
