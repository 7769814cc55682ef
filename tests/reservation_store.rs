//! The reservation state in the state machine store: holds stored and read back, the due index
//! and held count kept through commit, release and expiry, the same bytes whatever the apply-call
//! boundaries, retention at its edges, snapshots, the SKU index built at open, and the reads the
//! API and the expiry proposer use.
#![cfg(not(madsim))]

use std::sync::Arc;

use futures::stream;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::vote::RaftLeaderIdExt;
use openraft::EntryPayload;
use stockraft::inventory::{
    CartLine, Command, Record, RecordKey, Request, ReservationId, ReservationStatus,
};
use stockraft::raft::reservations::{self, RetentionSettings};
use stockraft::raft::state_machine::StateMachineStore;
use stockraft::raft::{Entry, LogId, TypeConfig};
use stockraft::storage::fs::SimFs;
use stockraft::storage::snapshots::{SnapshotDir, SnapshotFile};
use stockraft::storage::{encode, keys, Disk, SimDisk, WriteBatch};

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

fn due_keys(store: &StateMachineStore) -> usize {
    store
        .state_pairs()
        .unwrap()
        .iter()
        .filter(|(key, _)| key.starts_with(keys::DUE_START))
        .count()
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
        assert_eq!(due_keys(&store), 3);
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
        assert_eq!(due_keys(&store), 1);
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
        assert_eq!(due_keys(&store), 0);
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

#[test]
fn the_state_is_the_same_bytes_whatever_the_apply_call_boundaries() {
    block_on(async {
        let entries = shop_day();
        let count = entries.len();
        let one_by_one = applied_in_calls(&entries, std::iter::repeat_n(1, count)).await;
        let all_at_once = applied_in_calls(&entries, [count]).await;
        assert_eq!(one_by_one, all_at_once, "one call per entry vs one call");
        for seed in 1..=20u64 {
            let mut state = seed;
            let sizes: Vec<usize> = (0..count)
                .map(|_| 1 + next_random(&mut state) as usize % 7)
                .collect();
            let split = applied_in_calls(&entries, sizes.clone()).await;
            assert_eq!(one_by_one, split, "random split {sizes:?}");
        }
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
            .filter(|(key, _)| key.starts_with(keys::ENDED_START) && key.len() == 10)
            .count();
        assert_eq!(queue, 0, "the queue's entries are gone with them");
    });
}

/// Streams `file` into `target`'s snapshot directory, as a leader sends it.
fn transfer(file: &SnapshotFile, target: &StateMachineStore) -> SnapshotFile {
    let mut offset = 0;
    loop {
        let data = file.read_chunk(offset, 64 * 1024).unwrap();
        let done = offset + data.len() as u64 >= file.size();
        let received = target
            .snapshot_dir()
            .receive("test", offset, &data, done)
            .unwrap();
        if let Some(received) = received {
            return received;
        }
        offset += data.len() as u64;
    }
}

#[test]
fn a_snapshot_carries_reservations_their_indexes_and_counters() {
    block_on(async {
        let mut source = fresh_store();
        let mut entries = shop_day();
        entries.truncate(entries.len() - 7);
        apply(&mut source, entries).await;
        let snapshot = source
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
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
