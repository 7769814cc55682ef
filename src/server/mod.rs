//! The process edge: open the disk, bind the listeners, serve until SIGTERM/SIGINT, shut down
//! in order (a leader hands leadership over first, then stop accepting, finish in-flight
//! requests, stop Raft, flush the state's journal).
//!
//! The hand-over (`membership::hand_over`) runs while the node still accepts: requests that
//! arrive meanwhile are forwarded to the new leader as on any follower, so a planned restart
//! of the leader costs clients one election's pause instead of an election timeout. It is
//! bounded by `membership::HAND_OVER_WAIT`; a follower skips it.
//!
//! A node has one listener, or two when `client_addr` is configured: the peer listener (`addr`:
//! Raft, forwarded requests, admin; mutual TLS with `[tls]`) and the client listener (HTTPS
//! with `[tls]`). Each has its own connection limit and header timeout ([`listener`]), so a
//! flood of client connections cannot starve heartbeats. Before binding, the node checks its
//! exposure (`Config::check_exposure`): off loopback it refuses weak secrets and open client
//! routes unless told otherwise.
//!
//! Three background duties live here because they concern the process, not the node:
//! - the **disk-space measurement** (`space::measure_periodically`), measuring the data
//!   directory every second so a node short of space refuses writes before its disk is full;
//! - the **Raft watchdog** ([`raft_failure`]): if Raft stops on its own (a storage error, a
//!   panic in its core), the node can never serve again without a restart, so instead of
//!   answering 503 forever the process exits with [`RaftStopped::EXIT_CODE`], the cause in its
//!   last log line, for a supervisor to restart it. A stop we asked for (graceful shutdown) is
//!   not watched: the watchdog is dropped when serving ends, before `raft.shutdown()`;
//! - the **stall detector** ([`stall_detector`]): the same exit when the runtime itself stops
//!   turning (a synchronous call hung on its thread), which would stop the Raft watchdog too.
//!   It runs until `serve` returns, a graceful shutdown included: one hung that long exits the
//!   same way.
//!
//! ("Watch" names only channels here, as in `tokio::sync::watch`: the Raft watchdog is a task,
//! the stall detector a thread.)
//!
//! A Raft core can also fail without stopping: a storage call that never returns (sled 0.34,
//! which held the state machine before, never completed a flush after a failed write on a full
//! disk) leaves a log append awaiting forever and the core answers
//! nothing while its metrics still say "running". The watchdog therefore also asks the core a
//! trivial question every [`RAFT_PROBE_INTERVAL`]; a core silent for
//! [`RAFT_UNRESPONSIVE_AFTER`] is treated like a stopped one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft_rt::WatchReceiver;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub mod lingering;
pub mod listener;
pub mod stall_detector;
pub mod tls;

use crate::api::{self, Surface};
use crate::app::App;
use crate::config::{Config, RuntimeConfig, StorageConfig, TlsFiles};
use crate::membership;
use crate::node;
use crate::raft::Raft;
use crate::space::{self, Alarm, DataDirSource};
use crate::storage::fs::StdFs;
use crate::storage::{self, Disk, ResidentPolicy};
use crate::transport::HttpTransport;

/// How often the watchdog asks the Raft core a trivial question.
const RAFT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A core that has not answered that long is stuck (on a storage call that will never return):
/// far longer than any storage call takes on a working disk (an fsync, purging thousands of
/// entries), short enough that a supervisor restarts the node within a minute.
const RAFT_UNRESPONSIVE_AFTER: Duration = Duration::from_secs(20);

/// Raft stopped without being asked to: the node must be restarted. `main` logs the cause as
/// the process's last line and exits with [`RaftStopped::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("raft stopped on a fatal error: {cause}")]
pub struct RaftStopped {
    pub cause: String,
}

impl RaftStopped {
    /// The exit status of a node whose Raft stopped on its own (1 is any other start-up or
    /// serving failure; 0 a clean shutdown).
    pub const EXIT_CODE: i32 = 3;
}

/// How `stockraft serve` was started, beyond the configuration file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Overrides (or, for a node not in the configuration, provides) the peer address.
    pub addr: Option<String>,
    /// Overrides (or provides) the client address.
    pub client_addr: Option<String>,
    /// A member to join the cluster through.
    pub join: Option<String>,
    /// Accept open client routes on a client address off loopback.
    pub insecure_open_client: bool,
}

