//! The `identity` file of a node's data directory, through the [`Fs`] seam.
//!
//! JSON, small and readable by an operator (`cat node-3/identity`):
//! `{"format":1,"clusterId":"<32 hex>"|null,"incarnation":"<16 hex>","peers":{"1":"<16 hex>"}}`.
//! A write goes to `identity.tmp`, is fsynced, renamed over `identity`, and the directory is
//! fsynced: a crash leaves the old file or the new one, never a torn one (a leftover
//! `identity.tmp` is ignored and overwritten by the next write).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{ClusterId, IdentityState, Incarnation};
use crate::storage::fs::{blocking, Fs};
use crate::NodeId;

/// The file's name in the node's data directory.
pub const FILE_NAME: &str = "identity";
const TEMPORARY_NAME: &str = "identity.tmp";
const FORMAT: u32 = 1;
/// The largest identity file read: a few hundred bytes per member; anything past this is not
/// an identity file.
const FILE_BYTES_MAX: u64 = 1 << 20;

/// Why the identity could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("identity file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OnDisk {
    format: u32,
    cluster_id: Option<String>,
    incarnation: String,
    peers: BTreeMap<NodeId, String>,
}

fn to_disk(state: &IdentityState) -> OnDisk {
    OnDisk {
        format: FORMAT,
        cluster_id: state.cluster.map(|id| id.to_string()),
        incarnation: state.incarnation.to_string(),
        peers: state
            .peers
            .iter()
            .map(|(node, incarnation)| (*node, incarnation.to_string()))
            .collect(),
    }
}

fn from_disk(on_disk: OnDisk) -> Result<IdentityState, String> {
    if on_disk.format != FORMAT {
        return Err(format!("unknown format {}", on_disk.format));
    }
    let cluster = match on_disk.cluster_id {
        Some(text) => Some(ClusterId::parse(&text).ok_or("a malformed clusterId")?),
        None => None,
    };
    let incarnation = Incarnation::parse(&on_disk.incarnation).ok_or("a malformed incarnation")?;
    let mut peers = BTreeMap::new();
    for (node, text) in on_disk.peers {
        let incarnation = Incarnation::parse(&text).ok_or("a malformed peer incarnation")?;
        peers.insert(node, incarnation);
    }
    Ok(IdentityState {
        cluster,
        incarnation,
        peers,
    })
}

/// Reads the identity persisted in `dir`; None if there is none (a new or wiped directory).
pub fn load(fs: &dyn Fs, dir: &Path) -> Result<Option<IdentityState>, IdentityError> {
    let path = dir.join(FILE_NAME);
    if !fs.exists(&path) {
        return Ok(None);
    }
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    let file = fs.open(&path, false).map_err(io)?;
    let size = file.size().map_err(io)?;
    let corrupt = |message: String| IdentityError::Corrupt {
        path: path.clone(),
        message,
    };
    if size > FILE_BYTES_MAX {
        return Err(corrupt(format!("{size} bytes")));
    }
    let mut bytes = vec![0; size as usize];
    file.read_exact_at(0, &mut bytes).map_err(io)?;
    let on_disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    from_disk(on_disk).map(Some).map_err(corrupt)
}

/// Writes `state` durably to `dir` (blocking).
pub fn store_blocking(fs: &dyn Fs, dir: &Path, state: &IdentityState) -> Result<(), IdentityError> {
    let temporary = dir.join(TEMPORARY_NAME);
    let path = dir.join(FILE_NAME);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { path, source }
    };
    let bytes = serde_json::to_vec(&to_disk(state)).expect("an identity serialises to JSON");
    fs.create_dir_all(dir).map_err(io(dir))?;
    let file = fs.open(&temporary, true).map_err(io(&temporary))?;
    file.set_len(0).map_err(io(&temporary))?;
    file.write_all_at(0, &bytes).map_err(io(&temporary))?;
    file.sync().map_err(io(&temporary))?;
    fs.rename(&temporary, &path).map_err(io(&path))?;
    fs.sync_dir(dir).map_err(io(dir))
}

/// Writes `state` durably to `dir`, off the async workers.
pub async fn store(
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    state: IdentityState,
) -> Result<(), IdentityError> {
    let path = dir.join(FILE_NAME);
    let stored = blocking(move || {
        store_blocking(&*fs, &dir, &state).map_err(|error| std::io::Error::other(error.to_string()))
    })
    .await;
    stored.map_err(|source| IdentityError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::fs::SimFs;

    fn sample() -> IdentityState {
        IdentityState {
            cluster: Some(ClusterId(0xfeed_0000_0000_0000_0000_0000_0000_beef)),
            incarnation: Incarnation(42),
            peers: [(1, Incarnation(7)), (3, Incarnation(u64::MAX))].into(),
        }
    }

    #[test]
    fn an_identity_round_trips_through_the_file() {
        let fs = SimFs::new();
        let dir = Path::new("/data/node-2");
        assert_eq!(load(&fs, dir).unwrap(), None, "a new directory has none");
        store_blocking(&fs, dir, &sample()).unwrap();
        assert_eq!(load(&fs, dir).unwrap(), Some(sample()));
        let fresh = IdentityState::fresh();
        store_blocking(&fs, dir, &fresh).unwrap();
        assert_eq!(load(&fs, dir).unwrap(), Some(fresh));
    }

    #[test]
    fn a_stored_identity_survives_a_power_cut_and_a_wipe_loses_it() {
        let fs = SimFs::new();
        let dir = Path::new("/data/node-2");
        store_blocking(&fs, dir, &sample()).unwrap();
        // The cut keeps nothing that was not synced: everything here was.
        fs.crash(|_| 0);
        assert_eq!(load(&fs, dir).unwrap(), Some(sample()));
        fs.wipe();
        assert_eq!(load(&fs, dir).unwrap(), None);
    }

    #[test]
    fn a_half_written_replacement_leaves_the_previous_identity() {
        let fs = SimFs::new();
        let dir = Path::new("/data/node-2");
        store_blocking(&fs, dir, &sample()).unwrap();
        // A write of the temporary file that never reached its rename.
        let temporary = fs.open(&dir.join(TEMPORARY_NAME), true).unwrap();
        temporary.write_all_at(0, b"{\"format\":1,\"clus").unwrap();
        fs.crash(|unsynced| unsynced);
        assert_eq!(load(&fs, dir).unwrap(), Some(sample()));
    }

    #[cfg(not(madsim))]
    #[test]
    fn a_corrupt_identity_file_is_an_error_naming_the_file() {
        use crate::storage::fs::StdFs;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{\"format\":1}").unwrap();
        let error = load(&StdFs, dir.path()).unwrap_err();
        assert!(error.to_string().contains("identity"), "{error}");
        store_blocking(&StdFs, dir.path(), &sample()).unwrap();
        assert_eq!(load(&StdFs, dir.path()).unwrap(), Some(sample()));
        assert!(!dir.path().join(TEMPORARY_NAME).exists());
    }
}
