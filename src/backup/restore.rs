//! Restoring a backup: the data directories of a **new** cluster that starts from the backup's
//! state.
//!
//! ## What each node's directory gets
//! - `snapshots/`: the backup's items as a snapshot file at log id `(term 0, index N)` (N: the
//!   backup's log index), whose membership is every node of the configuration as a voter;
//! - `wal/`: an empty Raft log purged up to that log id, so the node holds Raft state (it is
//!   not taken for a wiped voter, `node::start`) and its log continues at N + 1;
//! - `identity`: a fresh incarnation and the new cluster's id, drawn once by the restore.
//!
//! On its first start openraft finds the snapshot newer than the (empty) state machine and
//! installs it (`raft::snapshot::install`): records, holds, idempotency keys, the event feed
//! and log time come back as they were at index N. The nodes then elect a leader among
//! themselves in term 1; nobody calls `Raft::initialize`, the cluster is already founded. Its
//! id is new, so nodes of the old cluster (which present the old id) are refused by every
//! restored node and the other way round (`identity`): a restored cluster never mixes with
//! the one it was copied from. Log indexes and versions go on from N, and log time from the
//! backup's, so versions and event seqs keep increasing.
//!
//! ## Refused before anything is written
//! [`verify_file`] reads the whole backup (checksum, length limits, version) before
//! [`write_nodes`] touches a directory, and a node directory that is not empty is reported by
//! [`occupied_dirs`] for the caller to refuse (or clear, with `--force`). The snapshot file is
//! written from a second read, and only given its name once that read's digest checked out
//! too (a file changed in between leaves a temporary file, which the node deletes).
//!
//! Deliberately not done: restoring into the running old cluster (the point is a new one), or
//! merging a backup with existing data.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::vote::RaftLeaderIdExt;
use openraft::{BasicNode, Membership};

use super::export::Contents;
use super::files::FsReader;
use super::format::{BackupReader, FormatError, Header};
use crate::config::Config;
use crate::identity::{file as identity_file, ClusterId, IdentityError, IdentityState};
use crate::raft::{LogId, SnapshotMeta, StoredMembership, TypeConfig};
use crate::storage::encode;
use crate::storage::fs::Fs;
use crate::storage::snapshots::{file_name, SnapshotDir, SnapshotFile};
use crate::storage::wal::{Wal, WalOptions};
use crate::NodeId;

/// The term of the restored snapshot's log id: below any term the new cluster elects in.
const RESTORED_TERM: u64 = 0;

/// Why a restore was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("backup {path} refused: {source}")]
    Backup { path: PathBuf, source: FormatError },
    #[error("backup {path}: its content does not decode: {message}")]
    Content { path: PathBuf, message: String },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A backup read through and found whole.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    pub header: Header,
    pub contents: Contents,
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    pub cluster: ClusterId,
    pub log_index: u64,
    pub nodes: Vec<(NodeId, PathBuf)>,
}

/// Reads the whole backup at `path`: its checksum, its limits, its version, and what it holds.
pub fn verify_file(fs: &dyn Fs, path: &Path) -> Result<Verified, RestoreError> {
    let refused = |source| RestoreError::Backup {
        path: path.to_path_buf(),
        source,
    };
    let source = FsReader::open(fs, path).map_err(|error| refused(FormatError::Io(error)))?;
    let mut contents = Contents::default();
    let mut undecodable = None;
    let header = super::format::verify(source, |key, value| {
        if let Err(message) = contents.count(key, value) {
            undecodable.get_or_insert(message);
        }
    })
    .map_err(refused)?;
    if let Some(message) = undecodable {
        return Err(RestoreError::Content {
            path: path.to_path_buf(),
            message,
        });
    }
    Ok(Verified { header, contents })
}

/// What a node keeps in its data directory besides files of its own: the state, the Raft log,
/// the snapshots.
const NODE_SUBDIRS: [&str; 3] = ["state", "wal", "snapshots"];

