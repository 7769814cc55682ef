//! Assembling one node from its parts, and how it becomes a member: founding the cluster
//! exactly once, or joining a running one.
//!
//! [`start`] wires a disk, a transport, a configuration and the [`Seams`] into a running Raft
//! node and its [`App`]. The real server (`server`) and the simulation both call it, so they run
//! the same node. Sockets, signals and the process are not this module's business.
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
//!
//! The founder also draws the cluster's id (`identity`) just before it initialises; every other
//! node adopts it from the first leader RPC it accepts.
//!
//! ## Joining a running cluster
//! A node started with `--join <member>` ([`join_cluster`]) asks that member to add it as a
//! learner, retrying until it is added; the leader then brings it up to date. A node that
//! already holds Raft state (a restart after joining) does not ask again.
//!
//! ## A voter on an empty disk refuses to start
//! A node whose Raft state is empty (no vote, no log) may be a voter whose data directory was
//! wiped or lost: it has forgotten its vote and log, and rejoining as that voter could make it
//! vote twice in a term or count towards a quorum for entries it no longer holds. So before
//! Raft starts, such a node asks its configured peers (`GET /raft/status`) for their
//! membership; if the newest membership among the answers lists it as a voter, [`start`] fails
//! with [`StartError::StillAVoter`], whose message names the way out (remove it, start it
//! empty with `--join`, promote it). The cluster keeps serving without it. Starting a new
//! cluster (every node empty, no peer initialised), joining as a new learner, and a node added
//! by hand as a learner before it starts are not refused. When no peer answers (the whole
//! cluster is down), the node starts; the incarnation check (`identity`) then keeps it out.

pub mod peer_incarnations;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft_rt::WatchReceiver;

use crate::app::expiry;
use crate::app::periodic_snapshots::snapshot_every;
use crate::app::{raft_status_of, App, AppStorage, Clock, SystemClock};
use crate::client::wire::AddLearnerRequest;
use crate::client::Client;
use crate::config::{Config, ConfigError};
use crate::identity::{file as identity_file, Identity, IdentityError, IdentityState};
use crate::inventory;
use crate::raft::events::FeedRetention;
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::state_machine::{ApplyFn, StateMachineStore};
use crate::raft::{idempotency_log, log_upgrade, reservations};
use crate::raft::{NodeId, Raft};
use crate::space::{Limits, SpaceGuard, SpaceSource};
use crate::storage::fs::Fs;
use crate::storage::snapshots::SnapshotDir;
use crate::storage::wal::{Wal, WalOptions};
use crate::storage::Disk;
use crate::telemetry::Telemetry;
use crate::transport::Transport;

/// How often the bootstrap node re-checks its peers while waiting for them to come up.
const BOOTSTRAP_POLL: Duration = Duration::from_millis(200);
/// How long one peer status probe may take.
const BOOTSTRAP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often a joining node asks again to be added.
const JOIN_RETRY: Duration = Duration::from_millis(500);
/// How long one join request may take (the leader answers once the learner is added).
const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a node's behaviour can be swapped from outside: the clock that stamps proposals, the
/// state transition, and where disk space is measured. [`Seams::default`] is the system clock,
/// [`inventory::apply`] and no space source; the server adds the data directory as the space
/// source; the simulation injects a skewed clock, and a wrapper of apply when it plants a bug.
/// Nothing else in the core knows a simulation exists.
#[derive(Clone)]
pub struct Seams {
    pub clock: Arc<dyn Clock>,
    pub apply: ApplyFn,
    /// What the disk-space alarm measures (`space`); None: nothing (no real disk), the alarm
    /// never rises.
    pub space: Option<Arc<dyn SpaceSource>>,
}

