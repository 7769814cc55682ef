//! The event feed on disk: every event `apply` derives, numbered and kept in chunks, forgotten
//! from the oldest by a deterministic retention, read a page at a time.
//!
//! ## Layout
//! - `Sv` + chunk number (u64 BE): up to [`EVENTS_PER_CHUNK`] events, oldest first; chunk `n`
//!   holds seqs `n * 64 + 1 ..= n * 64 + 64`, so a seq names its chunk and a read at a cursor is
//!   one seek.
//! - `Smv`: the [`FeedPosition`]: the last seq numbered and the oldest seq kept.
//!
//! Both are in the state range, so a snapshot carries the kept events and the position, and a
//! node restored from one serves exactly what the node that built it kept.
//!
//! ## Why chunks
//! An event is ~100 bytes; one sled key per event would cost a sled insert per event on every
//! node (as reservations did before format 5). An apply call holds the chunks it appends to
//! decoded and writes each changed one once; the write-behind layer merges the rewrites of the
//! open chunk between checkpoints.
//!
//! ## Numbering
//! `seq` is assigned here, in apply order, 1, 2, 3, ...: a function of the log alone, so every
//! replica numbers alike. A store that has applied nothing starts the feed at seq 1 with its
//! first entry. A store that applied entries before the feed existed (an older version) has no
//! position: numbering from wherever each replica happened to be when it was upgraded would
//! give one change different seqs on different nodes. It records nothing, and its readers are
//! told the feed is not started ([`EventsError::NotStarted`]), until it applies a
//! `Command::StartFeed`: a leader that finds its own store without a feed proposes one
//! (`app::expiry`'s loop), and the feed starts at that entry on every replica alike.
//!
//! One case needs care: a node that joins such a cluster with an empty store and replays the
//! log from its first entry started its feed at that first entry, while the others start at
//! the `StartFeed`. So a `StartFeed` applied on a feed that started with the store's first
//! entry (`started_at == 0`) starts it again: the events numbered so far are dropped (their
//! chunks deleted, at most `kept_max / 64` of them, once) and numbering restarts at 1, as on
//! the other replicas. A cluster that never lacked a feed never proposes a `StartFeed`; a
//! second `StartFeed` (two leaders' proposals) finds `started_at` set and changes nothing.
//!
//! ## Retention
//! Per applied command entry, before its events are appended (so the decision depends on the
//! state and the entry only, never on how entries were batched), at most
//! [`CHUNKS_FORGOTTEN_PER_ENTRY_MAX`] whole chunks are forgotten from the front, each only if it
//! is not the chunk being filled and either more than `kept_max` events are kept, or its newest
//! event is older than `retention_ms` of log time. Bounded work per entry, no scan on the write
//! path: the front chunk is read once per apply call. Kept: at most `kept_max` plus what the
//! per-entry bound lets lag (a burst of carts of 100 lines adds two chunks an entry, four are
//! forgotten), at least `kept_max - 63` once that many were written; events younger than
//! `retention_ms` are kept unless the count forces them out.
//!
//! The settings decide replicated state: every node of a cluster must run with the same ones
//! (`[events]` of cluster.toml, a file the nodes share).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::inventory::{Event, EventFilter};
use crate::storage::{self, encode, keys, Disk, Order, StorageError, WriteBatch};

#[cfg(test)]
mod tests;

/// Events per chunk.
pub const EVENTS_PER_CHUNK: u64 = 64;
/// Default of `[events] kept_max`: events kept at most.
pub const EVENTS_KEPT_MAX: u64 = 1_000_000;
/// Default of `[events] retention_s`, in ms: events older than this (log time) are forgotten.
pub const EVENTS_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1_000;
/// Whole chunks forgotten per entry at most.
pub const CHUNKS_FORGOTTEN_PER_ENTRY_MAX: u64 = 4;
/// Events one page read examines at most (a filtered read that matches little returns fewer
/// than asked, with a cursor to go on from).
pub const EVENTS_SCAN_MAX: u64 = 10_000;

/// How many events are kept, and for how long. Every replica must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedRetention {
    /// At least [`EVENTS_PER_CHUNK`].
    pub kept_max: u64,
    pub retention_ms: u64,
}

impl Default for FeedRetention {
    fn default() -> Self {
        Self {
            kept_max: EVENTS_KEPT_MAX,
            retention_ms: EVENTS_RETENTION_MS,
        }
    }
}

/// Where the feed is: stored under `Smv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPosition {
    /// The seq of the newest event; 0 before the first.
    pub last_seq: u64,
    /// The seq of the oldest event kept; `last_seq + 1` when none is kept.
    pub oldest_seq: u64,
    /// The log index of the `StartFeed` entry the feed started at; 0: it started with the
    /// store's first entry.
    pub started_at: u64,
}

impl FeedPosition {
    const START: FeedPosition = FeedPosition {
        last_seq: 0,
        oldest_seq: 1,
        started_at: 0,
    };

    fn kept(&self) -> u64 {
        self.last_seq + 1 - self.oldest_seq
    }
}

