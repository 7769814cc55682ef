//! The idempotency log on a simulated disk: each test runs apply calls as the state machine
//! does (begin, change, finish into a batch, write the batch) and reads back what was stored.

use super::chunks::Place;
use super::*;
use crate::inventory::{
    IdempotencyEntry, IdempotencyId, Operation, RecordKey, Rejection, Response,
};
use crate::storage::{self, decode, keys, Disk, Order, SimDisk, WriteBatch};

fn id(scope: &str, key: &str) -> IdempotencyId {
    IdempotencyId {
        scope: scope.into(),
        key: key.into(),
    }
}

fn anonymous(key: &str) -> IdempotencyId {
    id("", key)
}

/// An entry expiring at `expires_at_ms`, told apart from others by `log_index`.
fn entry(expires_at_ms: u64, log_index: u64) -> IdempotencyEntry {
    IdempotencyEntry {
        fingerprint: log_index.to_be_bytes().to_vec(),
        response: Response {
            operation: Operation::Create,
            result: Err(Rejection::Overflow).into(),
            replayed: false,
            log_index,
        },
        expires_at_ms,
    }
}

/// A log on a [`SimDisk`], with the key index kept between calls as the state machine keeps it.
struct TestLog {
    disk: SimDisk,
    settings: LogSettings,
    index: Option<KeyIndex>,
}

impl TestLog {
    fn new(keys_max: u64, entries_per_chunk: u64) -> Self {
        Self {
            disk: SimDisk::new(),
            settings: LogSettings {
                keys_max,
                layout: ChunkLayout::new(entries_per_chunk),
            },
            index: None,
        }
    }