impl Default for Seams {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            apply: inventory::apply,
            space: None,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("raft failed to start: {0}")]
    Raft(String),
    #[error("cannot open the node's storage: {0}")]
    Storage(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The data directory holds no Raft state but the cluster still lists this node as a voter.
    #[error(
        "node {id}'s data directory holds no Raft state, but the cluster still lists node {id} \
         as a voter (node {peer} answered): a voter restarted on an empty disk has forgotten its \
         vote and its log and must not rejoin as that voter; the cluster keeps serving without \
         it. Way out: `stockraft admin remove --id {id}`, then start this node again, empty, \
         with `--join <member address>`, then `stockraft admin promote --id {id}` once it has \
         caught up"
    )]
    StillAVoter { id: NodeId, peer: NodeId },
}

/// Where a node keeps its data: the state machine on a key-value [`Disk`], and the files (the
/// Raft log under `wal/`, snapshots under `snapshots/`) in `dir` on `fs`.
pub struct NodeStorage {
    pub disk: Arc<dyn Disk>,
    pub fs: Arc<dyn Fs>,
    pub dir: PathBuf,
}

impl NodeStorage {
    /// The Raft log's directory.
    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }
}

/// Starts node `id` on `storage`, talking to peers through `transport`.
pub async fn start(
    id: NodeId,
    config: Arc<Config>,
    storage: NodeStorage,
    transport: Arc<dyn Transport>,
    seams: Seams,
) -> Result<Arc<App>, StartError> {
    let raft_config = config.openraft_config()?;
    let telemetry = Arc::new(Telemetry::new());
    let wal_options = WalOptions {
        segment_bytes_max: config.storage.wal_segment_bytes,
        telemetry: Some(telemetry.clone()),
    };
    let storage_error = |error: std::io::Error| StartError::Storage(error.to_string());
    log_upgrade::upgrade(
        &*storage.disk,
        storage.fs.clone(),
        &storage.wal_dir(),
        wal_options.clone(),
    )
    .await
    .map_err(storage_error)?;
    idempotency_log::upgrade_key_layout(&*storage.disk, idempotency_log::KEYS_PER_CHUNK)
        .await
        .map_err(|error| StartError::Storage(error.to_string()))?;
    reservations::upgrade_layout(&*storage.disk)
        .await
        .map_err(|error| StartError::Storage(error.to_string()))?;
    // Records created before the SKU index get their entries (once: a marker says it is built).
    reservations::build_sku_index(&*storage.disk)
        .map_err(|error| StartError::Storage(error.to_string()))?;
    let wal =
        Wal::open(storage.fs.clone(), &storage.wal_dir(), wal_options).map_err(storage_error)?;
    let storage_fs = storage.fs.clone();
    let identity = Arc::new(open_identity(id, &config, &storage, &wal, &transport).await?);
    let log_store = LogStore::new(wal.clone());
    let snapshots = SnapshotDir::open(storage.fs.clone(), &storage.dir.join("snapshots"))
        .map_err(storage_error)?;
    let feed_retention = FeedRetention {
        kept_max: config.events.kept_max,
        retention_ms: config.events.retention_ms(),
    };
    let state_machine = StateMachineStore::with_apply(storage.disk, snapshots, seams.apply)
        .with_telemetry(telemetry.clone())
        .with_feed_retention(feed_retention);
    let secret = Arc::from(config.cluster.secret.as_str());
    let network = NetworkFactory::new(id, transport.clone(), secret, identity.clone())
        .with_telemetry(telemetry.clone());
    let raft = Raft::new(id, raft_config, network, log_store, state_machine.clone())
        .await
        .map_err(|fatal| StartError::Raft(fatal.to_string()))?;
    start_background_tasks(&config, &raft, &identity, &transport, &wal, &state_machine);
    let limits = Limits::from_config(&config.storage);
    let space = match seams.space {
        Some(source) => SpaceGuard::new(source, limits),
        None => SpaceGuard::unmeasured(limits),
    };
    let storage = AppStorage {
        state: state_machine,
        wal,
        space: Arc::new(space),
        telemetry,
        identity,
    };
    let expiry_period = Duration::from_millis(config.reservations.expiry_interval_ms);
    let app = Arc::new(App::new(id, raft, storage, config, transport, seams.clock));
    // Scheduled backups (`[backup]`, off by default); like expiry, it ends when Raft stops.
    tokio::spawn(crate::app::backups::write_on_schedule(
        Arc::downgrade(&app),
        storage_fs,
        app.config().backup.clone(),
    ));
    // Like the background tasks above, it ends when Raft stops (or the app is dropped).
    tokio::spawn(expiry::propose_expiries(
        Arc::downgrade(&app),
        expiry_period,
    ));
    Ok(app)
}

