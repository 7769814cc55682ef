//! The feed on a simulated disk: apply calls as the state machine makes them (begin, forget,
//! append per entry, finish into a batch, write it), then pages read back.

use super::*;
use crate::inventory::{EventKind, RecordKey};
use crate::storage::SimDisk;

fn event(store: &str, sku: &str, kind: EventKind, at_ms: u64) -> Event {
    Event {
        seq: 0,
        log_index: 0,
        kind,
        key: RecordKey::new(store, sku).unwrap(),
        quantity: 1,
        reserved: 0,
        delta: None,
        version: 1,
        reservation_id: None,
        idempotency_key: None,
        at_ms,
    }
}

/// One apply call of `entries` (each: its log time and its events) on a fresh or stored feed.
fn call(disk: &SimDisk, retention: FeedRetention, entries: Vec<(u64, Vec<Event>)>) -> u64 {
    let fresh = position(disk).unwrap().is_none();
    let mut feed = Feed::begin(disk, retention, fresh).unwrap();
    for (now_ms, events) in entries {
        feed.forget(now_ms).unwrap();
        feed.append(events).unwrap();
    }
    let mut batch = WriteBatch::default();
    let last = feed.finish(&mut batch);
    disk.write(batch).unwrap();
    last
}

fn all(disk: &SimDisk, after: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut after = after;
    loop {
        let page = read_page(disk, after, 1000, &EventFilter::default()).unwrap();
        events.extend(page.events);
        match page.next {
            Some(next) => after = next,
            None => return events,
        }
    }
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|event| event.seq).collect()
}

const KEEP_ALL: FeedRetention = FeedRetention {
    kept_max: u64::MAX,
    retention_ms: u64::MAX,
};

#[test]
fn seqs_are_dense_from_one_across_calls_and_chunks() {
    let disk = SimDisk::new();
    for call_number in 0..10u64 {
        let entries = (0..7)
            .map(|i| {
                let events = (0..i)
                    .map(|_| event("s", "a", EventKind::Adjusted, 1))
                    .collect();
                (call_number, events)
            })
            .collect();
        call(&disk, KEEP_ALL, entries);
    }
    let events = all(&disk, 0);
    assert_eq!(seqs(&events), (1..=210).collect::<Vec<_>>());
    assert_eq!(
        head(&disk).unwrap(),
        FeedHead {
            last_seq: 210,
            oldest_seq: 1
        }
    );
    // A cursor in the middle of a chunk resumes strictly after it.
    assert_eq!(seqs(&all(&disk, 100))[0], 101);
    // A cursor at or past the head reads nothing, and says it reached the head.
    let page = read_page(&disk, 210, 10, &EventFilter::default()).unwrap();
    assert!(page.events.is_empty() && page.next.is_none() && page.head == 210);
}

#[test]
fn a_page_stops_at_its_limit_and_names_the_next_cursor() {
    let disk = SimDisk::new();
    let events = (0..150)
        .map(|_| event("s", "a", EventKind::Created, 1))
        .collect();
    call(&disk, KEEP_ALL, vec![(1, events)]);
    let page = read_page(&disk, 0, 100, &EventFilter::default()).unwrap();
    assert_eq!(seqs(&page.events), (1..=100).collect::<Vec<_>>());
    assert_eq!(page.next, Some(100));
    let page = read_page(&disk, 100, 100, &EventFilter::default()).unwrap();
    assert_eq!(seqs(&page.events), (101..=150).collect::<Vec<_>>());
    assert_eq!(page.next, None);
}

#[test]
fn filters_select_by_store_sku_and_kind() {
    let disk = SimDisk::new();
    let events = vec![
        event("s1", "a", EventKind::Created, 1),
        event("s2", "a", EventKind::Created, 1),
        event("s1", "b", EventKind::Held, 1),
        event("s1", "a", EventKind::Held, 1),
    ];
    call(&disk, KEEP_ALL, vec![(1, events)]);
    let read = |filter: EventFilter| seqs(&read_page(&disk, 0, 100, &filter).unwrap().events);
    let store = |s: &str| Some(s.to_owned());
    assert_eq!(
        read(EventFilter {
            store_id: store("s1"),
            ..Default::default()
        }),
        [1, 3, 4]
    );
    assert_eq!(
        read(EventFilter {
            sku: store("a"),
            ..Default::default()
        }),
        [1, 2, 4]
    );
    assert_eq!(
        read(EventFilter {
            store_id: store("s1"),
            sku: store("a"),
            kinds: Some(vec![EventKind::Held]),
        }),
        [4]
    );
}

#[test]
fn a_filtered_read_examines_a_bounded_number_of_events_and_goes_on_from_there() {
    let disk = SimDisk::new();
    let total = EVENTS_SCAN_MAX + 100;
    let mut events: Vec<Event> = (0..total)
        .map(|_| event("s", "other", EventKind::Created, 1))
        .collect();
    events.last_mut().unwrap().key = RecordKey::new("s", "wanted").unwrap();
    call(&disk, KEEP_ALL, vec![(1, events)]);
    let filter = EventFilter {
        sku: Some("wanted".into()),
        ..Default::default()
    };
    let page = read_page(&disk, 0, 10, &filter).unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.next, Some(EVENTS_SCAN_MAX));
    let page = read_page(&disk, EVENTS_SCAN_MAX, 10, &filter).unwrap();
    assert_eq!(seqs(&page.events), [total]);
    assert_eq!(page.next, None);
}

