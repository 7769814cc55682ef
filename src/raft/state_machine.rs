//! The replicated state machine on a [`Disk`]: openraft's `RaftStateMachine`, committed entries
//! in, inventory state out.
//!
//! Each `apply` call turns a run of committed entries into **one atomic write batch** holding the
//! changed records, idempotency entries, expired-key deletions, the log clock, the last applied
//! log id and the last membership. A crash therefore never leaves data and "applied up to" out of
//! step: on restart openraft re-applies from the log exactly what the batch did not cover. The
//! call reads as openraft's own examples do: begin a batch ([`ApplyBatch`]), apply the entries
//! into it, write it, reply.
//!
//! The batch is not flushed: the Raft log (flushed on a quorum before commit) is the durable
//! record, and replaying it is idempotent here. In a node the disk is a
//! [`crate::storage::Resident`]: the state in memory, its batches gathered into journal records
//! of a few hundred KiB: what a crash can take is still whole batches only. Two
//! places do flush, because they let openraft forget log entries: building a snapshot (after
//! which the log may be purged) and installing one. Snapshots themselves are files
//! (`raft::snapshot`, which gets the parts of this store it needs, `storage::snapshots`).
//!
//! Decisions inside apply come only from the entries: log time is
//! [`inventory::next_log_time`] of the previous log time (kept under `keys::CLOCK`, so it is in
//! every snapshot) and the entry's stamp: never backwards (a leader stamps at most
//! [`inventory::LOG_TIME_STEP_MAX_MS`] past the log time it has applied,
//! [`StateMachineStore::log_time_ms`]).
//!
//! Idempotency entries are kept in the *idempotency log*
//! ([`idempotency_log`](super::idempotency_log)): found by identity, remembered, and forgotten
//! from the oldest (a few expired ones per entry, so that batch boundaries, which differ
//! between nodes, never change the result; and past the cap). Each apply call works on an
//! [`IdempotencyLog`] inside its batch.
//!
//! A call whose entries carry many lines (batches: [`APPLY_OFF_RUNTIME_LINES_MIN`]) runs on
//! the blocking pool, not on the node's one runtime thread: applying 8,000 lines takes tens
//! of milliseconds, and meanwhile that thread could not append, acknowledge or replicate the
//! next entries, nor read requests. `perf` under batches of 8,000 lines from 8 clients found
//! each node's thread under 40% busy and a third of both cores idle: leader and followers
//! took turns waiting for each other's apply (docs/performance.md). Smaller calls stay on the
//! runtime thread: handing them over would cost two cross-CPU wake-ups each. Where it runs
//! changes nothing in what it does: openraft awaits each call before the next.
//!
//! A storage or decode failure is returned to openraft as an `io::Error`, which stops the node:
//! a replica that cannot apply faithfully must not answer.

use std::io;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};

use super::events::{self, EventPage, EventsError, Feed, FeedHead, FeedRetention};
use super::idempotency_log::{ChunkLayout, IdempotencyLog, KeyIndex, LogSettings, SharedKeyIndex};
use super::pending_writes::PendingWrites;
use super::reservations::{self, Reservations, RetentionSettings};
use super::snapshot::{self, Capture, SnapshotBuilder, SnapshotParts};
use super::types::{Applied, Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use super::watch;
use crate::inventory::{
    self, ApplyContext, EventFilter, MemoryState, Record, RecordKey, Request, Reservation,
    ReservationId,
};
use crate::storage::fs::blocking;
use crate::storage::snapshots::{SnapshotDir, SnapshotFile};
use crate::storage::{
    self, decode, encode, keys, Disk, KeyValue, Order, StorageError, Write, WriteBatch,
};
use crate::telemetry::Telemetry;

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
    /// The idempotency log's cap and chunk size (see [`LogSettings`]).
    idempotency: LogSettings,
    /// How long and how many ended reservations are remembered (see [`RetentionSettings`]).
    retention: RetentionSettings,
    snapshots: SnapshotDir,
    /// Before-images for a snapshot being built (see `raft::snapshot`).
    capture: Arc<Capture>,
    /// Where each idempotency key is stored, as of the last apply call.
    key_index: SharedKeyIndex,
    /// Where snapshot builds and installs are reported, if anywhere.
    telemetry: Option<Arc<Telemetry>>,
    /// How many events the feed keeps, and how long (see [`FeedRetention`]).
    feed_retention: FeedRetention,
    /// The feed's last seq, published after each apply call and snapshot install.
    feed_head: Arc<FeedWatch>,
}

