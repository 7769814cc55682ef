//! The application: one node's handle on the replicated inventory. Client and admin handlers
//! call this and nothing below it; the one exception is the Raft RPC routes
//! (`api::raft_routes`), which are the server side of the Raft transport and hand each RPC to
//! openraft as is.
//!
//! It owns the decisions that sit between a client and Raft:
//! - **who serves a write**: the leader proposes; a follower forwards to the leader
//!   (`api::leader::at_leader`), and nobody acknowledges anything Raft has not committed and
//!   applied;
//! - **when**: time enters the log here, stamped by the leader from its [`Clock`]
//!   ([`App::propose`]); the simulation injects a skewed clock;
//! - **reads**: linearizable through a read-index round on the leader, or local on request;
//! - **snapshots on demand** ([`App::snapshot_and_purge`], [`App::apply_barrier`]);
//! - **no writes on a full disk**: while this node's disk-space alarm is raised
//!   ([`crate::space`]), [`App::check_space`] refuses client writes before anything is
//!   proposed, here and in the handlers.
//! - **what a node reports about itself**: one reading of its Raft position
//!   ([`raft_status_of`]) for every answer that carries one, and the seed's request counters
//!   (`counters`), each fact counted once.
//!
//! Its parts (Raft, the state machine, the log, the guards) are private: handlers call its
//! methods, which say what they may do with a node.

pub mod backups;
mod counters;
mod error;
pub mod event_stream;
mod events;
pub mod expiry;
pub mod forward;
pub mod periodic_snapshots;
mod quorum_contact;
mod raft_status;
pub mod recent_feed;
mod reservations;

pub use counters::Counted;
use counters::Counters;
use periodic_snapshots::SnapshotTimer;
pub use raft_status::raft_status_of;

pub use error::{ProposeError, ReadError, SnapshotError};
pub use events::{EventsReadError, EVENTS_PAGE_LIMIT_DEFAULT, EVENTS_PAGE_LIMIT_MAX};
pub use reservations::{SKU_VIEW_STORES_MAX, STORE_PAGE_RECORDS_MAX};

use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{ClientWriteError, RaftError};
use openraft::ReadPolicy;
use openraft_rt::WatchReceiver;

use crate::client::wire::{LogStatus, Metrics, RaftStatus, ReservationCounts, SnapshotSchedule};
use crate::config::Config;
use crate::identity::Identity;
use crate::inventory::{IdempotencyId, IdempotencyKey, Record, RecordKey, Request, Response};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{Applied, NodeId, Raft, RaftMetrics};
use crate::space::SpaceGuard;
use crate::storage::snapshots::SnapshotDir;
use crate::storage::wal::Wal;
use crate::storage::StorageError;
use crate::telemetry::Telemetry;
use crate::transport::Transport;

/// Why an apply barrier did not complete.
#[derive(Debug, thiserror::Error)]
#[error("not caught up with commit {target:?} within the deadline: {message}")]
pub struct BarrierError {
    pub target: Option<u64>,
    pub message: String,
}

/// Where the leader reads the time it stamps on proposals. The product reads the system clock;
/// the simulation injects one with a skew per node. Only [`App::propose`] reads it: the state
/// machine never does.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock (virtual under madsim).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        wall_clock_ms()
    }
}

/// How long [`App::snapshot_and_purge`] waits for the snapshot to be built.
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);
/// How long it waits before triggering again (a trigger during another build is dropped).
const SNAPSHOT_RETRIGGER: Duration = Duration::from_secs(1);

/// The storage an [`App`] reads: the state machine, the Raft log (for its size) and the
/// disk-space guard.
pub struct AppStorage {
    pub state: StateMachineStore,
    pub wal: Arc<Wal>,
    pub space: Arc<SpaceGuard>,
    /// The series every layer of this node reports to (`GET /metrics`).
    pub telemetry: Arc<Telemetry>,
    /// Who this node is and which cluster it belongs to (checked on every Raft RPC).
    pub identity: Arc<Identity>,
}

