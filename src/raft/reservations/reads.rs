//! Reads of the reservation state and of the views it indexes, off the write path: the HTTP
//! layer's reads (a reservation, a SKU's records, a page of a store's records) and the
//! leader's expiry proposer's scan of the due index. Each is a point read or one bounded range
//! scan; apply never calls them.

use super::layout::{chunk_key, chunk_of, Chunk, Due, DueBucket};
use super::packed::position;
use crate::inventory::{Record, RecordKey, Reservation, ReservationId};
use crate::storage::{self, keys, Disk, Order, StorageError};

/// Due buckets read per page while looking for the holds due (each a few hundred bytes; a
/// window of an expiry storm of 100,000 holds due in one second is a few dozen buckets).
const DUE_BUCKETS_PER_PAGE: usize = 64;

/// A reservation, held or ended, while it is remembered: one read of its chunk.
pub fn reservation(
    disk: &dyn Disk,
    id: ReservationId,
) -> Result<Option<Reservation>, StorageError> {
    let mut chunk: Chunk = storage::read(disk, &chunk_key(chunk_of(id)))?.unwrap_or_default();
    Ok(position(&chunk, id).ok().map(|at| chunk.swap_remove(at)))
}

/// Every reservation remembered, held or ended, in id order: a scan of the whole reservation
/// state, for checkers and tests (the simulation's invariants), never for a request.
pub fn remembered(disk: &dyn Disk) -> Result<Vec<Reservation>, StorageError> {
    let (start, end) = (keys::RESERVATION_CHUNKS_START, keys::RESERVATION_CHUNKS_END);
    let mut all = Vec::new();
    for (key, value) in disk.scan(start, end, Order::Ascending, usize::MAX)? {
        all.extend(storage::decode::<Chunk>(&key, &value)?);
    }
    Ok(all)
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
///
/// The due buckets are read in order of their window (`DUE_WINDOW_MS`), a page at a time, up to
/// the window of `now_ms`; within a window the buckets are by chunk, not by deadline, so a window
/// is read whole before its holds are sorted. The scan stops at the first window boundary with
/// `limit` holds found: its work is bounded by the holds due in the windows it needs.
pub fn due_holds(
    disk: &dyn Disk,
    now_ms: u64,
    limit: usize,
) -> Result<Vec<ReservationId>, StorageError> {
    let end = DueBucket::scan_end_after(now_ms);
    let mut start = keys::DUE_BUCKETS_START.to_vec();
    let mut due: Vec<(u64, ReservationId)> = Vec::new();
    let mut window_read = None;
    'pages: loop {
        let page = disk.scan(&start, &end, Order::Ascending, DUE_BUCKETS_PER_PAGE)?;
        let full = page.len() == DUE_BUCKETS_PER_PAGE;
        for (key, value) in &page {
            let bucket = DueBucket::from_key(key)
                .ok_or_else(|| StorageError::Invariant(format!("a malformed due key {key:?}")))?;
            if window_read.is_some_and(|window| window < bucket.window) && due.len() >= limit {
                break 'pages;
            }
            window_read = Some(bucket.window);
            let items: Vec<Due> = storage::decode(key, value)?;
            due.extend(
                items
                    .into_iter()
                    .map(|item| (bucket.deadline_ms(item), item.id))
                    .filter(|&(deadline_ms, _)| deadline_ms <= now_ms),
            );
        }
        match page.last() {
            Some((last, _)) if full => {
                start = last.clone();
                start.push(0);
            }
            _ => break,
        }
    }
    due.sort_unstable();
    due.truncate(limit);
    Ok(due.into_iter().map(|(_, id)| id).collect())
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
