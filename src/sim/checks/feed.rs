//! The event feed, as every replica keeps it once the run has converged: its shape, the
//! replicas' agreement, and what it says against the clients' history and the final state.
//!
//! - **Shape**: a node's kept events are dense (`seq` from its oldest kept to its head, no gap,
//!   none twice), entries in log order, and no entry names one record or one reservation line
//!   twice at one version (an entry's events written twice would still be dense; two lines of
//!   a batch on one record are two changes, each at its own version).
//! - **Agreement**: every node has the same head, and where two nodes keep the same `seq` they
//!   keep the same event.
//! - **Acknowledged writes**: every create, adjust and reserve a client was answered with a
//!   record has its event (the record's key, kind and version, the quantity answered and the
//!   delta asked) at the log index its answer named (`x-stockraft-log-index`); every hold or cart
//!   answered 201 has one `held` event per line at the log index its id names; every reservation
//!   a client saw committed, released or expired has one event of that kind per line (in one
//!   entry, not after the one the answer to its commit or release named), and every reservation
//!   a replica remembers has the events of its whole life.
//! - **No event without a command**: per plain SKU and kind, no more entries than the client
//!   commands that may have applied (answered with a record, or unknown); a refused command that
//!   recorded an event shows up here or as a version that does not advance.
//! - **The feed replays to the state**: per record, the events' deltas carry its available
//!   quantity from entry to entry, versions advance with every entry, and the newest event shows
//!   the record's final quantity, reserved units and version.
//!
//! With retention on (the small-retention variant, [`FeedExpectation::Retained`]), a node keeps
//! only its newest chunks: an acknowledged write is looked for only where the node must still
//! keep it (a record with an older kept event, a reservation created after the oldest kept
//! entry), and a record's chain starts at its first kept event.

use std::collections::{BTreeMap, BTreeSet};

use super::replica::Replica;
use crate::checker::{Op, Outcome};
use crate::inventory::{Event, EventKind, RecordKey, ReservationId, ReservationStatus};
use crate::sim::history::{History, STORE};
use crate::sim::report::RunReport;

/// What the run lets the nodes forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedExpectation {
    /// Nothing: every node keeps every event from seq 1.
    Complete,
    /// Whole chunks from the front (the small-retention variant).
    Retained,
}

/// Runs every check of the feed; violations start with `feed`.
pub(super) fn check_feeds(
    replicas: &[Replica],
    history: &History,
    expectation: FeedExpectation,
    report: &mut RunReport,
) {
    for replica in replicas {
        check_shape(replica, expectation, report);
        check_acknowledged_writes(replica, history, expectation, report);
        check_reservations(replica, history, expectation, report);
        check_no_event_without_command(replica, history, report);
        check_replays_to_state(replica, expectation, report);
    }
    check_agreement(replicas, report);
}

/// Dense, ascending, starting where the head says, one event per record or line per entry.
fn check_shape(replica: &Replica, expectation: FeedExpectation, report: &mut RunReport) {
    let node = replica.id;
    let head = &replica.feed_head;
    let events = &replica.feed;
    if expectation == FeedExpectation::Complete && head.oldest_seq != 1 && head.last_seq > 0 {
        report.violations.push(format!(
            "feed shape: node {node} keeps events from seq {} though nothing is forgotten",
            head.oldest_seq
        ));
    }
    let expected_len = (head.last_seq + 1).saturating_sub(head.oldest_seq);
    if events.len() as u64 != expected_len {
        report.violations.push(format!(
            "feed shape: node {node} keeps {} events, its head says {expected_len} ({}..={})",
            events.len(),
            head.oldest_seq,
            head.last_seq
        ));
    }
    for (position, event) in events.iter().enumerate() {
        let seq = head.oldest_seq + position as u64;
        if event.seq != seq {
            report.violations.push(format!(
                "feed shape: node {node} has seq {} where seq {seq} belongs (a gap or a duplicate)",
                event.seq
            ));
            return;
        }
    }
    let mut named: BTreeSet<(u64, &RecordKey, Option<ReservationId>, u64)> = BTreeSet::new();
    for pair in events.windows(2) {
        if pair[1].log_index < pair[0].log_index {
            report.violations.push(format!(
                "feed shape: node {node} seq {} (log index {}) after log index {}",
                pair[1].seq, pair[1].log_index, pair[0].log_index
            ));
        }
    }
    for event in events {
        if !named.insert((
            event.log_index,
            &event.key,
            event.reservation_id,
            event.version,
        )) {
            report.violations.push(format!(
                "feed shape: node {node} has two events of log index {} for {} {:?} (seq {})",
                event.log_index,
                event.key.sku,
                event.reservation_id.map(|id| id.to_string()),
                event.seq
            ));
        }
    }
}

