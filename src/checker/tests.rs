//! Histories in, verdicts out. Times are small integers; `done(id, invoked, completed, op,
//! outcome)` is an answered request and `lost(id, invoked, op)` one whose outcome is unknown.

use std::collections::BTreeMap;

use super::*;

fn done(id: u64, invoked_at: u64, completed_at: u64, op: Op, outcome: Outcome) -> Event {
    Event {
        id,
        op,
        invoked_at,
        completed_at: Some(completed_at),
        outcome,
    }
}

fn lost(id: u64, invoked_at: u64, op: Op) -> Event {
    Event {
        id,
        op,
        invoked_at,
        completed_at: None,
        outcome: Outcome::Unknown,
    }
}

fn create(initial: i64) -> Op {
    Op::Create { initial }
}

fn adjust(delta: i64) -> Op {
    Op::Adjust {
        delta,
        expected_version: None,
    }
}

fn adjust_if(delta: i64, version: u64) -> Op {
    Op::Adjust {
        delta,
        expected_version: Some(version),
    }
}

fn reserve(qty: i64) -> Op {
    Op::Reserve {
        qty,
        expected_version: None,
    }
}

fn reserve_if(qty: i64, version: u64) -> Op {
    Op::Reserve {
        qty,
        expected_version: Some(version),
    }
}

const READ: Op = Op::Read;

fn ok(qty: i64, version: u64) -> Outcome {
    Outcome::Ok { qty, version }
}

/// Replays a witness through the model and checks it against the history: every known event
/// present once with its observed outcome, unknown ones at most once, real time respected.
fn assert_witness_is_valid(name: &str, history: &[Event], witness: &[u64]) {
    let events: BTreeMap<u64, &Event> = history.iter().map(|e| (e.id, e)).collect();
    let mut state = None;
    for (position, id) in witness.iter().enumerate() {
        let event = events[id];
        let (outcome, after) = step(state, &event.op);
        if !event.outcome.is_unknown() {
            assert_eq!(
                outcome, event.outcome,
                "{name}: witness replays #{id} wrongly"
            );
        }
        state = after;
        for later in &witness[position + 1..] {
            let later = events[later];
            if let (false, Some(completed)) = (later.outcome.is_unknown(), later.completed_at) {
                assert!(
                    completed >= event.invoked_at,
                    "{name}: witness puts #{} after #{id}, which began after it ended",
                    later.id
                );
            }
        }
    }
    for event in history.iter().filter(|e| !e.outcome.is_unknown()) {
        let count = witness.iter().filter(|&&id| id == event.id).count();
        assert_eq!(count, 1, "{name}: known #{} placed {count} times", event.id);
    }
}

fn not_linearizable(name: &str, history: &[Event]) -> Violation {
    match check(history) {
        Err(CheckError::NotLinearizable(violation)) => *violation,
        other => panic!("{name}: expected a violation, got {other:?}"),
    }
}

