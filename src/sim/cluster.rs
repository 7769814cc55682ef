//! A simulated cluster: N nodes on their own simulated hosts, a client host, and the faults the
//! simulation injects (kill, restart, wipe, partitions).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use madsim::net::NetSim;
use madsim::rand::Rng;
use madsim::runtime::{Handle, NodeHandle};
use madsim::task::NodeId as HostId;

use super::batch_route;
use super::bugs;
use super::faults::SkewedClock;
use super::transport::{serve, SimTransport};
use crate::api;
use crate::client::wire::{Health, RaftRole};
use crate::client::Client;
use crate::config::{
    ApiConfig, ClusterConfig, Config, EventsConfig, NodeConfig, RaftConfig, StorageConfig,
};
use crate::inventory::{Event, EventFilter, Reservation};
use crate::node::{self, NodeStorage, Seams};
use crate::raft::events::{self, EventsError, FeedHead};
use crate::raft::{reservations, state_machine};
use crate::raft::{LogId, NodeId};
use crate::storage::fs::SimFs;
use crate::storage::{KeyValue, Resident, ResidentPolicy};
use crate::transport::{Transport, TransportError, TransportFuture, WireRequest, WireResponse};

/// The simulated nodes' WAL segment size (a 16 KiB preallocation step).
const SIM_WAL_SEGMENT_BYTES: u64 = 256 * 1024;

/// The port every simulated node serves HTTP on.
const PORT: u16 = 8080;
/// The simulated cluster's secret.
pub const SIM_SECRET: &str = "simulation-secret";
/// How long a health request may take: answered locally, with no Raft round, so silence this
/// long (well beyond a round trip on a degraded network, under 200 ms each way) means the node
/// is down or cut off.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The smallest latency a degraded network adds, in ms (madsim needs a non-empty range, so the
/// largest is at least one more).
const SEND_LATENCY_MS_MIN: u64 = 1;

/// Shape of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub nodes: u64,
    pub raft: RaftConfig,
    pub api: ApiConfig,
    /// The feed's retention (the product's unless a run shrinks it).
    pub events: EventsConfig,
}

/// Events per read of [`SimCluster::feed`]: the most a page of the feed holds.
const FEED_READ_PAGE_EVENTS: usize = 1_000;

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            raft: RaftConfig {
                heartbeat_interval_ms: 50,
                election_timeout_min_ms: 300,
                election_timeout_max_ms: 600,
                snapshot_every_entries: 200,
                snapshot_log_bytes: 256 << 10,
                install_snapshot_timeout_ms: 5_000,
                log_entries_kept_after_snapshot: 20,
            },
            api: ApiConfig {
                write_deadline_ms: 3_000,
                ..ApiConfig::default()
            },
            events: EventsConfig::default(),
        }
    }
}

/// Where simulated node `id` keeps its files (on its own `SimFs`).
fn data_dir(id: NodeId) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/data/node-{id}"))
}

pub fn address(id: NodeId) -> String {
    format!("10.0.0.{id}:{PORT}")
}

/// The resident state's journal and images in the simulation: far below the product's
/// (`ResidentPolicy::product`), so that at simulated load records are written every few
/// entries, files roll and images are taken, and power cuts fall before, during and between
/// them.
fn sim_state_policy() -> ResidentPolicy {
    ResidentPolicy::inline(4 << 10, 64 << 10, 32 << 10)
}

pub struct SimCluster {
    handle: Handle,
    pub config: Arc<Config>,
    /// What each node's state machine runs on: the resident state over the node's files (its
    /// memory lost at a power cut, then reloaded from what the files kept).
    state_disks: BTreeMap<NodeId, Arc<Resident>>,
    files: BTreeMap<NodeId, SimFs>,
    hosts: BTreeMap<NodeId, HostId>,
    client: NodeHandle,
    /// Broken promises seen while a fault was active (checked with the others at the end).
    fault_violations: std::sync::Mutex<Vec<String>>,
}

