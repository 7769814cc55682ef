//! The key layout of a node's disk. One ordered key space, split by a one-byte prefix:
//!
//! | prefix | key                                   | value (bincode)                      |
//! |--------|---------------------------------------|--------------------------------------|
//! | `L`    | `L` + log index (u64 big-endian)      | format 1 only: openraft `Entry`       |
//! | `M`    | `Mv` vote, `Mc` committed, `Mp` purged | format 1 only (now in `wal/`)        |
//! | `S`    | `Sr` + storeId + `0x00` + sku         | `Record`                             |
//! | `S`    | `Sq` + chunk number (u64 BE)          | a chunk of the idempotency log: its entries, oldest first |
//! | `S`    | `Sx` + expiry ms (u64 BE) + identity  | format 3 only: `IdempotencyEntry`    |
//! | `S`    | `Si` + idempotency identity           | format 2 only: `IdempotencyEntry`    |
//! | `S`    | `Sc` + chunk number (u64 BE)          | the reservations created by 32 log entries (any status, until forgotten), by id |
//! | `S`    | `Sw` + due window (10 ms, u64 BE) + chunk number (u64 BE) | the due index: that chunk's held reservations due in that window |
//! | `S`    | `Sf` + slot number (u64 BE)           | a slot of the retention queue: up to 64 ended reservations and when they ended |
//! | `S`    | `Sh` + id, `Sd` + expiry + id, `Se` + number | format 4 only: one key per reservation, due entry and ended entry |
//! | `S`    | `Sv` + chunk number (u64 BE)          | a chunk of the event feed: up to 64 events, by seq |
//! | `S`    | `Sk` + sku + `0x00` + storeId         | empty: the SKU index of records      |
//! | `S`    | `Sma` applied, `Smm` membership, `Smc` clock, `Smk` key count, `Smn` next key, `Smf` first key | `LogId`, `StoredMembership`, `u64` (the rest) |
//! | `S`    | `Smh` held count, `Sme` next ended number, `Smo` oldest ended number kept, `Sms` SKU index built | `u64`; `Sms`: `true` |
//! | `S`    | `Smv` feed position                   | `FeedPosition` (last seq, oldest kept) |
//! | `Z`    | `Z` current snapshot                  | `StoredSnapshot`                     |
//!
//! The reservation keys (`Sc`, `Sw`, `Sf`, `Sk`, `Smh`, `Sme`, `Smo`, `Sms`, and format 4's
//! `Sh`, `Sd`, `Se`) belong to `raft::reservations`, whose module docs say what each holds, who
//! reads it, how reservations are packed (format 5, this one) and how format 4's keys are
//! packed when a node opens or installs a snapshot.
//!
//! The feed's keys (`Sv`, `Smv`) belong to `raft::events`.
//!
//! Format 1 kept the Raft log here too (`L`, `M`); `raft::log_upgrade` moves it to the WAL.
//! The idempotency entries (`Sq`, `Smk`, `Smn`, `Smf`, and the older `Sx` and `Si`) belong to
//! the idempotency log, `raft::idempotency_log`: its module docs say what each holds, how the
//! chunks are laid out, and how formats 2 and 3 are upgraded to format 4. Everything under `S`
//! is the state machine: a snapshot is exactly the `S` range, so a node that installs a
//! snapshot ends byte-identical to the one that built it (an older snapshot is moved to format
//! 5 as it is installed). Big-endian integers make byte order equal
//! numeric order, so the chunks sort by number.

use crate::inventory::RecordKey;

pub const LOG_START: &[u8] = b"L";
pub const LOG_END: &[u8] = b"M";
pub const VOTE: &[u8] = b"Mv";
pub const COMMITTED: &[u8] = b"Mc";
pub const PURGED: &[u8] = b"Mp";

