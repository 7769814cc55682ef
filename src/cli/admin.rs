//! `stockraft admin`: every admin route from the command line, against any node.
//!
//! Human-readable tables by default, `--json` for scripts. The secret comes from
//! `--secret-file` (`STOCKRAFT_SECRET_FILE`), else `--secret` (`STOCKRAFT_SECRET`), else the
//! `--config` file. With `--tls-dir` (a `stockraft certs` directory) it speaks HTTPS, trusting the cluster
//! CA and presenting `admin.pem` (which a peer listener demands). Exit code 0 on success, 1 when the cluster
//! refused or failed the request (the error is printed), 2 on a usage or connection problem.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::client::wire::{
    AddLearnerRequest, ClusterView, Envelope, Health, MemberView, MembersRequest, SnapshotTaken,
    TransferLeaderRequest,
};
use crate::client::{Answer, Client, ClientError};
use crate::transport::HttpTransport;

/// A member is flagged as lagging when it is this many entries behind the leader.
pub const LAG_WARNING_ENTRIES: u64 = 100;
/// How long one admin request may take (a learner add with `--wait` can take a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the status table waits for one member's health.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Any node of the cluster: its peer address (`addr`, host:port), or its client address
    /// when admin tokens are used (a client listener takes no cluster secret).
    #[arg(
        long,
        short,
        global = true,
        env = "STOCKRAFT_NODE",
        default_value = "127.0.0.1:22001"
    )]
    pub node: String,
    /// The cluster secret (default: STOCKRAFT_SECRET, else the one in --config).
    #[arg(long, global = true, env = "STOCKRAFT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// A file holding the cluster secret.
    #[arg(long, global = true, env = "STOCKRAFT_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Configuration to read the secret from when none is given.
    #[arg(long, global = true, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// HTTPS: a `stockraft certs` directory (`ca.pem`, `admin.pem`, `admin-key.pem`).
    #[arg(long, global = true, env = "STOCKRAFT_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Print the raw JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// One row per member: role, term, last log, applied, lag; flags lagging or unreachable ones.
    Status,
    /// Add a node as a learner (it starts replicating; it does not vote yet).
    AddLearner {
        #[arg(long)]
        id: u64,
        /// The new node's HTTP address (host:port).
        #[arg(long)]
        addr: String,
        /// Return only once the learner has caught up.
        #[arg(long)]
        wait: bool,
    },
    /// Make learners voters (joint consensus).
    Promote {
        /// A learner's id; repeat for several.
        #[arg(long = "id", required = true)]
        ids: Vec<u64>,
    },
    /// Remove members, or demote voters to learners with --keep-as-learner.
    Remove {
        /// A member's id; repeat for several.
        #[arg(long = "id", required = true)]
        ids: Vec<u64>,
        #[arg(long)]
        keep_as_learner: bool,
    },
    /// Hand leadership to a voter.
    TransferLeader {
        #[arg(long)]
        to: u64,
    },
    /// Snapshot the node given by --node now and purge its log behind the snapshot.
    Snapshot,
    /// Download a backup of the cluster's state from --node (`--out FILE`: written to FILE.tmp,
    /// synced, checked whole, renamed), or check a backup file without restoring it
    /// (`--verify FILE`).
    Backup {
        /// Where to write the backup.
        #[arg(long, required_unless_present = "verify", conflicts_with = "verify")]
        out: Option<PathBuf>,
        /// A backup file to check (checksum, format, limits) and describe.
        #[arg(long)]
        verify: Option<PathBuf>,
    },
}

/// The secret to send: a secret file wins (as for `serve`), then `--secret`, then the
/// configuration.
fn secret(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(file) = &args.secret_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the secret from {}", file.display()))?;
        return Ok(text.trim_end().to_owned());
    }
    if let Some(secret) = &args.secret {
        return Ok(secret.clone());
    }
    let config = crate::config::Config::load(&args.config).with_context(|| {
        format!(
            "no --secret, --secret-file, STOCKRAFT_SECRET or STOCKRAFT_SECRET_FILE, and {} is \
             unusable",
            args.config.display()
        )
    })?;
    Ok(config.cluster.secret)
}

/// Plain HTTP, or HTTPS with the operator certificate of `--tls-dir`.
fn transport(args: &AdminArgs) -> anyhow::Result<HttpTransport> {
    let Some(dir) = &args.tls_dir else {
        return Ok(HttpTransport::new());
    };
    HttpTransport::from_files(Some(&crate::config::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("admin.pem"),
        key: dir.join("admin-key.pem"),
    }))
}

/// What a successful command answered.
enum Output {
    View(ClusterView),
    Snapshot(SnapshotTaken),
}