#[test]
fn linearizable_histories_are_accepted_with_a_valid_witness() {
    let cases: Vec<(&str, Vec<Event>)> = vec![
        ("empty history", vec![]),
        (
            "sequential history with rejections",
            vec![
                done(1, 0, 1, READ, Outcome::NotFound),
                done(2, 2, 3, reserve(1), Outcome::NotFound),
                done(3, 4, 5, create(10), ok(10, 1)),
                done(4, 6, 7, create(3), Outcome::AlreadyExists { version: 1 }),
                done(5, 8, 9, reserve(3), ok(7, 2)),
                done(6, 10, 11, adjust(5), ok(12, 3)),
                done(
                    7,
                    12,
                    13,
                    reserve(20),
                    Outcome::InsufficientStock { available: 12 },
                ),
                done(
                    8,
                    14,
                    15,
                    adjust(-13),
                    Outcome::InsufficientStock { available: 12 },
                ),
                done(
                    9,
                    16,
                    17,
                    adjust_if(-1, 1),
                    Outcome::VersionMismatch { actual: 3 },
                ),
                done(10, 18, 19, reserve_if(2, 3), ok(10, 4)),
                done(11, 20, 21, adjust(i64::MAX), Outcome::Overflow),
                done(12, 22, 23, reserve(-1), Outcome::Invalid),
                done(13, 24, 25, READ, ok(10, 4)),
            ],
        ),
        (
            "overlapping reserves both succeed, the later-invoked one first",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 10, reserve(4), ok(2, 3)),
                done(3, 3, 9, reserve(4), ok(6, 2)),
                done(4, 11, 12, READ, ok(2, 3)),
            ],
        ),
        (
            "read concurrent with a write sees the old value",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 6, adjust(5), ok(15, 2)),
                done(3, 3, 5, READ, ok(10, 1)),
            ],
        ),
        (
            "read concurrent with a write sees the new value",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 6, adjust(5), ok(15, 2)),
                done(3, 3, 5, READ, ok(15, 2)),
            ],
        ),
        (
            "equal timestamps are concurrent",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 5, adjust(1), ok(11, 2)),
                done(3, 5, 6, READ, ok(10, 1)),
            ],
        ),
        (
            "unknown reserve that took effect",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                lost(2, 2, reserve(3)),
                done(3, 5, 6, READ, ok(7, 2)),
            ],
        ),
        (
            "unknown reserve that never took effect",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                lost(2, 2, reserve(3)),
                done(3, 5, 6, READ, ok(10, 1)),
                done(4, 7, 8, adjust(1), ok(11, 2)),
                done(5, 9, 10, READ, ok(11, 2)),
            ],
        ),
        (
            "unknown reserve that took effect long after its timeout",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                lost(2, 2, reserve(3)),
                done(3, 50, 51, READ, ok(10, 1)),
                done(4, 60, 61, READ, ok(7, 2)),
            ],
        ),
        (
            "unknown create that took effect",
            vec![
                lost(1, 0, create(5)),
                done(2, 3, 4, READ, ok(5, 1)),
                done(3, 5, 6, create(7), Outcome::AlreadyExists { version: 1 }),
            ],
        ),
        (
            "unknown create that never took effect",
            vec![
                lost(1, 0, create(5)),
                done(2, 3, 4, READ, Outcome::NotFound),
                done(3, 5, 6, create(7), ok(7, 1)),
            ],
        ),
        (
            "unknown reads constrain nothing",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                lost(2, 2, READ),
                done(3, 3, 4, reserve(10), ok(0, 2)),
            ],
        ),
        (
            "only the needed subset of unknown ops takes effect",
            vec![
                done(1, 0, 1, create(100), ok(100, 1)),
                lost(2, 2, adjust(1)),
                lost(3, 2, adjust(2)),
                lost(4, 2, adjust(4)),
                lost(5, 2, adjust(8)),
                done(6, 10, 11, READ, ok(105, 3)),
            ],
        ),
    ];
    for (name, history) in &cases {
        let summary = match check(history) {
            Ok(summary) => summary,
            Err(error) => panic!("{name}: expected linearizable, got:\n{error}"),
        };
        assert_witness_is_valid(name, history, &summary.linearization);
        let unknown = history.iter().filter(|e| e.outcome.is_unknown()).count();
        assert_eq!(summary.unknown_ops, unknown, "{name}");
    }
}

