//! `stockraft bench --subscribers N`: N readers of the event feed on the followers while the
//! write load runs (issue 32: every subscriber receives every event in order; the delay from a
//! write's acknowledgement to its event's delivery on a follower).
//!
//! Before the load starts, [`Subscribers::connect`] asks every node given by `--nodes` who
//! leads (`GET /api/health`), reads the feed's head (a linearizable page of the feed), and opens
//! N streams `GET /api/events/stream?after=<head>`, round-robin over the nodes that do not lead.
//! Each reader checks that the seqs it receives are head+1, head+2, ... with no gap and no
//! duplicate; the first seq out of place fails that reader (it stops reading and says which
//! seq it expected and which it got). A stream the node ends (a slow consumer disconnected past
//! its backlog, say) is opened again after the last seq received, as a consumer would, and
//! counted; the check runs across the reconnection.
//!
//! Delivery delay: the bench's writers record, for every acknowledged write, its log index
//! (the answer's `x-stockraft-log-index`) and the instant the answer arrived ([`Acks`]). A reader
//! notes the instant each chunk of the stream arrived; for an event whose log index was
//! acknowledged, its delay is that instant minus the acknowledgement's (a follower may apply
//! an entry before the leader's answer reaches the writer: such a delay counts as 0). Events
//! of writes not acknowledged to this bench (retried, timed out, other clients) have no delay.
//!
//! After the load, [`Subscribers::finish`] reads the feed's head again and waits, at most
//! [`CATCH_UP_WAIT`], until every reader has received it; a reader that has not is incomplete.
//!
//! Deliberately not done: filters (every reader takes the whole feed), and TLS (the bench
//! speaks plain HTTP, as its writers do).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::sse::{SseItem, SseParser};
use crate::client::wire::Health;
use crate::client::{headers, routes, Client, Consistency};
use crate::inventory::EventFilter;

/// How long the readers may take, after the load stopped, to receive the feed's head.
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// How long the nodes may take to agree on a leader before the readers connect.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// How long a node may take to answer a stream request (its headers).
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a stream before it is taken for dead and opened again: three of the
/// server's keep-alive intervals (~15 s).
const IDLE_MAX: Duration = Duration::from_secs(45);
/// Streams one reader may open again in one run before it is failed.
const RECONNECTS_MAX: u32 = 100;
/// Pause before opening a stream again.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How often [`Subscribers::finish`] looks at the readers' progress.
const PROGRESS_POLL: Duration = Duration::from_millis(50);
/// Failures named in the report (the rest are counted).
const FAILURES_NAMED_MAX: usize = 5;
/// Delays above this are recorded as this (the histogram's range), in microseconds.
const DELAY_US_MAX: u64 = 60_000_000;

/// The acknowledged writes of a run: log index -> microseconds since the run's clock started.
pub struct Acks {
    started: Instant,
    by_log_index: RwLock<HashMap<u64, u64>>,
}

impl Default for Acks {
    fn default() -> Self {
        Self::new()
    }
}

impl Acks {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            by_log_index: RwLock::default(),
        }
    }

    /// Microseconds since this run's clock started.
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// A write was acknowledged now; its answer named `log_index`.
    pub fn record(&self, log_index: u64) {
        let now_us = self.now_us();
        self.by_log_index
            .write()
            .expect("acks lock")
            .insert(log_index, now_us);
    }

    /// Records the acknowledgement an accepted write's answer headers carry, if any.
    pub fn record_answer(&self, status: u16, answer_headers: &[(String, String)]) {
        if !(200..300).contains(&status) {
            return;
        }
        let log_index = answer_headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(headers::LOG_INDEX))
            .and_then(|(_, value)| value.parse().ok());
        if let Some(log_index) = log_index {
            self.record(log_index);
        }
    }
}

