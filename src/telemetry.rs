//! Telemetry: the numbers a Prometheus server scrapes from `GET /metrics`.
//!
//! One [`Telemetry`] per node, made in `node::start` and handed to the layers that observe
//! something: the HTTP layer (requests by route and status, latency), the WAL (each
//! group-commit sync: how long, how many waiters shared it), the state machine and the network
//! (snapshot build, install and send: how long, how many bytes). What some other part already
//! knows is read at scrape time rather than pushed, so it is never stale and never kept twice:
//! Raft's position (term, leader, commit, applied, per-follower lag) from openraft's metrics,
//! proposals in flight from `App`'s permits, disk use from the WAL and the disk-space watcher.
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

/// Every series of one node.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: HistogramFamily<RouteLabels>,
    pub proposals_in_flight: Gauge,
    pub wal_sync_seconds: Histogram,
    pub wal_sync_batch: Histogram,
    pub snapshot_seconds: HistogramFamily<PhaseLabels>,
    pub snapshot_bytes: Family<PhaseLabels, Gauge>,
    // Read from openraft (and the App's counters) at scrape time.
    pub raft_term: Gauge,
    pub raft_leader: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_last_log_index: Gauge,
    pub raft_committed_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_snapshot_index: Gauge,
    pub raft_purged_index: Gauge,
    pub raft_follower_lag: Family<FollowerLabels, Gauge>,
    pub forwarded: Counter<u64, AtomicU64>,
    pub forward_batch_items: Histogram,
    pub idempotent_hits: Counter<u64, AtomicU64>,
    pub wal_bytes: Gauge,
    pub data_dir_bytes: Gauge,
    pub no_space: Gauge,
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
        let seconds = Some(Unit::Seconds);
        let bytes = Some(Unit::Bytes);
        let requests = add(
            r,
            "http_requests",
            "Client requests (/api) answered, by route pattern, method and status",
            None,
            Family::default(),
        );
        let request_seconds = add(
            r,
            "http_request_duration",
            "Time from a client request's arrival to its answer, by route pattern",
            seconds.clone(),
            Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        );
        let proposals_in_flight = add(
            r,
            "raft_proposals_in_flight",
            "Client commands proposed to Raft on this node and not yet answered",
            None,
            Gauge::default(),
        );
        let wal_sync_seconds = add(
            r,
            "wal_sync_duration",
            "Time of one group-commit fsync of the Raft log",
            seconds.clone(),
            latency_histogram(),
        );
        let wal_sync_batch = add(
            r,
            "wal_sync_batch_waiters",
            "Appends and votes that shared one fsync (group commit)",
            None,
            Histogram::new(exponential_buckets(1.0, 2.0, 10)),
        );
        let snapshot_seconds = add(
            r,
            "snapshot_duration",
            "Time to build, send (to one follower) or install a snapshot",
            seconds,
            Family::new_with_constructor(snapshot_histogram as fn() -> Histogram),
        );
        let snapshot_bytes = add(
            r,
            "snapshot_last_size",
            "Size of the last snapshot built, sent or installed",
            bytes.clone(),
            Family::default(),
        );
        let raft_term = add(
            r,
            "raft_term",
            "This node's current Raft term",
            None,
            Gauge::default(),
        );
        let raft_leader = add(
            r,
            "raft_leader_id",
            "The node this node believes leads (0: none known)",
            None,
            Gauge::default(),
        );
        let raft_is_leader = add(
            r,
            "raft_is_leader",
            "1 if this node leads",
            None,
            Gauge::default(),
        );
        let raft_last_log_index = add(
            r,
            "raft_last_log_index",
            "The last entry in this node's log",
            None,
            Gauge::default(),
        );
        let raft_committed_index = add(
            r,
            "raft_committed_index",
            "The last entry this node knows to be committed",
            None,
            Gauge::default(),
        );
        let raft_applied_index = add(
            r,
            "raft_applied_index",
            "The last entry applied to this node's state machine",
            None,
            Gauge::default(),
        );
        let raft_snapshot_index = add(
            r,
            "raft_snapshot_index",
            "The last entry covered by this node's snapshot",
            None,
            Gauge::default(),
        );
        let raft_purged_index = add(
            r,
            "raft_purged_index",
            "The last entry purged from this node's log",
            None,
            Gauge::default(),
        );
        let raft_follower_lag = add(
            r,
            "raft_follower_lag_entries",
            "On the leader: entries each other member is behind the leader's last entry",
            None,
            Family::default(),
        );
        let forwarded = add(
            r,
            "forwarded_requests",
            "Requests this node forwarded to the leader",
            None,
            Counter::default(),
        );
        let forward_batch_items = add(
            r,
            "forward_batch_items",
            "Writes per batch this node sent to the leader (one request each)",
            None,
            Histogram::new(exponential_buckets(1.0, 2.0, 7)),
        );
        let idempotent_hits = add(
            r,
            "idempotent_replays",
            "Keyed writes answered by replaying the first answer",
            None,
            Counter::default(),
        );
        let wal_bytes = add(
            r,
            "wal_size",
            "Bytes in the Raft log's segment files",
            bytes.clone(),
            Gauge::default(),
        );
        let data_dir_bytes = add(
            r,
            "data_dir_size",
            "Bytes in this node's data directory at the last measurement",
            bytes,
            Gauge::default(),
        );
        let no_space = add(
            r,
            "storage_no_space",
            "1 while the disk-space alarm refuses client writes (507)",
            None,
            Gauge::default(),
        );
        Self {
            registry,
            requests,
            request_seconds,
            proposals_in_flight,
            wal_sync_seconds,
            wal_sync_batch,
            snapshot_seconds,
            snapshot_bytes,
            raft_term,
            raft_leader,
            raft_is_leader,
            raft_last_log_index,
            raft_committed_index,
            raft_applied_index,
            raft_snapshot_index,
            raft_purged_index,
            raft_follower_lag,
            forwarded,
            forward_batch_items,
            idempotent_hits,
            wal_bytes,
            data_dir_bytes,
            no_space,
        }
    }

    /// One group-commit sync of the Raft log.
    pub fn wal_synced(&self, took: Duration, waiters: usize) {
        self.wal_sync_seconds.observe(took.as_secs_f64());
        self.wal_sync_batch.observe(waiters as f64);
    }

    /// A snapshot built, sent or installed.
    pub fn snapshot_done(&self, phase: SnapshotPhase, took: Duration, bytes: u64) {
        let labels = PhaseLabels {
            phase: phase.label(),
        };
        self.snapshot_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        self.snapshot_bytes
            .get_or_create(&labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// One answered client request.
    pub fn request_done(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
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
        set_gauge(&telemetry.raft_term, 7);
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