/// The node's own background tasks, which end when Raft stops: learning the peers'
/// incarnations ([`peer_incarnations`]) and the snapshot policy ([`SnapshotPolicy`]). The
/// process's own (the disk-space measurement, the watchdogs) are the server's.
fn start_background_tasks(
    config: &Config,
    raft: &Raft,
    identity: &Arc<Identity>,
    transport: &Arc<dyn Transport>,
    wal: &Arc<Wal>,
    state_machine: &StateMachineStore,
) {
    tokio::spawn(peer_incarnations::keep_peers(
        identity.clone(),
        raft.clone(),
        transport.clone(),
        Arc::from(config.cluster.secret.as_str()),
    ));
    let snapshot_policy = SnapshotPolicyCheck {
        raft: raft.clone(),
        wal: wal.clone(),
        snapshots: state_machine.snapshot_dir().clone(),
        policy: SnapshotPolicy::from_config(&config.raft),
    };
    tokio::spawn(snapshot_policy.run());
}

/// Loads this node's identity, or creates one (a fresh incarnation) for a directory that has
/// none. A node without Raft state first makes sure it is not a wiped voter (module docs).
async fn open_identity(
    id: NodeId,
    config: &Config,
    storage: &NodeStorage,
    wal: &Wal,
    transport: &Arc<dyn Transport>,
) -> Result<Identity, StartError> {
    let last_entry = wal
        .last_entry()
        .map_err(|error| StartError::Storage(error.to_string()))?;
    let raft_state_empty = wal.vote().is_none() && last_entry.is_none() && wal.purged().is_none();
    if raft_state_empty {
        refuse_if_still_a_voter(id, config, transport).await?;
    }
    let (fs, dir) = (storage.fs.clone(), storage.dir.clone());
    let state = match identity_file::load(&*fs, &dir)? {
        Some(state) => state,
        None => {
            let state = IdentityState::fresh();
            identity_file::store(fs.clone(), dir.clone(), state.clone()).await?;
            if raft_state_empty {
                tracing::info!(incarnation = %state.incarnation, "a new data directory: drew this node's incarnation");
            } else {
                tracing::warn!(incarnation = %state.incarnation, "this data directory predates node identities: drew an incarnation; the cluster keeps no cluster id");
            }
            state
        }
    };
    Ok(Identity::new(id, fs, dir, state))
}

/// Asks the configured peers for their membership; fails if the newest one lists `id` as a
/// voter. Peers that do not answer (down, or none up yet) are skipped.
async fn refuse_if_still_a_voter(
    id: NodeId,
    config: &Config,
    transport: &Arc<dyn Transport>,
) -> Result<(), StartError> {
    let client = Client::new(transport.clone(), "")
        .with_secret(&config.cluster.secret)
        .with_timeout(BOOTSTRAP_PROBE_TIMEOUT);
    let asks = config.nodes.iter().filter(|n| n.id != id).map(|peer| {
        let client = client.to_node(&peer.addr);
        async move { client.peer_status().await }
    });
    let answers = futures::future::join_all(asks).await;
    let newest = answers
        .into_iter()
        .filter_map(|answer| answer.ok()?.ok().ok())
        .filter(|status| status.initialized && status.membership_index.is_some())
        .max_by_key(|status| status.membership_index);
    match newest {
        Some(status) if status.voters.contains(&id) => {
            let refused = StartError::StillAVoter {
                id,
                peer: status.id,
            };
            tracing::error!("refusing to start: {refused}");
            Err(refused)
        }
        _ => Ok(()),
    }
}