#[test]
fn non_linearizable_histories_are_rejected_naming_the_culprit() {
    // (name, history, the event reported as impossible to place)
    let cases: Vec<(&str, Vec<Event>, u64)> = vec![
        (
            "stale read after an acknowledged write",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 3, adjust(5), ok(15, 2)),
                done(3, 4, 5, READ, ok(10, 1)),
            ],
            3,
        ),
        (
            "oversell: two reserves of 6 from 10 both succeed",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 5, reserve(6), ok(4, 2)),
                done(3, 3, 6, reserve(6), ok(4, 2)),
            ],
            3,
        ),
        (
            "oversell: second reserve reports stock that was never there",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 5, reserve(6), ok(4, 2)),
                done(3, 3, 6, reserve(6), ok(4, 3)),
            ],
            3,
        ),
        (
            "lost write: an acknowledged adjust is missing from a later read",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 4, adjust(1), ok(11, 2)),
                done(3, 3, 5, adjust(2), ok(13, 3)),
                done(4, 6, 7, READ, ok(11, 2)),
            ],
            4,
        ),
        (
            "a version that skips",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 3, adjust(1), ok(11, 3)),
            ],
            2,
        ),
        (
            "an ok result with the wrong quantity",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 3, reserve(3), ok(8, 2)),
            ],
            2,
        ),
        (
            "a rejection reporting the wrong available stock",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(
                    2,
                    2,
                    3,
                    reserve(11),
                    Outcome::InsufficientStock { available: 9 },
                ),
            ],
            2,
        ),
        (
            "an unknown reserve would have to apply twice",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                lost(2, 2, reserve(3)),
                done(3, 5, 6, READ, ok(7, 2)),
                done(4, 7, 8, READ, ok(4, 3)),
            ],
            4,
        ),
        (
            "an unknown reserve cannot take effect before it was invoked",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 3, READ, ok(7, 2)),
                lost(3, 4, reserve(3)),
            ],
            2,
        ),
        (
            "real-time order: a reserve invoked after another completed is seen first",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 3, reserve(3), ok(5, 3)),
                done(3, 4, 5, reserve(2), ok(8, 2)),
            ],
            2,
        ),
        (
            "a read of an acknowledged create finds nothing",
            vec![
                done(1, 0, 1, create(10), ok(10, 1)),
                done(2, 2, 3, READ, Outcome::NotFound),
            ],
            2,
        ),
        (
            "two creates both succeed",
            vec![
                done(1, 0, 5, create(10), ok(10, 1)),
                done(2, 1, 6, create(10), ok(10, 1)),
            ],
            2,
        ),
    ];
    for (name, history, culprit) in &cases {
        let violation = not_linearizable(name, history);
        assert_eq!(violation.event_id, *culprit, "{name}:\n{violation}");
        assert!(violation.involved.contains(culprit), "{name}:\n{violation}");
        assert!(!violation.mismatches.is_empty(), "{name}:\n{violation}");
        assert!(
            violation.to_string().contains(&format!("#{culprit}")),
            "{name}: the text names the culprit"
        );
    }
}

#[test]
fn a_stale_read_is_reported_with_the_state_it_should_have_seen() {
    let history = vec![
        done(1, 0, 1, create(10), ok(10, 1)),
        done(2, 2, 3, adjust(5), ok(15, 2)),
        done(3, 4, 5, READ, ok(10, 1)),
    ];
    let violation = not_linearizable("stale read", &history);
    assert_eq!(violation.linearized_prefix, vec![1, 2]);
    assert_eq!(
        violation.state,
        Some(Stock {
            qty: 15,
            version: 2
        })
    );
    assert_eq!(
        violation.mismatches,
        vec![Mismatch {
            event_id: 3,
            op: READ,
            observed: ok(10, 1),
            model: ok(15, 2),
        }]
    );
    assert_eq!(violation.involved, vec![2, 3]);
    let text = violation.to_string();
    assert!(text.contains("qty 15 at version 2"), "{text}");
}

#[test]
fn gives_up_at_the_state_limit_instead_of_searching_forever() {
    // 40 concurrent unknown adjusts with distinct deltas: 2^40 reachable subsets, and a final
    // read no subset explains (version 1 means nothing was adjusted, yet qty is not 0).
    let mut history = vec![done(0, 0, 1, create(0), ok(0, 1))];
    for bit in 0..40 {
        history.push(lost(bit + 1, 2, adjust(1 << bit)));
    }
    history.push(done(100, 3, 4, READ, ok(3, 1)));
    let limit = 5_000;
    match check_with_limit(&history, limit) {
        Err(CheckError::GaveUp {
            states_explored,
            states_explored_max,
        }) => {
            assert_eq!(states_explored_max, limit);
            assert!(states_explored > limit);
        }
        other => panic!("expected to give up, got {other:?}"),
    }
    let text = check_with_limit(&history, limit).unwrap_err().to_string();
    assert!(text.contains("NOT established"), "{text}");
}

