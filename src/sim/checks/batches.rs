//! Batches are all or none, as every replica's feed tells it. A batch's entry records one event
//! per applied line, at the entry's log index (which the state machine's answer names, refusals
//! included: `sim::batches` reads it whole) and carrying the batch's idempotency key if it had
//! one; so on each replica, by log index and by key
//! - a refused `rejectEverything` batch has no event (no line of it is visible);
//! - an applied batch has exactly one event per applied line (every line of a
//!   `rejectEverything` batch, the lines answered ok of a `rejectFailedLines` one), on those
//!   lines' records, all at the log index its answer named;
//! - a keyed batch with no definite answer has all of them or none (`rejectEverything`), at
//!   most one per line (`rejectFailedLines`), in one entry (an unkeyed one cannot be found: its
//!   lines are left to the linearizability and conservation checks, as unknown operations).
//!
//! With the feed checks (the events replay to every record's final state, no event without a
//! command) this says the records changed by all of a batch's lines or by none of them. With
//! retention on, an applied batch whose entry may be forgotten is not looked for.

use std::collections::BTreeMap;

use super::feed::FeedExpectation;
use super::replica::Replica;
use crate::inventory::{ErrorPolicy, Event};
use crate::sim::history::{BatchLog, BatchOutcome, History};
use crate::sim::report::RunReport;

/// One violation per batch `replica`'s feed shows other than all or none; they start with
/// `all or none:`.
pub(super) fn check_all_or_none(
    replica: &Replica,
    history: &History,
    expectation: FeedExpectation,
    report: &mut RunReport,
) {
    let mut by_key: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut by_index: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for event in &replica.feed {
        if let Some(key) = &event.idempotency_key {
            by_key.entry(key.as_str()).or_default().push(event);
        }
        by_index.entry(event.log_index).or_default().push(event);
    }
    let oldest_index = replica.feed.first().map_or(0, |event| event.log_index);
    for batch in &history.batches {
        let at_index = match batch.outcome {
            BatchOutcome::Answered { log_index, .. } | BatchOutcome::Refused { log_index } => {
                by_index.get(&log_index)
            }
            BatchOutcome::Unknown if batch.key.is_none() => continue,
            BatchOutcome::Unknown => None,
        };
        let keyed = batch.key.as_deref().and_then(|key| by_key.get(key));
        // Both, each event once, in feed order.
        let mut events: Vec<&Event> = at_index
            .into_iter()
            .chain(keyed)
            .flatten()
            .copied()
            .collect();
        events.sort_by_key(|event| event.seq);
        events.dedup_by_key(|event| event.seq);
        if let Err(problem) = check_batch(batch, &events, expectation, oldest_index) {
            report.violations.push(format!(
                "all or none: batch {:?} ({:?}, {} lines on {:?}) {problem} in the feed of node {}",
                batch.key,
                batch.policy,
                batch.skus.len(),
                batch.skus,
                replica.id
            ));
        }
    }
}

/// The events carrying one batch's key against what its answer said.
fn check_batch(
    batch: &BatchLog,
    events: &[&Event],
    expectation: FeedExpectation,
    oldest_index: u64,
) -> Result<(), String> {
    let skus: Vec<&str> = events.iter().map(|e| e.key.sku.as_str()).collect();
    let shown = || format!("{} events ({skus:?})", events.len());
    if let Some(pair) = events.windows(2).find(|p| p[0].log_index != p[1].log_index) {
        return Err(format!(
            "was applied in two entries ({} and {}): {}",
            pair[0].log_index,
            pair[1].log_index,
            shown()
        ));
    }
    match &batch.outcome {
        BatchOutcome::Refused { log_index } if !events.is_empty() => Err(format!(
            "was refused at log index {log_index}, yet has {} at log index {}",
            shown(),
            events[0].log_index
        )),
        BatchOutcome::Refused { .. } => Ok(()),
        BatchOutcome::Answered { log_index, applied } => {
            if expectation == FeedExpectation::Retained && *log_index <= oldest_index {
                return Ok(()); // its entry may be forgotten
            }
            let expected: Vec<&str> = batch
                .skus
                .iter()
                .zip(applied)
                .filter(|(_, applied)| **applied)
                .map(|(sku, _)| sku.as_str())
                .collect();
            let mut sorted = skus.clone();
            sorted.sort_unstable();
            let mut expected_sorted = expected.clone();
            expected_sorted.sort_unstable();
            if sorted != expected_sorted {
                return Err(format!(
                    "applied {} lines ({expected:?}) at log index {log_index}, yet has {}",
                    expected.len(),
                    shown()
                ));
            }
            match events.first() {
                Some(event) if event.log_index != *log_index => Err(format!(
                    "was answered from log index {log_index}, its events are at {}",
                    event.log_index
                )),
                _ => Ok(()),
            }
        }
        BatchOutcome::Unknown => {
            let forgotten = events.first().is_some_and(|e| e.log_index <= oldest_index);
            if expectation == FeedExpectation::Retained && forgotten {
                return Ok(()); // some of its events may be forgotten
            }
            let whole = batch.skus.len();
            let all_or_none = events.is_empty() || events.len() == whole;
            match batch.policy {
                ErrorPolicy::RejectEverything if !all_or_none => Err(format!(
                    "has no known outcome, and {} of its {whole} lines",
                    shown()
                )),
                _ if events.len() > whole => Err(format!("has {}", shown())),
                _ => Ok(()),
            }
        }
    }
}
