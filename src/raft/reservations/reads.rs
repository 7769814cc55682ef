//! Reads of the reservation state and of the views it indexes, off the write path: the HTTP
//! layer's reads (a reservation, a SKU's records, a page of a store's records) and the
//! leader's expiry proposer's scan of the due index. Each is a point read or one bounded range
//! scan; apply never calls them.

use crate::inventory::{Record, RecordKey, Reservation, ReservationId};
use crate::storage::{self, keys, Disk, Order, StorageError};

/// A reservation, held or ended, while it is remembered.
pub fn reservation(
    disk: &dyn Disk,
    id: ReservationId,
) -> Result<Option<Reservation>, StorageError> {
    storage::read(disk, &keys::reservation(id.as_u64()))
}

/// How many reservations are held, and how many ended ones are remembered: two point reads of
/// the counters apply keeps.
pub fn counts(disk: &dyn Disk) -> Result<(u64, u64), StorageError> {
    let held = storage::read(disk, keys::HELD_COUNT)?.unwrap_or(0);
    let next: u64 = storage::read(disk, keys::ENDED_NEXT)?.unwrap_or(0);
    let front: u64 = storage::read(disk, keys::ENDED_FRONT)?.unwrap_or(0);
    Ok((held, next.saturating_sub(front)))
}

/// The held reservations due at `now_ms` (log time: `expires_at_ms <= now_ms`), in deadline
/// order (then id order), at most `limit`.
pub fn due_holds(
    disk: &dyn Disk,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<ReservationId>, StorageError> {
    let end = match now_ms.checked_add(1) {
        Some(after_now) => keys::due(after_now, 0),
        None => keys::DUE_END.to_vec(),
    };
    let due = disk.scan(keys::DUE_START, &end, Order::Ascending, limit)?;
    due.into_iter()
        .map(|(key, _)| {
            keys::due_id(&key)
                .map(ReservationId::from_u64)
                .ok_or_else(|| StorageError::Invariant(format!("a malformed due key {key:?}")))
        })
        .collect()
}

/// Every store's record of `sku`, ordered by store id, at most `limit`: found through the SKU
/// index, then read one by one.
pub fn sku_records(disk: &dyn Disk, sku: &str, limit: usize) -> Result<Vec<Record>, StorageError> {
    let prefix = keys::sku_index_prefix(sku);
    let entries = disk.scan(&prefix, &keys::prefix_end(&prefix), Order::Ascending, limit)?;
    let mut records = Vec::with_capacity(entries.len());
    for (key, _) in entries {
        let store_id = std::str::from_utf8(&key[prefix.len()..])
            .map_err(|_| StorageError::Invariant(format!("a malformed SKU index key {key:?}")))?;
        let record_key = RecordKey {
            store_id: store_id.to_owned(),
            sku: sku.to_owned(),
        };
        // An index entry always has its record, except while a snapshot install reloads the
        // state under a reader's feet: such a read is skipped, not an error.
        if let Some(record) = storage::read(disk, &keys::record(&record_key))? {
            records.push(record);
        }
    }
    Ok(records)
}

/// A page of `store_id`'s records in SKU order, strictly after `after_sku` (from the first
/// when `None`), at most `limit`; and whether more follow.
pub fn store_records(
    disk: &dyn Disk,
    store_id: &str,
    after_sku: Option<&str>,
    limit: usize,
) -> Result<(Vec<Record>, bool), StorageError> {
    let prefix = keys::store_records_prefix(store_id);
    let mut start = prefix.clone();
    if let Some(after_sku) = after_sku {
        // The least key past `after_sku` and every key it starts.
        start.extend_from_slice(after_sku.as_bytes());
        start.push(0);
    }
    let pairs = disk.scan(
        &start,
        &keys::prefix_end(&prefix),
        Order::Ascending,
        limit.saturating_add(1),
    )?;
    let more = pairs.len() > limit;
    let records = pairs
        .into_iter()
        .take(limit)
        .map(|(key, value)| storage::decode(&key, &value))
        .collect::<Result<Vec<Record>, _>>()?;
    Ok((records, more))
}
