//! The process edge: open the disk, bind the listeners, serve until SIGTERM/SIGINT, shut down
//! in order (stop accepting, finish in-flight requests, stop Raft, flush sled).
//!
//! A node has one listener, or two when `client_addr` is configured: the peer listener (`addr`:
//! Raft, forwarded requests, admin; mutual TLS with `[tls]`) and the client listener (HTTPS
//! with `[tls]`). Each has its own connection limit and header timeout ([`listener`]), so a
//! flood of client connections cannot starve heartbeats. Before binding, the node checks its
//! exposure (`Config::check_exposure`): off loopback it refuses weak secrets and open client
//! routes unless told otherwise.
//!
//! Three background duties live here because they concern the process, not the node:
//! - the **disk-space watcher** (`space::watch`), measuring the data directory every second so
//!   a node short of space refuses writes before its disk is full;
//! - the **Raft watchdog** ([`raft_failure`]): if Raft stops on its own (a storage error, a
//!   panic in its core), the node can never serve again without a restart, so instead of
//!   answering 503 forever the process exits with [`RaftStopped::EXIT_CODE`], the cause in its
//!   last log line, for a supervisor to restart it. A stop we asked for (graceful shutdown) is
//!   not watched: the watchdog is dropped when serving ends, before `raft.shutdown()`;
//! - the **stall watch** ([`stall`]): the same exit when the runtime itself stops turning (a
//!   synchronous call hung on its thread), which would stop the Raft watchdog too. It watches
//!   until `serve` returns, a graceful shutdown included: one hung that long exits the same way.
//!
//! A Raft core can also fail without stopping: sled 0.34 never completes a flush after a write
//! of its failed (seen on a full disk), so a log append awaits forever and the core answers
//! nothing while its metrics still say "running". The watchdog therefore also asks the core a
//! trivial question every [`RAFT_PROBE_INTERVAL`]; a core silent for
//! [`RAFT_UNRESPONSIVE_AFTER`] is treated like a stopped one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft_rt::WatchReceiver;

pub mod listener;
pub mod stall;
pub mod tls;

