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
//! A storage or decode failure is returned to openraft as an `io::Error`, which stops the node:
//! a replica that cannot apply faithfully must not answer.

use std::collections::BTreeMap;
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
use crate::storage::snapshots::{SnapshotDir, SnapshotFile};
use crate::storage::{
    decode, encode, keys, Disk, KeyValue, Order, StorageError, Write, WriteBatch,
};
use crate::telemetry::Telemetry;

/// How many expired idempotency keys one log entry deletes at most: bounds the work of a single
/// apply while still draining the expiry index faster than keys can be added (one per entry).
pub const EXPIRED_KEYS_PURGED_PER_ENTRY_MAX: usize = 4;

/// Most idempotency keys the state machine keeps. Past it, the oldest keys (by expiry) are
/// evicted before they expire, so that a shop keying every write cannot grow the state without
/// bound (24 h of keys at a few hundred writes/s would be tens of millions). A constant of the
/// replicated state machine, like the purge rate: every node must evict the same keys at the
/// same entry, so it is not a per-node setting.
pub const IDEMPOTENCY_KEYS_MAX: u64 = 1_000_000;

/// Keys of the expiry index's front read at once by an apply call that must delete some (see
/// `ApplyBatch::delete_oldest_keys`). Why: past the key cap every keyed write evicts one, and a
/// sled range scan per write was 15% of each node's CPU at the cap (`perf`); one read serves
/// the evictions of many entries of the same apply call. Only how keys are found changes, never
/// which: every replica still deletes the same keys at the same entry.
pub const EXPIRY_READ_AHEAD: usize = 64;

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
    /// See [`EXPIRY_READ_AHEAD`].
    expiry_read_ahead: usize,
    snapshots: SnapshotDir,
    /// Before-images for a snapshot being built (see `raft::snapshot`).
    capture: Arc<Capture>,
    /// Where scans of the expiry index may start: no expiry key below it exists (see
    /// [`ExpiryFloor`]).
    expiry_floor: Arc<ExpiryFloor>,
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
            expiry_read_ahead: EXPIRY_READ_AHEAD,
            snapshots,
            capture: Arc::default(),
            expiry_floor: Arc::default(),
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

    /// The same store reading another number of expiry keys ahead (tests: 1 reads only what
    /// each entry deletes, as before the read-ahead existed).
    pub fn with_expiry_read_ahead(mut self, keys: usize) -> Self {
        self.expiry_read_ahead = keys.max(1);
        self
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
        let index = blocking(move || Ok(KeyIndex::build(&*disk)?)).await?;
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
        match self.disk.get(key)? {
            Some(bytes) => Ok(Some(decode(key, &bytes)?)),
            None => Ok(None),
        }
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
    let key = keys::record(key);
    disk.get(&key)?
        .map(|bytes| decode(&key, &bytes))
        .transpose()
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

/// A lower bound on the keys of the expiry index, so that purging the oldest keys does not
/// walk past the keys it deleted before. Without it every entry's scan would start at the front
/// of the index and step over every key deleted since the last checkpoint of the write-behind
/// layer (`storage::WriteBehind` keeps deletions in memory until then): thousands per entry
/// once the key cap evicts a key per entry.
///
/// Not state, a cache of it: it changes where a scan starts, never what it finds (no expiry
/// key exists below the floor), so results stay the same on every node whatever their batch
/// boundaries or restarts. Invariant: every expiry key in the state is `>=` the floor. Kept by
/// lowering it to each key inserted, raising it past the keys a scan deleted (they were the
/// smallest present), and resetting it to the front whenever the whole state is replaced
/// (snapshot install) or the store is opened.
///
/// With the floor it keeps the front of the index as the last apply call left it (the keys
/// present from the floor up to `end`, see [`ApplyBatch`]), so that the next call does not scan
/// the disk again for what is known: a scan per apply call, even of an empty index, went to
/// sled and waited there for any checkpoint holding sled's write lock (tens of ms at 200,000
/// records). The same rules keep it valid: every insert and delete of the index goes through an
/// apply call that keeps its front in step, and a replaced state or a failed call resets it.
#[derive(Default)]
pub struct ExpiryFloor(std::sync::Mutex<ExpiryFront>);

/// What [`ExpiryFloor`] holds between apply calls.
#[derive(Clone)]
struct ExpiryFront {
    /// No expiry key of the state is below it.
    floor: Vec<u8>,
    /// Every expiry key present in `floor..end`, if `end` is known.
    keys: std::collections::BTreeSet<Vec<u8>>,
    end: Option<Vec<u8>>,
}

impl Default for ExpiryFront {
    fn default() -> Self {
        Self {
            floor: keys::EXPIRY_START.to_vec(),
            keys: Default::default(),
            end: None,
        }
    }
}

impl ExpiryFloor {
    fn lock(&self) -> std::sync::MutexGuard<'_, ExpiryFront> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is known, for one apply call to move; [`Self::reset`] until it is put back.
    fn take(&self) -> ExpiryFront {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back what an apply call moved, keeping at most `keys_max` keys of its front.
    fn put(&self, mut front: ExpiryFront, keys_max: usize) {
        if front.keys.len() > keys_max {
            if let Some(first_dropped) = front.keys.iter().nth(keys_max).cloned() {
                // The front then covers `floor..first_dropped`: still every key there.
                front.keys.split_off(&first_dropped);
                front.end = Some(first_dropped);
            }
        }
        *self.lock() = front;
    }

    fn reset(&self) {
        *self.lock() = ExpiryFront::default();
    }
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
    /// The expiry floor as this batch moves it (stored back once the batch is written).
    expiry_floor: Vec<u8>,
    /// The front of the expiry index, as the last apply call left it (see [`ExpiryFloor`]) and
    /// read ahead by this one: every expiry key present (as this batch sees the index) in
    /// `expiry_floor..front_end`, kept so by every insert and delete of the batch. Empty and
    /// `front_end == None` until a read.
    front: std::collections::BTreeSet<Vec<u8>>,
    front_end: Option<Vec<u8>>,
    read_ahead: usize,
    /// Where each idempotency key is stored, kept in step with the overlay.
    key_index: KeyIndex,
}

impl<'d> ApplyBatch<'d> {
    fn begin(store: &'d StateMachineStore, key_index: KeyIndex) -> Result<Self, StorageError> {
        // Taken, not copied: if this call fails before putting it back, what it left is
        // unknown (the reset state), which is safe.
        let carried = store.expiry_floor.take();
        Ok(Self {
            disk: &*store.disk,
            apply: store.apply,
            overlay: BTreeMap::new(),
            applied: store.applied()?,
            membership: store.read(keys::MEMBERSHIP)?.unwrap_or_default(),
            clock_ms: store.read(keys::CLOCK)?.unwrap_or(0),
            key_count: store.read(keys::IDEMPOTENCY_KEY_COUNT)?.unwrap_or(0),
            keys_max: store.idempotency_keys_max,
            expiry_floor: carried.floor,
            front: carried.keys,
            front_end: carried.end,
            read_ahead: store.expiry_read_ahead,
            key_index,
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
        if let Some(idempotency) = &request.idempotency {
            let id = idempotency.id();
            if let Some(entry) = self.find_key(&keys::identity_bytes(&id))? {
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
            let identity = keys::identity_bytes(&key);
            match view.idempotency.get(&key) {
                Some(old) => {
                    let old_expiry = keys::expiry_of_identity(old.expires_at_ms, &identity);
                    self.front.remove(&old_expiry);
                    self.overlay.insert(old_expiry, None);
                    self.key_index
                        .remove(fingerprint(&identity), old.expires_at_ms)?;
                }
                None => self.key_count += 1,
            }
            self.key_index
                .insert(fingerprint(&identity), entry.expires_at_ms);
            let expiry_key = keys::expiry_of_identity(entry.expires_at_ms, &identity);
            if expiry_key < self.expiry_floor {
                self.expiry_floor = expiry_key.clone();
            }
            if self
                .front_end
                .as_ref()
                .is_some_and(|front_end| expiry_key < *front_end)
            {
                self.front.insert(expiry_key.clone());
            }
            self.put(expiry_key, &entry);
            self.evict_over_cap()?;
        }
        Ok(response)
    }

    /// The stored idempotency entry of the identity with these bytes, if any: at most one of
    /// the expiries the key index holds for its fingerprint is its own.
    fn find_key(&self, identity: &[u8]) -> Result<Option<IdempotencyEntry>, StorageError> {
        for &expires_at_ms in self.key_index.expiries(fingerprint(identity)) {
            let key = keys::expiry_of_identity(expires_at_ms, identity);
            if let Some(entry) = self.get::<IdempotencyEntry>(&key)? {
                debug_assert_eq!(
                    entry.expires_at_ms, expires_at_ms,
                    "stored under its expiry"
                );
                return Ok(Some(entry));
            }
        }
        Ok(None)
    }

    /// Deletes up to [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`] idempotency keys whose expiry is at or
    /// before the log clock, oldest first.
    fn purge_expired_keys(&mut self) -> Result<(), StorageError> {
        let end = keys::expiry_before(self.clock_ms.saturating_add(1));
        self.delete_oldest_keys(&end, EXPIRED_KEYS_PURGED_PER_ENTRY_MAX)
    }

    /// Evicts the oldest idempotency keys while more than the cap are stored, at most
    /// [`EXPIRED_KEYS_PURGED_PER_ENTRY_MAX`] per entry (at most one key is added per entry, so
    /// the count comes back under the cap within a few entries of passing it).
    fn evict_over_cap(&mut self) -> Result<(), StorageError> {
        let excess = self.key_count.saturating_sub(self.keys_max) as usize;
        let limit = excess.min(EXPIRED_KEYS_PURGED_PER_ENTRY_MAX);
        if limit > 0 {
            self.delete_oldest_keys(keys::EXPIRY_END, limit)?;
        }
        Ok(())
    }

    /// Deletes up to `limit` idempotency keys from the front of the expiry index (oldest expiry
    /// first, then by key), below `end`. Reads the index through the overlay so the result does
    /// not depend on where apply batches begin and end, and reads ahead ([`EXPIRY_READ_AHEAD`])
    /// so that the next entries of the batch find their keys without another scan.
    fn delete_oldest_keys(&mut self, end: &[u8], limit: usize) -> Result<(), StorageError> {
        // No expiry key exists below the floor (see `ExpiryFloor`).
        let start = self.expiry_floor.clone().max(keys::EXPIRY_START.to_vec());
        if limit == 0 || start.as_slice() >= end {
            return Ok(());
        }
        // The front read ahead answers if it holds `limit` keys below `end`, or all of them.
        let covered = self.front_end.as_ref().is_some_and(|front_end| {
            front_end.as_slice() >= end
                || self
                    .front
                    .range::<[u8], _>(below(end))
                    .nth(limit - 1)
                    .is_some()
        });
        if !covered {
            self.read_front(&start, limit.max(self.read_ahead))?;
        }
        let doomed: Vec<Vec<u8>> = self
            .front
            .range::<[u8], _>(below(end))
            .take(limit)
            .cloned()
            .collect();
        // The smallest present keys of `start..end` go: past the last of them none is left, and
        // if fewer than `limit` were found, none is left below `end` (the front covers it).
        self.expiry_floor = match doomed.last() {
            Some(last) if doomed.len() == limit => [last.as_slice(), &[0]].concat(),
            _ => end.to_vec(),
        };
        for expiry_key in doomed {
            let (expires_at_ms, identity) = keys::split_expiry(&expiry_key).ok_or_else(|| {
                StorageError::Invariant(format!("malformed expiry key {expiry_key:?}"))
            })?;
            self.key_index
                .remove(fingerprint(identity), expires_at_ms)?;
            self.front.remove(&expiry_key);
            self.overlay.insert(expiry_key, None);
            self.key_count = self.key_count.saturating_sub(1);
        }
        Ok(())
    }

    /// Reads the first `count` expiry keys present at or after `start` (the floor) into the
    /// front, through the overlay, and notes how far the front then covers.
    fn read_front(&mut self, start: &[u8], count: usize) -> Result<(), StorageError> {
        let end = keys::EXPIRY_END;
        let pending: Vec<_> = self
            .overlay
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .map(|(k, v)| (k.clone(), v.is_some()))
            .collect();
        // Only a pending delete can take a key on the disk out of the front (a pending insert
        // adds one): that many more from the disk leave at least `count` present keys (or all
        // there are) after the merge.
        let deletes = pending.iter().filter(|(_, present)| !*present).count();
        let mut merged: BTreeMap<Vec<u8>, bool> = self
            .disk
            .scan(start, end, Order::Ascending, count + deletes)?
            .into_iter()
            .map(|(k, _)| (k, true))
            .collect();
        merged.extend(pending);
        self.front = merged
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(k, _)| k)
            .take(count)
            .collect();
        self.front_end = Some(match self.front.last() {
            Some(last) if self.front.len() == count => [last.as_slice(), &[0]].concat(),
            _ => end.to_vec(),
        });
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
        batch
    }
}

/// The keys below `end`, as range bounds over byte strings.
fn below(end: &[u8]) -> (std::ops::Bound<&[u8]>, std::ops::Bound<&[u8]>) {
    (std::ops::Bound::Unbounded, std::ops::Bound::Excluded(end))
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
        let front = ExpiryFront {
            floor: batch.expiry_floor.clone(),
            keys: std::mem::take(&mut batch.front),
            end: batch.front_end.take(),
        };
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
        if let Err(error) = self.disk.write(writes) {
            // The batch may still have been taken (a write-behind layer keeps it pending when
            // its checkpoint fails): nothing is known about the expiry index any more.
            self.expiry_floor.reset();
            return Err(error.into());
        }
        self.expiry_floor
            .put(front, self.expiry_read_ahead.saturating_mul(2));
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
        // The whole state is replaced: nothing is known about its expiry keys.
        self.expiry_floor.reset();
        self.forget_key_index();
        let installed = snapshot::install(self, meta, snapshot).await;
        self.expiry_floor.reset();
        self.forget_key_index();
        installed
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::current(self)
    }
}
