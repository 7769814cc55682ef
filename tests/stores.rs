//! The stores above the storage seam: recovery after close/reopen, snapshot round trips, and the
//! simulated disk's crash semantics as the stores see them.
#![cfg(not(madsim))]

#[path = "support/snapshot_files.rs"]
mod snapshot_files;

use std::sync::Arc;

use futures::stream;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership, RaftLogReader};
use snapshot_files::{built_snapshot, old_snapshot, transfer};
use stockraft::inventory::{proposal_stamp, Command, RecordKey, Request, LOG_TIME_STEP_MAX_MS};
use stockraft::raft::idempotency_log::{self, upgrade_key_layout};
use stockraft::raft::log_store::LogStore;
use stockraft::raft::state_machine::{read_state_pairs, StateMachineStore};
use stockraft::raft::{Entry, LogId, TypeConfig};
use stockraft::storage::fs::{Fs, SimFs, StdFs};
use stockraft::storage::snapshots::SnapshotDir;
use stockraft::storage::wal::{Wal, WalOptions};
use stockraft::storage::{
    encode, keys, Disk, KeyValue, Resident, ResidentPolicy, SimDisk, WriteBatch,
};

/// The state machine's resident state on `fs`, writing a journal record every `record_bytes`
/// and an image once a little journal gathered: small runs cross every boundary.
fn resident_on(fs: &SimFs, record_bytes: usize) -> Arc<Resident> {
    Arc::new(
        Resident::open(
            Arc::new(fs.clone()),
            std::path::Path::new("/node/state"),
            ResidentPolicy::inline(record_bytes, 8 << 10, 4 << 10),
        )
        .expect("opening the resident state"),
    )
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
        index,
    )
}

fn membership_entry(index: u64) -> Entry {
    let members = [(1, openraft::BasicNode { addr: "a".into() })]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(Membership::new(vec![[1].into()], members).unwrap()),
    }
}

fn create_entry(index: u64, sku: &str, quantity: i64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request {
            command: Command::Create {
                key: RecordKey::new("s1", sku).unwrap(),
                initial_quantity: quantity,
            },
            proposed_at_ms: 1_000 + index,
            idempotency: None,
        }),
    }
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|e| Ok((e, None)));
    sm.apply(stream::iter(items)).await.expect("apply");
}

/// Appends and waits for the fsync that openraft's callback would wait for.
async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let callback = openraft::storage::IOFlushed::<TypeConfig>::noop();
    log.append(entries, callback).await.expect("append");
    log.wal().sync().await.expect("sync");
}

/// A state machine on `disk` with its snapshots on a simulated file system of its own.
fn sim_store(disk: Arc<dyn Disk>) -> StateMachineStore {
    let snapshots = SnapshotDir::open(
        Arc::new(SimFs::new()),
        std::path::Path::new("/node/snapshots"),
    )
    .expect("opening the snapshot directory");
    StateMachineStore::open(disk, snapshots).expect("opening the state machine")
}

/// A fresh store that received `snapshot` the way a follower does and installed it.
async fn installed_on_a_fresh_store(snapshot: &stockraft::raft::Snapshot) -> StateMachineStore {
    let mut target = sim_store(Arc::new(SimDisk::new()));
    let received = transfer(&snapshot.snapshot, &target);
    target
        .install_snapshot(&snapshot.meta, received)
        .await
        .unwrap();
    target
}

/// A fresh store that applied `entries`.
async fn replayed(entries: Vec<Entry>) -> StateMachineStore {
    let mut store = sim_store(Arc::new(SimDisk::new()));
    apply(&mut store, entries).await;
    store
}

fn log_store(fs: Arc<dyn Fs>, dir: &std::path::Path) -> LogStore {
    LogStore::new(Wal::open(fs, &dir.join("wal"), WalOptions::default()).expect("opening the WAL"))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn log_and_state_machine_survive_close_and_reopen_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    // The product's resident state on real files, opened twice.
    let open_state = || -> Arc<dyn Disk> {
        Arc::new(
            Resident::open(
                Arc::new(StdFs),
                &dir.path().join("state"),
                ResidentPolicy::product(),
            )
            .unwrap(),
        )
    };
    block_on(async {
        {
            let disk = open_state();
            let mut log = log_store(Arc::new(StdFs), dir.path());
            let snapshots =
                SnapshotDir::open(Arc::new(StdFs), &dir.path().join("snapshots")).unwrap();
            let mut sm = StateMachineStore::new(disk.clone(), snapshots);
            let entries = vec![
                membership_entry(1),
                create_entry(2, "a", 5),
                create_entry(3, "b", 7),
            ];
            append(&mut log, entries.clone()).await;
            log.save_vote(&openraft::Vote::new(1, 1)).await.unwrap();
            apply(&mut sm, entries).await;
            disk.flush().await.unwrap();
        }
        let disk = open_state();
        let mut log = log_store(Arc::new(StdFs), dir.path());
        let snapshots = SnapshotDir::open(Arc::new(StdFs), &dir.path().join("snapshots")).unwrap();
        let mut sm = StateMachineStore::new(disk, snapshots);
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, 3)));
        assert_eq!(
            log.read_vote().await.unwrap(),
            Some(openraft::Vote::new(1, 1))
        );
        let (applied, membership) = sm.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
        assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
        let record = sm
            .record(&RecordKey::new("s1", "b").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(record.quantity, 7);
    });
}

#[test]
fn a_snapshot_installed_on_an_empty_store_reproduces_the_state_byte_for_byte() {
    block_on(async {
        let source_disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let mut source = sim_store(source_disk);
        apply(
            &mut source,
            vec![
                membership_entry(1),
                create_entry(2, "a", 5),
                create_entry(3, "b", 9),
            ],
        )
        .await;
        let snapshot = source
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 3)));

        let mut target = sim_store(Arc::new(SimDisk::new()));
        apply(&mut target, vec![create_entry(0, "stale", 1)]).await;
        let received = transfer(&snapshot.snapshot, &target);
        target
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        assert_eq!(target.state_pairs().unwrap(), source.state_pairs().unwrap());
        assert!(target
            .record(&RecordKey::new("s1", "stale").unwrap())
            .unwrap()
            .is_none());
        let current = target.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        let (applied, _) = target.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
    });
}

#[test]
fn an_unflushed_apply_is_lost_in_a_crash_but_an_appended_entry_is_not() {
    block_on(async {
        let sim = SimDisk::new();
        let files = SimFs::new();
        let dir = std::path::Path::new("/node");
        let disk: Arc<dyn Disk> = Arc::new(sim.clone());
        let mut log = log_store(Arc::new(files.clone()), dir);
        let mut sm = sim_store(disk);
        let entries = vec![membership_entry(1), create_entry(2, "a", 5)];
        append(&mut log, entries.clone()).await;
        apply(&mut sm, entries).await;
        drop(log);
        sim.crash();
        files.crash(|_| 0);
        // The log was synced before the append was acknowledged: it survives.
        let log = log_store(Arc::new(files.clone()), dir);
        let mut reader = log.clone().get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(0..10).await.unwrap().len(), 2);
        // Applying is not flushed (the log is the durable record): it is redone on restart.
        let (applied, _) = sm.applied_state().await.unwrap();
        assert_eq!(applied, None);
    });
}

