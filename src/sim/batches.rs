//! The workload's batch traffic: batches of two to four lines (creates, adjusts, plain
//! reserves) under both error policies, sent as `Command::Batch` through the simulation's own
//! route ([`super::batch_route`]); a keyed batch is retried after unknown outcomes like any
//! keyed write, an unkeyed one is sent once ([`KEYED_BATCHES_PERCENT`]). Lines go to the hot and cold SKUs, so the linearizability checker sees them beside
//! the single writes; some name the SKU of the line before them (two changes of one record in
//! one entry), and some fail by design: reserves beyond any stock (insufficient stock),
//! expected version 0 (no record has it: version mismatch), and lines on the ghost SKUs no one
//! creates (not found).
//!
//! **What the history gets.** Every line is its own operation on its SKU, invoked and
//! completed with its batch:
//! - an applied batch (either policy): each line with its own result (the record it left, or
//!   its rejection, which a `rejectFailedLines` line sees after the earlier lines applied);
//! - a refused `rejectEverything` batch changed nothing, so its lines are not operations;
//!   but a failing line on a SKU no earlier line of the batch names saw that SKU as it was,
//!   and its rejection is recorded (it changes nothing, as in the model);
//! - a batch with no definite answer: every line unknown, as an unknown single write (each
//!   may have applied or not; the all-or-none check holds the batch to all or none).
//!
//! Each batch is also logged whole ([`History::batches`]) for `checks::batches`, and every
//! definite answer under its key ([`History::keyed_batch_answers`]) for the idempotency check.
//!
//! **Keys.** Half the batches are keyed ([`KEYED_BATCHES_PERCENT`]): their retries, the
//! idempotency check on their answers and the all-or-none check of an unknown outcome need
//! them. (Keyed batches found a bug while built: a stored answer the state machine could not
//! read back stopped every node; `inventory::batch::hollow_key`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use madsim::rand::Rng;

use super::batch_route::SIM_COMMAND;
use super::history::{BatchLog, BatchOutcome, History, SharedHistory, STORE};
use super::workload::{ghost_sku_name, is_ghost_sku, sku_name, COLD_SKUS, GHOST_SKUS, HOT_SKUS};
use super::SimCluster;
use crate::checker::{Event, Op, Outcome};
use crate::client::headers;
use crate::client::wire::{codes, ErrorBody};
use crate::inventory::{
    BatchLine, Command, CommandResult, ErrorPolicy, LineResult, RecordKey, Rejection, Response,
};
use crate::raft::network::{decode_rpc, encode_rpc};
use crate::raft::NodeId;
use crate::transport::WireRequest;

/// Batches each batch client sends in a run.
pub const BATCHES_PER_CLIENT: usize = 20;
/// Fewest and most lines of a workload batch.
const LINES_MIN: usize = 2;
const LINES_MAX: usize = 4;
/// How long a client waits for one answer (as the plain workload's client).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Share of batches sent with an idempotency key, in percent (see the module docs).
pub const KEYED_BATCHES_PERCENT: u32 = 50;
/// Attempts of a keyed batch whose outcome stays unknown (as a keyed plain write).
const KEYED_ATTEMPTS_MAX: usize = 4;
/// Bound (exclusive) on the pause between batches, in ms: longer than the plain workload's, so
/// that a client's few batches spread over the fault window.
const THINK_MS_MAX: u64 = 500;
/// Pause before the first batch, in ms: the plain clients create the records meanwhile.
const FIRST_BATCH_AFTER_MS: u64 = 300;

/// One batch as the workload draws it: its key (if keyed), policy and lines (`(sku, op)`).
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub key: Option<String>,
    pub policy: ErrorPolicy,
    pub lines: Vec<(String, Op)>,
}

