//! The idempotency log: the state machine's memory of idempotency keys, one entry per
//! identity, kept in the order the entries were stored and forgotten from the oldest.
//!
//! ## What it holds
//! An entry remembers one request made under an idempotency identity (a key within its client
//! scope, [`identity_bytes`]): the request's fingerprint, its first response, and when it
//! expires. Entries are numbered in the order they are stored; entry `n` is a slot of a chunk
//! ([`ChunkLayout`]: chunk `n / KEYS_PER_CHUNK`, slot `n % KEYS_PER_CHUNK`), and each chunk is
//! one stored value ([`chunk_key`]: `Sq` + chunk number). Three numbers describe the log, stored
//! beside it in the state machine (so they are in every snapshot):
//! - *next* (`Smn`): the number the next stored entry gets;
//! - *front* (`Smf`, "first"): the first entry not forgotten. Every entry below it is
//!   forgotten; a chunk is deleted once the front is past all of its entries;
//! - *stored* (`Smk`): how many entries from the front up to next are stored, for the cap. A
//!   slot can be empty: its entry was replaced by a newer one of the same identity (a key
//!   reused after it expired), or forgotten out of stored order (see `apply_call`).
//!
//! ## Why a log of chunks
//! Storing and forgetting an entry costs the disk nothing per entry: the newest chunk is
//! rewritten once per apply call, and a whole chunk is deleted at once. Format 3 kept each entry under its own sled key, in expiry order: at the
//! key cap (a million keys) every keyed write inserted one sled key and deleted another (~6 µs
//! of sled each, on every node) and read the next keys to evict back from sled; throughput at
//! the cap fell to ~70% of a fresh cluster's (docs/performance.md, "Aging"). Before that
//! (format 2) each entry also had a sled key at a place as random as its identity.
//! [`upgrade_key_layout`] moves both to this format (the `upgrade` module says how).
//!
//! ## Finding and forgetting
//! An entry is found by identity through the [`KeyIndex`], an in-memory map to its number
//! (not state, a cache of it; the `index` module). Expired entries are purged a few per log
//! entry ([`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`]), never per apply call, so that batch
//! boundaries, which differ between nodes, never change the result; past
//! [`IDEMPOTENCY_KEYS_MAX`] stored entries the oldest are evicted. With one time to live for
//! the cluster (the `api.idempotency_ttl_ms` setting) stored order is also the order they
//! expire; an entry stored with a shorter one than an older entry is purged after it, but is
//! expired for every request from its expiry on (`inventory::apply` checks), so only its bytes
//! wait. Which entry is the oldest among those stored in the same millisecond is said in the
//! `apply_call` module.
//!
//! ## One apply call
//! An [`IdempotencyLog`] is the log as one apply call of the state machine sees and changes it:
//! [`IdempotencyLog::begin`] reads the three numbers; chunks are read the first time the call
//! needs them and held decoded; [`IdempotencyLog::finish`] adds the call's writes to the call's
//! write batch (the stored count, each changed chunk once, next and front) and hands back the
//! key index. The log reads the disk directly, not the call's other pending writes: no other
//! part of the state machine writes the log's keys, and its own pending writes are the chunks
//! it holds.
//!
//! ## Invariants
//! Asserted in release builds when each call ends: front <= next; the stored count is at most
//! next - front, and equals the number of entries the key index holds (counted as it changes,
//! so the check is free); a chunk is deleted only when the front is past all its entries. A
//! broken one stops the node before its batch is written. A storage or decode failure is a
//! [`StorageError`], which the state machine returns to openraft (which stops the node too).

mod apply_call;
mod chunks;
mod identity;
mod index;
mod upgrade;

#[cfg(test)]
mod tests;

pub use apply_call::IdempotencyLog;
pub use chunks::{chunk_key, chunk_number, Chunk, ChunkLayout, StoredEntry};
pub use identity::{identity_bytes, parse_identity};
pub use index::{KeyIndex, SharedKeyIndex};
pub use upgrade::{
    expiry_of_identity, format3_pair, pack_format3_entries, split_expiry, upgrade_key_layout,
};

/// How many expired idempotency keys one log entry deletes at most: bounds the work of a single
/// apply while still forgetting keys faster than they can be added (one per entry).
pub const EXPIRED_KEYS_PURGED_PER_ENTRY_MAX: usize = 4;

/// Most idempotency keys the state machine keeps. Past it, the oldest keys (first stored) are
/// evicted before they expire, so that a shop keying every write cannot grow the state without
/// bound (24 h of keys at a few hundred writes/s would be tens of millions). A constant of the
/// replicated state machine, like the purge rate: every node must evict the same keys at the
/// same entry, so it is not a per-node setting.
pub const IDEMPOTENCY_KEYS_MAX: u64 = 1_000_000;

/// Idempotency entries per chunk (see the module docs). A constant of the replicated state
/// machine, like the cap: every replica must lay the log out the same way to hold the same
/// bytes. 32 entries of ~130 bytes make a ~4 KB value, well under what sled stores apart as a
/// blob.
pub const KEYS_PER_CHUNK: u64 = 32;

/// A chunk whose every entry is the largest stored answer of a keyed batch
/// (`inventory::BATCH_STORED_LINE_BYTES_MAX` a line), with 64 KiB for the identities and
/// fingerprints, still decodes: the node would stop on an unreadable chunk.
const _: () = assert!(
    KEYS_PER_CHUNK as usize
        * (crate::inventory::BATCH_LINES_MAX * crate::inventory::BATCH_STORED_LINE_BYTES_MAX)
        + (64 << 10)
        <= crate::storage::DISK_DECODE_LIMIT_BYTES
);

/// The log's two constants, which every replica must share: the product uses
/// [`IDEMPOTENCY_KEYS_MAX`] and [`KEYS_PER_CHUNK`] (the default); tests use smaller ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    /// Most entries stored; past it the oldest are evicted.
    pub keys_max: u64,
    /// How entries are packed into chunks.
    pub layout: ChunkLayout,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            keys_max: IDEMPOTENCY_KEYS_MAX,
            layout: ChunkLayout::new(KEYS_PER_CHUNK),
        }
    }
}