/// One node's application state, shared by all request handlers. Its parts are private:
/// handlers go through its methods.
pub struct App {
    id: NodeId,
    raft: Raft,
    state: StateMachineStore,
    /// The Raft log (read for its size only: Raft owns the writing).
    wal: Arc<Wal>,
    config: Arc<Config>,
    transport: Arc<dyn Transport>,
    counters: Counters,
    snapshot_timer: SnapshotTimer,
    /// This node's disk-space alarm (measured by the server's measurement task; never raised in
    /// the simulation).
    space: Arc<SpaceGuard>,
    telemetry: Arc<Telemetry>,
    identity: Arc<Identity>,
    /// Permits for commands proposed and not yet answered (`api.max_in_flight_proposals`).
    proposals: tokio::sync::Semaphore,
    /// Permits for open event streams (`events.subscribers_max`; `event_stream`).
    feed_subscribers: Arc<tokio::sync::Semaphore>,
    /// The newest events, shared by the node's stream subscribers (`recent_feed`).
    recent_feed: Arc<recent_feed::RecentFeed>,
    /// True once this node stops serving event streams (`event_stream`).
    event_streams_stop: crate::raft::watch::Sender<bool>,
    /// Sends the writes this node forwards to the leader, batched ([`forward`]).
    forwarder: Arc<forward::Forwarder>,
    clock: Arc<dyn Clock>,
    started_at: tokio::time::Instant,
    /// Whether this node is cut off from a quorum ([`quorum_contact`]).
    quorum_contact: quorum_contact::QuorumContact,
}

/// How often a request waiting on Raft (or on a forward to the leader) looks whether it should
/// stop waiting ([`App::until_unservable`]): a fraction of the lease, and rare enough that the
/// timers of requests in flight cost nothing measurable.
const SERVABLE_CHECK_INTERVAL: Duration = Duration::from_millis(50);