use crate::api::{self, Surface};
use crate::app::App;
use crate::config::{Config, RuntimeConfig};
use crate::node;
use crate::raft::Raft;
use crate::space::{self, Alarm, DataDirSource};
use crate::storage::fs::StdFs;
use crate::storage::{Disk, SledDisk, WriteBehind};
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
    let listen = match (options.addr, config.node(id)) {
        (Some(addr), _) => addr,
        (None, Some(node)) => node.addr.clone(),
        (None, None) => anyhow::bail!("node {id} is not listed in the configuration: pass --addr"),
    };
    let client_listen = options
        .client_addr
        .or_else(|| config.node(id).and_then(|node| node.client_addr.clone()));
    let tls_files = config.tls.files_for(id);
    if tls_files.is_some() && client_listen.is_none() {
        anyhow::bail!(
            "[tls] needs a client listener apart from the peer one (client_addr or \
             --client-addr): the peer listener takes only certificates the cluster CA signed"
        );
    }
    let warnings = config.check_exposure(
        &listen,
        client_listen.as_deref().unwrap_or(&listen),
        options.insecure_open_client,
    )?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let data_dir = config.data_dir_for(id);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // The data directory holds every record and idempotency answer: its owner only, whatever
    // the umask.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to its owner", data_dir.display()))?;
    }
    // The state machine's batches reach sled merged, a few per second, written by a thread of
    // their own; reads are served from a cache in front of it when they can
    // (`storage::WriteBehind`).
    let sled = SledDisk::open(&data_dir, config.storage.cache_bytes)
        .with_context(|| format!("opening {}", data_dir.display()))?;
    let read_cache_bytes = usize::try_from(config.storage.read_cache_bytes)
        .context("storage.read_cache_bytes does not fit this machine's memory")?;
    let disk: Arc<dyn Disk> = Arc::new(
        WriteBehind::new(Arc::new(sled), read_cache_bytes)
            .context("starting the state machine's checkpoint thread")?,
    );

    let acceptors = tls_files.as_ref().map(tls::acceptors).transpose()?;
    let peer_listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let client_listener = match &client_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?,
        ),
        None => None,
    };
    let config = Arc::new(config);
    let transport = Arc::new(HttpTransport::from_files(tls_files.as_ref())?);
    let storage = node::NodeStorage {
        disk: disk.clone(),
        fs: Arc::new(StdFs),
        dir: data_dir.clone(),
    };
    let seams = node::Seams {
        space: Some(Arc::new(DataDirSource::new(&data_dir))),
        ..node::Seams::default()
    };
    let app = node::start(id, config, storage, transport, seams).await?;
    // The Raft watchdog below is a task: a synchronous call hung on the runtime's thread would
    // stop it too. This one watches from a thread of its own (`stall`).
    let _stall_watch = stall::watch(RAFT_PROBE_INTERVAL, RAFT_UNRESPONSIVE_AFTER, |stalled| {
        tracing::error!(
            "the node's runtime has not turned for {} s: a call on its thread is hung; exiting \
             for a supervisor to restart the node",
            stalled.as_secs()
        );
        std::process::exit(RaftStopped::EXIT_CODE);
    })
    .context("starting the runtime's stall watch")?;
    // Measure once before serving, so a node started on a full disk refuses writes at once.
    app.space.refresh();
    let space_watcher = tokio::spawn(space::watch(app.space.clone()));
    tracing::info!(
        id,
        addr = %listen,
        client_addr = client_listen.as_deref().unwrap_or("(same)"),
        tls = tls_files.is_some(),
        data_dir = %data_dir.display(),
        "node started"
    );

    let founder = app.clone();
    let bootstrap = match options.join {
        Some(member) => tokio::spawn(async move {
            node::join_cluster(&founder, &member, &listen).await;
        }),
        None => tokio::spawn(async move {
            node::bootstrap(&founder).await;
        }),
    };

    let api = &app.config.api;
    let header_read_timeout = Duration::from_millis(api.header_read_timeout_ms);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let (peer_tls, client_tls) = match acceptors {
        Some(acceptors) => (Some(acceptors.peer), Some(acceptors.client)),
        None => (None, None),
    };
    let mut listeners = tokio::task::JoinSet::new();
    let mut listen_on = |name, socket, surface, tls, max_connections| {
        let limits = listener::Limits {
            max_connections,
            header_read_timeout,
        };
        let router = api::router_for(app.clone(), surface);
        let stopped = stopped(stopping.clone());
        listeners.spawn(listener::serve(name, socket, router, tls, limits, stopped));
    };
    match client_listener {
        None => listen_on(
            "node",
            peer_listener,
            Surface::Both,
            None,
            api.max_connections,
        ),
        Some(client_listener) => {
            listen_on(
                "peer",
                peer_listener,
                Surface::Peer,
                peer_tls,
                api.max_peer_connections,
            );
            listen_on(
                "client",
                client_listener,
                Surface::Client,
                client_tls,
                api.max_connections,
            );
        }
    }
    let serving = async {
        shutdown_signal().await;
        tracing::info!("shutting down: draining connections");
        let _ = stop.send(true);
        while listeners.join_next().await.is_some() {}
    };
    tokio::select! {
        () = serving => {}
        cause = raft_failure(&app) => {
            space_watcher.abort();
            bootstrap.abort();
            return Err(RaftStopped { cause }.into());
        }
    }

    tracing::info!("shutting down: stopping raft");
    space_watcher.abort();
    bootstrap.abort();
    if let Err(error) = app.raft.shutdown().await {
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
        cause = raft_stopped(&app.raft) => cause,
        cause = raft_unresponsive(&app.raft) => cause,
    };
    match app.space.refresh() {
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