/// The node's async runtime: one thread (tokio's current-thread scheduler, the default) or a
/// pool of workers, as `runtime.worker_threads` says; `config::RuntimeConfig` says why one.
pub fn runtime(config: &RuntimeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    match config.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        workers => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build(),
    }
}

/// Runs node `id` of `config` until a shutdown signal. Fails with [`RaftStopped`] if Raft
/// stops on its own.
pub async fn serve(id: u64, config: Config, options: ServeOptions) -> anyhow::Result<()> {
    let tls_files = config.tls.files_for(id);
    let addresses = check_exposure(id, &config, &options, tls_files.is_some())?;
    let data_dir = config.data_dir_for(id);
    let disk = open_disk_stack(&data_dir, &config.storage)?;
    let listeners = bind_listeners(&addresses, tls_files.as_ref()).await?;
    let app = start_node(id, config, disk.clone(), &data_dir, tls_files.as_ref()).await?;
    let background = BackgroundTasks::start(&app, options.join, &addresses.peer)?;
    tracing::info!(
        id,
        addr = %addresses.peer,
        client_addr = addresses.client.as_deref().unwrap_or("(same)"),
        tls = tls_files.is_some(),
        data_dir = %data_dir.display(),
        "node started"
    );
    let served = serve_until_signal(&app, listeners).await;
    background.stop_node_tasks();
    served?;
    shut_down(&app, &*disk).await
}

/// Where a node listens: its peer address, and its client address when clients get a
/// listener of their own.
struct Addresses {
    peer: String,
    client: Option<String>,
}

/// Step 1: where to listen (the command line over the configuration), and whether that is
/// safe: `[tls]` needs a client listener of its own, and off loopback the configuration must
/// not be weak (`Config::check_exposure`; its warnings are logged).
fn check_exposure(
    id: u64,
    config: &Config,
    options: &ServeOptions,
    tls: bool,
) -> anyhow::Result<Addresses> {
    let peer = match (&options.addr, config.node(id)) {
        (Some(addr), _) => addr.clone(),
        (None, Some(node)) => node.addr.clone(),
        (None, None) => anyhow::bail!("node {id} is not listed in the configuration: pass --addr"),
    };
    let client = options
        .client_addr
        .clone()
        .or_else(|| config.node(id).and_then(|node| node.client_addr.clone()));
    if tls && client.is_none() {
        anyhow::bail!(
            "[tls] needs a client listener apart from the peer one (client_addr or \
             --client-addr): the peer listener takes only certificates the cluster CA signed"
        );
    }
    let warnings = config.check_exposure(
        &peer,
        client.as_deref().unwrap_or(&peer),
        options.insecure_open_client,
    )?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(Addresses { peer, client })
}

/// Step 2: the data directory (its owner's only) and the state machine's disk on it: the state
/// resident in memory over its journal and images in `state/` (`storage::resident`). A data
/// directory of an earlier version, whose state sled held, is moved over first.
fn open_disk_stack(data_dir: &Path, storage: &StorageConfig) -> anyhow::Result<Arc<dyn Disk>> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // The data directory holds every record and idempotency answer: its owner only, whatever
    // the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", data_dir.display()))?;
    }
    let (disk, moved) =
        storage::open_node_state(data_dir, storage.cache_bytes, ResidentPolicy::product())
            .with_context(|| format!("opening the state in {}", data_dir.display()))?;
    if let Some(keys) = moved {
        tracing::info!(
            keys,
            "moved the state machine out of sled into {}",
            data_dir.join("state").display()
        );
    }
    Ok(Arc::new(disk))
}

/// The sockets a node serves, bound before the node starts, and their TLS acceptors.
struct Listeners {
    peer: TcpListener,
    /// None: the peer listener serves clients too.
    client: Option<TcpListener>,
    tls: Option<tls::Acceptors>,
}

/// Step 3: loads the TLS material, if any, and binds the peer and client sockets.
async fn bind_listeners(
    addresses: &Addresses,
    tls_files: Option<&TlsFiles>,
) -> anyhow::Result<Listeners> {
    let tls = tls_files.map(tls::acceptors).transpose()?;
    let bind = |addr: String| async move {
        TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding {addr}"))
    };
    let peer = bind(addresses.peer.clone()).await?;
    let client = match &addresses.client {
        Some(addr) => Some(bind(addr.clone()).await?),
        None => None,
    };
    Ok(Listeners { peer, client, tls })
}

