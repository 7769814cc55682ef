//! One simulation run: start a cluster, drive clients while a seeded fault schedule plays, heal,
//! wait for the cluster to converge, then check everything the clients were promised.
//!
//! Checks after every run (each failure is a line in [`RunReport::violations`]):
//! - **linearizability** of every SKU's client history ([`crate::checker`]), which implies no
//!   oversell and no lost acknowledged write as seen by clients;
//! - **stock conservation**: the final quantity equals the acknowledged creates, adjusts and
//!   reserves, plus some subset of the operations whose outcome is unknown (each fully applied or
//!   absent); never below zero;
//! - **exactly-once idempotency**: every definite answer under one key is identical;
//! - **replica agreement**: all nodes' state machines are byte-identical once converged;
//! - **liveness**: once healed, the cluster elects a leader and every node catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bugs::{plant, PlantedBug};
use super::faults::{self, Fault, Scheduled};
use super::workload::{self, History, SharedHistory, STORE};
use super::{SimCluster, SimOptions};
use crate::checker::{self, CheckError, Event, Op, Outcome};
use crate::inventory::RecordKey;
use crate::raft::NodeId;
use crate::transport::WireRequest;

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub seed: u64,
    pub nodes: u64,
    pub clients: usize,
    pub operations_per_client: usize,
    /// Length of the fault window, in simulated ms.
    pub fault_window_ms: u64,
    pub inject_faults: bool,
    pub bug: PlantedBug,
}

impl RunOptions {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            clients: 4,
            operations_per_client: 40,
            fault_window_ms: 12_000,
            inject_faults: true,
            bug: PlantedBug::None,
        }
    }
}

/// Bound on simulated time for one run: a run that needs more is stuck (a liveness bug).
const SIMULATED_TIME_LIMIT: Duration = Duration::from_secs(600);
/// How long a healed cluster may take to elect a leader and converge, in simulated time.
const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the number of reachable sums tracked by the conservation check.
const CONSERVATION_SUMS_MAX: usize = 1 << 16;

/// The result of one run.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub seed: u64,
    pub ops_checked: usize,
    pub unknown_ops: usize,
    /// SKUs whose linearizability search gave up (neither proven nor refuted).
    pub unchecked_skus: usize,
    pub faults: BTreeMap<&'static str, usize>,
    pub violations: Vec<String>,
    pub trace: Vec<String>,
    pub trace_hash: u64,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

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
    let cluster = Arc::new(SimCluster::start(SimOptions {
        nodes: options.nodes,
        ..SimOptions::default()
    }));
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
    let clients: Vec<_> = (0..options.clients)
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
    let history = history.lock().expect("history lock");
    check_everything(&cluster, leader, &history, &mut report);
    finish(report, &history)
}

/// Applies one scheduled fault at its time and heals it when it ends (if it took effect).
pub async fn play(
    cluster: &SimCluster,
    scheduled: &Scheduled,
    start: madsim::time::Instant,
    trace: &mut Vec<String>,
) -> FaultOutcome {
    let begin = Duration::from_millis(scheduled.start_ms);
    madsim::time::sleep(begin.saturating_sub(start.elapsed())).await;
    let at = start.elapsed().as_secs_f64();
    let target = match &scheduled.fault {
        Fault::IsolateLeader | Fault::CrashLeader | Fault::RestartLeaderAtOnce { .. } => {
            cluster.leader().await
        }
        _ => None,
    };
    trace.push(format!(
        "t={at:08.3}s fault {:?} target={target:?} for {} ms",
        scheduled.fault, scheduled.duration_ms
    ));
    let outcome = apply_fault(cluster, &scheduled.fault, target).await;
    trace.push(format!(
        "t={:08.3}s fault {}: {outcome:?}",
        start.elapsed().as_secs_f64(),
        scheduled.fault.kind()
    ));
    madsim::time::sleep(Duration::from_millis(scheduled.duration_ms)).await;
    if outcome == FaultOutcome::Applied {
        heal_fault(cluster, &scheduled.fault, target).await;
    }
    outcome
}