#[test]
fn replaying_the_same_log_on_two_stores_gives_identical_bytes() {
    block_on(async {
        let entries: Vec<Entry> = std::iter::once(membership_entry(1))
            .chain((2..50).map(|i| create_entry(i, &format!("sku-{}", i % 7), i as i64)))
            .collect();
        let mut a = sim_store(Arc::new(SimDisk::new()));
        let mut b = sim_store(Arc::new(SimDisk::new()));
        apply(&mut a, entries.clone()).await;
        // Same entries, different batch boundaries.
        for chunk in entries.chunks(3) {
            apply(&mut b, chunk.to_vec()).await;
        }
        assert_eq!(a.state_pairs().unwrap(), b.state_pairs().unwrap());
        assert_eq!(b.applied().unwrap(), Some(log_id(1, 49)));
    });
}

#[test]
fn an_older_snapshot_built_late_does_not_replace_a_newer_installed_one() {
    block_on(async {
        let mut follower = sim_store(Arc::new(SimDisk::new()));
        apply(
            &mut follower,
            vec![membership_entry(1), create_entry(2, "a", 5)],
        )
        .await;
        // A build starts at index 2 (captured now) ...
        let mut late_builder = follower.get_snapshot_builder().await;
        // ... meanwhile the leader's newer snapshot (index 4) is installed ...
        let mut leader = sim_store(Arc::new(SimDisk::new()));
        apply(
            &mut leader,
            vec![
                membership_entry(1),
                create_entry(2, "a", 5),
                create_entry(3, "b", 1),
                create_entry(4, "c", 2),
            ],
        )
        .await;
        let newer = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let received = transfer(&newer.snapshot, &follower);
        follower
            .install_snapshot(&newer.meta, received)
            .await
            .unwrap();
        // ... and the old build finishes last (it is abandoned: the install replaced the state
        // it was capturing): the current snapshot stays the newer one.
        let _ = late_builder.build_snapshot().await;
        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta.last_log_id, Some(log_id(1, 4)));
    });
}

/// What the scans of a [`FaultyScans`] disk do wrong.
enum ScanFault {
    None,
    /// Fail.
    Fail,
    /// Leave out one key: what a scan racing a write can return (a page read from the
    /// write-behind layer before a write re-created the key, merged with the disk below read
    /// after it).
    Hide(Vec<u8>),
}

/// A disk whose scans go wrong as `fault` says (reads and writes still work).
struct FaultyScans {
    inner: SimDisk,
    fault: std::sync::Mutex<ScanFault>,
    /// Scans of the state machine's keys (from `S`) so far.
    state_scans: std::sync::atomic::AtomicUsize,
}

impl FaultyScans {
    fn new() -> Self {
        Self {
            inner: SimDisk::new(),
            fault: std::sync::Mutex::new(ScanFault::None),
            state_scans: Default::default(),
        }
    }

    fn set(&self, fault: ScanFault) {
        *self.fault.lock().unwrap() = fault;
    }
}

impl Disk for FaultyScans {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, stockraft::storage::StorageError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        order: stockraft::storage::Order,
        limit: usize,
    ) -> Result<Vec<stockraft::storage::KeyValue>, stockraft::storage::StorageError> {
        if start.starts_with(b"S") {
            self.state_scans
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        match &*self.fault.lock().unwrap() {
            ScanFault::None => self.inner.scan(start, end, order, limit),
            ScanFault::Fail => Err(stockraft::storage::StorageError::Disk(
                "injected scan failure".into(),
            )),
            ScanFault::Hide(hidden) => {
                let mut found = self.inner.scan(start, end, order, limit)?;
                found.retain(|(key, _)| key != hidden);
                Ok(found)
            }
        }
    }
    fn write(
        &self,
        batch: stockraft::storage::WriteBatch,
    ) -> Result<(), stockraft::storage::StorageError> {
        self.inner.write(batch)
    }
    fn flush(&self) -> stockraft::storage::FlushFuture<'_> {
        self.inner.flush()
    }
}

#[test]
fn a_snapshot_whose_state_could_not_be_read_fails_instead_of_shipping_an_empty_state() {
    block_on(async {
        let disk = Arc::new(FaultyScans::new());
        let mut store = sim_store(disk.clone());
        apply(
            &mut store,
            vec![membership_entry(1), create_entry(2, "a", 5)],
        )
        .await;
        disk.set(ScanFault::Fail);
        let result = store.get_snapshot_builder().await.build_snapshot().await;
        assert!(
            result.is_err(),
            "a snapshot was built from an unreadable state"
        );
        disk.set(ScanFault::None);
        assert!(store.get_current_snapshot().await.unwrap().is_none());
    });
}

#[test]
fn a_key_purged_and_stored_again_during_a_build_in_a_chunk_a_scan_misses_is_in_the_snapshot() {
    block_on(async {
        // At the point: an idempotency key that expires at 1,010 ms of log time, in chunk 0.
        let before = vec![
            membership_entry(1),
            keyed_create_entry(2, "a", "key-1", 10, 1_000),
        ];
        // During the build: log time passes its expiry (it is purged), then a client uses the
        // same key again (stored anew: its chunk changes).
        let after = vec![
            adjust_entry(3, "a", 1, 2_000),
            keyed_create_entry(4, "b", "key-1", 10, 2_001),
        ];
        let disk = Arc::new(FaultyScans::new());
        let mut store = sim_store(disk.clone());
        apply(&mut store, before.clone()).await;
        let key = store
            .state_pairs()
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .find(|key| key.starts_with(b"Sq"))
            .expect("the idempotency key is stored");
        let mut builder = store.get_snapshot_builder().await;
        apply(&mut store, after).await;
        // The chunk exists, changed, but the builder's scan does not return it.
        disk.set(ScanFault::Hide(key));
        let snapshot = builder.build_snapshot().await.unwrap();

        assert_eq!(
            installed_on_a_fresh_store(&snapshot)
                .await
                .state_pairs()
                .unwrap(),
            replayed(before).await.state_pairs().unwrap(),
            "the key as it was at the point, once"
        );
    });
}

fn keyed_create_entry(index: u64, sku: &str, key: &str, ttl_ms: u64, at_ms: u64) -> Entry {
    scoped_create_entry(index, sku, "", key, ttl_ms, at_ms)
}

fn scoped_create_entry(
    index: u64,
    sku: &str,
    scope: &str,
    key: &str,
    ttl_ms: u64,
    at_ms: u64,
) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request {
            command: Command::Create {
                key: RecordKey::new("s1", sku).unwrap(),
                initial_quantity: 1,
            },
            proposed_at_ms: at_ms,
            idempotency: Some(stockraft::inventory::IdempotencyKey {
                scope: scope.into(),
                key: key.into(),
                ttl_ms,
            }),
        }),
    }
}

#[test]
fn expired_idempotency_keys_are_purged_from_disk_by_later_entries() {
    block_on(async {
        // One entry per chunk: a chunk goes from the disk as its entry is forgotten.
        let mut store = sim_store(Arc::new(SimDisk::new())).with_keys_per_chunk(1);
        let key_count = |store: &StateMachineStore| {
            store
                .state_pairs()
                .unwrap()
                .iter()
                .filter(|(k, _)| k.starts_with(b"Sq"))
                .count()
        };
        apply(
            &mut store,
            vec![
                membership_entry(1),
                keyed_create_entry(2, "a", "k-a", 1_000, 10_000),
                keyed_create_entry(3, "b", "k-b", 1_000, 10_000),
            ],
        )
        .await;
        assert_eq!(key_count(&store), 2, "two keys, one chunk each");
        // Log time passes the expiry: the next entries delete the expired keys.
        apply(
            &mut store,
            vec![keyed_create_entry(4, "c", "k-c", 1_000_000, 20_000)],
        )
        .await;
        assert_eq!(key_count(&store), 1, "only k-c remains");
        assert_eq!(stored_key_names(&store), vec!["k-c".to_string()]);
    });
}