/// Step 4: the node itself (`node::start`) on the disk stack, talking to its peers over HTTP
/// (mutual TLS with `[tls]`), its disk-space alarm measuring the data directory.
async fn start_node(
    id: u64,
    config: Config,
    disk: Arc<dyn Disk>,
    data_dir: &Path,
    tls_files: Option<&TlsFiles>,
) -> anyhow::Result<Arc<App>> {
    let transport = Arc::new(HttpTransport::from_files(tls_files)?);
    let storage = node::NodeStorage {
        disk,
        fs: Arc::new(StdFs),
        dir: data_dir.to_path_buf(),
    };
    let seams = node::Seams {
        space: Some(Arc::new(DataDirSource::new(data_dir))),
        ..node::Seams::default()
    };
    Ok(node::start(id, Arc::new(config), storage, transport, seams).await?)
}

/// What runs beside the listeners while the node serves, started in one place
/// ([`BackgroundTasks::start`]).
struct BackgroundTasks {
    /// Watches until `serve` returns, a graceful shutdown included: one hung that long exits
    /// the same way.
    _stall_detector: stall_detector::StallDetector,
    disk_space: JoinHandle<()>,
    membership: JoinHandle<()>,
}

impl BackgroundTasks {
    /// Step 5: the stall detector, and the disk-space measurement (taken once
    /// first so that a node started on a full disk refuses writes at once), then step 6: the
    /// task that founds the cluster or joins it (`node::bootstrap`, `node::join_cluster`).
    fn start(app: &Arc<App>, join: Option<String>, own_addr: &str) -> anyhow::Result<Self> {
        let stall_detector = start_stall_detector()?;
        app.space().refresh();
        let disk_space = tokio::spawn(space::measure_periodically(app.space().clone()));
        let membership = tokio::spawn(bootstrap_or_join(app.clone(), join, own_addr.to_owned()));
        Ok(Self {
            _stall_detector: stall_detector,
            disk_space,
            membership,
        })
    }

    /// Stops the tasks that use the node (before Raft shuts down); the stall detector runs on
    /// until dropped.
    fn stop_node_tasks(&self) {
        self.disk_space.abort();
        self.membership.abort();
    }
}

/// The Raft watchdog ([`raft_failure`]) is a task: a synchronous call hung on the runtime's
/// thread would stop it too. This one watches from a thread of its own ([`stall_detector`])
/// and exits the
/// process the same way.
fn start_stall_detector() -> anyhow::Result<stall_detector::StallDetector> {
    stall_detector::start(RAFT_PROBE_INTERVAL, RAFT_UNRESPONSIVE_AFTER, |stalled| {
        tracing::error!(
            "the node's runtime has not turned for {} s: a call on its thread is hung; exiting \
             for a supervisor to restart the node",
            stalled.as_secs()
        );
        std::process::exit(RaftStopped::EXIT_CODE);
    })
    .context("starting the runtime's stall detector")
}

/// Founds the cluster (the founding rule in `node`) or, with `join`, asks that member to add
/// this node.
async fn bootstrap_or_join(app: Arc<App>, join: Option<String>, own_addr: String) {
    match join {
        Some(member) => node::join_cluster(&app, &member, &own_addr).await,
        None => {
            node::bootstrap(&app).await;
        }
    }
}

/// Step 7: serves every listener until SIGTERM/SIGINT, then stops accepting and drains them.
/// Fails early, with the cause, if Raft stops on its own meanwhile.
async fn serve_until_signal(app: &Arc<App>, listeners: Listeners) -> Result<(), RaftStopped> {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut serving = spawn_listeners(app, listeners, stopping);
    let drained = async {
        shutdown_signal().await;
        hand_over_leadership(app).await;
        tracing::info!("shutting down: draining connections");
        // Event streams never end by themselves: end them, or they hold the drain to its end.
        app.stop_event_streams();
        let _ = stop.send(true);
        while serving.join_next().await.is_some() {}
    };
    tokio::select! {
        () = drained => Ok(()),
        cause = raft_failure(app) => Err(RaftStopped { cause }),
    }
}

/// Step 7a, on a shutdown signal: a leader hands leadership over and waits (bounded) until a
/// new leader is known, while still serving; the outcome is logged either way.
async fn hand_over_leadership(app: &App) {
    use membership::HandOver;
    match membership::hand_over(app, membership::HAND_OVER_WAIT).await {
        HandOver::NotLeader => {}
        HandOver::NoReachableVoter => {
            tracing::warn!("shutting down as leader: no other voter is reachable to hand over to")
        }
        HandOver::Done { to, leader, waited } => tracing::info!(
            to,
            leader,
            waited_ms = waited.as_millis() as u64,
            "shutting down: handed leadership over"
        ),
        HandOver::Unconfirmed { to, cause } => tracing::warn!(
            to,
            %cause,
            "shutting down: asked node {to} to take over, but no new leader was heard of in time"
        ),
    }
}