/// How often the snapshot policy is checked.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// When a node builds a snapshot (openraft's own policy is off: `Config::openraft_config`).
///
/// Due after `every_entries` applied entries or `log_bytes` of log files since the last one,
/// whichever comes first, **but** a state larger than a quarter of `log_bytes` is snapshotted
/// only once the log is at least as large as the newest snapshot. Why: a snapshot rewrites the
/// whole state, and at a million idempotency keys (161 MB) one every 100,000 entries (~25 MB of
/// log) kept each node building snapshots a sixth of the time, about a quarter of a loaded
/// 2-core machine (`perf`, `stockraft_snapshot_duration_seconds`: ~6.5 s per build). Now a
/// snapshot never writes more than the log it lets go, and the log stays under
/// `max(log_bytes, newest snapshot)` plus a segment: disk use is still O(live state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub every_entries: u64,
    pub log_bytes: u64,
}

impl SnapshotPolicy {
    pub fn from_config(raft: &crate::config::RaftConfig) -> Self {
        Self {
            every_entries: raft.snapshot_every_entries,
            log_bytes: raft.snapshot_log_bytes,
        }
    }

    /// Whether to build a snapshot now, given the entries applied since the last one, the
    /// bytes of log files and the size of the newest snapshot (0 if none).
    pub fn due(&self, entries_since: u64, log_bytes: u64, snapshot_bytes: u64) -> bool {
        if entries_since == 0 {
            return false;
        }
        let due = entries_since >= self.every_entries || log_bytes > self.log_bytes;
        let small_state = snapshot_bytes <= self.log_bytes / 4;
        due && (small_state || log_bytes >= snapshot_bytes)
    }
}

/// What [`SnapshotPolicy`] weighs, read from this node's Raft, log and snapshot directory.
struct SnapshotPolicyCheck {
    raft: Raft,
    wal: Arc<Wal>,
    snapshots: SnapshotDir,
    policy: SnapshotPolicy,
}

impl SnapshotPolicyCheck {
    /// Applies [`SnapshotPolicy`] once a second (`app::periodic_snapshots`); the purge that
    /// follows a snapshot deletes the log segments it covers. Ends when Raft stops.
    async fn run(self) {
        let raft = self.raft.clone();
        let check = Arc::new(self);
        snapshot_every(raft, SNAPSHOT_CHECK_INTERVAL, move || {
            let check = check.clone();
            async move { check.due().await }
        })
        .await
    }

