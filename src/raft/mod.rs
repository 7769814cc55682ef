//! Consensus glue: the openraft type configuration and the pieces openraft needs from us.
//!
//! - [`TypeConfig`]: declared once; every other module names Raft types through the aliases below.
//! - [`log_store`]: the Raft log and vote on a [`Disk`](crate::storage::Disk). A vote or an
//!   appended entry is flushed before openraft is told it is persisted: that is what makes an
//!   acknowledged write durable on a quorum.
//! - [`state_machine`]: applies committed entries through the pure
//!   [`inventory::apply`](crate::inventory::apply), one atomic batch per apply call, and builds and
//!   installs snapshots.
//! - [`network`]: openraft's network traits over a [`Transport`](crate::transport::Transport),
//!   so the simulation swaps the wire without touching Raft.
//! - [`runtime`]: openraft's `AsyncRuntime` on `tokio`, which is madsim-tokio: real tokio in the
//!   product, the deterministic simulator under `--cfg madsim`.

pub mod key_index;
pub mod log_store;
pub mod network;
pub mod runtime;
pub mod snapshot;
pub mod state_machine;
pub mod watch;

use crate::inventory::{Request, Response};

/// What the state machine answers for one log entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Applied {
    /// A blank (leader no-op) or membership entry: nothing for a client.
    Nothing,
    /// The answer to an inventory [`Request`].
    Command(Response),
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.command.keys();
        match keys.as_slice() {
            [key] => write!(f, "{:?} on {key}", self.command.operation()),
            more => write!(
                f,
                "{:?} of {} records",
                self.command.operation(),
                more.len()
            ),
        }
    }
}

openraft::declare_raft_types!(
    /// stockraft's Raft types: inventory requests in the log, node ids are `u64`, nodes are
    /// addressed by their HTTP address.
    pub TypeConfig:
        D = Request,
        R = Applied,
        NodeId = u64,
        Node = openraft::BasicNode,
        AsyncRuntime = runtime::StockraftRuntime,
);

pub type NodeId = crate::NodeId;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot =
    openraft::alias::SnapshotOf<TypeConfig, crate::storage::snapshots::SnapshotFile>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
