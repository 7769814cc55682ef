//! The key layout of a node's disk. One ordered key space, split by a one-byte prefix:
//!
//! | prefix | key                                   | value (bincode)                      |
//! |--------|---------------------------------------|--------------------------------------|
//! | `L`    | `L` + log index (u64 big-endian)      | format 1 only: openraft `Entry`       |
//! | `M`    | `Mv` vote, `Mc` committed, `Mp` purged | format 1 only (now in `wal/`)        |
//! | `S`    | `Sr` + storeId + `0x00` + sku         | `Record`                             |
//! | `S`    | `Sq` + chunk number (u64 BE)          | [`KeyChunk`]: idempotency entries, oldest first |
//! | `S`    | `Sx` + expiry ms (u64 BE) + identity  | format 3 only: `IdempotencyEntry`    |
//! | `S`    | `Si` + idempotency identity           | format 2 only: `IdempotencyEntry`    |
//! | `S`    | `Sma` applied, `Smm` membership, `Smc` clock, `Smk` key count, `Smn` next key, `Smf` first key | `LogId`, `StoredMembership`, `u64` (the rest) |
//! | `Z`    | `Z` current snapshot                  | `StoredSnapshot`                     |
//!
//! Format 1 kept the Raft log here too (`L`, `M`); `storage::migrate` moves it to the WAL.
//! Format 2 kept each idempotency entry under `Si` + identity and an empty `Sx` key beside it
//! (the expiry index); format 3 keeps the entry under its `Sx` key alone, so that keys are
//! stored in the order they expire (`raft::key_index` says why) and `storage::migrate` moves
//! format-2 entries there. Format 4 (this one) keeps them in the *idempotency log*: entry number
//! `n` (`Smn` counts them, in the order they were stored) is slot `n % per_chunk` of chunk
//! `n / per_chunk` (`Sq` + chunk number), and the entries below `Smf` are forgotten; a chunk is
//! deleted once every entry of it is. One sled value per 32 entries instead of one per entry:
//! storing a key rewrites the newest chunk in memory (`storage::WriteBehind` hands sled one
//! version per checkpoint) and forgetting one moves `Smf`, where format 3 inserted one sled key
//! and deleted another for every keyed write at the key cap (`raft::key_index` says why that
//! mattered). `storage::migrate` packs format-3 entries into chunks. Everything
//! under `S` is the state machine: a snapshot is exactly the `S` range, so a node that
//! installs a snapshot ends byte-identical to the one that built it (a format-2 or format-3
//! snapshot is moved to format 4 as it is installed). Big-endian integers make byte order equal
//! numeric order, so the chunks sort by number.
//!
//! An idempotency *identity* names a key within its client scope ([`IdempotencyId`]):
//! - anonymous scope: the key's bytes, exactly as before scopes existed (so data directories
//!   written then read the same), and a key is printable ASCII, never `0x00` first
//!   (`IdempotencyKey::check`);
//! - any other scope: `0x00`, the scope's length (u32 big-endian), the scope, then the key.
//!
//! The leading zero keeps the two forms apart, and the length prefix keeps scope and key apart
//! (scope `a` + key `b:c` is not scope `a:b` + key `c`): distinct identities, distinct bytes.

use serde::{Deserialize, Serialize};

use crate::inventory::{IdempotencyEntry, IdempotencyId, RecordKey};

/// One chunk of the idempotency log (format 4): its entries in the order they were stored, slot
/// `i` holding entry number `chunk * per_chunk + i`; `None` where an entry was replaced by a
/// newer one of the same identity (a key reused after it expired). Entries below the log's
/// front stay in their chunk until the whole chunk is forgotten: nobody reads them.
pub type KeyChunk = Vec<Option<StoredKey>>;

/// An idempotency entry in a [`KeyChunk`], with the identity it belongs to ([`identity_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub identity: Vec<u8>,
    pub entry: IdempotencyEntry,
}

/// Where chunk `number` of the idempotency log is stored.
pub fn key_chunk(number: u64) -> Vec<u8> {
    [KEY_CHUNKS_START, &number.to_be_bytes()].concat()
}

