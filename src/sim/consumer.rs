//! A consumer of the event feed that reads through the faults, as a search index or a warehouse
//! system would: it pages `GET /api/events?after=<last seq seen>` from node after node (one
//! after the other, moving on when a node does not answer), linearizable and local reads in
//! turn, while the clients write and the fault schedule kills, partitions and restarts nodes.
//! Once the run has converged it reads on up to the feed's head ([`catch_up`]); the check
//! (`checks::subscriber`) then holds what it saw against the final feed: every event once, in
//! order, equal to the one every replica keeps.
//!
//! What it checks as it reads (a page that breaks it is noted, the reader goes on from what it
//! got): a page starts right after the cursor and is ascending and dense. A 410 `EVENTS_GONE`
//! is a broken promise when the run forgets nothing; with retention on (the small-retention
//! variant) it is what a consumer that fell behind must be told: the reader counts the events
//! it lost and goes on from `oldestSeq - 1`, as the README tells consumers to.
//!
//! The nodes are taken in turn, not drawn from the run's random generator, so the reader takes
//! nothing from the clients' and the faults' draws.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::SimCluster;
use crate::client::wire::{codes, EventBody};
use crate::client::{ClientError, Consistency};
use crate::inventory::EventFilter;
use crate::raft::NodeId;

/// Events the reader asks for per page: small, so the feed of a run takes many pages and a
/// fault can fall between any two.
const PAGE_LIMIT: usize = 25;
/// How long the reader waits for one page (as a client's read).
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause once a page reached the head (or a node did not answer) before the next poll.
const POLL_INTERVAL: Duration = Duration::from_millis(150);
/// The pause of a slow reader (the small-retention variant), which falls behind far enough for
/// the nodes to forget what it has not read yet.
const SLOW_POLL_INTERVAL: Duration = Duration::from_millis(2_500);
/// Pages the final catch-up reads at most (a run writes a few hundred events).
const CATCH_UP_PAGES_MAX: usize = 400;

/// What the reader saw, for the check.
#[derive(Debug, Default)]
pub struct FeedReading {
    /// Every event received, in the order received.
    pub seen: Vec<EventBody>,
    /// The seq to read after: the last one seen, or `oldestSeq - 1` after a 410.
    pub cursor: u64,
    pub pages: usize,
    /// Requests no node answered with a page (down, cut off, or no leader).
    pub unanswered: usize,
    /// Events the nodes had forgotten before the reader got to them (410s).
    pub lost_to_retention: u64,
    /// Pages that broke a promise, as they came.
    pub problems: Vec<String>,
}

/// How a reader reads.
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    /// Whether a 410 is expected (retention forgets events during the run).
    pub retention: bool,
    /// A slow reader pauses long between polls, to fall behind the retention.
    pub slow: bool,
}

/// Reads the feed from node after node until `stop` is set; answers what it saw.
pub async fn follow(
    cluster: Arc<SimCluster>,
    options: ReaderOptions,
    stop: Arc<AtomicBool>,
) -> FeedReading {
    let mut reading = FeedReading::default();
    let mut round = 0_usize;
    while !stop.load(Ordering::SeqCst) {
        let node = node_of(&cluster, round);
        let consistency = consistency_of(round);
        let more = read_page(&cluster, node, consistency, options, &mut reading).await;
        round += 1;
        if !more {
            let pause = if options.slow {
                SLOW_POLL_INTERVAL
            } else {
                POLL_INTERVAL
            };
            madsim::time::sleep(pause).await;
        }
    }
    reading
}

/// Once the run has converged: reads on (linearizable reads, node after node) until the cursor
/// is at `head`, at most [`CATCH_UP_PAGES_MAX`] pages.
pub async fn catch_up(
    cluster: &SimCluster,
    head: u64,
    options: ReaderOptions,
    reading: &mut FeedReading,
) {
    for round in 0..CATCH_UP_PAGES_MAX {
        if reading.cursor >= head {
            return;
        }
        let node = node_of(cluster, round);
        read_page(cluster, node, Consistency::Linearizable, options, reading).await;
    }
}

/// The nodes in turn.
fn node_of(cluster: &SimCluster, round: usize) -> NodeId {
    let ids = cluster.ids();
    ids[round % ids.len()]
}

/// Linearizable and local reads in turn: the local ones are served by whatever the node has
/// applied, a lagging or restarted follower's included.
fn consistency_of(round: usize) -> Consistency {
    if round.is_multiple_of(2) {
        Consistency::Linearizable
    } else {
        Consistency::Local
    }
}

/// Reads one page after the cursor from `node`; answers whether the page said there is more.
async fn read_page(
    cluster: &SimCluster,
    node: NodeId,
    consistency: Consistency,
    options: ReaderOptions,
    reading: &mut FeedReading,
) -> bool {
    let client = cluster.client(node).with_timeout(PAGE_TIMEOUT);
    let after = reading.cursor;
    let answer = client
        .events(
            after,
            Some(PAGE_LIMIT),
            &EventFilter::default(),
            consistency,
        )
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(ClientError::Transport(_)) => {
            reading.unanswered += 1;
            return false;
        }
        Err(other) => {
            reading
                .problems
                .push(format!("node {node} after {after}: {other}"));
            return false;
        }
    };
    match (answer.status, answer.body) {
        (200, Ok(page)) => {
            reading.pages += 1;
            let page = page.data;
            take_page(node, after, page.events, reading);
            page.next.is_some()
        }
        (410, Err(error)) if error.error.code == codes::EVENTS_GONE => {
            let oldest = error
                .error
                .details
                .as_ref()
                .and_then(|details| details.get("oldestSeq"))
                .and_then(|oldest| oldest.as_u64());
            match oldest {
                Some(oldest) if options.retention && oldest > after + 1 => {
                    reading.lost_to_retention += oldest - 1 - after;
                    reading.cursor = oldest - 1;
                    true
                }
                _ => {
                    reading.problems.push(format!(
                        "node {node} after {after}: 410 EVENTS_GONE (oldestSeq {oldest:?}) though {}",
                        if options.retention { "that is no gap" } else { "nothing is forgotten" }
                    ));
                    false
                }
            }
        }
        (503, Err(_)) => {
            reading.unanswered += 1;
            false
        }
        (status, body) => {
            reading.problems.push(format!(
                "node {node} after {after}: status {status}: {body:?}"
            ));
            false
        }
    }
}

/// Takes a page read after `after`: notes it if it does not start at `after + 1` or is not
/// dense, and moves the cursor to its last event.
fn take_page(node: NodeId, after: u64, events: Vec<EventBody>, reading: &mut FeedReading) {
    let mut expected = after + 1;
    for event in events {
        if event.seq != expected {
            reading.problems.push(format!(
                "node {node} after {after}: seq {} where seq {expected} was due",
                event.seq
            ));
        }
        expected = event.seq + 1;
        reading.cursor = reading.cursor.max(event.seq);
        reading.seen.push(event);
    }
}
