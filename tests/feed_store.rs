//! The event feed in the state machine: numbered alike whatever the apply batches, forgotten
//! alike by the retention, and carried whole by a snapshot (a node restored from one serves
//! what the node that built it kept, and numbers on from there).
#![cfg(not(madsim))]

#[allow(dead_code)] // the old-format helpers: this file needs only the current format's
#[path = "support/snapshot_files.rs"]
mod snapshot_files;

use std::sync::Arc;

use futures::stream;
use openraft::storage::RaftStateMachine;
use openraft::vote::RaftLeaderIdExt;
use openraft::{EntryPayload, Membership};
use snapshot_files::{built_snapshot, transfer};
use stockraft::inventory::{Command, Event, EventFilter, EventKind, RecordKey, Request};
use stockraft::raft::events::{EventsError, FeedRetention};
use stockraft::raft::state_machine::StateMachineStore;
use stockraft::raft::{Entry, LogId, TypeConfig};
use stockraft::storage::fs::SimFs;
use stockraft::storage::snapshots::SnapshotDir;
use stockraft::storage::{keys, Disk, Order, SimDisk, WriteBatch};

const RETENTION: FeedRetention = FeedRetention {
    kept_max: 128,
    retention_ms: 60_000,
};

fn log_id(index: u64) -> LogId {
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1),
        index,
    )
}

fn membership_entry(index: u64) -> Entry {
    let members = [(1, openraft::BasicNode { addr: "a".into() })]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>();
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::new(vec![[1].into()], members).unwrap()),
    }
}

/// Entry `index`: creates `sku-<index % 5>` when it does not exist yet, else adjusts it (a
/// second create is refused: no event), stamped `index * 100` ms of log time.
fn entry(index: u64) -> Entry {
    let key = RecordKey::new("s1", &format!("sku-{}", index % 5)).unwrap();
    let command = if index.is_multiple_of(3) {
        Command::Create {
            key,
            initial_quantity: 5,
        }
    } else {
        Command::Adjust {
            key,
            delta: 1,
            expected_version: None,
        }
    };
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request {
            command,
            proposed_at_ms: index * 100,
            idempotency: None,
        }),
    }
}

fn store() -> StateMachineStore {
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new());
    let snapshots = SnapshotDir::open(
        Arc::new(SimFs::new()),
        std::path::Path::new("/node/snapshots"),
    )
    .unwrap();
    StateMachineStore::open(disk, snapshots)
        .unwrap()
        .with_feed_retention(RETENTION)
}

async fn apply(store: &mut StateMachineStore, entries: Vec<Entry>) {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    store.apply(stream::iter(items)).await.unwrap();
}

/// Every event `store` keeps, from its oldest.
fn feed(store: &StateMachineStore) -> Vec<Event> {
    let head = store.feed_head().unwrap();
    let mut after = head.oldest_seq - 1;
    let mut events = Vec::new();
    loop {
        let page = store.events(after, 1000, &EventFilter::default()).unwrap();
        events.extend(page.events);
        match page.next {
            Some(next) => after = next,
            None => return events,
        }
    }
}