/// Draws a batch of client `client`'s `sequence`th.
pub fn draw_batch<R: Rng>(
    rng: &mut R,
    client: usize,
    sequence: usize,
    last_versions: &BTreeMap<String, u64>,
) -> BatchPlan {
    let count = rng.gen_range(LINES_MIN..=LINES_MAX);
    let mut lines: Vec<(String, Op)> = Vec::with_capacity(count);
    for _ in 0..count {
        let ghost = rng.gen_range(0..100) < 8;
        let sku = match lines.last() {
            Some((previous, _)) if rng.gen_range(0..100) < 30 => previous.clone(),
            _ if ghost => ghost_sku_name(rng.gen_range(0..GHOST_SKUS)),
            _ if rng.gen_bool(0.7) => sku_name(rng.gen_range(0..HOT_SKUS)),
            _ => sku_name(rng.gen_range(HOT_SKUS..HOT_SKUS + COLD_SKUS)),
        };
        let op = draw_line(rng, last_versions.get(&sku).copied());
        // No one creates a ghost SKU: a create there is an adjust.
        let op = match op {
            Op::Create { initial } if is_ghost_sku(&sku) => Op::Adjust {
                delta: initial,
                expected_version: None,
            },
            op => op,
        };
        lines.push((sku, op));
    }
    let policy = if rng.gen_bool(0.5) {
        ErrorPolicy::RejectEverything
    } else {
        ErrorPolicy::RejectFailedLines
    };
    // Always false while KEYED_BATCHES_PERCENT is 0 (see the module docs); drawn all the same,
    // so raising it changes no other draw.
    #[allow(clippy::absurd_extreme_comparisons)]
    let keyed = rng.gen_range(0..100) < KEYED_BATCHES_PERCENT;
    BatchPlan {
        key: keyed.then(|| format!("c{client}-batch{sequence}")),
        policy,
        lines,
    }
}

/// One line: mostly adjusts and reserves that may pass, some failing by design.
fn draw_line<R: Rng>(rng: &mut R, last_version: Option<u64>) -> Op {
    let expected_version = match rng.gen_range(0..100) {
        0..=19 => Some(last_version.unwrap_or(1)),
        // No record has version 0: a version mismatch (or not found).
        20..=27 => Some(0),
        _ => None,
    };
    match rng.gen_range(0..100) {
        0..=9 => Op::Create {
            initial: rng.gen_range(0..60),
        },
        10..=44 => Op::Adjust {
            delta: if rng.gen_bool(0.7) {
                rng.gen_range(1..15)
            } else {
                -rng.gen_range(1..10)
            },
            expected_version,
        },
        // Beyond any stock the workload builds up in a run: insufficient stock.
        45..=54 => Op::Reserve {
            qty: rng.gen_range(1_000..2_000),
            expected_version,
        },
        _ => Op::Reserve {
            qty: rng.gen_range(0..8),
            expected_version,
        },
    }
}

/// The command a plan sends.
pub fn command_of(plan: &BatchPlan) -> Command {
    let lines: Vec<BatchLine> = plan
        .lines
        .iter()
        .map(|(sku, op)| {
            let key = RecordKey::new(STORE, sku).expect("workload SKUs are valid");
            match *op {
                Op::Create { initial } => BatchLine::Create {
                    key,
                    initial_quantity: initial,
                },
                Op::Adjust {
                    delta,
                    expected_version,
                } => BatchLine::Adjust {
                    key,
                    delta,
                    expected_version,
                },
                Op::Reserve {
                    qty,
                    expected_version,
                } => BatchLine::Reserve {
                    key,
                    quantity: qty,
                    expected_version,
                    ttl_ms: None,
                },
                Op::Read => unreachable!("a batch has no reads"),
            }
        })
        .collect();
    Command::packed_batch(&lines, plan.policy)
}

/// Runs one batch client: `batches` batches one after the other against random nodes.
pub async fn run_batch_client(
    cluster: Arc<SimCluster>,
    client: usize,
    batches: usize,
    history: SharedHistory,
    start: madsim::time::Instant,
) {
    let mut last_versions: BTreeMap<String, u64> = BTreeMap::new();
    madsim::time::sleep(Duration::from_millis(FIRST_BATCH_AFTER_MS)).await;
    for sequence in 0..batches {
        let plan = draw_batch(
            &mut madsim::rand::thread_rng(),
            client,
            sequence,
            &last_versions,
        );
        perform_batch(&cluster, client, &plan, &history, start, &mut last_versions).await;
        let think_ms = madsim::rand::thread_rng().gen_range(0..THINK_MS_MAX);
        madsim::time::sleep(Duration::from_millis(think_ms)).await;
    }
}

/// What the answers to a batch meant.
enum Meaning {
    Answered(Response),
    NothingHappened,
    Unknown,
    Unexpected(String),
}

