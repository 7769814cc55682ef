//! The replicated state machine on a [`Disk`]: committed entries in, inventory state out.
//!
//! Each `apply` call turns a run of committed entries into **one atomic write batch** holding the
//! changed records, idempotency entries, expired-key deletions, the log clock, the last applied
//! log id and the last membership. A crash therefore never leaves data and "applied up to" out of
//! step: on restart openraft re-applies from the log exactly what the batch did not cover.
//!
//! The batch is not flushed: the Raft log (flushed on a quorum before commit) is the durable
//! record, and replaying it is idempotent here. In a node the disk is a
//! [`crate::storage::WriteBehind`], which merges consecutive batches in memory and hands sled
//! one batch every few thousand writes: what a crash can take is still whole batches only. Two places do flush, because they let openraft
//! forget log entries: building a snapshot (after which the log may be purged) and installing
//! one. Snapshots themselves are files (`raft::snapshot`, `storage::snapshots`).
//!
//! Decisions inside apply come only from the entries: log time is
//! [`inventory::next_log_time`] of the previous log time (kept under `keys::CLOCK`, so it is in
//! every snapshot) and the entry's stamp: never backwards (a leader stamps at most
//! [`inventory::LOG_TIME_STEP_MAX_MS`] past the log time it has applied,
//! [`StateMachineStore::log_time_ms`]). Expired idempotency keys are purged
//! per entry (at most [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`]) so that batch boundaries, which
//! differ between nodes, never change the result.
//!
//! Idempotency entries are kept in the *idempotency log* (`storage::keys`): numbered in the
//! order they are stored, packed [`KEYS_PER_CHUNK`] to a sled value, forgotten from the oldest
//! (past the cap, or once the oldest has expired). With one time to live for the cluster (the
//! `api.idempotency_ttl_ms` setting) that is also the order they expire; an entry stored with a
//! shorter one than an older entry is purged after it, but is expired for every request from
//! its expiry on (`inventory::apply` checks), so only its bytes wait.
//!
//! A storage or decode failure is returned to openraft as an `io::Error`, which stops the node:
//! a replica that cannot apply faithfully must not answer.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::Serialize;