/// The feed's head as readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedHead {
    pub last_seq: u64,
    /// The oldest seq kept; `last_seq + 1` when none is.
    pub oldest_seq: u64,
}

/// One page of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    /// Matching events with seq > `after`, ascending.
    pub events: Vec<Event>,
    /// The seq to pass as `after` for the next page; None when this page reached the head.
    pub next: Option<u64>,
    /// The last seq when the page was read.
    pub head: u64,
}

/// Why a page cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Events after the cursor are no longer kept: the reader must start again from
    /// `oldest_seq - 1` (and knows it missed some).
    #[error("events after {after} are no longer kept; the oldest kept is {oldest_seq}")]
    Gone { after: u64, oldest_seq: u64 },
    /// The store applied entries before the feed existed and has none (see the module docs).
    #[error("this node's state predates the event feed: it has no feed")]
    NotStarted,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn chunk_of(seq: u64) -> u64 {
    debug_assert!(seq >= 1);
    (seq - 1) / EVENTS_PER_CHUNK
}

fn chunk_key(chunk: u64) -> Vec<u8> {
    let mut key = keys::EVENT_CHUNKS_START.to_vec();
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// The feed's position on `disk`: None for a store of an older version that has applied
/// entries but no feed yet (see the module docs).
pub fn position(disk: &dyn Disk) -> Result<Option<FeedPosition>, StorageError> {
    storage::read(disk, keys::FEED_POSITION)
}

/// The head as readers see it (an empty feed when the store has none).
pub fn head(disk: &dyn Disk) -> Result<FeedHead, StorageError> {
    let position = position(disk)?.unwrap_or(FeedPosition::START);
    Ok(FeedHead {
        last_seq: position.last_seq,
        oldest_seq: position.oldest_seq,
    })
}

/// The events matching `filter` with seq > `after`, at most `limit` (at least 1), examining at
/// most [`EVENTS_SCAN_MAX`]. Reads run beside applies: the position is read first and nothing
/// past it is returned; a chunk forgotten between the two reads is reported as `Gone`, never
/// skipped.
pub fn read_page(
    disk: &dyn Disk,
    after: u64,
    limit: usize,
    filter: &EventFilter,
) -> Result<EventPage, EventsError> {
    let limit = limit.max(1);
    let position = position(disk)?.ok_or(EventsError::NotStarted)?;
    let head = position.last_seq;
    let gone = || EventsError::Gone {
        after,
        oldest_seq: position.oldest_seq,
    };
    if after >= head {
        return Ok(EventPage {
            events: Vec::new(),
            next: None,
            head,
        });
    }
    let start = after + 1;
    if start < position.oldest_seq {
        return Err(gone());
    }
    let end = head.min(after.saturating_add(EVENTS_SCAN_MAX));
    // Chunk by chunk, and only as far as the page needs: each read is a point read (served by
    // the write-behind layer's cache for the recent chunks), never a range scan of up to
    // EVENTS_SCAN_MAX events for a page of a few.
    let mut events = Vec::new();
    let mut expected = start;
    'chunks: for number in chunk_of(start)..=chunk_of(end) {
        let Some(chunk) = storage::read::<Vec<Event>>(disk, &chunk_key(number))? else {
            return Err(missing(disk, after, expected)?);
        };
        let first_wanted = expected;
        for event in chunk.into_iter().filter(|event| event.seq >= first_wanted) {
            if event.seq != expected {
                return Err(missing(disk, after, expected)?);
            }
            expected += 1;
            if filter.matches(&event) {
                events.push(event);
            }
            if events.len() >= limit || expected > end {
                break 'chunks;
            }
        }
    }
    let examined = expected - 1;
    Ok(EventPage {
        events,
        next: (examined < head).then_some(examined),
        head,
    })
}

/// Why the event `expected` (kept when the page's read began) was not found: forgotten since by
/// retention (`Gone`, with the oldest kept now), or a feed that is not gap-free (an invariant
/// broken: a storage error).
fn missing(disk: &dyn Disk, after: u64, expected: u64) -> Result<EventsError, StorageError> {
    let now = position(disk)?.unwrap_or(FeedPosition::START);
    if now.oldest_seq > expected {
        return Ok(EventsError::Gone {
            after,
            oldest_seq: now.oldest_seq,
        });
    }
    Ok(StorageError::Invariant(format!("the feed has no event {expected}")).into())
}

/// The feed as one apply call changes it: the position, and the chunks it touched, decoded.
pub struct Feed<'d> {
    disk: &'d dyn Disk,
    retention: FeedRetention,
    /// None: a store of an older version that has no feed yet (records nothing).
    position: Option<FeedPosition>,
    /// The chunks this call read or changed: Some = its events, None = forgotten.
    chunks: BTreeMap<u64, Option<Vec<Event>>>,
    /// Chunks changed by this call (written at finish).
    dirty: std::collections::BTreeSet<u64>,
    /// Whether the position changed.
    moved: bool,
}

