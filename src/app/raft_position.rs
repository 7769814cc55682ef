//! Where this node's Raft stands, read once from openraft's metrics.
//!
//! Every answer that carries a Raft position is made from a [`RaftPosition`]: `/api/health`
//! and `/api/metrics` (`RaftStatus`), `/api/health/readiness`, `/api/cluster` and every
//! membership change (`ClusterView`), `/api/sync/status` and `POST /api/sync`, the Prometheus
//! gauges, and the snapshot policy. So each figure has one name in Rust
//! (`committed_index`: the last entry this node knows a quorum holds), however the seed-era
//! JSON spells it (`committedIndex` in health, metrics and the sync barrier, `commitIndex` in
//! the cluster and sync-status views; `client::wire` keeps both spellings).

use crate::client::wire::{RaftRole, RaftStatus};
use crate::raft::{LogId, NodeId, RaftMetrics};

/// This node's Raft role, term, leader and log positions at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftPosition {
    pub role: RaftRole,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    /// The last entry this node knows to be committed by a quorum.
    pub committed_index: Option<u64>,
    /// The last entry applied to this node's state machine.
    pub applied_index: Option<u64>,
    /// The last entry covered by this node's newest snapshot.
    pub snapshot_index: Option<u64>,
    /// The last entry purged from this node's log.
    pub purged_index: Option<u64>,
}

impl RaftPosition {
    pub fn of(metrics: &RaftMetrics) -> Self {
        let index = |log_id: Option<&LogId>| log_id.map(|id| id.index);
        Self {
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

    /// Entries applied since the newest snapshot (all of them before the first).
    pub fn applied_since_snapshot(&self) -> u64 {
        let applied = self.applied_index.unwrap_or(0);
        applied.saturating_sub(self.snapshot_index.unwrap_or(0))
    }

    /// As `/api/health` and `/api/metrics` report it, for node `node_id`.
    pub fn status(&self, node_id: NodeId) -> RaftStatus {
        RaftStatus {
            node_id,
            role: self.role,
            leader_id: self.leader_id,
            term: self.term,
            last_log_index: self.last_log_index,
            committed_index: self.committed_index,
            applied_index: self.applied_index,
            snapshot_index: self.snapshot_index,
            purged_index: self.purged_index,
        }
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
