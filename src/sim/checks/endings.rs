//! Every hold ends at most once, and a hold past its deadline ends exactly once.
//!
//! **At most once**: a reservation's status never changes once final. The clients' sightings
//! of a reservation ([`ReservationLog::observations`]: answers to commits, releases, reads, and
//! the status a refusal names) are compared with each other and with every replica's final
//! state: all final statuses seen are one and the same, it is the one every replica ends with,
//! and no client sees it held after another client saw it end (a sighting of `held` invoked
//! after a final sighting completed). A refusal `RESERVATION_EXPIRED` counts as a sighting of
//! `expired` (past its deadline, only an expiry can end a hold), except for that order: until
//! the expiry entry applies, a read may still show such a hold held.
//!
//! **Exactly once past the deadline**: once the run has settled with a leader for long enough
//! (the run waits until every deadline it saw, plus [`EXPIRY_BOUND_MS`], has passed), no replica
//! still holds a reservation whose deadline is [`EXPIRY_BOUND_MS`] or more behind the wall clock.
//!
//! [`ReservationLog::observations`]: crate::sim::history::ReservationLog::observations

use std::collections::BTreeSet;

use super::replica::Replica;
use crate::inventory::{ReservationId, ReservationStatus};
use crate::sim::history::{History, Observation};
use crate::sim::holds::PAST_DEADLINE;
use crate::sim::report::RunReport;

/// How long past its deadline a hold may stay held while a leader exists, in ms. The issue
/// promises "within about a second"; the bound leaves room for an expiry proposed just before a
/// leader change to be proposed again by the next leader.
pub const EXPIRY_BOUND_MS: u64 = 5_000;

/// One violation per reservation some replica still holds well past its deadline.
pub(super) fn check_no_hold_overdue(replica: &Replica, settled_at_ms: u64, report: &mut RunReport) {
    for reservation in replica.reservations.values() {
        let overdue = reservation.expires_at_ms.saturating_add(EXPIRY_BOUND_MS) <= settled_at_ms;
        if reservation.status == ReservationStatus::Held && overdue {
            report.violations.push(format!(
                "expiry: node {} still holds {} {} ms past its deadline",
                replica.id,
                reservation.id,
                settled_at_ms - reservation.expires_at_ms
            ));
        }
    }
}

/// One violation per reservation whose sightings and final states disagree.
pub(super) fn check_endings_once(replicas: &[Replica], history: &History, report: &mut RunReport) {
    for (id, log) in &history.reservations {
        if let Err(message) = check_one(id, &log.observations, replicas) {
            report
                .violations
                .push(format!("ended more than once: {id}: {message}"));
        }
    }
}

/// The sightings of reservation `id` against each other and the replicas' final states.
fn check_one(id: &str, observations: &[Observation], replicas: &[Replica]) -> Result<(), String> {
    let held = ReservationStatus::Held.as_str();
    // A refusal past the deadline promises an expiry, which may not have applied yet.
    fn ending(o: &Observation) -> &str {
        match o.status.as_str() {
            PAST_DEADLINE => ReservationStatus::Expired.as_str(),
            status => status,
        }
    }
    let finals: BTreeSet<&str> = observations
        .iter()
        .map(ending)
        .filter(|status| *status != held)
        .collect();
    if finals.len() > 1 {
        return Err(format!("clients saw it end as {finals:?}"));
    }
    let ended = |o: &&Observation| o.status != held && o.status != PAST_DEADLINE;
    if let Some(first_end) = observations
        .iter()
        .filter(ended)
        .map(|o| o.completed_at)
        .min()
    {
        let held_later = observations
            .iter()
            .any(|o| o.status == held && o.invoked_at > first_end);
        if held_later {
            return Err("a client saw it held after another saw it end".into());
        }
    }
    let parsed: ReservationId = id
        .parse()
        .map_err(|_| "the id a client was given does not parse".to_owned())?;
    for replica in replicas {
        let status = replica.reservations.get(&parsed).map(|r| r.status.as_str());
        match (status, finals.first()) {
            (None, _) => return Err(format!("node {} does not know it", replica.id)),
            (Some(status), Some(seen)) if status != *seen => {
                return Err(format!(
                    "clients saw it {seen}, node {} has it {status}",
                    replica.id
                ))
            }
            _ => {}
        }
    }
    Ok(())
}