/// Whether a fault took effect. A refused fault (the cluster said no to a membership change)
/// changed nothing, so there is nothing to heal: healing it anyway would inject a different
/// fault than the schedule names (e.g. restart a healthy leader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    Applied,
    Refused,
}

fn others(cluster: &SimCluster, excluded: &[NodeId]) -> Vec<NodeId> {
    cluster
        .ids()
        .into_iter()
        .filter(|id| !excluded.contains(id))
        .collect()
}

/// Applies `fault`; returns whether it took effect.
async fn apply_fault(cluster: &SimCluster, fault: &Fault, target: Option<NodeId>) -> FaultOutcome {
    match fault {
        Fault::Partition { minority } => cluster.partition(minority, &others(cluster, minority)),
        Fault::IsolateLeader => {
            if let Some(leader) = target {
                cluster.partition(&[leader], &others(cluster, &[leader]));
            }
        }
        Fault::ClogLink { from, to } => cluster.clog(*from, *to),
        Fault::Lossy {
            loss_rate,
            latency_ms_max,
        } => cluster.degrade_network(*loss_rate, *latency_ms_max),
        Fault::Crash { node } => cluster.kill(*node),
        Fault::CrashLeader => {
            if let Some(leader) = target {
                cluster.kill(leader);
            }
        }
        Fault::RestartLeaderAtOnce {
            loss_rate,
            latency_ms_max,
        } => {
            if let Some(leader) = target {
                cluster.restart(leader);
            }
            cluster.degrade_network(*loss_rate, *latency_ms_max);
        }
        Fault::SnapshotStorm { node } => {
            // Snapshot and purge right now, then every second until healed.
            let _ = admin(
                cluster,
                *node,
                "/api/cluster/snapshot",
                &serde_json::json!({}),
            )
            .await;
            let body = serde_json::json!({ "intervalMs": 1000 });
            let _ = cluster
                .call(
                    *node,
                    WireRequest::post_json("/api/sync/start", &body),
                    Duration::from_secs(2),
                )
                .await;
        }
        Fault::ClockSkew { node, offset_ms } => {
            faults::set_clock_skew(cluster.host(*node), *offset_ms)
        }
        Fault::Demote { node } => {
            let body = serde_json::json!({ "ids": [node], "keepAsLearners": true });
            if admin(cluster, *node, "/api/cluster/remove", &body).await != Some(200) {
                return FaultOutcome::Refused;
            }
        }
        Fault::TransferLeader { to } => {
            let body = serde_json::json!({ "to": to });
            if admin(cluster, *to, "/api/cluster/transfer-leader", &body).await != Some(200) {
                return FaultOutcome::Refused;
            }
        }
        Fault::WipeAndRejoin { node } => {
            let body = serde_json::json!({ "ids": [node] });
            let members = others(cluster, &[*node]);
            if admin_through_members(cluster, &members, "/api/cluster/remove", &body).await
                != Some(200)
            {
                return FaultOutcome::Refused;
            }
            cluster.kill(*node);
            cluster.wipe(*node);
        }
    }
    FaultOutcome::Applied
}

/// An admin request (with the cluster secret) to node `via`; the status, if any answer came.
async fn admin(
    cluster: &SimCluster,
    via: NodeId,
    path: &str,
    body: &serde_json::Value,
) -> Option<u16> {
    admin_answer(cluster, via, path, body)
        .await
        .map(|(status, _)| status)
}

async fn admin_answer(
    cluster: &SimCluster,
    via: NodeId,
    path: &str,
    body: &serde_json::Value,
) -> Option<(u16, serde_json::Value)> {
    let request = WireRequest::post_json(path, body).with_secret(super::cluster::SIM_SECRET);
    let response = cluster
        .call(via, request, Duration::from_secs(10))
        .await
        .ok()?;
    let body = serde_json::from_slice(&response.body).unwrap_or_default();
    Some((response.status, body))
}