/// Sends the batch to node `node`.
async fn send(cluster: &SimCluster, node: NodeId, plan: &BatchPlan) -> Meaning {
    let mut request = WireRequest::post_bytes(SIM_COMMAND, encode_rpc(&command_of(plan)));
    if let Some(key) = &plan.key {
        request
            .headers
            .push((headers::IDEMPOTENCY_KEY.into(), key.clone()));
    }
    let client = cluster.client(node).with_timeout(CLIENT_TIMEOUT);
    let answer = match client.send(request).await {
        Ok(answer) => answer,
        Err(_) => return Meaning::Unknown,
    };
    if answer.status == 200 {
        return match decode_rpc::<Response>(&answer.body) {
            Ok(response) => Meaning::Answered(response),
            Err(error) => Meaning::Unexpected(format!("an answer that is no response: {error}")),
        };
    }
    let code = serde_json::from_slice::<ErrorBody>(&answer.body)
        .map(|body| body.error.code)
        .unwrap_or_default();
    match (answer.status, code.as_str()) {
        // Both refuse before anything is proposed or forwarded.
        (503, codes::NO_LEADER | codes::NOT_A_MEMBER) => Meaning::NothingHappened,
        (503, _) => Meaning::Unknown,
        (status, code) => Meaning::Unexpected(format!("status {status} {code}")),
    }
}

/// Sends the batch to random nodes until its outcome is known (a keyed one at most
/// [`KEYED_ATTEMPTS_MAX`] times; an unkeyed one again only after "nothing happened"), records
/// it, and notes the versions its lines saw.
async fn perform_batch(
    cluster: &SimCluster,
    client: usize,
    plan: &BatchPlan,
    history: &SharedHistory,
    start: madsim::time::Instant,
    last_versions: &mut BTreeMap<String, u64>,
) {
    let invoked_at = start.elapsed().as_nanos() as u64;
    let mut result = Meaning::NothingHappened;
    let mut maybe_applied = false;
    for _ in 0..KEYED_ATTEMPTS_MAX {
        let node = madsim::rand::thread_rng().gen_range(1..=cluster.ids().len() as u64);
        result = send(cluster, node, plan).await;
        if let (Meaning::Answered(response), Some(key)) = (&result, &plan.key) {
            let answer = Response {
                replayed: false,
                ..response.clone()
            };
            let mut history = history.lock().expect("history lock");
            let answers = history.keyed_batch_answers.entry(key.clone());
            answers.or_default().push(answer);
        }
        match result {
            Meaning::Unknown if plan.key.is_none() => break,
            Meaning::Unknown => maybe_applied = true,
            Meaning::NothingHappened if maybe_applied => result = Meaning::Unknown,
            Meaning::NothingHappened => {}
            _ => break,
        }
    }
    let completed_at = start.elapsed().as_nanos() as u64;
    let mut history = history.lock().expect("history lock");
    let outcomes = record(
        &mut history,
        client,
        plan,
        result,
        (invoked_at, completed_at),
    );
    for ((sku, _), outcome) in plan.lines.iter().zip(outcomes) {
        if let Some(Outcome::Ok { version, .. } | Outcome::VersionMismatch { actual: version }) =
            outcome
        {
            last_versions.insert(sku.clone(), version);
        }
    }
}

/// The outcome a line's rejection stands for in the model, if it is one the model knows.
fn outcome_of(rejection: &Rejection) -> Option<Outcome> {
    Some(match *rejection {
        Rejection::NotFound { .. } => Outcome::NotFound,
        Rejection::AlreadyExists { version, .. } => Outcome::AlreadyExists { version },
        Rejection::VersionMismatch { actual, .. } => Outcome::VersionMismatch { actual },
        Rejection::InsufficientStock { available, .. } => Outcome::InsufficientStock { available },
        Rejection::Overflow => Outcome::Overflow,
        Rejection::Invalid { .. } => Outcome::Invalid,
        _ => return None,
    })
}

