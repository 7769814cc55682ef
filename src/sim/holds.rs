//! The workload's hold traffic: holds with short deadlines, carts of one to four lines, commits
//! and releases of what a client holds, and reads of its reservations, all through the typed
//! client. Every answer is recorded ([`History::reservations`]) for the checkers of holds.
//!
//! **Holds live on SKUs of their own** ([`HOLD_SKUS`], `held-<n>`), which also take the plain
//! creates, adjusts, reserves and reads of [`super::workload`] (they need stock to hold). The
//! linearizability checker does not model those SKUs: a hold's units come back when the leader
//! proposes its expiry, at a time no client chooses or observes, so a per-SKU model would have
//! to place every expiry as an unobserved operation somewhere in a window of its deadline: one
//! more optional operation per hold in a search already exponential in them and bounded by
//! `checker::STATES_EXPLORED_MAX`. The hot and cold SKUs keep their exact linearizability check,
//! since no hold touches them; the hold SKUs are checked instead by what must hold of every
//! record and every reservation (`checks::held_units`, `checks::endings`, `checks::carts`,
//! `checks::conservation`).
//!
//! TTLs are 1 to 3 s, so during a run of a dozen seconds some holds are committed or released
//! in time, some are tried too late (`RESERVATION_EXPIRED`), and some are left to expire.

use std::time::Duration;

use madsim::rand::Rng;

use super::history::{
    log_index_of, History, HoldAnswer, HoldReply, Observation, SharedHistory, STORE,
};
use super::SimCluster;
use crate::client::wire::{
    codes, CartLineRequest, CartRequest, Envelope, ErrorBody, ReservationBody,
};
use crate::client::{Answer, ClientError, Consistency, WriteOptions};
use crate::inventory::ReservationStatus;
use crate::raft::NodeId;

/// SKUs that holds and carts go to (`held-<n>`): few, so that carts and holds contend.
pub const HOLD_SKUS: usize = 4;
/// Shortest hold the workload asks for, in seconds: the API's minimum.
const TTL_SECONDS_MIN: u64 = 1;
/// Longest hold the workload asks for, in seconds: short enough that holds nobody resolves
/// expire within the run's fault window.
const TTL_SECONDS_MAX: u64 = 3;
/// Most lines of a workload cart (the API takes 100: four is enough to be half held).
const CART_LINES_MAX: usize = 4;
/// Most units one line holds.
const LINE_UNITS_MAX: i64 = 6;
/// How long a client waits for one answer (as the plain workload's client).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of a keyed hold operation whose outcome stays unknown.
const KEYED_ATTEMPTS_MAX: usize = 4;

/// The sighting a `RESERVATION_EXPIRED` refusal makes: past its deadline, so it ends (or has
/// ended) expired, though a read may still show it held until the expiry entry applies.
pub const PAST_DEADLINE: &str = "past-deadline";

pub fn hold_sku_name(index: usize) -> String {
    format!("held-{index}")
}

/// Whether `sku` is one of the hold SKUs, which the linearizability checker leaves out.
pub fn is_hold_sku(sku: &str) -> bool {
    sku.starts_with("held-")
}

/// One operation of the hold traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOp {
    Hold {
        sku: String,
        qty: i64,
        ttl_seconds: u64,
    },
    Cart {
        lines: Vec<(String, i64)>,
        ttl_seconds: u64,
    },
    Commit {
        id: String,
    },
    Release {
        id: String,
    },
    Read {
        id: String,
    },
}

/// Draws a hold operation: a new hold or cart, or, when the client holds something, mostly a
/// commit, release or read of one of its reservations (which it then forgets once ended).
pub fn draw_hold<R: Rng>(rng: &mut R, held: &[String]) -> HoldOp {
    let ttl_seconds = rng.gen_range(TTL_SECONDS_MIN..=TTL_SECONDS_MAX);
    let pick = |rng: &mut R| held[rng.gen_range(0..held.len())].clone();
    match rng.gen_range(0..100) {
        0..=29 if !held.is_empty() => HoldOp::Commit { id: pick(rng) },
        30..=49 if !held.is_empty() => HoldOp::Release { id: pick(rng) },
        50..=59 if !held.is_empty() => HoldOp::Read { id: pick(rng) },
        0..=79 => HoldOp::Hold {
            sku: hold_sku_name(rng.gen_range(0..HOLD_SKUS)),
            qty: rng.gen_range(1..=LINE_UNITS_MAX),
            ttl_seconds,
        },
        _ => {
            let count = rng.gen_range(1..=CART_LINES_MAX);
            let first = rng.gen_range(0..HOLD_SKUS);
            let lines = (0..count)
                .map(|n| {
                    let sku = hold_sku_name((first + n) % HOLD_SKUS);
                    (sku, rng.gen_range(1..=LINE_UNITS_MAX))
                })
                .collect();
            HoldOp::Cart { lines, ttl_seconds }
        }
    }
}

