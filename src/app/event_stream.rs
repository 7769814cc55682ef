//! One subscriber of the event feed (`GET /api/events/stream`): a task that reads this node's
//! applied events by cursor and hands them, in seq order, to the HTTP body through a small
//! channel.
//!
//! Why a task and a cursor, not a broadcast: a subscriber never holds more than one page of
//! events ([`STREAM_PAGE_EVENTS`]) and the channel's few frames ([`STREAM_CHANNEL_FRAMES`]),
//! however far behind it is; the events themselves stay in storage, where the feed keeps them
//! anyway. The task wakes on the feed's watch channel (`subscribe_feed`: the last seq applied,
//! deterministic wake-up order) and reads from its cursor until it reaches the head. It never
//! forwards and never reorders: a follower streams what it has applied, in seq order.
//!
//! Invariants: every frame sent is an event with a seq greater than the last one sent (the
//! cursor only moves forward); nothing between the cursor and the head is skipped unless the
//! filter rejects it. A filtered scan over many non-matching events still sends a keep-alive
//! every `keepalive` interval, so a consumer never sees silence longer than that.
//!
//! When the stream ends (the client is gone, retention overtook the cursor, the subscriber fell
//! too far behind, the body stayed full too long, storage failed, the feed's sender is gone),
//! the task returns why ([`StreamEnd`]) and drops its sender: the HTTP body ends and the client
//! reconnects with `Last-Event-ID`. A cursor that retention overtook then gets 410.
//!
//! Slow subscribers: a subscriber is disconnected when, while a frame waits for room in its
//! body (the client is the bottleneck, not the feed), it is more than `backlog_max` events
//! further behind the head than the least it has been behind since it connected. A live
//! subscriber (caught up at some point) is cut at `backlog_max` events behind; one that connected
//! far back in history may catch up at its own pace, but is cut as soon as the writes outrun it
//! by `backlog_max` more. (A plain "head - cursor > backlog_max" would cut every subscriber that
//! starts further back than that, on every reconnect: it could never catch up.)
//!
//! What is deliberately not here: HTTP (the route, the 410 and 503 answers and the SSE framing
//! are `api::event_stream`), and the limit of subscribers (a semaphore in [`App`], taken before
//! a stream opens).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::recent_feed::{FeedItem, RecentFeed};
use super::App;
use crate::inventory::EventFilter;
use crate::raft::events::{EventPage, EventsError, FeedHead};
use crate::raft::watch;
use crate::storage::StorageError;

/// Events read at a time (from storage or the node's ring of recent ones), sent as one frame:
/// what one subscriber holds in memory at most besides its channel's frames.
pub const STREAM_PAGE_EVENTS: usize = 256;
/// Frames between a subscriber's task and its HTTP body, each up to [`STREAM_PAGE_EVENTS`]
/// events: enough to keep the socket busy while the task reads the next page, small enough that
/// a blocked body holds little.
pub const STREAM_CHANNEL_FRAMES: usize = 4;
/// The reconnection delay the stream advises in its first frame (`retry:`), in ms.
pub const STREAM_RETRY_MS: u64 = 1_000;
/// How long a frame may wait for room in a full body channel (the client reads nothing, or its
/// socket is full) before the subscriber is disconnected.
pub const STREAM_STALL_MAX: Duration = Duration::from_secs(30);

/// What a subscriber reads: this node's applied feed. [`App`] is the product's; tests plug in a
/// feed of their own.
pub trait FeedSource: Send + Sync + 'static {
    /// Events with seq > `after` matching `filter` (as `App::events_local`).
    fn read_page(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventPage, EventsError>;
    fn head(&self) -> Result<FeedHead, StorageError>;
    /// The last seq applied; changes after each apply.
    fn watch(&self) -> watch::Receiver<u64>;
    /// Turns true when the node stops serving streams (it is shutting down).
    fn stopping(&self) -> watch::Receiver<bool>;
    /// The node's shared newest events (`app::recent_feed`), its tailer started; None: every
    /// subscriber reads storage itself.
    fn recent(self: &Arc<Self>) -> Option<Arc<RecentFeed>> {
        None
    }
}

