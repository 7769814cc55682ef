//! [`Disk`] on sled: the product's storage.

use std::path::Path;

use super::{Disk, FlushFuture, KeyValue, Order, StorageError, Write, WriteBatch};

/// One sled database per node; everything lives in its default tree so that any batch (log
/// entries and their metadata, or state-machine data and "applied up to") is one atomic
/// `apply_batch`.
pub struct SledDisk {
    db: sled::Db,
}

impl SledDisk {
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(disk_error)?;
        Ok(Self { db })
    }
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
            Ok(())
        })
    }
}