/// Every node's head is the same, and a `seq` two nodes keep is the same event on both.
fn check_agreement(replicas: &[Replica], report: &mut RunReport) {
    let Some((first, others)) = replicas.split_first() else {
        return;
    };
    let reference: BTreeMap<u64, &Event> = first.feed.iter().map(|e| (e.seq, e)).collect();
    for replica in others {
        if replica.feed_head.last_seq != first.feed_head.last_seq {
            report.violations.push(format!(
                "feed agreement: node {} is at seq {}, node {} at seq {}",
                replica.id, replica.feed_head.last_seq, first.id, first.feed_head.last_seq
            ));
        }
        let differs = replica.feed.iter().find(|event| {
            reference
                .get(&event.seq)
                .is_some_and(|other| *other != *event)
        });
        if let Some(event) = differs {
            report.violations.push(format!(
                "feed agreement: seq {} differs between node {} ({event:?}) and node {} ({:?})",
                event.seq, replica.id, first.id, reference[&event.seq]
            ));
        }
    }
}

/// The events of each record, in feed order.
fn by_record(events: &[Event]) -> BTreeMap<&RecordKey, Vec<&Event>> {
    let mut records: BTreeMap<&RecordKey, Vec<&Event>> = BTreeMap::new();
    for event in events {
        records.entry(&event.key).or_default().push(event);
    }
    records
}

/// The kind of event a plain client command records, and the delta it stands for.
fn expected_kind(op: &Op) -> Option<(EventKind, Option<i64>)> {
    match *op {
        Op::Create { .. } => Some((EventKind::Created, None)),
        Op::Adjust { delta, .. } => Some((EventKind::Adjusted, Some(delta))),
        Op::Reserve { qty, .. } => Some((EventKind::Reserved, Some(-qty))),
        Op::Read => None,
    }
}

/// Every create, adjust and reserve answered with a record has its event on `replica`.
fn check_acknowledged_writes(
    replica: &Replica,
    history: &History,
    expectation: FeedExpectation,
    report: &mut RunReport,
) {
    let records = by_record(&replica.feed);
    for (sku, operations) in &history.events {
        let key = RecordKey::new(STORE, sku).expect("workload SKUs are valid");
        let kept = records.get(&key).map(Vec::as_slice).unwrap_or_default();
        for operation in operations {
            let (Some((kind, delta)), Outcome::Ok { qty, version }) =
                (expected_kind(&operation.op), operation.outcome)
            else {
                continue;
            };
            let must_be_kept = expectation == FeedExpectation::Complete
                || kept.first().is_some_and(|first| first.version <= version);
            if !must_be_kept {
                continue;
            }
            let named = history.log_indexes.get(&operation.id).copied();
            let found = kept.iter().find(|event| event.version == version);
            let problem = match (found, named) {
                (_, None) => "was answered without a log index".to_owned(),
                (None, Some(index)) => format!("has no event (log index {index})"),
                (Some(event), Some(index)) if event.log_index != index => format!(
                    "has its event at log index {}, the answer named {index}",
                    event.log_index
                ),
                (Some(event), _) if event.kind != kind => {
                    format!("has a {} event", event.kind.as_str())
                }
                (Some(event), _) if event.quantity != qty || event.delta != delta => format!(
                    "has an event of qty {} delta {:?} (answered qty {qty}, delta {delta:?})",
                    event.quantity, event.delta
                ),
                (Some(_), _) => continue,
            };
            report.violations.push(format!(
                "feed of node {}: the acknowledged {} of {sku} (client op #{}, version {version}) {problem}",
                replica.id,
                kind.as_str(),
                operation.id
            ));
        }
    }
}

/// The events naming each reservation, in feed order.
fn by_reservation(events: &[Event]) -> BTreeMap<ReservationId, Vec<&Event>> {
    let mut reservations: BTreeMap<ReservationId, Vec<&Event>> = BTreeMap::new();
    for event in events {
        if let Some(id) = event.reservation_id {
            reservations.entry(id).or_default().push(event);
        }
    }
    reservations
}

/// The event kind a final status is recorded with.
fn final_kind(status: &str) -> Option<EventKind> {
    match status {
        "committed" => Some(EventKind::Committed),
        "released" => Some(EventKind::Released),
        "expired" => Some(EventKind::Expired),
        _ => None,
    }
}