/// The number of the chunk stored under `key`, if it is a chunk key.
pub fn key_chunk_number(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(KEY_CHUNKS_START)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

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

/// Marks a scoped identity (see the module docs).
const SCOPED: u8 = 0;

/// The bytes of an idempotency identity (see the module docs).
fn identity(id: &IdempotencyId, bytes: &mut Vec<u8>) {
    if !id.scope.is_empty() {
        let scope_length =
            u32::try_from(id.scope.len()).expect("a scope is far shorter than 4 GiB");
        bytes.push(SCOPED);
        bytes.extend_from_slice(&scope_length.to_be_bytes());
        bytes.extend_from_slice(id.scope.as_bytes());
    }
    bytes.extend_from_slice(id.key.as_bytes());
}

/// Reads back what [`identity`] wrote.
pub fn parse_identity(bytes: &[u8]) -> Option<IdempotencyId> {
    let (scope, key) = match bytes.split_first() {
        Some((&SCOPED, rest)) => {
            let (length, rest) = rest.split_first_chunk::<4>()?;
            let length = usize::try_from(u32::from_be_bytes(*length)).ok()?;
            if rest.len() < length {
                return None;
            }
            rest.split_at(length)
        }
        _ => (&[][..], bytes),
    };
    Some(IdempotencyId {
        scope: String::from_utf8(scope.to_vec()).ok()?,
        key: String::from_utf8(key.to_vec()).ok()?,
    })
}

/// The bytes an identity has in storage keys (see the module docs).
pub fn identity_bytes(id: &IdempotencyId) -> Vec<u8> {
    let mut bytes = Vec::new();
    identity(id, &mut bytes);
    bytes
}

/// Where format 2 kept an idempotency entry (tests only; the upgrade strips the prefix).
pub fn format2_idempotency(id: &IdempotencyId) -> Vec<u8> {
    let mut bytes = FORMAT2_IDEMPOTENCY_START.to_vec();
    identity(id, &mut bytes);
    bytes
}

/// Where the idempotency entry of `id` expiring at `expires_at_ms` is stored.
pub fn expiry(expires_at_ms: u64, id: &IdempotencyId) -> Vec<u8> {
    let mut bytes = EXPIRY_START.to_vec();
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    identity(id, &mut bytes);
    bytes
}

/// [`expiry`] from an identity's bytes ([`identity_bytes`]).
pub fn expiry_of_identity(expires_at_ms: u64, identity: &[u8]) -> Vec<u8> {
    [EXPIRY_START, &expires_at_ms.to_be_bytes(), identity].concat()
}

/// Splits an expiry key into (expiry ms, identity bytes) without decoding the identity.
pub fn split_expiry(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let rest = bytes.strip_prefix(EXPIRY_START)?;
    let (time, identity) = rest.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*time), identity))
}

/// The expiry-index keys of every key expiring before `expires_at_ms` sort below this.
#[cfg(test)]
fn expiry_before(expires_at_ms: u64) -> Vec<u8> {
    let mut bytes = EXPIRY_START.to_vec();
    bytes.extend_from_slice(&expires_at_ms.to_be_bytes());
    bytes
}

/// Splits an expiry-index key into (expiry ms, idempotency identity).
pub fn parse_expiry(bytes: &[u8]) -> Option<(u64, IdempotencyId)> {
    let (time, id) = split_expiry(bytes)?;
    Some((time, parse_identity(id)?))
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

    fn id(scope: &str, key: &str) -> IdempotencyId {
        IdempotencyId {
            scope: scope.into(),
            key: key.into(),
        }
    }

    #[test]
    fn expiry_keys_sort_by_time_and_round_trip() {
        assert!(expiry(9, &id("", "z")) < expiry(10, &id("", "a")));
        assert!(expiry(9, &id("zzz", "z")) < expiry(10, &id("", "a")));
        assert!(expiry(9, &id("zzz", "z")) < expiry_before(10));
        assert!(expiry_before(10) <= expiry(10, &id("", "a")));
        for identity in [id("", "key"), id("client:a", "key"), id("token:t", " ")] {
            assert_eq!(
                parse_expiry(&expiry(10, &identity)),
                Some((10, identity.clone()))
            );
        }
        assert!(expiry(u64::MAX, &id("s", "k")).as_slice() < STATE_END);
    }

    #[test]
    fn an_anonymous_key_is_stored_under_the_bytes_it_had_before_scopes() {
        assert_eq!(
            format2_idempotency(&id("", "order-42")),
            b"Siorder-42".to_vec()
        );
        let mut old_expiry = b"Sx".to_vec();
        old_expiry.extend_from_slice(&7u64.to_be_bytes());
        old_expiry.extend_from_slice(b"order-42");
        assert_eq!(expiry(7, &id("", "order-42")), old_expiry);
        assert_eq!(parse_expiry(&old_expiry), Some((7, id("", "order-42"))));
    }

    #[test]
    fn distinct_scope_and_key_pairs_never_share_a_storage_key() {
        let pairs = [
            id("a", "b:c"),
            id("a:b", "c"),
            id("", "a:b:c"),
            id("", "ab"),
            id("a", "b"),
            id("ab", ""),
            id("client:x", "k"),
            id("token:x", "k"),
            id("", "k"),
        ];
        for (i, first) in pairs.iter().enumerate() {
            for second in &pairs[i + 1..] {
                assert_ne!(
                    identity_bytes(first),
                    identity_bytes(second),
                    "{first:?} {second:?}"
                );
                assert_ne!(expiry(1, first), expiry(1, second), "{first:?} {second:?}");
            }
            assert_eq!(parse_expiry(&expiry(1, first)), Some((1, first.clone())));
            assert_eq!(
                expiry_of_identity(1, &identity_bytes(first)),
                expiry(1, first)
            );
            assert_eq!(
                split_expiry(&expiry(1, first)),
                Some((1, &identity_bytes(first)[..]))
            );
        }
    }

    #[test]
    fn chunk_keys_sort_by_number_round_trip_and_stay_apart_from_records() {
        assert!(key_chunk(255) < key_chunk(256));
        assert_eq!(key_chunk_number(&key_chunk(42)), Some(42));
        assert_eq!(
            key_chunk_number(&record(&RecordKey::new("s", "k").unwrap())),
            None
        );
        assert!(key_chunk(u64::MAX).as_slice() < KEY_CHUNKS_END);
        assert!(
            KEY_CHUNKS_END <= RECORDS_START,
            "no record key is read as a chunk"
        );
        assert!(key_chunk(0).as_slice() >= KEY_CHUNKS_START);
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