impl FeedSource for App {
    fn read_page(
        &self,
        after: u64,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventPage, EventsError> {
        self.events_local(after, limit, filter)
    }

    fn head(&self) -> Result<FeedHead, StorageError> {
        self.feed_head()
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.subscribe_feed()
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.event_streams_stop.subscribe()
    }

    fn recent(self: &Arc<Self>) -> Option<Arc<RecentFeed>> {
        let app = Arc::downgrade(self);
        let read = move |after, limit| {
            let app = app.upgrade()?;
            Some(app.events_local(after, limit, &EventFilter::default()))
        };
        let interval = Duration::from_millis(self.config().events.stream_interval_ms);
        self.recent_feed.start_once(
            read,
            self.subscribe_feed(),
            self.event_streams_stop.subscribe(),
            interval,
        );
        Some(self.recent_feed.clone())
    }
}

impl App {
    /// Ends every event stream of this node and any opened later (at shutdown: an open stream
    /// would otherwise hold its connection through the whole drain). Their clients resume on
    /// another node.
    pub fn stop_event_streams(&self) {
        self.event_streams_stop.send_if_modified(|stopping| {
            let changed = !*stopping;
            *stopping = true;
            changed
        });
    }

    /// A permit to open one more stream on this node, held until the stream ends; None when
    /// `events.subscribers_max` are open.
    pub fn feed_subscriber_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.feed_subscribers.clone().try_acquire_owned().ok()
    }
}

/// The limits of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// Longest silence: a keep-alive comment is sent when no frame was sent for this long.
    pub keepalive: Duration,
    /// How many events further behind than its best a subscriber may fall (module docs).
    pub backlog_max: u64,
    /// How long a frame may wait for room in the body channel.
    pub stall_max: Duration,
}

/// What a subscriber's task sends to its HTTP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The reconnection delay to advise (the first frame).
    Retry { ms: u64 },
    /// Events in seq order, at least one, each shared with the node's other subscribers
    /// (rendered once): a page the subscriber read, sent as one frame so that the body writes
    /// it as one chunk.
    Events(Vec<Arc<FeedItem>>),
    /// Nothing to send for a while; `head` is this node's last seq applied.
    KeepAlive { head: u64 },
}

/// Why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client went away (the body was dropped).
    Closed,
    /// Retention forgot events after the cursor while the subscriber was connected.
    Overtaken { cursor: u64, oldest_seq: u64 },
    /// The subscriber fell too far behind (module docs).
    Backlog { cursor: u64, head: u64 },
    /// A frame waited longer than `stall_max` for room in the body.
    Stalled { cursor: u64 },
    /// The feed's sender is gone (the node is shutting down).
    FeedClosed,
    /// The node stops serving streams (`App::stop_event_streams`).
    NodeStopping,
    /// Reading the feed failed.
    Failed(String),
}

/// Opens a stream of the events after `after` that match `filter`: answers why not when
/// `after` is already older than the oldest event kept (`EventsError::Gone`), or the feed
/// cannot be read, before anything is sent. The returned channel yields [`Frame`]s until the
/// stream ends; `on_end` is called with why (for logs and metrics), after the channel closed.
pub fn open<S: FeedSource>(
    source: Arc<S>,
    after: u64,
    filter: EventFilter,
    settings: StreamSettings,
    on_end: impl FnOnce(StreamEnd) + Send + 'static,
) -> Result<mpsc::Receiver<Frame>, EventsError> {
    // Watch before the first read: an event applied after it wakes the task. A subscriber of a
    // node with a shared ring of its newest events wakes when the ring moves.
    let recent = source.recent();
    let feed = match &recent {
        Some(recent) => recent.subscribe(),
        None => source.watch(),
    };
    let stopping = source.stopping();
    source.read_page(after, 1, &EventFilter::default())?;
    let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_FRAMES);
    let subscriber = Subscriber {
        source,
        recent,
        filter,
        settings,
        feed,
        stopping,
        sender,
        cursor: after,
        least_behind: u64::MAX,
        last_frame: Instant::now(),
    };
    tokio::spawn(async move {
        let end = subscriber.run().await;
        on_end(end);
    });
    Ok(receiver)
}