/// What the readers of one run saw, as the `BENCH` line reports it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Readers connected.
    pub subscribers: usize,
    /// Readers that received every event from the head at the start to the head at the end,
    /// in order, once each.
    pub subscribers_complete: usize,
    /// The feed's head when the readers connected, and after the load.
    pub feed_head_start: u64,
    pub feed_head_end: u64,
    /// Events received, summed over the readers.
    pub events_delivered: u64,
    /// Events whose delay was measured (their write was acknowledged to this bench).
    pub deliveries_timed: u64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub delivery_max_ms: f64,
    /// Streams opened again after a node ended one.
    pub subscriber_reconnects: u64,
    /// The first few readers' failures, each naming its node.
    pub subscriber_failures: Vec<String>,
}

impl Delivery {
    pub fn complete(&self) -> bool {
        self.subscribers_complete == self.subscribers
    }
}

/// The readers of one run.
pub struct Subscribers {
    readers: Vec<Arc<Mutex<Reader>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acks: Arc<Acks>,
    head_start: u64,
}

/// Where and how streams are opened.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    token: Option<String>,
}

impl Subscribers {
    /// Opens `count` streams after the feed's current head, round-robin over the followers
    /// among `clients`' nodes, on `http` (a pool without a total timeout: streams last).
    /// Returns once every stream has been answered.
    pub async fn connect(
        clients: &[Client],
        http: reqwest::Client,
        token: Option<String>,
        count: usize,
        acks: Arc<Acks>,
    ) -> anyhow::Result<Self> {
        assert!(count > 0, "connect is for at least one subscriber");
        let followers = followers(clients).await?;
        let head_start = feed_head(&clients[0]).await?;
        let target = Target { http, token };
        let opened = futures::future::try_join_all((0..count).map(|n| {
            let node = clients[followers[n % followers.len()]].node().to_owned();
            let target = target.clone();
            async move {
                let response = open(&target, &node, head_start).await?;
                Ok::<_, anyhow::Error>((node, response))
            }
        }))
        .await?;
        let mut readers = Vec::new();
        let mut tasks = Vec::new();
        for (node, response) in opened {
            let reader = Arc::new(Mutex::new(Reader::new(node, head_start)));
            readers.push(reader.clone());
            tasks.push(tokio::spawn(read(
                target.clone(),
                response,
                reader,
                acks.clone(),
            )));
        }
        eprintln!(
            "bench: {count} subscriber(s) on {} follower(s) after seq {head_start}",
            followers.len()
        );
        Ok(Self {
            readers,
            tasks,
            acks,
            head_start,
        })
    }

    /// After the load: reads the feed's head, waits until every reader has received it (at
    /// most [`CATCH_UP_WAIT`]), stops the readers and sums up what they saw.
    pub async fn finish(self, client: &Client) -> anyhow::Result<Delivery> {
        let head_end = feed_head(client).await?;
        let deadline = Instant::now() + CATCH_UP_WAIT;
        while Instant::now() < deadline && !self.all_done(head_end) {
            tokio::time::sleep(PROGRESS_POLL).await;
        }
        for task in &self.tasks {
            task.abort();
        }
        let acks = self.acks.by_log_index.read().expect("acks lock");
        let readers: Vec<Reader> = self
            .readers
            .iter()
            .map(|reader| reader.lock().expect("reader lock").clone())
            .collect();
        Ok(summarize(&readers, &acks, self.head_start, head_end))
    }

    fn all_done(&self, head_end: u64) -> bool {
        self.readers.iter().all(|reader| {
            let reader = reader.lock().expect("reader lock");
            reader.failure.is_some() || reader.last_seq >= head_end
        })
    }
}

/// The indexes of the nodes in `clients` that do not lead (asks each node's health until one
/// names a leader, at most [`LEADER_WAIT`]).
async fn followers(clients: &[Client]) -> anyhow::Result<Vec<usize>> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        let mut node_ids = Vec::new();
        let mut leader = None;
        for client in clients {
            let health: Option<Health> = match client.health().await {
                Ok(answer) => answer.ok().ok().map(|envelope| envelope.data),
                Err(_) => None,
            };
            node_ids.push(health.as_ref().map(|health| health.raft.node_id));
            leader = leader.or(health.and_then(|health| health.raft.leader_id));
        }
        if let Some(leader) = leader {
            let followers: Vec<usize> = (0..clients.len())
                .filter(|&n| node_ids[n].is_some_and(|id| id != leader))
                .collect();
            if followers.is_empty() {
                bail!(
                    "no follower among --nodes to subscribe on (node {leader} leads; give every \
                     node's address)"
                );
            }
            return Ok(followers);
        }
        if Instant::now() >= deadline {
            bail!("no node named a leader within {LEADER_WAIT:?}");
        }
        tokio::time::sleep(PROGRESS_POLL).await;
    }
}

