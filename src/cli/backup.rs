//! `stockraft admin backup` and `stockraft restore`: taking a backup from a node, checking one,
//! and preparing the data directories of a new cluster from one.
//!
//! A download is written to `<out>.tmp` as it arrives, synced, read through once more (the
//! whole file: checksum, limits, version) and only then renamed to `<out>` and the directory
//! synced: a file under the name asked for is a whole, checked backup, and a download cut short
//! (the node failed half-way, the network broke) leaves no file but an error.
//!
//! A restore checks the backup whole and finds every node's data directory empty (or, with
//! `--force`, clears them) before it writes anything (`backup::restore`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::api::json::rfc3339_ms;
use crate::backup::restore::{self, RestoreError, Verified};
use crate::backup::Contents;
use crate::client::routes;
use crate::client::wire::ErrorBody;
use crate::config::Config;
use crate::storage::fs::{Fs, StdFs};
use crate::transport::{HttpTransport, SECRET_HEADER};

/// How long a node may take to start answering a backup request: a follower catching up and a
/// snapshot being built (`app::backups`) take up to a minute together.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the stream may go silent before the download is given up.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// What `--verify` (and a finished download) prints, and `--json` shows as an object.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Described {
    pub file: PathBuf,
    pub cluster_id: Option<String>,
    pub log_index: u64,
    pub log_term: u64,
    pub log_time_ms: u64,
    pub log_time: String,
    pub size_bytes: u64,
    #[serde(flatten)]
    pub contents: Contents,
}

impl Described {
    fn of(file: &Path, verified: &Verified, size_bytes: u64) -> Self {
        let header = &verified.header;
        Self {
            file: file.to_path_buf(),
            cluster_id: header.cluster.map(|id| id.to_string()),
            log_index: header.log_index,
            log_term: header.log_term,
            log_time_ms: header.log_time_ms,
            log_time: rfc3339_ms(header.log_time_ms),
            size_bytes,
            contents: verified.contents,
        }
    }

    fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
            return Ok(());
        }
        let c = &self.contents;
        println!("backup {}: OK (checksum verified)", self.file.display());
        println!(
            "  cluster id       {}",
            self.cluster_id.as_deref().unwrap_or("-")
        );
        println!(
            "  log index        {} (term {})",
            self.log_index, self.log_term
        );
        println!(
            "  log time         {} ({} ms)",
            self.log_time, self.log_time_ms
        );
        println!("  records          {}", c.records);
        println!("  held reservations {}", c.held_reservations);
        println!("  idempotency keys {}", c.idempotency_keys);
        println!(
            "  events kept      {} (last seq {})",
            c.events_kept, c.last_event_seq
        );
        println!("  items            {}", c.items);
        println!("  size             {} bytes", self.size_bytes);
        Ok(())
    }
}

/// Reads the whole backup at `file`; its description, or why it is refused.
pub fn verify(file: &Path) -> Result<Described, RestoreError> {
    let verified = restore::verify_file(&StdFs, file)?;
    let size = std::fs::metadata(file).map_or(0, |meta| meta.len());
    Ok(Described::of(file, &verified, size))
}

/// `stockraft admin backup --verify FILE`: exit code 0 if whole, 1 if refused.
pub fn run_verify(file: &Path, json: bool) -> anyhow::Result<i32> {
    match verify(file) {
        Ok(described) => {
            described.print(json)?;
            Ok(0)
        }
        Err(refused) => {
            eprintln!("error: {refused}");
            Ok(1)
        }
    }
}

