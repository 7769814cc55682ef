//! The simulated clients: random creates, adjusts, reserves and reads over a few hot SKUs and
//! many cold ones, with and without expected versions and idempotency keys, retrying keyed
//! writes after unknown outcomes. Every operation is recorded for the checkers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use madsim::rand::Rng;
use serde_json::Value;

use super::SimCluster;
use crate::checker::{Event, Op, Outcome};
use crate::client::wire::{AdjustRequest, CreateRequest, ReserveRequest};
use crate::transport::WireRequest;

pub const STORE: &str = "s1";
/// SKUs most operations go to, so they contend.
pub const HOT_SKUS: usize = 3;
/// SKUs touched now and then.
pub const COLD_SKUS: usize = 12;
/// How long a client waits for one answer (longer than the nodes' write deadline).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a keyed write whose outcome stays unknown.
const KEYED_ATTEMPTS_MAX: usize = 4;
/// Bound (exclusive) on a client's pause between operations, in ms: short and random, so the
/// clients' operations interleave and overlap rather than run in lockstep.
const THINK_MS_MAX: u64 = 40;

pub fn sku_name(index: usize) -> String {
    if index < HOT_SKUS {
        format!("hot-{index}")
    } else {
        format!("cold-{index}")
    }
}

/// One client operation as the workload chooses it.
#[derive(Debug, Clone)]
pub struct ClientOp {
    pub sku: String,
    pub op: Op,
    pub idempotency_key: Option<String>,
    pub local_read: bool,
}

/// Everything the clients saw, in completion order.
#[derive(Debug, Default)]
pub struct History {
    /// Per SKU, the events for the linearizability checker.
    pub events: BTreeMap<String, Vec<Event>>,
    /// Every definite answer per idempotency key: they must all be identical.
    pub keyed_answers: BTreeMap<String, Vec<(u16, Value)>>,
    /// Readable lines, for the trace.
    pub lines: Vec<String>,
    /// Problems seen directly by the clients (e.g. an unexpected status).
    pub anomalies: Vec<String>,
    /// Quantities observed below zero.
    pub negative_quantities: Vec<String>,
    next_id: u64,
}

pub type SharedHistory = Arc<Mutex<History>>;

