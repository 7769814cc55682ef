//! The reservation state in the state machine store: holds stored and read back, the due index
//! and held count kept through commit, release and expiry, the same bytes whatever the apply-call
//! boundaries, retention at its edges, snapshots, the SKU index built at open, the reads the
//! API and the expiry proposer use; and the packed layout (format 5): chunks, due buckets and
//! slots of the retention queue, and format 4's keys packed at open and at a snapshot install.
#![cfg(not(madsim))]

#[path = "support/snapshot_files.rs"]
mod snapshot_files;

use std::sync::Arc;

use futures::stream;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderIdExt;
use openraft::EntryPayload;
use snapshot_files::{built_snapshot, old_snapshot, transfer};
use stockraft::inventory::{
    CartLine, Command, Record, RecordKey, Request, Reservation, ReservationId, ReservationLine,
    ReservationStatus,
};
use stockraft::raft::reservations::{self, RetentionSettings};
use stockraft::raft::state_machine::{read_state_pairs, StateMachineStore};
use stockraft::raft::{Entry, LogId, TypeConfig};
use stockraft::storage::fs::SimFs;
use stockraft::storage::snapshots::SnapshotDir;
use stockraft::storage::{decode, encode, keys, Disk, KeyValue, SimDisk, WriteBatch};

/// Log time of the first entries, ms since the epoch (any plausible day).
const T0: u64 = 1_700_000_000_000;
/// A minute of log time, in ms.
const MINUTE_MS: u64 = 60_000;

fn log_id(index: u64) -> LogId {
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1),
        index,
    )
}

fn key(store: &str, sku: &str) -> RecordKey {
    RecordKey::new(store, sku).unwrap()
}

/// A command entry at `index`, stamped `at_ms`.
fn entry(index: u64, at_ms: u64, command: Command) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request {
            command,
            proposed_at_ms: at_ms,
            idempotency: None,
        }),
    }
}

fn create(store: &str, sku: &str, quantity: i64) -> Command {
    Command::Create {
        key: key(store, sku),
        initial_quantity: quantity,
    }
}

fn hold(store: &str, sku: &str, quantity: i64, ttl_ms: u64) -> Command {
    Command::Hold {
        key: key(store, sku),
        quantity,
        expected_version: None,
        ttl_ms,
    }
}

/// The reservation the entry at `index` created first.
fn created_by(index: u64) -> ReservationId {
    ReservationId::new(index, 0).unwrap()
}

fn sim_store(disk: Arc<dyn Disk>) -> StateMachineStore {
    let snapshots = SnapshotDir::open(
        Arc::new(SimFs::new()),
        std::path::Path::new("/node/snapshots"),
    )
    .unwrap();
    StateMachineStore::open(disk, snapshots).unwrap()
}

fn fresh_store() -> StateMachineStore {
    sim_store(Arc::new(SimDisk::new()))
}

/// Applies `entries` in one apply call.
async fn apply(store: &mut StateMachineStore, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    store.apply(stream::iter(items)).await.expect("apply");
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

fn record(store: &StateMachineStore, store_id: &str, sku: &str) -> Record {
    store.record(&key(store_id, sku)).unwrap().unwrap()
}

fn status(store: &StateMachineStore, id: ReservationId) -> Option<ReservationStatus> {
    store
        .reservation(id)
        .unwrap()
        .map(|reservation| reservation.status)
}

fn read_u64(store: &StateMachineStore, key: &[u8]) -> Option<u64> {
    store
        .disk()
        .get(key)
        .unwrap()
        .map(|bytes| stockraft::storage::decode(key, &bytes).unwrap())
}

/// How many holds the due index holds, due or not.
fn due_count(store: &StateMachineStore) -> usize {
    store.due_holds(u64::MAX, usize::MAX).unwrap().len()
}

#[test]
fn a_hold_is_stored_with_its_due_entry_and_read_back() {
    block_on(async {
        let mut store = fresh_store();
        apply(
            &mut store,
            vec![
                entry(1, T0, create("s1", "a", 10)),
                entry(2, T0 + 1, hold("s1", "a", 3, MINUTE_MS)),
            ],
        )
        .await;
        let id = created_by(2);
        let held = store.reservation(id).unwrap().expect("the hold is stored");
        assert_eq!(held.status, ReservationStatus::Held);
        assert_eq!(held.lines.len(), 1);
        assert_eq!(held.lines[0].quantity, 3);
        assert_eq!(held.expires_at_ms, T0 + 1 + MINUTE_MS);
        let a = record(&store, "s1", "a");
        assert_eq!((a.quantity, a.reserved, a.on_hand()), (7, 3, 10));
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(1));
        assert_eq!(store.due_holds(held.expires_at_ms - 1, 10).unwrap(), vec![]);
        assert_eq!(store.due_holds(held.expires_at_ms, 10).unwrap(), vec![id]);
        assert_eq!(store.reservation(created_by(3)).unwrap(), None);
    });
}

