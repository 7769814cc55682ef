//! The events `apply` derives: one per changed record (per line of each changed reservation),
//! with the record's state after the change; none for a refusal or a replay. Numbering (`seq`)
//! is the state machine's; the model (`MemoryState::commit`) numbers them as it does, densely.

use super::{Log, T0_MS};
use crate::inventory::*;

const TTL_MS: u64 = 60_000;

fn key(store: &str, sku: &str) -> RecordKey {
    RecordKey::new(store, sku).unwrap()
}

impl Log {
    /// Applies `command` (with `idempotency_key`, if any) as the next entry; its events.
    fn run_keyed(&mut self, command: Command, idempotency_key: Option<&str>) -> Vec<Event> {
        self.answer(command, idempotency_key).1
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        self.run_keyed(command, None)
    }
}

fn create(store: &str, sku: &str, quantity: i64) -> Command {
    Command::Create {
        key: key(store, sku),
        initial_quantity: quantity,
    }
}

fn summary(events: &[Event]) -> Vec<(EventKind, String, i64, i64, Option<i64>, u64)> {
    events
        .iter()
        .map(|event| {
            (
                event.kind,
                event.key.to_string(),
                event.quantity,
                event.reserved,
                event.delta,
                event.version,
            )
        })
        .collect()
}

#[test]
fn each_seed_command_gives_one_event_per_record_it_changed() {
    let mut log = Log::new();
    let created = log.run(create("s1", "a", 10));
    assert_eq!(
        summary(&created),
        [(
            EventKind::Created,
            key("s1", "a").to_string(),
            10,
            0,
            None,
            1
        )]
    );
    assert_eq!(created[0].log_index, 1);
    assert_eq!(created[0].at_ms, T0_MS);
    assert_eq!(
        created[0].seq, 0,
        "apply leaves numbering to the state machine"
    );
    let adjusted = log.run_keyed(
        Command::Adjust {
            key: key("s1", "a"),
            delta: -3,
            expected_version: Some(1),
        },
        Some("adj-1"),
    );
    assert_eq!(
        summary(&adjusted),
        [(
            EventKind::Adjusted,
            key("s1", "a").to_string(),
            7,
            0,
            Some(-3),
            2
        )]
    );
    assert_eq!(adjusted[0].idempotency_key.as_deref(), Some("adj-1"));
    let reserved = log.run(Command::Reserve {
        key: key("s1", "a"),
        quantity: 2,
        expected_version: None,
    });
    assert_eq!(
        summary(&reserved),
        [(
            EventKind::Reserved,
            key("s1", "a").to_string(),
            5,
            0,
            Some(-2),
            3
        )]
    );
    let batch = log.run(Command::CreateBatch {
        records: vec![
            NewRecord {
                key: key("s2", "a"),
                initial_quantity: 1,
            },
            NewRecord {
                key: key("s2", "b"),
                initial_quantity: 2,
            },
        ],
    });
    assert_eq!(batch.len(), 2);
    assert!(batch.iter().all(|event| event.kind == EventKind::Created));
    assert_eq!(batch[1].key, key("s2", "b"));
}

#[test]
fn refusals_and_replays_give_no_event() {
    let mut log = Log::new();
    log.run(create("s1", "a", 1));
    // Refused: exists, stock, version, unknown record.
    assert!(log.run(create("s1", "a", 1)).is_empty());
    let too_many = Command::Reserve {
        key: key("s1", "a"),
        quantity: 2,
        expected_version: None,
    };
    assert!(log.run(too_many).is_empty());
    let stale = Command::Adjust {
        key: key("s1", "a"),
        delta: 1,
        expected_version: Some(9),
    };
    assert!(log.run(stale).is_empty());
    assert!(log.run(create("s1", "b", -1)).is_empty());
    // A keyed write changes once; its replay changes nothing and records nothing.
    let adjust = Command::Adjust {
        key: key("s1", "a"),
        delta: 1,
        expected_version: None,
    };
    assert_eq!(log.run_keyed(adjust.clone(), Some("k")).len(), 1);
    assert!(log.run_keyed(adjust, Some("k")).is_empty());
    // The model numbered exactly the two changes, densely.
    let seqs: Vec<u64> = log.state.events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, [1, 2]);
}

#[test]
fn reservations_give_one_event_per_line_naming_the_reservation() {
    let mut log = Log::new();
    log.run(create("s1", "a", 10));
    log.run(create("s1", "b", 10));
    let held = log.run(Command::Cart {
        lines: vec![
            CartLine {
                key: key("s1", "a"),
                quantity: 2,
                expected_version: None,
            },
            CartLine {
                key: key("s1", "b"),
                quantity: 3,
                expected_version: None,
            },
        ],
        ttl_ms: TTL_MS,
    });
    let id = ReservationId::new(3, 0).unwrap();
    assert_eq!(
        summary(&held),
        [
            (
                EventKind::Held,
                key("s1", "a").to_string(),
                8,
                2,
                Some(-2),
                2
            ),
            (
                EventKind::Held,
                key("s1", "b").to_string(),
                7,
                3,
                Some(-3),
                2
            ),
        ]
    );
    assert!(held.iter().all(|event| event.reservation_id == Some(id)));
    let committed = log.run(Command::Commit { id });
    assert_eq!(
        summary(&committed),
        [
            (
                EventKind::Committed,
                key("s1", "a").to_string(),
                8,
                0,
                None,
                3
            ),
            (
                EventKind::Committed,
                key("s1", "b").to_string(),
                7,
                0,
                None,
                3
            ),
        ]
    );
    // Asked again: the transition is not made twice, and no event says it was.
    assert!(log.run(Command::Commit { id }).is_empty());

    let hold = |log: &mut Log| {
        log.run(Command::Hold {
            key: key("s1", "a"),
            quantity: 1,
            expected_version: None,
            ttl_ms: TTL_MS,
        })
    };
    let first = hold(&mut log)[0].reservation_id.unwrap();
    let second = hold(&mut log)[0].reservation_id.unwrap();
    let released = log.run(Command::Release { id: first });
    assert_eq!(
        summary(&released),
        [(
            EventKind::Released,
            key("s1", "a").to_string(),
            7,
            1,
            Some(1),
            6
        )]
    );
    // Both due: an expiry of both gives one event per line, each naming its reservation; the
    // one already released is skipped, without an event.
    log.now_ms += TTL_MS;
    let expired = log.run(Command::Expire {
        ids: vec![first, second],
    });
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].kind, EventKind::Expired);
    assert_eq!(expired[0].reservation_id, Some(second));
    assert_eq!((expired[0].quantity, expired[0].reserved), (8, 0));
    assert_eq!(expired[0].delta, Some(1));
}