/// One accept loop per listener (`listener::serve`), each with its routes (`api::Surface`) and
/// limits, each ending once `stopping` turns true.
fn spawn_listeners(
    app: &Arc<App>,
    listeners: Listeners,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> JoinSet<()> {
    let api = &app.config().api;
    let header_read_timeout = Duration::from_millis(api.header_read_timeout_ms);
    let (peer_tls, client_tls) = match listeners.tls {
        Some(acceptors) => (Some(acceptors.peer), Some(acceptors.client)),
        None => (None, None),
    };
    let mut serving = JoinSet::new();
    let mut listen_on = |name, socket, surface, tls, max_connections| {
        let limits = listener::Limits {
            max_connections,
            header_read_timeout,
        };
        let router = api::router_for(app.clone(), surface);
        let mut stopping = stopping.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        serving.spawn(listener::serve(name, socket, router, tls, limits, stopped));
    };
    match listeners.client {
        None => listen_on(
            "node",
            listeners.peer,
            Surface::Both,
            None,
            api.max_connections,
        ),
        Some(client) => {
            listen_on(
                "peer",
                listeners.peer,
                Surface::Peer,
                peer_tls,
                api.max_peer_connections,
            );
            listen_on(
                "client",
                client,
                Surface::Client,
                client_tls,
                api.max_connections,
            );
        }
    }
    serving
}

/// Step 8, once the listeners are drained: stop Raft, then flush the disk stack.
async fn shut_down(app: &App, disk: &dyn Disk) -> anyhow::Result<()> {
    tracing::info!("shutting down: stopping raft");
    if let Err(error) = app.raft().shutdown().await {
        tracing::warn!(%error, "raft shutdown reported an error");
    }
    disk.flush().await.context("flushing the disk")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Resolves once Raft has stopped or stopped answering, with the cause, and what the disk-space
/// alarm says now (a full disk is the usual suspect). Only polled while no shutdown is
/// requested, so any stop is a failure.
async fn raft_failure(app: &App) -> String {
    let cause = tokio::select! {
        cause = raft_stopped(app.raft()) => cause,
        cause = raft_unresponsive(app.raft()) => cause,
    };
    match app.space().refresh() {
        Alarm::Ok => cause,
        Alarm::NoSpace { reason } => format!("{cause} (disk-space alarm raised: {reason})"),
    }
}

/// Resolves once Raft has stopped, with the cause. openraft reports a stop in its metrics:
/// `running_state` becomes the fatal error (a storage error, or `Stopped` after a requested
/// shutdown) and the state `Shutdown`; if its core task ends another way (a panic), the metrics
/// channel closes.
async fn raft_stopped(raft: &Raft) -> String {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow_watched().running_state {
            return fatal.to_string();
        }
        if metrics.changed().await.is_err() {
            return "the raft core task ended without reporting why (a panic?)".into();
        }
    }
}

/// Resolves once the Raft core has not answered a trivial question for
/// [`RAFT_UNRESPONSIVE_AFTER`] (or answers that it stopped).
async fn raft_unresponsive(raft: &Raft) -> String {
    loop {
        tokio::time::sleep(RAFT_PROBE_INTERVAL).await;
        match tokio::time::timeout(RAFT_UNRESPONSIVE_AFTER, raft.with_raft_state(|_| ())).await {
            Ok(Ok(())) => {}
            Ok(Err(fatal)) => return fatal.to_string(),
            Err(_) => {
                return format!(
                    "the raft core has not answered for {} s: a storage call is hung",
                    RAFT_UNRESPONSIVE_AFTER.as_secs()
                )
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    use super::*;

    #[test]
    fn one_worker_thread_is_the_current_thread_scheduler_and_more_a_pool() {
        let one = runtime(&RuntimeConfig { worker_threads: 1 }).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let pool = runtime(&RuntimeConfig { worker_threads: 3 }).unwrap();
        assert_eq!(pool.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(pool.metrics().num_workers(), 3);
        assert_eq!(
            RuntimeConfig::default().worker_threads,
            1,
            "README and cluster.toml document one thread as the default"
        );
    }
}