fn entries(range: std::ops::Range<u64>) -> Vec<Entry> {
    range.map(entry).collect()
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn replicas_number_and_forget_alike_whatever_their_apply_batches() {
    block_on(async {
        let all: Vec<Entry> = std::iter::once(membership_entry(1))
            .chain(entries(2..600))
            .collect();
        let mut one_call = store();
        apply(&mut one_call, all.clone()).await;
        let mut small_calls = store();
        for batch in all.chunks(7) {
            apply(&mut small_calls, batch.to_vec()).await;
        }
        let events = feed(&one_call);
        assert_eq!(events, feed(&small_calls));
        assert_eq!(
            one_call.state_pairs().unwrap(),
            small_calls.state_pairs().unwrap()
        );
        // Dense and in log order; the retention forgot the oldest whole chunks.
        let head = one_call.feed_head().unwrap();
        assert!(head.oldest_seq > 1, "{head:?}");
        assert!((head.oldest_seq - 1).is_multiple_of(64));
        assert!(
            head.last_seq - head.oldest_seq < RETENTION.kept_max,
            "{head:?}"
        );
        for pair in events.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1);
            assert!(pair[1].log_index > pair[0].log_index);
        }
        // The refused creates (of records that exist) left no event.
        assert!(events
            .iter()
            .all(|event| event.kind != EventKind::Created || event.version == 1));
        match one_call.events(head.oldest_seq - 2, 10, &EventFilter::default()) {
            Err(EventsError::Gone { oldest_seq, .. }) => assert_eq!(oldest_seq, head.oldest_seq),
            other => panic!("expected Gone, got {other:?}"),
        }
    });
}

#[test]
fn a_snapshot_carries_the_kept_events_and_the_position() {
    block_on(async {
        let mut source = store();
        apply(
            &mut source,
            std::iter::once(membership_entry(1))
                .chain(entries(2..300))
                .collect(),
        )
        .await;
        let snapshot = built_snapshot(&mut source).await;
        let mut restored = store();
        let received = transfer(&snapshot.snapshot, &restored);
        restored
            .install_snapshot(&snapshot.meta, received)
            .await
            .unwrap();
        assert_eq!(feed(&restored), feed(&source));
        assert_eq!(restored.feed_head().unwrap(), source.feed_head().unwrap());
        // Both number the next entries alike.
        apply(&mut source, entries(300..400)).await;
        apply(&mut restored, entries(300..400)).await;
        assert_eq!(feed(&restored), feed(&source));
        assert_eq!(
            restored.state_pairs().unwrap(),
            source.state_pairs().unwrap()
        );
    });
}

#[test]
fn readers_are_woken_when_events_are_numbered() {
    block_on(async {
        let mut store = store();
        let mut head = store.subscribe_feed();
        assert_eq!(*head.borrow_and_update(), 0);
        apply(&mut store, vec![membership_entry(1)]).await;
        apply(&mut store, entries(2..5)).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), head.changed())
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(
            *head.borrow_and_update(),
            store.feed_head().unwrap().last_seq
        );
        assert!(store.feed_head().unwrap().last_seq > 0);
    });
}

fn start_feed_entry(index: u64) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request {
            command: Command::StartFeed,
            proposed_at_ms: index * 100,
            idempotency: None,
        }),
    }
}

/// Makes `store`'s disk look like one an older version wrote: no feed position, no events.
fn forget_the_feed(store: &StateMachineStore) {
    let mut batch = WriteBatch::default();
    batch.delete(keys::FEED_POSITION.to_vec());
    for (key, _) in store
        .disk()
        .scan(
            keys::EVENT_CHUNKS_START,
            keys::EVENT_CHUNKS_END,
            Order::Ascending,
            usize::MAX,
        )
        .unwrap()
    {
        batch.delete(key);
    }
    store.disk().write(batch).unwrap();
}