    /// One apply call: `change` runs on the log, whose writes are then written. The index it
    /// hands back must be the one a build from the disk gives.
    fn call<T>(&mut self, change: impl FnOnce(&mut IdempotencyLog<'_>) -> T) -> T {
        let index = match self.index.take() {
            Some(index) => index,
            None => KeyIndex::build(&self.disk, self.settings.layout).unwrap(),
        };
        let mut log = IdempotencyLog::begin(&self.disk, index, self.settings).unwrap();
        let result = change(&mut log);
        let mut batch = WriteBatch::default();
        let index = log.finish(&mut batch);
        self.disk.write(batch).unwrap();
        assert_eq!(
            index,
            KeyIndex::build(&self.disk, self.settings.layout).unwrap(),
            "the kept key index is the one the disk gives"
        );
        self.index = Some(index);
        result
    }

    fn remember(&mut self, key: &str, expires_at_ms: u64, log_index: u64) {
        self.call(|log| log.remember(&anonymous(key), entry(expires_at_ms, log_index)))
            .unwrap();
    }

    fn find(&mut self, key: &str) -> Option<IdempotencyEntry> {
        self.call(|log| log.find(&anonymous(key))).unwrap()
    }

    fn purge(&mut self, now_ms: u64) {
        self.call(|log| log.purge_expired(now_ms)).unwrap();
    }

    fn number(&self, key: &[u8]) -> u64 {
        storage::read(&self.disk, key).unwrap().unwrap_or(0)
    }

    /// (front, next, stored) as written.
    fn positions(&self) -> (u64, u64, u64) {
        (
            self.number(keys::KEY_FRONT),
            self.number(keys::KEY_NEXT),
            self.number(keys::IDEMPOTENCY_KEY_COUNT),
        )
    }

    /// The chunks on the disk, by number.
    fn chunks(&self) -> Vec<(u64, Chunk)> {
        let pairs = self
            .disk
            .scan(
                keys::KEY_CHUNKS_START,
                keys::KEY_CHUNKS_END,
                Order::Ascending,
                usize::MAX,
            )
            .unwrap();
        pairs
            .iter()
            .map(|(key, value)| (chunk_number(key).unwrap(), decode(key, value).unwrap()))
            .collect()
    }

    /// The keys of the live entries, oldest first: the stored slots from the front on.
    fn live_keys(&self) -> Vec<String> {
        let (front, ..) = self.positions();
        let layout = self.settings.layout;
        let mut live = Vec::new();
        for (chunk_number, chunk) in self.chunks() {
            for (slot, stored) in chunk.into_iter().enumerate() {
                if let (true, Some(stored)) = (layout.number(chunk_number, slot) >= front, stored) {
                    live.push(parse_identity(&stored.identity).unwrap().key);
                }
            }
        }
        live
    }
}

#[test]
fn a_remembered_entry_is_found_and_a_newer_one_of_its_identity_replaces_it() {
    let mut log = TestLog::new(IDEMPOTENCY_KEYS_MAX, KEYS_PER_CHUNK);
    assert_eq!(log.find("a"), None);
    log.remember("a", 100, 1);
    log.remember("b", 100, 2);
    assert_eq!(log.find("a"), Some(entry(100, 1)));
    assert_eq!(log.find("b"), Some(entry(100, 2)));
    assert_eq!(
        log.call(|log| log.find(&id("client:x", "a"))).unwrap(),
        None,
        "another scope's key of the same name is another identity"
    );

    log.remember("a", 300, 3);
    assert_eq!(log.find("a"), Some(entry(300, 3)));
    assert_eq!(
        log.positions(),
        (0, 3, 2),
        "the old entry's slot was emptied"
    );
    assert_eq!(log.chunks()[0].1[0], None);
    assert_eq!(log.live_keys(), ["b", "a"]);
}

#[test]
fn expired_entries_are_purged_oldest_first_a_few_per_call() {
    let mut log = TestLog::new(IDEMPOTENCY_KEYS_MAX, 4);
    for i in 0..10u64 {
        log.remember(&format!("k{i}"), 100 + i, i);
    }
    log.purge(105);
    assert_eq!(log.positions(), (4, 10, 6), "at most four per call");
    log.purge(105);
    assert_eq!(
        log.positions(),
        (6, 10, 4),
        "every entry expired by 105 is gone"
    );
    log.purge(105);
    assert_eq!(log.positions(), (6, 10, 4), "none of the rest has expired");
    assert_eq!(log.live_keys(), ["k6", "k7", "k8", "k9"]);
    assert_eq!(log.find("k5"), None);
    assert!(log.find("k6").is_some());
}

#[test]
fn past_the_cap_the_oldest_entries_are_evicted_before_they_expire() {
    let mut log = TestLog::new(3, 2);
    for i in 0..6u64 {
        log.remember(&format!("k{i}"), 1_000 + i, i);
        assert!(
            log.positions().2 <= 3,
            "never more than the cap after a call"
        );
    }
    assert_eq!(log.live_keys(), ["k3", "k4", "k5"]);
    assert_eq!(log.positions(), (3, 6, 3));
}

#[test]
fn a_chunk_is_deleted_once_the_front_has_passed_all_its_entries() {
    let mut log = TestLog::new(IDEMPOTENCY_KEYS_MAX, 2);
    for i in 0..5u64 {
        log.remember(&format!("k{i}"), 100 + i, i);
    }
    let numbers = |log: &TestLog| log.chunks().iter().map(|(n, _)| *n).collect::<Vec<_>>();
    assert_eq!(numbers(&log), [0, 1, 2]);
    log.purge(102);
    assert_eq!(log.positions().0, 3);
    assert_eq!(
        numbers(&log),
        [1, 2],
        "chunk 1 still holds entry 3, which is live"
    );
    log.purge(103);
    assert_eq!(numbers(&log), [2]);
    log.purge(104);
    assert_eq!(log.positions(), (5, 5, 0));
    assert_eq!(
        numbers(&log),
        [2],
        "the newest chunk stays until the front passes its last slot"
    );
}

#[test]
fn entries_stored_in_the_same_millisecond_are_forgotten_in_identity_order() {
    let mut log = TestLog::new(3, 2);
    // Three entries expiring together (stored in one millisecond of log time), in stored order
    // c, a, b; then later ones, each pushing one over the cap.
    log.remember("c", 100, 1);
    log.remember("a", 100, 2);
    log.remember("b", 100, 3);
    log.remember("d", 200, 4);
    assert_eq!(log.live_keys(), ["c", "b", "d"], "the least identity first");
    assert_eq!(
        log.positions().0,
        0,
        "a, out of stored order, only left its slot"
    );
    log.remember("e", 200, 5);
    assert_eq!(log.live_keys(), ["c", "d", "e"]);
    log.remember("f", 200, 6);
    assert_eq!(log.live_keys(), ["d", "e", "f"]);
    log.purge(0);
    assert_eq!(
        log.positions().0,
        3,
        "the front skipped the emptied slots to d"
    );
}

#[test]
fn one_call_forgets_in_the_same_order_as_many() {
    let mut many = TestLog::new(IDEMPOTENCY_KEYS_MAX, 2);
    let mut one = TestLog::new(IDEMPOTENCY_KEYS_MAX, 2);
    let keys = ["q", "b", "z", "a", "m"];
    for (i, key) in keys.iter().enumerate() {
        many.remember(key, 100, i as u64);
        one.remember(key, 100, i as u64);
    }
    many.remember("late", 200, 9);
    one.remember("late", 200, 9);
    for _ in 0..3 {
        many.call(|log| log.purge_expired(100)).unwrap();
    }
    one.call(|log| (0..3).try_for_each(|_| log.purge_expired(100)))
        .unwrap();
    assert_eq!(many.live_keys(), ["late"]);
    assert_eq!(
        one.chunks(),
        many.chunks(),
        "the same bytes, whatever the calls"
    );
    assert_eq!(one.positions(), many.positions());
}

#[test]
fn entry_numbers_map_to_chunks_and_slots_and_back() {
    let layout = ChunkLayout::new(32);
    assert_eq!(layout.place(0), Place { chunk: 0, slot: 0 });
    assert_eq!(layout.place(33), Place { chunk: 1, slot: 1 });
    for number in [0, 31, 32, 1_000_001] {
        let place = layout.place(number);
        assert_eq!(layout.number(place.chunk, place.slot), number);
    }
    assert_eq!(layout.chunk_left_behind(31), None);
    assert_eq!(layout.chunk_left_behind(32), Some(0));
    assert_eq!(
        layout.chunk_left_behind(0),
        None,
        "no chunk before the first"
    );
    assert!(layout.is_behind(0, 32));
    assert!(!layout.is_behind(0, 31));
    assert!(!layout.is_behind(1, 32));
    assert_eq!(ChunkLayout::new(0).entries_per_chunk(), 1, "at least one");
}

#[test]
fn chunk_keys_sort_by_number_round_trip_and_stay_apart_from_records() {
    assert!(chunk_key(255) < chunk_key(256));
    assert_eq!(chunk_number(&chunk_key(42)), Some(42));
    assert_eq!(
        chunk_number(&keys::record(&RecordKey::new("s", "k").unwrap())),
        None
    );
    assert!(chunk_key(u64::MAX).as_slice() < keys::KEY_CHUNKS_END);
    assert!(
        keys::KEY_CHUNKS_END <= keys::RECORDS_START,
        "no record key is read as a chunk"
    );
    assert!(chunk_key(0).as_slice() >= keys::KEY_CHUNKS_START);
}

/// Where format 3 kept the entry of `id`.
fn expiry(expires_at_ms: u64, id: &IdempotencyId) -> Vec<u8> {
    expiry_of_identity(expires_at_ms, &identity_bytes(id))
}

/// Reads a format-3 key back into (expiry ms, identity).
fn parse_expiry(key: &[u8]) -> Option<(u64, IdempotencyId)> {
    let (time, identity) = split_expiry(key)?;
    Some((time, parse_identity(identity)?))
}

#[test]
fn format3_keys_sort_by_time_and_round_trip() {
    let before = |time: u64| [keys::EXPIRY_START, &time.to_be_bytes()].concat();
    assert!(expiry(9, &anonymous("z")) < expiry(10, &anonymous("a")));
    assert!(expiry(9, &id("zzz", "z")) < expiry(10, &anonymous("a")));
    assert!(expiry(9, &id("zzz", "z")) < before(10));
    assert!(before(10) <= expiry(10, &anonymous("a")));
    for identity in [anonymous("key"), id("client:a", "key"), id("token:t", " ")] {
        assert_eq!(
            parse_expiry(&expiry(10, &identity)),
            Some((10, identity.clone()))
        );
    }
    assert!(expiry(u64::MAX, &id("s", "k")).as_slice() < keys::STATE_END);
}

#[test]
fn an_anonymous_key_is_stored_under_the_bytes_it_had_before_scopes() {
    assert_eq!(identity_bytes(&anonymous("order-42")), b"order-42".to_vec());
    let mut old_expiry = b"Sx".to_vec();
    old_expiry.extend_from_slice(&7u64.to_be_bytes());
    old_expiry.extend_from_slice(b"order-42");
    assert_eq!(expiry(7, &anonymous("order-42")), old_expiry);
    assert_eq!(parse_expiry(&old_expiry), Some((7, anonymous("order-42"))));
}

#[test]
fn distinct_scope_and_key_pairs_never_share_a_storage_key() {
    let pairs = [
        id("a", "b:c"),
        id("a:b", "c"),
        id("", "a:b:c"),
        id("", "ab"),
        id("a", "b"),
        id("ab", ""),
        id("client:x", "k"),
        id("token:x", "k"),
        id("", "k"),
    ];
    for (i, first) in pairs.iter().enumerate() {
        for second in &pairs[i + 1..] {
            assert_ne!(
                identity_bytes(first),
                identity_bytes(second),
                "{first:?} {second:?}"
            );
        }
        assert_eq!(parse_identity(&identity_bytes(first)), Some(first.clone()));
        assert_eq!(parse_expiry(&expiry(1, first)), Some((1, first.clone())));
        assert_eq!(
            split_expiry(&expiry(1, first)),
            Some((1, &identity_bytes(first)[..]))
        );
    }
}