/// The feed's head now (a linearizable page of one event, from the start).
async fn feed_head(client: &Client) -> anyhow::Result<u64> {
    let page = client
        .events(
            0,
            Some(1),
            &EventFilter::default(),
            Consistency::Linearizable,
        )
        .await
        .context("reading the feed's head")?
        .ok()
        .context("reading the feed's head")?;
    Ok(page.data.head)
}

/// Opens the stream of every event after `after` on `node`.
async fn open(target: &Target, node: &str, after: u64) -> anyhow::Result<reqwest::Response> {
    let path = routes::events_stream(Some(after), &EventFilter::default());
    let mut request = target
        .http
        .get(format!("http://{node}{path}"))
        .header("accept", "text/event-stream");
    if let Some(token) = &target.token {
        request = request.header(headers::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = tokio::time::timeout(OPEN_TIMEOUT, request.send())
        .await
        .with_context(|| format!("node {node} did not answer the stream request"))?
        .with_context(|| format!("opening the stream on node {node}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        let body = response.text().await.unwrap_or_default();
        bail!("node {node} answered the stream request with {status}: {body}");
    }
    Ok(response)
}

/// Reads one subscriber's stream until aborted (or failed), opening it again when the node
/// ends it.
async fn read(
    target: Target,
    mut response: reqwest::Response,
    reader: Arc<Mutex<Reader>>,
    acks: Arc<Acks>,
) {
    let mut parser = SseParser::new();
    let mut positions = Vec::new();
    loop {
        let chunk = tokio::time::timeout(IDLE_MAX, response.chunk()).await;
        let received_us = acks.now_us();
        if let Ok(Ok(Some(bytes))) = chunk {
            positions.clear();
            let parsed = match parser.feed(&bytes) {
                Ok(items) => positions_of(items, &mut positions),
                Err(error) => Err(error.to_string()),
            };
            let acked = acks.by_log_index.read().expect("acks lock");
            let mut reader = reader.lock().expect("reader lock");
            if let Err(error) = parsed {
                reader.fail(error);
                return;
            }
            for position in &positions {
                reader.receive(*position, received_us, &acked);
            }
            if reader.failure.is_some() {
                return;
            }
            continue;
        }
        // The node ended the stream, broke off, or went silent: open it again after the last
        // seq received.
        let after = {
            let mut reader = reader.lock().expect("reader lock");
            reader.reconnects += 1;
            if reader.reconnects > RECONNECTS_MAX {
                reader.fail(format!("the stream ended {RECONNECTS_MAX} times"));
                return;
            }
            reader.last_seq
        };
        tokio::time::sleep(RECONNECT_PAUSE).await;
        let node = reader.lock().expect("reader lock").node.clone();
        match open(&target, &node, after).await {
            Ok(reopened) => {
                response = reopened;
                parser = SseParser::new();
            }
            Err(error) => tracing::debug!("subscriber on {node}: {error:#}"),
        }
    }
}

/// An event's place in the feed, as a stream's `data:` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Position {
    seq: u64,
    log_index: u64,
}

/// One subscriber: where it reads and what it has received.
#[derive(Debug, Clone)]
struct Reader {
    node: String,
    /// The last seq received in order (the head at the start before any).
    last_seq: u64,
    delivered: u64,
    reconnects: u32,
    /// The first thing out of place; the reader stops there.
    failure: Option<String>,
    /// Delays of events whose write was acknowledged when they arrived, in microseconds.
    delays_us: Histogram<u64>,
    /// Events whose write was not (yet) acknowledged when they arrived: (log index, arrival
    /// µs), matched against the acknowledgements once the load is over.
    unmatched: Vec<(u64, u64)>,
}

impl Reader {
    fn new(node: String, after: u64) -> Self {
        Self {
            node,
            last_seq: after,
            delivered: 0,
            reconnects: 0,
            failure: None,
            delays_us: delay_histogram(),
            unmatched: Vec::new(),
        }
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("node {}: {why}", self.node));
        }
    }

    /// One event, received at `received_us`; `acked` holds the acknowledgements so far.
    fn receive(&mut self, position: Position, received_us: u64, acked: &HashMap<u64, u64>) {
        if self.failure.is_some() {
            return;
        }
        let expected = self.last_seq + 1;
        if position.seq != expected {
            let what = if position.seq <= self.last_seq {
                "a duplicate"
            } else {
                "a gap"
            };
            self.fail(format!(
                "expected seq {expected}, received {} ({what})",
                position.seq
            ));
            return;
        }
        self.last_seq = position.seq;
        self.delivered += 1;
        match acked.get(&position.log_index) {
            Some(&acked_us) => record_delay(&mut self.delays_us, received_us, acked_us),
            None => self.unmatched.push((position.log_index, received_us)),
        }
    }
}

