//! The newest events of this node's feed, read from storage once and shared by every stream
//! subscriber of the node.
//!
//! Why: with each subscriber reading its own pages from storage and rendering its own JSON,
//! 100 subscribers on the followers cost their nodes 100 reads, decodes and renderings of every
//! event, and woke 100 tasks per apply call; writes ran at 0.27x of a build without the feed
//! (`scripts/bench.sh --feed`, docs/performance.md). Here one task per node (the *tailer*,
//! started with the first stream) wakes as entries apply, reads what is new once, and appends it
//! to a bounded ring of shared [`FeedItem`]s whose rendering (`api::event_stream`) is done once,
//! by whichever subscriber sends it first. Subscribers at the head take their events from the
//! ring (a reference count each) and wake on the ring's channel, published at most once per
//! `events.stream_interval_ms`; a subscriber behind the ring (connected far back, or slow) reads
//! storage by its cursor as before until it catches up.
//!
//! Invariants: the ring holds consecutive seqs (`first ..= last`), every one an event this node
//! applied, in order; it never holds more than [`RING_EVENTS`]. A gap (the tailer overtaken by
//! retention) empties it and starts again at the oldest kept: a subscriber never receives an
//! event out of order, and one whose cursor is outside the ring goes to storage, which answers
//! 410 for what is forgotten.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::inventory::{Event, EventFilter};
use crate::raft::events::{EventPage, EventsError};
use crate::raft::watch;

/// Events the ring keeps: a subscriber this far behind reads storage instead.
pub const RING_EVENTS: usize = 8_192;
/// Events the tailer reads per storage read.
const TAIL_PAGE_EVENTS: usize = 1_000;
/// How long the tailer waits after a failed storage read before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// One event and its wire form, rendered once for every subscriber that sends it.
#[derive(Debug)]
pub struct FeedItem {
    pub event: Event,
    /// The event's stream frame (`id:`, `event:`, `data:` with its JSON), set by the first
    /// subscriber that sends it (`api::event_stream`).
    pub rendered: OnceLock<String>,
}

impl FeedItem {
    pub fn new(event: Event) -> Arc<Self> {
        Arc::new(Self {
            event,
            rendered: OnceLock::new(),
        })
    }
}

impl PartialEq for FeedItem {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

impl Eq for FeedItem {}

/// What a subscriber took from the ring.
pub struct RingRead {
    /// Matching events with seq > the cursor, ascending.
    pub items: Vec<Arc<FeedItem>>,
    /// The last seq examined: the subscriber's cursor moves there.
    pub examined: u64,
    /// The ring's last seq.
    pub last: u64,
}

#[derive(Default)]
struct Ring {
    items: VecDeque<Arc<FeedItem>>,
    /// The seq of the newest item (or, when empty, the seq before the next one it will take).
    last: u64,
}

/// The shared newest events of one node (see the module docs).
pub struct RecentFeed {
    ring: Mutex<Ring>,
    /// The ring's last seq, published at most every `interval`.
    head: watch::Sender<u64>,
    _keep: watch::Receiver<u64>,
    started: AtomicBool,
}

impl Default for RecentFeed {
    fn default() -> Self {
        let (head, keep) = watch::channel(0);
        Self {
            ring: Mutex::default(),
            head,
            _keep: keep,
            started: AtomicBool::new(false),
        }
    }
}

impl RecentFeed {
    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver of the ring's last seq.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The ring's last seq (what subscribers reading it are measured against).
    pub fn last(&self) -> u64 {
        self.ring().last
    }

    /// The events after `after` matching `filter`, at most `limit`, if the ring holds the one
    /// right after `after` (or `after` is at or past its last); None when the subscriber must
    /// read storage.
    pub fn read(&self, after: u64, limit: usize, filter: &EventFilter) -> Option<RingRead> {
        let ring = self.ring();
        if after >= ring.last {
            return Some(RingRead {
                items: Vec::new(),
                examined: after,
                last: ring.last,
            });
        }
        let first = ring.items.front()?.event.seq;
        if after + 1 < first {
            return None;
        }
        let skip = (after + 1 - first) as usize;
        let mut items = Vec::new();
        let mut examined = after;
        for item in ring.items.iter().skip(skip) {
            examined = item.event.seq;
            if filter.matches(&item.event) {
                items.push(item.clone());
                if items.len() >= limit {
                    break;
                }
            }
        }
        Some(RingRead {
            items,
            examined,
            last: ring.last,
        })
    }