/// The channel readers of the feed wait on. It keeps a receiver of its own so that publishing
/// never fails for want of one.
struct FeedWatch {
    sender: watch::Sender<u64>,
    _keep: watch::Receiver<u64>,
}

impl Default for FeedWatch {
    fn default() -> Self {
        let (sender, keep) = watch::channel(0);
        Self {
            sender,
            _keep: keep,
        }
    }
}

impl FeedWatch {
    fn publish(&self, last_seq: u64) {
        self.sender.send_if_modified(|seen| {
            let moved = *seen != last_seq;
            *seen = last_seq;
            moved
        });
    }
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

    /// The product's store as a node opens it (`node::start`): format-4 reservations are packed
    /// ([`reservations::pack_format4_reservations`]) and records created before the SKU index
    /// existed get their index entries ([`reservations::build_sku_index`]) first, so that its
    /// state is the one every other opened replica holds.
    pub fn open(disk: Arc<dyn Disk>, snapshots: SnapshotDir) -> Result<Self, StorageError> {
        reservations::pack_format4_reservations(&*disk)?;
        reservations::build_sku_index(&*disk)?;
        Ok(Self::new(disk, snapshots))
    }

    /// A store that runs `apply` on each command instead (see [`ApplyFn`]).
    pub fn with_apply(disk: Arc<dyn Disk>, snapshots: SnapshotDir, apply: ApplyFn) -> Self {
        Self {
            disk,
            apply,
            idempotency: LogSettings::default(),
            retention: RetentionSettings::default(),
            snapshots,
            capture: Arc::default(),
            key_index: SharedKeyIndex::default(),
            telemetry: None,
            feed_retention: FeedRetention::default(),
            feed_head: Arc::default(),
        }
    }

    /// The same store with another feed retention (`[events]` of the configuration; every
    /// replica must use the same, see [`FeedRetention`]).
    pub fn with_feed_retention(mut self, retention: FeedRetention) -> Self {
        assert!(
            retention.kept_max >= events::EVENTS_PER_CHUNK,
            "the feed keeps at least one chunk"
        );
        self.feed_retention = retention;
        self
    }

