//! [`Disk`] on sled: the product's storage.
//!
//! Durability note: sled 0.34's own flush ends in `sync_file_range` on Linux, which neither
//! persists file-size metadata nor flushes the drive's write cache, and it never syncs the files
//! holding large values (`blobs/`). So [`Disk::flush`] here runs sled's flush and then a real
//! `fsync` of the database file, every blob file and their directories. A vote, an appended
//! entry or a snapshot is therefore on stable storage before openraft is told so.

use std::path::{Path, PathBuf};

use super::{Disk, FlushFuture, KeyValue, Order, StorageError, Write, WriteBatch};

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
