//! The pure state transition: `(state, request, context) -> (response, effects)`.
//!
//! [`apply`] handles what every command shares (the idempotency key: checked, replayed or
//! remembered) and `execute` dispatches on the command: the seed's commands are in
//! `one_record`, the reservation transitions in `lifecycle`, a batch of lines in `batch`.

use super::batch;
use super::change::{invalid, Change};
use super::command::{
    unpack_lines, Command, CommandResult, NewRecord, Rejection, Request, Response,
    BATCH_RECORDS_MAX,
};
use super::event::{events_of, Changed, Event, EventKind};
use super::lifecycle;
use super::one_record::{adjust, create, reserve};
use super::record::{Record, RecordKey};
use super::state::{Effects, IdempotencyEntry, StateView};

/// Everything `apply` may know about the world besides the state and the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyContext {
    /// Index of the log entry being applied.
    pub log_index: u64,
    /// Log time in ms: [`super::next_log_time`] of the previous entry's log time and
    /// `request.proposed_at_ms`, computed by the caller from replicated data only.
    pub now_ms: u64,
}

/// Applies one request. Deterministic: depends only on its arguments.
///
/// A packed batch is applied as the batch it unpacks to (a state machine unpacks it first, to
/// load the records its lines name into `view`: it is then a `Command::Batch` here).
pub fn apply(
    view: &impl StateView,
    request: &Request,
    context: ApplyContext,
) -> (Response, Effects) {
    let request = &*request.unpacked();
    if let Some(Err(message)) = request.idempotency.as_ref().map(|key| key.check()) {
        // Nothing to remember the answer under: refused, and not stored.
        let response = Response {
            operation: request.command.operation(),
            result: CommandResult::Err(invalid(&message)),
            replayed: false,
            log_index: context.log_index,
        };
        return (response, Effects::default());
    }
    let fingerprint = request
        .idempotency
        .as_ref()
        .map(|_| request.command.fingerprint());
    if let (Some(idempotency), Some(fingerprint)) = (&request.idempotency, &fingerprint) {
        if let Some(entry) = view.idempotency(&idempotency.id()) {
            if entry.expires_at_ms > context.now_ms {
                return (
                    replay(entry, &idempotency.key, fingerprint, request, context),
                    Effects::default(),
                );
            }
        }
    }

    let (change, events) = run(view, request, context);
    let response = Response {
        operation: request.command.operation(),
        result: change.result,
        replayed: false,
        log_index: context.log_index,
    };
    let mut effects = Effects {
        records: change.records,
        idempotency: None,
        reservations: change.reservations,
        events,
    };
    if let (Some(idempotency), Some(fingerprint)) = (&request.idempotency, fingerprint) {
        let entry = IdempotencyEntry {
            fingerprint,
            response: batch::stored_answer(response.clone()),
            expires_at_ms: context.now_ms.saturating_add(idempotency.ttl_ms),
        };
        effects.idempotency = Some((idempotency.id(), entry));
    }
    (response, effects)
}

/// Runs the command: its answer and writes, and the events of what it changed.
fn run(view: &impl StateView, request: &Request, context: ApplyContext) -> (Change, Vec<Event>) {
    let idempotency_key = request.idempotency.as_ref().map(|key| key.key.as_str());
    if let Command::Batch { lines, policy } = &request.command {
        let entry = batch::Entry {
            log_index: context.log_index,
            now_ms: context.now_ms,
            idempotency_key,
        };
        return batch::execute(view, lines, *policy, entry);
    }
    let change = execute(view, &request.command, context)
        .unwrap_or_else(|rejection| Change::nothing(CommandResult::Err(rejection)));
    let events = events_of(
        what_changed(&request.command, &change),
        context.log_index,
        context.now_ms,
        idempotency_key,
    );
    (change, events)
}

/// What `change` (made by `command`) did, as its events tell it. A refusal, or a transition
/// asked again, wrote nothing and so yields no event.
fn what_changed<'a>(command: &Command, change: &'a Change) -> Changed<'a> {
    let records = change.records.as_slice();
    let seed = |kind, delta| Changed::Records {
        kind,
        delta,
        records,
    };
    match command {
        Command::Create { .. } | Command::CreateBatch { .. } => seed(EventKind::Created, None),
        // A batch's events are its lines' (`batch::execute`).
        Command::StartFeed | Command::Batch { .. } | Command::PackedBatch { .. } => {
            Changed::Nothing
        }
        Command::Adjust { delta, .. } => seed(EventKind::Adjusted, Some(*delta)),
        // An accepted reserve took >= 0 units; a refused one (any quantity) writes nothing.
        Command::Reserve { quantity, .. } => seed(EventKind::Reserved, quantity.checked_neg()),
        Command::Hold { .. }
        | Command::Cart { .. }
        | Command::Commit { .. }
        | Command::Release { .. }
        | Command::Expire { .. } => Changed::Reservations {
            reservations: &change.reservations,
            records,
        },
    }
}