#[test]
fn apply_calls_scan_nothing_once_the_key_index_is_built_even_while_evicting_and_purging() {
    // Format 3 read the next keys to evict from sled's expiry index, a range scan that waited
    // for any checkpoint holding sled's write lock; the idempotency log needs no scan at all.
    block_on(async {
        let disk = Arc::new(FaultyScans::new());
        let mut store = sim_store(disk.clone()).with_idempotency_keys_max(100);
        let scans = || disk.state_scans.load(std::sync::atomic::Ordering::SeqCst);
        // Opening the store built its SKU index (a scan of the records): not an apply call.
        let scans_at_open = scans();
        apply(&mut store, vec![membership_entry(1)]).await;
        for index in 2..100 {
            apply(
                &mut store,
                vec![adjust_entry(index, "a", 1, 10_000 + index)],
            )
            .await;
        }
        // Keyed writes, three times the cap: past it each one evicts the oldest key.
        for index in 100..400 {
            let key = format!("k-{index}");
            let entry =
                keyed_create_entry(index, &format!("s{index}"), &key, 60_000, 10_000 + index);
            apply(&mut store, vec![entry]).await;
        }
        assert_eq!(
            scans() - scans_at_open,
            1,
            "one scan, building the key index, for 399 apply calls"
        );
        let expected: Vec<String> = (300..400).map(|index| format!("k-{index}")).collect();
        assert_eq!(stored_key_names(&store), expected, "the newest 100 keys");
        let before_purges = scans();
        // Past the time to live, later entries purge every key.
        for index in 400..600 {
            apply(
                &mut store,
                vec![adjust_entry(index, "a", 1, 100_000 + index)],
            )
            .await;
        }
        assert_eq!(scans(), before_purges, "purges scan nothing either");
        assert!(
            stored_key_names(&store).is_empty(),
            "every expired key purged"
        );
        let chunks = store
            .state_pairs()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(b"Sq"))
            .count();
        assert!(
            chunks <= 1,
            "{chunks} chunks left: forgotten chunks are deleted"
        );
    });
}

fn adjust_entry(index: u64, sku: &str, delta: i64, at_ms: u64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request {
            command: Command::Adjust {
                key: RecordKey::new("s1", sku).unwrap(),
                delta,
                expected_version: None,
            },
            proposed_at_ms: at_ms,
            idempotency: None,
        }),
    }
}

#[test]
fn a_snapshot_built_while_applies_continue_holds_exactly_the_state_at_its_point() {
    snapshot_while_applies_continue(Arc::new(SimDisk::new()));
}

#[test]
fn on_the_resident_state_a_snapshot_built_while_applies_continue_holds_the_state_at_its_point() {
    // A journal record per write and frequent images: the applies after the point are in the
    // map the builder walks, so only the before-images can give the state at the point. A scan
    // racing a write is
    // `a_key_purged_and_stored_again_during_a_build_in_a_chunk_a_scan_misses_is_in_the_snapshot`.
    snapshot_while_applies_continue(resident_on(&SimFs::new(), 1));
}

#[test]
fn a_power_cut_loses_whole_batches_only_and_the_log_replays_the_rest() {
    block_on(async {
        let entries: Vec<Entry> = std::iter::once(membership_entry(1))
            .chain((2..120).map(|i| match i % 3 {
                0 => create_entry(i, &format!("sku-{i}"), i as i64),
                1 => keyed_create_entry(i, &format!("k-{i}"), &format!("key-{i}"), 50, 1_000 + i),
                _ => adjust_entry(i, &format!("sku-{}", i - 2), 1, 1_000 + i),
            }))
            .collect();
        let mut reference = sim_store(Arc::new(SimDisk::new()));
        apply(&mut reference, entries.clone()).await;
        for (record_bytes, torn_seed) in [(1, 0u64), (300, 1), (3_000, 2), (1 << 20, 3), (300, 4)] {
            let files = SimFs::new();
            let disk = resident_on(&files, record_bytes);
            let mut store = sim_store(disk.clone());
            for (n, chunk) in entries.chunks(4).enumerate() {
                apply(&mut store, chunk.to_vec()).await;
                // A snapshot build flushes the disk (here: once, part way).
                if n == 17 {
                    disk.flush().await.unwrap();
                }
            }
            drop(store);
            // A power cut keeping a torn, seeded prefix of what was written since the flush.
            let mut draw = torn_seed;
            files.crash(|unsynced| {
                draw = draw.wrapping_mul(6364136223846793005).wrapping_add(1);
                (draw >> 33) as usize % (unsynced + 1)
            });
            disk.reload().unwrap();
            let mut restarted = sim_store(disk);
            let (applied, _) = restarted.applied_state().await.unwrap();
            let kept = applied.map_or(0, |id| id.index) as usize;
            assert!(kept >= 72, "what was flushed survives (kept {kept})");
            // What survived is exactly the state after entry `kept`: no half of an apply.
            let mut prefix = sim_store(Arc::new(SimDisk::new()));
            apply(&mut prefix, entries[..kept].to_vec()).await;
            assert_eq!(
                restarted.state_pairs().unwrap(),
                prefix.state_pairs().unwrap(),
                "journal records of {record_bytes} bytes: kept state is that of entry {kept}"
            );
            // openraft re-applies the log from there.
            apply(&mut restarted, entries[kept..].to_vec()).await;
            assert_eq!(
                restarted.state_pairs().unwrap(),
                reference.state_pairs().unwrap()
            );
        }
    });
}

fn snapshot_while_applies_continue(disk: Arc<dyn Disk>) {
    block_on(async {
        // Up to the snapshot point: records a..e, and keyed creates whose keys expire at 20 s.
        let mut before: Vec<Entry> = vec![membership_entry(1)];
        for (i, sku) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            before.push(create_entry(2 + i as u64, sku, 10));
        }
        before.push(keyed_create_entry(7, "k1", "key-1", 10_000, 10_000));
        before.push(keyed_create_entry(8, "k2", "key-2", 10_000, 10_000));
        // After the point: changes to existing records, new records, and log time past the
        // keys' expiry (their deletion), all while the build is in progress.
        let after = vec![
            adjust_entry(9, "a", 5, 30_000),
            adjust_entry(10, "c", -3, 30_000),
            create_entry(11, "f", 1),
            keyed_create_entry(12, "k3", "key-3", 10_000, 30_000),
        ];

        let mut store = sim_store(disk);
        apply(&mut store, before.clone()).await;
        let mut builder = store.get_snapshot_builder().await;
        apply(&mut store, after).await;
        let snapshot = builder.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 8)));

        let reference = replayed(before).await;
        assert_eq!(
            installed_on_a_fresh_store(&snapshot)
                .await
                .state_pairs()
                .unwrap(),
            reference.state_pairs().unwrap(),
            "the snapshot is the state at its point, not a mix with later applies"
        );
        // The live store did move on.
        assert_ne!(
            store.state_pairs().unwrap(),
            reference.state_pairs().unwrap()
        );
    });
}

