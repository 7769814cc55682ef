//! The process edge: open the disk, bind the socket, serve until SIGTERM/SIGINT, shut down in
//! order (stop accepting, finish in-flight requests, stop Raft, flush sled).
//!
//! Two background duties live here because they concern the process, not the node:
//! - the **disk-space watcher** (`space::watch`), measuring the data directory every second so
//!   a node short of space refuses writes before its disk is full;
//! - the **Raft watchdog** ([`raft_failure`]): if Raft stops on its own (a storage error, a
//!   panic in its core), the node can never serve again without a restart, so instead of
//!   answering 503 forever the process exits with [`RaftStopped::EXIT_CODE`], the cause in its
//!   last log line, for a supervisor to restart it. A stop we asked for (graceful shutdown) is
//!   not watched: the watchdog is dropped when serving ends, before `raft.shutdown()`.
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

use crate::api;
use crate::app::App;
use crate::config::Config;
use crate::node;
use crate::raft::Raft;
use crate::space::{self, Alarm, DataDirSource};
use crate::storage::fs::StdFs;
use crate::storage::{Disk, SledDisk};
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

/// Runs node `id` of `config` until a shutdown signal. `addr` overrides (or, for a node not in
/// the configuration, provides) the listen address; `join` names a member to join through.
/// Fails with [`RaftStopped`] if Raft stops on its own.
pub async fn serve(
    id: u64,
    config: Config,
    addr: Option<String>,
    join: Option<String>,
) -> anyhow::Result<()> {
    let listen = match (addr, config.node(id)) {
        (Some(addr), _) => addr,
        (None, Some(node)) => node.addr.clone(),
        (None, None) => anyhow::bail!("node {id} is not listed in the configuration: pass --addr"),
    };
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
    let disk = Arc::new(
        SledDisk::open(&data_dir).with_context(|| format!("opening {}", data_dir.display()))?,
    );

    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let config = Arc::new(config);
    let transport = Arc::new(HttpTransport::new());
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
    // Measure once before serving, so a node started on a full disk refuses writes at once.
    app.space.refresh();
    let space_watcher = tokio::spawn(space::watch(app.space.clone()));
    tracing::info!(id, addr = %listen, data_dir = %data_dir.display(), "node started");

    let founder = app.clone();
    let bootstrap = match join {
        Some(member) => tokio::spawn(async move {
            node::join_cluster(&founder, &member, &listen).await;
        }),
        None => tokio::spawn(async move {
            node::bootstrap(&founder).await;
        }),
    };

    let serving = axum::serve(
        listener,
        // The peer's address, for the per-client rate limit.
        api::router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal());
    tokio::select! {
        served = serving => served.context("serving HTTP")?,
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
