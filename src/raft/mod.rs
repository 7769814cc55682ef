//! Consensus glue: the openraft type configuration and the pieces openraft needs from us.
//!
//! - [`TypeConfig`]: declared once (in `types`, which the parts below import without importing
//!   this file); every other module names Raft types through the aliases re-exported here.
//! - [`log_store`]: the Raft log and vote on a [`Disk`](crate::storage::Disk). A vote or an
//!   appended entry is flushed before openraft is told it is persisted: that is what makes an
//!   acknowledged write durable on a quorum. [`log_upgrade`] moves a format-1 log (kept in
//!   sled) into the WAL when a node starts.
//! - [`state_machine`]: openraft's state-machine store: applies committed entries through the
//!   pure [`inventory::apply`](crate::inventory::apply), one atomic batch per apply call.
//!   [`snapshot`] builds and installs its snapshots; [`idempotency_log`] keeps its idempotency
//!   entries (stored, found, forgotten at expiry or past the cap, upgraded from older formats).
//!   [`reservations`] keeps the reservations apply decides (by id, the due index the leader's
//!   expiry proposer reads, the retention queue, the held count) and the SKU index of records;
//!   [`pending_writes`] is what one apply call has written so far, which its later entries read.
//! - [`network`]: openraft's network traits over a [`Transport`](crate::transport::Transport),
//!   so the simulation swaps the wire without touching Raft.
//! - [`runtime`]: openraft's `AsyncRuntime` on `tokio`, which is madsim-tokio: real tokio in the
//!   product, the deterministic simulator under `--cfg madsim`.

pub mod events;
pub mod idempotency_log;
pub mod log_store;
pub mod log_upgrade;
pub mod network;
pub mod pending_writes;
pub mod reservations;
pub mod runtime;
pub mod snapshot;
pub mod state_machine;
mod types;
pub mod watch;

pub use types::{
    Applied, Entry, LogId, RaftMetrics, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, Vote,
};

pub type NodeId = crate::NodeId;
pub type Raft = openraft::Raft<TypeConfig, state_machine::StateMachineStore>;
