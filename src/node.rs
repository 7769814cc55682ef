//! Assembling one node from its parts, and founding the cluster exactly once.
//!
//! [`start`] wires a disk, a transport and a configuration into a running Raft node and its
//! [`App`]. The real server (`server`) and the simulation both call it, so they run the same
//! node. Sockets, signals and the process are not this module's business.
//!
//! ## Who initialises the cluster, and why it happens once
//! Only the initial voter with the **smallest id** in `cluster.toml` ever calls
//! `Raft::initialize`, and only when all of these hold:
//! 1. its own Raft state is empty (no vote, no log): a restarted node never re-initialises;
//! 2. every other initial voter answers `GET /raft/status` (with the secret) and reports an
//!    empty state too: a bootstrap node whose data directory was wiped finds initialised peers
//!    and does nothing, instead of founding a second cluster beside the live one.
//!
//! Every other node waits to be contacted by a leader. Re-running `up` on a live cluster thus
//! changes nothing, and two nodes can never both initialise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;

use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::raft::log_store::LogStore;
use crate::raft::network::{routes, NetworkFactory};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{NodeId, Raft};
use crate::storage::Disk;
use crate::transport::{Transport, WireRequest};

/// How often the bootstrap node re-checks its peers while waiting for them to come up.
const BOOTSTRAP_POLL: Duration = Duration::from_millis(200);
/// How long one peer status probe may take.
const BOOTSTRAP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("raft failed to start: {0}")]
    Raft(String),
}

/// Starts node `id` on `disk`, talking to peers through `transport`.
pub async fn start(
    id: NodeId,
    config: Arc<Config>,
    disk: Arc<dyn Disk>,
    transport: Arc<dyn Transport>,
) -> Result<Arc<App>, StartError> {
    let raft_config = config.openraft_config()?;
    let log_store = LogStore::new(disk.clone());
    let state_machine = StateMachineStore::new(disk);
    let network = NetworkFactory::new(transport.clone(), Arc::from(config.cluster.secret.as_str()));
    let raft = Raft::new(id, raft_config, network, log_store, state_machine.clone())
        .await
        .map_err(|fatal| StartError::Raft(fatal.to_string()))?;
    Ok(Arc::new(App::new(
        id,
        raft,
        state_machine,
        config,
        transport,
    )))
}

/// What [`bootstrap`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// This node initialised the cluster.
    Initialized,
    /// This node already had Raft state (a restart).
    AlreadyInitialized,
    /// Not the bootstrap node, or a peer was already initialised: wait to be contacted.
    NotOurs,
}

/// Runs the founding rule in the module docs. Loops until the peers answer; run it in a task.
pub async fn bootstrap(app: &App) -> Bootstrap {
    loop {
        match app.raft.is_initialized().await {
            Ok(true) => return Bootstrap::AlreadyInitialized,
            Ok(false) => {}
            Err(_) => return Bootstrap::NotOurs,
        }
        if app.id != app.config.bootstrap_node_id() {
            return Bootstrap::NotOurs;
        }
        match probe_peers(app).await {
            PeerState::SomeInitialized => {
                tracing::warn!("a peer is already initialised: this node's state was lost; waiting to be re-added");
                return Bootstrap::NotOurs;
            }
            PeerState::AllEmpty => {
                let members: BTreeMap<NodeId, BasicNode> = app
                    .config
                    .nodes
                    .iter()
                    .map(|n| {
                        (
                            n.id,
                            BasicNode {
                                addr: n.addr.clone(),
                            },
                        )
                    })
                    .collect();
                match app.raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!("initialised the cluster");
                        return Bootstrap::Initialized;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "initialise refused");
                        return Bootstrap::AlreadyInitialized;
                    }
                }
            }
            PeerState::NotAllUp => tokio::time::sleep(BOOTSTRAP_POLL).await,
        }
    }
}

enum PeerState {
    AllEmpty,
    SomeInitialized,
    NotAllUp,
}

async fn probe_peers(app: &App) -> PeerState {
    let mut all_up = true;
    for peer in app.config.nodes.iter().filter(|n| n.id != app.id) {
        let request = WireRequest::get(routes::STATUS).with_secret(&app.config.cluster.secret);
        let answer = app
            .transport
            .send(&peer.addr, request, BOOTSTRAP_PROBE_TIMEOUT)
            .await;
        let status: Option<serde_json::Value> = answer
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| serde_json::from_slice(&a.body).ok());
        match status.and_then(|s| s["initialized"].as_bool()) {
            Some(true) => return PeerState::SomeInitialized,
            Some(false) => {}
            None => all_up = false,
        }
    }
    if all_up {
        PeerState::AllEmpty
    } else {
        PeerState::NotAllUp
    }
}