/// Sends `op` to node `node` through the typed client; answers the reply and the log index an
/// accepted write's answer names.
async fn send(
    cluster: &SimCluster,
    node: NodeId,
    op: &HoldOp,
    options: &WriteOptions,
) -> Result<(HoldReply, Option<u64>), ClientError> {
    fn reply<T>(answer: Answer<T>, wrap: impl FnOnce(T) -> HoldAnswer) -> (HoldReply, Option<u64>) {
        let log_index = log_index_of(&answer);
        ((answer.status, answer.body.map(wrap)), log_index)
    }
    let client = cluster.client(node).with_timeout(CLIENT_TIMEOUT);
    let reservation = |envelope: Envelope<ReservationBody>| HoldAnswer::Reservation(envelope.data);
    Ok(match op {
        HoldOp::Hold {
            sku,
            qty,
            ttl_seconds,
        } => reply(
            client.hold(STORE, sku, *qty, *ttl_seconds, options).await?,
            HoldAnswer::Held,
        ),
        HoldOp::Cart { lines, ttl_seconds } => {
            let body = CartRequest {
                lines: lines
                    .iter()
                    .map(|(sku, qty)| CartLineRequest {
                        store_id: STORE.into(),
                        sku: sku.clone(),
                        qty: *qty,
                        expected_version: None,
                    })
                    .collect(),
                ttl_seconds: Some(*ttl_seconds),
            };
            reply(client.cart(&body, options).await?, reservation)
        }
        HoldOp::Commit { id } => reply(client.commit_reservation(id, options).await?, reservation),
        HoldOp::Release { id } => {
            reply(client.release_reservation(id, options).await?, reservation)
        }
        HoldOp::Read { id } => reply(
            client.reservation(id, Consistency::Linearizable).await?,
            reservation,
        ),
    })
}

/// What one answer means.
enum Meaning {
    Definite(HoldReply),
    NothingHappened,
    Unknown,
    Unexpected(String),
}

fn classify(reply: Result<HoldReply, ClientError>) -> Meaning {
    match reply {
        Err(ClientError::Transport(_)) => Meaning::Unknown,
        Err(other) => Meaning::Unexpected(other.to_string()),
        Ok((503, Err(error))) => match error.error.code.as_str() {
            codes::NO_LEADER | codes::NOT_A_MEMBER => Meaning::NothingHappened,
            _ => Meaning::Unknown,
        },
        Ok(reply) => Meaning::Definite(reply),
    }
}

/// Performs one hold operation (retrying a keyed one after unknown outcomes, as the plain
/// workload does) and records what it learnt. Updates `held`, the client's live reservations.
pub async fn perform_hold(
    cluster: &SimCluster,
    client: usize,
    op: &HoldOp,
    idempotency_key: Option<String>,
    history: &SharedHistory,
    start: madsim::time::Instant,
    held: &mut Vec<String>,
) -> String {
    let invoked_at = start.elapsed().as_nanos() as u64;
    // A read takes no key: its answer changes over time.
    let idempotency_key = idempotency_key.filter(|_| !matches!(op, HoldOp::Read { .. }));
    let options = WriteOptions {
        idempotency_key: idempotency_key.clone(),
        if_match: None,
    };
    let attempts = if idempotency_key.is_some() {
        KEYED_ATTEMPTS_MAX
    } else {
        1
    };
    let mut result = Meaning::NothingHappened;
    let mut log_index = None;
    let mut maybe_applied = false;
    for _ in 0..attempts {
        let node = madsim::rand::thread_rng().gen_range(1..=cluster.ids().len() as u64);
        let sent = send(cluster, node, op, &options).await;
        log_index = sent.as_ref().ok().and_then(|(_, named)| *named);
        result = classify(sent.map(|(reply, _)| reply));
        if let (Some(key), Meaning::Definite((status, body))) = (&idempotency_key, &result) {
            let mut answer = body.clone();
            if let Err(error) = &mut answer {
                error.error.timestamp.clear();
            }
            let mut history = history.lock().expect("history lock");
            let answers = history.keyed_hold_answers.entry(key.clone()).or_default();
            answers.push((*status, answer));
        }
        match result {
            Meaning::Unknown => maybe_applied = true,
            Meaning::NothingHappened if maybe_applied => result = Meaning::Unknown,
            _ => break,
        }
    }
    let completed_at = start.elapsed().as_nanos() as u64;
    let mut history = history.lock().expect("history lock");
    let line = format!("t={:08.3}s c{client} {op:?}", completed_at as f64 / 1e9);
    let ended = matches!(op, HoldOp::Commit { .. } | HoldOp::Release { .. });
    if let (true, Meaning::Definite((200, Ok(HoldAnswer::Reservation(body)))), Some(index)) =
        (ended, &result, log_index)
    {
        let log = history.reservations.entry(body.id.clone()).or_default();
        log.ended_at_log_index = Some(index);
    }
    record(
        &mut history,
        line,
        op,
        result,
        (invoked_at, completed_at),
        held,
    )
}