/// The answer for a live idempotency key: the remembered response if the request is the same,
/// otherwise a refusal. Neither changes state.
fn replay(
    entry: IdempotencyEntry,
    key: &str,
    fingerprint: &[u8],
    request: &Request,
    context: ApplyContext,
) -> Response {
    if entry.fingerprint == fingerprint {
        let response = match &request.command {
            Command::Batch { lines, .. } => batch::replayed_answer(entry.response, lines),
            _ => entry.response,
        };
        return Response {
            replayed: true,
            ..response
        };
    }
    Response {
        operation: request.command.operation(),
        result: CommandResult::Err(Rejection::IdempotencyKeyReused {
            key: key.to_owned(),
        }),
        replayed: false,
        log_index: context.log_index,
    }
}

/// Runs one command against the state, producing its answer and writes, or a rejection that
/// changes nothing.
fn execute(
    view: &impl StateView,
    command: &Command,
    context: ApplyContext,
) -> Result<Change, Rejection> {
    for key in command.keys() {
        RecordKey::new(&key.store_id, &key.sku).map_err(|error| Rejection::Invalid {
            message: error.to_string(),
        })?;
    }
    let ApplyContext { log_index, now_ms } = context;
    match command {
        Command::CreateBatch { records } => {
            Change::of_records(create_batch(view, records, now_ms)?)
        }
        Command::Create { .. } | Command::Adjust { .. } | Command::Reserve { .. } => {
            Change::of_records(vec![execute_one(view, command, now_ms)?])
        }
        Command::Hold {
            key,
            quantity,
            expected_version,
            ttl_ms,
        } => {
            let hold = lifecycle::Hold {
                key,
                quantity: *quantity,
                expected_version: *expected_version,
                ttl_ms: *ttl_ms,
            };
            lifecycle::hold(view, hold, log_index, now_ms)
        }
        Command::Cart { lines, ttl_ms } => lifecycle::cart(view, lines, *ttl_ms, log_index, now_ms),
        Command::Commit { id } => lifecycle::commit(view, *id, now_ms),
        Command::Release { id } => lifecycle::release(view, *id, now_ms),
        Command::Expire { ids } => lifecycle::expire(view, ids, now_ms),
        // The feed is the state machine's: apply only answers.
        Command::StartFeed => Ok(Change::nothing(CommandResult::FeedStarted)),
        // Applied by `batch::execute` (see `run`), never here.
        Command::Batch { .. } => Err(invalid("a batch is applied line by line")),
        // Reaches here only if its lines did not unpack (`Request::unpacked`).
        Command::PackedBatch { lines, .. } => Err(invalid(&match unpack_lines(lines) {
            Ok(_) => "a packed batch is applied unpacked".to_string(),
            Err(error) => error.to_string(),
        })),
    }
}

