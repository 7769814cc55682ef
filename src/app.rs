//! The application: one node's handle on the replicated inventory. HTTP handlers call this and
//! nothing below it.
//!
//! It owns the decisions that sit between a client and Raft:
//! - **who serves a write**: the leader proposes; a follower forwards to the leader
//!   (`api::write`), and nobody acknowledges anything Raft has not committed and applied;
//! - **when**: time enters the log here, stamped by the leader ([`App::propose`]);
//! - **reads**: linearizable through a read-index round on the leader, or local on request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::ReadPolicy;
use openraft_rt::WatchReceiver;

use crate::config::Config;
use crate::inventory::{IdempotencyKey, Record, RecordKey, Request, Response};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{Applied, NodeId, Raft, RaftMetrics};
use crate::storage::StorageError;
use crate::transport::Transport;

/// Why a proposal did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; nothing was proposed. Safe to retry elsewhere.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The entry was proposed but its fate is unknown (leader changed before it committed).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// Raft is shutting down or broken on this node.
    #[error("raft unavailable: {0}")]
    Unavailable(String),
}

/// Why a linearizable read could not be served here.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("raft unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Counters behind `GET /api/metrics`. Relaxed atomics: they are statistics, not state.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub conflicts: AtomicU64,
    pub idempotent_hits: AtomicU64,
    pub adjust_stock: AtomicU64,
    pub reserve_stock: AtomicU64,
    pub create_record: AtomicU64,
    pub get_inventory: AtomicU64,
    pub forwarded: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn all(&self) -> [(&'static str, &AtomicU64); 9] {
        [
            ("requests", &self.requests),
            ("errors", &self.errors),
            ("conflicts", &self.conflicts),
            ("idempotentHits", &self.idempotent_hits),
            ("adjustStock", &self.adjust_stock),
            ("reserveStock", &self.reserve_stock),
            ("createRecord", &self.create_record),
            ("getInventory", &self.get_inventory),
            ("forwarded", &self.forwarded),
        ]
    }

    /// Current values by their seed-compatible names.
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        self.all()
            .into_iter()
            .map(|(name, counter)| (name, counter.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn reset(&self) {
        for (_, counter) in self.all() {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// The periodic snapshot policy controlled by `/api/sync/start|stop`: a task on this node that
/// asks Raft for a snapshot every `interval_ms` (in addition to openraft's entry-count policy).
#[derive(Default)]
pub struct SnapshotSchedule {
    running: std::sync::Mutex<Option<(u64, tokio::task::JoinHandle<()>)>>,
}

impl SnapshotSchedule {
    /// The running interval, if any.
    pub fn interval_ms(&self) -> Option<u64> {
        self.lock().as_ref().map(|(interval, _)| *interval)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, tokio::task::JoinHandle<()>)>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts (or restarts with a new interval) the periodic snapshot task.
    pub fn start(&self, raft: Raft, interval_ms: u64) {
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
            }
        });
        if let Some((_, previous)) = self.lock().replace((interval_ms, task)) {
            previous.abort();
        }
    }

    /// Stops the periodic task; returns whether one was running.
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

/// One node's application state, shared by all request handlers.
pub struct App {
    pub id: NodeId,
    pub raft: Raft,
    pub state: StateMachineStore,
    pub config: Arc<Config>,
    pub transport: Arc<dyn Transport>,
    pub counters: Counters,
    pub snapshot_schedule: SnapshotSchedule,
    started_at: tokio::time::Instant,
}

impl App {
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: StateMachineStore,
        config: Arc<Config>,
        transport: Arc<dyn Transport>,
    ) -> Self {
        Self {
            id,
            raft,
            state,
            config,
            transport,
            counters: Counters::default(),
            snapshot_schedule: SnapshotSchedule::default(),
            started_at: tokio::time::Instant::now(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    /// A copy of Raft's metrics, for routes that report them. The request path uses
    /// [`App::with_metrics`] instead: a copy clones the membership and replication maps.
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow_watched().clone()
    }

    /// Runs `read` on Raft's current metrics without copying them. Keep `read` short: it holds
    /// the metrics channel's read lock.
    pub fn with_metrics<T>(&self, read: impl FnOnce(&RaftMetrics) -> T) -> T {
        read(&self.raft.metrics().borrow_watched())
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.with_metrics(|metrics| metrics.current_leader)
    }

    /// Whether this node is in the cluster's membership; `None` before the cluster is founded
    /// (or before a joining node first hears from it).
    pub fn is_member(&self) -> Option<bool> {
        self.with_metrics(|metrics| {
            let stored = &metrics.membership_config;
            stored
                .log_id()
                .is_some()
                .then(|| stored.membership().get_node(&self.id).is_some())
        })
    }

    /// The HTTP address of `node`, from the live membership (falling back to `cluster.toml`).
    pub fn address_of(&self, node: NodeId) -> Option<String> {
        let live = self.with_metrics(|metrics| {
            let membership = metrics.membership_config.membership();
            membership.get_node(&node).map(|found| found.addr.clone())
        });
        live.or_else(|| self.config.node(node).map(|n| n.addr.clone()))
    }

    /// Proposes `command` as the leader: stamps the log time, waits until the entry is committed
    /// by a quorum (each member flushed it) and applied here, and returns the state machine's
    /// answer.
    pub async fn propose(
        &self,
        command: crate::inventory::Command,
        idempotency_key: Option<String>,
    ) -> Result<Response, ProposeError> {
        let request = Request {
            command,
            proposed_at_ms: wall_clock_ms(),
            idempotency: idempotency_key.map(|key| IdempotencyKey {
                key,
                ttl_ms: self.config.api.idempotency_ttl_ms,
            }),
        };
        match self.raft.client_write(request).await {
            Ok(written) => match written.data {
                Applied::Command(response) => Ok(response),
                Applied::Nothing => Err(ProposeError::Unavailable(
                    "a command entry produced no answer".into(),
                )),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ProposeError::NotLeader {
                    leader: forward.leader_id,
                })
            }
            Err(RaftError::APIError(error)) => Err(ProposeError::OutcomeUnknown(error.to_string())),
            // Raft stopped (shutdown or a storage failure) while the entry may already have
            // been replicated: its fate is unknown, not "nothing happened".
            Err(RaftError::Fatal(fatal)) => Err(ProposeError::OutcomeUnknown(fatal.to_string())),
        }
    }

    /// Reads a record after confirming leadership with a quorum and waiting until this node has
    /// applied everything committed before the read began (read index).
    pub async fn read_linearizable(&self, key: &RecordKey) -> Result<Option<Record>, ReadError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(self.state.record(key)?),
            Err(RaftError::APIError(error)) => {
                use openraft::errors::LinearizableReadError;
                match error {
                    LinearizableReadError::ForwardToLeader(forward) => Err(ReadError::NotLeader {
                        leader: forward.leader_id,
                    }),
                    other => Err(ReadError::Unavailable(other.to_string())),
                }
            }
            Err(RaftError::Fatal(fatal)) => Err(ReadError::Unavailable(fatal.to_string())),
        }
    }

    /// Reads this node's applied state, which may be behind the cluster.
    pub fn read_local(&self, key: &RecordKey) -> Result<Option<Record>, StorageError> {
        self.state.record(key)
    }
}

/// Milliseconds since the Unix epoch on this node's clock (virtual under madsim). Only the
/// leader calls this, and only to stamp a proposal; the state machine never does.
pub fn wall_clock_ms() -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    #[cfg(madsim)]
    let now_ms = now_ms.saturating_add_signed(crate::sim::faults::clock_skew_ms());
    now_ms
}
