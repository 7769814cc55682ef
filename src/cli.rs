//! The `stockraft` command line: a thin clap layer over the library.

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
    },
}