    async fn due(&self) -> bool {
        let status = raft_status_of(&self.raft.metrics().borrow_watched());
        let entries_since =
            (status.applied_index.unwrap_or(0)).saturating_sub(status.snapshot_index.unwrap_or(0));
        let log_bytes = self.wal.bytes_on_disk();
        // Not due even as a small state: no need to look at the snapshot directory.
        if !self.policy.due(entries_since, log_bytes, 0) {
            return false;
        }
        // An unreadable snapshot directory counts as no snapshot: the policy then errs on
        // the side of snapshotting (the build reports the error).
        let dir = self.snapshots.clone();
        let newest = crate::storage::fs::blocking(move || dir.latest()).await;
        let snapshot_bytes = match newest {
            Ok(newest) => newest.map_or(0, |file| file.size()),
            Err(_) => 0,
        };
        self.policy.due(entries_since, log_bytes, snapshot_bytes)
    }
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
        match app.raft().is_initialized().await {
            Ok(true) => return Bootstrap::AlreadyInitialized,
            Ok(false) => {}
            Err(_) => return Bootstrap::NotOurs,
        }
        if app.id() != app.config().bootstrap_node_id() {
            return Bootstrap::NotOurs;
        }
        match probe_peers(app).await {
            PeerState::SomeInitialized => {
                tracing::warn!("a peer is already initialised: this node's state was lost; waiting to be re-added");
                return Bootstrap::NotOurs;
            }
            PeerState::AllEmpty => {
                let cluster = match app.identity().found_cluster().await {
                    Ok(cluster) => cluster,
                    Err(error) => {
                        tracing::error!(%error, "cannot record the new cluster's id: not founding it");
                        return Bootstrap::NotOurs;
                    }
                };
                let members: BTreeMap<NodeId, BasicNode> = app
                    .config()
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
                match app.raft().initialize(members).await {
                    Ok(()) => {
                        tracing::info!(%cluster, "initialised the cluster");
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
    let client = Client::new(app.transport().clone(), "")
        .with_secret(&app.config().cluster.secret)
        .with_timeout(BOOTSTRAP_PROBE_TIMEOUT);
    for peer in app.config().nodes.iter().filter(|n| n.id != app.id()) {
        let status = client.to_node(&peer.addr).peer_status().await;
        match status.ok().and_then(|answer| answer.ok().ok()) {
            Some(status) if status.initialized => return PeerState::SomeInitialized,
            Some(_) => {}
            None => all_up = false,
        }
    }
    if all_up {
        PeerState::AllEmpty
    } else {
        PeerState::NotAllUp
    }
}

/// Asks `member` (any node) to add this node, reachable at `own_addr`, as a learner, until it
/// succeeds. A node that already holds Raft state (a restart after joining) does not ask again.
pub async fn join_cluster(app: &App, member: &str, own_addr: &str) {
    if app.raft().is_initialized().await.unwrap_or(false) {
        return;
    }
    let client = Client::new(app.transport().clone(), member)
        .with_secret(&app.config().cluster.secret)
        .with_timeout(JOIN_REQUEST_TIMEOUT);
    let request = AddLearnerRequest {
        id: app.id(),
        addr: own_addr.to_owned(),
        wait: false,
    };
    loop {
        match client.add_learner(&request).await.map(|answer| answer.ok()) {
            Ok(Ok(_)) => {
                tracing::info!(member, "added as a learner; catching up");
                return;
            }
            Ok(Err(refused)) => tracing::warn!(member, %refused, "join refused; retrying"),
            Err(error) => tracing::warn!(member, %error, "join request failed; retrying"),
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_small_state_is_snapshotted_by_entries_or_log_bytes_as_configured() {
        let policy = SnapshotPolicy {
            every_entries: 100_000,
            log_bytes: 64 * MIB,
        };
        assert!(
            !policy.due(0, 100 * MIB, 0),
            "nothing applied since the last one"
        );
        assert!(!policy.due(99_999, 10 * MIB, MIB));
        assert!(policy.due(100_000, 10 * MIB, MIB));
        assert!(
            policy.due(10, 65 * MIB, MIB),
            "large entries reach the byte limit first"
        );
        assert!(
            policy.due(100_000, MIB, 16 * MIB),
            "a quarter of log_bytes is still small"
        );
    }

    #[test]
    fn a_large_state_waits_until_the_log_is_as_large_as_its_snapshot() {
        let policy = SnapshotPolicy {
            every_entries: 100_000,
            log_bytes: 64 * MIB,
        };
        let snapshot = 161 * MIB;
        assert!(
            !policy.due(100_000, 25 * MIB, snapshot),
            "due by entries, not worth it"
        );
        assert!(
            !policy.due(400_000, 100 * MIB, snapshot),
            "past log_bytes, not worth it"
        );
        assert!(policy.due(640_000, 161 * MIB, snapshot));
        // A state that shrank (keys expired) snapshots again as soon as the log covers it.
        assert!(policy.due(100_000, 25 * MIB, 20 * MIB));
    }
}