#[test]
fn commit_release_and_expiry_end_holds_once_and_keep_the_due_index_and_held_count() {
    block_on(async {
        let mut store = fresh_store();
        apply(
            &mut store,
            vec![
                entry(1, T0, create("s1", "a", 10)),
                entry(2, T0, hold("s1", "a", 1, MINUTE_MS)),
                entry(3, T0, hold("s1", "a", 2, MINUTE_MS)),
                entry(4, T0, hold("s1", "a", 3, MINUTE_MS)),
            ],
        )
        .await;
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(3));
        assert_eq!(due_count(&store), 3);
        let (committed, released, expired) = (created_by(2), created_by(3), created_by(4));
        apply(
            &mut store,
            vec![
                entry(5, T0 + 1, Command::Commit { id: committed }),
                entry(6, T0 + 2, Command::Release { id: released }),
            ],
        )
        .await;
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(1));
        assert_eq!(due_count(&store), 1);
        let expiry = vec![committed, released, expired];
        apply(
            &mut store,
            vec![entry(7, T0 + MINUTE_MS, Command::Expire { ids: expiry })],
        )
        .await;
        assert_eq!(
            status(&store, committed),
            Some(ReservationStatus::Committed)
        );
        assert_eq!(status(&store, released), Some(ReservationStatus::Released));
        assert_eq!(status(&store, expired), Some(ReservationStatus::Expired));
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(0));
        assert_eq!(due_count(&store), 0);
        assert_eq!(store.due_holds(u64::MAX, 10).unwrap(), vec![]);
        // Ended in that order: the retention queue holds them oldest first.
        assert_eq!(read_u64(&store, keys::ENDED_NEXT), Some(3));
        let a = record(&store, "s1", "a");
        assert_eq!((a.quantity, a.reserved, a.on_hand()), (9, 0, 9));
        // A second expiry of the same holds changes nothing.
        let before = store.state_pairs().unwrap();
        apply(
            &mut store,
            vec![entry(
                8,
                T0 + MINUTE_MS,
                Command::Expire { ids: vec![expired] },
            )],
        )
        .await;
        let after = store.state_pairs().unwrap();
        let changed: Vec<_> = after
            .iter()
            .filter(|pair| !before.contains(pair))
            .map(|(key, _)| key.clone())
            .collect();
        assert_eq!(changed, vec![keys::APPLIED.to_vec()], "only the applied id");
    });
}

/// A day of shop traffic in a few dozen entries: records, holds, a cart, commits, releases,
/// expiries (some of holds already ended), and a day passing so that retention forgets.
fn shop_day() -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut index = 0;
    let mut push = |at_ms: u64, command: Command| {
        index += 1;
        entries.push(entry(index, at_ms, command));
        index
    };
    for sku in ["a", "b", "c"] {
        push(T0, create("s1", sku, 100));
        push(T0, create("s2", sku, 100));
    }
    let mut holds = Vec::new();
    for n in 0..12u64 {
        let sku = ["a", "b", "c"][n as usize % 3];
        let at = push(T0 + n, hold("s1", sku, 1 + n as i64 % 4, MINUTE_MS + n));
        holds.push(created_by(at));
    }
    let cart = Command::Cart {
        lines: vec![
            CartLine {
                key: key("s2", "a"),
                quantity: 2,
                expected_version: None,
            },
            CartLine {
                key: key("s2", "b"),
                quantity: 3,
                expected_version: None,
            },
        ],
        ttl_ms: MINUTE_MS,
    };
    let cart = created_by(push(T0 + 20, cart));
    push(T0 + 30, Command::Commit { id: holds[0] });
    push(T0 + 31, Command::Release { id: holds[1] });
    push(T0 + 32, Command::Commit { id: cart });
    push(T0 + 33, Command::Release { id: holds[0] });
    push(
        T0 + 2 * MINUTE_MS,
        Command::Expire {
            ids: holds[..8].to_vec(),
        },
    );
    push(T0 + 2 * MINUTE_MS, Command::Commit { id: holds[9] });
    push(
        T0 + 2 * MINUTE_MS + 1,
        Command::Expire { ids: holds.clone() },
    );
    // A day later: each entry forgets a few of the ended reservations.
    let day_ms = reservations::ENDED_RETENTION_MS;
    for n in 0..6 {
        push(
            T0 + day_ms + MINUTE_MS + n,
            Command::Adjust {
                key: key("s1", "a"),
                delta: 1,
                expected_version: None,
            },
        );
    }
    push(T0 + day_ms + 2 * MINUTE_MS, hold("s1", "b", 1, MINUTE_MS));
    entries
}

/// A small deterministic generator: the splits need variety, not quality.
fn next_random(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

async fn applied_in_calls(entries: &[Entry], sizes: impl IntoIterator<Item = usize>) -> Vec<u8> {
    let mut store = fresh_store();
    let mut rest = entries;
    for size in sizes {
        if rest.is_empty() {
            break;
        }
        let (call, later) = rest.split_at(size.clamp(1, rest.len()));
        apply(&mut store, call.to_vec()).await;
        rest = later;
    }
    assert!(rest.is_empty());
    encode(&store.state_pairs().unwrap())
}

/// Asserts that `entries` leave the same bytes applied one call per entry, in one call, and in
/// `splits` random runs of calls of 1 to `call_max` entries.
async fn assert_the_same_bytes_whatever_the_calls(entries: &[Entry], splits: u64, call_max: usize) {
    let count = entries.len();
    let one_by_one = applied_in_calls(entries, std::iter::repeat_n(1, count)).await;
    let all_at_once = applied_in_calls(entries, [count]).await;
    assert_eq!(one_by_one, all_at_once, "one call per entry vs one call");
    for seed in 1..=splits {
        let mut state = seed;
        let sizes: Vec<usize> = (0..count)
            .map(|_| 1 + next_random(&mut state) as usize % call_max)
            .collect();
        let split = applied_in_calls(entries, sizes.clone()).await;
        assert_eq!(one_by_one, split, "random split {sizes:?}");
    }
}

#[test]
fn the_state_is_the_same_bytes_whatever_the_apply_call_boundaries() {
    block_on(async {
        let entries = shop_day();
        assert_the_same_bytes_whatever_the_calls(&entries, 20, 7).await;
        // And the day did end and forget reservations.
        let mut store = fresh_store();
        apply(&mut store, entries).await;
        assert_eq!(status(&store, created_by(7)), None, "forgotten after a day");
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(1));
    });
}

