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
/// Readers that time every event they receive (the first ones, spread over the followers).
const TIMED_READERS: usize = 10;
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
        for (n, (node, response)) in opened.into_iter().enumerate() {
            let timed = n < TIMED_READERS;
            let reader = Arc::new(Mutex::new(Reader::new(node, head_start, timed)));
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
    let timed = reader.lock().expect("reader lock").timed;
    let mut scanner = PositionScanner::new(timed);
    let mut positions = Vec::new();
    loop {
        let chunk = tokio::time::timeout(IDLE_MAX, response.chunk()).await;
        let received_us = acks.now_us();
        if let Ok(Ok(Some(bytes))) = chunk {
            positions.clear();
            let parsed = scanner.feed(&bytes, &mut positions);
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
                scanner = PositionScanner::new(timed);
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
    /// Whether this reader times its events' delivery.
    timed: bool,
    /// The first thing out of place; the reader stops there.
    failure: Option<String>,
    /// Delays of events whose write was acknowledged when they arrived, in microseconds.
    delays_us: Histogram<u64>,
    /// Events whose write was not (yet) acknowledged when they arrived: (log index, arrival
    /// µs), matched against the acknowledgements once the load is over.
    unmatched: Vec<(u64, u64)>,
}

impl Reader {
    fn new(node: String, after: u64, timed: bool) -> Self {
        Self {
            node,
            last_seq: after,
            delivered: 0,
            reconnects: 0,
            timed,
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
        if !self.timed {
            return;
        }
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

/// Longest line a [`PositionScanner`] accepts: far above any event's (a few hundred bytes).
const SCANNED_LINE_BYTES_MAX: usize = 64 * 1024;

/// Reads from a stockraft stream only what the check needs: each event's `id`, and for a timed
/// reader the `seq` and `logIndex` of its `data`. The bench's 100 readers run on the machine that serves the
/// load (issue 32 measures the nodes, not the readers), so a reader that built every event's
/// strings and parsed its whole JSON ([`crate::client::sse::SseParser`], the general client)
/// took CPU from the nodes it measures; this one allocates nothing per event.
///
/// It reads the stream as stockraft writes it: lines ended by `\n` (a `\r` before it is
/// dropped), one `data:` line per event, comments and `retry:`/`event:` lines skipped. An
/// event without an `id` is an error, as is a line over [`SCANNED_LINE_BYTES_MAX`]; a timed
/// reader also fails an event whose `id` is not its `seq` or whose `data` lacks either field.
/// An untimed reader's positions carry log index 0 (it reads no `data`).
#[derive(Debug, Default)]
struct PositionScanner {
    /// Whether `data` lines are read (for their `seq` and `logIndex`).
    timed: bool,
    /// The start of a line a chunk ended in the middle of.
    partial: Vec<u8>,
    /// The block's `id`, and its `data`'s position, until the empty line that ends it.
    id: Option<u64>,
    data: Option<Position>,
    /// Whether the block had a `data` line (read or not).
    has_data: bool,
}

impl PositionScanner {
    fn new(timed: bool) -> Self {
        Self {
            timed,
            ..Self::default()
        }
    }

    /// Consumes `bytes`; pushes the positions of the events they complete.
    fn feed(&mut self, mut bytes: &[u8], positions: &mut Vec<Position>) -> Result<(), String> {
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                return self.keep_partial(bytes);
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..end]);
            let done = self.line(&line, positions);
            line.clear();
            self.partial = line;
            done?;
            bytes = &bytes[end + 1..];
        }
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            self.line(&bytes[..end], positions)?;
            bytes = &bytes[end + 1..];
        }
        self.keep_partial(bytes)
    }

    fn keep_partial(&mut self, part: &[u8]) -> Result<(), String> {
        if self.partial.len() + part.len() > SCANNED_LINE_BYTES_MAX {
            return Err(format!("a line over {SCANNED_LINE_BYTES_MAX} bytes"));
        }
        self.partial.extend_from_slice(part);
        Ok(())
    }

    fn line(&mut self, line: &[u8], positions: &mut Vec<Position>) -> Result<(), String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let (id, data) = (self.id.take(), self.data.take());
            if !std::mem::take(&mut self.has_data) {
                return Ok(());
            }
            if !self.timed {
                let seq = id.ok_or("an event without an id")?;
                positions.push(Position { seq, log_index: 0 });
                return Ok(());
            }
            return match (id, data) {
                (_, None) => Ok(()),
                (Some(id), Some(position)) if id == position.seq => {
                    positions.push(position);
                    Ok(())
                }
                (id, Some(position)) => Err(format!("event {} came with id {id:?}", position.seq)),
            };
        }
        if let Some(value) = line.strip_prefix(b"id:") {
            self.id = Some(
                unsigned(value.strip_prefix(b" ").unwrap_or(value))
                    .ok_or_else(|| format!("an id that is not a seq: {}", lossy(line)))?,
            );
        } else if let Some(value) = line.strip_prefix(b"data:") {
            self.has_data = true;
            if !self.timed {
                return Ok(());
            }
            let field = |name: &[u8]| {
                field_after(value, name)
                    .ok_or_else(|| format!("an event that is not the feed's: {}", lossy(line)))
            };
            self.data = Some(Position {
                seq: field(b"\"seq\":")?,
                log_index: field(b"\"logIndex\":")?,
            });
        }
        Ok(())
    }
}