struct Subscriber<S> {
    source: Arc<S>,
    /// The node's newest events, read before storage when the cursor is in them.
    recent: Option<Arc<RecentFeed>>,
    filter: EventFilter,
    settings: StreamSettings,
    feed: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    sender: mpsc::Sender<Frame>,
    /// Every event with seq <= cursor that matches the filter was sent.
    cursor: u64,
    /// The least `head - cursor` seen since connecting.
    least_behind: u64,
    last_frame: Instant,
}

impl<S: FeedSource> Subscriber<S> {
    async fn run(mut self) -> StreamEnd {
        let retry = Frame::Retry {
            ms: STREAM_RETRY_MS,
        };
        if let Err(end) = self.send(retry).await {
            return end;
        }
        loop {
            if let Err(end) = self.step().await {
                return end;
            }
        }
    }

    /// Sends one page after the cursor, or waits at the head for a change or a keep-alive.
    async fn step(&mut self) -> Result<(), StreamEnd> {
        if *self.stopping.borrow() {
            return Err(StreamEnd::NodeStopping);
        }
        let from_ring = self
            .recent
            .as_ref()
            .and_then(|recent| recent.read(self.cursor, STREAM_PAGE_EVENTS, &self.filter));
        if let Some(read) = from_ring {
            self.observe(read.last);
            self.send_events(read.items).await?;
            self.cursor = self.cursor.max(read.examined);
            if read.examined < read.last {
                return self.owe_keep_alive(read.last).await;
            }
            return self.wait_at_head().await;
        }
        let page = match self
            .source
            .read_page(self.cursor, STREAM_PAGE_EVENTS, &self.filter)
        {
            Ok(page) => page,
            Err(EventsError::Gone { oldest_seq, .. }) => {
                return Err(StreamEnd::Overtaken {
                    cursor: self.cursor,
                    oldest_seq,
                })
            }
            Err(other) => return Err(StreamEnd::Failed(other.to_string())),
        };
        self.observe(page.head);
        self.send_events(page.events.into_iter().map(FeedItem::new).collect())
            .await?;
        // A cursor ahead of this node's head (a client coming from a node further on) stays.
        let examined = page.next.unwrap_or(page.head);
        self.cursor = self.cursor.max(examined);
        if page.next.is_some() {
            return self.owe_keep_alive(page.head).await;
        }
        self.wait_at_head().await
    }

    /// Sends `items` (seqs ascending, all past the cursor) as one frame; the cursor moves to the
    /// last.
    async fn send_events(&mut self, items: Vec<Arc<FeedItem>>) -> Result<(), StreamEnd> {
        let (Some(first), Some(last)) = (items.first(), items.last()) else {
            return Ok(());
        };
        assert!(first.event.seq > self.cursor, "the feed went backwards");
        assert!(
            items
                .windows(2)
                .all(|pair| pair[0].event.seq < pair[1].event.seq),
            "a page of events out of order"
        );
        let last = last.event.seq;
        self.send(Frame::Events(items)).await?;
        self.cursor = last;
        Ok(())
    }

    /// More to read now; a filtered scan finding nothing still owes its keep-alive.
    async fn owe_keep_alive(&mut self, head: u64) -> Result<(), StreamEnd> {
        if self.last_frame.elapsed() >= self.settings.keepalive {
            self.send(Frame::KeepAlive { head }).await?;
        }
        Ok(())
    }

    /// Waits for an event past the cursor; sends a keep-alive when none comes in time.
    async fn wait_at_head(&mut self) -> Result<(), StreamEnd> {
        if *self.feed.borrow_and_update() > self.cursor {
            return Ok(());
        }
        let keepalive_at = self.last_frame + self.settings.keepalive;
        tokio::select! {
            changed = self.feed.changed() => return changed.map_err(|_| StreamEnd::FeedClosed),
            () = tokio::time::sleep_until(keepalive_at) => {}
            () = self.sender.closed() => return Err(StreamEnd::Closed),
            _ = self.stopping.changed() => return Err(StreamEnd::NodeStopping),
        }
        let head = self.read_head()?.last_seq;
        self.send(Frame::KeepAlive { head }).await
    }