/// A store whose retention is `retention_ms` and at most `kept_max` ended reservations, with
/// `holds` holds created at `T0` and ended by a release each at `T0 + 1 + n`.
async fn store_with_ended(holds: u64, retention_ms: u64, kept_max: u64) -> StateMachineStore {
    let mut store = fresh_store().with_retention(RetentionSettings {
        retention_ms,
        ended_kept_max: kept_max,
    });
    let mut entries = vec![entry(1, T0, create("s1", "a", 1_000))];
    for n in 0..holds {
        entries.push(entry(2 + n, T0, hold("s1", "a", 1, MINUTE_MS)));
    }
    for n in 0..holds {
        let id = created_by(2 + n);
        entries.push(entry(2 + holds + n, T0 + 1 + n, Command::Release { id }));
    }
    apply(&mut store, entries).await;
    store
}

fn remembered(store: &StateMachineStore, holds: u64) -> Vec<bool> {
    (0..holds)
        .map(|n| status(store, created_by(2 + n)).is_some())
        .collect()
}

fn adjust_at(index: u64, at_ms: u64) -> Entry {
    entry(
        index,
        at_ms,
        Command::Adjust {
            key: key("s1", "a"),
            delta: 0,
            expected_version: None,
        },
    )
}

#[test]
fn an_ended_reservation_is_forgotten_exactly_when_the_retention_has_passed() {
    block_on(async {
        let retention_ms = 10 * MINUTE_MS;
        let mut store = store_with_ended(1, retention_ms, 100).await;
        // Released at T0 + 1: still remembered one ms before its retention ends...
        apply(&mut store, vec![adjust_at(4, T0 + retention_ms)]).await;
        assert_eq!(remembered(&store, 1), vec![true]);
        // ...and forgotten by the first entry at that instant.
        apply(&mut store, vec![adjust_at(5, T0 + 1 + retention_ms)]).await;
        assert_eq!(remembered(&store, 1), vec![false]);
        assert_eq!(read_u64(&store, keys::ENDED_FRONT), Some(1));
        assert_eq!(read_u64(&store, keys::ENDED_NEXT), Some(1));
        // A commit naming it now finds nothing, and changes nothing but the applied id.
        let before = record(&store, "s1", "a");
        apply(
            &mut store,
            vec![entry(
                6,
                T0 + 1 + retention_ms,
                Command::Commit { id: created_by(2) },
            )],
        )
        .await;
        assert_eq!(record(&store, "s1", "a"), before);
        assert_eq!(remembered(&store, 1), vec![false]);
    });
}

#[test]
fn past_the_cap_the_oldest_ended_are_forgotten_at_most_four_per_entry() {
    block_on(async {
        // Ten ended, a cap of three: the releases' own entries already forgot the oldest.
        let mut store = store_with_ended(10, 10 * MINUTE_MS, 3).await;
        // Each release entry forgets before it applies: when the tenth applies, nine are kept
        // (more than three), so it forgot; the state now keeps at most cap + the few ended
        // since the last forgetting pass.
        let kept = remembered(&store, 10).iter().filter(|kept| **kept).count();
        assert!(kept <= 4, "{kept} kept");
        apply(&mut store, vec![adjust_at(22, T0 + 100)]).await;
        assert_eq!(
            remembered(&store, 10),
            [vec![false; 7], vec![true; 3]].concat(),
            "the newest three, the cap"
        );

        // Exactly the cap is kept as is; cap + 1 loses exactly the oldest.
        let mut store = store_with_ended(4, 10 * MINUTE_MS, 4).await;
        apply(&mut store, vec![adjust_at(10, T0 + 100)]).await;
        assert_eq!(remembered(&store, 4), vec![true; 4]);
        let mut store = store_with_ended(5, 10 * MINUTE_MS, 4).await;
        apply(&mut store, vec![adjust_at(12, T0 + 100)]).await;
        assert_eq!(remembered(&store, 5), [vec![false], vec![true; 4]].concat());
    });
}

#[test]
fn retention_forgets_at_most_four_ended_reservations_per_entry() {
    block_on(async {
        let retention_ms = MINUTE_MS;
        let mut store = store_with_ended(10, retention_ms, 100).await;
        let later = T0 + 100 + retention_ms;
        apply(&mut store, vec![adjust_at(22, later)]).await;
        assert_eq!(
            remembered(&store, 10),
            [vec![false; 4], vec![true; 6]].concat()
        );
        apply(&mut store, vec![adjust_at(23, later), adjust_at(24, later)]).await;
        assert_eq!(remembered(&store, 10), vec![false; 10]);
        assert_eq!(read_u64(&store, keys::ENDED_FRONT), Some(10));
        let queue = store
            .state_pairs()
            .unwrap()
            .into_iter()
            .filter(|(key, _)| key.starts_with(keys::ENDED_SLOTS_START))
            .count();
        assert_eq!(queue, 0, "the queue's entries are gone with them");
    });
}

