//! The batch command (`Command::Batch`): lines in order, each seeing the earlier ones; both
//! error policies; the line limit, checked by apply itself; holds, sets; the idempotency key
//! over the whole batch; one event per applied line and none for a refused batch.

use super::Log;
use crate::inventory::*;

const TTL_MS: u64 = 60_000;

fn key(sku: &str) -> RecordKey {
    RecordKey::new("s1", sku).unwrap()
}

impl Log {
    fn step(&mut self, command: Command) -> (Response, Vec<Event>) {
        self.answer(command, None)
    }

    fn step_keyed(&mut self, command: Command, key: &str) -> (Response, Vec<Event>) {
        self.answer(command, Some(key))
    }

    fn quantity(&self, sku: &str) -> (i64, i64, u64) {
        let record = &self.state.records[&key(sku)];
        (record.quantity, record.reserved, record.version)
    }
}

fn create(sku: &str, quantity: i64) -> BatchLine {
    BatchLine::Create {
        key: key(sku),
        initial_quantity: quantity,
    }
}

fn adjust(sku: &str, delta: i64) -> BatchLine {
    BatchLine::Adjust {
        key: key(sku),
        delta,
        expected_version: None,
    }
}

fn set(sku: &str, qty: i64, expected_version: Option<u64>) -> BatchLine {
    BatchLine::Set {
        key: key(sku),
        qty,
        expected_version,
    }
}

fn reserve(sku: &str, quantity: i64) -> BatchLine {
    BatchLine::Reserve {
        key: key(sku),
        quantity,
        expected_version: None,
        ttl_ms: None,
    }
}

fn hold(sku: &str, quantity: i64) -> BatchLine {
    BatchLine::Reserve {
        key: key(sku),
        quantity,
        expected_version: None,
        ttl_ms: Some(TTL_MS),
    }
}

fn batch(policy: ErrorPolicy, lines: Vec<BatchLine>) -> Command {
    Command::Batch { lines, policy }
}

fn all_or_none(lines: Vec<BatchLine>) -> Command {
    batch(ErrorPolicy::RejectEverything, lines)
}

fn each_line(lines: Vec<BatchLine>) -> Command {
    batch(ErrorPolicy::RejectFailedLines, lines)
}

fn results(response: &Response) -> &[LineResult] {
    match &response.result {
        CommandResult::Batch(results) => &results.lines,
        other => panic!("expected a batch's results, got {other:?}"),
    }
}

fn refusals(response: &Response) -> Vec<(usize, Rejection)> {
    match &response.result {
        CommandResult::Err(Rejection::BatchRefused { lines }) => lines
            .iter()
            .map(|line| (line.index, line.rejection.clone()))
            .collect(),
        other => panic!("expected a refused batch, got {other:?}"),
    }
}

/// A store with a (10 units) and b (5 units), at version 1.
fn stocked() -> Log {
    let mut log = Log::new();
    let (response, _) = log.step(all_or_none(vec![create("a", 10), create("b", 5)]));
    assert_eq!(response.operation, Operation::Batch);
    assert_eq!(results(&response).len(), 2);
    log
}

#[test]
fn lines_on_one_record_apply_in_order_each_seeing_the_one_before() {
    let mut log = stocked();
    // 10 - 8 leaves 2: the second reserve of 3 sees it and fails, unless the adjust runs first.
    let (response, _) = log.step(all_or_none(vec![
        reserve("a", 8),
        adjust("a", 1),
        reserve("a", 3),
    ]));
    let versions: Vec<(i64, u64)> = results(&response)
        .iter()
        .map(|line| match line {
            LineResult::Ok { record, .. } => (record.quantity, record.version),
            LineResult::Failed(rejection) => panic!("a line failed: {rejection}"),
        })
        .collect();
    assert_eq!(
        versions,
        [(2, 2), (3, 3), (0, 4)],
        "each line is a change of its own"
    );
    assert_eq!(log.quantity("a"), (0, 0, 4));

    // And a later line sees an earlier one fail for want of what that one took.
    let (refused, _) = log.step(all_or_none(vec![adjust("b", -5), reserve("b", 1)]));
    assert_eq!(
        refusals(&refused),
        [(
            1,
            Rejection::InsufficientStock {
                requested: 1,
                available: 0
            }
        )]
    );
    assert_eq!(
        log.quantity("b"),
        (5, 0, 1),
        "a refused batch changes nothing"
    );
}