fn delay_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, DELAY_US_MAX, 3).expect("static bounds")
}

fn record_delay(histogram: &mut Histogram<u64>, received_us: u64, acked_us: u64) {
    let delay_us = received_us.saturating_sub(acked_us);
    histogram.saturating_record(delay_us.clamp(1, DELAY_US_MAX));
}

/// Sums up the readers: completeness against `head_end`, delays over all of them.
fn summarize(
    readers: &[Reader],
    acked: &HashMap<u64, u64>,
    head_start: u64,
    head_end: u64,
) -> Delivery {
    let mut delays_us = delay_histogram();
    let mut delivery = Delivery {
        subscribers: readers.len(),
        feed_head_start: head_start,
        feed_head_end: head_end,
        ..Delivery::default()
    };
    let mut failures = Vec::new();
    for reader in readers {
        delays_us.add(&reader.delays_us).expect("same bounds");
        for &(log_index, received_us) in &reader.unmatched {
            if let Some(&acked_us) = acked.get(&log_index) {
                record_delay(&mut delays_us, received_us, acked_us);
            }
        }
        delivery.events_delivered += reader.delivered;
        delivery.subscriber_reconnects += u64::from(reader.reconnects);
        match &reader.failure {
            Some(failure) => failures.push(failure.clone()),
            None if reader.last_seq < head_end => failures.push(format!(
                "node {}: received up to seq {} of {head_end} within {CATCH_UP_WAIT:?}",
                reader.node, reader.last_seq
            )),
            None => delivery.subscribers_complete += 1,
        }
    }
    let ms = |quantile: f64| delays_us.value_at_quantile(quantile) as f64 / 1000.0;
    delivery.deliveries_timed = delays_us.len();
    if !delays_us.is_empty() {
        delivery.delivery_p50_ms = ms(0.5);
        delivery.delivery_p99_ms = ms(0.99);
        delivery.delivery_max_ms = delays_us.max() as f64 / 1000.0;
    }
    let unnamed = failures.len().saturating_sub(FAILURES_NAMED_MAX);
    failures.truncate(FAILURES_NAMED_MAX);
    if unnamed > 0 {
        failures.push(format!("and {unnamed} more"));
    }
    delivery.subscriber_failures = failures;
    delivery
}

