//! Writes a follower forwards to the leader, **batched**: the commands waiting for the same
//! leader travel in one peer request (`POST /raft/propose`) and come back as one answer.
//!
//! Why: a follower used to forward each client write as its own HTTP request, which the leader
//! parsed, authenticated, routed and answered like a client's. `perf` on a loaded leader put a
//! quarter of its CPU in that HTTP path, two thirds of it for forwarded requests. Now a
//! follower parses and checks the client's request itself (it has to anyway, to answer 400s
//! without a round trip), and sends the leader only what the leader must decide: the
//! [`Command`] and its idempotency key. The follower renders the state machine's answer exactly
//! as the leader would (`api::inventory::render`).
//!
//! Batching without waiting: each leader has a [`Lane`] with at most
//! [`PROPOSE_BATCHES_IN_FLIGHT_MAX`] requests in flight. A command sent while a slot is free
//! leaves at once (a lone client pays no delay); commands arriving while every slot is busy
//! queue, and the next free slot takes up to [`PROPOSE_BATCH_ITEMS_MAX`] of them at once. The
//! busier the follower, the larger the batches.
//!
//! What an answer means is what it meant for a single forwarded request (see `api::leader`):
//! - each item carries the leader's own result of `App::propose` ([`ProposeError`] travels
//!   as is: "not the leader" is retried, an unknown outcome is weighed by the caller);
//! - a batch that could not be delivered (`TransportError::Unreachable`), or that the leader
//!   refused before reading it (401/400/404/409), proposed nothing: retried like "not the
//!   leader";
//! - a batch sent with no answer back, or any other failure after it was read, leaves every
//!   item's fate unknown.
//!
//! On the leader (`api::raft_routes::propose`) every item is proposed concurrently (Raft's group commit then
//! shares fsyncs across them) inside a span carrying the client's request id and the
//! forwarding node, so log lines stay traceable across the hop.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::ProposeError;
use crate::client::routes;
use crate::identity::Identity;
use crate::inventory::{self, Command, IdempotencyId};
use crate::raft::network::{decode_rpc, encode_rpc};
use crate::raft::NodeId;
use crate::telemetry::Telemetry;
use crate::transport::{Transport, TransportError, WireRequest, SECRET_HEADER};

/// Most commands in one forwarded batch: bounds the leader's work per request.
pub const PROPOSE_BATCH_ITEMS_MAX: usize = 64;
/// Most lines (`Command::line_count`) the commands of one forwarded batch carry together: bounds
/// the body and the answer. A command of `inventory::BATCH_LINES_MAX` lines (~1.1 MiB, its
/// answer as much) travels alone; 64 of them would pass the transport's body limit (64 MiB).
/// Small commands are never held back by it: 64 of one line each weigh 64. A command is never
/// split: the first one taken always goes.
pub const PROPOSE_BATCH_LINES_MAX: usize = inventory::BATCH_LINES_MAX;
/// Batches in flight to one leader from one follower. More slots, smaller batches and more
/// requests; one slot would make every command wait for the batch before it.
pub const PROPOSE_BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Longest a batch waits for the leader's answer when its items allow less (each caller also
/// stops waiting at its own deadline).
const BATCH_TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// One forwarded write: what `App::propose` takes, and what the logs need.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposeItem {
    pub command: Command,
    pub idempotency: Option<IdempotencyId>,
    /// The client's request id (`x-request-id`), for the leader's log lines.
    pub request_id: String,
    /// The client's route, for the leader's log lines.
    pub path: String,
}

/// The body of `POST /raft/propose`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProposeBatch {
    /// The forwarding node.
    pub from: NodeId,
    pub items: Vec<ProposeItem>,
}

/// The answer: one result per item, in order.
pub type ProposeReply = Vec<Result<inventory::Response, ProposeError>>;

/// What a caller of [`Forwarder::propose`] gets: the leader's result, or why none came back.
pub type Forwarded = Result<Result<inventory::Response, ProposeError>, TransportError>;

struct Waiting {
    item: ProposeItem,
    timeout: Duration,
    answer: oneshot::Sender<Forwarded>,
}

/// The commands waiting for one leader address, and the batches in flight to it.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Waiting>,
    in_flight: usize,
}

