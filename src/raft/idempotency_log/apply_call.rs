//! The idempotency log as one apply call sees and changes it: [`IdempotencyLog`] (see the
//! module docs of `idempotency_log` for what it holds and its invariants).
//!
//! ## Forgetting from the front
//! The front is the first entry not forgotten. Entries are forgotten oldest first, when they
//! expire ([`IdempotencyLog::purge_expired`]) or past the cap (eviction in
//! [`IdempotencyLog::remember`]). The oldest is not simply the entry at the front: it is the one
//! with the least identity among the live entries at the front that share the front's expiry,
//! the [`SameExpiryRun`].
//!
//! Why: format 3 forgot in (expiry, identity) order, and a replica upgrades where it happens to
//! stop, so one may apply a stretch of the log in format 3 that another applies in format 4.
//! With one time to live, stored order is expiry order except among entries stamped in the
//! same millisecond of log time, and this choice makes the two formats forget the same keys at
//! the same entries: the same answers, whatever the upgrade point (tests/stores.rs,
//! `replicas_upgraded_at_different_points_keep_giving_the_same_answers`). An entry forgotten
//! out of stored order has its slot emptied; its bytes go with its chunk, once the front has
//! passed every entry of that chunk.

use std::collections::BTreeMap;

use super::chunks::{ChunkCache, StoredEntry};
use super::identity::identity_bytes;
use super::index::{fingerprint, KeyIndex};
use super::{LogSettings, EXPIRED_KEYS_PURGED_PER_ENTRY_MAX};
use crate::inventory::{IdempotencyEntry, IdempotencyId};
use crate::storage::{self, encode, keys, Disk, StorageError, WriteBatch};

/// The idempotency log as one apply call sees and changes it (see the module docs of
/// `idempotency_log`).
pub struct IdempotencyLog<'d> {
    /// Most entries stored (see [`LogSettings`]).
    keys_max: u64,
    /// The first entry not forgotten (see the module docs of `idempotency_log`).
    front: u64,
    /// The number the next stored entry gets.
    next: u64,
    /// How many entries from `front` up to `next` are stored.
    stored: u64,
    /// The chunks this call read or changed.
    chunks: ChunkCache<'d>,
    /// Where each stored identity's entry is, kept in step with the chunks.
    index: KeyIndex,
    /// The entries the next forget of the oldest chooses among, once this call needs them.
    run: Option<SameExpiryRun>,
}

impl<'d> IdempotencyLog<'d> {
    /// The log stored on `disk`, for one apply call; `index` must describe the same state (see
    /// [`SharedKeyIndex`]).
    pub fn begin(
        disk: &'d dyn Disk,
        index: KeyIndex,
        settings: LogSettings,
    ) -> Result<Self, StorageError> {
        Ok(Self {
            keys_max: settings.keys_max,
            front: storage::read(disk, keys::KEY_FRONT)?.unwrap_or(0),
            next: storage::read(disk, keys::KEY_NEXT)?.unwrap_or(0),
            stored: storage::read(disk, keys::IDEMPOTENCY_KEY_COUNT)?.unwrap_or(0),
            chunks: ChunkCache::new(disk, settings.layout),
            index,
            run: None,
        })
    }

    /// The stored entry of `id`, live or expired, if any.
    pub fn find(&mut self, id: &IdempotencyId) -> Result<Option<IdempotencyEntry>, StorageError> {
        let identity = identity_bytes(id);
        let Some(number) = self.number_of(&identity)? else {
            return Ok(None);
        };
        Ok(self
            .chunks
            .slot(number)?
            .and_then(Option::as_ref)
            .map(|stored| stored.entry.clone()))
    }

    /// Stores `entry` as the entry of `id`, replacing the stored one (expired), if any; then
    /// evicts the oldest entries while more than the cap are stored (a few at most).
    pub fn remember(
        &mut self,
        id: &IdempotencyId,
        entry: IdempotencyEntry,
    ) -> Result<(), StorageError> {
        let identity = identity_bytes(id);
        if let Some(number) = self.number_of(&identity)? {
            self.forget(number)?;
        }
        self.append(identity, entry)?;
        self.evict_over_cap()
    }