#[test]
fn an_install_cut_short_reports_nothing_applied_until_the_snapshot_is_installed_again() {
    block_on(async {
        let fs = SimFs::new();
        let snapshots =
            SnapshotDir::open(Arc::new(fs.clone()), std::path::Path::new("/n/snapshots")).unwrap();
        let disk = SimDisk::new();
        let mut store = StateMachineStore::open(Arc::new(disk.clone()), snapshots).unwrap();
        apply(
            &mut store,
            vec![
                membership_entry(1),
                create_entry(2, "a", 5),
                create_entry(3, "b", 6),
            ],
        )
        .await;
        let snapshot = store
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let expected = store.state_pairs().unwrap();
        // A crash in the middle of an install: the marker is on disk, the state half cleared.
        let mut half = stockraft::storage::WriteBatch::default();
        half.put(
            stockraft::storage::keys::INSTALLING.to_vec(),
            stockraft::storage::encode(&snapshot.meta),
        );
        half.delete(stockraft::storage::keys::record(
            &RecordKey::new("s1", "a").unwrap(),
        ));
        disk.write(half).unwrap();
        let (applied, _) = store.applied_state().await.unwrap();
        assert_eq!(
            applied, None,
            "a half-installed state must not claim anything applied"
        );
        // What openraft does at start-up then: install the current snapshot again.
        let current = store.get_current_snapshot().await.unwrap().unwrap();
        store
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .unwrap();
        assert_eq!(store.state_pairs().unwrap(), expected);
        let (applied, _) = store.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id(1, 3)));
    });
}

#[test]
fn past_the_cap_the_oldest_idempotency_keys_are_evicted_the_same_way_on_every_replica() {
    block_on(async {
        let cap = 5;
        let entries: Vec<Entry> = std::iter::once(membership_entry(1))
            .chain((2..=21).map(|i| {
                // Ascending log time: key-2 expires first, key-21 last.
                keyed_create_entry(
                    i,
                    &format!("sku-{i}"),
                    &format!("key-{i}"),
                    1_000_000,
                    10_000 + i,
                )
            }))
            .collect();
        let mut a = sim_store(Arc::new(SimDisk::new())).with_idempotency_keys_max(cap);
        let mut b = sim_store(Arc::new(SimDisk::new())).with_idempotency_keys_max(cap);
        apply(&mut a, entries.clone()).await;
        for chunk in entries.chunks(4) {
            apply(&mut b, chunk.to_vec()).await;
        }
        let newest: Vec<String> = (17..=21).map(|i| format!("key-{i}")).collect();
        let mut kept = stored_key_names(&a);
        kept.sort();
        assert_eq!(
            kept, newest,
            "the newest {cap} keys stay, the oldest were evicted"
        );
        assert_eq!(
            a.state_pairs().unwrap(),
            b.state_pairs().unwrap(),
            "deterministic"
        );
        // Every record was still created once: eviction drops keys, never data.
        assert!(a
            .record(&RecordKey::new("s1", "sku-2").unwrap())
            .unwrap()
            .is_some());
    });
}

#[test]
fn a_key_with_a_shorter_time_to_live_is_forgotten_in_its_turn_but_expires_on_time() {
    block_on(async {
        let cap = 3;
        // Long-lived keys (the cap evicts the oldest of them as it goes), then one key with a
        // short time to live, then another long-lived one, then the short-lived key again once
        // it has expired.
        let mut entries: Vec<Entry> = std::iter::once(membership_entry(1))
            .chain((2..=9).map(|i| {
                let (sku, key) = (format!("sku-{i}"), format!("key-{i}"));
                keyed_create_entry(i, &sku, &key, 1_000_000, 10_000 + i)
            }))
            .collect();
        entries.push(keyed_create_entry(10, "short", "short-lived", 5, 10_010));
        entries.push(keyed_create_entry(
            11, "sku-11", "key-11", 1_000_000, 10_011,
        ));
        let reference = {
            let mut store = sim_store(Arc::new(SimDisk::new())).with_idempotency_keys_max(cap);
            for entry in &entries {
                apply(&mut store, vec![entry.clone()]).await;
            }
            store
        };
        assert_eq!(
            stored_key_names(&reference),
            vec!["key-9", "short-lived", "key-11"],
            "forgotten oldest first: the expired key waits for key-9, stored before it"
        );
        // Used again after its expiry: not a replay (the create of `short-2` happens), and its
        // new entry is the newest.
        entries.push(keyed_create_entry(12, "short-2", "short-lived", 5, 10_020));
        let mut reference = reference;
        apply(&mut reference, vec![entries[11].clone()]).await;
        assert_eq!(
            stored_key_names(&reference),
            vec!["key-9", "key-11", "short-lived"]
        );
        assert!(reference
            .record(&RecordKey::new("s1", "short-2").unwrap())
            .unwrap()
            .is_some());
        // The same on a replica with other batch boundaries, on the resident state, restarted
        // in the middle (its key index built again).
        let disk = resident_on(&SimFs::new(), 3);
        let mut replica = sim_store(disk.clone()).with_idempotency_keys_max(cap);
        apply(&mut replica, entries[..6].to_vec()).await;
        disk.flush().await.unwrap();
        let mut replica = sim_store(disk).with_idempotency_keys_max(cap);
        for chunk in entries[6..].chunks(2) {
            apply(&mut replica, chunk.to_vec()).await;
        }
        assert_eq!(
            replica.state_pairs().unwrap(),
            reference.state_pairs().unwrap()
        );
    });
}

/// The names of the idempotency keys a store holds, in storage order (oldest first).
fn stored_key_names(store: &StateMachineStore) -> Vec<String> {
    stored_idempotency_ids(store)
        .into_iter()
        .map(|(_, key)| key)
        .collect()
}

/// The idempotency keys a store holds, as (scope, key), in storage order.
fn stored_idempotency_ids(store: &StateMachineStore) -> Vec<(String, String)> {
    stored_entries(&store.state_pairs().unwrap(), store.keys_per_chunk())
        .into_iter()
        .map(|(identity, _)| {
            let id = idempotency_log::parse_identity(&identity).unwrap();
            (id.scope, id.key)
        })
        .collect()
}

/// The idempotency entries a format-4 state holds (identity bytes, entry), oldest first: the
/// live slots of its chunks from the front on.
fn stored_entries(
    pairs: &[KeyValue],
    per_chunk: u64,
) -> Vec<(Vec<u8>, stockraft::inventory::IdempotencyEntry)> {
    let front: u64 = pairs
        .iter()
        .find(|(k, _)| k.as_slice() == keys::KEY_FRONT)
        .map_or(0, |(k, v)| stockraft::storage::decode(k, v).unwrap());
    let mut entries = Vec::new();
    for (key, value) in pairs {
        let Some(number) = idempotency_log::chunk_number(key) else {
            continue;
        };
        let chunk: idempotency_log::Chunk = stockraft::storage::decode(key, value).unwrap();
        for (slot, stored) in chunk.into_iter().enumerate() {
            if let (true, Some(stored)) = (number * per_chunk + slot as u64 >= front, stored) {
                entries.push((stored.identity, stored.entry));
            }
        }
    }
    entries
}