/// A follower's batching sender of forwarded writes (see the module docs).
pub struct Forwarder {
    from: NodeId,
    transport: Arc<dyn Transport>,
    secret: String,
    /// Who this node is: every batch carries its identity headers, and the leader admits a
    /// batch only from a member of its own cluster (`identity`, as for Raft RPCs).
    identity: Arc<Identity>,
    telemetry: Arc<Telemetry>,
    /// By leader and its address.
    lanes: Mutex<BTreeMap<(NodeId, String), Lane>>,
}

impl Forwarder {
    pub fn new(
        from: NodeId,
        transport: Arc<dyn Transport>,
        secret: String,
        identity: Arc<Identity>,
        telemetry: Arc<Telemetry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            from,
            transport,
            secret,
            identity,
            telemetry,
            lanes: Mutex::default(),
        })
    }

    fn lanes(&self) -> MutexGuard<'_, BTreeMap<(NodeId, String), Lane>> {
        self.lanes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends `item` to `leader` at `addr` in the next batch and waits (at most `timeout`)
    /// for its result.
    pub async fn propose(
        self: &Arc<Self>,
        leader: NodeId,
        addr: &str,
        item: ProposeItem,
        timeout: Duration,
    ) -> Forwarded {
        let (answer, answered) = oneshot::channel();
        let lane_key = (leader, addr.to_owned());
        let start = {
            let mut lanes = self.lanes();
            let lane = lanes.entry(lane_key.clone()).or_default();
            lane.queue.push_back(Waiting {
                item,
                timeout,
                answer,
            });
            let free = lane.in_flight < PROPOSE_BATCHES_IN_FLIGHT_MAX;
            if free {
                lane.in_flight += 1;
            }
            free
        };
        if start {
            tokio::spawn(self.clone().drain(lane_key));
        }
        let no_answer = |message: &str| TransportError::NoAnswer {
            addr: addr.to_owned(),
            message: message.to_owned(),
        };
        match tokio::time::timeout(timeout, answered).await {
            Ok(Ok(forwarded)) => forwarded,
            Ok(Err(_)) => Err(no_answer("the forwarding task stopped")),
            Err(_) => Err(no_answer("the leader did not answer in time")),
        }
    }

    /// One in-flight slot of the lane to a leader: sends batches while commands are queued,
    /// then gives the slot back.
    async fn drain(self: Arc<Self>, lane_key: (NodeId, String)) {
        loop {
            let batch: Vec<Waiting> = {
                let mut lanes = self.lanes();
                let lane = lanes.entry(lane_key.clone()).or_default();
                if lane.queue.is_empty() {
                    lane.in_flight -= 1;
                    if lane.in_flight == 0 {
                        lanes.remove(&lane_key);
                    }
                    return;
                }
                // A caller that stopped waiting (its deadline passed) gets no answer: its
                // write is not sent at all.
                lane.queue.retain(|waiting| !waiting.answer.is_closed());
                let take = batch_length(&lane.queue);
                lane.queue.drain(..take).collect()
            };
            if batch.is_empty() {
                continue;
            }
            self.send(lane_key.0, &lane_key.1, batch).await;
        }
    }

    async fn send(&self, leader: NodeId, addr: &str, batch: Vec<Waiting>) {
        let timeout = batch
            .iter()
            .map(|waiting| waiting.timeout)
            .max()
            .unwrap_or_default()
            .max(BATCH_TIMEOUT_MIN);
        self.telemetry
            .writes
            .forward_batch_items
            .observe(batch.len() as f64);
        let (items, answers): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|waiting| (waiting.item, waiting.answer))
            .unzip();
        let body = encode_rpc(&ProposeBatch {
            from: self.from,
            items,
        });
        let mut headers = vec![(SECRET_HEADER.to_owned(), self.secret.clone())];
        headers.extend(self.identity.request_headers(leader));
        let request = WireRequest {
            method: "POST".into(),
            path: routes::raft::PROPOSE.into(),
            headers,
            body,
        };
        let results: Vec<Forwarded> = match self.transport.send(addr, request, timeout).await {
            Ok(answer) => match read_reply(addr, answer.status, &answer.body, answers.len()) {
                Ok(results) => results.into_iter().map(Ok).collect(),
                Err(error) => answers.iter().map(|_| Err(error.clone())).collect(),
            },
            Err(error) => answers.iter().map(|_| Err(error.clone())).collect(),
        };
        for (answer, result) in answers.into_iter().zip(results) {
            // A caller that stopped waiting has dropped its receiver: nothing to do.
            let _ = answer.send(result);
        }
    }
}