    /// Appends events read after the ring's last seq; a gap empties the ring first.
    fn append(&self, events: Vec<Event>) {
        let mut ring = self.ring();
        for event in events {
            if event.seq != ring.last + 1 {
                ring.items.clear();
            }
            ring.last = event.seq;
            ring.items.push_back(FeedItem::new(event));
            if ring.items.len() > RING_EVENTS {
                ring.items.pop_front();
            }
        }
        if let (Some(front), Some(back)) = (ring.items.front(), ring.items.back()) {
            assert_eq!(
                back.event.seq - front.event.seq + 1,
                ring.items.len() as u64,
                "the ring holds consecutive seqs"
            );
        }
    }

    /// Starts the tailer, once: `read` reads a page of every event after a seq from storage
    /// (None once the node is gone), `feed` is the node's channel of its last applied seq, and
    /// the tailer ends when `stopping` turns true (the node stops serving streams).
    pub fn start_once<R>(
        self: &Arc<Self>,
        read: R,
        feed: watch::Receiver<u64>,
        mut stopping: watch::Receiver<bool>,
        interval: Duration,
    ) where
        R: Fn(u64, usize) -> Option<Result<EventPage, EventsError>> + Send + 'static,
    {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let recent = self.clone();
        tokio::spawn(async move {
            if *stopping.borrow_and_update() {
                return;
            }
            tokio::select! {
                () = recent.tail(read, feed, interval) => {}
                _ = stopping.changed() => {}
            }
        });
    }

