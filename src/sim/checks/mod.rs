//! The invariants checked once a run is healed and converged, one file each. Every failure is a
//! line in [`RunReport::violations`]:
//! - **client anomalies**: no unexpected answer to any client, no negative quantity observed;
//! - **exactly-once idempotency**: every definite answer under one key is identical;
//! - **replica agreement**: all nodes' state machines are byte-identical once converged;
//! - **linearizability** of every SKU's client history: no oversell, no lost acknowledged write;
//! - **stock conservation**: final quantity = acknowledged effects + some unknown ones, never < 0;
//! - **promises observed during faults** (`SimCluster::note_violation`): e.g. a voter wiped in
//!   place never started as that voter, nor received entries.
//!
//! Liveness (a leader is elected, every node catches up) is not here: the run itself waits for
//! it ([`super::run`]) and reports when it never comes, before any of these can run.

mod client_anomalies;
mod conservation;
mod idempotency;
mod linearizability;
mod replicas;

use super::report::RunReport;
use super::workload::History;
use super::SimCluster;
use crate::raft::NodeId;

/// Runs every check against the converged cluster (`leader` serves the final records) and the
/// clients' `history`, in a fixed order so a report's violations are reproducible.
pub(super) fn check_everything(
    cluster: &SimCluster,
    leader: NodeId,
    history: &History,
    report: &mut RunReport,
) {
    report.violations.extend(cluster.take_violations());
    client_anomalies::check_client_anomalies(history, report);
    idempotency::check_idempotent_answers(history, report);
    replicas::check_replicas_agree(cluster, report);
    for (sku, events) in &history.events {
        linearizability::check_linearizable(sku, events, report);
        conservation::check_final_record(cluster, leader, sku, events, report);
    }
}
