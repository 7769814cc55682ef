//! stockraft: a Raft-replicated inventory store. Online shops must never sell stock they do not
//! have, even while nodes crash and networks split.
//!
//! The write path, top to bottom (see ARCHITECTURE.md):
//! `api` (HTTP in, validation, forwarding to the leader) -> `app` (propose, read) ->
//! `raft` (openraft: log store, network, runtime) -> `raft::state_machine` -> `inventory::apply`
//! (pure) -> `storage` (sled, or the simulated disk).

pub mod api;
pub mod app;
pub mod backup;
// The linearizability checker serves the simulation and its own unit tests only.
#[cfg(any(test, madsim))]
pub mod checker;
pub mod cli;
pub mod client;
pub mod config;
pub mod identity;
pub mod inventory;
pub mod membership;
pub mod node;
pub mod raft;
#[cfg(not(madsim))]
pub mod server;
#[cfg(madsim)]
pub mod sim;
pub mod space;
pub mod storage;
pub mod telemetry;
pub mod transport;

/// A node's id in the cluster (`node_id` in the configuration, Raft's `NodeId`). Declared here,
/// below every module, because every layer names nodes: the wire, identities, Raft.
pub type NodeId = u64;