impl SimCluster {
    /// Creates and starts the nodes. Call inside a madsim runtime.
    pub fn start(options: SimOptions) -> Self {
        let handle = Handle::current();
        let config = Arc::new(Config {
            cluster: ClusterConfig {
                secret: SIM_SECRET.into(),
                ..ClusterConfig::default()
            },
            nodes: (1..=options.nodes)
                .map(|id| NodeConfig {
                    id,
                    addr: address(id),
                    ..NodeConfig::default()
                })
                .collect(),
            // Small segments: runs of seconds still roll and purge segments, and every sync
            // of the in-memory file system copies a segment's preallocated step, not 1 MiB.
            storage: StorageConfig {
                wal_segment_bytes: SIM_WAL_SEGMENT_BYTES,
                ..StorageConfig::default()
            },
            raft: options.raft,
            api: options.api,
            // The product's: expiry proposed every 250 ms, carts the workload sends name a TTL.
            reservations: Default::default(),
            tls: Default::default(),
            // No scheduled backups: a run's state lives on the simulated disk only.
            backup: Default::default(),
            // Not used: the simulation runs every node on madsim's one thread.
            runtime: Default::default(),
            // The product's retention unless the run shrinks it (`SimOptions::events`).
            events: options.events,
        });
        config
            .validate()
            .expect("simulation configuration is valid");
        let mut state_disks = BTreeMap::new();
        let mut files = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for id in 1..=options.nodes {
            let fs = SimFs::new();
            files.insert(id, fs.clone());
            let disk = Arc::new(
                Resident::open(
                    Arc::new(fs.clone()),
                    &data_dir(id).join("state"),
                    sim_state_policy(),
                )
                .expect("a fresh simulated disk opens"),
            );
            state_disks.insert(id, disk.clone());
            let node_config = config.clone();
            let host = handle
                .create_node()
                .name(format!("node-{id}"))
                .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)))
                .init(move || run_node(id, node_config.clone(), disk.clone(), fs.clone()))
                .build();
            hosts.insert(id, host.id());
        }
        let client = handle
            .create_node()
            .name("client")
            .ip(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)))
            .build();
        Self {
            handle,
            config,
            state_disks,
            files,
            hosts,
            client,
            fault_violations: std::sync::Mutex::default(),
        }
    }

    /// Notes a broken promise seen while a fault was active; the run reports it.
    pub fn note_violation(&self, violation: String) {
        self.lock_violations().push(violation);
    }

    /// The violations noted so far (and forgets them).
    pub fn take_violations(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock_violations())
    }

    fn lock_violations(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.fault_violations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.hosts.keys().copied().collect()
    }

    /// A typed client of node `id`, sending from the client host.
    pub fn client(&self, id: NodeId) -> Client {
        Client::new(Arc::new(ClientHost(self.client.clone())), address(id))
    }

    /// Like [`SimCluster::client`], with the cluster secret (admin routes).
    pub fn admin_client(&self, id: NodeId) -> Client {
        self.client(id).with_secret(SIM_SECRET)
    }

    /// Sends `request` to node `id` from the client host.
    pub async fn call(
        &self,
        id: NodeId,
        request: WireRequest,
        timeout: Duration,
    ) -> Result<WireResponse, TransportError> {
        let addr = address(id);
        self.client
            .spawn(async move { SimTransport.send(&addr, request, timeout).await })
            .await
            .expect("the client host is never killed")
    }

    /// Power cut: the node's tasks die and its unflushed writes are lost.
    pub fn kill(&self, id: NodeId) {
        self.handle.kill(self.hosts[&id]);
        self.power_cut(id);
    }

    /// What a power cut leaves of a node's storage: the state machine's flushed writes, and
    /// the files' synced bytes plus a seeded-random prefix of the unsynced ones (a torn write in
    /// the middle of a log record, which recovery must cut).
    fn power_cut(&self, id: NodeId) {
        self.files[&id].crash(|unsynced| madsim::rand::thread_rng().gen_range(0..=unsynced));
        self.state_disks[&id]
            .reload()
            .expect("the files a power cut left are readable");
    }

    /// Starts a killed node again from what its disk kept (kills it first if it runs).
    pub fn restart(&self, id: NodeId) {
        self.handle.kill(self.hosts[&id]);
        self.power_cut(id);
        self.handle.restart(self.hosts[&id]);
    }

    /// Erases a node's disk entirely (it must be killed; restart it to bring it back empty).
    pub fn wipe(&self, id: NodeId) {
        self.files[&id].wipe();
        self.state_disks[&id]
            .reload()
            .expect("an empty simulated disk opens");
    }

    /// Cuts traffic from `from` to `to` (one direction).
    pub fn clog(&self, from: NodeId, to: NodeId) {
        NetSim::current().clog_link(self.hosts[&from], self.hosts[&to]);
    }

    /// Cuts both directions between every node of `side_a` and every node of `side_b`.
    pub fn partition(&self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.clog(a, b);
                self.clog(b, a);
            }
        }
    }

    /// Cuts the client off from node `id` (both directions).
    pub fn isolate_from_client(&self, id: NodeId) {
        let net = NetSim::current();
        net.clog_link(self.client.id(), self.hosts[&id]);
        net.clog_link(self.hosts[&id], self.client.id());
    }

    /// Removes every network fault.
    pub fn heal(&self) {
        let net = NetSim::current();
        let all: Vec<HostId> = self
            .hosts
            .values()
            .copied()
            .chain([self.client.id()])
            .collect();
        for &a in &all {
            for &b in &all {
                net.unclog_link(a, b);
            }
        }
    }

    /// The simulated host running node `id`.
    pub fn host(&self, id: NodeId) -> HostId {
        self.hosts[&id]
    }

    /// Loses `loss_rate` of all messages and delays the rest by 1..`latency_ms_max` ms.
    pub fn degrade_network(&self, loss_rate: f64, latency_ms_max: u64) {
        NetSim::current().update_config(|config| {
            config.packet_loss_rate = loss_rate;
            config.send_latency = Duration::from_millis(SEND_LATENCY_MS_MIN)
                ..Duration::from_millis(latency_ms_max.max(SEND_LATENCY_MS_MIN + 1));
        });
    }

    /// Back to madsim's default network (no loss, 1-10 ms latency).
    pub fn restore_network(&self) {
        NetSim::current().update_config(|config| *config = madsim::net::Config::default());
    }

    /// The leader most nodes report, asked over HTTP from the client host.
    pub async fn leader(&self) -> Option<NodeId> {
        let mut votes: BTreeMap<NodeId, usize> = BTreeMap::new();
        for id in self.ids() {
            if let Some(leader) = self.health(id).await.and_then(|h| h.raft.leader_id) {
                *votes.entry(leader).or_default() += 1;
            }
        }
        let majority = self.ids().len() / 2 + 1;
        votes
            .into_iter()
            .find(|(_, count)| *count >= majority)
            .map(|(id, _)| id)
    }

    /// The node that says it leads, with the highest term (a deposed leader may not know yet).
    /// Unlike [`SimCluster::leader`] this needs no majority of reports, so it finds the leader
    /// while other nodes are outside the membership (wiped, not yet re-added).
    pub async fn claimed_leader(&self) -> Option<NodeId> {
        let mut best: Option<(u64, NodeId)> = None;
        for id in self.ids() {
            let Some(health) = self.health(id).await else {
                continue;
            };
            if health.raft.role == RaftRole::Leader {
                let term = health.raft.term;
                if best.is_none_or(|(best_term, _)| term > best_term) {
                    best = Some((term, id));
                }
            }
        }
        best.map(|(_, id)| id)
    }

    /// `GET /api/health` of node `id`, or None if it does not answer.
    pub async fn health(&self, id: NodeId) -> Option<Health> {
        let client = self.client(id).with_timeout(HEALTH_TIMEOUT);
        Some(client.health().await.ok()?.ok().ok()?.data)
    }

    /// Node `id`'s whole state machine, key by key.
    pub fn state_pairs(&self, id: NodeId) -> Vec<KeyValue> {
        state_machine::read_state_pairs(&*self.state_disks[&id])
            .expect("the simulated disk does not fail")
    }

    /// Node `id`'s copy of a record (as its disk shows it).
    pub fn record(
        &self,
        id: NodeId,
        key: &crate::inventory::RecordKey,
    ) -> Option<crate::inventory::Record> {
        state_machine::read_record(&*self.state_disks[&id], key)
            .expect("the simulated disk does not fail")
    }

    /// Every reservation node `id` remembers, held or ended (as its disk shows it).
    pub fn reservations(&self, id: NodeId) -> Vec<Reservation> {
        reservations::remembered(&*self.state_disks[&id])
            .expect("the simulated disk does not fail and its reservations decode")
    }

    /// Node `id`'s event feed: its head and every event it keeps, oldest first (as its disk
    /// shows it), read a page at a time as `GET /api/events` reads it. A store without a feed
    /// (`EventsError::NotStarted`) shows none.
    pub fn feed(&self, id: NodeId) -> (FeedHead, Vec<Event>) {
        let disk = &*self.state_disks[&id];
        let head = events::head(disk).expect("the simulated disk does not fail");
        let mut kept = Vec::new();
        let mut after = head.oldest_seq.saturating_sub(1);
        loop {
            let all = EventFilter::default();
            let page = match events::read_page(disk, after, FEED_READ_PAGE_EVENTS, &all) {
                Ok(page) => page,
                Err(EventsError::NotStarted) => return (head, kept),
                Err(error) => panic!("node {id}'s feed after {after}: {error}"),
            };
            kept.extend(page.events);
            match page.next {
                Some(next) if next > after => after = next,
                _ => return (head, kept),
            }
        }
    }

    /// The last log id node `id` has applied (as its disk shows it).
    pub fn applied(&self, id: NodeId) -> Option<LogId> {
        state_machine::read_applied(&*self.state_disks[&id])
            .expect("the simulated disk does not fail")
    }
}