#[test]
fn reject_everything_refuses_the_whole_batch_for_a_failing_line_in_the_middle() {
    let mut log = stocked();
    let before = log.state.clone();
    let (response, events) = log.step(all_or_none(vec![
        adjust("a", 1),
        reserve("missing", 1),
        reserve("b", 2),
        reserve("b", 4),
    ]));
    assert_eq!(
        refusals(&response),
        [
            (
                1,
                Rejection::NotFound {
                    key: key("missing")
                }
            ),
            // Evaluated as if the lines before it that can apply had: 5 - 2 leaves 3.
            (
                3,
                Rejection::InsufficientStock {
                    requested: 4,
                    available: 3
                }
            ),
        ],
        "every failing line is named, not just the first"
    );
    assert!(events.is_empty(), "a refused batch yields no event");
    assert_eq!(log.state, before, "a refused batch changes nothing");
}

#[test]
fn reject_failed_lines_applies_the_others_and_answers_each_line() {
    let mut log = stocked();
    let (response, events) = log.step(each_line(vec![
        adjust("a", 1),
        reserve("missing", 1),
        reserve("b", 2),
        reserve("b", 4),
        set("c", 7, None),
    ]));
    let lines = results(&response);
    let outcome: Vec<Result<(String, i64), Rejection>> = lines
        .iter()
        .map(|line| match line {
            LineResult::Ok { record, .. } => Ok((record.key.sku.clone(), record.quantity)),
            LineResult::Failed(rejection) => Err(rejection.clone()),
        })
        .collect();
    assert_eq!(
        outcome,
        [
            Ok(("a".into(), 11)),
            Err(Rejection::NotFound {
                key: key("missing")
            }),
            Ok(("b".into(), 3)),
            Err(Rejection::InsufficientStock {
                requested: 4,
                available: 3
            }),
            Ok(("c".into(), 7)),
        ]
    );
    let CommandResult::Batch(results) = &response.result else {
        unreachable!()
    };
    assert_eq!((results.applied(), results.failed()), (3, 2));
    assert_eq!(log.quantity("a"), (11, 0, 2));
    assert_eq!(log.quantity("b"), (3, 0, 2));
    assert_eq!(log.quantity("c"), (7, 0, 1));
    assert!(!log.state.records.contains_key(&key("missing")));
    assert_eq!(events.len(), 3, "one event per applied line");
}

#[test]
fn a_batch_whose_every_line_fails_changes_nothing_under_either_policy() {
    let mut log = stocked();
    let before = log.state.clone();
    let failing = || {
        vec![
            reserve("a", 11),
            adjust("b", -6),
            create("a", 1),
            reserve("x", 1),
        ]
    };

    let (refused, events) = log.step(all_or_none(failing()));
    let indexes: Vec<usize> = refusals(&refused).iter().map(|(index, _)| *index).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert!(events.is_empty());

    let (answered, events) = log.step(each_line(failing()));
    assert!(results(&answered).iter().all(|line| !line.is_ok()));
    assert!(events.is_empty());
    assert_eq!(log.state, before);
}

#[test]
fn the_line_limit_is_checked_by_apply_itself() {
    let mut log = stocked();
    let before = log.state.clone();
    for policy in [
        ErrorPolicy::RejectEverything,
        ErrorPolicy::RejectFailedLines,
    ] {
        for count in [0, BATCH_LINES_MAX + 1] {
            let lines = (0..count).map(|_| adjust("a", 1)).collect();
            let (response, events) = log.step(batch(policy, lines));
            assert!(
                matches!(
                    response.result,
                    CommandResult::Err(Rejection::Invalid { .. })
                ),
                "{count} lines ({policy:?}) were not refused: {:?}",
                response.result
            );
            assert!(events.is_empty());
        }
    }
    assert_eq!(log.state, before);

    // The limit itself is a batch like any other.
    let lines = (0..BATCH_LINES_MAX).map(|_| adjust("a", 1)).collect();
    let (response, events) = log.step(all_or_none(lines));
    assert_eq!(results(&response).len(), BATCH_LINES_MAX);
    assert_eq!(events.len(), BATCH_LINES_MAX);
    let last = BATCH_LINES_MAX as u64 + 1;
    assert_eq!(log.quantity("a"), (10 + BATCH_LINES_MAX as i64, 0, last));
}

#[test]
fn a_malformed_key_in_a_line_fails_that_line() {
    let mut log = stocked();
    let bad = BatchLine::Adjust {
        key: RecordKey {
            store_id: "bad/store".into(),
            sku: "a".into(),
        },
        delta: 1,
        expected_version: None,
    };
    let (response, _) = log.step(each_line(vec![bad, adjust("a", 1)]));
    let lines = results(&response);
    assert!(matches!(
        lines[0],
        LineResult::Failed(Rejection::Invalid { .. })
    ));
    assert!(lines[1].is_ok());
}