#[test]
fn a_snapshot_carries_reservations_their_indexes_and_counters() {
    block_on(async {
        let mut source = fresh_store();
        let mut entries = shop_day();
        entries.truncate(entries.len() - 7);
        apply(&mut source, entries).await;
        let snapshot = built_snapshot(&mut source).await;
        let mut target = fresh_store();
        let received = transfer(&snapshot.snapshot, &target);
        target
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        assert_eq!(target.state_pairs().unwrap(), source.state_pairs().unwrap());
        let held = target.due_holds(u64::MAX, 100).unwrap();
        assert_eq!(held, source.due_holds(u64::MAX, 100).unwrap());
        assert_eq!(
            target.sku_records("a", 10).unwrap(),
            source.sku_records("a", 10).unwrap()
        );
        assert!(read_u64(&target, keys::ENDED_NEXT).unwrap() > 0);
    });
}

/// Writes records as a version before the SKU index did: the record only.
fn write_old_records(disk: &dyn Disk, keys_to_write: &[RecordKey]) {
    let mut batch = WriteBatch::default();
    for record_key in keys_to_write {
        let record = Record {
            key: record_key.clone(),
            quantity: 5,
            reserved: 0,
            version: 1,
            created_at_ms: T0,
            updated_at_ms: T0,
        };
        batch.put(keys::record(record_key), encode(&record));
    }
    disk.write(batch).unwrap();
}

#[test]
fn records_created_before_the_sku_index_get_their_entries_at_open() {
    block_on(async {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        // More records than one build batch holds, so the build pages.
        let count = reservations::SKU_INDEX_BUILD_RECORDS_PER_BATCH + 10;
        let old: Vec<RecordKey> = (0..count)
            .map(|n| key(&format!("st{:05}", n / 2), &format!("sku-{}", n % 2)))
            .collect();
        write_old_records(&*disk, &old);
        assert!(!reservations::sku_index_built(&*disk).unwrap());
        let store = sim_store(disk.clone());
        assert!(reservations::sku_index_built(&*disk).unwrap());
        let stores_of_sku_1 = store.sku_records("sku-1", usize::MAX).unwrap();
        assert_eq!(stores_of_sku_1.len(), count / 2);
        assert!(stores_of_sku_1.windows(2).all(|w| w[0].key < w[1].key));
        // Opening again builds nothing.
        assert_eq!(reservations::build_sku_index(&*disk).unwrap(), 0);

        // A store built by apply holds exactly the entries the build writes.
        let mut by_apply = fresh_store();
        let creates = old
            .iter()
            .enumerate()
            .map(|(n, k)| entry(n as u64 + 1, T0, create(&k.store_id, &k.sku, 5)))
            .collect();
        apply(&mut by_apply, creates).await;
        let index_of = |store: &StateMachineStore| -> Vec<Vec<u8>> {
            store
                .state_pairs()
                .unwrap()
                .into_iter()
                .filter(|(key, _)| key.starts_with(keys::SKU_INDEX_START))
                .map(|(key, _)| key)
                .collect()
        };
        assert_eq!(index_of(&by_apply), index_of(&store));
    });
}

#[test]
fn due_holds_come_in_deadline_order_up_to_the_limit() {
    block_on(async {
        let mut store = fresh_store();
        let ttls = [5, 3, 9, 3, 1];
        let mut entries = vec![entry(1, T0, create("s1", "a", 100))];
        for (n, ttl_s) in ttls.iter().enumerate() {
            entries.push(entry(2 + n as u64, T0, hold("s1", "a", 1, ttl_s * 1_000)));
        }
        apply(&mut store, entries).await;
        let id = |n: u64| created_by(2 + n);
        let all = store.due_holds(T0 + 9_000, 100).unwrap();
        assert_eq!(all, vec![id(4), id(1), id(3), id(0), id(2)]);
        assert_eq!(store.due_holds(T0 + 9_000, 2).unwrap(), vec![id(4), id(1)]);
        assert_eq!(
            store.due_holds(T0 + 3_000, 100).unwrap(),
            vec![id(4), id(1), id(3)]
        );
        assert_eq!(store.due_holds(T0 + 999, 100).unwrap(), vec![]);
    });
}

#[test]
fn the_sku_and_store_views_page_through_records_in_order() {
    block_on(async {
        let mut store = fresh_store();
        let mut entries = Vec::new();
        for (n, (store_id, sku)) in [
            ("s2", "x"),
            ("s1", "y"),
            ("s1", "x"),
            ("s10", "x"),
            ("s1", "x.1"),
            ("s1", "z"),
        ]
        .iter()
        .enumerate()
        {
            entries.push(entry(n as u64 + 1, T0, create(store_id, sku, 1)));
        }
        apply(&mut store, entries).await;
        let names = |records: &[Record]| -> Vec<String> {
            records.iter().map(|r| r.key.to_string()).collect()
        };
        assert_eq!(
            names(&store.sku_records("x", 100).unwrap()),
            ["s1/x", "s10/x", "s2/x"]
        );
        assert_eq!(
            names(&store.sku_records("x", 2).unwrap()),
            ["s1/x", "s10/x"]
        );
        assert!(store.sku_records("nothing", 100).unwrap().is_empty());

        let (page, more) = store.store_records("s1", None, 2).unwrap();
        assert_eq!(
            (names(&page), more),
            (vec!["s1/x".into(), "s1/x.1".into()], true)
        );
        let (page, more) = store.store_records("s1", Some("x.1"), 2).unwrap();
        assert_eq!(
            (names(&page), more),
            (vec!["s1/y".into(), "s1/z".into()], false)
        );
        let (page, more) = store.store_records("s1", Some("z"), 2).unwrap();
        assert_eq!((page.len(), more), (0, false));
        let (page, more) = store.store_records("s1", None, 4).unwrap();
        assert_eq!((page.len(), more), (4, false), "s10 is another store");
    });
}