    /// The tailer: reads what the node applied after the ring's last seq, appends it, publishes
    /// the new last seq, and waits for more. Starts at the node's head (nothing before it is
    /// wanted by a subscriber at the head). Ends when the node is gone.
    async fn tail<R>(self: Arc<Self>, read: R, mut feed: watch::Receiver<u64>, interval: Duration)
    where
        R: Fn(u64, usize) -> Option<Result<EventPage, EventsError>>,
    {
        let start = *feed.borrow_and_update();
        self.ring().last = start;
        self.head
            .send_if_modified(|seen| std::mem::replace(seen, start) != start);
        loop {
            loop {
                let after = self.ring().last;
                match read(after, TAIL_PAGE_EVENTS) {
                    None => return,
                    Some(Ok(page)) => {
                        let more = page.next.is_some();
                        self.append(page.events);
                        if !more {
                            break;
                        }
                    }
                    Some(Err(EventsError::Gone { oldest_seq, .. })) => {
                        let mut ring = self.ring();
                        ring.items.clear();
                        ring.last = oldest_seq - 1;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the event stream tailer could not read the feed");
                        tokio::time::sleep(RETRY_AFTER_FAILURE).await;
                        break;
                    }
                }
            }
            let last = self.ring().last;
            self.head
                .send_if_modified(|seen| std::mem::replace(seen, last) != last);
            tokio::time::sleep(interval).await;
            if *feed.borrow_and_update() <= last && feed.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;

    fn seqs(read: &RingRead) -> Vec<u64> {
        read.items.iter().map(|item| item.event.seq).collect()
    }

    #[test]
    fn the_ring_serves_consecutive_events_after_a_cursor_and_sends_the_rest_to_storage() {
        let recent = RecentFeed::default();
        recent.ring().last = 10;
        recent.append((11..=20).map(|seq| Event::sample(seq, "a")).collect());
        let all = EventFilter::default();
        let read = recent.read(12, 5, &all).unwrap();
        assert_eq!(seqs(&read), [13, 14, 15, 16, 17]);
        assert_eq!((read.examined, read.last), (17, 20));
        // At or past the last: nothing yet, no storage read needed.
        assert!(recent.read(20, 5, &all).unwrap().items.is_empty());
        // The cursor right before the first item is served; one further back is not.
        assert_eq!(seqs(&recent.read(10, 1, &all).unwrap()), [11]);
        assert!(recent.read(9, 1, &all).is_none());
        // A filter examines to the end when too few match.
        let only_b = EventFilter {
            sku: Some("b".into()),
            ..Default::default()
        };
        let read = recent.read(12, 5, &only_b).unwrap();
        assert!(read.items.is_empty());
        assert_eq!(read.examined, 20);
    }

    #[test]
    fn the_ring_is_bounded_and_a_gap_empties_it() {
        let recent = RecentFeed::default();
        let total = RING_EVENTS as u64 + 10;
        recent.append((1..=total).map(|seq| Event::sample(seq, "a")).collect());
        assert_eq!(recent.ring().items.len(), RING_EVENTS);
        // Seqs 11..=total are kept: a cursor at 10 is served, one at 9 goes to storage.
        assert!(recent.read(9, 1, &EventFilter::default()).is_none());
        assert_eq!(
            seqs(&recent.read(10, 1, &EventFilter::default()).unwrap()),
            [11]
        );
        // The tailer overtaken: the next event it reads is not the next seq.
        recent.append(vec![Event::sample(total + 5, "a")]);
        assert_eq!(recent.ring().items.len(), 1);
        assert!(recent.read(total, 1, &EventFilter::default()).is_none());
        assert_eq!(
            seqs(&recent.read(total + 4, 1, &EventFilter::default()).unwrap()),
            [total + 5]
        );
    }

    /// A store of events `oldest..=last` read as the tailer reads storage.
    #[derive(Default)]
    struct Store {
        events: Mutex<(u64, Vec<Event>)>,
    }

    impl Store {
        fn read(&self, after: u64, limit: usize) -> Option<Result<EventPage, EventsError>> {
            let (oldest, events) = &*self.events.lock().unwrap();
            let head = events.last().map_or(0, |event| event.seq);
            if after + 1 < *oldest {
                return Some(Err(EventsError::Gone {
                    after,
                    oldest_seq: *oldest,
                }));
            }
            let page: Vec<Event> = events
                .iter()
                .filter(|event| event.seq > after)
                .take(limit)
                .cloned()
                .collect();
            let next = match page.last() {
                Some(last) if last.seq < head => Some(last.seq),
                _ => None,
            };
            Some(Ok(EventPage {
                events: page,
                next,
                head,
            }))
        }
    }

    async fn ring_reaches(recent: &RecentFeed, seq: u64) {
        let mut head = recent.subscribe();
        while *head.borrow_and_update() < seq {
            tokio::time::timeout(Duration::from_secs(5), head.changed())
                .await
                .expect("the ring moves")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn the_tailer_follows_the_feed_from_its_head_and_restarts_past_a_gap() {
        let store = Arc::new(Store::default());
        store.events.lock().unwrap().0 = 1;
        store.events.lock().unwrap().1 = (1..=3).map(|seq| Event::sample(seq, "a")).collect();
        let (feed, feed_rx) = watch::channel(3u64);
        let (stop, stop_rx) = watch::channel(false);
        let recent = Arc::new(RecentFeed::default());
        let reader = store.clone();
        let read = move |after, limit| reader.read(after, limit);
        recent.start_once(read, feed_rx, stop_rx, Duration::from_millis(1));
        // It starts at the head: what came before is for storage.
        ring_reaches(&recent, 3).await;
        assert!(recent.read(0, 10, &EventFilter::default()).is_none());
        // Many new events (more than one tail page) arrive: all of them, in order.
        let total = 3 + TAIL_PAGE_EVENTS as u64 * 2 + 5;
        store
            .events
            .lock()
            .unwrap()
            .1
            .extend((4..=total).map(|seq| Event::sample(seq, "a")));
        feed.send(total).unwrap();
        ring_reaches(&recent, total).await;
        let all = recent.read(3, usize::MAX, &EventFilter::default()).unwrap();
        assert_eq!(seqs(&all), (4..=total).collect::<Vec<_>>());
        // Retention overtook the tailer: it empties the ring and goes on from the oldest kept.
        {
            let mut events = store.events.lock().unwrap();
            events.0 = total + 10;
            events.1 = (total + 10..=total + 12)
                .map(|seq| Event::sample(seq, "a"))
                .collect();
            // What is forgotten reads as gone.
        }
        feed.send(total + 12).unwrap();
        ring_reaches(&recent, total + 12).await;
        assert!(recent.read(total, 1, &EventFilter::default()).is_none());
        let after_gap = recent.read(total + 9, 10, &EventFilter::default()).unwrap();
        assert_eq!(seqs(&after_gap), [total + 10, total + 11, total + 12]);
        // Stopped, it follows no more.
        stop.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        store
            .events
            .lock()
            .unwrap()
            .1
            .push(Event::sample(total + 13, "a"));
        // The tailer ended: it dropped its receiver of the feed.
        assert!(feed.send(total + 13).is_err());
        assert_eq!(recent.last(), total + 12);
    }
}
