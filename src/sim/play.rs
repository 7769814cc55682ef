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
use crate::client::wire::{
    codes, MemberRole, MembersRequest, SyncStartRequest, TransferLeaderRequest,
};
use crate::client::{Answer, Client, ClientError};
use crate::raft::NodeId;

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
        Fault::SnapshotStorm { node } => start_snapshot_storm(cluster, *node).await,
        Fault::ClockSkew { node, offset_ms } => {
            faults::set_clock_skew(cluster.host(*node), *offset_ms)
        }
        Fault::Demote { node } => {
            let body = MembersRequest {
                ids: [*node].into(),
                keep_as_learners: true,
            };
            return applied_if_ok(status(admin_client(cluster, *node).remove(&body).await));
        }
        Fault::TransferLeader { to } => {
            let body = TransferLeaderRequest { to: *to };
            let answer = admin_client(cluster, *to).transfer_leader(&body).await;
            return applied_if_ok(status(answer));
        }
        Fault::WipeAndRejoin { node } => return wipe_and_rejoin(cluster, *node).await,
        Fault::WipeInPlace {
            node,
            peers_reachable,
        } => return wipe_in_place(cluster, *node, *peers_reachable).await,
    }
    FaultOutcome::Applied
}

/// A membership change took effect only if it was answered 200.
fn applied_if_ok(status: Option<u16>) -> FaultOutcome {
    if status == Some(200) {
        FaultOutcome::Applied
    } else {
        FaultOutcome::Refused
    }
}

/// Snapshots and purges `node` right now, then every second until healed.
async fn start_snapshot_storm(cluster: &SimCluster, node: NodeId) {
    let _ = admin_client(cluster, node).snapshot().await;
    let body = SyncStartRequest {
        interval_ms: Some(SNAPSHOT_STORM_INTERVAL_MS),
    };
    let node = cluster.client(node).with_timeout(SYNC_CALL_TIMEOUT);
    let _ = node.sync_start(&body).await;
}

/// Removes `node` through the other members, then kills it and wipes its data directory (the
/// heal starts it empty and has it join again).
async fn wipe_and_rejoin(cluster: &SimCluster, node: NodeId) -> FaultOutcome {
    let body = MembersRequest {
        ids: [node].into(),
        keep_as_learners: false,
    };
    if remove_through_members(cluster, &others(cluster, &[node]), &body).await != Some(200) {
        return FaultOutcome::Refused;
    }
    cluster.kill(node);
    cluster.wipe(node);
    FaultOutcome::Applied
}

/// Kills a voter, wipes its data directory and restarts it at once, still listed as a voter:
/// with its peers reachable it must refuse to start; cut off from them (while it starts) it
/// starts, and the incarnation check must keep it out.
async fn wipe_in_place(cluster: &SimCluster, node: NodeId, peers_reachable: bool) -> FaultOutcome {
    if !every_node_a_reachable_voter(cluster).await {
        return FaultOutcome::Refused;
    }
    cluster.kill(node);
    cluster.wipe(node);
    if peers_reachable {
        cluster.restart(node);
    } else {
        let others = others(cluster, &[node]);
        cluster.partition(&[node], &others);
        cluster.restart(node);
        madsim::time::sleep(WIPED_START_CUT).await;
        cluster.heal();
    }
    FaultOutcome::Applied
}

/// How long a voter wiped in place is cut off while it starts: longer than its start-time
/// question to its peers may take (`node`'s probe timeout, 500 ms), so none answers it.
const WIPED_START_CUT: Duration = Duration::from_secs(1);
/// How many times the heal of a wipe in place asks for the node's removal (one election or
/// commit apart) before giving up.
const REMOVE_ATTEMPTS_MAX: usize = 20;
const REMOVE_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Whether every node is a reachable voter, as the leader sees it: only then can one voter be
/// lost to a wipe without costing the quorum that its removal needs.
async fn every_node_a_reachable_voter(cluster: &SimCluster) -> bool {
    let Some(leader) = cluster.leader().await else {
        return false;
    };
    let Ok(Ok(view)) = admin_client(cluster, leader)
        .cluster()
        .await
        .map(|answer| answer.ok())
    else {
        return false;
    };
    cluster.ids().iter().all(|id| {
        view.data
            .members
            .iter()
            .any(|m| m.id == *id && m.role == MemberRole::Voter && m.reachable)
    })
}

/// The promises of a wipe in place, checked before it is healed: the wiped voter did not start
/// as that voter when its peers could tell it so, and was sent no entry either way.
async fn check_wiped_voter_kept_out(cluster: &SimCluster, node: NodeId, peers_reachable: bool) {
    if peers_reachable && cluster.health(node).await.is_some() {
        cluster.note_violation(format!(
            "node {node}, a voter wiped in place, started although its peers list it as a voter"
        ));
    }
    if let Some(applied) = cluster.applied(node) {
        cluster.note_violation(format!(
            "node {node}, a voter wiped in place, applied entries up to {applied:?}: \
             a leader took it for the voter it replaced"
        ));
    }
}

/// The operator's way out for a voter wiped in place: remove it, wipe it, start it empty (the
/// run re-adds it at the end, as it does after a wipe-and-rejoin).
async fn remove_wiped_voter(cluster: &SimCluster, node: NodeId) {
    let body = MembersRequest {
        ids: [node].into(),
        keep_as_learners: false,
    };
    for _ in 0..REMOVE_ATTEMPTS_MAX {
        if remove_through_members(cluster, &others(cluster, &[node]), &body).await == Some(200) {
            break;
        }
        madsim::time::sleep(REMOVE_RETRY_INTERVAL).await;
    }
    cluster.kill(node);
    cluster.wipe(node);
    cluster.restart(node);
}

/// A client of node `id` with the cluster secret, bounded by [`ADMIN_CALL_TIMEOUT`].
pub(super) fn admin_client(cluster: &SimCluster, id: NodeId) -> Client {
    cluster.admin_client(id).with_timeout(ADMIN_CALL_TIMEOUT)
}

/// The status of an answer, if one came.
pub(super) fn status<T>(result: Result<Answer<T>, ClientError>) -> Option<u16> {
    result.ok().map(|answer| answer.status)
}

/// Removes through the first of `candidates` that is a member of the cluster: a node that was
/// wiped earlier (and not yet re-added) refuses at once with `NOT_A_MEMBER`. The status, if any
/// answer came.
async fn remove_through_members(
    cluster: &SimCluster,
    candidates: &[NodeId],
    body: &MembersRequest,
) -> Option<u16> {
    for &via in candidates {
        match admin_client(cluster, via).remove(body).await {
            Ok(answer) if answer.error_code() == Some(codes::NOT_A_MEMBER) => continue,
            other => return status(other),
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
            let node = cluster.client(*node).with_timeout(SYNC_CALL_TIMEOUT);
            let _ = node.sync_stop().await;
        }
        Fault::ClockSkew { node, .. } => faults::set_clock_skew(cluster.host(*node), 0),
        Fault::Demote { node } => {
            let body = MembersRequest {
                ids: [*node].into(),
                keep_as_learners: false,
            };
            let _ = admin_client(cluster, *node).promote(&body).await;
        }
        Fault::WipeAndRejoin { node } => {
            // The fault killed it (a refused one is not healed): start it empty. Re-adding
            // happens in `run::restore_membership`.
            cluster.restart(*node);
        }
        Fault::WipeInPlace {
            node,
            peers_reachable,
        } => {
            check_wiped_voter_kept_out(cluster, *node, *peers_reachable).await;
            remove_wiped_voter(cluster, *node).await;
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