#[test]
fn keys_of_different_scopes_are_stored_apart_and_evicted_oldest_first_across_scopes() {
    // Entry i's key: four scopes in turn, the same key names in "" and "token:t", and names
    // that would run together without a separator in "client:a" ("b:c1") and "client:a:b"
    // ("c1").
    let identity = |i: u64| -> (String, String) {
        let n = i / 4;
        let (scope, key) = match i % 4 {
            0 => ("", format!("k{n}")),
            1 => ("client:a", format!("b:c{n}")),
            2 => ("client:a:b", format!("c{n}")),
            _ => ("token:t", format!("k{n}")),
        };
        (scope.to_owned(), key)
    };
    block_on(async {
        let cap = 4;
        let mut entries = vec![membership_entry(1)];
        for i in 2..=13u64 {
            let (scope, key) = identity(i);
            let sku = format!("sku-{i}");
            entries.push(scoped_create_entry(
                i,
                &sku,
                &scope,
                &key,
                1_000_000,
                10_000 + i,
            ));
        }
        let mut a = sim_store(Arc::new(SimDisk::new())).with_idempotency_keys_max(cap);
        let mut b = sim_store(Arc::new(SimDisk::new())).with_idempotency_keys_max(cap);
        let mut unbounded = sim_store(Arc::new(SimDisk::new()));
        apply(&mut a, entries.clone()).await;
        apply(&mut unbounded, entries.clone()).await;
        for chunk in entries.chunks(3) {
            apply(&mut b, chunk.to_vec()).await;
        }
        // Without a cap: one key per entry, however alike their names.
        let mut all = stored_idempotency_ids(&unbounded);
        all.sort();
        let mut expected: Vec<(String, String)> = (2..=13).map(identity).collect();
        expected.sort();
        assert_eq!(all, expected);
        // With the cap, the newest keys stay, whatever their scope, in the order stored.
        let newest: Vec<(String, String)> = (10..=13).map(identity).collect();
        assert_eq!(stored_idempotency_ids(&a), newest);
        assert_eq!(
            a.state_pairs().unwrap(),
            b.state_pairs().unwrap(),
            "deterministic"
        );
    });
}

const DAY_MS: u64 = 24 * 60 * 60 * 1000;
const NOW_MS: u64 = 1_767_225_600_000;

fn adjust_at(index: u64, sku: &str, at_ms: u64) -> Entry {
    adjust_entry(index, sku, 0, at_ms)
}

fn updated_at(store: &StateMachineStore, sku: &str) -> u64 {
    store
        .record(&RecordKey::new("s1", sku).unwrap())
        .unwrap()
        .expect("the record exists")
        .updated_at_ms
}

#[test]
fn a_leader_clock_jump_of_a_day_moves_log_time_one_step_and_expires_no_key() {
    block_on(async {
        let mut store = sim_store(Arc::new(SimDisk::new()));
        apply(
            &mut store,
            vec![
                membership_entry(1),
                keyed_create_entry(2, "a", "order-1", DAY_MS, NOW_MS),
            ],
        )
        .await;
        assert_eq!(store.log_time_ms().unwrap(), NOW_MS);
        // A leader whose clock jumped a day ahead stamps the next entries, each bounded by the
        // log time it has applied.
        for (index, steps) in [(3, 1), (4, 2)] {
            let stamp = proposal_stamp(NOW_MS + DAY_MS, store.log_time_ms().unwrap());
            apply(&mut store, vec![adjust_at(index, "a", stamp)]).await;
            assert_eq!(
                updated_at(&store, "a"),
                NOW_MS + steps * LOG_TIME_STEP_MAX_MS
            );
        }
        assert_eq!(
            stored_idempotency_ids(&store),
            vec![(String::new(), "order-1".to_owned())],
            "the day-long key outlived the jump"
        );
        // A leader with the right clock again cannot move time back.
        let stamp = proposal_stamp(NOW_MS, store.log_time_ms().unwrap());
        apply(&mut store, vec![adjust_at(5, "a", stamp)]).await;
        assert_eq!(updated_at(&store, "a"), NOW_MS + 2 * LOG_TIME_STEP_MAX_MS);
        // An entry stamped a day ahead by a leader without the bound (an older version) is
        // applied as every replica applies it: apply's rule never changed.
        apply(&mut store, vec![adjust_at(6, "a", NOW_MS + DAY_MS)]).await;
        assert_eq!(updated_at(&store, "a"), NOW_MS + DAY_MS);
    });
}

#[test]
fn log_time_survives_a_restart_and_a_snapshot_install() {
    block_on(async {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        let mut store = sim_store(disk.clone());
        apply(
            &mut store,
            vec![
                membership_entry(1),
                keyed_create_entry(2, "a", "order-1", DAY_MS, NOW_MS - 1_000),
            ],
        )
        .await;
        apply(&mut store, vec![adjust_at(3, "a", NOW_MS)]).await;
        let snapshot = store
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut installed = sim_store(Arc::new(SimDisk::new()));
        let received = transfer(&snapshot.snapshot, &installed);
        installed
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        let mut restarted = sim_store(disk);

        // The next entry is stamped a day ahead: each node bounds it from the log time it
        // kept, not from nothing.
        for node in [&mut restarted, &mut installed] {
            let stamp = proposal_stamp(NOW_MS + DAY_MS, node.log_time_ms().unwrap());
            apply(node, vec![adjust_at(4, "a", stamp)]).await;
            assert_eq!(updated_at(node, "a"), NOW_MS + LOG_TIME_STEP_MAX_MS);
        }
        assert_eq!(
            restarted.state_pairs().unwrap(),
            installed.state_pairs().unwrap()
        );
    });
}

/// Expired keys are purged and keys past the cap evicted exactly as a plain model of the rules
/// says, whatever the apply calls' sizes and the chunks' (`idempotency_log::KEYS_PER_CHUNK`):
/// short and long times to live interleaved, keys reused after they expired, a small cap.
#[test]
fn purges_and_evictions_follow_the_rules_whatever_the_batches_and_the_chunks() {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut at_ms = 10_000;
    let mut steps = Vec::new();
    for _ in 0..600 {
        at_ms += rng.random_range(0..60u64);
        let key = format!("k-{:03}", rng.random_range(0..80u32));
        let ttl = [40, 400, 1_000_000][rng.random_range(0..3usize)];
        steps.push((at_ms, key, ttl));
    }
    keys_follow_the_rules(&steps, 12);
}

/// One time to live, many keys stamped in the same millisecond, evictions splitting them: the
/// keys forgotten are those format 3 forgot (the model checks its order as it goes).
#[test]
fn keys_stamped_in_the_same_millisecond_are_forgotten_by_identity_as_format3_did() {
    keys_follow_the_rules(&tied_expiry_steps(300), 14);
}

/// The same with a short time to live: purges, not the cap, split the groups, and keys stored
/// out of identity order make them forget entries behind the front.
#[test]
fn keys_stamped_in_the_same_millisecond_are_purged_by_identity_as_format3_did() {
    keys_follow_the_rules(&tied_expiry_steps(40), 1_000);
}

/// A key of a shorter time to live stored between two of the same expiry ends the run of
/// same-expiry entries the cap evicts from; once it is replaced, the entry after it joins the
/// run, whether the next eviction comes in the same apply call or in another.
#[test]
fn an_entry_past_a_replaced_shorter_lived_one_is_evicted_in_its_turn_in_any_apply_call() {
    let steps: Vec<(u64, String, u64)> = [
        (10_000, "b", 100),
        (10_000, "c", 100),
        (10_000, "x", 50),
        (10_000, "a", 100),
        (10_000, "d", 1_000),
        (10_060, "x", 1_000),
        (10_060, "e", 1_000),
    ]
    .into_iter()
    .map(|(at, key, ttl)| (at, key.to_string(), ttl))
    .collect();
    keys_follow_the_rules(&steps, 4);
}