/// Runs one admin command; returns the process exit code.
pub async fn run(args: AdminArgs) -> anyhow::Result<i32> {
    if let AdminCommand::Backup { out, verify } = &args.command {
        return match (out, verify) {
            (_, Some(file)) => super::backup::run_verify(file, args.json),
            (Some(out), None) => {
                let (transport, secret) = (transport(&args)?, secret(&args)?);
                super::backup::run_download(&transport, &args.node, &secret, out, args.json).await
            }
            (None, None) => unreachable!("clap requires --out or --verify"),
        };
    }
    let client = Client::new(Arc::new(transport(&args)?), args.node.clone())
        .with_secret(secret(&args)?)
        .with_timeout(REQUEST_TIMEOUT);
    let view = |answer: Answer<Envelope<ClusterView>>| answer.ok().map(|e| Output::View(e.data));
    let result = match &args.command {
        AdminCommand::Status => view(client.cluster().await?),
        AdminCommand::AddLearner { id, addr, wait } => {
            let request = AddLearnerRequest {
                id: *id,
                addr: addr.clone(),
                wait: *wait,
            };
            view(client.add_learner(&request).await?)
        }
        AdminCommand::Promote { ids } => {
            let request = MembersRequest {
                ids: ids.iter().copied().collect(),
                keep_as_learners: false,
            };
            view(client.promote(&request).await?)
        }
        AdminCommand::Remove {
            ids,
            keep_as_learner,
        } => {
            let request = MembersRequest {
                ids: ids.iter().copied().collect(),
                keep_as_learners: *keep_as_learner,
            };
            view(client.remove(&request).await?)
        }
        AdminCommand::TransferLeader { to } => view(
            client
                .transfer_leader(&TransferLeaderRequest { to: *to })
                .await?,
        ),
        AdminCommand::Snapshot => client
            .snapshot()
            .await?
            .ok()
            .map(|e| Output::Snapshot(e.data)),
        AdminCommand::Backup { .. } => unreachable!("answered above"),
    };
    let output = match result {
        Ok(output) => output,
        Err(ClientError::Refused { status, error }) => {
            eprintln!(
                "error {status} {}: {}",
                error.error.code, error.error.message
            );
            return Ok(1);
        }
        Err(other) => return Err(other.into()),
    };
    match (output, args.json) {
        (Output::View(view), true) => println!("{}", pretty(&Envelope::ok(view))?),
        (Output::Snapshot(taken), true) => println!("{}", pretty(&Envelope::ok(taken))?),
        (Output::Snapshot(taken), false) => println!("{}", pretty(&taken)?),
        (Output::View(view), false)
            if matches!(args.command, AdminCommand::TransferLeader { .. }) =>
        {
            println!("{}", pretty(&view)?)
        }
        (Output::View(view), false) => print!("{}", status_table(&client, &view).await),
    }
    Ok(0)
}

fn pretty(value: &impl serde::Serialize) -> serde_json::Result<String> {
    serde_json::to_string_pretty(value)
}

/// Per-node figures only the node itself knows (term, last log, applied), from its health route.
async fn node_health(client: &Client, member: &MemberView) -> Option<Health> {
    let node = client.to_node(&member.addr).with_timeout(HEALTH_TIMEOUT);
    Some(node.health().await.ok()?.ok().ok()?.data)
}

async fn status_table(client: &Client, view: &ClusterView) -> String {
    let mut out = format!(
        "leader {} | term {} | commit {} | last log {}\n",
        show(view.leader_id),
        view.term,
        show(view.committed_index),
        show(view.last_log_index)
    );
    out.push_str(&format!(
        "{:<4} {:<22} {:<8} {:<10} {:>5} {:>9} {:>9} {:>7}  {}\n",
        "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LAST LOG", "APPLIED", "LAG", "NOTE"
    ));
    for member in &view.members {
        let health = node_health(client, member).await;
        let (state, term, last_log, applied) = match &health {
            Some(h) => (
                serde_json::to_value(h.raft.role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                h.raft.term.to_string(),
                show(h.raft.last_log_index),
                show(h.raft.applied_index),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let mut notes = Vec::new();
        if !member.reachable || health.is_none() {
            notes.push("UNREACHABLE");
        }
        if member.lag > LAG_WARNING_ENTRIES {
            notes.push("LAGGING");
        }
        out.push_str(&format!(
            "{:<4} {:<22} {:<8} {:<10} {:>5} {:>9} {:>9} {:>7}  {}\n",
            member.id,
            member.addr,
            member.role.to_string(),
            state,
            term,
            last_log,
            applied,
            member.lag,
            notes.join(" ")
        ));
    }
    out
}

fn show(value: Option<u64>) -> String {
    value.map_or("-".to_owned(), |v| v.to_string())
}
