//! The `stockraft` command line: a thin clap layer over the library.

// The admin CLI speaks real HTTP; a --cfg madsim build has no real network.
#[cfg(not(madsim))]
pub mod admin;
#[cfg(not(madsim))]
pub mod backup;
#[cfg(not(madsim))]
pub mod bench;
#[cfg(not(madsim))]
pub mod certs;
#[cfg(not(madsim))]
pub mod events;
#[cfg(not(madsim))]
pub mod inv;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stockraft",
    version,
    about = "A Raft-replicated inventory store"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text for people, or one JSON object per line for log shippers. Which lines
    /// is set by `RUST_LOG` (e.g. `info,stockraft::api=debug`) or the seed's `LOG_LEVEL`.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "STOCKRAFT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one node of the cluster described by the configuration file.
    Serve {
        /// This node's id (must be listed in the configuration's [[nodes]]).
        #[arg(long)]
        id: u64,
        /// Path to cluster.toml.
        #[arg(long, default_value = "cluster.toml")]
        config: PathBuf,
        /// This node's peer address (Raft, admin; everything without a client address), for a
        /// node not listed in the configuration or to override it.
        #[arg(long)]
        addr: Option<String>,
        /// A separate listener for clients (overrides the configuration's `client_addr`).
        #[arg(long)]
        client_addr: Option<String>,
        /// Read the cluster secret from this file (keeps it out of `ps` and the environment).
        #[arg(long, env = "STOCKRAFT_SECRET_FILE")]
        secret_file: Option<PathBuf>,
        /// Serve client routes without any client token on a client address off loopback.
        /// Anyone who reaches the port can then create, adjust and reserve stock.
        #[arg(long)]
        insecure_open_client: bool,
        /// Join a running cluster through any member's peer address (`host:port`): the node asks
        /// to be added as a learner and catches up; promote it with `stockraft admin promote`.
        #[arg(long)]
        join: Option<String>,
    },
    /// Operate a running cluster (membership, leadership, snapshots) through any node.
    #[cfg(not(madsim))]
    Admin(admin::AdminArgs),
    /// Read and change inventory through any node: records, holds, carts, views.
    #[cfg(not(madsim))]
    Inv(inv::InvArgs),
    /// Measure reserves/s and latency against stockraft (or etcd, for comparison).
    #[cfg(not(madsim))]
    Bench(bench::BenchArgs),
    /// Prepare the data directories of a new cluster (new cluster id) from a backup file.
    #[cfg(not(madsim))]
    Restore(backup::RestoreArgs),
    /// Make a throwaway cluster CA and certificates for nodes and an operator (`[tls]`).
    #[cfg(not(madsim))]
    Certs(certs::CertsArgs),
}