/// `stockraft admin backup --out FILE`: downloads a backup from `node` (module docs); exit code
/// 0 once it is written and checked, 1 if the node refused.
pub async fn run_download(
    transport: &HttpTransport,
    node: &str,
    secret: &str,
    out: &Path,
    json: bool,
) -> anyhow::Result<i32> {
    let url = format!("{}://{node}{}", transport.scheme(), routes::ADMIN_BACKUP);
    let request = transport
        .http_client()
        .get(&url)
        .header(SECRET_HEADER, secret)
        .send();
    let mut response = tokio::time::timeout(ANSWER_TIMEOUT, request)
        .await
        .with_context(|| format!("no answer from {node} in {ANSWER_TIMEOUT:?}"))?
        .with_context(|| format!("asking {url}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => eprintln!(
                "error {status} {}: {}",
                error.error.code, error.error.message
            ),
            Err(_) => eprintln!("error {status}: {}", String::from_utf8_lossy(&body)),
        }
        return Ok(1);
    }
    let temp = temp_name(out);
    let downloaded = async {
        let mut file =
            std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        loop {
            let chunk = tokio::time::timeout(CHUNK_TIMEOUT, response.chunk())
                .await
                .with_context(|| format!("{node} went silent for {CHUNK_TIMEOUT:?}"))?
                .with_context(|| format!("the backup stream from {node} broke off"))?;
            let Some(chunk) = chunk else {
                break;
            };
            file.write_all(&chunk)
                .with_context(|| format!("writing {}", temp.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("syncing {}", temp.display()))?;
        anyhow::Ok(())
    };
    let finished = match downloaded.await {
        Ok(()) => verify(&temp).map_err(anyhow::Error::from),
        Err(error) => Err(error),
    };
    let described = match finished {
        Ok(described) => described,
        Err(error) => {
            let _ = std::fs::remove_file(&temp);
            return Err(error.context(format!("no backup written to {}", out.display())));
        }
    };
    std::fs::rename(&temp, out).with_context(|| format!("renaming to {}", out.display()))?;
    sync_parent(out)?;
    Described {
        file: out.to_path_buf(),
        ..described
    }
    .print(json)?;
    Ok(0)
}

fn temp_name(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Syncs the directory holding `file`, so that its new name survives a power cut.
fn sync_parent(file: &Path) -> anyhow::Result<()> {
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    StdFs
        .sync_dir(dir)
        .with_context(|| format!("syncing {}", dir.display()))
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (`stockraft admin backup --out`, or a scheduled one).
    #[arg(long)]
    pub from: PathBuf,
    /// The new cluster's configuration: every node in it gets a data directory.
    #[arg(long, default_value = "cluster.toml")]
    pub config: PathBuf,
    /// Read the cluster secret from this file (the configuration is validated as for `serve`).
    #[arg(long, env = "STOCKRAFT_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Delete the nodes' data directories first if they hold anything (else refused).
    #[arg(long)]
    pub force: bool,
}

/// `stockraft restore`: exit code 0 once every directory is written, 1 if refused.
pub async fn run_restore(args: RestoreArgs) -> anyhow::Result<i32> {
    let config = Config::load_with_secret_file(&args.config, args.secret_file.as_deref())?;
    let verified = match restore::verify_file(&StdFs, &args.from) {
        Ok(verified) => verified,
        Err(refused) => {
            eprintln!("error: {refused}; nothing was written");
            return Ok(1);
        }
    };
    let occupied = restore::occupied_dirs(&StdFs, &config);
    if !occupied.is_empty() && !args.force {
        let list: Vec<String> = occupied.iter().map(|d| d.display().to_string()).collect();
        eprintln!(
            "error: data directories not empty: {} (a restore founds a new cluster in empty \
             directories; --force deletes them first); nothing was written",
            list.join(", ")
        );
        return Ok(1);
    }
    for dir in &occupied {
        std::fs::remove_dir_all(dir).with_context(|| format!("deleting {}", dir.display()))?;
    }
    let fs: Arc<dyn Fs> = Arc::new(StdFs);
    let restored = restore::write_nodes(fs, &args.from, &verified, &config).await?;
    println!(
        "restored {} at log index {} into a new cluster {} ({} records, {} held reservations, \
         {} idempotency keys, {} events, log time {}):",
        args.from.display(),
        restored.log_index,
        restored.cluster,
        verified.contents.records,
        verified.contents.held_reservations,
        verified.contents.idempotency_keys,
        verified.contents.events_kept,
        rfc3339_ms(verified.header.log_time_ms),
    );
    for (id, dir) in &restored.nodes {
        println!("  node {id}: {}", dir.display());
    }
    println!("start every node: they elect a leader among themselves; nodes of the old cluster are refused");
    Ok(0)
}