// ---------------------------------------------------------------------------------------------
// The packed layout (format 5): chunks, due buckets, slots of the retention queue, and the
// upgrade from format 4's key per reservation.

/// The keys and values of `store`'s state from `start` up to `end`.
fn pairs_in(store: &StateMachineStore, start: &[u8], end: &[u8]) -> Vec<KeyValue> {
    store
        .state_pairs()
        .unwrap()
        .into_iter()
        .filter(|(key, _)| start <= key.as_slice() && key.as_slice() < end)
        .collect()
}

fn keys_in(store: &StateMachineStore, start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
    let pairs = pairs_in(store, start, end);
    pairs.into_iter().map(|(key, _)| key).collect()
}

/// Whether `key` is one of format 4's reservation keys.
fn is_format4_key(key: &[u8]) -> bool {
    [
        keys::FORMAT4_RESERVATIONS_START,
        keys::FORMAT4_DUE_START,
        keys::FORMAT4_ENDED_START,
    ]
    .iter()
    .any(|prefix| key.starts_with(prefix))
}

fn has_format4_keys(pairs: &[KeyValue]) -> bool {
    pairs.iter().any(|(key, _)| is_format4_key(key))
}

#[test]
fn reservations_are_packed_in_chunks_of_the_entries_that_created_them() {
    block_on(async {
        let mut store = fresh_store().with_retention(RetentionSettings {
            retention_ms: MINUTE_MS,
            ended_kept_max: 1_000,
        });
        let mut entries = vec![entry(1, T0, create("s1", "a", 1_000))];
        for index in 2..=70 {
            entries.push(entry(index, T0, hold("s1", "a", 1, MINUTE_MS)));
        }
        apply(&mut store, entries).await;
        let (start, end) = (keys::RESERVATION_CHUNKS_START, keys::RESERVATION_CHUNKS_END);
        let chunks = pairs_in(&store, start, end);
        let numbers: Vec<Vec<u8>> = (0..3).map(reservations::chunk_key).collect();
        assert_eq!(
            keys_in(&store, start, end),
            numbers,
            "entries 2-31, 32-63, 64-70"
        );
        for (number, (key, value)) in chunks.iter().enumerate() {
            let chunk: reservations::Chunk = decode(key, value).unwrap();
            assert_eq!(chunk.len(), [30, 32, 7][number]);
            assert!(chunk.windows(2).all(|pair| pair[0].id < pair[1].id));
            assert!(chunk
                .iter()
                .all(|held| reservations::chunk_of(held.id) == number as u64));
        }
        for index in 2..=70 {
            assert_eq!(
                status(&store, created_by(index)),
                Some(ReservationStatus::Held)
            );
        }
        assert!(!has_format4_keys(&store.state_pairs().unwrap()));

        // The last chunk's holds end, and a minute on are forgotten: the chunk goes with them.
        let commits =
            (64..=70).map(|n| entry(n + 7, T0 + 1, Command::Commit { id: created_by(n) }));
        apply(&mut store, commits.collect()).await;
        let later = T0 + 1 + MINUTE_MS;
        apply(&mut store, vec![adjust_at(78, later), adjust_at(79, later)]).await;
        assert_eq!(keys_in(&store, start, end), numbers[..2].to_vec());
        assert_eq!(status(&store, created_by(64)), None);
        assert_eq!(
            status(&store, created_by(63)),
            Some(ReservationStatus::Held)
        );
    });
}

#[test]
fn due_holds_are_read_window_by_window_in_deadline_order_across_chunks() {
    block_on(async {
        // 99 holds over four chunks, due in three windows of the due index, their milliseconds
        // scattered: in a window, a hold of a later chunk is often due before one of an earlier
        // chunk.
        let window_ms = reservations::DUE_WINDOW_MS;
        let first_window_ms = (T0 / window_ms + 60_000 / window_ms) * window_ms;
        let deadline = |n: u64| first_window_ms + (n % 3) * window_ms + (n * 7) % window_ms;
        let mut store = fresh_store();
        let mut entries = vec![entry(1, T0, create("s1", "a", 1_000))];
        for n in 0..99 {
            entries.push(entry(2 + n, T0, hold("s1", "a", 1, deadline(n) - T0)));
        }
        apply(&mut store, entries).await;
        let mut expected: Vec<(u64, ReservationId)> =
            (0..99).map(|n| (deadline(n), created_by(2 + n))).collect();
        expected.sort();
        let expected_ids: Vec<ReservationId> = expected.iter().map(|(_, id)| *id).collect();
        let mut by_window_then_id = expected.clone();
        by_window_then_id.sort_by_key(|(due_ms, id)| (due_ms / window_ms, *id));
        assert_ne!(
            expected, by_window_then_id,
            "the test needs chunks out of deadline order"
        );

        let last_ms = expected.last().unwrap().0;
        assert_eq!(store.due_holds(last_ms, 1_000).unwrap(), expected_ids);
        for limit in [1, 2, 5, 33, 34, 50, 98] {
            assert_eq!(
                store.due_holds(last_ms, limit).unwrap(),
                expected_ids[..limit],
                "limit {limit}"
            );
        }
        let mid_ms = first_window_ms + window_ms + window_ms / 2;
        let due_by_mid = expected
            .iter()
            .filter(|(due_ms, _)| *due_ms <= mid_ms)
            .count();
        assert!(due_by_mid > 33 && due_by_mid < 66, "into the second window");
        assert_eq!(
            store.due_holds(mid_ms, 1_000).unwrap(),
            expected_ids[..due_by_mid]
        );
        assert_eq!(store.due_holds(first_window_ms - 1, 1_000).unwrap(), vec![]);
        let (start, end) = (keys::DUE_BUCKETS_START, keys::DUE_BUCKETS_END);
        let buckets = keys_in(&store, start, end);
        let mut expected_buckets: Vec<Vec<u8>> = (0..99)
            .map(|n| {
                let chunk = reservations::chunk_of(created_by(2 + n));
                reservations::DueBucket {
                    window: deadline(n) / window_ms,
                    chunk,
                }
                .key()
            })
            .collect();
        expected_buckets.sort();
        expected_buckets.dedup();
        assert_eq!(buckets, expected_buckets, "one bucket per window and chunk");

        // Expired, they leave the index, and their emptied buckets go.
        let expiry = entry(101, last_ms, Command::Expire { ids: expected_ids });
        apply(&mut store, vec![expiry]).await;
        assert_eq!(keys_in(&store, start, end), Vec::<Vec<u8>>::new());
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(0));
    });
}

