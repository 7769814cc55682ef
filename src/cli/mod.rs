//! The `stockraft` command line: a thin clap layer over the library.

// The admin CLI speaks real HTTP; a --cfg madsim build has no real network.
#[cfg(not(madsim))]
pub mod admin;
#[cfg(not(madsim))]
pub mod bench;

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
        /// This node's HTTP address, for a node not listed in the configuration.
        #[arg(long)]
        addr: Option<String>,
        /// Join a running cluster through any member (`host:port`): the node asks to be added as
        /// a learner and catches up; promote it with `stockraft admin promote`.
        #[arg(long)]
        join: Option<String>,
    },
    /// Operate a running cluster (membership, leadership, snapshots) through any node.
    #[cfg(not(madsim))]
    Admin(admin::AdminArgs),
    /// Measure reserves/s and latency against stockraft (or etcd, for comparison).
    #[cfg(not(madsim))]
    Bench(bench::BenchArgs),
}
