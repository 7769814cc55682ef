//! Upgrading the idempotency entries of an older state machine to the log (format 4).
//!
//! Format 2 kept each idempotency entry under `Si` + identity, with an empty key beside it in
//! the expiry index (`Sx` + expiry + identity). Format 3 keeps the entry under its `Sx` key
//! alone, so that entries are stored in the order they expire. Format 4 (this one) packs them
//! into the chunks of the log (see the module docs of `idempotency_log`).
//!
//! [`upgrade_key_layout`] runs when a node starts, before Raft:
//! 1. format-2 entries move to their expiry keys, a page at a time, each move one atomic batch
//!    (the entry written over its empty expiry key, its `Si` key deleted): a crash leaves every
//!    key either moved or not, and the next start moves the rest;
//! 2. [`pack_format3_entries`] numbers the format-3 entries in their order (oldest expiry
//!    first: the order format 3 forgot them in) after any already packed, a page at a time,
//!    each page one atomic batch (its chunks, the next entry number, its `Sx` keys deleted): a
//!    crash leaves whole pages packed and the next start packs the rest.
//!
//! The same format-3 state always packs into the same bytes; but nodes upgrade where each
//! happens to stop, so replicas may pack at different log indices and number their entries
//! differently from then on. Their answers stay the same: format 4 forgets in the order format
//! 3 did (the `apply_call` module says how). A snapshot of format 3 or 2 (a file of a node not
//! yet upgraded, or one kept from before) is moved the same way as it is installed: each pair
//! through [`format3_pair`] on the way in, then [`pack_format3_entries`] before the install
//! counts as done (`raft::snapshot`).

use super::chunks::{ChunkCache, ChunkLayout, StoredEntry};
use crate::inventory::IdempotencyEntry;
use crate::storage::{self, decode, encode, keys, Disk, KeyValue, StorageError, WriteBatch};

/// Entries moved or packed per atomic batch.
const ENTRIES_PER_WRITE: usize = 1024;

/// Moves format-2 idempotency entries to their format-3 keys, packs format-3 ones into the
/// log (chunks of `entries_per_chunk`, see the module docs) and flushes. Returns how many
/// entries moved or were packed. Call before the state machine opens; blocking.
pub async fn upgrade_key_layout(
    disk: &dyn Disk,
    entries_per_chunk: u64,
) -> Result<usize, StorageError> {
    let moved = move_format2_entries(disk)?;
    let packed = pack_format3_entries(disk, ChunkLayout::new(entries_per_chunk))?;
    if moved + packed > 0 {
        disk.flush().await?;
        tracing::warn!(
            moved,
            packed,
            "upgraded the state machine to format 4: idempotency entries packed into the \
             idempotency log"
        );
    }
    Ok(moved + packed)
}

/// Step 1 (see the module docs). Returns how many entries moved. Does not flush.
fn move_format2_entries(disk: &dyn Disk) -> Result<usize, StorageError> {
    let (start, end) = (
        keys::FORMAT2_IDEMPOTENCY_START,
        keys::FORMAT2_IDEMPOTENCY_END,
    );
    storage::drain_range(disk, start, end, ENTRIES_PER_WRITE, |page| {
        let mut batch = WriteBatch::default();
        for (key, value) in page {
            batch.delete(key.clone());
            if let Some((new_key, value)) = format3_pair(key, value)? {
                batch.put(new_key, value);
            }
        }
        Ok(batch)
    })
}

/// Packs format-3 idempotency entries (`Sx` keys) into the log, after the entries already
/// there, in chunks laid out as `layout` says (see the module docs). Returns how many it packed.
/// Does not flush.
pub fn pack_format3_entries(disk: &dyn Disk, layout: ChunkLayout) -> Result<usize, StorageError> {
    let (start, end) = (keys::EXPIRY_START, keys::EXPIRY_END);
    storage::drain_range(disk, start, end, ENTRIES_PER_WRITE, |page| {
        pack_page(disk, layout, page)
    })
}

/// The batch that packs one page of format-3 entries after the entries already packed.
fn pack_page(
    disk: &dyn Disk,
    layout: ChunkLayout,
    page: Vec<KeyValue>,
) -> Result<WriteBatch, StorageError> {
    let mut next: u64 = storage::read(disk, keys::KEY_NEXT)?.unwrap_or(0);
    let mut chunks = ChunkCache::new(disk, layout);
    let mut batch = WriteBatch::default();
    for (key, value) in page {
        let (_, identity) = split_expiry(&key)
            .ok_or_else(|| StorageError::Invariant(format!("malformed expiry key {key:?}")))?;
        let stored = StoredEntry {
            identity: identity.to_vec(),
            entry: decode(&key, &value)?,
        };
        chunks.append(next, stored)?;
        next += 1;
        batch.delete(key);
    }
    chunks.write_into(&mut batch);
    batch.put(keys::KEY_NEXT.to_vec(), encode(&next));
    if disk.get(keys::KEY_FRONT)?.is_none() {
        batch.put(keys::KEY_FRONT.to_vec(), encode(&0u64));
    }
    Ok(batch)
}

/// A pair of a format-2 or format-3 state as format 3 has it: a format-2 entry moves to its
/// expiry key, format 2's empty expiry keys go (the entry takes their place), anything else is
/// kept as it is.
pub fn format3_pair(key: Vec<u8>, value: Vec<u8>) -> Result<Option<KeyValue>, StorageError> {
    if let Some(identity) = key.strip_prefix(keys::FORMAT2_IDEMPOTENCY_START) {
        let entry: IdempotencyEntry = decode(&key, &value)?;
        return Ok(Some((
            expiry_of_identity(entry.expires_at_ms, identity),
            value,
        )));
    }
    if key.starts_with(keys::EXPIRY_START) && value.is_empty() {
        return Ok(None);
    }
    Ok(Some((key, value)))
}

/// Where format 3 kept the entry of the identity with these bytes
/// ([`identity_bytes`](super::identity_bytes)), expiring at `expires_at_ms`: `Sx`, the expiry
/// (u64 big-endian, so that the keys sort by expiry), the identity.
pub fn expiry_of_identity(expires_at_ms: u64, identity: &[u8]) -> Vec<u8> {
    [keys::EXPIRY_START, &expires_at_ms.to_be_bytes(), identity].concat()
}

/// Splits a format-3 key into (expiry ms, identity bytes) without decoding the identity.
pub fn split_expiry(key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = key.strip_prefix(keys::EXPIRY_START)?;
    let (time, identity) = rest.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*time), identity))
}
