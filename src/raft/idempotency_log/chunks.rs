//! The chunks of the idempotency log: the stored entry and chunk types, the arithmetic from an
//! entry's number to its chunk and slot (written once, here), and the chunks one apply call
//! reads and changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::inventory::IdempotencyEntry;
use crate::storage::{self, encode, keys, Disk, StorageError, WriteBatch};

/// One chunk of the idempotency log: its entries in the order they were stored, slot `i`
/// holding entry number `chunk * entries_per_chunk + i`; `None` where an entry was replaced by
/// a newer one of the same identity (a key reused after it expired) or forgotten out of stored
/// order. Entries below the log's front stay in their chunk until the whole chunk is
/// forgotten: nobody reads them.
pub type Chunk = Vec<Option<StoredEntry>>;

/// An idempotency entry in a [`Chunk`], with the identity it belongs to
/// ([`identity_bytes`](super::identity_bytes)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub identity: Vec<u8>,
    pub entry: IdempotencyEntry,
}

/// Where chunk `number` of the idempotency log is stored (`Sq` + the number, big-endian, so
/// that the chunks sort by number).
pub fn chunk_key(number: u64) -> Vec<u8> {
    [keys::KEY_CHUNKS_START, &number.to_be_bytes()].concat()
}

/// The number of the chunk stored under `key`, if it is a chunk key.
pub fn chunk_number(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(keys::KEY_CHUNKS_START)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Where an entry is kept: its chunk's number and its slot in that chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub chunk: u64,
    pub slot: usize,
}

/// How entries are packed into chunks: a constant of the replicated state machine (every
/// replica must lay its log out the same way to hold the same bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLayout {
    entries_per_chunk: u64,
}

impl ChunkLayout {
    /// Chunks of `entries_per_chunk` entries (at least one).
    pub fn new(entries_per_chunk: u64) -> Self {
        Self {
            entries_per_chunk: entries_per_chunk.max(1),
        }
    }

    pub fn entries_per_chunk(self) -> u64 {
        self.entries_per_chunk
    }

    /// The chunk and slot of entry `number`.
    pub(super) fn place(self, number: u64) -> Place {
        Place {
            chunk: number / self.entries_per_chunk,
            slot: (number % self.entries_per_chunk) as usize,
        }
    }

    /// The number of the entry in `slot` of `chunk` (the inverse of [`Self::place`]).
    pub(super) fn number(self, chunk: u64, slot: usize) -> u64 {
        chunk * self.entries_per_chunk + slot as u64
    }

    /// The chunk a front at `front` has just left behind, if `front` is the first entry of a
    /// chunk: the one before it, every entry of which is now below the front.
    pub(super) fn chunk_left_behind(self, front: u64) -> Option<u64> {
        let place = self.place(front);
        (place.slot == 0 && place.chunk > 0).then(|| place.chunk - 1)
    }

    /// Whether every entry of `chunk` is below `front`.
    pub(super) fn is_behind(self, chunk: u64, front: u64) -> bool {
        chunk < self.place(front).chunk
    }
}

/// The chunks one apply call read or changed, decoded: each read from the disk the first time
/// the call needs it, and written back once when the call ends.
pub(super) struct ChunkCache<'d> {
    disk: &'d dyn Disk,
    layout: ChunkLayout,
    /// `None`: deleted by this call.
    chunks: BTreeMap<u64, Option<Chunk>>,
    /// The chunks this call changed or deleted.
    changed: BTreeSet<u64>,
}

impl<'d> ChunkCache<'d> {
    pub fn new(disk: &'d dyn Disk, layout: ChunkLayout) -> Self {
        Self {
            disk,
            layout,
            chunks: BTreeMap::new(),
            changed: BTreeSet::new(),
        }
    }

    pub fn layout(&self) -> ChunkLayout {
        self.layout
    }

    /// Chunk `number`, read from the disk the first time this call needs it (empty if it is
    /// not there yet: the next one to fill).
    fn chunk(&mut self, number: u64) -> Result<&mut Chunk, StorageError> {
        if !self.chunks.contains_key(&number) {
            let chunk = storage::read(self.disk, &chunk_key(number))?.unwrap_or_default();
            self.chunks.insert(number, Some(chunk));
        }
        match self.chunks.get_mut(&number) {
            Some(Some(chunk)) => Ok(chunk),
            _ => Err(StorageError::Invariant(format!(
                "chunk {number} of the idempotency log is needed after it was deleted"
            ))),
        }
    }

    /// The slot of entry `number`: `None` if its chunk does not reach it yet, `Some(None)` if
    /// it was emptied.
    pub fn slot(&mut self, number: u64) -> Result<Option<&Option<StoredEntry>>, StorageError> {
        let place = self.layout.place(number);
        Ok(self.chunk(place.chunk)?.get(place.slot))
    }

    /// Stores entry `number`, which must be the next slot of its chunk.
    pub fn append(&mut self, number: u64, stored: StoredEntry) -> Result<(), StorageError> {
        let place = self.layout.place(number);
        let chunk = self.chunk(place.chunk)?;
        if chunk.len() != place.slot {
            return Err(StorageError::Invariant(format!(
                "idempotency entry {number} goes to slot {} of chunk {}, which holds {} slots",
                place.slot,
                place.chunk,
                chunk.len()
            )));
        }
        chunk.push(Some(stored));
        self.changed.insert(place.chunk);
        Ok(())
    }

    /// Empties the slot of entry `number`, returning what it held.
    pub fn take(&mut self, number: u64) -> Result<StoredEntry, StorageError> {
        let place = self.layout.place(number);
        let stored = self
            .chunk(place.chunk)?
            .get_mut(place.slot)
            .and_then(Option::take)
            .ok_or_else(|| {
                StorageError::Invariant(format!("idempotency entry {number} is not stored"))
            })?;
        self.changed.insert(place.chunk);
        Ok(stored)
    }

    /// Deletes chunk `number` (every entry of it is forgotten).
    pub fn delete(&mut self, number: u64) {
        self.chunks.insert(number, None);
        self.changed.insert(number);
    }

    /// The chunks this call deleted.
    pub fn deleted(&self) -> impl Iterator<Item = u64> + '_ {
        self.changed
            .iter()
            .copied()
            .filter(|number| !matches!(self.chunks.get(number), Some(Some(_))))
    }

    /// Adds the call's chunk writes to `batch`: each changed chunk once, in number order.
    pub fn write_into(&self, batch: &mut WriteBatch) {
        for number in &self.changed {
            match self.chunks.get(number) {
                Some(Some(chunk)) => batch.put(chunk_key(*number), encode(chunk)),
                _ => batch.delete(chunk_key(*number)),
            }
        }
    }
}