/// How long a node that refused to start (a voter on an empty disk) waits before trying again,
/// as a supervisor restarting it would.
const RESTART_AFTER_REFUSAL: Duration = Duration::from_secs(1);

/// One simulated node's life: start, serve, found the cluster if it is the bootstrap node, and
/// never return (a returning init future would make madsim treat the node as exited). A node
/// that refuses to start because its empty disk belongs to a voter tries again every
/// [`RESTART_AFTER_REFUSAL`], until the fault's heal removed it from the membership.
async fn run_node(id: NodeId, config: Arc<Config>, disk: Arc<Resident>, fs: SimFs) {
    let app = loop {
        let seams = Seams {
            clock: Arc::new(SkewedClock),
            apply: bugs::apply_fn(),
            ..Seams::default()
        };
        let storage = NodeStorage {
            disk: disk.clone(),
            fs: Arc::new(fs.clone()),
            dir: data_dir(id),
        };
        match node::start(id, config.clone(), storage, Arc::new(SimTransport), seams).await {
            Ok(app) => break app,
            Err(node::StartError::StillAVoter { .. }) => {
                madsim::time::sleep(RESTART_AFTER_REFUSAL).await;
            }
            Err(error) => panic!("simulated node {id} did not start: {error}"),
        }
    };
    let addr: SocketAddr = address(id).parse().expect("a valid address");
    // The product's routes, and the simulation's own route for raw commands (`batch_route`).
    let routes = api::router(app.clone()).merge(batch_route::route(app.clone()));
    let router = bugs::wrap_router(routes, app.clone());
    let _endpoint = serve(addr, router)
        .await
        .expect("binding the node's address");
    node::bootstrap(&app).await;
    std::future::pending::<()>().await;
}

/// The simulation's client side: requests leave from the client host (so partitions and losses
/// between the client and a node apply to them), never from whichever node happens to run.
struct ClientHost(NodeHandle);

impl Transport for ClientHost {
    fn send(&self, addr: &str, request: WireRequest, timeout: Duration) -> TransportFuture {
        let addr = addr.to_owned();
        let host = self.0.clone();
        Box::pin(async move {
            host.spawn(async move { SimTransport.send(&addr, request, timeout).await })
                .await
                .expect("the client host is never killed")
        })
    }
}