#[test]
fn a_hold_line_moves_units_to_reserved_and_creates_a_held_reservation() {
    let mut log = stocked();
    let (response, events) = log.step(all_or_none(vec![
        hold("a", 3),
        reserve("a", 1),
        hold("a", 2),
    ]));
    let ids: Vec<Option<ReservationId>> = results(&response)
        .iter()
        .map(|line| match line {
            LineResult::Ok { reservation_id, .. } => *reservation_id,
            LineResult::Failed(rejection) => panic!("a line failed: {rejection}"),
        })
        .collect();
    let index = log.index;
    let first = ReservationId::new(index, 0);
    let second = ReservationId::new(index, 1);
    assert_eq!(
        ids,
        [first, None, second],
        "the batch's holds are numbered in order"
    );
    assert_eq!(log.quantity("a"), (4, 5, 4));
    assert_eq!(log.state.held_count, 2);
    for (id, units) in [(first, 3), (second, 2)] {
        let reservation = &log.state.reservations[&id.unwrap()];
        assert_eq!(reservation.status, ReservationStatus::Held);
        assert_eq!(reservation.lines.len(), 1);
        assert_eq!(
            (&reservation.lines[0].key, reservation.lines[0].quantity),
            (&key("a"), units)
        );
        assert_eq!(reservation.expires_at_ms, log.now_ms + TTL_MS);
    }
    let kinds: Vec<(EventKind, Option<i64>, Option<ReservationId>)> = events
        .iter()
        .map(|event| (event.kind, event.delta, event.reservation_id))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Held, Some(-3), first),
            (EventKind::Reserved, Some(-1), None),
            (EventKind::Held, Some(-2), second),
        ]
    );

    // A hold line is a hold: it commits like one.
    let (committed, _) = log.step(Command::Commit { id: first.unwrap() });
    assert!(committed.result.is_ok());
    assert_eq!(log.quantity("a"), (4, 2, 5));
}

#[test]
fn a_batch_of_more_holds_than_a_cart_has_lines_is_refused_as_a_whole() {
    let mut log = Log::new();
    let creates = (0..=BATCH_HOLD_LINES_MAX)
        .map(|n| create(&format!("h{n}"), 1))
        .collect();
    log.step(all_or_none(creates));
    let before = log.state.clone();
    let holds = |count: usize| (0..count).map(|n| hold(&format!("h{n}"), 1)).collect();
    for policy in [
        ErrorPolicy::RejectEverything,
        ErrorPolicy::RejectFailedLines,
    ] {
        let (response, _) = log.step(batch(policy, holds(BATCH_HOLD_LINES_MAX + 1)));
        assert!(
            matches!(
                response.result,
                CommandResult::Err(Rejection::Invalid { .. })
            ),
            "{:?}",
            response.result
        );
    }
    assert_eq!(log.state, before);
    let (response, _) = log.step(all_or_none(holds(BATCH_HOLD_LINES_MAX)));
    assert_eq!(results(&response).len(), BATCH_HOLD_LINES_MAX);
    assert_eq!(log.state.held_count, BATCH_HOLD_LINES_MAX as u64);
}

#[test]
fn a_hold_line_with_a_bad_ttl_fails_as_a_hold_would() {
    let mut log = stocked();
    let short = BatchLine::Reserve {
        key: key("a"),
        quantity: 1,
        expected_version: None,
        ttl_ms: Some(HOLD_TTL_MS_MIN - 1),
    };
    let (response, _) = log.step(all_or_none(vec![short]));
    assert!(matches!(
        refusals(&response)[..],
        [(0, Rejection::Invalid { .. })]
    ));
}