/// How many commands at the front of `queue` go in the next batch: at most
/// [`PROPOSE_BATCH_ITEMS_MAX`], carrying at most [`PROPOSE_BATCH_LINES_MAX`] lines together,
/// and at least one (if any wait).
fn batch_length(queue: &VecDeque<Waiting>) -> usize {
    let mut lines = 0usize;
    let taken = queue
        .iter()
        .take(PROPOSE_BATCH_ITEMS_MAX)
        .take_while(|waiting| {
            lines = lines.saturating_add(waiting.item.command.line_count());
            lines <= PROPOSE_BATCH_LINES_MAX
        })
        .count();
    taken.max(queue.len().min(1))
}

/// The leader's answer to a batch of `expected` items, or what its failure means.
fn read_reply(
    addr: &str,
    status: u16,
    body: &[u8],
    expected: usize,
) -> Result<ProposeReply, TransportError> {
    let failed = |message: String| TransportError::NoAnswer {
        addr: addr.to_owned(),
        message,
    };
    match status {
        200 => {}
        // Refused before anything was proposed (no secret, a body it cannot read, no such
        // route, another cluster): as good as undelivered.
        400 | 401 | 404 | 409 => {
            return Err(TransportError::Unreachable {
                addr: addr.to_owned(),
                message: format!(
                    "the leader refused a forwarded batch with {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            })
        }
        _ => return Err(failed(format!("a forwarded batch answered {status}"))),
    }
    let reply: ProposeReply = decode_rpc(body)
        .map_err(|error| failed(format!("unreadable answer to a forwarded batch: {error}")))?;
    if reply.len() != expected {
        return Err(failed(format!(
            "a forwarded batch of {expected} items got {} results",
            reply.len()
        )));
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityState;
    use crate::inventory::RecordKey;
    use crate::raft::network::decode_rpc as decode;
    use crate::storage::fs::SimFs;
    use crate::transport::{TransportFuture, WireResponse};

    /// A leader that holds every batch until `open` is called, records the request ids of each
    /// batch it was sent, and answers "not the leader" for every item.
    struct HeldLeader {
        batches: Mutex<Vec<Vec<String>>>,
        gate: tokio::sync::Semaphore,
    }

    impl HeldLeader {
        fn new() -> Self {
            Self {
                batches: Mutex::default(),
                gate: tokio::sync::Semaphore::new(0),
            }
        }

        fn open(&self) {
            self.gate.add_permits(usize::MAX >> 4);
        }

        fn batches(&self) -> Vec<Vec<String>> {
            self.batches.lock().unwrap().clone()
        }
    }

    struct Held(Arc<HeldLeader>);

    impl Transport for Held {
        fn send(&self, _addr: &str, request: WireRequest, _timeout: Duration) -> TransportFuture {
            let leader = self.0.clone();
            Box::pin(async move {
                let batch: ProposeBatch = decode(&request.body).unwrap();
                let ids = batch.items.iter().map(|item| item.request_id.clone());
                leader.batches.lock().unwrap().push(ids.collect());
                let _pass = leader.gate.acquire().await.unwrap();
                let reply: ProposeReply = batch
                    .items
                    .iter()
                    .map(|_| Err(ProposeError::NotLeader { leader: None }))
                    .collect();
                Ok(WireResponse {
                    status: 200,
                    headers: Vec::new(),
                    body: encode_rpc(&reply),
                })
            })
        }
    }

    fn item(request_id: &str) -> ProposeItem {
        ProposeItem {
            command: Command::Reserve {
                key: RecordKey::new("s1", "sku").unwrap(),
                quantity: 1,
                expected_version: None,
            },
            idempotency: None,
            request_id: request_id.into(),
            path: "/reserve".into(),
        }
    }

    async fn until(mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "condition not met");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn writes_leave_at_once_while_slots_are_free_then_share_a_batch_without_the_ones_given_up(
    ) {
        let leader = Arc::new(HeldLeader::new());
        let identity = Arc::new(Identity::new(
            2,
            Arc::new(SimFs::new()),
            "/node".into(),
            IdentityState::fresh(),
        ));
        let forwarder = Forwarder::new(
            2,
            Arc::new(Held(leader.clone())),
            "secret".into(),
            identity,
            Arc::new(Telemetry::new()),
        );
        let send = |id: &str, timeout: Duration| {
            let forwarder = forwarder.clone();
            let item = item(id);
            tokio::spawn(async move { forwarder.propose(1, "leader:1", item, timeout).await })
        };
        let long = Duration::from_secs(30);
        // While a slot is free, a write leaves at once, alone.
        let mut first = Vec::new();
        for i in 0..PROPOSE_BATCHES_IN_FLIGHT_MAX {
            first.push(send(&format!("first-{i}"), long));
            until(|| leader.batches().len() == i + 1).await;
        }
        // The slots are busy: these queue, and one caller gives up while queued.
        let queued: Vec<_> = (0..5).map(|i| send(&format!("queued-{i}"), long)).collect();
        let gave_up = send("gave-up", Duration::from_millis(20)).await.unwrap();
        assert!(
            matches!(gave_up, Err(TransportError::NoAnswer { .. })),
            "{gave_up:?}"
        );
        leader.open();
        for answer in first.into_iter().chain(queued) {
            let answer = answer.await.unwrap();
            assert!(
                matches!(answer, Ok(Err(ProposeError::NotLeader { .. }))),
                "each item gets the leader's own result: {answer:?}"
            );
        }
        let batches = leader.batches();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        let mut expected = vec![1; PROPOSE_BATCHES_IN_FLIGHT_MAX];
        expected.push(5);
        assert_eq!(
            sizes, expected,
            "the queued writes share the next batch: {batches:?}"
        );
        assert!(
            batches.iter().flatten().all(|id| id != "gave-up"),
            "a write whose caller gave up is not sent"
        );
    }

    fn queue_of(line_counts: &[usize]) -> VecDeque<Waiting> {
        use crate::inventory::{BatchLine, ErrorPolicy};
        let key = RecordKey::new("s1", "sku").unwrap();
        let line = BatchLine::Adjust {
            key,
            delta: 1,
            expected_version: None,
        };
        line_counts
            .iter()
            .map(|&lines| {
                let mut item = item("r");
                if lines > 1 {
                    item.command = Command::Batch {
                        lines: vec![line.clone(); lines],
                        policy: ErrorPolicy::RejectEverything,
                    };
                }
                Waiting {
                    item,
                    timeout: Duration::from_secs(1),
                    answer: oneshot::channel().0,
                }
            })
            .collect()
    }

    #[test]
    fn a_forwarded_batch_is_bounded_by_its_commands_and_by_their_lines() {
        let max = PROPOSE_BATCH_LINES_MAX;
        let cases: [(&[usize], usize); 7] = [
            (&[], 0),
            (&[1; 70], PROPOSE_BATCH_ITEMS_MAX),
            (&[max, 1], 1),
            (&[1, max], 1),
            (&[max / 2, max / 2, 1], 2),
            (&[max * 2, 1], 1),
            (&[100, 100, 100], 3),
        ];
        for (line_counts, expected) in cases {
            let queue = queue_of(line_counts);
            assert_eq!(batch_length(&queue), expected, "{line_counts:?}");
        }
    }

    #[test]
    fn refusals_before_reading_are_undelivered_and_other_failures_are_unknown() {
        for status in [400, 401, 404, 409] {
            assert!(matches!(
                read_reply("n", status, b"", 1),
                Err(TransportError::Unreachable { .. })
            ));
        }
        for status in [500, 503, 504] {
            assert!(matches!(
                read_reply("n", status, b"", 1),
                Err(TransportError::NoAnswer { .. })
            ));
        }
    }

    #[test]
    fn an_answer_with_the_wrong_number_of_results_leaves_every_item_unknown() {
        let reply: ProposeReply = vec![Err(ProposeError::NotLeader { leader: Some(2) })];
        let body = encode_rpc(&reply);
        assert!(matches!(
            read_reply("n", 200, &body, 2),
            Err(TransportError::NoAnswer { .. })
        ));
        let read = read_reply("n", 200, &body, 1).unwrap();
        assert!(matches!(
            read[0],
            Err(ProposeError::NotLeader { leader: Some(2) })
        ));
        assert!(matches!(
            read_reply("n", 200, b"\xff\xff\xff", 1),
            Err(TransportError::NoAnswer { .. })
        ));
    }
}
