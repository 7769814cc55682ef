//! Following the event feed over Server-Sent Events, across node restarts and leader changes.
//!
//! [`EventStream`] is one `GET /api/events/stream` on one node, read chunk by chunk (reqwest)
//! through the [`SseParser`]: never more than a chunk and a line in memory. [`Follow`] keeps a
//! cursor (the last seq it yielded) and, when a stream ends or a node cannot be reached,
//! reconnects with `Last-Event-ID: <cursor>`, to the same node first and then to the next of
//! the nodes it was given, round and round, pausing the server's `retry:` delay after each
//! round that found no node. Any node serves the stream from its applied state, so a follower
//! that has not yet applied the cursor simply waits until it has.
//!
//! Guarantees: an event is yielded once, in seq order: a seq not above the cursor is dropped
//! (never yielded twice), and without a filter every seq must be the cursor + 1 (else
//! [`FollowError::Gap`]: a node skipped one, which the feed's contract forbids). What ends a
//! follow: 410 (`FollowError::Gone`, with the oldest seq kept: the consumer must decide what to
//! do about the events it missed), any other 4xx (a bad filter, credentials), or a gap. A node
//! silent for longer than `idle_max` (no keep-alive) is taken for dead and left.

use std::time::Duration;

use super::sse::{SseItem, SseParser};
use super::wire::{ErrorBody, EventBody};
use super::{headers, routes};
use crate::inventory::EventFilter;

/// How long to wait for a node's answer (its headers) to a stream request.
const CONNECT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The reconnection pause before the server advised one (`retry:`).
const RETRY_DEFAULT: Duration = Duration::from_millis(1_000);
/// Longest silence accepted on a stream by default: three of the server's default keep-alive
/// intervals (15 s).
pub const IDLE_MAX_DEFAULT: Duration = Duration::from_secs(45);

/// Why a stream could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The node cannot be reached, answered 5xx, or broke off.
    #[error("node {node}: {message}")]
    Unavailable { node: String, message: String },
    /// The node refused the request (4xx): retrying elsewhere will not help.
    #[error("node {node} refused the stream: {status} {}: {}", .error.error.code, .error.error.message)]
    Refused {
        node: String,
        status: u16,
        error: Box<ErrorBody>,
    },
    /// The node sent what is not an event of the feed.
    #[error("node {node} sent a malformed event: {message}")]
    Malformed { node: String, message: String },
}

/// One item of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    Event(Box<EventBody>),
    /// A keep-alive: the node's last seq applied.
    Head(u64),
}

/// Where and how to open streams.
#[derive(Clone)]
pub struct StreamTarget {
    pub http: reqwest::Client,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub token: Option<String>,
}

/// One open stream on one node.
pub struct EventStream {
    node: String,
    response: reqwest::Response,
    parser: SseParser,
    pending: std::collections::VecDeque<SseItem>,
    /// The reconnection delay the node advised.
    retry: Option<Duration>,
}

