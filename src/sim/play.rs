//! Playing a fault schedule: each scheduled fault applied at its time against the live cluster,
//! held for its duration, then healed, plus the final heal of whatever a run left behind.
//!
//! Kept apart from the run's orchestration ([`super::run`]) because this is the only code that
//! turns a [`Fault`] into actions on the cluster (network clogs, kills, wipes, clock skews and
//! admin calls), and apart from the schedule ([`super::faults`]) because that one is pure and
//! drawn from the seed while this one talks to nodes. A fault whose target can refuse it (a
//! membership change) reports [`FaultOutcome::Refused`] and is not healed.

use std::time::Duration;

use super::faults::{self, Fault, Scheduled};
use super::SimCluster;
use crate::raft::NodeId;
use crate::transport::WireRequest;

/// How long one admin call may take. Beyond the nodes' 3 s write deadline: a membership change
/// or a snapshot-and-purge can take several rounds under faults, and a change that happened but
/// answered too late would be taken as refused (and left unhealed).
const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `/api/sync/start|stop` may take: a local switch on one node, answered at once when
/// the node is up, so this only bounds waiting on a dead or cut-off one.
const SYNC_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The snapshot storm's period, in ms: the shortest one `/api/sync/start` accepts
/// (`api::sync::SNAPSHOT_INTERVAL_MS_MIN`), so the storm is as hard as the API allows.
const SNAPSHOT_STORM_INTERVAL_MS: u64 = 1_000;

/// Applies one scheduled fault at its time and heals it when it ends (if it took effect).
pub async fn play(
    cluster: &SimCluster,
    scheduled: &Scheduled,
    start: madsim::time::Instant,
    trace: &mut Vec<String>,
) -> FaultOutcome {
    let begin = Duration::from_millis(scheduled.start_ms);
    madsim::time::sleep(begin.saturating_sub(start.elapsed())).await;
    let at = start.elapsed().as_secs_f64();
    let target = match &scheduled.fault {
        Fault::IsolateLeader | Fault::CrashLeader | Fault::RestartLeaderAtOnce { .. } => {
            cluster.leader().await
        }
        _ => None,
    };
    trace.push(format!(
        "t={at:08.3}s fault {:?} target={target:?} for {} ms",
        scheduled.fault, scheduled.duration_ms
    ));
    let outcome = apply_fault(cluster, &scheduled.fault, target).await;
    trace.push(format!(
        "t={:08.3}s fault {}: {outcome:?}",
        start.elapsed().as_secs_f64(),
        scheduled.fault.kind()
    ));
    madsim::time::sleep(Duration::from_millis(scheduled.duration_ms)).await;
    if outcome == FaultOutcome::Applied {
        heal_fault(cluster, &scheduled.fault, target).await;
    }
    outcome
}

/// Whether a fault took effect. A refused fault (the cluster said no to a membership change)
/// changed nothing, so there is nothing to heal: healing it anyway would inject a different
/// fault than the schedule names (e.g. restart a healthy leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    Applied,
    Refused,
}

fn others(cluster: &SimCluster, excluded: &[NodeId]) -> Vec<NodeId> {
    cluster
        .ids()
        .into_iter()
        .filter(|id| !excluded.contains(id))
        .collect()
}