    /// Sends `frame` once the body has room: re-checks the backlog whenever the feed moves
    /// meanwhile, and gives up after `stall_max`.
    async fn send(&mut self, frame: Frame) -> Result<(), StreamEnd> {
        let deadline = Instant::now() + self.settings.stall_max;
        loop {
            let changed = tokio::select! {
                permit = self.sender.reserve() => {
                    permit.map_err(|_| StreamEnd::Closed)?.send(frame);
                    self.last_frame = Instant::now();
                    return Ok(());
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(StreamEnd::Stalled { cursor: self.cursor });
                }
                changed = self.feed.changed() => changed,
                _ = self.stopping.changed() => return Err(StreamEnd::NodeStopping),
            };
            changed.map_err(|_| StreamEnd::FeedClosed)?;
            // The head the subscriber is measured against: the ring's when it reads the ring (it
            // may lag storage by a few ms of events, and must not count as the subscriber's).
            let head = match &self.recent {
                Some(recent) => recent.last(),
                None => self.read_head()?.last_seq,
            };
            self.check_backlog(head)?;
        }
    }

    fn read_head(&self) -> Result<FeedHead, StreamEnd> {
        self.source
            .head()
            .map_err(|error| StreamEnd::Failed(error.to_string()))
    }

    /// Notes how far behind the head the subscriber is; returns it.
    fn observe(&mut self, head: u64) -> u64 {
        let behind = head.saturating_sub(self.cursor);
        self.least_behind = self.least_behind.min(behind);
        behind
    }

