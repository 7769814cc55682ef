//! The invariants checked once a run is healed and converged, one file each. Every failure is a
//! line in [`RunReport::violations`]:
//! - **client anomalies**: no unexpected answer to any client, no negative quantity observed,
//!   every record a client saw adds up (`onHand == qty + reserved`);
//! - **exactly-once idempotency**: every definite answer under one key is identical (a batch's
//!   too: every line's result);
//! - **replica agreement**: all nodes' state machines are byte-identical once converged;
//! - **linearizability** of every plain SKU's client history: no oversell, no lost acknowledged
//!   write (the hold SKUs are left out: see `sim::holds`);
//! - **stock conservation**: per record on every replica, `qty + reserved + committed units` =
//!   acknowledged creates, adjusts and reserves + some unknown ones, never < 0;
//! - **held units**: on every record of every replica, `reserved` is the sum of the held lines
//!   naming it, and `qty + reserved` is its on hand;
//! - **endings**: a reservation's status never changes once final (what the clients saw over
//!   time against every replica's final state), and none is held past its deadline + a bound;
//! - **carts**: a cart is held whole or not at all;
//! - **batches** (`batches`): a refused `rejectEverything` batch shows no line in any replica's
//!   feed, an applied batch every line it answered applied (in the entry its answer named), one
//!   with no known outcome all of them or none (each line is also an operation of its SKU for
//!   the linearizability and conservation checks);
//! - **the event feed** (`feed`): every replica's feed is dense, identical across replicas where
//!   they overlap, holds an event for every acknowledged write and none without a command, and
//!   replays to the final records;
//! - **the subscriber** (`subscriber`): a consumer that paged the feed from node after node
//!   through the faults read every event once, in order, as the replicas keep it;
//! - **promises observed during faults** (`SimCluster::note_violation`): e.g. a voter wiped in
//!   place never started as that voter, nor received entries.
//!
//! Liveness (a leader is elected, every node catches up) is not here: the run itself waits for
//! it ([`super::run`]) and reports when it never comes, before any of these can run.

mod batches;
mod carts;
mod client_anomalies;
mod conservation;
mod endings;
mod feed;
mod held_units;
mod idempotency;
mod linearizability;
mod replica;
mod replicas;
mod subscriber;

pub use endings::EXPIRY_BOUND_MS;
pub use feed::FeedExpectation;

use super::consumer::FeedReading;
use super::holds::is_hold_sku;
use super::report::RunReport;
use super::workload::History;
use super::SimCluster;
use replica::Replica;

/// What the feed checks are given: what the run let the nodes forget, and what the consumer
/// read (none when the run had no consumer).
pub(super) struct FeedFacts<'a> {
    pub expectation: FeedExpectation,
    pub reading: Option<&'a FeedReading>,
}

/// Runs every check against the converged cluster and the clients' `history`, in a fixed order
/// so a report's violations are reproducible. `settled_at_ms` is the wall-clock time (ms since
/// the epoch) by which every hold due before it, less the bound, must have ended.
pub(super) fn check_everything(
    cluster: &SimCluster,
    history: &History,
    settled_at_ms: u64,
    feed: FeedFacts<'_>,
    report: &mut RunReport,
) {
    report.violations.extend(cluster.take_violations());
    client_anomalies::check_client_anomalies(history, report);
    idempotency::check_idempotent_answers(history, report);
    replicas::check_replicas_agree(cluster, report);
    for (sku, events) in &history.events {
        if !is_hold_sku(sku) {
            linearizability::check_linearizable(sku, events, report);
        }
    }
    let replicas: Vec<Replica> = cluster
        .ids()
        .into_iter()
        .map(|id| Replica::read(cluster, id))
        .collect();
    for replica in &replicas {
        for (sku, events) in &history.events {
            conservation::check_final_record(replica, sku, events, report);
        }
        held_units::check_held_units(replica, report);
        endings::check_no_hold_overdue(replica, settled_at_ms, report);
        carts::check_carts_stored(replica, history, report);
        batches::check_all_or_none(replica, history, feed.expectation, report);
    }
    carts::check_cart_answers(history, report);
    endings::check_endings_once(&replicas, history, report);
    feed::check_feeds(&replicas, history, feed.expectation, report);
    if let (Some(reading), Some(first)) = (feed.reading, replicas.first()) {
        subscriber::check_subscriber(reading, first, report);
    }
    if let Some(first) = replicas.first() {
        report.feed_events = first.feed_head.last_seq;
        report.feed_oldest_seq = first.feed_head.oldest_seq;
        for reservation in first.reservations.values() {
            *report
                .reservations
                .entry(reservation.status.as_str())
                .or_default() += 1;
        }
    }
}
