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
//! | `S`    | `Sma` applied, `Smm` membership, `Smc` clock, `Smk` key count, `Smn` next key, `Smf` first key | `LogId`, `StoredMembership`, `u64` (the rest) |
//! | `Z`    | `Z` current snapshot                  | `StoredSnapshot`                     |
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
    }
}