impl<'d> Feed<'d> {
    /// The feed of the store on `disk`. A store that has applied nothing (`fresh`) and has no
    /// position starts the feed at seq 1.
    pub fn begin(
        disk: &'d dyn Disk,
        retention: FeedRetention,
        fresh: bool,
    ) -> Result<Self, StorageError> {
        let stored = position(disk)?;
        let moved = stored.is_none() && fresh;
        Ok(Self {
            disk,
            retention,
            position: stored.or(fresh.then_some(FeedPosition::START)),
            chunks: BTreeMap::new(),
            dirty: Default::default(),
            moved,
        })
    }

    /// The last seq numbered, as of this call's appends.
    pub fn last_seq(&self) -> u64 {
        self.position.map_or(0, |position| position.last_seq)
    }

    fn chunk(&mut self, chunk: u64) -> Result<&mut Vec<Event>, StorageError> {
        if !self.chunks.contains_key(&chunk) {
            let key = chunk_key(chunk);
            let events = storage::read::<Vec<Event>>(self.disk, &key)?;
            self.chunks.insert(chunk, events);
        }
        let slot = self.chunks.get_mut(&chunk).expect("inserted above");
        Ok(slot.get_or_insert_with(Vec::new))
    }

    /// Applies a `Command::StartFeed` at `log_index` (see the module docs): starts a feed the
    /// store lacks, or starts again one that began with the store's first entry; otherwise
    /// nothing.
    pub fn start(&mut self, log_index: u64) -> Result<(), StorageError> {
        let started = FeedPosition {
            started_at: log_index,
            ..FeedPosition::START
        };
        match self.position {
            Some(position) if position.started_at != 0 => return Ok(()),
            Some(_) => {
                // Numbered from the store's first entry: drop those events, stored or pending.
                let stored = self.disk.scan(
                    keys::EVENT_CHUNKS_START,
                    keys::EVENT_CHUNKS_END,
                    Order::Ascending,
                    usize::MAX,
                )?;
                for (key, _) in stored {
                    let number: [u8; 8] = key[keys::EVENT_CHUNKS_START.len()..]
                        .try_into()
                        .map_err(|_| {
                            StorageError::Invariant(format!("a feed chunk key {key:?}"))
                        })?;
                    self.chunks.insert(u64::from_be_bytes(number), None);
                }
                for (chunk, events) in self.chunks.iter_mut() {
                    *events = None;
                    self.dirty.insert(*chunk);
                }
            }
            None => {}
        }
        self.position = Some(started);
        self.moved = true;
        Ok(())
    }

    /// Forgets whole chunks from the front that the retention no longer keeps, at most
    /// [`CHUNKS_FORGOTTEN_PER_ENTRY_MAX`]. Called once per command entry, before its events.
    pub fn forget(&mut self, now_ms: u64) -> Result<(), StorageError> {
        let Some(mut position) = self.position else {
            return Ok(());
        };
        for _ in 0..CHUNKS_FORGOTTEN_PER_ENTRY_MAX {
            if position.kept() == 0 {
                break;
            }
            let front = chunk_of(position.oldest_seq);
            if front >= chunk_of(position.last_seq) {
                break; // never the chunk being filled
            }
            let over_count = position.kept() > self.retention.kept_max;
            if !over_count {
                let newest = self.chunk(front)?.last().map_or(0, |event| event.at_ms);
                if newest.saturating_add(self.retention.retention_ms) > now_ms {
                    break;
                }
            }
            let front_last = (front + 1) * EVENTS_PER_CHUNK;
            assert!(
                front_last < position.last_seq,
                "the front chunk is whole and before the last event"
            );
            self.chunks.insert(front, None);
            self.dirty.insert(front);
            position.oldest_seq = front_last + 1;
            self.moved = true;
        }
        self.position = Some(position);
        Ok(())
    }

    /// Numbers `events` after the last seq and appends them. Nothing when the store has no feed.
    pub fn append(&mut self, events: Vec<Event>) -> Result<(), StorageError> {
        let Some(mut position) = self.position else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        for mut event in events {
            let seq = position.last_seq + 1;
            event.seq = seq;
            let chunk_number = chunk_of(seq);
            let chunk = self.chunk(chunk_number)?;
            match chunk.last() {
                Some(last) => assert_eq!(last.seq + 1, seq, "a chunk's events have no gap"),
                None => assert_eq!(
                    (seq - 1) % EVENTS_PER_CHUNK,
                    0,
                    "a chunk starts at its first seq"
                ),
            }
            chunk.push(event);
            self.dirty.insert(chunk_number);
            position.last_seq = seq;
        }
        self.position = Some(position);
        self.moved = true;
        Ok(())
    }

    /// The call's feed writes into `batch`; returns the last seq.
    pub fn finish(self, batch: &mut WriteBatch) -> u64 {
        for chunk in &self.dirty {
            match &self.chunks[chunk] {
                Some(events) => batch.put(chunk_key(*chunk), encode(events)),
                None => batch.delete(chunk_key(*chunk)),
            }
        }
        if let (true, Some(position)) = (self.moved, self.position) {
            batch.put(keys::FEED_POSITION.to_vec(), encode(&position));
        }
        self.last_seq()
    }
}