/// Applies `fault`; returns whether it took effect.
async fn apply_fault(cluster: &SimCluster, fault: &Fault, target: Option<NodeId>) -> FaultOutcome {
    match fault {
        Fault::Partition { minority } => cluster.partition(minority, &others(cluster, minority)),
        Fault::IsolateLeader => {
            if let Some(leader) = target {
                cluster.partition(&[leader], &others(cluster, &[leader]));
            }
        }
        Fault::ClogLink { from, to } => cluster.clog(*from, *to),
        Fault::Lossy {
            loss_rate,
            latency_ms_max,
        } => cluster.degrade_network(*loss_rate, *latency_ms_max),
        Fault::Crash { node } => cluster.kill(*node),
        Fault::CrashLeader => {
            if let Some(leader) = target {
                cluster.kill(leader);
            }
        }
        Fault::RestartLeaderAtOnce {
            loss_rate,
            latency_ms_max,
        } => {
            if let Some(leader) = target {
                cluster.restart(leader);
            }
            cluster.degrade_network(*loss_rate, *latency_ms_max);
        }
        Fault::SnapshotStorm { node } => {
            // Snapshot and purge right now, then every second until healed.
            let _ = admin(
                cluster,
                *node,
                "/api/cluster/snapshot",
                &serde_json::json!({}),
            )
            .await;
            let body = serde_json::json!({ "intervalMs": SNAPSHOT_STORM_INTERVAL_MS });
            let _ = cluster
                .call(
                    *node,
                    WireRequest::post_json("/api/sync/start", &body),
                    SYNC_CALL_TIMEOUT,
                )
                .await;
        }
        Fault::ClockSkew { node, offset_ms } => {
            faults::set_clock_skew(cluster.host(*node), *offset_ms)
        }
        Fault::Demote { node } => {
            let body = serde_json::json!({ "ids": [node], "keepAsLearners": true });
            if admin(cluster, *node, "/api/cluster/remove", &body).await != Some(200) {
                return FaultOutcome::Refused;
            }
        }
        Fault::TransferLeader { to } => {
            let body = serde_json::json!({ "to": to });
            if admin(cluster, *to, "/api/cluster/transfer-leader", &body).await != Some(200) {
                return FaultOutcome::Refused;
            }
        }
        Fault::WipeAndRejoin { node } => {
            let body = serde_json::json!({ "ids": [node] });
            let members = others(cluster, &[*node]);
            if admin_through_members(cluster, &members, "/api/cluster/remove", &body).await
                != Some(200)
            {
                return FaultOutcome::Refused;
            }
            cluster.kill(*node);
            cluster.wipe(*node);
        }
    }
    FaultOutcome::Applied
}

/// An admin request (with the cluster secret) to node `via`; the status, if any answer came.
pub(super) async fn admin(
    cluster: &SimCluster,
    via: NodeId,
    path: &str,
    body: &serde_json::Value,
) -> Option<u16> {
    admin_answer(cluster, via, path, body)
        .await
        .map(|(status, _)| status)
}

async fn admin_answer(
    cluster: &SimCluster,
    via: NodeId,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let request = WireRequest::post_json(path, body).with_secret(super::cluster::SIM_SECRET);
    let response = cluster.call(via, request, ADMIN_CALL_TIMEOUT).await.ok()?;
    let body = serde_json::from_slice(&response.body).unwrap_or_default();
    Some((response.status, body))
}

/// Like [`admin`], through the first of `candidates` that is a member of the cluster: a node
/// that was wiped earlier (and not yet re-added) refuses at once with `NOT_A_MEMBER`.
async fn admin_through_members(
    cluster: &SimCluster,
    candidates: &[NodeId],
    path: &str,
    body: &serde_json::Value,
) -> Option<u16> {
    for &via in candidates {
        match admin_answer(cluster, via, path, body).await {
            Some((503, answer)) if answer["error"]["code"] == "NOT_A_MEMBER" => continue,
            other => return other.map(|(status, _)| status),
        }
    }
    None
}

async fn heal_fault(cluster: &SimCluster, fault: &Fault, target: Option<NodeId>) {
    match fault {
        Fault::Partition { .. } | Fault::IsolateLeader | Fault::ClogLink { .. } => cluster.heal(),
        Fault::Lossy { .. } | Fault::RestartLeaderAtOnce { .. } => cluster.restore_network(),
        Fault::Crash { node } => cluster.restart(*node),
        Fault::CrashLeader => {
            if let Some(leader) = target {
                cluster.restart(leader);
            }
        }
        Fault::SnapshotStorm { node } => {
            let body = serde_json::json!({});
            let _ = cluster
                .call(
                    *node,
                    WireRequest::post_json("/api/sync/stop", &body),
                    SYNC_CALL_TIMEOUT,
                )
                .await;
        }
        Fault::ClockSkew { node, .. } => faults::set_clock_skew(cluster.host(*node), 0),
        Fault::Demote { node } => {
            let body = serde_json::json!({ "ids": [node] });
            let _ = admin(cluster, *node, "/api/cluster/promote", &body).await;
        }
        Fault::WipeAndRejoin { node } => {
            // The fault killed it (a refused one is not healed): start it empty. Re-adding
            // happens in `run::restore_membership`.
            cluster.restart(*node);
        }
        Fault::TransferLeader { .. } => {}
    }
}

/// The final phase: every fault healed, whatever the schedule left behind.
pub(super) fn heal_everything(cluster: &SimCluster) {
    cluster.heal();
    cluster.restore_network();
    faults::clear_clock_skews();
}
