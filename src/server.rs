//! The process edge: open the disk, bind the socket, serve until SIGTERM/SIGINT, shut down in
//! order (stop accepting, finish in-flight requests, stop Raft, flush sled).

use std::sync::Arc;

use anyhow::Context;

use crate::api;
use crate::config::Config;
use crate::node;
use crate::storage::fs::StdFs;
use crate::storage::{Disk, SledDisk};
use crate::transport::HttpTransport;

/// Runs node `id` of `config` until a shutdown signal. `addr` overrides (or, for a node not in
/// the configuration, provides) the listen address; `join` names a member to join through.
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
    let app = node::start(id, config, storage, transport, node::Seams::default()).await?;
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

    axum::serve(listener, api::router(app.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;

    tracing::info!("shutting down: stopping raft");
    bootstrap.abort();
    if let Err(error) = app.raft.shutdown().await {
        tracing::warn!(%error, "raft shutdown reported an error");
    }
    disk.flush().await.context("flushing the disk")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