    /// Ends the apply call: asserts the log's invariants, adds its writes to `batch` (the stored
    /// count, each changed chunk once, next and front) and hands back the key index, which
    /// describes the state once `batch` is written.
    pub fn finish(self, batch: &mut WriteBatch) -> KeyIndex {
        self.assert_invariants();
        batch.put(keys::IDEMPOTENCY_KEY_COUNT.to_vec(), encode(&self.stored));
        self.chunks.write_into(batch);
        batch.put(keys::KEY_NEXT.to_vec(), encode(&self.next));
        batch.put(keys::KEY_FRONT.to_vec(), encode(&self.front));
        self.index
    }

    /// The number of the stored entry of the identity with these bytes: at most one of the
    /// numbers the key index holds for its fingerprint is its own.
    fn number_of(&mut self, identity: &[u8]) -> Result<Option<u64>, StorageError> {
        for number in self.index.numbers(fingerprint(identity)).to_vec() {
            if let Some(Some(stored)) = self.chunks.slot(number)? {
                if stored.identity == identity {
                    return Ok(Some(number));
                }
            }
        }
        Ok(None)
    }

    /// Stores an entry as the newest of the log.
    fn append(&mut self, identity: Vec<u8>, entry: IdempotencyEntry) -> Result<(), StorageError> {
        let number = self.next;
        let fingerprint = fingerprint(&identity);
        self.chunks
            .append(number, StoredEntry { identity, entry })?;
        self.run_after_store(number);
        self.next += 1;
        self.index.insert(fingerprint, number);
        self.stored += 1;
        Ok(())
    }

    /// Empties the slot of entry `number` (replaced by a newer entry of its identity, or
    /// forgotten out of stored order).
    fn forget(&mut self, number: u64) -> Result<(), StorageError> {
        let stored = self.chunks.take(number)?;
        self.run_after_forget(&stored.identity, number);
        self.index.remove(fingerprint(&stored.identity), number)?;
        self.stored = self.stored.saturating_sub(1);
        Ok(())
    }

    /// The invariants of `idempotency_log`. Each is a separate assert, so that a failure says
    /// which one broke.
    fn assert_invariants(&self) {
        assert!(
            self.front <= self.next,
            "the front of the idempotency log ({}) is past its next entry ({})",
            self.front,
            self.next
        );
        assert!(
            self.stored <= self.next - self.front,
            "{} idempotency entries are counted, more than the log holds from its front ({}) \
             to its next entry ({})",
            self.stored,
            self.front,
            self.next
        );
        assert_eq!(
            self.index.len() as u64,
            self.stored,
            "the key index holds every stored idempotency key, and no other"
        );
        let layout = self.chunks.layout();
        for chunk in self.chunks.deleted() {
            assert!(
                layout.is_behind(chunk, self.front),
                "chunk {chunk} of the idempotency log is deleted before the front ({}) passed it",
                self.front
            );
        }
    }
}

/// The live entries at the front of the log that share the front's expiry (up to the first
/// entry with another expiry), by identity: the oldest entry of the log is the first of them.
/// Its length is the number of entries stored in one millisecond of log time; it is read from
/// the chunks at most once per apply call while it lasts.
struct SameExpiryRun {
    /// The first entry number past the run.
    end: u64,
    /// Identity -> entry number, for the run's entries not yet forgotten.
    members: BTreeMap<Vec<u8>, u64>,
}

