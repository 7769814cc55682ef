//! One simulation run: start a cluster, drive clients while a seeded fault schedule plays, heal,
//! wait for the cluster to converge, then check everything the clients were promised.
//!
//! This file only orchestrates: faults are applied and healed by [`super::play`], and the
//! invariants checked after a run live in [`super::checks`], one file each. Liveness is checked
//! here because it is part of the orchestration: once healed, the cluster must elect a leader
//! and every node catch up, or the run cannot go on to the final reads and checks (each failure
//! is a line in [`RunReport::violations`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::batches;
use super::bugs::{plant, PlantedBug};
use super::checks::{check_everything, FeedExpectation, FeedFacts, EXPIRY_BOUND_MS};
use super::consumer::{self, FeedReading, ReaderOptions};
use super::faults;
use super::play::{self, heal_everything};
pub use super::play::{play, FaultOutcome};
use super::report::RunReport;
use super::workload::{self, History, SharedHistory, STORE};
use super::{SimCluster, SimOptions};
use crate::app::wall_clock_ms;
use crate::checker::{Event, Op, Outcome};
use crate::client::wire::{AddLearnerRequest, MemberRole, MembersRequest};
use crate::client::Consistency;
use crate::inventory::ReservationStatus;
use crate::raft::NodeId;

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub nodes: u64,
    pub clients: usize,
    pub operations_per_client: usize,
    /// Clients sending batches ([`batches`]), each [`batches::BATCHES_PER_CLIENT`] of them.
    pub batch_clients: usize,
    /// Length of the fault window, in simulated ms.
    pub fault_window_ms: u64,
    pub inject_faults: bool,
    pub bug: PlantedBug,
    /// A consumer pages the event feed through the faults ([`consumer`]).
    pub feed_consumer: bool,
    /// The small-retention variant: the nodes keep only [`SMALL_RETENTION_KEPT_MAX`] events
    /// and snapshot often, so chunks are forgotten, carried by snapshots and caught up with
    /// during the run, and the consumer (a slow one) is told 410 and counts what it lost.
    pub small_retention: bool,
}

/// Events kept in the small-retention variant: the least the feed takes (one chunk of 64),
/// far below the few hundred events of a run.
pub const SMALL_RETENTION_KEPT_MAX: u64 = 64;
/// Entries between snapshots in the small-retention variant (the default is 200, about one
/// run's worth): several snapshots a run, so nodes that fell behind install them.
const SMALL_RETENTION_SNAPSHOT_EVERY_ENTRIES: u64 = 40;
/// Every how many seeds the small-retention variant runs (seeds divisible by it).
const SMALL_RETENTION_EVERY_SEEDS: u64 = 4;

impl RunOptions {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            clients: 4,
            operations_per_client: 40,
            batch_clients: 1,
            fault_window_ms: 12_000,
            inject_faults: true,
            bug: PlantedBug::None,
            feed_consumer: true,
            small_retention: seed.is_multiple_of(SMALL_RETENTION_EVERY_SEEDS),
        }
    }

    /// The cluster this run starts.
    fn sim_options(&self) -> SimOptions {
        let mut sim = SimOptions {
            nodes: self.nodes,
            ..SimOptions::default()
        };
        if self.small_retention {
            sim.events.kept_max = SMALL_RETENTION_KEPT_MAX;
            sim.raft.snapshot_every_entries = SMALL_RETENTION_SNAPSHOT_EVERY_ENTRIES;
        }
        sim
    }

    fn feed_expectation(&self) -> FeedExpectation {
        if self.small_retention {
            FeedExpectation::Retained
        } else {
            FeedExpectation::Complete
        }
    }

    fn reader_options(&self) -> ReaderOptions {
        ReaderOptions {
            retention: self.small_retention,
            slow: self.small_retention,
        }
    }
}

/// Bound on simulated time for one run: a run that needs more is stuck (a liveness bug).
const SIMULATED_TIME_LIMIT: Duration = Duration::from_secs(600);
/// How long a healed cluster may take to elect a leader and converge, in simulated time.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between rounds of [`restore_membership`]: the election timeout's floor (300 ms), so a
/// round that found no leader, or a membership still changing, gives the cluster about one
/// election or commit before the next round asks again.
const MEMBERSHIP_RETRY_INTERVAL: Duration = Duration::from_millis(300);
/// Pause between polls of [`wait_for_convergence`]: a few heartbeats (50 ms), fine enough that
/// a run does not idle long after converging, coarse enough to keep the health traffic light.
const CONVERGENCE_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the healer's `GET /api/cluster` may take: as long as a client's request (the
/// workload's `CLIENT_TIMEOUT`), longer than the nodes' 3 s write deadline.
const CLUSTER_VIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the run waits for the holds left at its end to fall due, in simulated time: past
/// the workload's longest TTL (3 s) plus [`EXPIRY_BOUND_MS`], room for deadlines stamped by a
/// leader whose clock ran ahead (45 s at most, `faults`). Idle time: cheap to simulate.
const EXPIRY_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long one final read may take: as long as a client's read (the workload's
/// `CLIENT_TIMEOUT`), since it is recorded and checked like one.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one seed on a fresh OS thread with a fresh madsim runtime (required for a rerun of the
/// same seed in one process to be identical).
pub fn run_seed(options: RunOptions) -> RunReport {
    let seed = options.seed;
    std::thread::spawn(move || {
        let mut runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.set_time_limit(SIMULATED_TIME_LIMIT);
        runtime.block_on(simulate(options))
    })
    .join()
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        RunReport {
            seed,
            violations: vec![format!("the simulation panicked: {message}")],
            ..RunReport::default()
        }
    })
}

