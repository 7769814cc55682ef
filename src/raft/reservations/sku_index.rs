//! Building the SKU index for records created before it existed: one pass over the records, in
//! bounded batches, at open and after installing a snapshot that lacks it. Apply keeps the
//! index from then on (each record it creates gets its entry), and the [`keys::SKU_INDEX_BUILT`]
//! marker says the index is whole.

use crate::storage::{self, encode, keys, Disk, Order, StorageError, WriteBatch};

/// Records read (and index entries written) per batch while building the SKU index: bounded
/// memory and write batches, whatever the number of records.
pub const SKU_INDEX_BUILD_RECORDS_PER_BATCH: usize = 4_096;

/// Whether the SKU index on `disk` holds every record (its marker is set).
pub fn sku_index_built(disk: &dyn Disk) -> Result<bool, StorageError> {
    Ok(storage::read::<bool>(disk, keys::SKU_INDEX_BUILT)?.unwrap_or(false))
}

/// Adds the SKU index entry of every record on `disk` and sets the marker, unless the marker is
/// already set. Idempotent: a build cut short is run again whole (entries are written over).
/// Returns how many records were indexed (0 when the index was already built). Blocking; call
/// before the state machine applies anything (at open, or right after a snapshot install).
pub fn build_sku_index(disk: &dyn Disk) -> Result<u64, StorageError> {
    if sku_index_built(disk)? {
        return Ok(0);
    }
    let mut start = keys::RECORDS_START.to_vec();
    let mut indexed = 0u64;
    loop {
        let page = disk.scan(
            &start,
            keys::RECORDS_END,
            Order::Ascending,
            SKU_INDEX_BUILD_RECORDS_PER_BATCH,
        )?;
        let mut batch = WriteBatch::default();
        for (key, _) in &page {
            batch.put(sku_index_key_of_record(key)?, Vec::new());
        }
        indexed += page.len() as u64;
        disk.write(batch)?;
        match page.last() {
            Some((last, _)) if page.len() == SKU_INDEX_BUILD_RECORDS_PER_BATCH => {
                start = last.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    let mut marker = WriteBatch::default();
    marker.put(keys::SKU_INDEX_BUILT.to_vec(), encode(&true));
    disk.write(marker)?;
    Ok(indexed)
}

/// The SKU index key of the record stored under `record_key` (`Sr` + store + `0x00` + sku).
fn sku_index_key_of_record(record_key: &[u8]) -> Result<Vec<u8>, StorageError> {
    let malformed = || StorageError::Invariant(format!("a malformed record key {record_key:?}"));
    let rest = record_key
        .strip_prefix(keys::RECORDS_START)
        .ok_or_else(malformed)?;
    let separator = rest
        .iter()
        .position(|&byte| byte == 0)
        .ok_or_else(malformed)?;
    let (store_id, sku) = (&rest[..separator], &rest[separator + 1..]);
    let mut key = keys::SKU_INDEX_START.to_vec();
    key.extend_from_slice(sku);
    key.push(0);
    key.extend_from_slice(store_id);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::RecordKey;

    #[test]
    fn a_record_key_gives_the_index_key_apply_writes() {
        let key = RecordKey::new("s1", "sku-9").unwrap();
        assert_eq!(
            sku_index_key_of_record(&keys::record(&key)).unwrap(),
            keys::sku_index(&key)
        );
        assert!(sku_index_key_of_record(b"Srnoseparator").is_err());
    }
}
