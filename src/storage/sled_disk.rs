//! [`Disk`] on sled: where earlier stockraft versions kept the state machine. A node now keeps
//! it resident (`storage::resident`); sled is opened only to move an older data directory's
//! state over ([`upgrade_into`]).
//!
//! Durability note: sled 0.34's own flush ends in `sync_file_range` on Linux, which neither
//! persists file-size metadata nor flushes the drive's write cache, and it never syncs the files
//! holding large values (`blobs/`). So [`Disk::flush`] here runs sled's flush and then a real
//! `fsync` of the database file, every blob file and their directories. A vote, an appended
//! entry or a snapshot is therefore on stable storage before openraft is told so.

use std::path::{Path, PathBuf};

use super::fs::StdFs;
use super::resident::{Policy as ResidentPolicy, Resident};
use super::{Disk, FlushFuture, KeyValue, Order, StorageError, Write, WriteBatch};

/// Keys copied per batch while upgrading.
const UPGRADE_PAGE_KEYS: usize = 4096;

/// Opens a node's state in `<data_dir>/state` (`storage::resident`), first moving the state of
/// a data directory written by an earlier version out of sled ([`upgrade_into`]). An upgrade cut
/// short by a crash left a partial `state/` beside sled's `db`, which is still whole: that
/// `state/` is removed and the upgrade starts over. Returns how many keys moved, if any did.
pub fn open_node_state(
    data_dir: &Path,
    cache_bytes: u64,
    policy: ResidentPolicy,
) -> Result<(Resident, Option<usize>), StorageError> {
    let state_dir = data_dir.join("state");
    let upgrading = data_dir.join("db").exists();
    if upgrading && state_dir.exists() {
        std::fs::remove_dir_all(&state_dir).map_err(|error| {
            StorageError::Disk(format!("removing {}: {error}", state_dir.display()))
        })?;
    }
    let resident = Resident::open(std::sync::Arc::new(StdFs), &state_dir, policy)?;
    let moved = if upgrading {
        upgrade_into(data_dir, cache_bytes, &resident)?
    } else {
        None
    };
    Ok((resident, moved))
}

/// Moves the state of an older data directory, held by sled in `data_dir` (its `db` file),
/// into `into` (opened empty): every key, a page at a time, then an image of it all, fsynced;
/// only then are sled's files deleted (`db` first: it is what marks a directory to upgrade, so
/// a crash before that redoes the upgrade from the start, and one after it leaves only files
/// nothing reads). Returns how many keys moved, or `None` if there was no sled database.
pub fn upgrade_into(
    data_dir: &Path,
    cache_bytes: u64,
    into: &Resident,
) -> Result<Option<usize>, StorageError> {
    let db_file = data_dir.join("db");
    if !db_file.exists() {
        return Ok(None);
    }
    let moved = {
        let sled = SledDisk::open(data_dir, cache_bytes)?;
        let mut moved = 0;
        let mut start = Vec::new();
        loop {
            let page = sled.scan(&start, &[0xFF; 8], Order::Ascending, UPGRADE_PAGE_KEYS)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            moved += page.len();
            let mut batch = WriteBatch::default();
            for (key, value) in page {
                batch.put(key, value);
            }
            into.write(batch)?;
        }
        moved
    };
    into.write_image_now()?;
    into.sync()?;
    let remove = |path: PathBuf| match std::fs::remove_file(&path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    };
    let cleaned = (|| {
        remove(db_file)?;
        remove(data_dir.join("conf"))?;
        for entry in std::fs::read_dir(data_dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            if name.starts_with("snap.") {
                remove(path)?;
            }
        }
        match std::fs::remove_dir_all(data_dir.join("blobs")) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        std::fs::File::open(data_dir)?.sync_all()
    })();
    cleaned
        .map_err(|error| StorageError::Disk(format!("removing the old sled database: {error}")))?;
    Ok(Some(moved))
}

/// One sled database per node; everything lives in its default tree so that any batch (log
/// entries and their metadata, or state-machine data and "applied up to") is one atomic
/// `apply_batch`.
pub struct SledDisk {
    db: sled::Db,
    dir: PathBuf,
}

impl SledDisk {
    /// Opens (or creates) the database in `path`, with a page cache of about `cache_bytes`.
    pub fn open(path: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(disk_error)?;
        Ok(Self {
            db,
            dir: path.to_path_buf(),
        })
    }
}

/// `fsync` of sled's files and directories (see the module docs for why sled's flush is not
/// enough). A blob that sled deletes while we walk the directory is skipped.
fn fsync_files(dir: &Path) -> std::io::Result<()> {
    let sync = |path: &Path| match std::fs::File::open(path) {
        Ok(file) => file.sync_all(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    };
    sync(&dir.join("db"))?;
    let blobs = dir.join("blobs");
    if blobs.is_dir() {
        for entry in std::fs::read_dir(&blobs)? {
            sync(&entry?.path())?;
        }
        sync(&blobs)?;
    }
    sync(dir)
}

fn disk_error(error: sled::Error) -> StorageError {
    StorageError::Disk(error.to_string())
}

impl Disk for SledDisk {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get(key).map_err(disk_error)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        order: Order,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let range = self.db.range(start..end);
        let pairs: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> = match order {
            Order::Ascending => Box::new(range),
            Order::Descending => Box::new(range.rev()),
        };
        pairs
            .take(limit)
            .map(|pair| {
                let (k, v) = pair.map_err(disk_error)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let mut sled_batch = sled::Batch::default();
        for write in batch.writes {
            match write {
                Write::Put(k, v) => sled_batch.insert(k, v),
                Write::Delete(k) => sled_batch.remove(k),
            }
        }
        self.db.apply_batch(sled_batch).map_err(disk_error)
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.db.flush_async().await.map_err(disk_error)?;
            let dir = self.dir.clone();
            tokio::task::spawn_blocking(move || fsync_files(&dir))
                .await
                .map_err(|error| StorageError::Disk(error.to_string()))?
                .map_err(|error| StorageError::Disk(format!("fsync: {error}")))
        })
    }
}
