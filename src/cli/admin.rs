//! `stockraft admin`: every admin route from the command line, against any node.
//!
//! Human-readable tables by default, `--json` for scripts. The secret comes from `--secret`,
//! else `STOCKRAFT_SECRET`, else the `--config` file. Exit code 0 on success, 1 when the cluster
//! refused or failed the request (the error is printed), 2 on a usage or connection problem.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::membership::{ClusterView, MemberView};
use crate::transport::SECRET_HEADER;

/// A member is flagged as lagging when it is this many entries behind the leader.
pub const LAG_WARNING_ENTRIES: u64 = 100;
/// How long one admin request may take (a learner add with `--wait` can take a while).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Any node of the cluster (host:port).
    #[arg(
        long,
        short,
        global = true,
        env = "STOCKRAFT_NODE",
        default_value = "127.0.0.1:21001"
    )]
    pub node: String,
    /// The cluster secret (default: STOCKRAFT_SECRET, else the one in --config).
    #[arg(long, global = true, env = "STOCKRAFT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Configuration to read the secret from when none is given.
    #[arg(long, global = true, default_value = "cluster.toml")]
    pub config: PathBuf,
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
}

struct Client {
    http: reqwest::Client,
    node: String,
    secret: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("http://{}{}", self.node, path))
            .header(SECRET_HEADER, &self.secret);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.node))?;
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

fn secret(args: &AdminArgs) -> anyhow::Result<String> {
    if let Some(secret) = &args.secret {
        return Ok(secret.clone());
    }
    let config = crate::config::Config::load(&args.config).with_context(|| {
        format!(
            "no --secret or STOCKRAFT_SECRET, and {} is unusable",
            args.config.display()
        )
    })?;
    Ok(config.cluster.secret)
}

/// Runs one admin command; returns the process exit code.
pub async fn run(args: AdminArgs) -> anyhow::Result<i32> {
    let client = Client {
        http: reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()?,
        node: args.node.clone(),
        secret: secret(&args)?,
    };
    let post = reqwest::Method::POST;
    let (status, body) = match &args.command {
        AdminCommand::Status => {
            client
                .call(reqwest::Method::GET, "/api/cluster", None)
                .await?
        }
        AdminCommand::AddLearner { id, addr, wait } => {
            let body = json!({ "id": id, "addr": addr, "wait": wait });
            client
                .call(post, "/api/cluster/learners", Some(body))
                .await?
        }
        AdminCommand::Promote { ids } => {
            client
                .call(post, "/api/cluster/promote", Some(json!({ "ids": ids })))
                .await?
        }
        AdminCommand::Remove {
            ids,
            keep_as_learner,
        } => {
            let body = json!({ "ids": ids, "keepAsLearners": keep_as_learner });
            client.call(post, "/api/cluster/remove", Some(body)).await?
        }
        AdminCommand::TransferLeader { to } => {
            client
                .call(
                    post,
                    "/api/cluster/transfer-leader",
                    Some(json!({ "to": to })),
                )
                .await?
        }
        AdminCommand::Snapshot => client.call(post, "/api/cluster/snapshot", None).await?,
    };
    if !(200..300).contains(&status) {
        let error = &body["error"];
        eprintln!(
            "error {status} {}: {}",
            error["code"].as_str().unwrap_or("?"),
            error["message"].as_str().unwrap_or("(no message)")
        );
        return Ok(1);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(0);
    }
    match (
        &args.command,
        serde_json::from_value::<ClusterView>(body["data"].clone()),
    ) {
        (AdminCommand::Snapshot | AdminCommand::TransferLeader { .. }, _) | (_, Err(_)) => {
            println!("{}", serde_json::to_string_pretty(&body["data"])?);
        }
        (_, Ok(view)) => print!("{}", status_table(&client, &view).await),
    }
    Ok(0)
}

/// Per-node figures only the node itself knows (term, last log, applied), from its health route.
async fn node_health(client: &Client, member: &MemberView) -> Option<Value> {
    let response = client
        .http
        .get(format!("http://{}/api/health", member.addr))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    Some(body["data"].clone())
}

async fn status_table(client: &Client, view: &ClusterView) -> String {
    let mut out = format!(
        "leader {} | term {} | commit {} | last log {}\n",
        show(view.leader_id),
        view.term,
        show(view.commit_index),
        show(view.last_log_index)
    );
    out.push_str(&format!(
        "{:<4} {:<22} {:<8} {:<10} {:>5} {:>9} {:>9} {:>7}  {}\n",
        "ID", "ADDRESS", "ROLE", "STATE", "TERM", "LAST LOG", "APPLIED", "LAG", "NOTE"
    ));
    for member in &view.members {
        let health = node_health(client, member).await;
        let field = |name: &str| {
            health
                .as_ref()
                .map_or("-".to_owned(), |h| value_text(&h[name]))
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
            member.role,
            field("role"),
            field("term"),
            field("lastLogIndex"),
            field("appliedIndex"),
            member.lag,
            notes.join(" ")
        ));
    }
    out
}

fn show(value: Option<u64>) -> String {
    value.map_or("-".to_owned(), |v| v.to_string())
}

fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