/// The data directories of `config`'s nodes that exist and hold anything: a file, or one of the
/// directories a node keeps there ([`NODE_SUBDIRS`]; `Fs::list` names files only).
pub fn occupied_dirs(fs: &dyn Fs, config: &Config) -> Vec<PathBuf> {
    config
        .nodes
        .iter()
        .map(|node| config.data_dir_for(node.id))
        .filter(|dir| {
            fs.exists(dir)
                && (fs.list(dir).is_ok_and(|names| !names.is_empty())
                    || NODE_SUBDIRS.iter().any(|sub| fs.exists(&dir.join(sub))))
        })
        .collect()
}

/// The snapshot metadata of the restored state: index N at [`RESTORED_TERM`], every node of
/// `config` a voter.
fn restored_meta(config: &Config, log_index: u64) -> SnapshotMeta {
    let leader =
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(RESTORED_TERM, 0);
    let log_id = LogId::new(leader, log_index);
    let voters: BTreeSet<NodeId> = config.nodes.iter().map(|node| node.id).collect();
    let nodes: BTreeMap<NodeId, BasicNode> = config
        .nodes
        .iter()
        .map(|node| (node.id, BasicNode::new(node.addr.clone())))
        .collect();
    let membership = Membership::new(vec![voters], nodes)
        .expect("every voter of the configuration is one of its nodes");
    SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: StoredMembership::new(Some(log_id), membership),
    }
}

/// Writes every node's directory (module docs) from the backup at `path`, which
/// [`verify_file`] found whole. The directories must be empty or absent.
pub async fn write_nodes(
    fs: Arc<dyn Fs>,
    path: &Path,
    verified: &Verified,
    config: &Config,
) -> Result<Restored, RestoreError> {
    assert!(!config.nodes.is_empty(), "a configuration names its nodes");
    let log_index = verified.header.log_index;
    let meta = restored_meta(config, log_index);
    let name = file_name(log_index, RESTORED_TERM);
    let cluster = ClusterId::random();
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RestoreError::Write { path, source }
    };
    let mut written: Option<SnapshotFile> = None;
    let mut nodes = Vec::new();
    for node in &config.nodes {
        let dir = config.data_dir_for(node.id);
        let snapshots_dir = dir.join("snapshots");
        let snapshots =
            SnapshotDir::open(fs.clone(), &snapshots_dir).map_err(write_error(&snapshots_dir))?;
        let snapshot = match &written {
            None => write_snapshot(&*fs, path, &snapshots, &name, &meta)?,
            Some(first) => {
                let copy = snapshots
                    .local_copy(first)
                    .map_err(write_error(&snapshots_dir))?;
                snapshots
                    .adopt(copy.path(), &name)
                    .map_err(write_error(&snapshots_dir))?
            }
        };
        written.get_or_insert(snapshot);
        let wal_dir = dir.join("wal");
        let options = WalOptions {
            segment_bytes_max: config.storage.wal_segment_bytes,
            telemetry: None,
        };
        let log_id = meta.last_log_id.expect("a restored snapshot has a log id");
        let wal = Wal::open(fs.clone(), &wal_dir, options).map_err(write_error(&wal_dir))?;
        wal.purge(log_index, &encode(&log_id))
            .await
            .map_err(write_error(&wal_dir))?;
        let identity = IdentityState {
            cluster: Some(cluster),
            ..IdentityState::fresh()
        };
        identity_file::store(fs.clone(), dir.clone(), identity).await?;
        nodes.push((node.id, dir));
    }
    Ok(Restored {
        cluster,
        log_index,
        nodes,
    })
}

