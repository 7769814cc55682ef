//! Where this node's Raft stands, read once from openraft's metrics.
//!
//! Every answer that carries a Raft position is made from one [`RaftStatus`] read by
//! [`raft_status_of`]: `/api/health` and `/api/metrics` (whole), `/api/health/readiness`,
//! `/api/cluster` and every membership change (`ClusterView`), `/api/sync/status` and
//! `POST /api/sync`, the Prometheus gauges, and the snapshot policy. So each figure has one
//! name in Rust (`committed_index`: the last entry this node knows a quorum holds), however
//! the seed-era JSON spells it (`committedIndex` in health, metrics and the sync barrier,
//! `commitIndex` in the cluster and sync-status views; `client::wire` keeps both spellings).

use crate::client::wire::{RaftRole, RaftStatus};
use crate::raft::{LogId, RaftMetrics};

/// This node's Raft role, term, leader and log positions, as `metrics` says now.
pub fn raft_status_of(metrics: &RaftMetrics) -> RaftStatus {
    let index = |log_id: Option<&LogId>| log_id.map(|id| id.index);
    RaftStatus {
        node_id: metrics.id,
        role: role(metrics.state),
        leader_id: metrics.current_leader,
        term: metrics.current_term,
        last_log_index: metrics.last_log_index,
        committed_index: index(metrics.cluster_committed.as_ref()),
        applied_index: index(metrics.last_applied.as_ref()),
        snapshot_index: index(metrics.snapshot.as_ref()),
        purged_index: index(metrics.purged.as_ref()),
    }
}

fn role(state: openraft::ServerState) -> RaftRole {
    match state {
        openraft::ServerState::Leader => RaftRole::Leader,
        openraft::ServerState::Follower => RaftRole::Follower,
        openraft::ServerState::Candidate => RaftRole::Candidate,
        openraft::ServerState::Learner => RaftRole::Learner,
        openraft::ServerState::Shutdown => RaftRole::Shutdown,
    }
}
