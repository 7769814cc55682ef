//! The key layout of a node's disk. One ordered key space, split by a one-byte prefix:
//!
//! | prefix | key                                   | value (bincode)                      |
//! |--------|---------------------------------------|--------------------------------------|
//! | `L`    | `L` + log index (u64 big-endian)      | format 1 only: openraft `Entry`       |
//! | `M`    | `Mv` vote, `Mc` committed, `Mp` purged | format 1 only (now in `wal/`)        |
//! | `S`    | `Sr` + storeId + `0x00` + sku         | `Record`                             |
//! | `S`    | `Si` + idempotency key                | `IdempotencyEntry`                   |
//! | `S`    | `Sx` + expiry ms (u64 BE) + key       | empty (expiry index, oldest first)   |
//! | `S`    | `Sma` applied, `Smm` membership, `Smc` clock, `Smk` key count | `LogId`, `StoredMembership`, `u64`, `u64` |
//! | `Z`    | `Z` current snapshot                  | `StoredSnapshot`                     |
//!
//! Format 1 kept the Raft log here too (`L`, `M`); `storage::migrate` moves it to the WAL. Everything
//! under `S` is the state machine: a snapshot is exactly the `S` range, so a node that
//! installs a snapshot ends byte-identical to the one that built it. Big-endian integers make
//! byte order equal numeric order, so range scans walk the log and the expiry index in order.

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
pub const EXPIRY_START: &[u8] = b"Sx";
pub const EXPIRY_END: &[u8] = b"Sy";

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

pub fn idempotency(key: &str) -> Vec<u8> {
    let mut bytes = b"Si".to_vec();
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

pub fn expiry(expires_at_ms: u64, key: &str) -> Vec<u8> {
    let mut bytes = EXPIRY_START.to_vec();
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

/// Splits an expiry-index key into (expiry ms, idempotency key).
pub fn parse_expiry(bytes: &[u8]) -> Option<(u64, String)> {
    let rest = bytes.strip_prefix(EXPIRY_START)?;
    if rest.len() < 8 {
        return None;
    }
    let (time, key) = rest.split_at(8);
    let time = u64::from_be_bytes(time.try_into().ok()?);
    Some((time, String::from_utf8(key.to_vec()).ok()?))
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
    fn expiry_keys_sort_by_time_and_round_trip() {
        assert!(expiry(9, "z") < expiry(10, "a"));
        assert_eq!(
            parse_expiry(&expiry(10, "key")),
            Some((10, "key".to_string()))
        );
        assert!(expiry(u64::MAX, "k").as_slice() < STATE_END);
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