#[test]
fn malformed_histories_are_refused() {
    let cases = [
        (
            "duplicate ids",
            vec![
                done(1, 0, 1, create(1), ok(1, 1)),
                done(1, 2, 3, READ, ok(1, 1)),
            ],
            1,
        ),
        (
            "definite outcome without completion",
            vec![Event {
                completed_at: None,
                ..done(7, 0, 1, create(1), ok(1, 1))
            }],
            7,
        ),
        (
            "completed before invoked",
            vec![done(4, 5, 4, create(1), ok(1, 1))],
            4,
        ),
    ];
    for (name, history, id) in cases {
        match check(&history) {
            Err(CheckError::InvalidHistory { event_id, .. }) => assert_eq!(event_id, id, "{name}"),
            other => panic!("{name}: expected an invalid history, got {other:?}"),
        }
    }
}

#[test]
fn an_unknown_outcome_ignores_its_completion_time() {
    // A timed-out reserve may still be applied after the client gave up waiting.
    let history = vec![
        done(1, 0, 1, create(10), ok(10, 1)),
        Event {
            completed_at: Some(3),
            ..lost(2, 2, reserve(3))
        },
        done(3, 5, 6, READ, ok(10, 1)),
        done(4, 7, 8, READ, ok(7, 2)),
    ];
    assert!(check(&history).is_ok());
}

/// A deterministic pseudo-random sequence (no `rand`: the checker's tests are pure too).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// A linearizable history by construction: ops take effect in order at times 20, 30, ...; each
/// event's interval contains its point and overlaps its neighbours'. Every 40th op is unknown
/// (alternately applied or not).
fn generated_history(events: u64, seed: u64) -> Vec<Event> {
    let mut random = Lcg(seed);
    let mut state = None;
    let mut history = Vec::new();
    for id in 0..events {
        let op = match (id, random.below(4)) {
            (0, _) => create(50),
            (_, 0) => READ,
            (_, 1) => reserve(1 + random.below(5) as i64),
            (_, 2) => adjust(1 + random.below(5) as i64),
            _ => reserve_if(1, state.map_or(0, |s: Stock| s.version)),
        };
        let point = 10 * (id + 2);
        let invoked_at = point - random.below(20);
        if id % 40 == 39 {
            if id % 80 == 39 {
                state = step(state, &op).1;
            }
            history.push(lost(id, invoked_at, op));
            continue;
        }
        let (outcome, after) = step(state, &op);
        state = after;
        history.push(done(id, invoked_at, point + random.below(20), op, outcome));
    }
    history
}

#[test]
fn a_typical_history_of_200_events_checks_within_a_small_budget() {
    for seed in 1..=5 {
        let history = generated_history(200, seed);
        let summary = check_with_limit(&history, 20_000)
            .unwrap_or_else(|error| panic!("seed {seed}:\n{error}"));
        assert_witness_is_valid("generated", &history, &summary.linearization);
        let unknown_reads = history
            .iter()
            .filter(|e| e.outcome.is_unknown() && e.op.is_read())
            .count();
        assert_eq!(summary.ops_checked, 200 - unknown_reads);
    }
}

#[test]
fn a_corrupted_typical_history_is_rejected_within_a_small_budget() {
    for seed in 1..=5 {
        let mut history = generated_history(200, seed);
        let victim = history
            .iter_mut()
            .filter(|e| matches!(e.outcome, Outcome::Ok { .. }))
            .nth(120)
            .expect("enough successful events");
        let victim_id = victim.id;
        victim.outcome = ok(-1, 1_000);
        match check_with_limit(&history, 20_000) {
            Err(CheckError::NotLinearizable(violation)) => {
                assert!(violation.involved.contains(&victim_id), "{violation}")
            }
            other => panic!("seed {seed}: expected a violation, got {other:?}"),
        }
    }
}

#[test]
fn the_verdict_does_not_depend_on_the_order_events_are_given_in() {
    let history = generated_history(120, 7);
    let mut reversed = history.clone();
    reversed.reverse();
    let forward = check(&history).expect("linearizable");
    let backward = check(&reversed).expect("linearizable");
    assert_eq!(forward.ops_checked, backward.ops_checked);
    assert_eq!(
        check(&history),
        Ok(forward),
        "checking twice gives the same answer"
    );
}