pub const STATE_START: &[u8] = b"S";
pub const STATE_END: &[u8] = b"T";
pub const RECORDS_START: &[u8] = b"Sr";
pub const RECORDS_END: &[u8] = b"Ss";
pub const APPLIED: &[u8] = b"Sma";
pub const MEMBERSHIP: &[u8] = b"Smm";
pub const CLOCK: &[u8] = b"Smc";
/// How many idempotency keys are stored (for the cap).
pub const IDEMPOTENCY_KEY_COUNT: &[u8] = b"Smk";
/// The idempotency log's next entry number and its first entry not forgotten (format 4).
pub const KEY_NEXT: &[u8] = b"Smn";
pub const KEY_FRONT: &[u8] = b"Smf";
/// The idempotency log's chunks (format 4, see the module docs).
pub const KEY_CHUNKS_START: &[u8] = b"Sq";
pub const KEY_CHUNKS_END: &[u8] = b"Sr";
/// Format 3's idempotency entries, one per key in expiry order (see the module docs).
pub const EXPIRY_START: &[u8] = b"Sx";
pub const EXPIRY_END: &[u8] = b"Sy";
/// Format 2's idempotency entries (see the module docs).
pub const FORMAT2_IDEMPOTENCY_START: &[u8] = b"Si";
pub const FORMAT2_IDEMPOTENCY_END: &[u8] = b"Sj";
/// Chunks of reservations, by the log index that created them (see `raft::reservations`).
pub const RESERVATION_CHUNKS_START: &[u8] = b"Sc";
pub const RESERVATION_CHUNKS_END: &[u8] = b"Sd";
/// The due index of held reservations: due window, then chunk (see `raft::reservations`).
pub const DUE_BUCKETS_START: &[u8] = b"Sw";
pub const DUE_BUCKETS_END: &[u8] = b"Sx";
/// The retention queue of ended reservations, in slots of consecutive numbers.
pub const ENDED_SLOTS_START: &[u8] = b"Sf";
pub const ENDED_SLOTS_END: &[u8] = b"Sg";
/// Format 4's reservations, one key each by id (see `raft::reservations`).
pub const FORMAT4_RESERVATIONS_START: &[u8] = b"Sh";
pub const FORMAT4_RESERVATIONS_END: &[u8] = b"Si";
/// Format 4's due index, one empty key per held reservation: expiry, then id.
pub const FORMAT4_DUE_START: &[u8] = b"Sd";
pub const FORMAT4_DUE_END: &[u8] = b"Se";
/// Format 4's retention queue, one key per ended reservation, by number.
pub const FORMAT4_ENDED_START: &[u8] = b"Se";
pub const FORMAT4_ENDED_END: &[u8] = b"Sf";
/// The SKU index of records: sku, `0x00`, store id.
pub const SKU_INDEX_START: &[u8] = b"Sk";
pub const SKU_INDEX_END: &[u8] = b"Sl";
/// How many reservations are held.
pub const HELD_COUNT: &[u8] = b"Smh";
/// The number the next ended reservation gets in the retention queue.
pub const ENDED_NEXT: &[u8] = b"Sme";
/// The oldest number of the retention queue not yet forgotten.
pub const ENDED_FRONT: &[u8] = b"Smo";
/// Present once the SKU index holds every record (built at open for records created before it).
pub const SKU_INDEX_BUILT: &[u8] = b"Sms";

/// Chunks of the event feed, by seq / 64 (see `raft::events`).
pub const EVENT_CHUNKS_START: &[u8] = b"Sv";
pub const EVENT_CHUNKS_END: &[u8] = b"Sw";
/// The feed's position: last seq, oldest seq kept.
pub const FEED_POSITION: &[u8] = b"Smv";

/// Format 1 kept the current snapshot here; now snapshots are files (`storage::snapshots`).
pub const SNAPSHOT: &[u8] = b"Z";
/// Present while a snapshot install is in progress (outside the state range, which an install
/// clears): see `raft::snapshot`.
pub const INSTALLING: &[u8] = b"Install";