impl EventStream {
    /// Opens the stream of events after `after` matching `filter` on `node`.
    pub async fn open(
        target: &StreamTarget,
        node: &str,
        after: u64,
        filter: &EventFilter,
    ) -> Result<Self, StreamError> {
        let unavailable = |message: String| StreamError::Unavailable {
            node: node.to_owned(),
            message,
        };
        let path = routes::events_stream(None, filter);
        let mut request = target
            .http
            .get(format!("{}://{node}{path}", target.scheme))
            .header("accept", "text/event-stream")
            .header("last-event-id", after.to_string());
        if let Some(token) = &target.token {
            request = request.header(headers::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = tokio::time::timeout(CONNECT_ANSWER_TIMEOUT, request.send())
            .await
            .map_err(|_| unavailable("no answer in time".into()))?
            .map_err(|error| unavailable(error.to_string()))?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(Self {
                node: node.to_owned(),
                response,
                parser: SseParser::new(),
                pending: Default::default(),
                retry: None,
            });
        }
        let body = response.bytes().await.unwrap_or_default();
        let error = serde_json::from_slice::<ErrorBody>(&body);
        match (status, error) {
            (400..=499, Ok(error)) => Err(StreamError::Refused {
                node: node.to_owned(),
                status,
                error: Box::new(error),
            }),
            (_, error) => Err(unavailable(match error {
                Ok(error) => format!("{status} {}", error.error.code),
                Err(_) => format!("{status} {}", String::from_utf8_lossy(&body)),
            })),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The next event or keep-alive; None when the node ended the stream. Waits at most
    /// `idle_max` for bytes.
    pub async fn next(&mut self, idle_max: Duration) -> Result<Option<FeedItem>, StreamError> {
        loop {
            while let Some(item) = self.pending.pop_front() {
                match item {
                    SseItem::Retry(ms) => self.retry = Some(Duration::from_millis(ms)),
                    SseItem::Comment(text) => {
                        let head = text.strip_prefix("head ").and_then(|h| h.parse().ok());
                        if let Some(head) = head {
                            return Ok(Some(FeedItem::Head(head)));
                        }
                    }
                    SseItem::Event { data, .. } => return self.event(&data).map(Some),
                }
            }
            let unavailable = |message: String| StreamError::Unavailable {
                node: self.node.clone(),
                message,
            };
            let chunk = tokio::time::timeout(idle_max, self.response.chunk())
                .await
                .map_err(|_| unavailable(format!("silent for {idle_max:?}")))?
                .map_err(|error| unavailable(error.to_string()))?;
            let Some(chunk) = chunk else {
                return Ok(None);
            };
            let items = self
                .parser
                .feed(&chunk)
                .map_err(|error| unavailable(error.to_string()))?;
            self.pending.extend(items);
        }
    }

    fn event(&self, data: &str) -> Result<FeedItem, StreamError> {
        let body: EventBody =
            serde_json::from_str(data).map_err(|error| StreamError::Malformed {
                node: self.node.clone(),
                message: format!("{error}: {data}"),
            })?;
        Ok(FeedItem::Event(Box::new(body)))
    }
}

/// Why a follow ended.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// Events after the cursor are no longer kept.
    #[error(
        "events after {after} are no longer kept; the oldest kept is {}",
        oldest_seq.map_or_else(|| "unknown".to_owned(), |seq| seq.to_string())
    )]
    Gone { after: u64, oldest_seq: Option<u64> },
    /// A node refused the stream (other than 410).
    #[error(transparent)]
    Refused(StreamError),
    /// Without a filter, a seq came that is not the one after the cursor.
    #[error("node {node} sent event {got} after {after}: the feed skipped")]
    Gap { node: String, after: u64, got: u64 },
}

/// What [`Follow::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    Event(Box<EventBody>),
    /// A keep-alive from `node`: its last seq applied.
    Head {
        node: String,
        head: u64,
    },
    /// The stream moved to `node` (after `reason`), resuming after the cursor.
    Resumed {
        node: String,
        reason: String,
    },
}

/// The feed after a cursor, from whichever of `nodes` serves it.
pub struct Follow {
    target: StreamTarget,
    nodes: Vec<String>,
    filter: EventFilter,
    /// The last seq yielded (or the starting `after`).
    cursor: u64,
    /// Index in `nodes` of the node to try next.
    node: usize,
    stream: Option<EventStream>,
    retry: Duration,
    idle_max: Duration,
    /// Why the last stream ended, reported with the next `Resumed`.
    ended: Option<String>,
}

impl Follow {
    pub fn new(target: StreamTarget, nodes: Vec<String>, after: u64, filter: EventFilter) -> Self {
        assert!(!nodes.is_empty(), "following needs at least one node");
        Self {
            target,
            nodes,
            filter,
            cursor: after,
            node: 0,
            stream: None,
            retry: RETRY_DEFAULT,
            idle_max: IDLE_MAX_DEFAULT,
            ended: None,
        }
    }

    /// Longest silence accepted from a node before it is left (default [`IDLE_MAX_DEFAULT`];
    /// keep it above the nodes' `events.stream_keepalive_ms`).
    pub fn with_idle_max(mut self, idle_max: Duration) -> Self {
        self.idle_max = idle_max;
        self
    }