#[test]
fn set_creates_a_missing_record_and_otherwise_replaces_the_available_quantity() {
    let mut log = stocked();
    log.step(all_or_none(vec![hold("b", 2)]));
    let (response, events) = log.step(all_or_none(vec![
        set("new", 4, None),
        set("a", 1, None),
        set("b", 9, Some(2)),
    ]));
    assert!(response.result.is_ok(), "{:?}", response.result);
    assert_eq!(log.quantity("new"), (4, 0, 1));
    assert_eq!(log.quantity("a"), (1, 0, 2));
    assert_eq!(log.quantity("b"), (9, 2, 3), "held units stay held");
    let kinds: Vec<(EventKind, Option<i64>)> = events
        .iter()
        .map(|event| (event.kind, event.delta))
        .collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Created, None),
            (EventKind::Adjusted, Some(-9)),
            (EventKind::Adjusted, Some(6)),
        ]
    );

    let (refused, _) = log.step(each_line(vec![
        set("a", 5, Some(1)),
        // A missing record has no version to expect.
        set("missing", 5, Some(1)),
        set("a", -1, None),
    ]));
    let lines = results(&refused);
    assert_eq!(
        lines[0],
        LineResult::Failed(Rejection::VersionMismatch {
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(
        lines[1],
        LineResult::Failed(Rejection::NotFound {
            key: key("missing")
        })
    );
    assert!(matches!(
        lines[2],
        LineResult::Failed(Rejection::Invalid { .. })
    ));
    assert!(!log.state.records.contains_key(&key("missing")));
}

#[test]
fn a_keyed_batch_replays_its_whole_answer_and_applies_nothing_twice() {
    for policy in [
        ErrorPolicy::RejectEverything,
        ErrorPolicy::RejectFailedLines,
    ] {
        let mut log = stocked();
        let lines = || {
            vec![
                reserve("a", 2),
                hold("b", 1),
                set("c", 3, None),
                reserve("x", 1),
            ]
        };
        let (first, events) = log.step_keyed(batch(policy, lines()), "import-1");
        let after_first = log.state.clone();
        let (again, replayed_events) = log.step_keyed(batch(policy, lines()), "import-1");
        assert!(again.replayed);
        assert_eq!(
            again.result, first.result,
            "the stored answer is rebuilt whole"
        );
        assert_eq!(again.log_index, first.log_index);
        assert!(replayed_events.is_empty());
        assert_eq!(log.state, after_first, "nothing applied twice");
        match policy {
            ErrorPolicy::RejectEverything => assert!(events.is_empty()),
            ErrorPolicy::RejectFailedLines => assert_eq!(events.len(), 3),
        }

        // Another batch under the same key is refused.
        let (reused, _) = log.step_keyed(batch(policy, vec![reserve("a", 2)]), "import-1");
        assert_eq!(
            reused.result,
            CommandResult::Err(Rejection::IdempotencyKeyReused {
                key: "import-1".into()
            })
        );
        assert_eq!(log.state, after_first);
    }
}

/// `value` as stored, after checking that those bytes read back as `value` (a stored answer
/// that cannot be read stops every node at its next read).
fn stored_bytes_reading_back<T>(value: &T) -> Vec<u8>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(value, config).unwrap();
    let (read, used): (T, usize) =
        bincode::serde::decode_from_slice(&bytes, config).expect("a stored answer reads back");
    assert_eq!(used, bytes.len());
    assert_eq!(&read, value);
    bytes
}

#[test]
fn a_stored_batch_answer_keeps_no_line_key_and_stays_within_its_bound() {
    let mut log = Log::new();
    let longest = |n: usize| {
        let sku = format!("{n:0>width$}", width = SKU_LENGTH_MAX);
        RecordKey::new(&"s".repeat(STORE_ID_LENGTH_MAX), &sku).unwrap()
    };
    let creates = (0..BATCH_LINES_MAX)
        .map(|n| BatchLine::Create {
            key: longest(n),
            initial_quantity: i64::MAX / 2,
        })
        .collect();
    log.step(all_or_none(creates));
    // The largest answer: every line reserves at its largest (big counts), as many as may
    // hold (a reservation id more).
    let holds = (0..BATCH_LINES_MAX)
        .map(|n| BatchLine::Reserve {
            key: longest(n),
            quantity: i64::MAX / 2,
            expected_version: Some(1),
            ttl_ms: (n < BATCH_HOLD_LINES_MAX).then_some(HOLD_TTL_MS_MAX),
        })
        .collect();
    let (response, _) = log.step_keyed(all_or_none(holds), "big");
    assert_eq!(results(&response).len(), BATCH_LINES_MAX);
    let entry = log
        .state
        .idempotency
        .values()
        .next()
        .expect("the answer is remembered");
    let stored = stored_bytes_reading_back(entry);
    let whole = bincode::serde::encode_to_vec(&response, bincode::config::standard()).unwrap();
    assert!(
        stored.len() <= BATCH_LINES_MAX * BATCH_STORED_LINE_BYTES_MAX,
        "a stored batch answer takes {} bytes, over {BATCH_STORED_LINE_BYTES_MAX} a line",
        stored.len()
    );
    assert!(
        stored.len() * 2 < whole.len(),
        "the keys are left out: {} of {}",
        stored.len(),
        whole.len()
    );
    assert!(entry.fingerprint.len() < 64, "the fingerprint is a digest");
}

#[test]
fn a_stored_answer_of_failed_lines_stays_within_its_bound_too() {
    let mut log = Log::new();
    // The longest rejections a line can get: an invalid key and an out-of-range ttl.
    let bad_key = BatchLine::Create {
        key: RecordKey {
            store_id: "bad/store".repeat(100),
            sku: "a".into(),
        },
        initial_quantity: 1,
    };
    let bad_ttl = BatchLine::Reserve {
        key: key("a"),
        quantity: 1,
        expected_version: Some(u64::MAX),
        ttl_ms: Some(u64::MAX),
    };
    let lines = (0..BATCH_LINES_MAX)
        .map(|n| {
            if n < BATCH_HOLD_LINES_MAX {
                bad_ttl.clone()
            } else {
                bad_key.clone()
            }
        })
        .collect();
    for (name, policy) in [
        ("all-or-none", ErrorPolicy::RejectEverything),
        ("each-line", ErrorPolicy::RejectFailedLines),
    ] {
        log.step_keyed(batch(policy, Vec::clone(&lines)), name);
    }
    for entry in log.state.idempotency.values() {
        let stored = stored_bytes_reading_back(entry);
        assert!(
            stored.len() <= BATCH_LINES_MAX * BATCH_STORED_LINE_BYTES_MAX,
            "{} bytes stored",
            stored.len()
        );
    }
}

#[test]
fn a_refused_keyed_batch_replays_every_refusal_with_its_key() {
    let mut log = stocked();
    let lines = || vec![create("a", 1), reserve("missing", 1), adjust("b", 1)];
    let (first, _) = log.step_keyed(all_or_none(lines()), "k");
    assert_eq!(
        refusals(&first),
        [
            (
                0,
                Rejection::AlreadyExists {
                    key: key("a"),
                    version: 1
                }
            ),
            (
                1,
                Rejection::NotFound {
                    key: key("missing")
                }
            ),
        ]
    );
    let (again, _) = log.step_keyed(all_or_none(lines()), "k");
    assert!(again.replayed);
    assert_eq!(again.result, first.result);
}

#[test]
fn the_same_log_of_batches_gives_the_same_state_and_answers_on_every_replica() {
    let play = || {
        let mut log = stocked();
        let answers: Vec<Response> = [
            each_line(vec![hold("a", 2), set("b", 1, None), reserve("a", 20)]),
            all_or_none(vec![adjust("a", -1), adjust("a", -1), set("z", 0, None)]),
        ]
        .into_iter()
        .map(|command| log.step(command).0)
        .collect();
        (log.state, answers)
    };
    assert_eq!(play(), play());
}

/// A packed batch (the form the batch route proposes) applies exactly as the batch of its
/// lines: the same answer, records and events, and the same fingerprint for a keyed retry
/// whichever form either took. Bytes that do not unpack are refused as `Invalid`, changing
/// nothing.
#[test]
fn a_packed_batch_applies_as_its_lines_and_undecodable_bytes_change_nothing() {
    let lines = vec![
        adjust("a", -3),
        reserve("missing", 1),
        set("b", 9, Some(1)),
        hold("a", 2),
        reserve("a", 1),
    ];
    let mut plain = stocked();
    let mut packed = stocked();
    for policy in [
        ErrorPolicy::RejectFailedLines,
        ErrorPolicy::RejectEverything,
    ] {
        let command = Command::packed_batch(&lines, policy);
        assert_eq!(command.line_count(), lines.len());
        assert_eq!(command.operation(), Operation::Batch);
        assert_eq!(
            command.fingerprint(),
            batch(policy, lines.clone()).fingerprint()
        );
        let (answer, events) = plain.step(batch(policy, lines.clone()));
        assert_eq!(packed.step(command), (answer, events));
        assert_eq!(packed.state, plain.state);
    }
    // A keyed packed batch is replayed by the same lines sent unpacked, and the other way.
    let (first, _) = packed.step_keyed(
        Command::packed_batch(&lines, ErrorPolicy::RejectFailedLines),
        "k",
    );
    let (again, events) = packed.step_keyed(each_line(lines.clone()), "k");
    assert!(again.replayed && events.is_empty());
    assert_eq!(again.result, first.result);

    let garbage: PackedLines = {
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec((3u32, vec![200u8, 1, 2]), config).unwrap();
        bincode::serde::decode_from_slice(&bytes, config).unwrap().0
    };
    let before = packed.state.clone();
    let (answer, events) = packed.step(Command::PackedBatch {
        lines: garbage,
        policy: ErrorPolicy::RejectFailedLines,
    });
    match answer.result {
        CommandResult::Err(Rejection::Invalid { message }) => {
            assert!(message.contains("do not decode"), "{message}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(events.is_empty());
    assert_eq!(packed.state, before);
}