/// Writes the backup's items as the snapshot `name` of `snapshots`; named only once the
/// backup's digest checked out again.
fn write_snapshot(
    fs: &dyn Fs,
    path: &Path,
    snapshots: &SnapshotDir,
    name: &str,
    meta: &SnapshotMeta,
) -> Result<SnapshotFile, RestoreError> {
    let refused = |source| RestoreError::Backup {
        path: path.to_path_buf(),
        source,
    };
    let write_error = |source| RestoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let source = FsReader::open(fs, path).map_err(|error| refused(FormatError::Io(error)))?;
    let mut reader = BackupReader::open(source).map_err(refused)?;
    let mut writer = snapshots.writer(name, &encode(meta)).map_err(write_error)?;
    while let Some((key, value)) = reader.next_item().map_err(refused)? {
        writer.push(&key, &value).map_err(write_error)?;
    }
    writer.finish().map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::format::BackupWriter;
    use crate::storage::fs::SimFs;
    use crate::storage::keys;

    fn config() -> Config {
        let mut config: Config = toml::from_str(
            r#"
            [cluster]
            secret = "restore-test-secret"
            [[nodes]]
            id = 1
            addr = "127.0.0.1:1"
            [[nodes]]
            id = 2
            addr = "127.0.0.1:2"
            "#,
        )
        .unwrap();
        config.storage.data_dir = PathBuf::from("/data");
        config
    }

    fn backup(fs: &SimFs, path: &Path) -> Vec<u8> {
        let header = Header {
            cluster: Some(ClusterId(7)),
            log_index: 42,
            log_term: 3,
            log_time_ms: 1_765_000_000_000,
            item_count: 2,
        };
        let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
        writer
            .push(keys::CLOCK, &encode(&header.log_time_ms))
            .unwrap();
        writer.push(b"Sr\x01store\0sku", b"record").unwrap();
        let bytes = writer.finish().unwrap().0;
        fs.create_dir_all(path.parent().unwrap()).unwrap();
        fs.open(path, true)
            .unwrap()
            .write_all_at(0, &bytes)
            .unwrap();
        bytes
    }

    #[test]
    fn a_restore_writes_the_state_a_new_identity_and_a_purged_log_into_every_node() {
        let fs = SimFs::new();
        let path = Path::new("/in/backup.srb");
        backup(&fs, path);
        let config = config();
        let verified = verify_file(&fs, path).unwrap();
        assert_eq!(verified.contents.records, 1);
        assert_eq!(verified.contents.log_time_ms, 1_765_000_000_000);
        let shared: Arc<dyn Fs> = Arc::new(fs.clone());
        let runtime = crate::storage::test_runtime();
        let restored = runtime
            .block_on(write_nodes(shared.clone(), path, &verified, &config))
            .unwrap();
        assert_ne!(
            restored.cluster,
            ClusterId(7),
            "a restore founds a new cluster"
        );
        for node in [1, 2] {
            let dir = config.data_dir_for(node);
            let identity = identity_file::load(&fs, &dir).unwrap().unwrap();
            assert_eq!(identity.cluster, Some(restored.cluster));
            let snapshots = SnapshotDir::open(shared.clone(), &dir.join("snapshots")).unwrap();
            let current = crate::raft::snapshot::current(&snapshots).unwrap().unwrap();
            assert_eq!(current.meta.last_log_id.unwrap().index, 42);
            let voters: Vec<NodeId> = current
                .meta
                .last_membership
                .membership()
                .voter_ids()
                .collect();
            assert_eq!(voters, vec![1, 2]);
            assert_eq!(current.snapshot.verify().unwrap(), 2);
            let wal = runtime.block_on(async {
                Wal::open(shared.clone(), &dir.join("wal"), WalOptions::default()).unwrap()
            });
            assert_eq!(wal.purged().unwrap().0, 42);
        }
        assert!(occupied_dirs(&fs, &config).len() == 2);
    }

    #[test]
    fn a_damaged_backup_is_refused_naming_the_file_and_the_reason() {
        let fs = SimFs::new();
        let path = Path::new("/in/backup.srb");
        let bytes = backup(&fs, path);
        fs.open(path, false)
            .unwrap()
            .write_all_at(bytes.len() as u64 - 40, b"\xff")
            .unwrap();
        let message = verify_file(&fs, path).unwrap_err().to_string();
        assert!(message.contains("/in/backup.srb"), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
        assert!(occupied_dirs(&fs, &config()).is_empty());
    }

    /// A node's data directory holds directories only (its state, log and snapshots): it is
    /// occupied all the same.
    #[test]
    fn a_data_directory_holding_only_a_node_s_state_directory_is_occupied() {
        let fs = SimFs::new();
        let config = config();
        let dir = config.data_dir_for(1);
        fs.create_dir_all(&dir.join("state")).unwrap();
        assert_eq!(occupied_dirs(&fs, &config), vec![dir]);
    }
}