impl App {
    pub fn new(
        id: NodeId,
        raft: Raft,
        storage: AppStorage,
        config: Arc<Config>,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let AppStorage {
            state,
            wal,
            space,
            telemetry,
            identity,
        } = storage;
        let proposals = tokio::sync::Semaphore::new(config.api.max_in_flight_proposals);
        let quorum_contact =
            quorum_contact::QuorumContact::new(quorum_contact::Leases::of_election_timeouts(
                config.raft.election_timeout_min_ms,
                config.raft.election_timeout_max_ms,
            ));
        let feed_subscribers = Arc::new(tokio::sync::Semaphore::new(config.events.subscribers_max));
        let forwarder = forward::Forwarder::new(
            id,
            transport.clone(),
            config.cluster.secret.clone(),
            identity.clone(),
            telemetry.clone(),
        );
        Self {
            id,
            raft,
            state,
            wal,
            config,
            transport,
            counters: Counters::default(),
            snapshot_timer: SnapshotTimer::default(),
            space,
            telemetry,
            identity,
            proposals,
            feed_subscribers,
            recent_feed: Arc::default(),
            event_streams_stop: crate::raft::watch::channel(false).0,
            forwarder,
            quorum_contact,
            clock,
            started_at: tokio::time::Instant::now(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The Raft handle, for what is Raft's own business: its RPCs, membership changes,
    /// founding the cluster, shutting down.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Who this node is and which cluster it belongs to (checked on every Raft RPC).
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// This node's disk-space alarm.
    pub fn space(&self) -> &Arc<SpaceGuard> {
        &self.space
    }

    /// The series every layer of this node reports to (`GET /metrics`).
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Where snapshots are built and received.
    pub fn snapshot_dir(&self) -> &SnapshotDir {
        self.state.snapshot_dir()
    }

    /// Bytes in the Raft log's segment files.
    pub fn wal_bytes(&self) -> u64 {
        self.wal.bytes_on_disk()
    }

    /// Counts one request, error, conflict or operation for `GET /api/metrics`.
    pub fn count(&self, counted: Counted) {
        self.counters.bump(counted);
    }

    /// Counts a keyed write answered by replaying its first answer.
    pub fn count_idempotent_replay(&self) {
        self.telemetry.writes.idempotent_replays.inc();
    }

    /// Counts a request forwarded to the leader.
    pub fn count_forwarded(&self) {
        self.telemetry.writes.forwarded.inc();
    }

    /// `GET /api/metrics`: the counters since the last reset, the Raft position, the
    /// disk-space alarm and the log's footprint.
    pub fn metrics_readout(&self) -> Metrics {
        let raft = self.raft_status();
        self.counters.read(
            &self.telemetry,
            raft,
            self.space.status(),
            self.log_status(),
            self.reservation_counts(),
            self.backup_status(),
        )
    }

    /// How many reservations this node's applied state holds; `None` (logged) if unreadable.
    pub fn reservation_counts(&self) -> Option<ReservationCounts> {
        match self.state.reservation_counts() {
            Ok((held, ended)) => Some(ReservationCounts { held, ended }),
            Err(error) => {
                tracing::warn!(%error, "could not read the reservation counts");
                None
            }
        }
    }

    /// `POST /api/metrics/reset`: zeroes the counters of `GET /api/metrics` (not Prometheus's).
    pub fn reset_counters(&self) {
        self.counters.reset(&self.telemetry);
    }

    /// The snapshot timer's state (`/api/sync/status`).
    pub fn snapshot_schedule(&self) -> SnapshotSchedule {
        let interval_ms = self.snapshot_timer.interval_ms();
        SnapshotSchedule {
            running: interval_ms.is_some(),
            interval_ms,
        }
    }

    /// Starts (or restarts with a new interval) the snapshot timer; returns its state.
    pub fn start_snapshot_timer(&self, interval_ms: u64) -> SnapshotSchedule {
        self.snapshot_timer.start(self.raft.clone(), interval_ms);
        self.snapshot_schedule()
    }

    /// Stops the snapshot timer; returns whether it was running.
    pub fn stop_snapshot_timer(&self) -> bool {
        self.snapshot_timer.stop()
    }

    /// Wall-clock milliseconds since the epoch, from the node's clock (virtual under madsim).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Client commands proposed here and not yet answered (the permits taken).
    pub fn proposals_in_flight(&self) -> usize {
        self.config.api.max_in_flight_proposals - self.proposals.available_permits()
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

    /// Where this node's Raft stands now (as `/api/health` and `/api/metrics` report it).
    pub fn raft_status(&self) -> RaftStatus {
        self.with_metrics(raft_status_of)
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.with_metrics(|metrics| metrics.current_leader)
    }

    /// Notes that this node accepted a leader's append now (`api::raft_routes::append`).
    pub fn note_leader_append(&self) {
        self.quorum_contact.note_append();
    }

    /// Why this node is cut off from a quorum, if it is ([`quorum_contact`]): it should then
    /// answer its clients at once rather than wait for a leader it cannot reach.
    pub fn quorum_contact_lost(&self) -> Option<String> {
        self.with_metrics(|metrics| self.quorum_contact.lost(metrics))
    }

    /// Resolves, with the reason, once a request sent to `leader` (this node or the leader it
    /// was forwarded to) should stop waiting for its answer: this node is cut off from a
    /// quorum, or another node is now known to lead. Its outcome is then unknown (`api::leader`
    /// weighs that); the request it waited on may still complete, unseen.
    pub async fn until_unservable(&self, leader: NodeId) -> String {
        loop {
            if let Some(reason) = self.quorum_contact_lost() {
                return reason;
            }
            match self.leader() {
                Some(now) if now != leader => {
                    return format!("node {now} leads now, not node {leader}");
                }
                _ => tokio::time::sleep(SERVABLE_CHECK_INTERVAL).await,
            }
        }
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

    /// Refuses a client write while this node's disk-space alarm is raised. The handlers call it
    /// before routing a write (so every node refuses at once), and [`App::propose`] calls it
    /// again, so a leader short of space also refuses writes forwarded to it and Raft does not
    /// meet a full disk in normal operation.
    pub fn check_space(&self) -> Result<(), ProposeError> {
        match self.space.refusal() {
            None => Ok(()),
            Some(reason) => Err(ProposeError::NoSpace {
                node: self.id,
                reason,
            }),
        }
    }

    /// Proposes `command` as the leader: stamps the log time, waits until the entry is committed
    /// by a quorum (each member flushed it) and applied here, and returns the state machine's
    /// answer. Refused first while this node is short of disk space ([`App::check_space`]).
    /// `idempotency` is the request's key within its client scope (`api::request`).
    pub async fn propose(
        &self,
        command: crate::inventory::Command,
        idempotency: Option<IdempotencyId>,
    ) -> Result<Response, ProposeError> {
        self.check_space()?;
        // A clock that jumped ahead moves log time a step at a time (`inventory::log_time`).
        let applied_log_time_ms = self.state.log_time_ms().unwrap_or(0);
        let request = Request {
            command,
            proposed_at_ms: crate::inventory::proposal_stamp(
                self.clock.now_ms(),
                applied_log_time_ms,
            ),
            idempotency: idempotency.map(|IdempotencyId { scope, key }| IdempotencyKey {
                scope,
                key,
                ttl_ms: self.config.api.idempotency_ttl_ms,
            }),
        };
        // Shed rather than queue: a proposal waiting behind hundreds of others answers late
        // anyway, and the client can retry elsewhere or later.
        let Ok(_permit) = self.proposals.try_acquire() else {
            return Err(ProposeError::Overloaded {
                node: self.id,
                max: self.config.api.max_in_flight_proposals,
            });
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

    /// Sends a client write this node does not lead to `leader`, in the next batch of
    /// forwarded writes ([`forward`]), and waits at most `timeout` for the leader's result.
    /// `None` if the leader's address is unknown (nothing was sent).
    pub async fn forward_proposal(
        &self,
        leader: NodeId,
        item: forward::ProposeItem,
        timeout: Duration,
    ) -> Option<forward::Forwarded> {
        let addr = self.address_of(leader)?;
        self.count_forwarded();
        Some(self.forwarder.propose(leader, &addr, item, timeout).await)
    }

    /// Reads a record after confirming leadership with a quorum and waiting until this node has
    /// applied everything committed before the read began (read index).
    pub async fn read_linearizable(&self, key: &RecordKey) -> Result<Option<Record>, ReadError> {
        self.read_barrier().await?;
        Ok(self.state.record(key)?)
    }

    /// Confirms leadership with a quorum and waits until this node has applied everything
    /// committed before the call (read index): a read of the state after it is linearizable.
    async fn read_barrier(&self) -> Result<(), ReadError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
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

    /// The Raft log's and the snapshots' footprint on this node.
    pub fn log_status(&self) -> LogStatus {
        LogStatus {
            wal_bytes: self.wal.bytes_on_disk(),
            wal_segments: self.wal.segment_count() as u64,
            snapshot_bytes: self.state.snapshot_dir().bytes_on_disk(),
            snapshot_chunk_bytes_peak: crate::raft::network::snapshot_chunk_bytes_peak() as u64,
        }
    }

    /// Reads this node's applied state, which may be behind the cluster.
    pub fn read_local(&self, key: &RecordKey) -> Result<Option<Record>, StorageError> {
        self.state.record(key)
    }

    /// Waits (up to `deadline`) until this node has applied everything it knew to be committed
    /// when called; returns (that commit index, the applied index reached).
    pub async fn apply_barrier(
        &self,
        deadline: Duration,
    ) -> Result<(Option<u64>, Option<u64>), BarrierError> {
        let target = self.raft_status().committed_index;
        let reached = self
            .raft
            .wait(Some(deadline))
            .applied_index_at_least(target, "apply barrier")
            .await
            .map_err(|error| BarrierError {
                target,
                message: error.to_string(),
            })?;
        Ok((target, reached.last_applied.map(|id| id.index)))
    }

    /// Builds a snapshot on this node covering everything applied now, then purges the log up
    /// to it. Returns the snapshot's last index (None when nothing was applied yet).
    pub async fn snapshot_and_purge(&self) -> Result<Option<u64>, SnapshotError> {
        let failed = |error: String| SnapshotError::NotCompleted(error);
        let Some(applied) = self.raft_status().applied_index else {
            return Ok(None);
        };
        let index = self.snapshot_covering(applied).await?;
        self.raft
            .trigger()
            .purge_log(index)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Some(index))
    }

    /// Waits until this node holds a snapshot at `index` or later, asking Raft for one; returns
    /// the snapshot's index. openraft drops a trigger while a build is in progress (one started
    /// by its own policy, say, at an earlier index): trigger again until a snapshot covers it.
    async fn snapshot_covering(&self, index: u64) -> Result<u64, SnapshotError> {
        let failed = |error: String| SnapshotError::NotCompleted(error);
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        loop {
            self.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let waited = self
                .raft
                .wait(Some(SNAPSHOT_RETRIGGER))
                .metrics(
                    |m| m.snapshot.is_some_and(|id| id.index >= index),
                    "snapshot built",
                )
                .await;
            match waited {
                Ok(metrics) => {
                    let built = metrics.snapshot.map_or(0, |id| id.index);
                    assert!(built >= index, "the snapshot waited for covers {index}");
                    return Ok(built);
                }
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(failed(error.to_string()))
                }
                Err(_) => {}
            }
        }
    }
}

/// Milliseconds since the Unix epoch on this machine's clock (virtual under madsim). Used for
/// proposals through [`SystemClock`], and for display timestamps (error bodies, health); the
/// state machine never reads it.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
