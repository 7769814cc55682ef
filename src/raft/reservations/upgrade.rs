//! Upgrading a format-4 reservation state to format 5 (packed).
//!
//! Format 4 kept one sled key per reservation (`Sh` + id -> `Reservation`), one empty key per
//! held reservation in the due index (`Sd` + deadline + id) and one per ended reservation in
//! the retention queue (`Se` + number -> id). Format 5 packs them (the module docs of
//! `reservations` say why and how); the counters (`Smh`, `Sme`, `Smo`) are the same in both.
//!
//! [`pack_format4_reservations`] runs when a node opens (`node::start`, through
//! [`upgrade_layout`], before Raft) and at the end of every snapshot install (a snapshot of a
//! node not yet upgraded is loaded as it is, then packed before the install counts as done):
//! 1. the retention queue, a page of `Se` keys at a time, each page one atomic batch (its slots,
//!    its `Se` keys deleted); an entry's end time is read from its reservation, still under its
//!    `Sh` key then;
//! 2. the reservations, a page of `Sh` keys at a time, each page one atomic batch (its chunks,
//!    the due buckets of the held ones, its `Sh` keys deleted);
//! 3. the `Sd` keys, which say nothing a held reservation does not, deleted a page at a time.
//!
//! A crash leaves whole pages packed and the next start packs the rest (a page adds to the
//! chunks, buckets and slots the pages before it wrote). Packing is a function of the state:
//! a format-4 state packs into exactly the bytes a format-5 replica holds after applying the
//! same entries, so replicas that upgrade at different log indices stay byte-identical.

use super::layout::Ended;
use super::packed::PackedState;
use crate::inventory::{Reservation, ReservationId, ReservationStatus};
use crate::storage::{self, decode, keys, Disk, KeyValue, StorageError, WriteBatch};

/// Format-4 keys packed (or deleted) per atomic batch.
const KEYS_PER_WRITE: usize = 1024;

/// Packs a format-4 reservation state into format 5 (see the module docs) and flushes. Returns
/// how many format-4 keys it packed or deleted (0 when there were none). Call before the state
/// machine opens; blocking.
pub async fn upgrade_layout(disk: &dyn Disk) -> Result<usize, StorageError> {
    let packed = pack_format4_reservations(disk)?;
    if packed > 0 {
        disk.flush().await?;
        tracing::warn!(
            packed,
            "upgraded the state machine to format 5: reservations packed into chunks, due \
             buckets and retention slots"
        );
    }
    Ok(packed)
}

/// Steps 1 to 3 of the module docs. Returns how many format-4 keys went. Does not flush.
pub fn pack_format4_reservations(disk: &dyn Disk) -> Result<usize, StorageError> {
    let (start, end) = (keys::FORMAT4_ENDED_START, keys::FORMAT4_ENDED_END);
    let ended = storage::drain_range(disk, start, end, KEYS_PER_WRITE, |page| {
        pack_ended_page(disk, page)
    })?;
    let (start, end) = (
        keys::FORMAT4_RESERVATIONS_START,
        keys::FORMAT4_RESERVATIONS_END,
    );
    let reservations = storage::drain_range(disk, start, end, KEYS_PER_WRITE, |page| {
        pack_reservation_page(disk, page)
    })?;
    let (start, end) = (keys::FORMAT4_DUE_START, keys::FORMAT4_DUE_END);
    let due = storage::drain_range(disk, start, end, KEYS_PER_WRITE, |page| {
        let mut batch = WriteBatch::default();
        for (key, _) in page {
            batch.delete(key);
        }
        Ok(batch)
    })?;
    Ok(ended + reservations + due)
}

/// The batch that packs one page of format 4's retention queue into slots.
fn pack_ended_page(disk: &dyn Disk, page: Vec<KeyValue>) -> Result<WriteBatch, StorageError> {
    let front: u64 = storage::read(disk, keys::ENDED_FRONT)?.unwrap_or(0);
    let mut packed = PackedState::new(disk);
    let mut batch = WriteBatch::default();
    for (key, value) in page {
        let number = number_in(keys::FORMAT4_ENDED_START, &key)?;
        let id: ReservationId = decode(&key, &value)?;
        let reservation: Reservation = storage::read(disk, &format4_reservation_key(id))?
            .ok_or_else(|| {
                StorageError::Invariant(format!(
                    "reservation {id} is in the retention queue ({number}) but not stored"
                ))
            })?;
        if reservation.status == ReservationStatus::Held {
            return Err(StorageError::Invariant(format!(
                "reservation {id} is in the retention queue but held"
            )));
        }
        let ended = Ended {
            id,
            ended_at_ms: reservation.updated_at_ms,
        };
        packed.push_ended(front, number, ended)?;
        batch.delete(key);
    }
    packed.write_into(&mut batch);
    Ok(batch)
}

/// The batch that packs one page of format 4's reservations into chunks and due buckets.
fn pack_reservation_page(disk: &dyn Disk, page: Vec<KeyValue>) -> Result<WriteBatch, StorageError> {
    let mut packed = PackedState::new(disk);
    let mut batch = WriteBatch::default();
    for (key, value) in page {
        let id = ReservationId::from_u64(number_in(keys::FORMAT4_RESERVATIONS_START, &key)?);
        let reservation: Reservation = decode(&key, &value)?;
        if reservation.id != id {
            return Err(StorageError::Invariant(format!(
                "reservation {} is stored under the key of {id}",
                reservation.id
            )));
        }
        packed.insert(&reservation)?;
        if reservation.status == ReservationStatus::Held {
            packed.enter_due_index(&reservation)?;
        }
        batch.delete(key);
    }
    packed.write_into(&mut batch);
    Ok(batch)
}

/// The number after `prefix` in a format-4 key (an id or a queue number, u64 big-endian).
fn number_in(prefix: &[u8], key: &[u8]) -> Result<u64, StorageError> {
    key.strip_prefix(prefix)
        .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StorageError::Invariant(format!("a malformed format-4 key {key:?}")))
}

/// Where format 4 kept reservation `id`.
pub fn format4_reservation_key(id: ReservationId) -> Vec<u8> {
    [keys::FORMAT4_RESERVATIONS_START, &id.as_u64().to_be_bytes()].concat()
}

/// Format 4's due-index key of a reservation held until `expires_at_ms`.
pub fn format4_due_key(expires_at_ms: u64, id: ReservationId) -> Vec<u8> {
    [
        keys::FORMAT4_DUE_START,
        &expires_at_ms.to_be_bytes(),
        &id.as_u64().to_be_bytes(),
    ]
    .concat()
}

/// Format 4's key of entry `number` of the retention queue.
pub fn format4_ended_key(number: u64) -> Vec<u8> {
    [keys::FORMAT4_ENDED_START, &number.to_be_bytes()].concat()
}