/// What the feed must show of one reservation: its lines, how it ended if it did, and the
/// entry that ended it if a client's commit or release was answered with it.
struct Life {
    lines: Vec<(String, i64)>,
    ended: Option<EventKind>,
    ended_at: Option<u64>,
}

/// The life of every reservation a client created or saw end, or `replica` remembers.
fn lives(replica: &Replica, history: &History) -> BTreeMap<ReservationId, Life> {
    let mut lives: BTreeMap<ReservationId, Life> = BTreeMap::new();
    for (id, log) in &history.reservations {
        let Ok(id) = id.parse::<ReservationId>() else {
            continue; // reported by the endings check
        };
        let ended = log
            .observations
            .iter()
            .find_map(|seen| final_kind(&seen.status));
        let lines = log
            .answered
            .clone()
            .unwrap_or_else(|| log.requested.clone());
        let ended_at = log.ended_at_log_index;
        let life = Life {
            lines,
            ended,
            ended_at,
        };
        lives.insert(id, life);
    }
    for (id, reservation) in &replica.reservations {
        let life = lives.entry(*id).or_insert(Life {
            lines: Vec::new(),
            ended: None,
            ended_at: None,
        });
        life.lines = reservation
            .lines
            .iter()
            .map(|line| (line.key.sku.clone(), line.quantity))
            .collect();
        if reservation.status != ReservationStatus::Held {
            life.ended = final_kind(reservation.status.as_str());
        }
    }
    lives
}

/// Each reservation's events: one `held` per line at the log index its id names, then, if it
/// ended, one event of its end per line, all in one entry; none for a reservation still held.
fn check_reservations(
    replica: &Replica,
    history: &History,
    expectation: FeedExpectation,
    report: &mut RunReport,
) {
    let named = by_reservation(&replica.feed);
    let oldest_index = replica.feed.first().map_or(0, |event| event.log_index);
    for (id, life) in lives(replica, history) {
        if expectation == FeedExpectation::Retained && id.log_index() <= oldest_index {
            continue; // its creation may be forgotten
        }
        if life.lines.is_empty() {
            continue; // neither a client nor the replica knows its lines
        }
        let events = named.get(&id).map(Vec::as_slice).unwrap_or_default();
        if let Err(problem) = check_life(id, &life, events) {
            report.violations.push(format!(
                "feed of node {}: reservation {id} {problem}",
                replica.id
            ));
        }
    }
}

/// The events of reservation `id` against its life.
fn check_life(id: ReservationId, life: &Life, events: &[&Event]) -> Result<(), String> {
    let of_kind = |kind: EventKind| -> Vec<&Event> {
        events.iter().copied().filter(|e| e.kind == kind).collect()
    };
    let held = of_kind(EventKind::Held);
    let held_lines: Vec<(String, i64)> = held
        .iter()
        .map(|e| (e.key.sku.clone(), -e.delta.unwrap_or_default()))
        .collect();
    if held_lines != life.lines {
        return Err(format!(
            "holds {:?}, its held events {held_lines:?}",
            life.lines
        ));
    }
    if let Some(event) = held.iter().find(|e| e.log_index != id.log_index()) {
        return Err(format!("has a held event at log index {}", event.log_index));
    }
    let endings: Vec<&Event> = events
        .iter()
        .copied()
        .filter(|e| e.kind != EventKind::Held)
        .collect();
    let expected = life.ended.map_or(0, |_| life.lines.len());
    let kinds: BTreeSet<&str> = endings.iter().map(|e| e.kind.as_str()).collect();
    let entries: BTreeSet<u64> = endings.iter().map(|e| e.log_index).collect();
    let right_kind = life
        .ended
        .is_none_or(|kind| of_kind(kind).len() == expected);
    if endings.len() != expected || !right_kind || entries.len() > 1 {
        return Err(format!(
            "ended {:?}, its ending events are {kinds:?} x{} in {} entries",
            life.ended.map(EventKind::as_str),
            endings.len(),
            entries.len()
        ));
    }
    // A commit or release asked again is answered (200, changing nothing) with its own, later
    // entry: an answer may name the entry that ended it or a later one, never an earlier one.
    match (life.ended_at, entries.first()) {
        (Some(named), Some(index)) if named < *index => Err(format!(
            "ended at log index {index}, the answer to its {} named the earlier {named}",
            life.ended.map_or("end", EventKind::as_str)
        )),
        _ => Ok(()),
    }
}