/// Many keys expire at once, faster than requests purge them, and some are reused while
/// expired but not yet purged: the reuse empties their old slot, which the front then skips.
#[test]
fn a_key_reused_while_expired_and_not_yet_purged_keeps_its_new_entry() {
    let mut steps: Vec<(u64, String, u64)> =
        (0..30).map(|i| (10_000, format!("b-{i:02}"), 40)).collect();
    for (n, i) in [15, 3, 20, 16, 29, 4, 9, 21].into_iter().enumerate() {
        steps.push((10_100 + n as u64, format!("b-{i:02}"), 1_000_000));
    }
    for i in 0..30 {
        steps.push((10_200, format!("c-{i:02}"), 1_000_000));
    }
    keys_follow_the_rules(&steps, 1_000);
}

/// Applies keyed adjusts of +1 (log time, key, time to live; SKU `i % 20` for step `i`) on
/// stores with 1, 3 and 32 entries per chunk, in apply calls of one entry, of every entry and
/// of random sizes; on a store reopened on its disk between apply calls (its key
/// index built again from the disk); and on one that installs a snapshot taken half-way over a
/// state of its own. Checks that stores with the same chunks hold the same bytes whatever their
/// apply calls (one by one and reopened, whole and 32 per chunk in random calls, in random
/// calls and installed), and that all hold the keys the rules keep, and the
/// quantities the rules give: an adjust whose key is live is a replay and changes nothing, so a
/// key the store fails to find shows as one unit too many.
fn keys_follow_the_rules(steps: &[(u64, String, u64)], cap: u64) {
    use rand::{RngExt, SeedableRng};
    use std::collections::BTreeMap;
    const PER_REQUEST: usize = idempotency_log::EXPIRED_KEYS_PURGED_PER_ENTRY_MAX;
    const SKUS: usize = 20;

    let mut entries = vec![membership_entry(1)];
    for sku in 0..SKUS {
        entries.push(create_entry(
            entries.len() as u64 + 1,
            &format!("sku-{sku}"),
            0,
        ));
    }
    for (i, (at_ms, key, ttl)) in steps.iter().enumerate() {
        let index = entries.len() as u64 + 1;
        let sku = format!("sku-{}", i % SKUS);
        entries.push(keyed_adjust_entry(index, &sku, key, *ttl, *at_ms));
    }
    // The rules, on plain maps: per request, forget up to PER_REQUEST of the oldest stored keys
    // while the oldest has expired by log time, apply (a live key changes nothing; an absent
    // or expired one is stored anew, as the newest, and the adjust applies), then forget up to
    // PER_REQUEST oldest while over the cap. The oldest: among the keys stored first that share
    // the first one's expiry, the least (the keys here are anonymous: identity = key bytes).
    let mut clock = 0;
    // Order stored -> (key, expiry).
    let mut stored: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    let mut order_of: BTreeMap<String, u64> = BTreeMap::new();
    let mut quantities = vec![0i64; SKUS];
    let forget_oldest = |stored: &mut BTreeMap<u64, (String, u64)>,
                         order_of: &mut BTreeMap<String, u64>| {
        let front_expiry = stored.first_key_value().unwrap().1 .1;
        let (&order, _) = stored
            .iter()
            .take_while(|(_, (_, expiry))| *expiry == front_expiry)
            .min_by(|a, b| a.1 .0.cmp(&b.1 .0))
            .unwrap();
        let (doomed, _) = stored.remove(&order).unwrap();
        order_of.remove(&doomed);
    };
    // With one time to live, the same rules as format 3 had them: oldest by (expiry, key).
    let one_ttl = steps.iter().all(|(_, _, ttl)| *ttl == steps[0].2);
    let mut format3: BTreeMap<(u64, String), ()> = BTreeMap::new();
    for (i, (stamp, key, ttl)) in steps.iter().enumerate() {
        clock = clock.max(*stamp);
        for _ in 0..PER_REQUEST {
            match stored.first_key_value() {
                Some((_, (_, expiry))) if *expiry <= clock => {
                    forget_oldest(&mut stored, &mut order_of);
                    format3.pop_first();
                }
                _ => break,
            }
        }
        if let Some(order) = order_of.get(key).copied() {
            if stored[&order].1 > clock {
                continue;
            }
            let (_, expiry) = stored.remove(&order).unwrap();
            format3.remove(&(expiry, key.clone()));
        }
        quantities[i % SKUS] += 1;
        stored.insert(i as u64, (key.clone(), clock + ttl));
        order_of.insert(key.clone(), i as u64);
        format3.insert((clock + ttl, key.clone()), ());
        let excess = (stored.len() as u64).saturating_sub(cap) as usize;
        for _ in 0..excess.min(PER_REQUEST) {
            forget_oldest(&mut stored, &mut order_of);
            format3.pop_first();
        }
        if one_ttl {
            let mut kept: Vec<_> = stored.values().cloned().map(|(k, e)| (e, k)).collect();
            kept.sort();
            assert_eq!(
                kept,
                format3.keys().cloned().collect::<Vec<_>>(),
                "one time to live: format 3's order, step {i}"
            );
        }
    }
    let expected: Vec<String> = stored.into_values().map(|(key, _)| key).collect();

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    block_on(async {
        let store = |disk: Arc<dyn Disk>, per_chunk| {
            sim_store(disk)
                .with_idempotency_keys_max(cap)
                .with_keys_per_chunk(per_chunk)
        };
        let fresh = || -> Arc<dyn Disk> { Arc::new(SimDisk::new()) };
        let mut one_by_one = store(fresh(), 1);
        for entry in &entries {
            apply(&mut one_by_one, vec![entry.clone()]).await;
        }
        let mut whole = store(fresh(), 32);
        apply(&mut whole, entries.clone()).await;
        let mut chunked = store(fresh(), 3);
        let mut chunked_32 = store(fresh(), 32);
        let reopened_disk = fresh();
        let mut reopened = store(reopened_disk.clone(), 1);
        let mut rest = entries.as_slice();
        while !rest.is_empty() {
            let take = rng.random_range(1..=40usize).min(rest.len());
            apply(&mut chunked, rest[..take].to_vec()).await;
            apply(&mut chunked_32, rest[..take].to_vec()).await;
            apply(&mut reopened, rest[..take].to_vec()).await;
            reopened = store(reopened_disk.clone(), 1);
            rest = &rest[take..];
        }
        // Half-way, a snapshot; installed on a store that applied keys of its own before.
        let half = entries.len() / 2;
        let mut source = store(fresh(), 3);
        apply(&mut source, entries[..half].to_vec()).await;
        let snapshot = source
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let mut installed = store(fresh(), 3);
        let own: Vec<Entry> = entries[..half]
            .iter()
            .cloned()
            .map(|mut entry| {
                if let EntryPayload::Normal(request) = &mut entry.payload {
                    if let Some(key) = &mut request.idempotency {
                        key.key = format!("other-{}", key.key);
                    }
                }
                entry
            })
            .collect();
        apply(&mut installed, own).await;
        let received = transfer(&snapshot.snapshot, &installed);
        installed
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        apply(&mut installed, entries[half..].to_vec()).await;

        // Each store, and the one with the same chunks it must equal byte for byte.
        for (name, store, same) in [
            ("one by one", &one_by_one, &one_by_one),
            ("whole", &whole, &whole),
            ("chunked", &chunked, &chunked),
            ("chunked, 32 per chunk", &chunked_32, &whole),
            ("reopened", &reopened, &one_by_one),
            ("installed", &installed, &chunked),
        ] {
            let keys: Vec<String> = stored_key_names(store);
            assert_eq!(
                keys, expected,
                "{name}: the keys the rules keep, oldest first"
            );
            let held: Vec<i64> = (0..SKUS)
                .map(|sku| {
                    let key = RecordKey::new("s1", &format!("sku-{sku}")).unwrap();
                    store.record(&key).unwrap().unwrap().quantity
                })
                .collect();
            assert_eq!(
                held, quantities,
                "{name}: every live key replayed, no other"
            );
            assert_eq!(
                store.state_pairs().unwrap(),
                same.state_pairs().unwrap(),
                "{name}: the same bytes"
            );
        }
    });
}