async fn simulate(options: RunOptions) -> RunReport {
    plant(options.bug);
    faults::clear_clock_skews();
    let mut report = RunReport {
        seed: options.seed,
        ..RunReport::default()
    };
    let cluster = Arc::new(SimCluster::start(options.sim_options()));
    if wait_for_convergence(&cluster).await.is_none() {
        report
            .violations
            .push("liveness: no leader elected at start".into());
        return finish(report, &History::default());
    }

    let start = madsim::time::Instant::now();
    let history: SharedHistory = Arc::new(Mutex::new(History::default()));
    let schedule = if options.inject_faults {
        faults::schedule(
            &mut madsim::rand::thread_rng(),
            options.nodes,
            options.fault_window_ms,
        )
    } else {
        Vec::new()
    };
    workload::stock_hold_skus(&cluster, &history, start).await;
    let mut clients: Vec<_> = (0..options.clients)
        .map(|client| {
            madsim::task::spawn(workload::run_client(
                cluster.clone(),
                client,
                options.operations_per_client,
                history.clone(),
                start,
            ))
        })
        .collect();
    clients.extend((0..options.batch_clients).map(|n| {
        madsim::task::spawn(batches::run_batch_client(
            cluster.clone(),
            options.clients + n,
            batches::BATCHES_PER_CLIENT,
            history.clone(),
            start,
        ))
    }));
    let stop_reading = Arc::new(AtomicBool::new(false));
    let reader = options.feed_consumer.then(|| {
        madsim::task::spawn(consumer::follow(
            cluster.clone(),
            options.reader_options(),
            stop_reading.clone(),
        ))
    });
    for scheduled in &schedule {
        *report.faults.entry(scheduled.fault.kind()).or_default() += 1;
        play(&cluster, scheduled, start, &mut report.trace).await;
    }
    for client in clients {
        client.await.expect("a client task failed");
    }

    heal_everything(&cluster);
    if !restore_membership(&cluster).await {
        report
            .violations
            .push("liveness: could not make every node a voter again after healing".into());
    }
    report
        .trace
        .push(format!("t={:08.3}s healed", start.elapsed().as_secs_f64()));
    let Some(leader) = wait_for_convergence(&cluster).await else {
        report
            .violations
            .push("liveness: the healed cluster did not elect a leader and converge".into());
        let history = history.lock().expect("history lock");
        return finish(report, &history);
    };
    final_reads(&cluster, leader, &history, start).await;
    let Some(settled_at_ms) = wait_for_expiries(&cluster, leader).await else {
        report
            .violations
            .push("liveness: the cluster did not converge again after the holds fell due".into());
        let history = history.lock().expect("history lock");
        return finish(report, &history);
    };
    stop_reading.store(true, Ordering::SeqCst);
    let reading = match reader {
        Some(reader) => {
            let reading = reader.await.expect("the feed consumer failed");
            Some(read_to_the_head(&cluster, leader, options.reader_options(), reading).await)
        }
        None => None,
    };
    if let Some(reading) = &reading {
        report.feed_events_lost = reading.lost_to_retention;
        report.trace.push(format!(
            "feed consumer: {} events in {} pages, {} unanswered, {} lost to retention, {} problems",
            reading.seen.len(),
            reading.pages,
            reading.unanswered,
            reading.lost_to_retention,
            reading.problems.len()
        ));
    }
    let history = history.lock().expect("history lock");
    let feed = FeedFacts {
        expectation: options.feed_expectation(),
        reading: reading.as_ref(),
    };
    check_everything(&cluster, &history, settled_at_ms, feed, &mut report);
    finish(report, &history)
}

/// The consumer's last reads, once the cluster has settled: on to the head of the feed.
async fn read_to_the_head(
    cluster: &SimCluster,
    leader: NodeId,
    options: ReaderOptions,
    mut reading: FeedReading,
) -> FeedReading {
    let head = cluster.feed(leader).0.last_seq;
    consumer::catch_up(cluster, head, options, &mut reading).await;
    reading
}