#[test]
fn the_retention_queue_is_packed_in_slots_of_64_and_forgotten_across_them() {
    block_on(async {
        let mut store = store_with_ended(150, MINUTE_MS, 1_000).await;
        let (start, end) = (keys::ENDED_SLOTS_START, keys::ENDED_SLOTS_END);
        let slots = pairs_in(&store, start, end);
        let numbers: Vec<Vec<u8>> = (0..3).map(reservations::slot_key).collect();
        assert_eq!(keys_in(&store, start, end), numbers);
        for (slot, (key, value)) in slots.iter().enumerate() {
            let ended: Vec<reservations::Ended> = decode(key, value).unwrap();
            assert_eq!(ended.len(), [64, 64, 22][slot]);
            for (at, ended) in ended.iter().enumerate() {
                let n = slot as u64 * reservations::ENDED_PER_SLOT + at as u64;
                assert_eq!(ended.id, created_by(2 + n), "in the order they ended");
                assert_eq!(ended.ended_at_ms, T0 + 1 + n);
            }
        }

        // Past the retention, four per entry: 17 entries forget the first 68, slot 0 and the
        // front of slot 1.
        let later = T0 + 151 + MINUTE_MS;
        let adjusts = (0..17).map(|n| adjust_at(302 + n, later)).collect();
        apply(&mut store, adjusts).await;
        assert_eq!(read_u64(&store, keys::ENDED_FRONT), Some(68));
        assert_eq!(keys_in(&store, start, end), numbers[1..].to_vec());
        let slot1 = &pairs_in(&store, start, end)[0];
        let slot1: Vec<reservations::Ended> = decode(&slot1.0, &slot1.1).unwrap();
        assert_eq!(slot1.len(), 60, "numbers 68 to 127");
        assert_eq!(slot1[0].id, created_by(2 + 68));
        assert_eq!(
            remembered(&store, 150),
            [vec![false; 68], vec![true; 82]].concat()
        );
    });
}

/// Enough reservations to fill several chunks and slots of the retention queue: records, 150
/// holds with deadlines over a few seconds, 90 of them committed or released and 60 expired,
/// then a day later 20 entries that forget 80 (the front inside a slot), and 10 more holds.
fn many_reservations() -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut push = |at_ms: u64, command: Command| {
        let index = entries.len() as u64 + 1;
        entries.push(entry(index, at_ms, command));
        index
    };
    let skus = ["a", "b", "c"];
    for sku in skus {
        push(T0, create("s1", sku, 10_000));
    }
    let mut holds = Vec::new();
    for n in 0..150u64 {
        let ttl_ms = MINUTE_MS + (n * 37) % 5_000;
        let at = push(
            T0 + n,
            hold("s1", skus[n as usize % 3], 1 + n as i64 % 3, ttl_ms),
        );
        holds.push(created_by(at));
    }
    let mut left_held = Vec::new();
    for (n, &id) in holds.iter().enumerate() {
        let at_ms = T0 + 1_000 + n as u64;
        match n % 5 {
            1 | 2 => _ = push(at_ms, Command::Commit { id }),
            3 => _ = push(at_ms, Command::Release { id }),
            _ => left_held.push(id),
        }
    }
    push(T0 + 2 * MINUTE_MS, Command::Expire { ids: left_held });
    let day_ms = reservations::ENDED_RETENTION_MS;
    for n in 0..20 {
        let adjust = Command::Adjust {
            key: key("s1", "a"),
            delta: 1,
            expected_version: None,
        };
        push(T0 + day_ms + 2 * MINUTE_MS + n, adjust);
    }
    for n in 0..10u64 {
        push(
            T0 + day_ms + 3 * MINUTE_MS + n,
            hold("s1", "b", 1, MINUTE_MS),
        );
    }
    entries
}

/// `entries` applied to a fresh store in one call.
async fn replayed(entries: Vec<Entry>) -> StateMachineStore {
    let mut store = fresh_store();
    apply(&mut store, entries).await;
    store
}

#[test]
fn many_reservations_pack_into_the_same_bytes_whatever_the_apply_call_boundaries() {
    block_on(async {
        let entries = many_reservations();
        assert_the_same_bytes_whatever_the_calls(&entries, 5, 40).await;
        let store = replayed(entries).await;
        assert_eq!(read_u64(&store, keys::ENDED_FRONT), Some(120));
        assert_eq!(read_u64(&store, keys::HELD_COUNT), Some(10));
    });
}