fn keyed_adjust_entry(index: u64, sku: &str, key: &str, ttl_ms: u64, at_ms: u64) -> Entry {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(Request {
            command: Command::Adjust {
                key: RecordKey::new("s1", sku).unwrap(),
                delta: 1,
                expected_version: None,
            },
            proposed_at_ms: at_ms,
            idempotency: Some(stockraft::inventory::IdempotencyKey {
                scope: String::new(),
                key: key.into(),
                ttl_ms,
            }),
        }),
    }
}

/// Keyed adjusts over a few anonymous and scoped keys: the first part stores them, the second
/// replays some (live), reuses none, and adds new ones.
fn format_upgrade_entries() -> (Vec<Entry>, Vec<Entry>) {
    let mut first = vec![membership_entry(1)];
    for sku in 0..4 {
        first.push(create_entry(
            first.len() as u64 + 1,
            &format!("sku-{sku}"),
            0,
        ));
    }
    for i in 0..12u64 {
        let index = first.len() as u64 + 1;
        let mut entry =
            keyed_adjust_entry(index, "sku-0", &format!("k-{i}"), 1_000_000, 10_000 + i);
        if let EntryPayload::Normal(request) = &mut entry.payload {
            request.command = Command::Adjust {
                key: RecordKey::new("s1", &format!("sku-{}", i % 4)).unwrap(),
                delta: 1,
                expected_version: None,
            };
            if i % 3 == 0 {
                request.idempotency.as_mut().unwrap().scope = "client:a".into();
            }
        }
        first.push(entry);
    }
    let mut second = Vec::new();
    for i in (0..12u64).step_by(2).chain(12..16) {
        let index = (first.len() + second.len()) as u64 + 1;
        let mut entry = first[5 + i.min(11) as usize].clone();
        entry.log_id = log_id(1, index);
        if i >= 12 {
            entry = keyed_adjust_entry(index, "sku-1", &format!("k-{i}"), 1_000_000, 20_000 + i);
        }
        second.push(entry);
    }
    (first, second)
}

/// A format-4 state as format 3 stored it: each idempotency entry under its expiry key, no
/// idempotency log.
fn as_format3(pairs: &[KeyValue]) -> Vec<KeyValue> {
    let per_chunk = idempotency_log::KEYS_PER_CHUNK;
    let mut format3: Vec<KeyValue> = pairs
        .iter()
        .filter(|(k, _)| {
            idempotency_log::chunk_number(k).is_none()
                && k.as_slice() != keys::KEY_NEXT
                && k.as_slice() != keys::KEY_FRONT
        })
        .cloned()
        .collect();
    for (identity, entry) in stored_entries(pairs, per_chunk) {
        format3.push((
            idempotency_log::expiry_of_identity(entry.expires_at_ms, &identity),
            encode(&entry),
        ));
    }
    format3.sort();
    format3
}

/// A format-3 state as format 2 stored it: each idempotency entry under `Si` + identity, and an
/// empty value under its expiry key. Only the identities `keep(identity)` allows are turned back
/// (the others stay as format 3 has them: an upgrade cut short).
fn as_format2(pairs: &[KeyValue], keep: impl Fn(&[u8]) -> bool) -> Vec<KeyValue> {
    let mut format2 = Vec::new();
    for (key, value) in pairs {
        match idempotency_log::split_expiry(key) {
            Some((_, identity)) if keep(identity) => {
                format2.push(([b"Si", identity].concat(), value.clone()));
                format2.push((key.clone(), Vec::new()));
            }
            _ => format2.push((key.clone(), value.clone())),
        }
    }
    format2.sort();
    format2
}

#[test]
fn an_older_state_machine_is_upgraded_once_and_answers_as_if_always_format4() {
    block_on(async {
        let (first, second) = format_upgrade_entries();
        let reference = replayed(first.clone()).await;
        let format4 = reference.state_pairs().unwrap();
        let format3 = as_format3(&format4);
        let stored = stored_idempotency_ids(&reference).len();
        assert_eq!(stored, 12);
        let mut after = replayed(first.clone()).await;
        apply(&mut after, second.clone()).await;

        // A format-3 state; a whole format-2 state; and a format-2 one an earlier upgrade moved
        // a third of to format 3 before a crash.
        let cases = [
            ("format 3", format3.clone()),
            ("format 2", as_format2(&format3, |_| true)),
            (
                "format 2, cut short",
                as_format2(&format3, |identity| {
                    identity.last().is_some_and(|byte| byte % 2 == 0)
                }),
            ),
        ];
        for (name, old) in cases {
            let moved_now = old.iter().filter(|(k, _)| k.starts_with(b"Si")).count();
            let disk = SimDisk::new();
            let mut batch = WriteBatch::default();
            for (key, value) in old {
                batch.put(key, value);
            }
            disk.write(batch).unwrap();

            let per_chunk = idempotency_log::KEYS_PER_CHUNK;
            assert_eq!(
                upgrade_key_layout(&disk, per_chunk).await.unwrap(),
                moved_now + stored,
                "{name}: every entry moved to format 3 and packed"
            );
            assert_eq!(read_state_pairs(&disk).unwrap(), format4, "{name}");
            assert_eq!(
                upgrade_key_layout(&disk, per_chunk).await.unwrap(),
                0,
                "{name}: once"
            );
            let mut upgraded = sim_store(Arc::new(disk));
            apply(&mut upgraded, second.clone()).await;
            assert_eq!(
                upgraded.state_pairs().unwrap(),
                after.state_pairs().unwrap(),
                "{name}: the same answers after the upgrade: live keys replay"
            );
        }
    });
}

#[test]
fn an_older_snapshot_installs_in_the_current_format_and_a_current_one_says_so() {
    block_on(async {
        let (first, second) = format_upgrade_entries();
        let mut reference = replayed(first.clone()).await;
        let snapshot = built_snapshot(&mut reference).await;
        let head = snapshot.snapshot.read_chunk(0, 8).unwrap();
        assert_eq!(head, b"STKSNAP4", "format 5 inside");
        let mut after = replayed(first.clone()).await;
        apply(&mut after, second.clone()).await;

        // The same snapshot as nodes of the two previous versions wrote it.
        let format3 = as_format3(&reference.state_pairs().unwrap());
        for (magic, pairs) in [
            (b"STKSNAP2", format3.clone()),
            (b"STKSNAP1", as_format2(&format3, |_| true)),
        ] {
            let old_file = old_snapshot(magic, &snapshot.meta, &pairs);

            let mut target = sim_store(Arc::new(SimDisk::new()));
            let received = transfer(&old_file, &target);
            target
                .install_snapshot(&snapshot.meta, received)
                .await
                .unwrap();
            let magic = String::from_utf8_lossy(magic);
            assert_eq!(
                target.state_pairs().unwrap(),
                reference.state_pairs().unwrap(),
                "{magic}"
            );
            apply(&mut target, second.clone()).await;
            assert_eq!(
                target.state_pairs().unwrap(),
                after.state_pairs().unwrap(),
                "{magic}: the same answers after the install: live keys replay"
            );
        }
        apply(&mut reference, second).await;
        assert_eq!(
            reference.state_pairs().unwrap(),
            after.state_pairs().unwrap()
        );
    });
}