/// Waits until every hold the leader still has has fallen due plus the expiry bound (at most
/// [`EXPIRY_WAIT_MAX`]), then for the cluster to converge. Answers the wall-clock time the
/// expiry check judges deadlines by (the end of the wait, before converging), or `None` if the
/// cluster did not converge.
async fn wait_for_expiries(cluster: &SimCluster, leader: NodeId) -> Option<u64> {
    let last_due_ms = cluster
        .reservations(leader)
        .iter()
        .filter(|reservation| reservation.status == ReservationStatus::Held)
        .map(|reservation| reservation.expires_at_ms)
        .max();
    if let Some(last_due_ms) = last_due_ms {
        let until_ms = last_due_ms.saturating_add(EXPIRY_BOUND_MS);
        let wait = Duration::from_millis(until_ms.saturating_sub(wall_clock_ms()));
        madsim::time::sleep(wait.min(EXPIRY_WAIT_MAX)).await;
    }
    let settled_at_ms = wall_clock_ms();
    wait_for_convergence(cluster).await?;
    Some(settled_at_ms)
}

/// Makes every node a voter again (re-adding removed ones), retrying until it holds.
async fn restore_membership(cluster: &SimCluster) -> bool {
    let deadline = madsim::time::Instant::now() + CONVERGENCE_TIMEOUT;
    while madsim::time::Instant::now() < deadline {
        if let Some(leader) = cluster.claimed_leader().await {
            if membership_settled(cluster, leader).await {
                return true;
            }
        }
        madsim::time::sleep(MEMBERSHIP_RETRY_INTERVAL).await;
    }
    false
}

/// One round of [`restore_membership`]: true when every node is already a voter; otherwise
/// re-adds missing nodes and promotes learners.
async fn membership_settled(cluster: &SimCluster, leader: NodeId) -> bool {
    let admin = cluster
        .admin_client(leader)
        .with_timeout(CLUSTER_VIEW_TIMEOUT);
    let view = match admin.cluster().await.map(|answer| answer.ok()) {
        Ok(Ok(view)) => view.data,
        _ => return false,
    };
    let admin = play::admin_client(cluster, leader);
    let mut settled = true;
    for id in cluster.ids() {
        let role = view.members.iter().find(|m| m.id == id).map(|m| m.role);
        match role {
            Some(MemberRole::Voter) => {}
            Some(MemberRole::Learner) => {
                settled = false;
                let body = MembersRequest {
                    ids: [id].into(),
                    keep_as_learners: false,
                };
                let _ = admin.promote(&body).await;
            }
            None => {
                settled = false;
                let body = AddLearnerRequest {
                    id,
                    addr: super::cluster::address(id),
                    wait: false,
                };
                let _ = admin.add_learner(&body).await;
            }
        }
    }
    settled
}

/// Waits until a majority agrees on a leader and every node has applied the same log id.
async fn wait_for_convergence(cluster: &SimCluster) -> Option<NodeId> {
    let deadline = madsim::time::Instant::now() + CONVERGENCE_TIMEOUT;
    while madsim::time::Instant::now() < deadline {
        if let Some(leader) = cluster.leader().await {
            let applied: BTreeSet<_> = cluster
                .ids()
                .iter()
                .map(|id| cluster.applied(*id))
                .collect();
            let health = cluster.health(leader).await;
            let committed = health.and_then(|h| h.raft.committed_index);
            let leader_applied = cluster.applied(leader).map(|id| id.index);
            if applied.len() == 1 && committed.is_some() && committed == leader_applied {
                return Some(leader);
            }
        }
        madsim::time::sleep(CONVERGENCE_POLL_INTERVAL).await;
    }
    None
}

/// One linearizable read of every SKU through the leader, recorded like any client read.
async fn final_reads(
    cluster: &SimCluster,
    leader: NodeId,
    history: &SharedHistory,
    start: madsim::time::Instant,
) {
    for index in 0..workload::HOT_SKUS + workload::COLD_SKUS {
        let sku = workload::sku_name(index);
        let invoked_at = start.elapsed().as_nanos() as u64;
        let client = cluster.client(leader).with_timeout(FINAL_READ_TIMEOUT);
        let Ok(answer) = client.read(STORE, &sku, Consistency::Linearizable).await else {
            continue;
        };
        let outcome = match (answer.status, answer.body) {
            (200, Ok(record)) => Outcome::Ok {
                qty: record.qty,
                version: record.version,
            },
            (404, _) => Outcome::NotFound,
            _ => continue,
        };
        let completed_at = start.elapsed().as_nanos() as u64;
        let mut history = history.lock().expect("history lock");
        let id = 1_000_000 + index as u64;
        history.events.entry(sku).or_default().push(Event {
            id,
            op: Op::Read,
            invoked_at,
            completed_at: Some(completed_at),
            outcome,
        });
    }
}

fn finish(mut report: RunReport, history: &History) -> RunReport {
    let mut trace = std::mem::take(&mut report.trace);
    trace.extend(history.lines.iter().cloned());
    trace.sort();
    report.trace_hash = fnv1a(trace.iter().flat_map(|line| line.bytes().chain([b'\n'])));
    report.trace = trace;
    report
}

/// FNV-1a: a stable hash (std's hashers are not guaranteed stable across releases).
fn fnv1a(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
