//! Backups taken by a node: the consistent state a backup is made of ([`App::backup_source`]),
//! and the leader's scheduled backups ([`write_on_schedule`]).
//!
//! ## Which state, and why it holds every acknowledged write
//! A backup holds at least everything committed when it was asked for (its *target*): on the
//! leader, the commit index after a read-index round (leadership confirmed by a quorum); on a
//! follower, the commit index the leader reports (`GET /api/cluster` on the leader: a follower
//! waits, it does not forward, so the file is streamed by the node asked and the leader's disk
//! and network are spared). The node then waits (at most [`BACKUP_CATCH_UP_WAIT`]) until it has
//! applied the target, and until it holds a snapshot at the target or later, asking Raft for one
//! (`App::snapshot_covering`). A snapshot is the state machine at one applied index, built
//! while applies go on (`raft::snapshot`), so writes are not paused: they wait only while an
//! apply records a before-image. Every write acknowledged before the request began was
//! committed by then, so it is in the backup.
//!
//! A leader elected a moment ago learns its predecessor's last commits only when its own first
//! entry commits, so the commit index it reports may be an entry or two short of what was
//! acknowledged. A follower therefore also waits until it has applied an entry of the leader's
//! term (that first entry or a later one: every entry committed in an earlier term comes before
//! it), and takes the later of the two positions as its target.
//!
//! ## Scheduled backups
//! With `[backup] dir` set, every node runs [`write_on_schedule`], and on each tick only the
//! leader writes: skipped when nothing was committed since the last backup (the newest file's
//! index, read from `dir` at start), else a backup at the commit index into
//! `dir/backup-<index>.srb` (temporary name, sync, rename), then all but the newest `keep`
//! deleted. A failure is logged and counted (`stockraft_backup_failures_total`) and retried at
//! the next tick; it never touches the write path.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::expiry::sleep_while_running;
use super::{App, SnapshotError};
use crate::backup::{self, files, Written};
use crate::client::wire::BackupStatus;
use crate::client::Client;
use crate::config::BackupConfig;
use crate::identity::ClusterId;
use crate::raft::Snapshot;
use crate::storage::fs::{blocking, Fs};
use crate::telemetry::set_gauge;

/// How long a backup waits for this node to apply its target.
pub const BACKUP_CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// How long a follower waits for the leader's commit index.
const LEADER_ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// The state a backup is made of: a snapshot at or after the target, and whose it is.
pub struct BackupSource {
    pub snapshot: Snapshot,
    pub cluster: Option<ClusterId>,
    /// The commit index the snapshot had to reach.
    pub target: u64,
}

fn not_taken(why: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::BackupNotTaken(why.to_string())
}

impl App {
    /// The snapshot a backup asked for now is made of (module docs).
    pub async fn backup_source(&self) -> Result<BackupSource, SnapshotError> {
        let target = self.backup_target().await?;
        self.raft
            .wait(Some(BACKUP_CATCH_UP_WAIT))
            .applied_index_at_least(Some(target), "backup catch-up")
            .await
            .map_err(|error| not_taken(format!("applying up to index {target}: {error}")))?;
        self.snapshot_covering(target).await?;
        let dir = self.snapshot_dir().clone();
        let current = blocking(move || crate::raft::snapshot::current(&dir))
            .await
            .map_err(not_taken)?;
        let snapshot = current.ok_or_else(|| not_taken("no snapshot after building one"))?;
        let index = snapshot.meta.last_log_id.map_or(0, |id| id.index);
        if index < target {
            return Err(not_taken(format!(
                "the newest snapshot ends at {index}, before the target {target}"
            )));
        }
        Ok(BackupSource {
            snapshot,
            cluster: self.identity.cluster(),
            target,
        })
    }

