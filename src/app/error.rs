//! Why an application call did not produce an answer: the app layer's errors, in a file of
//! their own so that the parts of the app (`forward` too) share them without importing the
//! module that uses those parts.

use crate::space::NoSpaceReason;
use crate::storage::StorageError;
use crate::NodeId;

/// Why a proposal did not produce an answer. Serialisable: a leader answers a follower's
/// forwarded batch with it (`forward`).
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// This node is not the leader; nothing was proposed. Safe to retry elsewhere.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The entry was proposed but its fate is unknown (leader changed before it committed).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Raft is shutting down or broken on this node.
    #[error("raft unavailable: {0}")]
    Unavailable(String),
    /// This node's disk-space alarm is raised; nothing was proposed.
    #[error(
        "node {node} is short of disk space: {reason}; writes are refused until space is freed"
    )]
    NoSpace { node: NodeId, reason: NoSpaceReason },
    /// `api.max_in_flight_proposals` commands are already in flight here; nothing was proposed.
    #[error("node {node} has {max} proposals in flight, its limit; retry shortly")]
    Overloaded { node: NodeId, max: usize },
}

/// Why a linearizable read could not be served here.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("raft unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why an on-demand snapshot (and purge) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot not completed: {0}")]
    NotCompleted(String),
    /// A backup could not be taken (no leader, not caught up, no snapshot); retry.
    #[error("backup not taken: {0}")]
    BackupNotTaken(String),
}
