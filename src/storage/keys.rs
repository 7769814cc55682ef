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
//! | `S`    | `Sd` + expiry ms (u64 BE) + reservation id (u64 BE) | empty: the due index of held reservations |
//! | `S`    | `Se` + ended number (u64 BE)          | `ReservationId`: the retention queue of ended reservations |
//! | `S`    | `Sh` + reservation id (u64 BE)        | `Reservation` (any status, until forgotten) |
//! | `S`    | `Sk` + sku + `0x00` + storeId         | empty: the SKU index of records      |
//! | `S`    | `Sma` applied, `Smm` membership, `Smc` clock, `Smk` key count, `Smn` next key, `Smf` first key | `LogId`, `StoredMembership`, `u64` (the rest) |
//! | `S`    | `Smh` held count, `Sme` next ended number, `Smo` oldest ended number kept, `Sms` SKU index built | `u64`; `Sms`: `true` |
//! | `Z`    | `Z` current snapshot                  | `StoredSnapshot`                     |
//!
//! The reservation keys (`Sd`, `Se`, `Sh`, `Sk`, `Smh`, `Sme`, `Smo`, `Sms`) belong to
//! `raft::reservations`, whose module docs say what each holds and who reads it.
//!
//! Format 1 kept the Raft log here too (`L`, `M`); `raft::log_upgrade` moves it to the WAL.
//! The idempotency entries (`Sq`, `Smk`, `Smn`, `Smf`, and the older `Sx` and `Si`) belong to
//! the idempotency log, `raft::idempotency_log`: its module docs say what each holds, how the
//! chunks are laid out, and how formats 2 and 3 are upgraded to format 4 (this one). Everything
//! under `S` is the state machine: a snapshot is exactly the `S` range, so a node that
//! installs a snapshot ends byte-identical to the one that built it (a format-2 or format-3
//! snapshot is moved to format 4 as it is installed). Big-endian integers make byte order equal
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
/// Reservations by id (see `raft::reservations`).
pub const RESERVATIONS_START: &[u8] = b"Sh";
pub const RESERVATIONS_END: &[u8] = b"Si";
/// The due index of held reservations: expiry, then id (see `raft::reservations`).
pub const DUE_START: &[u8] = b"Sd";
pub const DUE_END: &[u8] = b"Se";
/// The retention queue of ended reservations, in the order they ended.
pub const ENDED_START: &[u8] = b"Se";
pub const ENDED_END: &[u8] = b"Sf";
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

/// A reservation by id.
pub fn reservation(id: u64) -> Vec<u8> {
    let mut bytes = RESERVATIONS_START.to_vec();
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes
}

/// A held reservation in the due index: due at `expires_at_ms`.
pub fn due(expires_at_ms: u64, id: u64) -> Vec<u8> {
    let mut bytes = DUE_START.to_vec();
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes
}

/// The reservation id of a due-index key.
pub fn due_id(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(DUE_START)?;
    let bytes: [u8; 8] = rest.get(8..)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Entry `number` of the retention queue of ended reservations.
pub fn ended(number: u64) -> Vec<u8> {
    let mut bytes = ENDED_START.to_vec();
    bytes.extend_from_slice(&number.to_be_bytes());
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
    fn reservation_keys_stay_in_their_ranges_and_sort_by_number() {
        assert!(reservation(1) < reservation(256));
        assert!(reservation(u64::MAX).as_slice() < RESERVATIONS_END);
        assert!(due(5, u64::MAX) < due(6, 0));
        assert!(due(u64::MAX, u64::MAX).as_slice() < DUE_END);
        assert_eq!(due_id(&due(7, 42)), Some(42));
        assert!(ended(u64::MAX).as_slice() < ENDED_END);
        let index = sku_index(&RecordKey::new("s1", "x").unwrap());
        assert!(index.starts_with(&sku_index_prefix("x")));
        assert!(!index.starts_with(&sku_index_prefix("x1")));
        assert!(index.as_slice() < SKU_INDEX_END);
        assert_eq!(prefix_end(b"Sk"), b"Sl");
    }
}