    /// Called while a frame waits for room: the subscriber, not the feed, is the bottleneck.
    fn check_backlog(&mut self, head: u64) -> Result<(), StreamEnd> {
        let behind = self.observe(head);
        if behind.saturating_sub(self.least_behind) > self.settings.backlog_max {
            return Err(StreamEnd::Backlog {
                cursor: self.cursor,
                head,
            });
        }
        Ok(())
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::inventory::Event;

    /// A feed in memory: events 1..=last, of which `oldest..` are kept; a read examines at
    /// most `scan_max` events (as the store's filtered reads do).
    struct MemoryFeed {
        events: Mutex<(Vec<Event>, u64)>,
        scan_max: usize,
        sender: watch::Sender<u64>,
        _receiver: watch::Receiver<u64>,
        stop: watch::Sender<bool>,
    }

    impl MemoryFeed {
        fn new(scan_max: usize) -> Arc<Self> {
            let (sender, receiver) = watch::channel(0);
            Arc::new(Self {
                events: Mutex::new((Vec::new(), 1)),
                scan_max,
                sender,
                _receiver: receiver,
                stop: watch::channel(false).0,
            })
        }

        /// Appends `count` events of `sku`.
        fn append(&self, sku: &str, count: u64) {
            let mut guard = self.events.lock().unwrap();
            for _ in 0..count {
                let seq = guard.0.len() as u64 + 1;
                guard.0.push(Event::sample(seq, sku));
            }
            self.sender.send(guard.0.len() as u64).unwrap();
        }

        fn forget_before(&self, oldest: u64) {
            self.events.lock().unwrap().1 = oldest;
        }
    }

    impl FeedSource for MemoryFeed {
        fn read_page(
            &self,
            after: u64,
            limit: usize,
            filter: &EventFilter,
        ) -> Result<EventPage, EventsError> {
            let guard = self.events.lock().unwrap();
            let (events, oldest) = (&guard.0, guard.1);
            let last = events.len() as u64;
            if after + 1 < oldest && after < last {
                return Err(EventsError::Gone {
                    after,
                    oldest_seq: oldest,
                });
            }
            let mut page = Vec::new();
            let mut examined = after;
            for event in events.iter().skip(after as usize).take(self.scan_max) {
                examined = event.seq;
                if filter.matches(event) {
                    page.push(event.clone());
                    if page.len() == limit {
                        break;
                    }
                }
            }
            Ok(EventPage {
                events: page,
                next: (examined < last).then_some(examined),
                head: last,
            })
        }

        fn head(&self) -> Result<FeedHead, StorageError> {
            let guard = self.events.lock().unwrap();
            Ok(FeedHead {
                last_seq: guard.0.len() as u64,
                oldest_seq: guard.1,
            })
        }

        fn watch(&self) -> watch::Receiver<u64> {
            self.sender.subscribe()
        }

        fn stopping(&self) -> watch::Receiver<bool> {
            self.stop.subscribe()
        }
    }

    fn settings(keepalive_ms: u64, backlog_max: u64) -> StreamSettings {
        StreamSettings {
            keepalive: Duration::from_millis(keepalive_ms),
            backlog_max,
            stall_max: Duration::from_secs(30),
        }
    }

    type Ends = tokio::sync::oneshot::Receiver<StreamEnd>;

    /// A stream's frames, one event at a time (a page frame is handed out event by event).
    struct Frames {
        receiver: mpsc::Receiver<Frame>,
        pending: std::collections::VecDeque<Arc<FeedItem>>,
    }

    impl Frames {
        async fn recv(&mut self) -> Option<Frame> {
            if let Some(item) = self.pending.pop_front() {
                return Some(Frame::Events(vec![item]));
            }
            match self.receiver.recv().await? {
                Frame::Events(items) => {
                    assert!(!items.is_empty(), "an empty page frame");
                    self.pending.extend(items);
                    Some(Frame::Events(vec![self.pending.pop_front()?]))
                }
                other => Some(other),
            }
        }
    }

    fn open_on(
        feed: &Arc<MemoryFeed>,
        after: u64,
        filter: EventFilter,
        settings: StreamSettings,
    ) -> Result<(Frames, Ends), EventsError> {
        let (tell, ends) = tokio::sync::oneshot::channel();
        let receiver = open(feed.clone(), after, filter, settings, move |end| {
            let _ = tell.send(end);
        })?;
        let frames = Frames {
            receiver,
            pending: Default::default(),
        };
        Ok((frames, ends))
    }

    async fn next_seq(frames: &mut Frames) -> Option<u64> {
        loop {
            match frames.recv().await? {
                Frame::Events(items) => return Some(items[0].event.seq),
                Frame::Retry { .. } | Frame::KeepAlive { .. } => {}
            }
        }
    }

    #[tokio::test]
    async fn events_come_in_order_after_the_cursor_then_live_ones_as_applied() {
        let feed = MemoryFeed::new(usize::MAX);
        feed.append("A", 5);
        let (mut frames, _ends) =
            open_on(&feed, 2, EventFilter::default(), settings(60_000, 100)).unwrap();
        assert_eq!(frames.recv().await, Some(Frame::Retry { ms: 1_000 }));
        for seq in 3..=5 {
            assert_eq!(next_seq(&mut frames).await, Some(seq));
        }
        feed.append("A", 2);
        assert_eq!(next_seq(&mut frames).await, Some(6));
        assert_eq!(next_seq(&mut frames).await, Some(7));
    }

    #[tokio::test]
    async fn an_idle_stream_sends_keep_alives_with_the_head() {
        let feed = MemoryFeed::new(usize::MAX);
        feed.append("A", 3);
        let (mut frames, _ends) =
            open_on(&feed, 3, EventFilter::default(), settings(20, 100)).unwrap();
        assert_eq!(frames.recv().await, Some(Frame::Retry { ms: 1_000 }));
        assert_eq!(frames.recv().await, Some(Frame::KeepAlive { head: 3 }));
        assert_eq!(frames.recv().await, Some(Frame::KeepAlive { head: 3 }));
    }

    #[tokio::test]
    async fn a_filtered_scan_over_many_other_events_still_keeps_alive() {
        // A read examines 10 events: 1,000 of another SKU take 100 reads, each owing a
        // keep-alive (interval 0) before the one matching event comes.
        let feed = MemoryFeed::new(10);
        feed.append("other", 1_000);
        feed.append("A", 1);
        let filter = EventFilter {
            sku: Some("A".into()),
            ..EventFilter::default()
        };
        let (mut frames, _ends) = open_on(&feed, 0, filter, settings(0, 100)).unwrap();
        let mut keep_alives = 0;
        let seq = loop {
            match frames.recv().await.unwrap() {
                Frame::KeepAlive { .. } => keep_alives += 1,
                Frame::Events(items) => break items[0].event.seq,
                Frame::Retry { .. } => {}
            }
        };
        assert_eq!(seq, 1_001);
        assert!(keep_alives >= 99, "{keep_alives} keep-alives");
    }

    #[tokio::test]
    async fn a_cursor_already_forgotten_is_refused_and_one_overtaken_ends_the_stream() {
        let feed = MemoryFeed::new(usize::MAX);
        feed.append("A", 100);
        feed.forget_before(65);
        let refused = open_on(&feed, 10, EventFilter::default(), settings(60_000, 1_000));
        assert!(matches!(
            refused,
            Err(EventsError::Gone { oldest_seq: 65, .. })
        ));
        // Connected at 64 (nothing missed), then retention passes the cursor.
        let (mut frames, ends) =
            open_on(&feed, 64, EventFilter::default(), settings(60_000, 1_000)).unwrap();
        assert_eq!(next_seq(&mut frames).await, Some(65));
        let mut last = 65;
        // The task runs ahead into the channel; forget everything it may not have read yet.
        feed.forget_before(1_000);
        feed.append("A", 1_000);
        while let Some(seq) = next_seq(&mut frames).await {
            assert_eq!(seq, last + 1, "no gap before the stream ends");
            last = seq;
        }
        assert!(last < 1_000, "ended at {last}");
        assert_eq!(
            ends.await.unwrap(),
            StreamEnd::Overtaken {
                cursor: last,
                oldest_seq: 1_000
            }
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_reads_nothing_is_cut_past_its_backlog_and_loses_nothing_sent() {
        let feed = MemoryFeed::new(usize::MAX);
        let (mut frames, ends) =
            open_on(&feed, 0, EventFilter::default(), settings(60_000, 50)).unwrap();
        // The channel holds a few frames; the task then waits with a page in hand while the
        // feed runs 50 events past it.
        for _ in 0..10 {
            feed.append("A", 30);
            tokio::task::yield_now().await;
        }
        let end = ends.await.unwrap();
        let StreamEnd::Backlog { cursor, head } = end else {
            panic!("ended {end:?}");
        };
        assert!(head - cursor > 50, "{cursor} {head}");
        let mut sent = Vec::new();
        while let Some(seq) = next_seq(&mut frames).await {
            sent.push(seq);
        }
        assert_eq!(sent, (1..=sent.len() as u64).collect::<Vec<_>>());
        assert!(sent.len() < 300);
    }

    #[tokio::test]
    async fn a_stopping_node_ends_its_streams_and_any_opened_later() {
        let feed = MemoryFeed::new(usize::MAX);
        feed.append("A", 3);
        let (mut frames, ends) =
            open_on(&feed, 0, EventFilter::default(), settings(60_000, 50)).unwrap();
        for seq in 1..=3 {
            assert_eq!(next_seq(&mut frames).await, Some(seq));
        }
        feed.stop.send_if_modified(|stopping| {
            *stopping = true;
            true
        });
        assert_eq!(next_seq(&mut frames).await, None);
        assert_eq!(ends.await.unwrap(), StreamEnd::NodeStopping);
        let (mut frames, ends) =
            open_on(&feed, 0, EventFilter::default(), settings(60_000, 50)).unwrap();
        assert_eq!(next_seq(&mut frames).await, None);
        assert_eq!(ends.await.unwrap(), StreamEnd::NodeStopping);
    }

    #[tokio::test]
    async fn a_client_that_goes_away_ends_its_task() {
        let feed = MemoryFeed::new(usize::MAX);
        let (frames, ends) =
            open_on(&feed, 0, EventFilter::default(), settings(60_000, 50)).unwrap();
        drop(frames);
        assert_eq!(ends.await.unwrap(), StreamEnd::Closed);
    }
}