/// The unsigned number right after the first `name` in `json` (a field of a flat object).
fn field_after(json: &[u8], name: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(json, name)?;
    let rest = &json[at + name.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    unsigned(&rest[..digits])
}

/// `digits` as a u64: only ASCII digits, at least one, no overflow.
fn unsigned(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
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
        let mut reader = Reader::new("n2".into(), 4, true);
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
        let mut gap = Reader::new("n2".into(), 0, true);
        gap.receive(position(1, 1), 0, &acked);
        gap.receive(position(3, 3), 0, &acked);
        gap.receive(position(4, 4), 0, &acked);
        assert_eq!(gap.last_seq, 1);
        assert!(gap
            .failure
            .as_deref()
            .unwrap()
            .contains("expected seq 2, received 3 (a gap)"));
        let mut duplicate = Reader::new("n3".into(), 0, false);
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
        let mut reader = Reader::new("n2".into(), 0, true);
        reader.receive(position(1, 1), 0, &HashMap::new());
        let delivery = summarize(&[reader.clone()], &HashMap::new(), 0, 2);
        assert!(!delivery.complete());
        assert!(delivery.subscriber_failures[0].contains("up to seq 1 of 2"));
        assert!(summarize(&[reader], &HashMap::new(), 0, 1).complete());
    }

    #[test]
    fn the_scanner_finds_every_events_position_whatever_the_chunking() {
        let text = "retry: 1000\n\nid: 1\nevent: created\ndata: {\"seq\":1,\"logIndex\":7,\"type\":\"created\"}\n\n\
                    : head 1\n\nid: 2\r\nevent: held\r\ndata:{\"qty\":3,\"seq\":2,\"logIndex\":9}\r\n\r\n\
                    id: 3\ndata: {\"seq\":3,\"logIndex\":12345678901}\n\n";
        let expected = [position(1, 7), position(2, 9), position(3, 12_345_678_901)];
        for piece in [1, 2, 3, 7, 64, text.len()] {
            for timed in [true, false] {
                let mut scanner = PositionScanner::new(timed);
                let mut found = Vec::new();
                for chunk in text.as_bytes().chunks(piece) {
                    scanner.feed(chunk, &mut found).unwrap();
                }
                // An untimed reader reads no data: its positions have no log index.
                let expected: Vec<Position> = expected
                    .iter()
                    .map(|&p| position(p.seq, if timed { p.log_index } else { 0 }))
                    .collect();
                assert_eq!(found, expected, "pieces of {piece}, timed {timed}");
            }
        }
    }

    #[test]
    fn an_untimed_reader_checks_order_but_times_nothing() {
        let acked = HashMap::from([(10, 1_000)]);
        let mut reader = Reader::new("n2".into(), 0, false);
        reader.receive(position(1, 10), 1_500, &acked);
        reader.receive(position(3, 0), 1_600, &acked);
        assert_eq!((reader.last_seq, reader.delivered), (1, 1));
        assert!(reader.failure.as_deref().unwrap().contains("(a gap)"));
        assert_eq!((reader.delays_us.len(), reader.unmatched.len()), (0, 0));
        let untimed = PositionScanner::new(false).feed(b"data: {}\n\n", &mut Vec::new());
        assert!(untimed.is_err(), "an event without an id");
    }

    #[test]
    fn the_scanner_refuses_what_is_not_the_feed() {
        for bad in [
            "id: 1\ndata: {\"nope\":1}\n\n",
            "id: 2\ndata: {\"seq\":1,\"logIndex\":1}\n\n",
            "data: {\"seq\":1,\"logIndex\":1}\n\n",
            "id: x\ndata: {\"seq\":1,\"logIndex\":1}\n\n",
            "id: 1\ndata: {\"seq\":1,\"logIndex\":99999999999999999999}\n\n",
        ] {
            let result = PositionScanner::new(true).feed(bad.as_bytes(), &mut Vec::new());
            assert!(result.is_err(), "{bad}");
        }
        let endless = vec![b'x'; SCANNED_LINE_BYTES_MAX + 1];
        let mut scanner = PositionScanner::new(false);
        let first = scanner.feed(&endless[..10], &mut Vec::new());
        assert!(first.is_ok());
        assert!(scanner.feed(&endless[10..], &mut Vec::new()).is_err());
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