/// How far an upgrade from format 4 got before it was cut short: the retention queue is packed
/// below number `ended_from`, the reservations below id `reservations_from` (each packed in key
/// order, a page at a time), and the due keys go last.
#[derive(Debug, Clone, Copy)]
struct PackedBelow {
    ended_from: u64,
    reservations_from: u64,
    due_keys_deleted: bool,
}

impl PackedBelow {
    /// Nothing packed yet: format 4 as it was.
    const NOTHING: Self = Self {
        ended_from: 0,
        reservations_from: 0,
        due_keys_deleted: false,
    };
}

/// `pairs` (a format-5 state) as format 4 stored it, or as an upgrade cut short at `cut` left
/// it: each reservation not yet packed under `Sh` + id, each held one's due entry under `Sd` +
/// deadline + id, each number of the retention queue not yet packed under `Se` + number.
fn as_format4(pairs: &[KeyValue], cut: PackedBelow) -> Vec<KeyValue> {
    let front: u64 = pairs
        .iter()
        .find(|(key, _)| key == keys::ENDED_FRONT)
        .map_or(0, |(key, value)| decode(key, value).unwrap());
    let packed = |id: ReservationId| id.as_u64() < cut.reservations_from;
    let mut old = Vec::new();
    for (key, value) in pairs {
        let mut still_packed = |items: Vec<u8>, empty: bool| {
            if !empty {
                old.push((key.clone(), items));
            }
        };
        if key.starts_with(keys::RESERVATION_CHUNKS_START) {
            let chunk: reservations::Chunk = decode(key, value).unwrap();
            let mut kept = Vec::new();
            let mut unpacked = Vec::new();
            for reservation in chunk {
                if reservation.status == ReservationStatus::Held && !cut.due_keys_deleted {
                    let due_key =
                        reservations::format4_due_key(reservation.expires_at_ms, reservation.id);
                    unpacked.push((due_key, vec![]));
                }
                if packed(reservation.id) {
                    kept.push(reservation);
                } else {
                    let own_key = reservations::format4_reservation_key(reservation.id);
                    unpacked.push((own_key, encode(&reservation)));
                }
            }
            still_packed(encode(&kept), kept.is_empty());
            old.extend(unpacked);
        } else if key.starts_with(keys::DUE_BUCKETS_START) {
            let due: Vec<reservations::Due> = decode(key, value).unwrap();
            let kept: Vec<_> = due.into_iter().filter(|entry| packed(entry.id)).collect();
            still_packed(encode(&kept), kept.is_empty());
        } else if key.starts_with(keys::ENDED_SLOTS_START) {
            let slot = u64::from_be_bytes(key[2..].try_into().unwrap());
            let first = front.max(slot * reservations::ENDED_PER_SLOT);
            let ended: Vec<reservations::Ended> = decode(key, value).unwrap();
            let kept_count = cut.ended_from.saturating_sub(first).min(ended.len() as u64);
            let (kept, moved) = ended.split_at(kept_count as usize);
            still_packed(encode(&kept), kept.is_empty());
            for (at, ended) in moved.iter().enumerate() {
                let number = first + kept_count + at as u64;
                old.push((reservations::format4_ended_key(number), encode(&ended.id)));
            }
        } else {
            old.push((key.clone(), value.clone()));
        }
    }
    old.sort();
    old
}

/// A simulated disk holding `pairs`.
fn disk_holding(pairs: &[KeyValue]) -> SimDisk {
    let disk = SimDisk::new();
    let mut batch = WriteBatch::default();
    for (key, value) in pairs {
        batch.put(key.clone(), value.clone());
    }
    disk.write(batch).unwrap();
    disk
}