/// The positions of the events among a stream's items (keep-alives and `retry:` hints are
/// skipped); an event whose `data` is not the feed's, or whose `id` is not its seq, is an error.
fn positions_of(items: Vec<SseItem>, positions: &mut Vec<Position>) -> Result<(), String> {
    for item in items {
        let SseItem::Event { id, data, .. } = item else {
            continue;
        };
        let position: Position = serde_json::from_str(&data)
            .map_err(|error| format!("an event that is not the feed's: {error}: {data}"))?;
        if id.as_deref() != Some(position.seq.to_string().as_str()) {
            return Err(format!("event {} came with id {id:?}", position.seq));
        }
        positions.push(position);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(seq: u64, log_index: u64) -> Position {
        Position { seq, log_index }
    }

    #[test]
    fn events_in_order_are_delivered_and_timed_from_their_acknowledgement() {
        let acked = HashMap::from([(10, 1_000), (11, 2_000)]);
        let mut reader = Reader::new("n2".into(), 4);
        reader.receive(position(5, 10), 1_500, &acked);
        reader.receive(position(6, 11), 1_900, &acked); // before its ack: 0
        reader.receive(position(7, 12), 2_500, &acked); // acked later
        reader.receive(position(8, 13), 2_600, &acked); // never acked (not this bench's)
        assert_eq!(reader.failure, None);
        assert_eq!((reader.last_seq, reader.delivered), (8, 4));
        let later = HashMap::from([(10, 1_000), (11, 2_000), (12, 2_000)]);
        let delivery = summarize(&[reader], &later, 4, 8);
        assert!(delivery.complete());
        assert_eq!(delivery.events_delivered, 4);
        assert_eq!(delivery.deliveries_timed, 3);
        assert_eq!(delivery.delivery_max_ms, 0.5);
    }

    #[test]
    fn a_gap_or_a_duplicate_fails_the_reader_where_it_happened() {
        let acked = HashMap::new();
        let mut gap = Reader::new("n2".into(), 0);
        gap.receive(position(1, 1), 0, &acked);
        gap.receive(position(3, 3), 0, &acked);
        gap.receive(position(4, 4), 0, &acked);
        assert_eq!(gap.last_seq, 1);
        assert!(gap
            .failure
            .as_deref()
            .unwrap()
            .contains("expected seq 2, received 3 (a gap)"));
        let mut duplicate = Reader::new("n3".into(), 0);
        duplicate.receive(position(1, 1), 0, &acked);
        duplicate.receive(position(1, 1), 0, &acked);
        assert!(duplicate
            .failure
            .as_deref()
            .unwrap()
            .contains("(a duplicate)"));
        let delivery = summarize(&[gap, duplicate], &acked, 0, 4);
        assert_eq!(delivery.subscribers_complete, 0);
        assert_eq!(delivery.subscriber_failures.len(), 2);
    }

    #[test]
    fn a_reader_short_of_the_final_head_is_incomplete() {
        let mut reader = Reader::new("n2".into(), 0);
        reader.receive(position(1, 1), 0, &HashMap::new());
        let delivery = summarize(&[reader.clone()], &HashMap::new(), 0, 2);
        assert!(!delivery.complete());
        assert!(delivery.subscriber_failures[0].contains("up to seq 1 of 2"));
        assert!(summarize(&[reader], &HashMap::new(), 0, 1).complete());
    }

    #[test]
    fn stream_items_give_the_events_positions_and_refuse_what_is_not_the_feed() {
        let text = "retry: 1000\n\nid: 1\nevent: created\ndata: {\"seq\":1,\"logIndex\":7,\"type\":\"created\"}\n\n\
                    : head 1\n\nid: 2\r\nevent: held\r\ndata:{\"seq\":2,\"logIndex\":9}\r\n\r\n";
        let items = SseParser::new().feed(text.as_bytes()).unwrap();
        let mut found = Vec::new();
        positions_of(items, &mut found).unwrap();
        assert_eq!(found, vec![position(1, 7), position(2, 9)]);
        for bad in [
            "id: 1\ndata: {\"nope\":1}\n\n",
            "id: 2\ndata: {\"seq\":1,\"logIndex\":1}\n\n",
        ] {
            let items = SseParser::new().feed(bad.as_bytes()).unwrap();
            assert!(positions_of(items, &mut Vec::new()).is_err(), "{bad}");
        }
    }

    #[test]
    fn acknowledgements_are_taken_from_accepted_writes_answers_only() {
        let acks = Acks::new();
        let answer = |index: &str| vec![(headers::LOG_INDEX.to_owned(), index.to_owned())];
        acks.record_answer(200, &answer("41"));
        acks.record_answer(409, &answer("42"));
        acks.record_answer(201, &answer("x"));
        let by = acks.by_log_index.read().unwrap();
        assert_eq!(by.keys().copied().collect::<Vec<_>>(), vec![41]);
    }
}