    /// The commit index as of now: the leader's own after a read-index round, or the one the
    /// leader reports to a follower.
    async fn backup_target(&self) -> Result<u64, SnapshotError> {
        let leader = self
            .leader()
            .ok_or_else(|| not_taken("no leader known: a backup needs the commit index"))?;
        if leader == self.id {
            self.read_barrier().await.map_err(not_taken)?;
            return Ok(self.raft_status().committed_index.unwrap_or(0));
        }
        let addr = self
            .address_of(leader)
            .ok_or_else(|| not_taken(format!("the leader {leader}'s address is unknown")))?;
        // The leader's cluster view (an admin route: the secret opens the peer listener).
        let client = Client::new(self.transport.clone(), addr)
            .with_secret(&self.config.cluster.secret)
            .with_timeout(LEADER_ASK_TIMEOUT);
        let view = client
            .cluster()
            .await
            .map_err(not_taken)?
            .ok()
            .map_err(not_taken)?
            .data;
        if view.leader_id != Some(leader) {
            return Err(not_taken(format!(
                "node {leader} is no longer the leader; retry"
            )));
        }
        // An entry of the leader's term applied here: every earlier term's commit is too.
        let term = view.term;
        let applied = self
            .raft
            .wait(Some(BACKUP_CATCH_UP_WAIT))
            .metrics(
                |metrics| {
                    metrics
                        .last_applied
                        .as_ref()
                        .is_some_and(|id| id.leader_id.term >= term)
                },
                "backup: an entry of the leader's term applied",
            )
            .await
            .map_err(|error| not_taken(format!("applying an entry of term {term}: {error}")))?
            .last_applied
            .map_or(0, |id| id.index);
        Ok(view.committed_index.unwrap_or(0).max(applied))
    }

    /// What `GET /api/metrics` says about scheduled backups.
    pub fn backup_status(&self) -> BackupStatus {
        let series = &self.telemetry.backups;
        let written = series.written.get();
        let gauge = |value: i64| (written > 0).then_some(value.max(0) as u64);
        BackupStatus {
            enabled: self.config.backup.dir.is_some(),
            last_success_unix_s: gauge(series.last_success_seconds.get()),
            last_log_index: gauge(series.last_log_index.get()),
            last_size_bytes: gauge(series.last_size_bytes.get()),
            written,
            skipped: series.skipped.get(),
            failures: series.failures.get(),
        }
    }

    /// Writes one backup into `dir` as `backup-<index>.srb`, then prunes to the newest `keep`.
    async fn write_backup_into(
        &self,
        fs: &Arc<dyn Fs>,
        dir: &Path,
        keep: usize,
    ) -> Result<Written, SnapshotError> {
        let source = self.backup_source().await?;
        let index = source.snapshot.meta.last_log_id.map_or(0, |id| id.index);
        let (fs, path, dir) = (
            fs.clone(),
            dir.join(files::file_name(index)),
            dir.to_owned(),
        );
        blocking(move || {
            let written = files::write_atomically(&*fs, &path, |sink| {
                let Snapshot { meta, snapshot } = &source.snapshot;
                backup::write_backup(snapshot, meta, source.cluster, sink).map(|(_, w)| w)
            })?;
            files::prune(&*fs, &dir, keep)?;
            Ok(written)
        })
        .await
        .map_err(not_taken)
    }
}

/// The leader's scheduled backups (module docs): runs until Raft stops or the app is dropped.
pub async fn write_on_schedule(app: Weak<App>, fs: Arc<dyn Fs>, config: BackupConfig) {
    let Some(dir) = config.dir.clone() else {
        return;
    };
    let Some(mut server) = app.upgrade().map(|app| app.raft().server_metrics()) else {
        return;
    };
    let period = Duration::from_secs(config.interval_s);
    let mut last_index = {
        let (fs, dir) = (fs.clone(), dir.clone());
        blocking(move || Ok(files::newest_index(&*fs, &dir)))
            .await
            .unwrap_or(None)
    };
    while sleep_while_running(&mut server, period).await {
        let Some(app) = app.upgrade() else {
            return;
        };
        if let Some(index) = scheduled_round(&app, &fs, &dir, &config, last_index).await {
            last_index = Some(index);
        }
    }
}

/// One tick of the schedule; returns the index of the backup written, if one was.
async fn scheduled_round(
    app: &App,
    fs: &Arc<dyn Fs>,
    dir: &Path,
    config: &BackupConfig,
    last_index: Option<u64>,
) -> Option<u64> {
    if app.leader() != Some(app.id()) {
        return None;
    }
    let series = &app.telemetry().backups;
    let committed = app.raft_status().committed_index;
    if committed.is_none() || committed <= last_index {
        series.skipped.inc();
        return None;
    }
    match app.write_backup_into(fs, dir, config.keep).await {
        Ok(written) => {
            let index = written.header.log_index;
            set_gauge(&series.last_log_index, index);
            set_gauge(&series.last_size_bytes, written.size_bytes);
            set_gauge(&series.last_success_seconds, app.now_ms() / 1_000);
            series.written.inc();
            tracing::info!(
                index,
                bytes = written.size_bytes,
                dir = %dir.display(),
                "wrote a scheduled backup"
            );
            Some(index)
        }
        Err(error) => {
            series.failures.inc();
            tracing::warn!(%error, dir = %dir.display(), "a scheduled backup failed; retrying at the next interval");
            None
        }
    }
}