/// Writes what `op` ended with into the history; answers `line` (the trace line) with the
/// outcome.
fn record(
    history: &mut History,
    line: String,
    op: &HoldOp,
    result: Meaning,
    (invoked_at, completed_at): (u64, u64),
    held: &mut Vec<String>,
) -> String {
    let reply = match result {
        Meaning::Definite(reply) => reply,
        Meaning::NothingHappened => return format!("{line} -> nothing happened"),
        Meaning::Unknown => return format!("{line} -> unknown"),
        Meaning::Unexpected(message) => {
            history.anomalies.push(format!("{line}: {message}"));
            return format!("{line} -> unexpected");
        }
    };
    let observed = |status: &str| Observation {
        status: status.to_owned(),
        invoked_at,
        completed_at,
    };
    let outcome = format!("{line} -> {} {}", reply.0, summary(&reply.1));
    match understand(op, &reply) {
        Ok(Learnt::Nothing) => {}
        Ok(Learnt::Created {
            id,
            lines,
            answered,
        }) => {
            note_records(history, &line, &reply.1);
            let log = history.reservations.entry(id.clone()).or_default();
            log.requested = lines;
            log.answered = answered;
            log.observations.push(observed("held"));
            held.push(id);
        }
        Ok(Learnt::Status { id, status }) => {
            if status != ReservationStatus::Held.as_str() {
                held.retain(|h| *h != id);
            }
            let log = history.reservations.entry(id).or_default();
            log.observations.push(observed(&status));
        }
        Err(message) => history.anomalies.push(format!("{line}: {message}")),
    }
    outcome
}

/// What a definite answer tells about reservations.
enum Learnt {
    Nothing,
    /// A hold or cart was made: its id, the lines asked for, and the lines its answer shows.
    Created {
        id: String,
        lines: Vec<(String, i64)>,
        answered: Option<Vec<(String, i64)>>,
    },
    /// A reservation was seen in `status` (a final one also by a refusal that names it).
    Status {
        id: String,
        status: String,
    },
}

/// The meaning of a definite answer to `op`, or why it makes no sense.
fn understand(op: &HoldOp, (status, body): &HoldReply) -> Result<Learnt, String> {
    let lines_of = |body: &ReservationBody| -> Vec<(String, i64)> {
        let lines = body.lines.iter();
        lines.map(|line| (line.sku.clone(), line.qty)).collect()
    };
    match (op, *status, body) {
        (HoldOp::Hold { sku, qty, .. }, 201, Ok(HoldAnswer::Held(change))) => {
            let id = change
                .reservation_id
                .clone()
                .ok_or("a hold without an id")?;
            Ok(Learnt::Created {
                id,
                lines: vec![(sku.clone(), *qty)],
                answered: None,
            })
        }
        (HoldOp::Cart { lines, .. }, 201, Ok(HoldAnswer::Reservation(body))) => {
            Ok(Learnt::Created {
                id: body.id.clone(),
                lines: lines.clone(),
                answered: Some(lines_of(body)),
            })
        }
        (HoldOp::Hold { .. } | HoldOp::Cart { .. }, 404 | 409 | 422, Err(_)) => Ok(Learnt::Nothing),
        (
            HoldOp::Commit { id } | HoldOp::Release { id } | HoldOp::Read { id },
            200,
            Ok(HoldAnswer::Reservation(body)),
        ) if body.id == *id => Ok(Learnt::Status {
            id: id.clone(),
            status: body.status.clone(),
        }),
        (HoldOp::Commit { id } | HoldOp::Release { id }, 409, Err(error)) => refused_status(error)
            .map(|status| Learnt::Status {
                id: id.clone(),
                status,
            }),
        (_, status, body) => Err(format!("status {status}: {body:?}")),
    }
}

/// The status a 409 to a commit or release names: the one it ended in, or [`PAST_DEADLINE`]
/// for a reservation past its deadline (which only an expiry can end, perhaps not yet).
fn refused_status(error: &ErrorBody) -> Result<String, String> {
    match error.error.code.as_str() {
        codes::RESERVATION_EXPIRED => Ok(PAST_DEADLINE.into()),
        codes::RESERVATION_NOT_HELD => error
            .error
            .details
            .as_ref()
            .and_then(|details| details.get("status"))
            .and_then(|status| status.as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("RESERVATION_NOT_HELD without a status: {error:?}")),
        _ => Err(format!("409 {}: {}", error.error.code, error.error.message)),
    }
}

/// Notes an answer's record that is negative or whose `onHand` is not `qty + reserved`.
fn note_records(history: &mut History, line: &str, body: &Result<HoldAnswer, ErrorBody>) {
    if let Ok(HoldAnswer::Held(change)) = body {
        history.note_record(line, &change.record);
    }
}

fn summary(body: &Result<HoldAnswer, ErrorBody>) -> String {
    match body {
        Ok(HoldAnswer::Held(change)) => {
            format!("held {:?} qty={}", change.reservation_id, change.record.qty)
        }
        Ok(HoldAnswer::Reservation(body)) => format!("{} {}", body.id, body.status),
        Err(error) => error.error.code.clone(),
    }
}