impl IdempotencyLog<'_> {
    /// Forgets up to [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`] of the oldest entries while the
    /// oldest has expired at `now_ms` (log time).
    pub fn purge_expired(&mut self, now_ms: u64) -> Result<(), StorageError> {
        for _ in 0..EXPIRED_KEYS_PURGED_PER_ENTRY_MAX {
            match self.oldest_expiry()? {
                Some(expires_at_ms) if expires_at_ms <= now_ms => self.forget_oldest()?,
                _ => break,
            }
        }
        Ok(())
    }

    /// Evicts the oldest entries while more than the cap are stored, at most
    /// [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`] per call (at most one entry is added per log
    /// entry, so the count comes back under the cap within a few entries of passing it).
    fn evict_over_cap(&mut self) -> Result<(), StorageError> {
        let excess = self.stored.saturating_sub(self.keys_max) as usize;
        for _ in 0..excess.min(EXPIRED_KEYS_PURGED_PER_ENTRY_MAX) {
            if self.oldest_expiry()?.is_none() {
                break;
            }
            self.forget_oldest()?;
        }
        Ok(())
    }

    /// The expiry of the oldest stored entry, if any, after moving the front past emptied slots.
    fn oldest_expiry(&mut self) -> Result<Option<u64>, StorageError> {
        while self.front < self.next {
            match self.chunks.slot(self.front)? {
                Some(Some(stored)) => return Ok(Some(stored.entry.expires_at_ms)),
                Some(None) => self.advance_front(),
                None => return Err(self.missing_entry(self.front)),
            }
        }
        Ok(None)
    }

    /// Forgets the oldest stored entry (call after [`Self::oldest_expiry`] found one): the
    /// first of the [`SameExpiryRun`] (see the module docs).
    fn forget_oldest(&mut self) -> Result<(), StorageError> {
        if self.run.as_ref().is_none_or(|run| run.members.is_empty()) {
            self.run = Some(self.read_same_expiry_run()?);
        }
        let Some((identity, number)) = self.run.as_mut().and_then(|run| run.members.pop_first())
        else {
            return Err(StorageError::Invariant(format!(
                "no idempotency entry to forget at {}",
                self.front
            )));
        };
        if number != self.front {
            return self.forget(number);
        }
        self.index.remove(fingerprint(&identity), number)?;
        self.stored = self.stored.saturating_sub(1);
        self.advance_front();
        Ok(())
    }

    /// Reads the [`SameExpiryRun`] at the front from the chunks.
    fn read_same_expiry_run(&mut self) -> Result<SameExpiryRun, StorageError> {
        let mut members = BTreeMap::new();
        let mut number = self.front;
        if let Some(expiry) = self.oldest_expiry()? {
            number = self.front;
            while number < self.next {
                match self.chunks.slot(number)? {
                    Some(Some(stored)) if stored.entry.expires_at_ms == expiry => {
                        members.insert(stored.identity.clone(), number);
                    }
                    Some(Some(_)) => break,
                    Some(None) => {}
                    None => return Err(self.missing_entry(number)),
                }
                number += 1;
            }
        }
        Ok(SameExpiryRun {
            end: number,
            members,
        })
    }

    /// Moves the front one entry on, deleting a chunk once the front is past every entry of it.
    fn advance_front(&mut self) {
        self.front += 1;
        if let Some(done) = self.chunks.layout().chunk_left_behind(self.front) {
            self.chunks.delete(done);
        }
    }

    /// Notes that entry `number` was just stored: a run that reached the newest entry may go on
    /// with it, so it is read again when needed.
    fn run_after_store(&mut self, number: u64) {
        if self.run.as_ref().is_some_and(|run| run.end == number) {
            self.run = None;
        }
    }

    /// Notes that entry `number` of `identity` was just forgotten out of stored order.
    fn run_after_forget(&mut self, identity: &[u8], number: u64) {
        if let Some(run) = &mut self.run {
            if run.members.get(identity) == Some(&number) {
                run.members.remove(identity);
            } else if run.end == number {
                // The entry that ended the run (another expiry) is gone: entries past it with
                // the run's expiry belong to the run now, so read it again when needed.
                self.run = None;
            }
        }
    }

    fn missing_entry(&self, number: u64) -> StorageError {
        StorageError::Invariant(format!(
            "idempotency entry {number} is below the next one, {}, but not in its chunk",
            self.next
        ))
    }
}