/// Per SKU and kind (created, adjusted, reserved), no more entries than client commands that
/// may have applied (the hold SKUs take plain commands too and are counted the same way).
fn check_no_event_without_command(replica: &Replica, history: &History, report: &mut RunReport) {
    let records = by_record(&replica.feed);
    for (sku, operations) in &history.events {
        let key = RecordKey::new(STORE, sku).expect("workload SKUs are valid");
        let mut may_have_applied: BTreeMap<EventKind, usize> = BTreeMap::new();
        for operation in operations {
            let applies = matches!(operation.outcome, Outcome::Ok { .. } | Outcome::Unknown);
            if let (Some((kind, _)), true) = (expected_kind(&operation.op), applies) {
                *may_have_applied.entry(kind).or_default() += 1;
            }
        }
        let mut recorded: BTreeMap<EventKind, BTreeSet<u64>> = BTreeMap::new();
        for event in records.get(&key).into_iter().flatten() {
            recorded
                .entry(event.kind)
                .or_default()
                .insert(event.log_index);
        }
        for kind in [EventKind::Created, EventKind::Adjusted, EventKind::Reserved] {
            let entries = recorded.get(&kind).map_or(0, BTreeSet::len);
            let commands = may_have_applied.get(&kind).copied().unwrap_or(0);
            if entries > commands {
                report.violations.push(format!(
                    "feed of node {}: {entries} {} entries of {sku}, only {commands} such commands may have applied",
                    replica.id,
                    kind.as_str()
                ));
            }
        }
    }
}

/// Per record: entry by entry, the available quantity moves by the entry's deltas and the
/// version advances; the newest event shows the record as the replica has it.
fn check_replays_to_state(replica: &Replica, expectation: FeedExpectation, report: &mut RunReport) {
    for (key, events) in by_record(&replica.feed) {
        if let Err(problem) = check_chain(&events, expectation) {
            report.violations.push(format!(
                "feed of node {}: the events of {} {problem}",
                replica.id, key.sku
            ));
            continue;
        }
        let last = events.last().expect("a record in the map has an event");
        let Some(record) = replica.records.get(&key.sku) else {
            continue; // not a workload SKU
        };
        let shown = (last.quantity, last.reserved, last.version);
        let stored = (record.quantity, record.reserved, record.version);
        if shown != stored {
            report.violations.push(format!(
                "feed of node {}: the newest event of {} shows (qty, reserved, version) {shown:?}, the record is {stored:?}",
                replica.id, key.sku
            ));
        }
    }
    if expectation == FeedExpectation::Complete {
        let evented: BTreeSet<&str> = replica.feed.iter().map(|e| e.key.sku.as_str()).collect();
        for sku in replica.records.keys() {
            if !evented.contains(sku.as_str()) {
                report.violations.push(format!(
                    "feed of node {}: record {sku} exists but has no event",
                    replica.id
                ));
            }
        }
    }
}

/// One record's events, grouped by change (an entry, or one line of a batch entry that changes
/// the record more than once: each at its own version, one above the line before): the first
/// change creates it (unless retention may have forgotten it), each later one has a higher
/// version and moves the available quantity by the sum of its deltas.
fn check_chain(events: &[&Event], expectation: FeedExpectation) -> Result<(), String> {
    let mut entries: Vec<Vec<&Event>> = Vec::new();
    for event in events {
        match entries.last_mut() {
            Some(entry)
                if entry[0].log_index == event.log_index && entry[0].version == event.version =>
            {
                entry.push(event)
            }
            _ => entries.push(vec![event]),
        }
    }
    let first = &entries[0];
    if expectation == FeedExpectation::Complete && first[0].kind != EventKind::Created {
        return Err(format!(
            "start with {} (seq {})",
            first[0].kind.as_str(),
            first[0].seq
        ));
    }
    for pair in entries.windows(2) {
        let (before, after) = (pair[0].last().expect("entries are not empty"), &pair[1]);
        let now = after.last().expect("entries are not empty");
        // Within one entry, each change after the first is one more line: one version up.
        let same_entry = now.log_index == before.log_index;
        if same_entry && now.version != before.version + 1 {
            return Err(format!(
                "go from version {} to {} within one entry (seq {})",
                before.version, now.version, now.seq
            ));
        }
        if now.version <= before.version {
            return Err(format!(
                "go from version {} to {} (seq {})",
                before.version, now.version, now.seq
            ));
        }
        let moved: i64 = after.iter().filter_map(|e| e.delta).sum();
        if before.quantity + moved != now.quantity {
            return Err(format!(
                "go from qty {} by {moved} to qty {} (seq {})",
                before.quantity, now.quantity, now.seq
            ));
        }
    }
    Ok(())
}