#[test]
fn retention_by_count_forgets_whole_chunks_from_the_front_at_its_edge() {
    let disk = SimDisk::new();
    let retention = FeedRetention {
        kept_max: 128,
        retention_ms: u64::MAX,
    };
    // 192 events kept exactly: the count is over 128 only when the next entry comes.
    for _ in 0..192 {
        call(
            &disk,
            retention,
            vec![(1, vec![event("s", "a", EventKind::Adjusted, 1)])],
        );
    }
    // Each entry forgets before it appends: the 130th saw 129 kept, over 128, so chunk 0
    // (seqs 1-64) went; from then on at most 128 were kept when an entry came.
    let head_now = head(&disk).unwrap();
    assert_eq!(head_now.last_seq, 192);
    assert_eq!(head_now.oldest_seq, 65, "{head_now:?}");
    // Reading before the oldest kept is refused, naming it; at its edge it is not.
    match read_page(&disk, 63, 10, &EventFilter::default()) {
        Err(EventsError::Gone { oldest_seq, .. }) => assert_eq!(oldest_seq, 65),
        other => panic!("expected Gone, got {other:?}"),
    }
    assert_eq!(seqs(&all(&disk, 64)), (65..=192).collect::<Vec<_>>());
    // The forgotten chunks are gone from the disk, not only hidden.
    let stored = disk
        .scan(
            keys::EVENT_CHUNKS_START,
            keys::EVENT_CHUNKS_END,
            Order::Ascending,
            usize::MAX,
        )
        .unwrap();
    assert_eq!(stored.len(), 2);
}

#[test]
fn retention_by_age_keeps_the_chunk_being_filled_and_anything_younger() {
    let disk = SimDisk::new();
    let retention = FeedRetention {
        kept_max: u64::MAX,
        retention_ms: 1_000,
    };
    // Chunk 0 (seqs 1-64) at log time 10, chunk 1 at 2_000, then one event at 3_000.
    call(
        &disk,
        retention,
        vec![(
            10,
            (0..64)
                .map(|_| event("s", "a", EventKind::Created, 10))
                .collect(),
        )],
    );
    call(
        &disk,
        retention,
        vec![(
            2_000,
            (0..64)
                .map(|_| event("s", "a", EventKind::Adjusted, 2_000))
                .collect(),
        )],
    );
    // At 2_000 chunk 0 was 1_990 old but nothing past it was written yet: it was the chunk
    // being filled at the time of the check, so it is still there.
    assert_eq!(head(&disk).unwrap().oldest_seq, 1);
    // At 3_000: chunk 0 (newest at 10) is too old; chunk 1 (newest at 2_000, exactly 1_000
    // old) is the chunk being filled then: kept.
    call(
        &disk,
        retention,
        vec![(3_000, vec![event("s", "a", EventKind::Held, 3_000)])],
    );
    assert_eq!(head(&disk).unwrap().oldest_seq, 65);
    // At 3_001 chunk 2 is being filled and chunk 1 is 1_001 old: forgotten.
    call(
        &disk,
        retention,
        vec![(3_001, vec![event("s", "a", EventKind::Held, 3_001)])],
    );
    assert_eq!(head(&disk).unwrap().oldest_seq, 129);
    assert_eq!(seqs(&all(&disk, 128)), [129, 130]);
}

#[test]
fn retention_forgets_a_bounded_number_of_chunks_per_entry() {
    let disk = SimDisk::new();
    let ten_chunks = (0..640)
        .map(|_| event("s", "a", EventKind::Created, 0))
        .collect();
    call(&disk, KEEP_ALL, vec![(0, ten_chunks)]);
    let retention = FeedRetention {
        kept_max: 64,
        retention_ms: u64::MAX,
    };
    call(&disk, retention, vec![(1, vec![])]);
    assert_eq!(
        head(&disk).unwrap().oldest_seq,
        CHUNKS_FORGOTTEN_PER_ENTRY_MAX * EVENTS_PER_CHUNK + 1
    );
}

#[test]
fn a_store_that_predates_the_feed_records_nothing_and_says_so() {
    let disk = SimDisk::new();
    let mut feed = Feed::begin(&disk, KEEP_ALL, false).unwrap();
    feed.append(vec![event("s", "a", EventKind::Created, 1)])
        .unwrap();
    let mut batch = WriteBatch::default();
    assert_eq!(feed.finish(&mut batch), 0);
    disk.write(batch).unwrap();
    assert!(matches!(
        read_page(&disk, 0, 10, &EventFilter::default()),
        Err(EventsError::NotStarted)
    ));
}

#[test]
fn a_chunk_missing_from_the_kept_range_is_an_error_never_a_skip() {
    let disk = SimDisk::new();
    let events = (0..200)
        .map(|_| event("s", "a", EventKind::Created, 1))
        .collect();
    call(&disk, KEEP_ALL, vec![(1, events)]);
    // Chunk 1 (seqs 65-128) lost while the position still keeps it: a broken store.
    let mut batch = WriteBatch::default();
    batch.delete(chunk_key(1));
    disk.write(batch).unwrap();
    assert_eq!(
        seqs(
            &read_page(&disk, 0, 64, &EventFilter::default())
                .unwrap()
                .events
        )
        .len(),
        64
    );
    match read_page(&disk, 60, 100, &EventFilter::default()) {
        Err(EventsError::Storage(StorageError::Invariant(message))) => {
            assert!(message.contains("65"), "{message}")
        }
        other => panic!("expected an invariant error, got {other:?}"),
    }
    // Forgotten by retention since the page's read began (the position moved on): Gone.
    let mut batch = WriteBatch::default();
    batch.put(
        keys::FEED_POSITION.to_vec(),
        encode(&FeedPosition {
            last_seq: 200,
            oldest_seq: 129,
            started_at: 0,
        }),
    );
    disk.write(batch).unwrap();
    assert!(matches!(
        read_page(&disk, 100, 10, &EventFilter::default()),
        Err(EventsError::Gone {
            oldest_seq: 129,
            ..
        })
    ));
}