#[test]
fn an_upgraded_store_numbers_nothing_until_a_start_feed_entry_and_a_replaying_joiner_agrees() {
    block_on(async {
        let before: Vec<Entry> = std::iter::once(membership_entry(1))
            .chain(entries(2..100))
            .collect();
        let mut upgraded = store();
        apply(&mut upgraded, before.clone()).await;
        forget_the_feed(&upgraded);
        assert!(upgraded.feed_missing().unwrap());
        // Entries applied after the upgrade but before the start record nothing.
        apply(&mut upgraded, entries(100..120)).await;
        assert!(matches!(
            upgraded.events(0, 10, &EventFilter::default()),
            Err(EventsError::NotStarted)
        ));
        // The start, then more changes, then a second start (another leader's) that changes
        // nothing.
        let after: Vec<Entry> = std::iter::once(start_feed_entry(120))
            .chain(entries(121..200))
            .chain(std::iter::once(start_feed_entry(200)))
            .chain(entries(201..260))
            .collect();
        apply(&mut upgraded, after.clone()).await;
        assert!(!upgraded.feed_missing().unwrap());
        let events = feed(&upgraded);
        assert_eq!(events.first().map(|event| event.seq), Some(1));
        assert!(events[0].log_index > 120);
        assert_eq!(upgraded.feed_head().unwrap().oldest_seq, 1);
        // A node that joins with an empty store and replays the whole log numbered from its
        // first entry, then starts again at the StartFeed: the same feed, the same bytes.
        let mut joiner = store();
        let whole_log: Vec<Entry> = before
            .into_iter()
            .chain(entries(100..120))
            .chain(after)
            .collect();
        for batch in whole_log.chunks(13) {
            apply(&mut joiner, batch.to_vec()).await;
        }
        assert_eq!(feed(&joiner), events);
        assert_eq!(
            joiner.state_pairs().unwrap(),
            upgraded.state_pairs().unwrap()
        );
    });
}

/// A batch entry (`Command::Batch`) through the state machine: each applied line is stored and
/// fed in line order, two lines on one record as two changes, a hold line as a held
/// reservation, a failed line (with `rejectFailedLines`) as nothing; and a refused batch
/// (`rejectEverything`) stores and feeds nothing.
#[test]
fn a_batch_entry_stores_and_feeds_each_applied_line_in_order() {
    use stockraft::inventory::{BatchLine, ErrorPolicy, ReservationId, ReservationStatus};
    let key = |sku: &str| RecordKey::new("s1", sku).unwrap();
    let batch_entry = |index: u64, policy, lines| Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request {
            command: Command::Batch { lines, policy },
            proposed_at_ms: 1_767_225_600_000,
            idempotency: None,
        }),
    };
    block_on(async {
        let mut store = store();
        let lines = vec![
            BatchLine::Create {
                key: key("a"),
                initial_quantity: 5,
            },
            BatchLine::Adjust {
                key: key("a"),
                delta: 2,
                expected_version: Some(1),
            },
            BatchLine::Reserve {
                key: key("missing"),
                quantity: 1,
                expected_version: None,
                ttl_ms: None,
            },
            BatchLine::Reserve {
                key: key("a"),
                quantity: 3,
                expected_version: None,
                ttl_ms: Some(60_000),
            },
            BatchLine::Set {
                key: key("b"),
                qty: 4,
                expected_version: None,
            },
        ];
        let entries = vec![
            membership_entry(1),
            batch_entry(2, ErrorPolicy::RejectFailedLines, lines),
        ];
        apply(&mut store, entries).await;
        let a = store.record(&key("a")).unwrap().unwrap();
        assert_eq!((a.quantity, a.reserved, a.version), (4, 3, 3));
        assert_eq!(store.record(&key("b")).unwrap().unwrap().quantity, 4);
        assert_eq!(store.record(&key("missing")).unwrap(), None);
        let hold = store
            .reservation(ReservationId::new(2, 0).unwrap())
            .unwrap()
            .expect("the hold line's reservation is stored");
        assert_eq!(hold.status, ReservationStatus::Held);
        let fed: Vec<(EventKind, String, u64)> = feed(&store)
            .iter()
            .map(|event| (event.kind, event.key.sku.clone(), event.version))
            .collect();
        let expected = [
            (EventKind::Created, "a", 1),
            (EventKind::Adjusted, "a", 2),
            (EventKind::Held, "a", 3),
            (EventKind::Created, "b", 1),
        ];
        assert_eq!(
            fed,
            expected.map(|(kind, sku, version)| (kind, sku.to_owned(), version))
        );

        let before = store.state_pairs().unwrap();
        let refused = vec![
            BatchLine::Adjust {
                key: key("b"),
                delta: 1,
                expected_version: None,
            },
            BatchLine::Adjust {
                key: key("a"),
                delta: -5,
                expected_version: None,
            },
        ];
        apply(
            &mut store,
            vec![batch_entry(3, ErrorPolicy::RejectEverything, refused)],
        )
        .await;
        assert_eq!(store.record(&key("b")).unwrap().unwrap().version, 1);
        assert_eq!(feed(&store).len(), 4, "a refused batch feeds nothing");
        assert_ne!(
            store.state_pairs().unwrap(),
            before,
            "only the applied id moved"
        );
    });
}