/// Each line's outcome as the history records it (`None`: not an operation), and the batch's
/// outcome, from the state machine's answer; `Err` for an answer that makes no sense.
fn line_outcomes(
    plan: &BatchPlan,
    response: &Response,
) -> Result<(Vec<Option<Outcome>>, BatchOutcome), String> {
    match &response.result {
        CommandResult::Batch(results) => {
            let results = &results.lines;
            if results.len() != plan.lines.len() {
                return Err(format!(
                    "{} results for {} lines",
                    results.len(),
                    plan.lines.len()
                ));
            }
            let mut outcomes = Vec::with_capacity(results.len());
            for (index, result) in results.iter().enumerate() {
                outcomes.push(Some(match result {
                    LineResult::Ok { record, .. } => Outcome::Ok {
                        qty: record.quantity,
                        version: record.version,
                    },
                    LineResult::Failed(_) if plan.policy == ErrorPolicy::RejectEverything => {
                        return Err(format!("applied with line {index} failed"))
                    }
                    LineResult::Failed(rejection) => outcome_of(rejection)
                        .ok_or_else(|| format!("line {index} failed with {rejection:?}"))?,
                }));
            }
            let applied = outcomes
                .iter()
                .map(|o| matches!(o, Some(Outcome::Ok { .. })))
                .collect();
            let outcome = BatchOutcome::Answered {
                log_index: response.log_index,
                applied,
            };
            Ok((outcomes, outcome))
        }
        CommandResult::Err(Rejection::BatchRefused { lines })
            if plan.policy == ErrorPolicy::RejectEverything && !lines.is_empty() =>
        {
            let mut outcomes = vec![None; plan.lines.len()];
            for refusal in lines {
                let Some((sku, _)) = plan.lines.get(refusal.index) else {
                    return Err(format!("a refusal of line {}", refusal.index));
                };
                if refusal.key.sku != *sku {
                    return Err(format!("line {} refused as {}", refusal.index, refusal.key));
                }
                // Only a line no earlier line of the batch touched saw its record as it was.
                let first_on_sku = !plan.lines[..refusal.index].iter().any(|(s, _)| s == sku);
                if first_on_sku {
                    outcomes[refusal.index] =
                        Some(outcome_of(&refusal.rejection).ok_or_else(|| {
                            format!(
                                "line {} refused with {:?}",
                                refusal.index, refusal.rejection
                            )
                        })?);
                }
            }
            let log_index = response.log_index;
            Ok((outcomes, BatchOutcome::Refused { log_index }))
        }
        other => Err(format!("answered {other:?}")),
    }
}

/// Writes what the batch ended with into the history: a trace line, an anomaly if the answer
/// made no sense, an event per line the checker can use, and the batch's log. Answers each
/// line's outcome.
fn record(
    history: &mut History,
    client: usize,
    plan: &BatchPlan,
    result: Meaning,
    (invoked_at, completed_at): (u64, u64),
) -> Vec<Option<Outcome>> {
    let line = format!(
        "t={:08.3}s c{client} batch {:?} {:?} {:?}",
        completed_at as f64 / 1e9,
        plan.key,
        plan.policy,
        plan.lines
    );
    let unknown = || vec![Some(Outcome::Unknown); plan.lines.len()];
    let (outcomes, batch) = match result {
        Meaning::Answered(response) => match line_outcomes(plan, &response) {
            Ok((outcomes, batch)) => {
                let log_index = response.log_index;
                (outcomes, Some((batch, Some(log_index))))
            }
            Err(message) => {
                history.anomalies.push(format!("{line}: {message}"));
                (vec![None; plan.lines.len()], None)
            }
        },
        Meaning::Unknown => (unknown(), Some((BatchOutcome::Unknown, None))),
        Meaning::NothingHappened => (vec![None; plan.lines.len()], None),
        Meaning::Unexpected(message) => {
            history.anomalies.push(format!("{line}: {message}"));
            (vec![None; plan.lines.len()], None)
        }
    };
    history.lines.push(format!("{line} -> {outcomes:?}"));
    for ((sku, op), outcome) in plan.lines.iter().zip(&outcomes) {
        let Some(outcome) = *outcome else { continue };
        let id = history.next_id;
        history.next_id += 1;
        if let Outcome::Ok { qty, .. } = outcome {
            if qty < 0 {
                history
                    .negative_quantities
                    .push(format!("{line}: {sku} qty {qty}"));
            }
            if let Some((_, Some(log_index))) = &batch {
                history.log_indexes.insert(id, *log_index);
            }
        }
        let unknown = outcome == Outcome::Unknown;
        history.events.entry(sku.clone()).or_default().push(Event {
            id,
            op: *op,
            invoked_at,
            completed_at: (!unknown).then_some(completed_at),
            outcome,
        });
    }
    if let Some((outcome, _)) = batch {
        history.batches.push(BatchLog {
            key: plan.key.clone(),
            policy: plan.policy,
            skus: plan.lines.iter().map(|(sku, _)| sku.clone()).collect(),
            outcome,
        });
    }
    outcomes
}