/// Like [`admin`], through the first of `candidates` that is a member of the cluster: a node
/// that was wiped earlier (and not yet re-added) refuses at once with `NOT_A_MEMBER`.
async fn admin_through_members(
    cluster: &SimCluster,
    candidates: &[NodeId],
    path: &str,
    body: &serde_json::Value,
) -> Option<u16> {
    for &via in candidates {
        match admin_answer(cluster, via, path, body).await {
            Some((503, answer)) if answer["error"]["code"] == "NOT_A_MEMBER" => continue,
            other => return other.map(|(status, _)| status),
        }
    }
    None
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
        madsim::time::sleep(Duration::from_millis(300)).await;
    }
    false
}

/// One round of [`restore_membership`]: true when every node is already a voter; otherwise
/// re-adds missing nodes and promotes learners.
async fn membership_settled(cluster: &SimCluster, leader: NodeId) -> bool {
    let request = WireRequest::get("/api/cluster").with_secret(super::cluster::SIM_SECRET);
    let view: serde_json::Value = match cluster.call(leader, request, Duration::from_secs(5)).await
    {
        Ok(response) if response.status == 200 => {
            serde_json::from_slice(&response.body).unwrap_or_default()
        }
        _ => return false,
    };
    let members = view["data"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut settled = true;
    for id in cluster.ids() {
        let role = members
            .iter()
            .find(|m| m["id"] == id)
            .and_then(|m| m["role"].as_str().map(str::to_owned));
        match role.as_deref() {
            Some("voter") => {}
            Some(_) => {
                settled = false;
                let body = serde_json::json!({ "ids": [id] });
                let _ = admin(cluster, leader, "/api/cluster/promote", &body).await;
            }
            None => {
                settled = false;
                let body = serde_json::json!({ "id": id, "addr": super::cluster::address(id) });
                let _ = admin(cluster, leader, "/api/cluster/learners", &body).await;
            }
        }
    }
    settled
}

async fn heal_fault(cluster: &SimCluster, fault: &Fault, target: Option<NodeId>) {
    match fault {
        Fault::Partition { .. } | Fault::IsolateLeader | Fault::ClogLink { .. } => cluster.heal(),
        Fault::Lossy { .. } | Fault::RestartLeaderAtOnce { .. } => cluster.restore_network(),
        Fault::Crash { node } => cluster.restart(*node),
        Fault::CrashLeader => {
            if let Some(leader) = target {
                cluster.restart(leader);
            }
        }
        Fault::SnapshotStorm { node } => {
            let body = serde_json::json!({});
            let _ = cluster
                .call(
                    *node,
                    WireRequest::post_json("/api/sync/stop", &body),
                    Duration::from_secs(2),
                )
                .await;
        }
        Fault::ClockSkew { node, .. } => faults::set_clock_skew(cluster.host(*node), 0),
        Fault::Demote { node } => {
            let body = serde_json::json!({ "ids": [node] });
            let _ = admin(cluster, *node, "/api/cluster/promote", &body).await;
        }
        Fault::WipeAndRejoin { node } => {
            // The fault killed it (a refused one is not healed): start it empty. Re-adding
            // happens in `restore_membership`.
            cluster.restart(*node);
        }
        Fault::TransferLeader { .. } => {}
    }
}

/// The final phase: every fault healed, whatever the schedule left behind.
fn heal_everything(cluster: &SimCluster) {
    cluster.heal();
    cluster.restore_network();
    faults::clear_clock_skews();
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
            let health = cluster.health(leader).await.unwrap_or_default();
            let committed = health["committedIndex"].as_u64();
            let leader_applied = cluster.applied(leader).map(|id| id.index);
            if applied.len() == 1 && committed.is_some() && committed == leader_applied {
                return Some(leader);
            }
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
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
        let request = WireRequest::get(format!("/api/inventory/stores/{STORE}/inventory/{sku}"));
        let Ok(response) = cluster.call(leader, request, Duration::from_secs(5)).await else {
            continue;
        };
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
        let outcome = match response.status {
            200 => match (body["qty"].as_i64(), body["version"].as_u64()) {
                (Some(qty), Some(version)) => Outcome::Ok { qty, version },
                _ => continue,
            },
            404 => Outcome::NotFound,
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

fn check_everything(
    cluster: &SimCluster,
    leader: NodeId,
    history: &History,
    report: &mut RunReport,
) {
    report.violations.extend(
        history
            .anomalies
            .iter()
            .map(|a| format!("client anomaly: {a}")),
    );
    report.violations.extend(
        history
            .negative_quantities
            .iter()
            .map(|q| format!("negative quantity observed: {q}")),
    );
    check_idempotent_answers(history, report);
    check_replicas_agree(cluster, report);
    for (sku, events) in &history.events {
        report.ops_checked += events.len();
        report.unknown_ops += events
            .iter()
            .filter(|e| e.outcome == Outcome::Unknown)
            .count();
        match checker::check(events) {
            Ok(_) => {}
            Err(CheckError::GaveUp { .. }) => report.unchecked_skus += 1,
            Err(error) => report
                .violations
                .push(format!("linearizability of {sku}: {error}")),
        }
        let key = RecordKey::new(STORE, sku).expect("workload SKUs are valid");
        let final_record = cluster.record(leader, &key);
        if let Err(message) = check_conservation(events, final_record.map(|r| r.quantity)) {
            report
                .violations
                .push(format!("conservation of {sku}: {message}"));
        }
    }
}

fn check_idempotent_answers(history: &History, report: &mut RunReport) {
    for (key, answers) in &history.keyed_answers {
        if answers.windows(2).any(|pair| pair[0] != pair[1]) {
            report.violations.push(format!(
                "idempotency key {key} got different answers: {answers:?}"
            ));
        }
    }
}

fn check_replicas_agree(cluster: &SimCluster, report: &mut RunReport) {
    let ids = cluster.ids();
    let reference = cluster.state_pairs(ids[0]);
    for id in &ids[1..] {
        if cluster.state_pairs(*id) != reference {
            report.violations.push(format!(
                "replica agreement: node {id} differs from node {}",
                ids[0]
            ));
        }
    }
}

/// Final quantity = acknowledged effects + a subset of unknown effects; at most one create.
fn check_conservation(events: &[Event], final_qty: Option<i64>) -> Result<(), String> {
    let mut definite: i64 = 0;
    let mut creates = 0;
    let mut unknown = Vec::new();
    let mut unknown_create = false;
    for event in events {
        let effect = match event.op {
            Op::Create { initial } => initial,
            Op::Adjust { delta, .. } => delta,
            Op::Reserve { qty, .. } => -qty,
            Op::Read => continue,
        };
        match event.outcome {
            Outcome::Ok { .. } => {
                definite += effect;
                creates += usize::from(matches!(event.op, Op::Create { .. }));
            }
            Outcome::Unknown => {
                unknown.push(effect);
                unknown_create |= matches!(event.op, Op::Create { .. });
            }
            _ => {}
        }
    }
    if creates > 1 {
        return Err(format!("{creates} creates were acknowledged"));
    }
    let Some(final_qty) = final_qty else {
        return if creates == 1 {
            Err("an acknowledged create is missing".into())
        } else {
            Ok(())
        };
    };
    if final_qty < 0 {
        return Err(format!("final quantity {final_qty} is negative"));
    }
    if creates == 0 && !unknown_create {
        return Err(format!(
            "the record exists (qty {final_qty}) but no create was sent"
        ));
    }
    let mut reachable = BTreeSet::from([definite]);
    for effect in unknown {
        let next: Vec<i64> = reachable.iter().map(|sum| sum + effect).collect();
        reachable.extend(next);
        if reachable.len() > CONSERVATION_SUMS_MAX {
            return Ok(());
        }
    }
    if reachable.contains(&final_qty) {
        Ok(())
    } else {
        Err(format!(
            "final quantity {final_qty} is not acknowledged effects {definite} plus any subset of unknown ones"
        ))
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