/// A packed batch (`Command::PackedBatch`, the form the batch route proposes) through the state
/// machine: unpacked there and applied exactly as the batch of its lines, in a call carrying
/// enough lines to run off the runtime thread (`APPLY_OFF_RUNTIME_LINES_MIN`) as in one that
/// does not: the same state and the same feed. Packed bytes that do not decode change nothing
/// but the applied index, on every replica alike.
#[test]
fn a_packed_batch_stores_and_feeds_what_its_lines_would() {
    use stockraft::inventory::{BatchLine, ErrorPolicy, PackedLines};
    use stockraft::raft::state_machine::APPLY_OFF_RUNTIME_LINES_MIN;
    let entry = |index: u64, command| Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request {
            command,
            proposed_at_ms: 1_767_225_600_000,
            idempotency: None,
        }),
    };
    let lines = |count: usize| -> Vec<BatchLine> {
        (0..count)
            .map(|n| {
                let key = RecordKey::new("s1", &format!("sku-{}", n % 97)).unwrap();
                match n % 3 {
                    0 => BatchLine::Set {
                        key,
                        qty: 10,
                        expected_version: None,
                    },
                    1 => BatchLine::Reserve {
                        key,
                        quantity: 1,
                        expected_version: None,
                        ttl_ms: None,
                    },
                    _ => BatchLine::Adjust {
                        key,
                        delta: 2,
                        expected_version: Some(1),
                    },
                }
            })
            .collect()
    };
    block_on(async {
        for count in [5, APPLY_OFF_RUNTIME_LINES_MIN * 2] {
            let lines = lines(count);
            let policy = ErrorPolicy::RejectFailedLines;
            let (mut plain, mut packed) = (store(), store());
            let batch = Command::Batch {
                lines: lines.clone(),
                policy,
            };
            apply(&mut plain, vec![membership_entry(1), entry(2, batch)]).await;
            let command = Command::packed_batch(&lines, policy);
            apply(&mut packed, vec![membership_entry(1), entry(2, command)]).await;
            assert_eq!(feed(&packed), feed(&plain), "{count} lines");
            // Every third line sets a record (creating it): each is at least one event.
            assert!(feed(&packed).len() >= count / 3, "{count} lines");
            assert_eq!(packed.state_pairs().unwrap(), plain.state_pairs().unwrap());

            let garbage: PackedLines = {
                let config = bincode::config::standard();
                let bytes = bincode::serde::encode_to_vec((3u32, vec![200u8, 1, 2]), config);
                bincode::serde::decode_from_slice(&bytes.unwrap(), config)
                    .unwrap()
                    .0
            };
            let records = |store: &StateMachineStore| {
                (0..97)
                    .map(|n| {
                        let key = RecordKey::new("s1", &format!("sku-{n}")).unwrap();
                        store.record(&key).unwrap()
                    })
                    .collect::<Vec<_>>()
            };
            let before = records(&packed);
            let last_seq = packed.feed_head().unwrap().last_seq;
            let bad = Command::PackedBatch {
                lines: garbage,
                policy,
            };
            apply(&mut packed, vec![entry(3, bad)]).await;
            assert_eq!(records(&packed), before);
            assert_eq!(packed.feed_head().unwrap().last_seq, last_seq);
            assert_eq!(packed.applied().unwrap().map(|id| id.index), Some(3));
        }
    });
}