/// Keyed adjusts with one time to live, many stamped in the same millisecond (one expiry), keys
/// reused after they expired, and a cap small enough that evictions split those groups: the
/// workload on which format 3 (oldest expiry, then identity) and stored order part ways.
fn tied_expiry_steps(ttl: u64) -> Vec<(u64, String, u64)> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(23);
    let mut at_ms = 10_000;
    let mut steps = Vec::new();
    for _ in 0..700 {
        if rng.random_range(0..4u32) == 0 {
            at_ms += rng.random_range(1..30u64);
        }
        let key = format!("t-{:03}", rng.random_range(0..90u32));
        steps.push((at_ms, key, ttl));
    }
    steps
}

/// Nodes are upgraded where each happens to stop (a follower a few entries behind the leader),
/// and a follower may install a snapshot written before the upgrade and apply the entries after
/// it itself: a replica packs its format-3 entries at its own point and applies what follows in
/// format 4, where another applied those entries in format 3. Their bytes may differ (entry
/// numbers, emptied slots); their answers must not: the same records, the same keys live.
/// Here the stretch before each upgrade point is applied by format 4 and packed as format 3
/// would have left it (ties by identity); that format 4 forgets exactly as format 3 did is
/// checked against format 3's rule in `keys_stamped_in_the_same_millisecond_*`.
#[test]
fn replicas_upgraded_at_different_points_keep_giving_the_same_answers() {
    let steps = tied_expiry_steps(300);
    let cap = 14;
    let mut entries = vec![membership_entry(1)];
    for sku in 0..20 {
        entries.push(create_entry(
            entries.len() as u64 + 1,
            &format!("sku-{sku}"),
            0,
        ));
    }
    for (i, (at_ms, key, ttl)) in steps.iter().enumerate() {
        let index = entries.len() as u64 + 1;
        entries.push(keyed_adjust_entry(
            index,
            &format!("sku-{}", i % 20),
            key,
            *ttl,
            *at_ms,
        ));
    }
    let answers = |store: &StateMachineStore| {
        let quantities: Vec<i64> = (0..20)
            .map(|sku| {
                let key = RecordKey::new("s1", &format!("sku-{sku}")).unwrap();
                store
                    .record(&key)
                    .unwrap()
                    .map_or(-1, |record| record.quantity)
            })
            .collect();
        let mut live = stored_key_names(store);
        live.sort();
        (quantities, live)
    };
    block_on(async {
        let store = |disk: Arc<dyn Disk>| sim_store(disk).with_idempotency_keys_max(cap);
        let mut never_upgraded = store(Arc::new(SimDisk::new()));
        let mut reference = Vec::new();
        for entry in &entries {
            apply(&mut never_upgraded, vec![entry.clone()]).await;
            reference.push(answers(&never_upgraded));
        }
        for point in (30..entries.len()).step_by(37) {
            let mut before = store(Arc::new(SimDisk::new()));
            apply(&mut before, entries[..point].to_vec()).await;
            let disk = SimDisk::new();
            let mut batch = WriteBatch::default();
            for (key, value) in as_format3(&before.state_pairs().unwrap()) {
                batch.put(key, value);
            }
            disk.write(batch).unwrap();
            let per_chunk = idempotency_log::KEYS_PER_CHUNK;
            upgrade_key_layout(&disk, per_chunk).await.unwrap();
            let mut upgraded = store(Arc::new(disk));
            for (at, entry) in entries.iter().enumerate().skip(point) {
                apply(&mut upgraded, vec![entry.clone()]).await;
                assert_eq!(
                    answers(&upgraded),
                    reference[at],
                    "upgraded after entry {point}: the answers at entry {}",
                    at + 1
                );
            }
        }
    });
}

/// A format-3 entry whose value is corrupt stops the upgrade with an error naming its key, and
/// leaves the page it was in as it was: nothing half-packed, so the node refuses to start
/// rather than start with keys missing.
#[test]
fn a_corrupt_format3_entry_stops_the_upgrade_and_leaves_its_page_unpacked() {
    block_on(async {
        let (first, _) = format_upgrade_entries();
        let reference = replayed(first).await;
        let mut format3 = as_format3(&reference.state_pairs().unwrap());
        let corrupt = format3
            .iter_mut()
            .find(|(key, _)| idempotency_log::split_expiry(key).is_some())
            .expect("a format-3 entry");
        corrupt.1 = vec![0xff; 3];
        let disk = SimDisk::new();
        let mut batch = WriteBatch::default();
        for (key, value) in format3.clone() {
            batch.put(key, value);
        }
        disk.write(batch).unwrap();

        let per_chunk = idempotency_log::KEYS_PER_CHUNK;
        let error = upgrade_key_layout(&disk, per_chunk)
            .await
            .expect_err("a corrupt entry is an error");
        assert!(
            matches!(error, stockraft::storage::StorageError::Decode { .. }),
            "{error}"
        );
        assert_eq!(read_state_pairs(&disk).unwrap(), format3, "nothing packed");
    });
}

/// The log store keeps its newest entries decoded (`raft::log_store`, "The newest entries"):
/// what it reads back after a truncation, a new append and a purge is what the WAL holds, never
/// an entry it dropped.
#[test]
fn the_log_store_reads_back_only_what_a_truncation_and_a_purge_left() {
    use openraft::RaftLogReader;
    let skus = |entries: Vec<Entry>| -> Vec<(u64, String)> {
        entries
            .into_iter()
            .map(|entry| {
                let sku = match entry.payload {
                    EntryPayload::Normal(Request {
                        command: Command::Create { key, .. },
                        ..
                    }) => key.sku,
                    _ => String::new(),
                };
                (entry.log_id.index, sku)
            })
            .collect()
    };
    let expected = |range: std::ops::RangeInclusive<u64>, tag: &str| -> Vec<(u64, String)> {
        range.map(|i| (i, format!("{tag}{i}"))).collect()
    };
    block_on(async {
        let mut log = log_store(Arc::new(SimFs::new()), std::path::Path::new("/node"));
        let first: Vec<Entry> = (1..=10)
            .map(|i| create_entry(i, &format!("a{i}"), 1))
            .collect();
        append(&mut log, first).await;
        assert_eq!(
            skus(log.try_get_log_entries(3..=10).await.unwrap()),
            expected(3..=10, "a")
        );
        log.truncate_after(Some(log_id(1, 5))).await.unwrap();
        assert_eq!(
            skus(log.try_get_log_entries(1..11).await.unwrap()),
            expected(1..=5, "a")
        );
        assert_eq!(skus(log.try_get_log_entries(6..).await.unwrap()), vec![]);
        let second: Vec<Entry> = (6..=8)
            .map(|i| create_entry(i, &format!("b{i}"), 1))
            .collect();
        append(&mut log, second).await;
        let mut both = expected(4..=5, "a");
        both.extend(expected(6..=8, "b"));
        assert_eq!(skus(log.try_get_log_entries(4..).await.unwrap()), both);
        log.purge(log_id(1, 6)).await.unwrap();
        assert_eq!(
            skus(log.try_get_log_entries(7..=8).await.unwrap()),
            expected(7..=8, "b")
        );
        assert_eq!(
            skus(log.try_get_log_entries(4..=8).await.unwrap()),
            expected(7..=8, "b")
        );
    });
}