pub fn log_entry(index: u64) -> Vec<u8> {
    let mut key = LOG_START.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(LOG_START)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn record(key: &RecordKey) -> Vec<u8> {
    let mut bytes = RECORDS_START.to_vec();
    bytes.extend_from_slice(key.store_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.sku.as_bytes());
    bytes
}

/// Where a store's records start: `Sr` + storeId + `0x00`.
pub fn store_records_prefix(store_id: &str) -> Vec<u8> {
    let mut bytes = RECORDS_START.to_vec();
    bytes.extend_from_slice(store_id.as_bytes());
    bytes.push(0);
    bytes
}

/// Where the SKU index entries of `sku` start: `Sk` + sku + `0x00`.
pub fn sku_index_prefix(sku: &str) -> Vec<u8> {
    let mut bytes = SKU_INDEX_START.to_vec();
    bytes.extend_from_slice(sku.as_bytes());
    bytes.push(0);
    bytes
}

/// The SKU index entry of a record.
pub fn sku_index(key: &RecordKey) -> Vec<u8> {
    let mut bytes = sku_index_prefix(&key.sku);
    bytes.extend_from_slice(key.store_id.as_bytes());
    bytes
}

/// The first key after every key that starts with `prefix` (`prefix` never ends in `0xFF`
/// here: ids are ASCII and prefixes end in a letter or `0x00`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    let last = end.last_mut().expect("a key prefix is not empty");
    assert!(*last < u8::MAX, "a key prefix ends below 0xFF");
    *last += 1;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_numerically_and_round_trip() {
        assert!(log_entry(255) < log_entry(256));
        assert!(log_entry(u64::MAX).as_slice() < LOG_END);
        assert_eq!(log_index(&log_entry(42)), Some(42));
    }

    #[test]
    fn a_store_prefix_does_not_capture_another_store() {
        let a = record(&RecordKey::new("s1", "x").unwrap());
        let b = record(&RecordKey::new("s10", "a").unwrap());
        let store_s1_prefix = b"Srs1\0";
        assert!(a.starts_with(store_s1_prefix));
        assert!(!b.starts_with(store_s1_prefix));
        assert_eq!(store_records_prefix("s1"), store_s1_prefix);
    }

    #[test]
    fn the_sku_index_keeps_skus_apart() {
        let index = sku_index(&RecordKey::new("s1", "x").unwrap());
        assert!(index.starts_with(&sku_index_prefix("x")));
        assert!(!index.starts_with(&sku_index_prefix("x1")));
        assert!(index.as_slice() < SKU_INDEX_END);
        assert_eq!(prefix_end(b"Sk"), b"Sl");
    }

    #[test]
    fn the_ranges_of_the_state_do_not_overlap() {
        let mut ranges = [
            (RESERVATION_CHUNKS_START, RESERVATION_CHUNKS_END),
            (FORMAT4_DUE_START, FORMAT4_DUE_END),
            (FORMAT4_ENDED_START, FORMAT4_ENDED_END),
            (ENDED_SLOTS_START, ENDED_SLOTS_END),
            (FORMAT4_RESERVATIONS_START, FORMAT4_RESERVATIONS_END),
            (FORMAT2_IDEMPOTENCY_START, FORMAT2_IDEMPOTENCY_END),
            (SKU_INDEX_START, SKU_INDEX_END),
            (KEY_CHUNKS_START, KEY_CHUNKS_END),
            (RECORDS_START, RECORDS_END),
            (DUE_BUCKETS_START, DUE_BUCKETS_END),
            (EXPIRY_START, EXPIRY_END),
            (EVENT_CHUNKS_START, EVENT_CHUNKS_END),
        ];
        ranges.sort();
        for pair in ranges.windows(2) {
            assert!(pair[0].0 < pair[0].1, "{pair:?}");
            assert!(pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        for meta in [
            HELD_COUNT,
            ENDED_NEXT,
            ENDED_FRONT,
            SKU_INDEX_BUILT,
            APPLIED,
            FEED_POSITION,
        ] {
            assert!(ranges
                .iter()
                .all(|(start, end)| meta < *start || meta >= *end));
            assert!(STATE_START <= meta && meta < STATE_END);
        }
    }
}