    /// The last seq yielded.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next event (or keep-alive, or move to another node); reconnects as long as it takes.
    pub async fn next(&mut self) -> Result<Followed, FollowError> {
        loop {
            let Some(stream) = &mut self.stream else {
                let node = self.connect().await?;
                let reason = self.ended.take().unwrap_or_else(|| "start".into());
                return Ok(Followed::Resumed { node, reason });
            };
            let ended = match stream.next(self.idle_max).await {
                Ok(Some(FeedItem::Event(event))) => {
                    match Self::accept(&mut self.cursor, &self.filter, event, stream.node())? {
                        Some(event) => return Ok(Followed::Event(event)),
                        None => continue,
                    }
                }
                Ok(Some(FeedItem::Head(head))) => {
                    let node = stream.node().to_owned();
                    return Ok(Followed::Head { node, head });
                }
                Ok(None) => format!("node {} ended the stream", stream.node()),
                Err(error) => error.to_string(),
            };
            if let Some(retry) = stream.retry {
                self.retry = retry;
            }
            self.stream = None;
            self.ended = Some(ended);
        }
    }

    /// The event to yield, None for one already yielded, or the gap.
    fn accept(
        cursor: &mut u64,
        filter: &EventFilter,
        event: Box<EventBody>,
        node: &str,
    ) -> Result<Option<Box<EventBody>>, FollowError> {
        if event.seq <= *cursor {
            return Ok(None);
        }
        if filter.is_empty() && event.seq != *cursor + 1 {
            return Err(FollowError::Gap {
                node: node.to_owned(),
                after: *cursor,
                got: event.seq,
            });
        }
        *cursor = event.seq;
        Ok(Some(event))
    }

    /// Opens a stream on the current node, else the next ones, pausing `retry` after each round
    /// of failures; returns the node.
    async fn connect(&mut self) -> Result<String, FollowError> {
        let mut failures = 0;
        loop {
            let node = self.nodes[self.node].clone();
            match EventStream::open(&self.target, &node, self.cursor, &self.filter).await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    return Ok(node);
                }
                Err(StreamError::Refused {
                    status: 410, error, ..
                }) => {
                    let oldest_seq = error
                        .error
                        .details
                        .as_ref()
                        .and_then(|details| details.get("oldestSeq"))
                        .and_then(|oldest| oldest.as_u64());
                    return Err(FollowError::Gone {
                        after: self.cursor,
                        oldest_seq,
                    });
                }
                Err(refused @ StreamError::Refused { .. }) => {
                    return Err(FollowError::Refused(refused))
                }
                Err(other) => {
                    tracing::debug!(error = %other, "event stream: trying the next node");
                    self.ended = Some(other.to_string());
                }
            }
            self.node = (self.node + 1) % self.nodes.len();
            failures += 1;
            if failures % self.nodes.len() == 0 {
                tokio::time::sleep(self.retry).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64) -> Box<EventBody> {
        Box::new(EventBody {
            seq,
            log_index: seq,
            kind: "adjusted".into(),
            store_id: "s1".into(),
            sku: "A".into(),
            qty: 1,
            reserved: 0,
            delta: Some(1),
            version: seq,
            reservation_id: None,
            idempotency_key: None,
            at: "2026-12-07T00:00:00.000Z".into(),
        })
    }

    fn seqs(filter: &EventFilter, arriving: &[u64]) -> Result<Vec<u64>, FollowError> {
        let mut cursor = 2;
        let mut yielded = Vec::new();
        for &seq in arriving {
            if let Some(event) = Follow::accept(&mut cursor, filter, event(seq), "n")? {
                yielded.push(event.seq);
            }
        }
        Ok(yielded)
    }

    #[test]
    fn a_seq_already_yielded_is_dropped_and_an_unfiltered_gap_is_an_error() {
        let none = EventFilter::default();
        assert_eq!(seqs(&none, &[1, 2, 3, 4, 3, 4, 5]).unwrap(), [3, 4, 5]);
        assert!(matches!(
            seqs(&none, &[3, 5]),
            Err(FollowError::Gap {
                after: 3,
                got: 5,
                ..
            })
        ));
        let filtered = EventFilter {
            sku: Some("A".into()),
            ..EventFilter::default()
        };
        assert_eq!(seqs(&filtered, &[3, 7, 7, 9]).unwrap(), [3, 7, 9]);
    }
}
