//! Snapshots asked for on a clock: the one loop that does it ([`snapshot_every`]), and the
//! timer `/api/sync/start|stop` controls ([`SnapshotTimer`]).
//!
//! A node asks Raft for snapshots in three ways: the snapshot policy, checked every second
//! (`node::SnapshotPolicy`, weighing entries and log bytes against the snapshot's size); the
//! operator's timer, every `intervalMs` whatever the policy says; and on demand
//! (`App::snapshot_and_purge`). The first two are the same loop with a different question
//! ("due?"). Both end when Raft refuses a trigger: it only does once it has stopped.

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::raft::Raft;

/// Every `period`, asks `due` whether a snapshot is due and if so asks Raft for one (openraft
/// drops the request while a build is in progress). Ends when Raft stops.
pub async fn snapshot_every<F, Fut>(raft: Raft, period: Duration, mut due: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        tokio::time::sleep(period).await;
        if due().await && raft.trigger().snapshot().await.is_err() {
            return;
        }
    }
}

/// The snapshot timer `/api/sync/start|stop` controls: a task on this node that asks Raft for a
/// snapshot every `interval_ms` (in addition to the snapshot policy, `node::SnapshotPolicy`).
/// What it reports is a `client::wire::SnapshotSchedule`.
#[derive(Default)]
pub struct SnapshotTimer {
    /// The interval and the task, while running.
    running: Mutex<Option<(u64, JoinHandle<()>)>>,
}

impl SnapshotTimer {
    /// The running interval, if any.
    pub fn interval_ms(&self) -> Option<u64> {
        self.lock().as_ref().map(|(interval, _)| *interval)
    }

    fn lock(&self) -> MutexGuard<'_, Option<(u64, JoinHandle<()>)>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts (or restarts with a new interval) the timer's task.
    pub fn start(&self, raft: Raft, interval_ms: u64) {
        let period = Duration::from_millis(interval_ms);
        let task = tokio::spawn(snapshot_every(raft, period, || std::future::ready(true)));
        if let Some((_, previous)) = self.lock().replace((interval_ms, task)) {
            previous.abort();
        }
    }

    /// Stops the timer's task; returns whether one was running.
    pub fn stop(&self) -> bool {
        match self.lock().take() {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}