use super::key_index::{fingerprint, KeyIndex};
use super::snapshot::{self, Capture, SnapshotBuilder};
use super::{Applied, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::inventory::{
    self, ApplyContext, IdempotencyEntry, MemoryState, Record, RecordKey, Request,
};
use crate::storage::fs::blocking;
use crate::storage::keys::{KeyChunk, StoredKey};
use crate::storage::snapshots::{SnapshotDir, SnapshotFile};
use crate::storage::{
    self, decode, encode, keys, Disk, KeyValue, Order, StorageError, Write, WriteBatch,
};
use crate::telemetry::Telemetry;

/// How many expired idempotency keys one log entry deletes at most: bounds the work of a single
/// apply while still forgetting keys faster than they can be added (one per entry).
pub const EXPIRED_KEYS_PURGED_PER_ENTRY_MAX: usize = 4;

/// Most idempotency keys the state machine keeps. Past it, the oldest keys (first stored) are
/// evicted before they expire, so that a shop keying every write cannot grow the state without
/// bound (24 h of keys at a few hundred writes/s would be tens of millions). A constant of the
/// replicated state machine, like the purge rate: every node must evict the same keys at the
/// same entry, so it is not a per-node setting.
pub const IDEMPOTENCY_KEYS_MAX: u64 = 1_000_000;

/// Idempotency entries per sled value of the idempotency log (see the module docs and
/// `storage::keys`). A constant of the replicated state machine, like the cap: every replica
/// must lay the log out the same way to hold the same bytes. 32 entries of ~130 bytes make a
/// ~4 KB value, well under what sled stores apart as a blob.
pub const KEYS_PER_CHUNK: u64 = 32;

/// The state transition the store runs on each command: [`inventory::apply`] in the product. A
/// seam, so that the simulation can run a wrapper of its own (a planted bug) and prove its
/// checkers catch it, while `inventory::apply` stays pure and free of test switches.
pub type ApplyFn =
    fn(&MemoryState, &Request, ApplyContext) -> (inventory::Response, inventory::Effects);

/// The state machine. Clones share the disk and the snapshot directory: the Raft core owns one,
/// the HTTP layer reads through another.
#[derive(Clone)]
pub struct StateMachineStore {
    disk: Arc<dyn Disk>,
    apply: ApplyFn,
    idempotency_keys_max: u64,
    /// See [`KEYS_PER_CHUNK`].
    keys_per_chunk: u64,
    snapshots: SnapshotDir,
    /// Before-images for a snapshot being built (see `raft::snapshot`).
    capture: Arc<Capture>,
    /// Where each idempotency key is stored, as of the last apply call (see `raft::key_index`);
    /// `None` until built from the disk (after opening, an install, or a failed apply call).
    key_index: Arc<std::sync::Mutex<Option<KeyIndex>>>,
    /// Where snapshot builds and installs are reported, if anywhere.
    telemetry: Option<Arc<Telemetry>>,
}

impl StateMachineStore {
    /// The log time of the last applied command entry (0 before any): what a leader bounds its
    /// proposals' stamps by (`inventory::proposal_stamp`).
    pub fn log_time_ms(&self) -> Result<u64, StorageError> {
        Ok(self.read(keys::CLOCK)?.unwrap_or(0))
    }

    /// The product's store: commands go through [`inventory::apply`].
    pub fn new(disk: Arc<dyn Disk>, snapshots: SnapshotDir) -> Self {
        Self::with_apply(disk, snapshots, inventory::apply)
    }

    /// A store that runs `apply` on each command instead (see [`ApplyFn`]).
    pub fn with_apply(disk: Arc<dyn Disk>, snapshots: SnapshotDir, apply: ApplyFn) -> Self {
        Self {
            disk,
            apply,
            idempotency_keys_max: IDEMPOTENCY_KEYS_MAX,
            keys_per_chunk: KEYS_PER_CHUNK,
            snapshots,
            capture: Arc::default(),
            key_index: Arc::default(),
            telemetry: None,
        }
    }

    /// The same store, reporting snapshot builds and installs to `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn telemetry(&self) -> Option<&Telemetry> {
        self.telemetry.as_deref()
    }

    /// The same store with another cap on idempotency keys (tests; every replica must use the
    /// same cap, see [`IDEMPOTENCY_KEYS_MAX`]).
    pub fn with_idempotency_keys_max(mut self, keys_max: u64) -> Self {
        self.idempotency_keys_max = keys_max;
        self
    }

    /// The same store with another number of idempotency entries per chunk (tests; every
    /// replica must use the same, see [`KEYS_PER_CHUNK`]).
    pub fn with_keys_per_chunk(mut self, entries: u64) -> Self {
        self.keys_per_chunk = entries.max(1);
        self
    }

    /// Idempotency entries per chunk of this store's idempotency log.
    pub fn keys_per_chunk(&self) -> u64 {
        self.keys_per_chunk
    }

    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    pub fn snapshot_dir(&self) -> &SnapshotDir {
        &self.snapshots
    }

    pub(super) fn capture(&self) -> &Arc<Capture> {
        &self.capture
    }

    /// The key index, taken out to be changed by one apply call; the call puts it back once
    /// its batch is written. Built from the disk if there is none, off the async workers (one
    /// scan of every stored key).
    async fn take_key_index(&self) -> io::Result<KeyIndex> {
        if let Some(index) = self.lock_key_index().take() {
            return Ok(index);
        }
        let disk = self.disk.clone();
        let per_chunk = self.keys_per_chunk;
        let index = blocking(move || Ok(KeyIndex::build(&*disk, per_chunk)?)).await?;
        tracing::info!(
            keys = index.len(),
            "built the idempotency key index from the disk"
        );
        Ok(index)
    }

    fn lock_key_index(&self) -> std::sync::MutexGuard<'_, Option<KeyIndex>> {
        self.key_index
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops the key index: the state it described was replaced.
    fn forget_key_index(&self) {
        *self.lock_key_index() = None;
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        storage::read(&*self.disk, key)
    }

    /// The record as of the last applied entry on this node.
    pub fn record(&self, key: &RecordKey) -> Result<Option<Record>, StorageError> {
        read_record(&*self.disk, key)
    }

    /// The last applied log id on this node.
    pub fn applied(&self) -> Result<Option<LogId>, StorageError> {
        read_applied(&*self.disk)
    }

    /// The last applied log id and membership, as they were last written.
    pub fn applied_and_membership(
        &self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((
            self.applied()?,
            self.read(keys::MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    /// Every key and value of the state machine, in key order: what replicas at the same
    /// applied index must agree on byte for byte (checks and tests; snapshots stream instead).
    pub fn state_pairs(&self) -> Result<Vec<KeyValue>, StorageError> {
        read_state_pairs(&*self.disk)
    }
}

/// A record as the state machine on `disk` holds it (also for harnesses that inspect a disk).
pub fn read_record(disk: &dyn Disk, key: &RecordKey) -> Result<Option<Record>, StorageError> {
    storage::read(disk, &keys::record(key))
}

/// The last applied log id of the state machine on `disk`.
pub fn read_applied(disk: &dyn Disk) -> Result<Option<LogId>, StorageError> {
    // Stored as `Option<LogId>` (a snapshot of an empty state has none): decode it as such.
    let bytes = disk.get(keys::APPLIED)?;
    Ok(bytes
        .map(|bytes| decode::<Option<LogId>>(keys::APPLIED, &bytes))
        .transpose()?
        .flatten())
}

/// Every key and value of the state machine on `disk`, in key order.
pub fn read_state_pairs(disk: &dyn Disk) -> Result<Vec<KeyValue>, StorageError> {
    disk.scan(
        keys::STATE_START,
        keys::STATE_END,
        Order::Ascending,
        usize::MAX,
    )
}

/// The writes of one apply call, with the reads they must see.
struct ApplyBatch<'d> {
    disk: &'d dyn Disk,
    apply: ApplyFn,
    /// Pending writes: `None` deletes.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Log time of the last command entry applied, in ms; 0 before the first (see
    /// [`inventory::next_log_time`]).
    clock_ms: u64,
    /// Idempotency keys stored, and the most that may be.
    key_count: u64,
    keys_max: u64,
    /// The idempotency log's next entry number, its first entry not forgotten, and its
    /// entries per chunk.
    key_next: u64,
    key_front: u64,
    per_chunk: u64,
    /// Chunks of the idempotency log this call read or changed, decoded (`None`: deleted), and
    /// which of them it changed: written once each when the call ends.
    chunks: BTreeMap<u64, Option<KeyChunk>>,
    changed_chunks: BTreeSet<u64>,
    /// Where each idempotency key is stored, kept in step with the chunks.
    key_index: KeyIndex,
    /// The entries the next forget chooses among, once this call needs them.
    front_run: Option<FrontRun>,
}

/// The live entries at the front of the idempotency log that share the front's expiry (up to
/// the first with another), by identity: the oldest entry is the least of them, the order
/// format 3 forgot in (see [`ApplyBatch::forget_oldest`]).
struct FrontRun {
    /// The first entry number past the run.
    end: u64,
    members: BTreeMap<Vec<u8>, u64>,
}

impl<'d> ApplyBatch<'d> {
    fn begin(store: &'d StateMachineStore, key_index: KeyIndex) -> Result<Self, StorageError> {
        Ok(Self {
            disk: &*store.disk,
            apply: store.apply,
            overlay: BTreeMap::new(),
            applied: store.applied()?,
            membership: store.read(keys::MEMBERSHIP)?.unwrap_or_default(),
            clock_ms: store.read(keys::CLOCK)?.unwrap_or(0),
            key_count: store.read(keys::IDEMPOTENCY_KEY_COUNT)?.unwrap_or(0),
            keys_max: store.idempotency_keys_max,
            key_next: store.read(keys::KEY_NEXT)?.unwrap_or(0),
            key_front: store.read(keys::KEY_FRONT)?.unwrap_or(0),
            per_chunk: store.keys_per_chunk,
            chunks: BTreeMap::new(),
            changed_chunks: BTreeSet::new(),
            key_index,
            front_run: None,
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        let bytes = match self.overlay.get(key) {
            Some(pending) => pending.clone(),
            None => self.disk.get(key)?,
        };
        bytes.map(|bytes| decode(key, &bytes)).transpose()
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.overlay.insert(key, Some(encode(value)));
    }

    fn apply_entry(&mut self, entry: super::Entry) -> Result<Applied, StorageError> {
        let log_id = entry.log_id;
        if let Some(previous) = &self.applied {
            // Raft hands entries over in order, each once: re-applying or going back would apply
            // a command twice. A gap is not expected either (openraft's conformance suite does
            // apply with gaps, so it is reported, not refused).
            if log_id.index <= previous.index {
                return Err(StorageError::Invariant(format!(
                    "apply went backwards: applied {previous}, next {log_id}"
                )));
            }
            if log_id.index != previous.index + 1 {
                tracing::error!(%previous, next = %log_id, "apply skipped log entries");
            }
        }
        let applied = match entry.payload {
            EntryPayload::Blank => Applied::Nothing,
            EntryPayload::Membership(membership) => {
                self.membership = StoredMembership::new(Some(log_id), membership);
                Applied::Nothing
            }
            EntryPayload::Normal(request) => {
                Applied::Command(self.apply_request(log_id.index, &request)?)
            }
        };
        self.applied = Some(log_id);
        Ok(applied)
    }

    fn apply_request(
        &mut self,
        log_index: u64,
        request: &Request,
    ) -> Result<inventory::Response, StorageError> {
        self.clock_ms = inventory::next_log_time(self.clock_ms, request.proposed_at_ms);
        self.purge_expired_keys()?;

        let mut view = MemoryState::default();
        for key in request.command.keys() {
            if let Some(record) = self.get::<Record>(&keys::record(key))? {
                view.records.insert(key.clone(), record);
            }
        }
        // The number of the stored entry of the request's key, live or expired.
        let mut stored_as = None;
        if let Some(idempotency) = &request.idempotency {
            let id = idempotency.id();
            if let Some((number, entry)) = self.find_key(&keys::identity_bytes(&id))? {
                stored_as = Some(number);
                view.idempotency.insert(id, entry);
            }
        }

        let context = ApplyContext {
            log_index,
            now_ms: self.clock_ms,
        };
        let (response, effects) = (self.apply)(&view, request, context);
        for record in &effects.records {
            debug_assert!(record.quantity >= 0, "apply produced negative stock");
            let before = view.records.get(&record.key);
            debug_assert_eq!(
                record.version,
                before.map_or(0, |r| r.version) + 1,
                "a record's version grows by exactly one per change"
            );
            debug_assert!(
                before.is_none_or(|r| record.updated_at_ms >= r.updated_at_ms),
                "log time never goes back: a change is stamped no earlier than the last one"
            );
            self.put(keys::record(&record.key), record);
        }
        if let Some((key, entry)) = effects.idempotency {
            // A new entry for the key: it replaces the stored one (expired), if any.
            if let Some(number) = stored_as.filter(|_| view.idempotency.contains_key(&key)) {
                self.forget_key(number)?;
            }
            self.store_key(keys::identity_bytes(&key), entry)?;
            self.evict_over_cap()?;
        }
        Ok(response)
    }

    /// Chunk `number` of the idempotency log, read from the disk the first time this call
    /// needs it (empty if it is not there yet: the next one to fill).
    fn chunk(&mut self, number: u64) -> Result<&mut KeyChunk, StorageError> {
        if !self.chunks.contains_key(&number) {
            let chunk = storage::read(self.disk, &keys::key_chunk(number))?.unwrap_or_default();
            self.chunks.insert(number, Some(chunk));
        }
        match self.chunks.get_mut(&number) {
            Some(Some(chunk)) => Ok(chunk),
            _ => Err(StorageError::Invariant(format!(
                "chunk {number} of the idempotency log is needed after it was deleted"
            ))),
        }
    }

    /// The chunk and slot of entry `number`.
    fn place(&self, number: u64) -> (u64, usize) {
        (number / self.per_chunk, (number % self.per_chunk) as usize)
    }

    /// The stored idempotency entry of the identity with these bytes, if any, with its number:
    /// at most one of the numbers the key index holds for its fingerprint is its own.
    fn find_key(
        &mut self,
        identity: &[u8],
    ) -> Result<Option<(u64, IdempotencyEntry)>, StorageError> {
        for number in self.key_index.numbers(fingerprint(identity)).to_vec() {
            let (chunk, slot) = self.place(number);
            if let Some(Some(stored)) = self.chunk(chunk)?.get(slot) {
                if stored.identity == identity {
                    return Ok(Some((number, stored.entry.clone())));
                }
            }
        }
        Ok(None)
    }

    /// Appends an entry to the idempotency log.
    fn store_key(
        &mut self,
        identity: Vec<u8>,
        entry: IdempotencyEntry,
    ) -> Result<(), StorageError> {
        let number = self.key_next;
        let (chunk_number, slot) = self.place(number);
        let fingerprint = fingerprint(&identity);
        let chunk = self.chunk(chunk_number)?;
        if chunk.len() != slot {
            return Err(StorageError::Invariant(format!(
                "idempotency entry {number} goes to slot {slot} of chunk {chunk_number}, which \
                 holds {} slots",
                chunk.len()
            )));
        }
        chunk.push(Some(StoredKey { identity, entry }));
        self.changed_chunks.insert(chunk_number);
        // A run that reached the newest entry may go on with this one: read it again if needed.
        if self.front_run.as_ref().is_some_and(|run| run.end == number) {
            self.front_run = None;
        }
        self.key_next += 1;
        self.key_index.insert(fingerprint, number);
        self.key_count += 1;
        Ok(())
    }

    /// Empties the slot of entry `number` (replaced by a newer entry of its identity).
    fn forget_key(&mut self, number: u64) -> Result<(), StorageError> {
        let (chunk_number, slot) = self.place(number);
        let stored = self
            .chunk(chunk_number)?
            .get_mut(slot)
            .and_then(Option::take)
            .ok_or_else(|| {
                StorageError::Invariant(format!("idempotency entry {number} is not stored"))
            })?;
        self.changed_chunks.insert(chunk_number);
        if let Some(run) = &mut self.front_run {
            if run.members.get(&stored.identity) == Some(&number) {
                run.members.remove(&stored.identity);
            } else if run.end == number {
                // The entry that ended the run (another expiry) is gone: entries past it with
                // the run's expiry belong to the run now, so read it again when needed.
                self.front_run = None;
            }
        }
        self.key_index
            .remove(fingerprint(&stored.identity), number)?;
        self.key_count = self.key_count.saturating_sub(1);
        Ok(())
    }

    /// The expiry of the oldest stored entry, if any, after moving the front past emptied slots.
    fn oldest_expiry(&mut self) -> Result<Option<u64>, StorageError> {
        while self.key_front < self.key_next {
            let (chunk, slot) = self.place(self.key_front);
            match self.chunk(chunk)?.get(slot) {
                Some(Some(stored)) => return Ok(Some(stored.entry.expires_at_ms)),
                Some(None) => self.advance_front(),
                None => {
                    return Err(StorageError::Invariant(format!(
                        "idempotency entry {} is below the next one, {}, but not in its chunk",
                        self.key_front, self.key_next
                    )))
                }
            }
        }
        Ok(None)
    }

    /// Forgets the oldest stored entry (call after [`Self::oldest_expiry`] found one): among the
    /// entries at the front that share its expiry, the one with the least identity.
    ///
    /// Why not simply the front: format 3 forgot in (expiry, identity) order, and a replica
    /// upgrades where it happens to stop, so one may apply a stretch of the log in format 3 that
    /// another applies in format 4. With one time to live, stored order is expiry order except
    /// among entries stamped in the same millisecond, and this choice makes the two formats
    /// forget the same keys at the same entries: the same answers, whatever the upgrade point
    /// (tests/stores.rs, `replicas_upgraded_at_different_points_keep_giving_the_same_answers`).
    /// A slot forgotten out of stored order is emptied; its bytes go with its chunk.
    fn forget_oldest(&mut self) -> Result<(), StorageError> {
        if self
            .front_run
            .as_ref()
            .is_none_or(|run| run.members.is_empty())
        {
            self.front_run = Some(self.read_front_run()?);
        }
        let Some((identity, number)) = self
            .front_run
            .as_mut()
            .and_then(|run| run.members.pop_first())
        else {
            return Err(StorageError::Invariant(format!(
                "no idempotency entry to forget at {}",
                self.key_front
            )));
        };
        if number != self.key_front {
            return self.forget_key(number);
        }
        self.key_index.remove(fingerprint(&identity), number)?;
        self.key_count = self.key_count.saturating_sub(1);
        self.advance_front();
        Ok(())
    }

    /// Reads the [`FrontRun`] from the chunks: its length is the number of entries stored in
    /// one millisecond of log time, and it is read at most once per apply call while it lasts.
    fn read_front_run(&mut self) -> Result<FrontRun, StorageError> {
        let mut members = BTreeMap::new();
        let mut number = self.key_front;
        if let Some(expiry) = self.oldest_expiry()? {
            number = self.key_front;
            while number < self.key_next {
                let (chunk, slot) = self.place(number);
                match self.chunk(chunk)?.get(slot) {
                    Some(Some(stored)) if stored.entry.expires_at_ms == expiry => {
                        members.insert(stored.identity.clone(), number);
                    }
                    Some(Some(_)) => break,
                    Some(None) => {}
                    None => {
                        return Err(StorageError::Invariant(format!(
                            "idempotency entry {number} is below the next one, {}, but not in \
                             its chunk",
                            self.key_next
                        )))
                    }
                }
                number += 1;
            }
        }
        Ok(FrontRun {
            end: number,
            members,
        })
    }

    /// Moves the front one entry on, deleting a chunk once it is past every entry of it.
    fn advance_front(&mut self) {
        self.key_front += 1;
        if self.key_front.is_multiple_of(self.per_chunk) {
            let done = self.key_front / self.per_chunk - 1;
            self.chunks.insert(done, None);
            self.changed_chunks.insert(done);
        }
    }

    /// Forgets up to [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`] of the oldest idempotency keys while
    /// the oldest has expired by the log clock.
    fn purge_expired_keys(&mut self) -> Result<(), StorageError> {
        for _ in 0..EXPIRED_KEYS_PURGED_PER_ENTRY_MAX {
            match self.oldest_expiry()? {
                Some(expires_at_ms) if expires_at_ms <= self.clock_ms => self.forget_oldest()?,
                _ => break,
            }
        }
        Ok(())
    }

    /// Evicts the oldest idempotency keys while more than the cap are stored, at most
    /// [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`] per entry (at most one key is added per entry, so
    /// the count comes back under the cap within a few entries of passing it).
    fn evict_over_cap(&mut self) -> Result<(), StorageError> {
        let excess = self.key_count.saturating_sub(self.keys_max) as usize;
        for _ in 0..excess.min(EXPIRED_KEYS_PURGED_PER_ENTRY_MAX) {
            if self.oldest_expiry()?.is_none() {
                break;
            }
            self.forget_oldest()?;
        }
        Ok(())
    }

    fn into_write_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (key, value) in self.overlay {
            match value {
                Some(value) => batch.put(key, value),
                None => batch.delete(key),
            }
        }
        batch.put(keys::APPLIED.to_vec(), encode(&self.applied));
        batch.put(keys::MEMBERSHIP.to_vec(), encode(&self.membership));
        batch.put(keys::CLOCK.to_vec(), encode(&self.clock_ms));
        batch.put(
            keys::IDEMPOTENCY_KEY_COUNT.to_vec(),
            encode(&self.key_count),
        );
        for number in &self.changed_chunks {
            match self.chunks.get(number) {
                Some(Some(chunk)) => batch.put(keys::key_chunk(*number), encode(chunk)),
                _ => batch.delete(keys::key_chunk(*number)),
            }
        }
        batch.put(keys::KEY_NEXT.to_vec(), encode(&self.key_next));
        batch.put(keys::KEY_FRONT.to_vec(), encode(&self.key_front));
        batch
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        if snapshot::install_interrupted(self)? {
            // The state is half old, half new: report nothing applied so that openraft
            // restores it from the current snapshot before re-applying the log.
            tracing::warn!("a snapshot install was cut short: restoring from the snapshot");
            return Ok((None, StoredMembership::default()));
        }
        Ok(self.applied_and_membership()?)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let key_index = self.take_key_index().await?;
        let mut batch = ApplyBatch::begin(self, key_index)?;
        let mut replies = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let applied = batch.apply_entry(entry)?;
            if let Some(responder) = responder {
                replies.push((responder, applied));
            }
        }
        let key_index = std::mem::take(&mut batch.key_index);
        debug_assert_eq!(
            key_index.len() as u64,
            batch.key_count,
            "the key index holds every stored idempotency key, and no other"
        );
        let writes = batch.into_write_batch();
        self.capture.record_before_write(
            writes.writes.iter().map(|write| match write {
                Write::Put(key, _) | Write::Delete(key) => key,
            }),
            |key| self.disk.get(key),
        )?;
        // On a failure the batch may still have been taken (a write-behind layer keeps it
        // pending when its checkpoint fails): the key index is left out, built again next time.
        self.disk.write(writes)?;
        *self.lock_key_index() = Some(key_index);
        for (responder, applied) in replies {
            responder.send(applied);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::begin(self)
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // The whole state is replaced: the key index no longer describes it.
        self.forget_key_index();
        let installed = snapshot::install(self, meta, snapshot).await;
        self.forget_key_index();
        installed
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::current(self)
    }
}