/// Every record of a batch, or none: refused if the batch is empty, too large, names a key
/// twice, or names a record that exists.
fn create_batch(
    view: &impl StateView,
    records: &[NewRecord],
    now_ms: u64,
) -> Result<Vec<Record>, Rejection> {
    if records.is_empty() || records.len() > BATCH_RECORDS_MAX {
        return Err(invalid(&format!(
            "a batch holds 1 to {BATCH_RECORDS_MAX} records, got {}",
            records.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut created = Vec::with_capacity(records.len());
    for new in records {
        if !seen.insert(&new.key) {
            return Err(invalid(&format!("the batch names {} twice", new.key)));
        }
        created.push(create(view, &new.key, new.initial_quantity, now_ms)?);
    }
    Ok(created)
}

/// Runs a seed command on one record.
fn execute_one(view: &impl StateView, command: &Command, now_ms: u64) -> Result<Record, Rejection> {
    match *command {
        Command::Create {
            ref key,
            initial_quantity,
        } => create(view, key, initial_quantity, now_ms),
        Command::Adjust {
            ref key,
            delta,
            expected_version,
        } => adjust(view, key, delta, expected_version, now_ms),
        Command::Reserve {
            ref key,
            quantity,
            expected_version,
        } => reserve(view, key, quantity, expected_version, now_ms),
        _ => Err(invalid("not a single-record command")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{
        next_log_time, proposal_stamp, IdempotencyKey, MemoryState, Operation, LOG_TIME_STEP_MAX_MS,
    };

    /// The record an accepted seed command answers with.
    fn record_of(result: CommandResult) -> Record {
        match result {
            CommandResult::Ok(record) => record,
            other => panic!("expected a record, got {other:?}"),
        }
    }

    fn key(sku: &str) -> RecordKey {
        RecordKey::new("s1", sku).unwrap()
    }

    fn request(command: Command) -> Request {
        Request {
            command,
            proposed_at_ms: 1_000,
            idempotency: None,
        }
    }

    fn keyed(command: Command, idempotency_key: &str) -> Request {
        scoped(command, "", idempotency_key)
    }

    fn scoped(command: Command, scope: &str, idempotency_key: &str) -> Request {
        Request {
            idempotency: Some(IdempotencyKey {
                scope: scope.to_owned(),
                key: idempotency_key.to_owned(),
                ttl_ms: 10_000,
            }),
            ..request(command)
        }
    }

    /// Applies a request at `index` with `now_ms = 1000 + index` and commits its effects.
    fn run(state: &mut MemoryState, index: u64, request: &Request) -> Response {
        let context = ApplyContext {
            log_index: index,
            now_ms: 1_000 + index,
        };
        let (response, effects) = apply(state, request, context);
        state.commit(effects);
        response
    }

    fn create(sku: &str, quantity: i64) -> Command {
        Command::Create {
            key: key(sku),
            initial_quantity: quantity,
        }
    }

    fn adjust(sku: &str, delta: i64, expected_version: Option<u64>) -> Command {
        Command::Adjust {
            key: key(sku),
            delta,
            expected_version,
        }
    }

    fn reserve(sku: &str, quantity: i64, expected_version: Option<u64>) -> Command {
        Command::Reserve {
            key: key(sku),
            quantity,
            expected_version,
        }
    }

    #[test]
    fn create_starts_at_version_one_and_refuses_to_overwrite() {
        let mut state = MemoryState::default();
        let created = record_of(run(&mut state, 1, &request(create("a", 5))).result);
        assert_eq!(created.version, 1);
        assert_eq!(created.quantity, 5);
        assert_eq!(created.created_at_ms, 1_001);
        let again = run(&mut state, 2, &request(create("a", 9)));
        assert!(matches!(
            again.result,
            CommandResult::Err(Rejection::AlreadyExists { version: 1, .. })
        ));
        assert_eq!(state.records[&key("a")].quantity, 5);
    }

    #[test]
    fn every_change_increments_the_version_by_one() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        let adjusted = record_of(run(&mut state, 2, &request(adjust("a", 3, Some(1)))).result);
        assert_eq!((adjusted.quantity, adjusted.version), (8, 2));
        let reserved = record_of(run(&mut state, 3, &request(reserve("a", 8, None))).result);
        assert_eq!((reserved.quantity, reserved.version), (0, 3));
        assert_eq!(reserved.updated_at_ms, 1_003);
        assert_eq!(reserved.created_at_ms, 1_001);
    }

    #[test]
    fn version_mismatch_is_rejected_and_changes_nothing() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        let before = state.clone();
        let response = run(&mut state, 2, &request(reserve("a", 1, Some(7))));
        assert_eq!(
            response.result,
            CommandResult::Err(Rejection::VersionMismatch {
                expected: 7,
                actual: 1
            })
        );
        assert_eq!(state, before);
    }

    #[test]
    fn reserve_beyond_stock_is_rejected_and_changes_nothing() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        let before = state.clone();
        let response = run(&mut state, 2, &request(reserve("a", 6, None)));
        assert_eq!(
            response.result,
            CommandResult::Err(Rejection::InsufficientStock {
                requested: 6,
                available: 5
            })
        );
        let response = run(&mut state, 3, &request(adjust("a", -6, None)));
        assert_eq!(
            response.result,
            CommandResult::Err(Rejection::InsufficientStock {
                requested: 6,
                available: 5
            })
        );
        assert_eq!(state, before);
    }

    #[test]
    fn arithmetic_overflow_is_a_rejection_not_a_panic() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", i64::MAX)));
        let response = run(&mut state, 2, &request(adjust("a", 1, None)));
        assert_eq!(response.result, CommandResult::Err(Rejection::Overflow));
        let response = run(&mut state, 3, &request(adjust("a", i64::MIN, None)));
        // i64::MAX + i64::MIN = -1: below zero, so it is refused as insufficient stock.
        assert!(matches!(
            response.result,
            CommandResult::Err(Rejection::InsufficientStock { .. })
        ));
        assert_eq!(state.records[&key("a")].quantity, i64::MAX);
    }

    #[test]
    fn invalid_amounts_and_unknown_records_are_rejected() {
        let mut state = MemoryState::default();
        assert!(matches!(
            run(&mut state, 1, &request(create("a", -1))).result,
            CommandResult::Err(Rejection::Invalid { .. })
        ));
        assert!(matches!(
            run(&mut state, 2, &request(reserve("a", 1, None))).result,
            CommandResult::Err(Rejection::NotFound { .. })
        ));
        run(&mut state, 3, &request(create("a", 1)));
        assert!(matches!(
            run(&mut state, 4, &request(reserve("a", -1, None))).result,
            CommandResult::Err(Rejection::Invalid { .. })
        ));
        let bad_key = Command::Create {
            key: RecordKey {
                store_id: "bad/store".into(),
                sku: "a".into(),
            },
            initial_quantity: 1,
        };
        assert!(matches!(
            run(&mut state, 6, &request(bad_key)).result,
            CommandResult::Err(Rejection::Invalid { .. })
        ));
    }

    fn batch(skus: &[&str]) -> Command {
        let records = skus
            .iter()
            .map(|sku| NewRecord {
                key: key(sku),
                initial_quantity: 7,
            })
            .collect();
        Command::CreateBatch { records }
    }

    #[test]
    fn a_batch_creates_every_record_or_none() {
        let mut state = MemoryState::default();
        let created = run(&mut state, 1, &request(batch(&["a", "b", "c"])));
        assert_eq!(
            created.result.record().map(|r| &r.key),
            Some(&key("c")),
            "the last record answers"
        );
        assert_eq!(state.records.len(), 3);
        assert!(state
            .records
            .values()
            .all(|r| r.quantity == 7 && r.version == 1));

        let refused = [
            (batch(&["d", "b"]), "an existing record"),
            (batch(&["e", "e"]), "a key named twice"),
            (batch(&[]), "an empty batch"),
        ];
        for (index, (command, why)) in (2..).zip(refused) {
            let response = run(&mut state, index, &request(command));
            assert!(response.result.is_err(), "{why} was accepted");
            assert_eq!(state.records.len(), 3, "{why} created something");
        }
        let too_many: Vec<String> = (0..=BATCH_RECORDS_MAX).map(|i| format!("x{i}")).collect();
        let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
        let response = run(&mut state, 9, &request(batch(&too_many)));
        assert!(matches!(
            response.result,
            CommandResult::Err(Rejection::Invalid { .. })
        ));
        assert_eq!(state.records.len(), 3);
    }

    #[test]
    fn a_zero_adjust_or_reserve_is_a_new_version_that_moves_no_stock() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        let adjusted = run(&mut state, 2, &request(adjust("a", 0, Some(1)))).result;
        let adjusted = adjusted.record().cloned().expect("delta 0 is accepted");
        assert_eq!((adjusted.quantity, adjusted.version), (5, 2));
        let reserved = run(&mut state, 3, &request(reserve("a", 0, None))).result;
        let reserved = reserved.record().cloned().expect("qty 0 is accepted");
        assert_eq!((reserved.quantity, reserved.version), (5, 3));
        assert_eq!(state.records[&key("a")].version, 3);
    }

    #[test]
    fn idempotent_replay_answers_the_same_and_changes_nothing() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        let first = run(&mut state, 2, &keyed(reserve("a", 2, None), "k1"));
        let after_first = state.clone();
        let second = run(&mut state, 3, &keyed(reserve("a", 2, None), "k1"));
        assert_eq!(state, after_first);
        assert!(second.replayed);
        assert_eq!(second.result, first.result);
        assert_eq!(second.log_index, 2);
        assert_eq!(state.records[&key("a")].quantity, 3);
        // Rejections are remembered too: the same request gets the same refusal.
        let refused = run(&mut state, 4, &keyed(reserve("a", 50, None), "k2"));
        run(&mut state, 5, &request(adjust("a", 100, None)));
        let refused_again = run(&mut state, 6, &keyed(reserve("a", 50, None), "k2"));
        assert_eq!(refused_again.result, refused.result);
        assert!(refused_again.replayed);
    }

    #[test]
    fn idempotency_key_reused_with_a_different_request_is_refused() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        run(&mut state, 2, &keyed(reserve("a", 2, None), "k1"));
        let before = state.clone();
        for other in [
            reserve("a", 3, None),
            reserve("a", 2, Some(2)),
            adjust("a", 2, None),
        ] {
            let response = run(&mut state, 3, &keyed(other, "k1"));
            assert_eq!(
                response.result,
                CommandResult::Err(Rejection::IdempotencyKeyReused { key: "k1".into() })
            );
            assert!(!response.replayed);
        }
        assert_eq!(state, before);
    }

    #[test]
    fn an_expired_idempotency_key_is_forgotten() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 5)));
        run(&mut state, 2, &keyed(reserve("a", 1, None), "k1"));
        let context = ApplyContext {
            log_index: 3,
            now_ms: 1_002 + 10_000,
        };
        let (response, effects) = apply(&state, &keyed(reserve("a", 1, None), "k1"), context);
        assert!(!response.replayed);
        assert_eq!(record_of(response.result).quantity, 3);
        assert!(effects.idempotency.is_some());
    }

    #[test]
    fn replaying_the_same_log_on_a_fresh_state_gives_the_same_state_and_answers() {
        let log = [
            request(create("a", 10)),
            keyed(reserve("a", 3, None), "x"),
            request(adjust("a", -2, Some(2))),
            keyed(reserve("a", 3, None), "x"),
            request(reserve("a", 100, None)),
            request(create("b", 1)),
        ];
        let play = || {
            let mut state = MemoryState::default();
            let answers: Vec<Response> = log
                .iter()
                .enumerate()
                .map(|(i, r)| run(&mut state, i as u64 + 1, r))
                .collect();
            (state, answers)
        };
        let (state_a, answers_a) = play();
        let (state_b, answers_b) = play();
        assert_eq!(state_a, state_b);
        assert_eq!(answers_a, answers_b);
        assert_eq!(state_a.records[&key("a")].quantity, 5);
        assert_eq!(answers_a[0].operation, Operation::Create);
    }

    #[test]
    fn the_same_key_under_two_scopes_is_two_keys_with_their_own_answers() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 10)));
        let alice = run(
            &mut state,
            2,
            &scoped(reserve("a", 2, None), "client:alice", "k"),
        );
        let bob = run(
            &mut state,
            3,
            &scoped(reserve("a", 2, None), "client:bob", "k"),
        );
        let anonymous = run(&mut state, 4, &keyed(reserve("a", 2, None), "k"));
        for (who, response) in [("alice", &alice), ("bob", &bob), ("anonymous", &anonymous)] {
            assert!(!response.replayed, "{who} got someone else's answer");
        }
        assert_eq!(alice.result.record().unwrap().quantity, 8);
        assert_eq!(bob.result.record().unwrap().quantity, 6);
        assert_eq!(anonymous.result.record().unwrap().quantity, 4);
        assert_eq!(state.idempotency.len(), 3);

        // Within one scope, the key replays as it always did.
        let alice_again = run(
            &mut state,
            5,
            &scoped(reserve("a", 2, None), "client:alice", "k"),
        );
        assert!(alice_again.replayed);
        assert_eq!(alice_again.result, alice.result);
        assert_eq!(alice_again.log_index, 2);
        assert_eq!(state.records[&key("a")].quantity, 4);
    }

    #[test]
    fn key_reuse_with_another_request_is_refused_only_within_its_scope() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 10)));
        run(
            &mut state,
            2,
            &scoped(reserve("a", 2, None), "client:alice", "k"),
        );
        let before = state.clone();
        let reused = run(
            &mut state,
            3,
            &scoped(reserve("a", 3, None), "client:alice", "k"),
        );
        assert_eq!(
            reused.result,
            CommandResult::Err(Rejection::IdempotencyKeyReused { key: "k".into() })
        );
        assert_eq!(state, before);
        // Another scope using the same key for another request is simply a new key.
        let other = run(
            &mut state,
            4,
            &scoped(reserve("a", 3, None), "client:bob", "k"),
        );
        assert_eq!(record_of(other.result).quantity, 5);
        assert!(!other.replayed);
    }

    #[test]
    fn scope_and_key_never_run_together_into_one_identity() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 10)));
        let first = run(&mut state, 2, &scoped(reserve("a", 1, None), "a", "b:c"));
        let second = run(&mut state, 3, &scoped(reserve("a", 1, None), "a:b", "c"));
        assert!(!first.replayed);
        assert!(!second.replayed);
        assert_eq!(state.records[&key("a")].quantity, 8);
        assert_eq!(state.idempotency.len(), 2);
    }

    #[test]
    fn a_malformed_key_in_the_log_is_refused_and_not_remembered() {
        let mut state = MemoryState::default();
        run(&mut state, 1, &request(create("a", 10)));
        let before = state.clone();
        let too_long_scope = "s".repeat(crate::inventory::IDEMPOTENCY_SCOPE_LENGTH_MAX + 1);
        for bad in [
            keyed(reserve("a", 1, None), ""),
            keyed(reserve("a", 1, None), "tab\there"),
            keyed(reserve("a", 1, None), "\0starts-with-nul"),
            keyed(reserve("a", 1, None), &"k".repeat(256)),
            scoped(reserve("a", 1, None), &too_long_scope, "k"),
        ] {
            let response = run(&mut state, 2, &bad);
            assert!(
                matches!(
                    response.result,
                    CommandResult::Err(Rejection::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(state, before);
    }

    /// Applies `request` the way the state machine does: its log time derived from the previous
    /// one (`clock_ms`) and its stamp.
    fn run_stamped(
        state: &mut MemoryState,
        clock_ms: &mut u64,
        index: u64,
        request: &Request,
    ) -> Response {
        *clock_ms = next_log_time(*clock_ms, request.proposed_at_ms);
        let context = ApplyContext {
            log_index: index,
            now_ms: *clock_ms,
        };
        let (response, effects) = apply(state, request, context);
        state.commit(effects);
        response
    }

    #[test]
    fn a_clock_jump_of_a_day_does_not_expire_a_key_kept_for_a_day() {
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        const NOW_MS: u64 = 1_767_225_600_000;
        let at = |request: Request, stamp_ms: u64| Request {
            proposed_at_ms: stamp_ms,
            ..request
        };
        let with_ttl = |mut request: Request, ttl_ms: u64| {
            if let Some(key) = request.idempotency.as_mut() {
                key.ttl_ms = ttl_ms;
            }
            request
        };
        let mut state = MemoryState::default();
        let mut clock_ms = 0;
        run_stamped(
            &mut state,
            &mut clock_ms,
            1,
            &at(request(create("a", 10)), NOW_MS),
        );
        let keyed_reserve = with_ttl(keyed(reserve("a", 1, None), "k"), DAY_MS);
        let first = run_stamped(
            &mut state,
            &mut clock_ms,
            2,
            &at(keyed_reserve.clone(), NOW_MS),
        );
        assert_eq!(clock_ms, NOW_MS);

        // A leader whose clock jumped a day ahead stamps the next entry, bounded by the log
        // time it has applied.
        let jumped_stamp = proposal_stamp(NOW_MS + DAY_MS, clock_ms);
        let jumped = run_stamped(
            &mut state,
            &mut clock_ms,
            3,
            &at(request(adjust("a", 0, None)), jumped_stamp),
        );
        assert_eq!(clock_ms, NOW_MS + LOG_TIME_STEP_MAX_MS);
        assert_eq!(record_of(jumped.result).updated_at_ms, clock_ms);

        // The retry still replays: the key did not expire.
        let retry_stamp = proposal_stamp(NOW_MS + DAY_MS, clock_ms);
        let retry = run_stamped(
            &mut state,
            &mut clock_ms,
            4,
            &at(keyed_reserve, retry_stamp),
        );
        assert!(retry.replayed, "the jump expired a day-long key: {retry:?}");
        assert_eq!(retry.result, first.result);
        assert_eq!(clock_ms, NOW_MS + 2 * LOG_TIME_STEP_MAX_MS);
        assert_eq!(state.records[&key("a")].quantity, 9);

        // And a clock back at the right time moves nothing backwards.
        run_stamped(
            &mut state,
            &mut clock_ms,
            5,
            &at(request(adjust("a", 0, None)), NOW_MS),
        );
        assert_eq!(clock_ms, NOW_MS + 2 * LOG_TIME_STEP_MAX_MS);
    }
}