fn now_ns(start: madsim::time::Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// Draws the next operation of a client.
pub fn draw<R: Rng>(
    rng: &mut R,
    client: usize,
    sequence: usize,
    last_versions: &BTreeMap<String, u64>,
) -> ClientOp {
    let index = if rng.gen_bool(0.75) {
        rng.gen_range(0..HOT_SKUS)
    } else {
        rng.gen_range(HOT_SKUS..HOT_SKUS + COLD_SKUS)
    };
    let sku = sku_name(index);
    let last_version = last_versions.get(&sku).copied();
    let expected_version = |rng: &mut R| rng.gen_bool(0.3).then(|| last_version.unwrap_or(1));
    let op = match rng.gen_range(0..100) {
        0..=9 => Op::Create {
            initial: rng.gen_range(0..60),
        },
        10..=34 => {
            let delta = if rng.gen_bool(0.7) {
                rng.gen_range(1..15)
            } else {
                -rng.gen_range(1..10)
            };
            Op::Adjust {
                delta,
                expected_version: expected_version(rng),
            }
        }
        35..=69 => Op::Reserve {
            qty: rng.gen_range(0..8),
            expected_version: expected_version(rng),
        },
        _ => Op::Read,
    };
    let is_write = !matches!(op, Op::Read);
    ClientOp {
        sku,
        idempotency_key: (is_write && rng.gen_bool(0.5)).then(|| format!("c{client}-op{sequence}")),
        local_read: !is_write && rng.gen_bool(0.25),
        op,
    }
}

fn json_bytes(body: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(body).expect("request bodies serialize")
}

fn wire_request(op: &ClientOp) -> WireRequest {
    let record = format!("/api/inventory/stores/{STORE}/inventory/{}", op.sku);
    let (method, path, body) = match &op.op {
        Op::Create { initial } => (
            "POST",
            "/api/inventory".to_owned(),
            Some(json_bytes(&CreateRequest {
                sku: op.sku.clone(),
                store_id: STORE.to_owned(),
                initial_quantity: *initial,
            })),
        ),
        Op::Adjust {
            delta,
            expected_version,
        } => (
            "POST",
            format!("{record}/adjust"),
            Some(json_bytes(&AdjustRequest {
                delta: *delta,
                expected_version: *expected_version,
            })),
        ),
        Op::Reserve {
            qty,
            expected_version,
        } => (
            "POST",
            format!("{record}/reserve"),
            Some(json_bytes(&ReserveRequest {
                qty: *qty,
                expected_version: *expected_version,
            })),
        ),
        Op::Read if op.local_read => ("GET", format!("{record}?consistency=local"), None),
        Op::Read => ("GET", record, None),
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if let Some(key) = &op.idempotency_key {
        headers.push(("idempotency-key".to_owned(), key.clone()));
    }
    WireRequest {
        method: method.to_owned(),
        path,
        headers,
        body: body.unwrap_or_default(),
    }
}

/// What one HTTP answer means for the checker. `None`: definitely nothing happened (503
/// NO_LEADER) and nothing was observed.
enum Answer {
    Definite(Outcome),
    NothingHappened,
    Unknown,
    Unexpected(String),
}

fn classify(op: &Op, status: u16, body: &Value) -> Answer {
    let code = body["error"]["code"].as_str().unwrap_or("");
    let record = |value: &Value| match (value["qty"].as_i64(), value["version"].as_u64()) {
        (Some(qty), Some(version)) => Answer::Definite(Outcome::Ok { qty, version }),
        _ => Answer::Unexpected(format!("malformed record in {body}")),
    };
    match (status, code) {
        (200 | 201, _) => match op {
            Op::Adjust { .. } | Op::Reserve { .. } => record(&body["record"]),
            Op::Create { .. } => record(&body["data"]),
            Op::Read => record(body),
        },
        (404, "NOT_FOUND") => Answer::Definite(Outcome::NotFound),
        (409, _) => match (op, body["error"]["details"]["currentVersion"].as_u64()) {
            (Op::Create { .. }, Some(version)) => {
                Answer::Definite(Outcome::AlreadyExists { version })
            }
            (_, Some(actual)) => Answer::Definite(Outcome::VersionMismatch { actual }),
            _ => Answer::Unexpected(format!("409 without a version: {body}")),
        },
        (422, "INSUFFICIENT_STOCK") => match body["error"]["details"]["available"].as_i64() {
            Some(available) => Answer::Definite(Outcome::InsufficientStock { available }),
            None => Answer::Unexpected(format!("422 without availability: {body}")),
        },
        // Both refuse before anything is proposed or forwarded.
        (503, "NO_LEADER" | "NOT_A_MEMBER") => Answer::NothingHappened,
        (503, _) | (0, _) => Answer::Unknown,
        _ => Answer::Unexpected(format!("status {status}: {body}")),
    }
}

/// Runs one client: `operations` operations one after the other against random nodes.
pub async fn run_client(
    cluster: Arc<SimCluster>,
    client: usize,
    operations: usize,
    history: SharedHistory,
    start: madsim::time::Instant,
) {
    let mut last_versions: BTreeMap<String, u64> = BTreeMap::new();
    for sequence in 0..operations {
        let op = draw(
            &mut madsim::rand::thread_rng(),
            client,
            sequence,
            &last_versions,
        );
        let outcome = perform(&cluster, client, &op, &history, start).await;
        if let Some(Outcome::Ok { version, .. } | Outcome::VersionMismatch { actual: version }) =
            outcome
        {
            last_versions.insert(op.sku.clone(), version);
        }
        let think_ms = madsim::rand::thread_rng().gen_range(0..THINK_MS_MAX);
        madsim::time::sleep(Duration::from_millis(think_ms)).await;
    }
}

/// Performs one logical operation (with retries for keyed writes) and records it.
async fn perform(
    cluster: &SimCluster,
    client: usize,
    op: &ClientOp,
    history: &SharedHistory,
    start: madsim::time::Instant,
) -> Option<Outcome> {
    let invoked_at = now_ns(start);
    let attempts = if op.idempotency_key.is_some() {
        KEYED_ATTEMPTS_MAX
    } else {
        1
    };
    let mut result = Answer::NothingHappened;
    let mut maybe_applied = false;
    for _ in 0..attempts {
        let node = madsim::rand::thread_rng().gen_range(1..=cluster.ids().len() as u64);
        let (status, body) = match cluster.call(node, wire_request(op), CLIENT_TIMEOUT).await {
            Ok(response) => (
                response.status,
                serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            ),
            Err(_) => (0, Value::Null),
        };
        result = classify(&op.op, status, &body);
        if let (Some(key), Answer::Definite(_)) = (&op.idempotency_key, &result) {
            let mut answer = body.clone();
            if let Some(error) = answer.get_mut("error").and_then(Value::as_object_mut) {
                error.remove("timestamp");
            }
            let mut history = history.lock().expect("history lock");
            history
                .keyed_answers
                .entry(key.clone())
                .or_default()
                .push((status, answer));
        }
        match result {
            Answer::Unknown => maybe_applied = true,
            Answer::NothingHappened if maybe_applied => result = Answer::Unknown,
            _ => break,
        }
    }
    let completed_at = now_ns(start);
    let mut history = history.lock().expect("history lock");
    let id = history.next_id;
    history.next_id += 1;
    let line = format!(
        "t={:08.3}s c{client} #{id} {} {:?} key={:?}",
        completed_at as f64 / 1e9,
        op.sku,
        op.op,
        op.idempotency_key
    );
    let outcome = match result {
        Answer::Definite(outcome) => Some(outcome),
        Answer::Unknown => Some(Outcome::Unknown),
        Answer::NothingHappened => None,
        Answer::Unexpected(message) => {
            history.anomalies.push(format!("{line}: {message}"));
            None
        }
    };
    history.lines.push(format!("{line} -> {outcome:?}"));
    if let Some(Outcome::Ok { qty, .. }) = &outcome {
        if *qty < 0 {
            history.negative_quantities.push(line.clone());
        }
    }
    let checked = match (&op.op, &outcome) {
        // Local reads may be stale by design; unknown reads observed nothing.
        (Op::Read, _) if op.local_read => false,
        (Op::Read, Some(Outcome::Unknown)) => false,
        (_, Some(_)) => true,
        (_, None) => false,
    };
    if checked {
        let outcome = outcome.expect("checked events have an outcome");
        let unknown = outcome == Outcome::Unknown;
        history
            .events
            .entry(op.sku.clone())
            .or_default()
            .push(Event {
                id,
                op: op.op,
                invoked_at,
                completed_at: (!unknown).then_some(completed_at),
                outcome,
            });
    }
    outcome
}
