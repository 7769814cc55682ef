//! The simulated clients: random creates, adjusts, reserves and reads over a few hot SKUs and
//! many cold ones, with and without expected versions and idempotency keys, retrying keyed
//! writes after unknown outcomes; and, a share of the time, the hold traffic of [`super::holds`]
//! (holds, carts, commits, releases) on SKUs of their own. Beside these clients, batch clients
//! ([`super::batches`]) send batches to the same SKUs. Every operation is recorded for the
//! checkers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use madsim::rand::Rng;

use super::history::{log_index_of, Reply};
pub use super::history::{History, SharedHistory, STORE};
use super::holds::{self, HOLD_SKUS};
use super::SimCluster;
use crate::checker::{Event, Op, Outcome};
use crate::client::wire::{codes, AdjustRequest, CreateRequest, RecordBody, ReserveRequest};
use crate::client::{Answer, ClientError, Consistency, WriteOptions};
use crate::raft::NodeId;

/// SKUs most operations go to, so they contend.
pub const HOT_SKUS: usize = 3;
/// SKUs touched now and then.
pub const COLD_SKUS: usize = 12;
/// SKUs no client ever creates: lines of the batch traffic ([`super::batches`]) find them
/// missing by design.
pub const GHOST_SKUS: usize = 2;
/// How long a client waits for one answer (longer than the nodes' write deadline).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a keyed write whose outcome stays unknown.
const KEYED_ATTEMPTS_MAX: usize = 4;
/// Bound (exclusive) on a client's pause between operations, in ms: short and random, so the
/// clients' operations interleave and overlap rather than run in lockstep.
const THINK_MS_MAX: u64 = 40;
/// Share of a client's operations that are hold traffic ([`super::holds`]), in percent.
const HOLD_TRAFFIC_PERCENT: u32 = 35;
/// Share of the plain operations sent to the hold SKUs (to stock them), in percent.
const HOLD_SKU_PLAIN_PERCENT: u32 = 20;

pub fn sku_name(index: usize) -> String {
    if index < HOT_SKUS {
        format!("hot-{index}")
    } else {
        format!("cold-{index}")
    }
}

pub fn ghost_sku_name(index: usize) -> String {
    format!("ghost-{index}")
}

pub fn is_ghost_sku(sku: &str) -> bool {
    sku.starts_with("ghost-")
}

/// Every SKU the workload touches: the hot and cold ones, then the hold SKUs, then the ghost
/// SKUs.
pub fn all_skus() -> Vec<String> {
    let plain = (0..HOT_SKUS + COLD_SKUS).map(sku_name);
    plain
        .chain((0..HOLD_SKUS).map(holds::hold_sku_name))
        .chain((0..GHOST_SKUS).map(ghost_sku_name))
        .collect()
}