#[test]
fn a_format4_state_is_packed_at_open_into_the_bytes_a_format5_replica_holds() {
    block_on(async {
        let entries = many_reservations();
        let (first, second) = entries.split_at(entries.len() - 5);
        let reference = replayed(first.to_vec()).await;
        let format5 = reference.state_pairs().unwrap();
        assert_eq!(
            read_u64(&reference, keys::ENDED_FRONT),
            Some(100),
            "in slot 1"
        );
        assert_eq!(
            read_u64(&reference, keys::HELD_COUNT),
            Some(5),
            "with due entries"
        );
        let mut after = replayed(first.to_vec()).await;
        apply(&mut after, second.to_vec()).await;

        let format4 = as_format4(&format5, PackedBelow::NOTHING);
        let old_keys = format4.iter().filter(|(key, _)| is_format4_key(key));
        let old_keys = old_keys.count();
        let disk = disk_holding(&format4);
        let packed = reservations::upgrade_layout(&disk).await.unwrap();
        assert_eq!(packed, old_keys, "every format-4 key packed or deleted");
        assert_eq!(read_state_pairs(&disk).unwrap(), format5);
        let again = reservations::upgrade_layout(&disk).await.unwrap();
        assert_eq!(again, 0, "nothing is left to pack");
        let mut upgraded = sim_store(Arc::new(disk));
        apply(&mut upgraded, second.to_vec()).await;
        let (upgraded, after) = (upgraded.state_pairs(), after.state_pairs());
        assert_eq!(
            upgraded.unwrap(),
            after.unwrap(),
            "the same after the same entries"
        );

        // Cut short in each step (inside a slot; inside a chunk, between two held
        // reservations; before the due keys went), then finished by opening the store again.
        let cuts = [
            PackedBelow {
                ended_from: 130,
                ..PackedBelow::NOTHING
            },
            PackedBelow {
                ended_from: u64::MAX,
                reservations_from: created_by(first.len() as u64 - 2).as_u64(),
                due_keys_deleted: false,
            },
            PackedBelow {
                ended_from: u64::MAX,
                reservations_from: u64::MAX,
                due_keys_deleted: false,
            },
        ];
        for cut in cuts {
            let partly = as_format4(&format5, cut);
            assert!(has_format4_keys(&partly), "{cut:?}");
            assert_ne!(partly, format4, "{cut:?}: partly packed");
            let disk = disk_holding(&partly);
            sim_store(Arc::new(disk.clone()));
            assert_eq!(read_state_pairs(&disk).unwrap(), format5, "{cut:?}");
        }
    });
}
#[test]
fn a_format4_state_written_by_hand_answers_the_same_once_packed() {
    block_on(async {
        // Format 4's keys as its own code wrote them: two holds, one committed, one released.
        let line = |quantity| ReservationLine {
            key: key("s1", "a"),
            quantity,
        };
        let reservation = |index, status, quantity, updated_at_ms, expires_at_ms| Reservation {
            id: created_by(index),
            status,
            lines: vec![line(quantity)],
            created_at_ms: T0,
            updated_at_ms,
            expires_at_ms,
        };
        let held_late = reservation(2, ReservationStatus::Held, 1, T0, T0 + 5_000);
        let committed = reservation(3, ReservationStatus::Committed, 2, T0 + 10, T0 + 5_000);
        let released = reservation(4, ReservationStatus::Released, 3, T0 + 20, T0 + 5_000);
        let held_early = reservation(40, ReservationStatus::Held, 4, T0, T0 + 3_000);
        let stored_record = Record {
            key: key("s1", "a"),
            quantity: 90,
            reserved: 5,
            version: 6,
            created_at_ms: T0,
            updated_at_ms: T0 + 20,
        };
        let mut batch = WriteBatch::default();
        batch.put(keys::record(&stored_record.key), encode(&stored_record));
        for kept in [&held_late, &committed, &released, &held_early] {
            batch.put(reservations::format4_reservation_key(kept.id), encode(kept));
        }
        for held in [&held_late, &held_early] {
            batch.put(
                reservations::format4_due_key(held.expires_at_ms, held.id),
                vec![],
            );
        }
        batch.put(reservations::format4_ended_key(0), encode(&committed.id));
        batch.put(reservations::format4_ended_key(1), encode(&released.id));
        batch.put(keys::HELD_COUNT.to_vec(), encode(&2u64));
        batch.put(keys::ENDED_NEXT.to_vec(), encode(&2u64));
        batch.put(keys::ENDED_FRONT.to_vec(), encode(&0u64));
        batch.put(keys::CLOCK.to_vec(), encode(&(T0 + 20)));
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
        disk.write(batch).unwrap();

        let mut store = sim_store(disk).with_retention(RetentionSettings {
            retention_ms: MINUTE_MS,
            ended_kept_max: 100,
        });
        assert!(!has_format4_keys(&store.state_pairs().unwrap()));
        for kept in [&held_late, &committed, &released, &held_early] {
            assert_eq!(store.reservation(kept.id).unwrap().as_ref(), Some(kept));
        }
        assert_eq!(
            store.due_holds(T0 + 5_000, 10).unwrap(),
            vec![held_early.id, held_late.id],
            "deadline order, not id order"
        );
        assert_eq!(store.reservation_counts().unwrap(), (2, 2));

        // The queue forgets in the order format 4 numbered it: the commit ended first.
        apply(&mut store, vec![adjust_at(50, T0 + 10 + MINUTE_MS)]).await;
        assert_eq!(status(&store, committed.id), None);
        assert_eq!(
            status(&store, released.id),
            Some(ReservationStatus::Released)
        );
        // And the holds expire from the packed due index.
        let expiry = Command::Expire {
            ids: store.due_holds(T0 + 5_000, 10).unwrap(),
        };
        apply(&mut store, vec![entry(51, T0 + 5_000, expiry)]).await;
        assert_eq!(
            status(&store, held_early.id),
            Some(ReservationStatus::Expired)
        );
        assert_eq!(
            status(&store, held_late.id),
            Some(ReservationStatus::Expired)
        );
        assert_eq!(store.reservation_counts().unwrap(), (0, 3));
        let a = record(&store, "s1", "a");
        assert_eq!((a.quantity, a.reserved), (95, 0));
    });
}

#[test]
fn a_format4_snapshot_is_packed_as_it_is_installed() {
    block_on(async {
        let entries = many_reservations();
        let (first, second) = entries.split_at(entries.len() - 5);
        let mut source = replayed(first.to_vec()).await;
        let snapshot = built_snapshot(&mut source).await;
        let head = snapshot.snapshot.read_chunk(0, 8).unwrap();
        assert_eq!(head, b"STKSNAP4", "format 5 inside");
        let format4 = as_format4(&source.state_pairs().unwrap(), PackedBelow::NOTHING);
        let old_file = old_snapshot(b"STKSNAP3", &snapshot.meta, &format4);

        let mut target = fresh_store();
        let received = transfer(&old_file, &target);
        target
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        assert_eq!(target.state_pairs().unwrap(), source.state_pairs().unwrap());
        apply(&mut target, second.to_vec()).await;
        apply(&mut source, second.to_vec()).await;
        assert_eq!(target.state_pairs().unwrap(), source.state_pairs().unwrap());
    });
}
