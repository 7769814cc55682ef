//! Telemetry: the numbers a Prometheus server scrapes from `GET /metrics`.
//!
//! One [`Telemetry`] per node, made in `node::start` and handed to the layers that observe
//! something: the HTTP layer (requests by route and status, latency), the WAL (each
//! group-commit sync: how long, how many waiters shared it), the state machine and the network
//! (snapshot build, install and send: how long, how many bytes). What some other part already
//! knows is read at scrape time rather than pushed, so it is never stale and never kept twice:
//! Raft's position (term, leader, commit, applied, per-follower lag) from openraft's metrics,
//! proposals in flight from `App`'s permits, disk use from the WAL and the disk-space alarm.
//!
//! The encoding is `prometheus-client`'s (the Prometheus project's Rust client), not
//! hand-written text: names, `_total` suffixes, histogram buckets and escaping follow the
//! exposition format. The seed-compatible JSON counters stay at `/api/metrics`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

/// Labels of an HTTP request: the route pattern (not the path, so SKUs do not become series),
/// the method and the status code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

/// What happened to a snapshot.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum SnapshotPhase {
    /// Built from the state machine into a file.
    Build,
    /// Streamed to a follower (the whole transfer).
    Send,
    /// Received and installed over the state machine.
    Install,
}

impl SnapshotPhase {
    fn label(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Send => "send",
            Self::Install => "install",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FollowerLabels {
    pub follower: u64,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.1 ms to ~3.3 s (doubling).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Snapshot durations: 1 ms to ~65 s (doubling).
fn snapshot_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every series of one node, in groups by what they observe. The groups register in this
/// order, which is the order of the exposition text.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    pub requests: RequestSeries,
    pub wal: WalSeries,
    pub snapshots: SnapshotSeries,
    /// Read from openraft at scrape time.
    pub raft: RaftSeries,
    pub writes: WriteSeries,
    /// Read from the WAL and the disk-space alarm at scrape time.
    pub disk: DiskSeries,
    pub backups: BackupSeries,
}

/// Scheduled backups written by this node (as leader, `app::backups`): the last success, and
/// how many were written, skipped (nothing committed since the last) or failed.
#[derive(Debug)]
pub struct BackupSeries {
    /// Unix time of the last backup written, in seconds; 0 before the first.
    pub last_success_seconds: Gauge,
    pub last_log_index: Gauge,
    pub last_size_bytes: Gauge,
    pub written: Counter<u64, AtomicU64>,
    pub skipped: Counter<u64, AtomicU64>,
    pub failures: Counter<u64, AtomicU64>,
}

/// Client requests: how many, how long, how many commands wait on Raft.
#[derive(Debug)]
pub struct RequestSeries {
    pub answered: Family<RequestLabels, Counter>,
    pub seconds: HistogramFamily<RouteLabels>,
    /// Read from `App`'s permits at scrape time.
    pub proposals_in_flight: Gauge,
}

/// The Raft log's group commit.
#[derive(Debug)]
pub struct WalSeries {
    pub sync_seconds: Histogram,
    pub sync_batch: Histogram,
}

/// Snapshots built, sent and installed.
#[derive(Debug)]
pub struct SnapshotSeries {
    pub seconds: HistogramFamily<PhaseLabels>,
    pub bytes: Family<PhaseLabels, Gauge>,
}

/// This node's Raft position, and on the leader each follower's lag.
#[derive(Debug)]
pub struct RaftSeries {
    pub term: Gauge,
    pub leader: Gauge,
    pub is_leader: Gauge,
    pub last_log_index: Gauge,
    pub committed_index: Gauge,
    pub applied_index: Gauge,
    pub snapshot_index: Gauge,
    pub purged_index: Gauge,
    pub follower_lag: Family<FollowerLabels, Gauge>,
}

/// How client writes travelled: forwarded to the leader (and in what batches), or answered by
/// replaying a keyed write's first answer. Counted here only: `GET /api/metrics` reports
/// these totals since its last reset (`app::Counters`).
#[derive(Debug)]
pub struct WriteSeries {
    pub forwarded: Counter<u64, AtomicU64>,
    pub forward_batch_items: Histogram,
    pub idempotent_replays: Counter<u64, AtomicU64>,
}

/// What this node holds on disk, whether its disk-space alarm is raised, and how many
/// reservations its applied state holds.
#[derive(Debug)]
pub struct DiskSeries {
    pub wal_bytes: Gauge,
    pub data_dir_bytes: Gauge,
    pub no_space: Gauge,
    /// Reservations held, and ended ones remembered, in the applied state.
    pub reservations_held: Gauge,
    pub reservations_ended: Gauge,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stockraft");
        let r = &mut registry;
        let requests = RequestSeries::register(r);
        let wal = WalSeries::register(r);
        let snapshots = SnapshotSeries::register(r);
        let raft = RaftSeries::register(r);
        let writes = WriteSeries::register(r);
        let disk = DiskSeries::register(r);
        let backups = BackupSeries::register(r);
        Self {
            registry,
            requests,
            wal,
            snapshots,
            raft,
            writes,
            disk,
            backups,
        }
    }

    /// One group-commit sync of the Raft log.
    pub fn wal_synced(&self, took: Duration, waiters: usize) {
        self.wal.sync_seconds.observe(took.as_secs_f64());
        self.wal.sync_batch.observe(waiters as f64);
    }

    /// A snapshot built, sent or installed.
    pub fn snapshot_done(&self, phase: SnapshotPhase, took: Duration, bytes: u64) {
        let labels = PhaseLabels {
            phase: phase.label(),
        };
        self.snapshots
            .seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.snapshots
            .bytes
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// One answered client request.
    pub fn request_done(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .answered
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.requests
            .seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// The exposition text (OpenMetrics text format, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

impl RequestSeries {
    fn register(r: &mut Registry) -> Self {
        Self {
            answered: add(
                r,
                "http_requests",
                "Client requests (/api) answered, by route pattern, method and status",
                None,
                Family::default(),
            ),
            seconds: add(
                r,
                "http_request_duration",
                "Time from a client request's arrival to its answer, by route pattern",
                Some(Unit::Seconds),
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            proposals_in_flight: add(
                r,
                "raft_proposals_in_flight",
                "Client commands proposed to Raft on this node and not yet answered",
                None,
                Gauge::default(),
            ),
        }
    }
}

impl WalSeries {
    fn register(r: &mut Registry) -> Self {
        Self {
            sync_seconds: add(
                r,
                "wal_sync_duration",
                "Time of one group-commit fsync of the Raft log",
                Some(Unit::Seconds),
                latency_histogram(),
            ),
            sync_batch: add(
                r,
                "wal_sync_batch_waiters",
                "Appends and votes that shared one fsync (group commit)",
                None,
                Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            ),
        }
    }
}

impl SnapshotSeries {
    fn register(r: &mut Registry) -> Self {
        Self {
            seconds: add(
                r,
                "snapshot_duration",
                "Time to build, send (to one follower) or install a snapshot",
                Some(Unit::Seconds),
                Family::new_with_constructor(snapshot_histogram as fn() -> Histogram),
            ),
            bytes: add(
                r,
                "snapshot_last_size",
                "Size of the last snapshot built, sent or installed",
                Some(Unit::Bytes),
                Family::default(),
            ),
        }
    }
}

impl RaftSeries {
    fn register(r: &mut Registry) -> Self {
        let mut gauge = |name: &str, help: &str| add(r, name, help, None, Gauge::default());
        let term = gauge("raft_term", "This node's current Raft term");
        let leader = gauge(
            "raft_leader_id",
            "The node this node believes leads (0: none known)",
        );
        let is_leader = gauge("raft_is_leader", "1 if this node leads");
        let last_log_index = gauge("raft_last_log_index", "The last entry in this node's log");
        let committed_index = gauge(
            "raft_committed_index",
            "The last entry this node knows to be committed",
        );
        let applied_index = gauge(
            "raft_applied_index",
            "The last entry applied to this node's state machine",
        );
        let snapshot_index = gauge(
            "raft_snapshot_index",
            "The last entry covered by this node's snapshot",
        );
        let purged_index = gauge(
            "raft_purged_index",
            "The last entry purged from this node's log",
        );
        let follower_lag = add(
            r,
            "raft_follower_lag_entries",
            "On the leader: entries each other member is behind the leader's last entry",
            None,
            Family::default(),
        );
        Self {
            term,
            leader,
            is_leader,
            last_log_index,
            committed_index,
            applied_index,
            snapshot_index,
            purged_index,
            follower_lag,
        }
    }
}

impl WriteSeries {
    fn register(r: &mut Registry) -> Self {
        Self {
            forwarded: add(
                r,
                "forwarded_requests",
                "Requests this node forwarded to the leader",
                None,
                Counter::default(),
            ),
            forward_batch_items: add(
                r,
                "forward_batch_items",
                "Writes per batch this node sent to the leader (one request each)",
                None,
                Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            ),
            idempotent_replays: add(
                r,
                "idempotent_replays",
                "Keyed writes answered by replaying the first answer",
                None,
                Counter::default(),
            ),
        }
    }
}

impl DiskSeries {
    fn register(r: &mut Registry) -> Self {
        Self {
            wal_bytes: add(
                r,
                "wal_size",
                "Bytes in the Raft log's segment files",
                Some(Unit::Bytes),
                Gauge::default(),
            ),
            data_dir_bytes: add(
                r,
                "data_dir_size",
                "Bytes in this node's data directory at the last measurement",
                Some(Unit::Bytes),
                Gauge::default(),
            ),
            no_space: add(
                r,
                "storage_no_space",
                "1 while the disk-space alarm refuses client writes (507)",
                None,
                Gauge::default(),
            ),
            reservations_held: add(
                r,
                "reservations_held",
                "Reservations held in this node's applied state",
                None,
                Gauge::default(),
            ),
            reservations_ended: add(
                r,
                "reservations_ended",
                "Ended reservations this node's applied state still remembers",
                None,
                Gauge::default(),
            ),
        }
    }
}

impl BackupSeries {
    fn register(r: &mut Registry) -> Self {
        Self {
            last_success_seconds: add(
                r,
                "backup_last_success_timestamp",
                "Unix time of the last scheduled backup this node wrote (0: none yet)",
                Some(Unit::Seconds),
                Gauge::default(),
            ),
            last_log_index: add(
                r,
                "backup_last_log_index",
                "Log index of the last scheduled backup this node wrote",
                None,
                Gauge::default(),
            ),
            last_size_bytes: add(
                r,
                "backup_last_size",
                "Size of the last scheduled backup this node wrote",
                Some(Unit::Bytes),
                Gauge::default(),
            ),
            written: add(
                r,
                "backup_written",
                "Scheduled backups written by this node",
                None,
                Counter::default(),
            ),
            skipped: add(
                r,
                "backup_skipped",
                "Scheduled backups skipped: nothing committed since the last one",
                None,
                Counter::default(),
            ),
            failures: add(
                r,
                "backup_failures",
                "Scheduled backups that failed (logged; writes go on)",
                None,
                Counter::default(),
            ),
        }
    }
}

/// Registers `metric` under `name` (with its unit suffix, if any) and returns it: the registry
/// keeps one handle, the caller the other.
fn add<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Sets a gauge from an unsigned value (saturating: a gauge is an i64).
pub fn set_gauge(gauge: &Gauge, value: u64) {
    gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_series_with_its_type_and_labels() {
        let telemetry = Telemetry::new();
        telemetry.request_done("/api/x/{sku}", "POST", 201, Duration::from_millis(3));
        telemetry.wal_synced(Duration::from_micros(150), 4);
        telemetry.snapshot_done(SnapshotPhase::Build, Duration::from_millis(20), 1234);
        set_gauge(&telemetry.raft.term, 7);
        let text = telemetry.encode();
        for expected in [
            "# TYPE stockraft_http_requests counter",
            r#"stockraft_http_requests_total{route="/api/x/{sku}",method="POST",status="201"} 1"#,
            "# TYPE stockraft_http_request_duration_seconds histogram",
            "stockraft_wal_sync_batch_waiters_count 1",
            r#"stockraft_snapshot_last_size_bytes{phase="build"} 1234"#,
            "stockraft_raft_term 7",
            "# EOF",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }
}