/// One client operation as the workload chooses it.
#[derive(Debug, Clone)]
pub struct ClientOp {
    pub sku: String,
    pub op: Op,
    pub idempotency_key: Option<String>,
    pub local_read: bool,
}

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
    let on_hold_sku = rng.gen_range(0..100) < HOLD_SKU_PLAIN_PERCENT;
    let sku = if on_hold_sku {
        holds::hold_sku_name(rng.gen_range(0..HOLD_SKUS))
    } else if rng.gen_bool(0.75) {
        sku_name(rng.gen_range(0..HOT_SKUS))
    } else {
        sku_name(rng.gen_range(HOT_SKUS..HOT_SKUS + COLD_SKUS))
    };
    let last_version = last_versions.get(&sku).copied();
    let expected_version = |rng: &mut R| rng.gen_bool(0.3).then(|| last_version.unwrap_or(1));
    let op = match rng.gen_range(0..100) {
        0..=9 => Op::Create {
            initial: rng.gen_range(0..60),
        },
        // Hold SKUs mostly gain stock: holds and carts take it.
        10..=59 if on_hold_sku => Op::Adjust {
            delta: rng.gen_range(1..15),
            expected_version: None,
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

/// Sends `op` to node `node` through the typed client; answers the reply and the log index an
/// accepted write's answer names (`x-stockraft-log-index`).
async fn send(
    cluster: &SimCluster,
    node: NodeId,
    op: &ClientOp,
) -> Result<(Reply, Option<u64>), ClientError> {
    fn reply<T>(answer: Answer<T>, record: impl FnOnce(T) -> RecordBody) -> (Reply, Option<u64>) {
        let log_index = log_index_of(&answer);
        ((answer.status, answer.body.map(record)), log_index)
    }
    let client = cluster.client(node).with_timeout(CLIENT_TIMEOUT);
    let options = WriteOptions {
        idempotency_key: op.idempotency_key.clone(),
        if_match: None,
    };
    let sku = op.sku.as_str();
    Ok(match op.op {
        Op::Create { initial } => {
            let body = CreateRequest {
                sku: op.sku.clone(),
                store_id: STORE.to_owned(),
                initial_quantity: initial,
            };
            reply(client.create(&body, &options).await?, |created| {
                created.data
            })
        }
        Op::Adjust {
            delta,
            expected_version,
        } => {
            let body = AdjustRequest {
                delta,
                expected_version,
            };
            reply(client.adjust(STORE, sku, &body, &options).await?, |c| {
                c.record
            })
        }
        Op::Reserve {
            qty,
            expected_version,
        } => {
            let body = ReserveRequest {
                qty,
                expected_version,
                ttl_seconds: None,
            };
            reply(client.reserve(STORE, sku, &body, &options).await?, |c| {
                c.record
            })
        }
        Op::Read => {
            let consistency = if op.local_read {
                Consistency::Local
            } else {
                Consistency::Linearizable
            };
            reply(client.read(STORE, sku, consistency).await?, |record| record)
        }
    })
}

/// What one HTTP answer means for the checker. `None`: definitely nothing happened (503
/// NO_LEADER) and nothing was observed.
enum Meaning {
    Definite(Outcome),
    NothingHappened,
    Unknown,
    Unexpected(String),
}

fn classify(op: &Op, reply: &Result<Reply, ClientError>) -> Meaning {
    let (status, body) = match reply {
        Ok(reply) => reply,
        Err(ClientError::Transport(_)) => return Meaning::Unknown,
        Err(other) => return Meaning::Unexpected(other.to_string()),
    };
    let error = match body {
        Ok(record) if matches!(status, 200 | 201) => {
            return Meaning::Definite(Outcome::Ok {
                qty: record.qty,
                version: record.version,
            })
        }
        Ok(record) => return Meaning::Unexpected(format!("status {status} with {record:?}")),
        Err(error) => &error.error,
    };
    let detail = |name: &str| error.details.as_ref().and_then(|d| d.get(name).cloned());
    let version = detail("currentVersion").and_then(|v| v.as_u64());
    match (*status, error.code.as_str()) {
        (404, codes::NOT_FOUND) => Meaning::Definite(Outcome::NotFound),
        (409, _) => match (op, version) {
            (Op::Create { .. }, Some(version)) => {
                Meaning::Definite(Outcome::AlreadyExists { version })
            }
            (_, Some(actual)) => Meaning::Definite(Outcome::VersionMismatch { actual }),
            _ => Meaning::Unexpected(format!("409 without a version: {error:?}")),
        },
        (422, codes::INSUFFICIENT_STOCK) => match detail("available").and_then(|v| v.as_i64()) {
            Some(available) => Meaning::Definite(Outcome::InsufficientStock { available }),
            None => Meaning::Unexpected(format!("422 without availability: {error:?}")),
        },
        // Both refuse before anything is proposed or forwarded.
        (503, codes::NO_LEADER | codes::NOT_A_MEMBER) => Meaning::NothingHappened,
        (503, _) => Meaning::Unknown,
        _ => Meaning::Unexpected(format!("status {status}: {error:?}")),
    }
}

/// Units each hold SKU is created with before the clients start, so that holds and carts find
/// stock from the first operation (plain adjusts top them up later).
const HOLD_SKU_STOCK: i64 = 100;
/// The client number the stocking creates are traced under (no workload client has it).
const STOCKING_CLIENT: usize = 99;

/// Creates every hold SKU with [`HOLD_SKU_STOCK`] units, keyed and retried as any client's
/// create, and recorded like one (conservation counts it).
pub async fn stock_hold_skus(
    cluster: &SimCluster,
    history: &SharedHistory,
    start: madsim::time::Instant,
) {
    for index in 0..HOLD_SKUS {
        let sku = holds::hold_sku_name(index);
        let op = ClientOp {
            idempotency_key: Some(format!("stock-{sku}")),
            sku,
            op: Op::Create {
                initial: HOLD_SKU_STOCK,
            },
            local_read: false,
        };
        perform(cluster, STOCKING_CLIENT, &op, history, start).await;
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
    let mut held: Vec<String> = Vec::new();
    for sequence in 0..operations {
        if madsim::rand::thread_rng().gen_range(0..100) < HOLD_TRAFFIC_PERCENT {
            hold_traffic(&cluster, client, sequence, &history, start, &mut held).await;
            think().await;
            continue;
        }
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
        think().await;
    }
}

/// A client's pause between operations.
async fn think() {
    let think_ms = madsim::rand::thread_rng().gen_range(0..THINK_MS_MAX);
    madsim::time::sleep(Duration::from_millis(think_ms)).await;
}

/// One operation of the hold traffic, keyed half the time; `held` is what the client holds.
async fn hold_traffic(
    cluster: &SimCluster,
    client: usize,
    sequence: usize,
    history: &SharedHistory,
    start: madsim::time::Instant,
    held: &mut Vec<String>,
) {
    let (op, keyed) = {
        let mut rng = madsim::rand::thread_rng();
        (holds::draw_hold(&mut rng, held), rng.gen_bool(0.5))
    };
    let key = keyed.then(|| format!("c{client}-op{sequence}"));
    let line = holds::perform_hold(cluster, client, &op, key, history, start, held).await;
    history.lock().expect("history lock").lines.push(line);
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
    let (result, log_index) = send_with_retries(cluster, op, history).await;
    let completed_at = now_ns(start);
    let mut history = history.lock().expect("history lock");
    let id = history.next_id;
    let outcome = record(&mut history, client, op, result, invoked_at, completed_at);
    if let (Some(Outcome::Ok { .. }), Some(log_index)) = (outcome, log_index) {
        history.log_indexes.insert(id, log_index);
    }
    outcome
}

/// Sends `op` to random nodes until its outcome is known, at most [`KEYED_ATTEMPTS_MAX`] times
/// for a keyed write and once otherwise; records every definite answer to a keyed write (the
/// idempotency check compares them). An attempt that may have applied makes a later "nothing
/// happened" unknown. Answers the meaning of the last answer and the log index it names.
async fn send_with_retries(
    cluster: &SimCluster,
    op: &ClientOp,
    history: &SharedHistory,
) -> (Meaning, Option<u64>) {
    let attempts = if op.idempotency_key.is_some() {
        KEYED_ATTEMPTS_MAX
    } else {
        1
    };
    let mut result = Meaning::NothingHappened;
    let mut log_index = None;
    let mut maybe_applied = false;
    for _ in 0..attempts {
        let node = madsim::rand::thread_rng().gen_range(1..=cluster.ids().len() as u64);
        let (reply, named) = match send(cluster, node, op).await {
            Ok((reply, named)) => (Ok(reply), named),
            Err(error) => (Err(error), None),
        };
        log_index = named;
        if let Ok((_, Ok(record))) = &reply {
            let line = format!("{} {:?}", op.sku, op.op);
            history
                .lock()
                .expect("history lock")
                .note_record(&line, record);
        }
        result = classify(&op.op, &reply);
        if let (Some(key), Meaning::Definite(_), Ok((status, body))) =
            (&op.idempotency_key, &result, &reply)
        {
            // The error's timestamp is when it was rendered, not part of the answer.
            let mut answer = body.clone();
            if let Err(error) = &mut answer {
                error.error.timestamp.clear();
            }
            let mut history = history.lock().expect("history lock");
            history
                .keyed_answers
                .entry(key.clone())
                .or_default()
                .push((*status, answer));
        }
        match result {
            Meaning::Unknown => maybe_applied = true,
            Meaning::NothingHappened if maybe_applied => result = Meaning::Unknown,
            _ => break,
        }
    }
    (result, log_index)
}

/// Writes what `op` ended with into the history: a line for the log, an anomaly if the answer
/// made no sense, and an event for the checker unless it observed nothing checkable.
fn record(
    history: &mut History,
    client: usize,
    op: &ClientOp,
    result: Meaning,
    invoked_at: u64,
    completed_at: u64,
) -> Option<Outcome> {
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
        Meaning::Definite(outcome) => Some(outcome),
        Meaning::Unknown => Some(Outcome::Unknown),
        Meaning::NothingHappened => None,
        Meaning::Unexpected(message) => {
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