    /// Events with seq > `after` matching `filter`, as of the last apply on this node (see
    /// [`events::read_page`]).
    pub fn events(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventPage, EventsError> {
        events::read_page(&*self.disk, after, limit, filter)
    }

    /// Whether this store lacks a feed it should have: it applied entries before the feed
    /// existed and has not applied a `StartFeed` yet (see [`events`]'s module docs).
    pub fn feed_missing(&self) -> Result<bool, StorageError> {
        Ok(self.applied()?.is_some() && events::position(&*self.disk)?.is_none())
    }

    /// The feed's last and oldest kept seq on this node.
    pub fn feed_head(&self) -> Result<FeedHead, StorageError> {
        events::head(&*self.disk)
    }

    /// A receiver of the feed's last seq: changed after each apply call that numbered events
    /// and after a snapshot install.
    pub fn subscribe_feed(&self) -> watch::Receiver<u64> {
        let receiver = self.feed_head.sender.subscribe();
        self.feed_head
            .publish(self.feed_head().map_or(0, |head| head.last_seq));
        receiver
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
    /// same cap, see [`IDEMPOTENCY_KEYS_MAX`](super::idempotency_log::IDEMPOTENCY_KEYS_MAX)).
    pub fn with_idempotency_keys_max(mut self, keys_max: u64) -> Self {
        self.idempotency.keys_max = keys_max;
        self
    }

    /// The same store with another number of idempotency entries per chunk (tests; every
    /// replica must use the same, see [`KEYS_PER_CHUNK`](super::idempotency_log::KEYS_PER_CHUNK)).
    pub fn with_keys_per_chunk(mut self, entries: u64) -> Self {
        self.idempotency.layout = ChunkLayout::new(entries);
        self
    }

    /// The same store with another retention of ended reservations (tests; every replica must
    /// use the same, see [`reservations::ENDED_RETENTION_MS`] and
    /// [`reservations::ENDED_RESERVATIONS_KEPT_MAX`]).
    pub fn with_retention(mut self, retention: RetentionSettings) -> Self {
        self.retention = retention;
        self
    }

    /// Idempotency entries per chunk of this store's idempotency log.
    pub fn keys_per_chunk(&self) -> u64 {
        self.idempotency.layout.entries_per_chunk()
    }

    pub fn disk(&self) -> &Arc<dyn Disk> {
        &self.disk
    }

    pub fn snapshot_dir(&self) -> &SnapshotDir {
        &self.snapshots
    }

    /// What the snapshot code works on (see `raft::snapshot`).
    fn snapshot_parts(&self) -> SnapshotParts {
        SnapshotParts {
            disk: self.disk.clone(),
            dir: self.snapshots.clone(),
            capture: self.capture.clone(),
            telemetry: self.telemetry.clone(),
            chunk_layout: self.idempotency.layout,
        }
    }

    fn read<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        storage::read(&*self.disk, key)
    }

    /// The record as of the last applied entry on this node.
    pub fn record(&self, key: &RecordKey) -> Result<Option<Record>, StorageError> {
        read_record(&*self.disk, key)
    }

    /// A reservation, held or ended, as of the last applied entry, while it is remembered.
    pub fn reservation(&self, id: ReservationId) -> Result<Option<Reservation>, StorageError> {
        reservations::reservation(&*self.disk, id)
    }

    /// How many reservations are held, and how many ended ones are remembered.
    pub fn reservation_counts(&self) -> Result<(u64, u64), StorageError> {
        reservations::counts(&*self.disk)
    }

    /// Every store's record of `sku`, ordered by store id, at most `limit`.
    pub fn sku_records(&self, sku: &str, limit: usize) -> Result<Vec<Record>, StorageError> {
        reservations::sku_records(&*self.disk, sku, limit)
    }

    /// A page of `store_id`'s records in SKU order, strictly after `after_sku`, at most
    /// `limit`; and whether more follow.
    pub fn store_records(
        &self,
        store_id: &str,
        after_sku: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Record>, bool), StorageError> {
        reservations::store_records(&*self.disk, store_id, after_sku, limit)
    }

    /// The held reservations due at log time `now_ms`, in deadline order, at most `limit`
    /// (for the leader's expiry proposer: a bounded scan of the due index, off the write path).
    pub fn due_holds(&self, now_ms: u64, limit: usize) -> Result<Vec<ReservationId>, StorageError> {
        reservations::due_holds(&*self.disk, now_ms, limit)
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

    /// The state as of now, as a snapshot point.
    fn snapshot_point(&self) -> Result<SnapshotMeta, StorageError> {
        let (applied, membership) = self.applied_and_membership()?;
        Ok(SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        })
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
    apply: ApplyFn,
    /// Pending writes of records, reservations and their indexes (see [`PendingWrites`]).
    pending: PendingWrites<'d>,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Log time of the last command entry applied, in ms; 0 before the first (see
    /// [`inventory::next_log_time`]).
    clock_ms: u64,
    /// The idempotency log as this call changes it.
    idempotency: IdempotencyLog<'d>,
    /// The reservation state's counters as this call changes them.
    reservations: Reservations<'d>,
    /// The event feed as this call appends to it.
    feed: Feed<'d>,
}

impl<'d> ApplyBatch<'d> {
    fn begin(store: &'d StateMachineStore, key_index: KeyIndex) -> Result<Self, StorageError> {
        let applied = store.applied()?;
        Ok(Self {
            apply: store.apply,
            pending: PendingWrites::new(&*store.disk),
            applied,
            feed: Feed::begin(&*store.disk, store.feed_retention, applied.is_none())?,
            membership: store.read(keys::MEMBERSHIP)?.unwrap_or_default(),
            clock_ms: store.read(keys::CLOCK)?.unwrap_or(0),
            idempotency: IdempotencyLog::begin(&*store.disk, key_index, store.idempotency)?,
            reservations: Reservations::begin(&*store.disk, store.retention)?,
        })
    }

    fn apply_entry(&mut self, entry: Entry) -> Result<Applied, StorageError> {
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
        self.idempotency.purge_expired(self.clock_ms)?;
        self.reservations.forget_ended(self.clock_ms)?;
        self.feed.forget(self.clock_ms)?;

        // A packed batch's lines are decoded here, once (`inventory::PackedLines`): its
        // records are loaded below, and apply then finds a `Command::Batch`.
        let request = request.unpacked();
        let view = self.read_view(&request)?;
        let context = ApplyContext {
            log_index,
            now_ms: self.clock_ms,
        };
        let (response, effects) = (self.apply)(&view, &request, context);
        self.store_records(&view, &effects.records);
        for reservation in &effects.reservations {
            let before = view.reservations.get(&reservation.id);
            self.reservations.store(before, reservation)?;
        }
        if let Some((id, entry)) = effects.idempotency {
            // A new entry for the key: it replaces the stored one (expired), if any.
            self.idempotency.remember(&id, entry)?;
        }
        self.feed.append(effects.events)?;
        if request.command == inventory::Command::StartFeed {
            self.feed.start(log_index)?;
        }
        Ok(response)
    }

    /// Writes the records an entry changed; a record it created also gets its SKU index entry.
    fn store_records(&mut self, view: &MemoryState, records: &[Record]) {
        for record in records {
            assert!(record.quantity >= 0, "apply produced negative stock");
            assert!(
                record.reserved >= 0,
                "apply produced a negative reserved count"
            );
            let before = view.records.get(&record.key);
            // One per change; a batch may change a record several times in one entry.
            debug_assert!(
                record.version > before.map_or(0, |r| r.version),
                "a record's version grows with every change"
            );
            debug_assert!(
                before.is_none_or(|r| record.updated_at_ms >= r.updated_at_ms),
                "log time never goes back: a change is stamped no earlier than the last one"
            );
            if before.is_none() {
                self.pending.put_empty(keys::sku_index(&record.key));
            }
            self.pending.put(keys::record(&record.key), record);
        }
    }

    /// What `request` may see of the state: the records it names, the reservations it names
    /// and the records of their lines, the held count, and the stored entry of its idempotency
    /// key (live or expired), if any.
    fn read_view(&mut self, request: &Request) -> Result<MemoryState, StorageError> {
        let keys = request.command.keys();
        let mut view = MemoryState::default();
        view.records.reserve(keys.len());
        for key in keys {
            self.load_record(&mut view, key)?;
        }
        for &id in request.command.reservation_ids() {
            if view.reservations.contains_key(&id) {
                continue;
            }
            if let Some(reservation) = self.reservations.load(id)? {
                for line in &reservation.lines {
                    self.load_record(&mut view, &line.key)?;
                }
                view.reservations.insert(id, reservation);
            }
        }
        view.held_count = self.reservations.held_count();
        if let Some(idempotency) = &request.idempotency {
            let id = idempotency.id();
            if let Some(entry) = self.idempotency.find(&id)? {
                view.idempotency.insert(id, entry);
            }
        }
        Ok(view)
    }

    /// Puts `key`'s record into `view`, unless it is there already or does not exist.
    fn load_record(&self, view: &mut MemoryState, key: &RecordKey) -> Result<(), StorageError> {
        if !view.records.contains_key(key) {
            if let Some(record) = self.pending.get::<Record>(&keys::record(key))? {
                view.records.insert(key.clone(), record);
            }
        }
        Ok(())
    }

    /// The call's writes as one batch, the key index as of that batch, and the feed's last seq.
    fn finish(self) -> (WriteBatch, KeyIndex, u64) {
        let mut batch = WriteBatch::default();
        self.pending.write_into(&mut batch);
        self.reservations.finish(&mut batch);
        let last_seq = self.feed.finish(&mut batch);
        batch.put(keys::APPLIED.to_vec(), encode(&self.applied));
        batch.put(keys::MEMBERSHIP.to_vec(), encode(&self.membership));
        batch.put(keys::CLOCK.to_vec(), encode(&self.clock_ms));
        let key_index = self.idempotency.finish(&mut batch);
        (batch, key_index, last_seq)
    }
}

/// Fewest lines (`Command::line_count`) the entries of one apply call carry for it to run off
/// the runtime thread (see the module docs): a batch of a few hundred lines and more.
pub const APPLY_OFF_RUNTIME_LINES_MIN: usize = 256;

/// The lines an entry carries (0 for a blank or membership entry).
fn entry_lines(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(request) => request.command.line_count(),
        EntryPayload::Blank | EntryPayload::Membership(_) => 0,
    }
}

impl StateMachineStore {
    /// Applies `run` (consecutive entries) as one write batch: each entry's result, the key
    /// index as of the batch, and the feed's last seq.
    fn apply_run(
        &self,
        run: Vec<Entry>,
        key_index: KeyIndex,
    ) -> Result<(Vec<Applied>, KeyIndex, u64), StorageError> {
        let mut batch = ApplyBatch::begin(self, key_index)?;
        let applied = (run.into_iter())
            .map(|entry| batch.apply_entry(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let (writes, key_index, last_seq) = batch.finish();
        self.capture.record_before_write(
            writes.writes.iter().map(|write| match write {
                Write::Put(key, _) | Write::Delete(key) => key,
            }),
            |key| self.disk.get(key),
        )?;
        self.disk.write(writes)?;
        Ok((applied, key_index, last_seq))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        if snapshot::install_interrupted(&*self.disk)? {
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
        let key_index = self
            .key_index
            .take(&self.disk, self.idempotency.layout)
            .await?;
        let mut run = Vec::new();
        let mut responders = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            run.push(entry);
            responders.push(responder);
        }
        let lines: usize = run.iter().map(entry_lines).sum();
        let store = self.clone();
        let apply = move || Ok(store.apply_run(run, key_index)?);
        // On a failure the key index is left out, built again next time.
        let (applied, key_index, last_seq) = if lines >= APPLY_OFF_RUNTIME_LINES_MIN {
            blocking(apply).await?
        } else {
            apply()?
        };
        self.key_index.put_back(key_index);
        self.feed_head.publish(last_seq);
        for (responder, applied) in responders.into_iter().zip(applied) {
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::begin(self.snapshot_parts(), self.snapshot_point())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        // The whole state is replaced: the key index no longer describes it.
        self.key_index.forget();
        let installed = snapshot::install(&self.snapshot_parts(), meta, snapshot).await;
        self.key_index.forget();
        installed?;
        // A snapshot of a version before the SKU index gets it now, before anything applies.
        let disk = self.disk.clone();
        let indexed = blocking(move || Ok(reservations::build_sku_index(&*disk)?)).await?;
        if indexed > 0 {
            tracing::info!(
                records = indexed,
                "built the SKU index of an installed snapshot"
            );
        }
        self.feed_head.publish(self.feed_head()?.last_seq);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::current(&self.snapshots)
    }
}
