#![cfg(not(madsim))]
//! The event feed over HTTP on real three-node clusters (issue 32): paging with filters against
//! the writes made, the Server-Sent Events stream (its frames, `Last-Event-ID`, resuming on
//! another node after the first is killed with no gap and no duplicate, 410 with `oldestSeq`
//! on both routes, the subscriber limit, a slow consumer cut and resumed with nothing missed),
//! the client's `Follow`, and `stockraft inv events` (table, JSON lines, `--follow` across a
//! leader kill).

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stockraft::client::follow::{EventStream, FeedItem, Follow, Followed, StreamTarget};
use stockraft::client::sse::{SseItem, SseParser};
use stockraft::client::wire::{
    AdjustRequest, CreateBatchRequest, CreateRequest, EventBody, ReserveRequest,
};
use stockraft::client::{routes, Client, Consistency, WriteOptions};
use stockraft::inventory::{EventFilter, EventKind};
use support::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest any wait of these tests may take.
const DEADLINE: Duration = Duration::from_secs(60);
/// A keep-alive interval short enough for a test to see several.
const KEEP_ALIVE_MS: u64 = 200;

fn stream_target() -> StreamTarget {
    StreamTarget {
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        scheme: "http",
        token: None,
    }
}

fn others(cluster: &Cluster, leader: u64) -> Vec<u64> {
    cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect()
}

async fn create(client: &Client, store_id: &str, sku: &str, quantity: i64) {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: store_id.into(),
        initial_quantity: quantity,
    };
    let answer = client.create(&body, &WriteOptions::default()).await;
    let answer = answer.unwrap();
    assert_eq!(
        answer.status, 201,
        "create {store_id}/{sku}: {:?}",
        answer.body
    );
}

/// Creates `count` records `<prefix>-<n>` in one batch (one event each).
async fn create_batch(client: &Client, prefix: &str, count: usize) {
    let records = (0..count)
        .map(|n| CreateRequest {
            sku: format!("{prefix}-{n}"),
            store_id: "bulk".into(),
            initial_quantity: 1,
        })
        .collect();
    let body = CreateBatchRequest { records };
    // Keyed, so that a write whose outcome a leader change left unknown (a loaded machine's
    // election) is retried safely: the retry applies it once or replays its answer.
    let options = WriteOptions::keyed(format!("batch-{prefix}"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        let answer = client.create_batch(&body, &options).await;
        match answer {
            Ok(answer) if answer.status == 503 && Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            answer => {
                let answer = answer.unwrap();
                assert_eq!(answer.status, 201, "batch {prefix}: {:?}", answer.body);
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn adjust(client: &Client, store_id: &str, sku: &str, delta: i64) -> Option<u64> {
    let body = AdjustRequest {
        delta,
        expected_version: None,
    };
    let answer = client
        .adjust(store_id, sku, &body, &WriteOptions::default())
        .await
        .ok()?;
    Some(answer.ok().ok()?.new_version)
}

/// Every event after `after` matching `filter`, paged `limit` at a time, as `node` answers.
async fn page_all(
    client: &Client,
    after: u64,
    limit: usize,
    filter: &EventFilter,
    consistency: Consistency,
) -> Vec<EventBody> {
    let (mut after, mut events) = (after, Vec::new());
    loop {
        let answer = client.events(after, Some(limit), filter, consistency).await;
        let page = answer.unwrap().ok().expect("a page").data;
        assert!(page.events.len() <= limit);
        events.extend(page.events);
        match page.next {
            Some(next) => after = next,
            None => return events,
        }
    }
}

/// `(seq, type, store, sku)` of each event.
fn summary(events: &[EventBody]) -> Vec<(u64, String, String, String)> {
    events
        .iter()
        .map(|e| (e.seq, e.kind.clone(), e.store_id.clone(), e.sku.clone()))
        .collect()
}

/// The feed's head, read linearizably through `client`.
async fn head(client: &Client) -> u64 {
    let answer = client
        .events(
            0,
            Some(1),
            &EventFilter::default(),
            Consistency::Linearizable,
        )
        .await;
    answer.unwrap().ok().expect("a page").data.head
}

fn inv(cluster: &Cluster, node: u64, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_stockraft"))
        .args(["inv", "--node", cluster.addr(node)])
        .args(args)
        .env_remove("STOCKRAFT_TOKEN")
        .env_remove("STOCKRAFT_NODE")
        .output()
        .expect("running stockraft inv");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json_lines(text: &str) -> Vec<EventBody> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_filters_returns_exactly_the_events_of_the_writes_made() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = others(&cluster, leader)[0];
    let client = cluster.client(follower);
    create(&client, "s1", "A", 10).await;
    create(&client, "s1", "B", 10).await;
    create(&client, "s2", "A", 10).await;
    assert_eq!(adjust(&client, "s1", "A", 5).await, Some(2));
    let hold = client
        .hold("s1", "B", 2, 600, &WriteOptions::default())
        .await
        .unwrap()
        .ok()
        .unwrap();
    let reservation = hold.reservation_id.expect("a hold names its reservation");
    let reserve = ReserveRequest {
        qty: 1,
        expected_version: None,
        ttl_seconds: None,
    };
    let reserved = client
        .reserve("s2", "A", &reserve, &WriteOptions::default())
        .await
        .unwrap();
    assert!(reserved.body.is_ok(), "{:?}", reserved.body);
    // Refused: no event.
    let too_many = ReserveRequest {
        qty: 1_000,
        ..reserve
    };
    let refused = client
        .reserve("s2", "A", &too_many, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(refused.status, 422);
    let ev = |seq: u64, kind: &str, store: &str, sku: &str| {
        (seq, kind.to_owned(), store.to_owned(), sku.to_owned())
    };
    let all = [
        ev(1, "created", "s1", "A"),
        ev(2, "created", "s1", "B"),
        ev(3, "created", "s2", "A"),
        ev(4, "adjusted", "s1", "A"),
        ev(5, "held", "s1", "B"),
        ev(6, "reserved", "s2", "A"),
    ];
    let pick = |seqs: &[u64]| -> Vec<_> {
        all.iter()
            .filter(|e| seqs.contains(&e.0))
            .cloned()
            .collect()
    };
    let none = EventFilter::default();
    let store = EventFilter {
        store_id: Some("s1".into()),
        ..EventFilter::default()
    };
    let sku = EventFilter {
        sku: Some("A".into()),
        ..EventFilter::default()
    };
    let kinds = EventFilter {
        kinds: Some(vec![EventKind::Held, EventKind::Reserved]),
        ..EventFilter::default()
    };
    let both = EventFilter {
        store_id: Some("s2".into()),
        sku: Some("A".into()),
        kinds: Some(vec![EventKind::Created]),
    };
    let cases = [
        (&none, pick(&[1, 2, 3, 4, 5, 6])),
        (&store, pick(&[1, 2, 4, 5])),
        (&sku, pick(&[1, 3, 4, 6])),
        (&kinds, pick(&[5, 6])),
        (&both, pick(&[3])),
    ];
    for node in [leader, follower] {
        for (filter, expected) in &cases {
            for limit in [1, 2, 1_000] {
                let client = cluster.client(node);
                let events = page_all(&client, 0, limit, filter, Consistency::Linearizable);
                assert_eq!(
                    summary(&events.await),
                    *expected,
                    "node {node} filter {filter:?} limit {limit}"
                );
            }
        }
    }
    // The details of one event, and `after` in the middle.
    let events = page_all(&client, 4, 100, &none, Consistency::Linearizable).await;
    assert_eq!(summary(&events), pick(&[5, 6]));
    let held = &events[0];
    assert_eq!(held.reservation_id.as_deref(), Some(reservation.as_str()));
    assert_eq!((held.qty, held.reserved, held.delta), (8, 2, Some(-2)));

    // The CLI: a table, JSON lines, filters.
    let (code, table, stderr) = inv(&cluster, follower, &["events"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 7, "{table}");
    assert_eq!(&rows[0][..4], ["SEQ", "TYPE", "STORE", "SKU"]);
    assert_eq!(&rows[5][..7], ["5", "held", "s1", "B", "8", "2", "-2"]);
    assert_eq!(rows[5][8], reservation);
    let (code, lines, stderr) = inv(&cluster, leader, &["--json", "events", "--after", "1"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        json_lines(&lines),
        page_all(&client, 1, 100, &none, Consistency::Linearizable).await
    );
    let (code, lines, stderr) = inv(
        &cluster,
        leader,
        &[
            "events",
            "--json",
            "--store",
            "s1",
            "--type",
            "created,held",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(summary(&json_lines(&lines)), pick(&[1, 2, 5]));
    let (code, _, stderr) = inv(&cluster, leader, &["events", "--type", "sold"]);
    assert_eq!(code, 2, "{stderr}");
}

/// Reads `stream` until it ends or fails, appending its events; stops early once `until`
/// events came.
async fn read_stream(stream: &mut EventStream, events: &mut Vec<EventBody>, until: u64) -> bool {
    loop {
        match stream.next(Duration::from_secs(5)).await {
            Ok(Some(FeedItem::Event(event))) => {
                events.push(*event);
                if events.last().unwrap().seq >= until {
                    return true;
                }
            }
            Ok(Some(FeedItem::Head(_))) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_on_another_node_after_the_leader_is_killed_has_no_gap_and_no_duplicate() {
    let extra = format!("[events]\nkeep_alive_ms = {KEEP_ALIVE_MS}\n");
    let mut cluster = Cluster::start(3, &extra).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let [b, c] = others(&cluster, leader)[..] else {
        panic!("three nodes")
    };
    let skus = ["k0", "k1", "k2", "k3", "k4"];
    for sku in skus {
        create(&cluster.client(c), "s1", sku, 1_000).await;
    }
    let addrs: Vec<String> = [leader, b, c]
        .iter()
        .map(|id| cluster.addr(*id).to_owned())
        .collect();

    // Three consumers start on the leader: a raw stream, the client's Follow, the CLI.
    let target = stream_target();
    let none = EventFilter::default();
    let mut raw = EventStream::open(&target, &addrs[0], 0, &none)
        .await
        .unwrap();
    let (follow_tx, mut follow_rx) = tokio::sync::mpsc::unbounded_channel();
    let follower_task = {
        let mut follow = Follow::new(target.clone(), addrs.clone(), 0, none.clone())
            .with_idle_max(Duration::from_secs(3));
        tokio::spawn(async move {
            loop {
                match follow.next().await {
                    Ok(Followed::Event(event)) => {
                        if follow_tx.send(*event).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => panic!("follow ended: {error}"),
                }
            }
        })
    };
    let cli_out = cluster.dir.path().join("follow.jsonl");
    let mut cli = Command::new(env!("CARGO_BIN_EXE_stockraft"))
        .args(["inv", "events", "--follow", "--json", "--node", &addrs[0]])
        .arg("--config")
        .arg(&cluster.config_path)
        .env_remove("STOCKRAFT_TOKEN")
        .env_remove("STOCKRAFT_NODE")
        .stdout(std::fs::File::create(&cli_out).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // A writer adjusting through C all along, keeping what was acknowledged.
    let writer = {
        let client = cluster.client(c);
        tokio::spawn(async move {
            let mut acknowledged = BTreeSet::new();
            for n in 0..300 {
                let sku = skus[n % skus.len()];
                if let Some(version) = adjust(&client, "s1", sku, 1).await {
                    acknowledged.insert((sku.to_owned(), version));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acknowledged
        })
    };

    let mut raw_events = Vec::new();
    assert!(
        read_stream(&mut raw, &mut raw_events, 60).await,
        "the leader's stream ended early"
    );
    cluster.kill(leader);
    // Whatever the leader's stream still delivered, then it ends.
    read_stream(&mut raw, &mut raw_events, u64::MAX).await;
    let last = raw_events.last().unwrap().seq;
    let acknowledged = writer.await.unwrap();
    let new_leader = cluster.wait_for_leader(&[b, c]).await;
    let head = head(&cluster.client(new_leader)).await;
    assert!(head >= 5 + acknowledged.len() as u64, "head {head}");

    // Resume on B with Last-Event-ID.
    let mut resumed = EventStream::open(&target, &addrs[1], last, &none)
        .await
        .unwrap();
    assert!(read_stream(&mut resumed, &mut raw_events, head).await);
    let seqs: Vec<u64> = raw_events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "resumed after {last}");
    let adjusted: BTreeSet<(String, u64)> = raw_events
        .iter()
        .filter(|event| event.kind == "adjusted")
        .map(|event| (event.sku.clone(), event.version))
        .collect();
    assert!(
        acknowledged.is_subset(&adjusted),
        "acknowledged writes without an event: {:?}",
        acknowledged.difference(&adjusted).collect::<Vec<_>>()
    );
    // What B streamed is what the paged route answers.
    let paged = page_all(
        &cluster.client(b),
        0,
        1_000,
        &none,
        Consistency::Linearizable,
    )
    .await;
    assert_eq!(paged, raw_events);

    // The client's Follow and the CLI moved on by themselves and saw the same events.
    let deadline = Instant::now() + DEADLINE;
    let mut followed = Vec::new();
    while followed.len() < raw_events.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, follow_rx.recv()).await;
        followed.push(event.expect("Follow reached the head in time").unwrap());
    }
    assert_eq!(followed, raw_events);
    follower_task.abort();
    loop {
        let text = std::fs::read_to_string(&cli_out).unwrap();
        let lines = text.lines().count();
        if lines >= raw_events.len() && text.ends_with('\n') {
            assert_eq!(json_lines(&text), raw_events);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "inv events --follow printed {lines} of {} events",
            raw_events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = cli.kill();
    let output = cli.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("streaming from"), "{stderr}");
    // For a note (`-- --nocapture`): what `inv events --follow` said across the kill.
    let printed = std::fs::read_to_string(&cli_out).unwrap();
    let around: Vec<&str> = printed.lines().skip(last as usize - 2).take(4).collect();
    println!("inv events --follow --json, stderr:\n{stderr}stdout around seq {last}:");
    println!("{}", around.join("\n"));
}

/// The raw text of a stream request, read for `duration`.
async fn stream_text(
    cluster: &Cluster,
    node: u64,
    path: &str,
    last_event_id: Option<&str>,
    duration: Duration,
) -> (u16, String) {
    let mut request = cluster.http.get(cluster.url(node, path));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let mut response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(duration, async {
        while let Ok(Some(chunk)) = response.chunk().await {
            text.extend_from_slice(&chunk);
        }
    })
    .await;
    (status, String::from_utf8(text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_the_oldest_kept_is_410_with_oldest_seq_on_both_routes() {
    let extra =
        format!("[events]\nkept_max = 64\nkeep_alive_ms = {KEEP_ALIVE_MS}\nsubscribers_max = 2\n");
    let cluster = Cluster::start(3, &extra).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = others(&cluster, leader)[0];
    let client = cluster.client(leader);
    for batch in 0..3 {
        create_batch(&client, &format!("b{batch}"), 100).await;
    }
    let gone = |status: u16, body: &Value| -> u64 {
        assert_eq!(status, 410, "{body}");
        assert_eq!(body["success"], false, "{body}");
        assert_eq!(body["error"]["code"], "EVENTS_GONE", "{body}");
        assert_eq!(body["error"]["statusCode"], 410, "{body}");
        body["error"]["details"]["oldestSeq"]
            .as_u64()
            .expect("oldestSeq")
    };
    // The follower streams what it has applied: wait until that is everything, so that its
    // paged answers (local, like its stream) and its stream agree on the oldest kept.
    let deadline = Instant::now() + DEADLINE;
    let follower_client = cluster.client(follower);
    let none = EventFilter::default();
    let follower_head = || async {
        let answer = follower_client.events(299, Some(1), &none, Consistency::Local);
        answer.await.ok()?.ok().ok().map(|page| page.data.head)
    };
    while follower_head().await != Some(300) {
        assert!(
            Instant::now() < deadline,
            "the follower never applied the writes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = cluster
        .get(follower, "/api/events?after=0&consistency=local")
        .await;
    let oldest = gone(status, &body);
    let (status, body) = cluster.get(leader, "/api/events?after=0").await;
    assert_eq!(gone(status, &body), oldest, "the same on the leader");
    assert!((2..=300).contains(&oldest), "oldest kept {oldest}");
    let (status, body) = cluster.get(follower, "/api/events/stream?after=0").await;
    assert_eq!(gone(status, &body), oldest);
    let path = format!("/api/events/stream?after={}", oldest - 1);
    let (status, text) = stream_text(&cluster, follower, &path, None, Duration::ZERO).await;
    assert_eq!(status, 200, "{text}");
    // Last-Event-ID wins over after, both ways.
    let (status, text) = stream_text(&cluster, follower, &path, Some("0"), Duration::ZERO).await;
    assert_eq!(gone(status, &serde_json::from_str(&text).unwrap()), oldest);
    let last_id = (oldest - 1).to_string();
    let (status, text) = stream_text(
        &cluster,
        follower,
        "/api/events/stream?after=0",
        Some(&last_id),
        Duration::from_millis(3 * KEEP_ALIVE_MS),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    // The frames: retry first, then each event, then keep-alives with the head.
    assert!(text.starts_with("retry: 1000\n\n"), "{text:.200}");
    let first = format!("id: {oldest}\nevent: created\ndata: {{\"seq\":{oldest},");
    assert!(text.contains(&first), "{text:.400}");
    assert!(
        text.contains("\n: head 300\n"),
        "{}",
        &text[text.len() - 200..]
    );
    let mut parser = SseParser::new();
    let items = parser.feed(text.as_bytes()).unwrap();
    let ids: Vec<u64> = items
        .iter()
        .filter_map(|item| match item {
            SseItem::Event { id, .. } => id.as_ref()?.parse().ok(),
            _ => None,
        })
        .collect();
    assert_eq!(ids, (oldest..=300).collect::<Vec<_>>());

    // The CLI says so too.
    let (code, _, stderr) = inv(&cluster, follower, &["events", "--after", "0"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("EVENTS_GONE"), "{stderr}");
    let (code, _, stderr) = inv(&cluster, follower, &["events", "--after", "0", "--follow"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("the oldest kept is {oldest}")),
        "{stderr}"
    );

    // Two streams at most on one node: a third is refused, and a slot frees when one ends.
    let target = stream_target();
    let none = EventFilter::default();
    let node = cluster.addr(follower);
    let first = EventStream::open(&target, node, 300, &none).await.unwrap();
    let _second = EventStream::open(&target, node, 300, &none).await.unwrap();
    let (status, body) = cluster.get(follower, "/api/events/stream?after=300").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "OVERLOADED", "{body}");
    let (status, _) = stream_text(
        &cluster,
        leader,
        "/api/events/stream?after=300",
        None,
        Duration::ZERO,
    )
    .await;
    assert_eq!(status, 200, "the limit is per node");
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    while EventStream::open(&target, node, 300, &none).await.is_err() {
        assert!(Instant::now() < deadline, "the slot never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_past_its_backlog_and_resumes_from_its_last_id_with_nothing_missed()
{
    let extra = format!("[events]\nstream_backlog_max = 100\nkeep_alive_ms = {KEEP_ALIVE_MS}\n");
    let mut cluster = Cluster::start(3, &extra).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = others(&cluster, leader)[0];
    let client = cluster.client(leader);
    create(&client, "s1", "first", 1).await;

    // A consumer with a tiny receive buffer that reads the answer's head and then nothing
    // (HTTP/1.0: the body is the stream itself, ended by closing the connection).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut connection = socket
        .connect(cluster.addr(follower).parse().unwrap())
        .await
        .unwrap();
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: test\r\nLast-Event-ID: 1\r\n\r\n",
        routes::EVENTS_STREAM
    );
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut received = vec![0u8; 512];
    let read = connection.read(&mut received).await.unwrap();
    received.truncate(read);
    assert!(
        String::from_utf8_lossy(&received).starts_with("HTTP/1."),
        "{}",
        String::from_utf8_lossy(&received)
    );

    // Writes run far past the backlog while it reads nothing; it is cut. (The kernel's socket
    // buffers take megabytes before the node sees a full body (the send buffer grows to 4 MiB
    // here, `net.ipv4.tcp_wmem`), so rounds of 60 batches of 500 events, ~8 MB of frames, then a
    // look: a cut stream ends, EOF, once drained.)
    let mut batches = 0;
    let deadline = Instant::now() + DEADLINE;
    let cut = loop {
        for _ in 0..60 {
            create_batch(&client, &format!("slow{batches}"), 500).await;
            batches += 1;
        }
        let mut chunk = vec![0u8; 1 << 20];
        let drained = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match connection.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => received.extend_from_slice(&chunk[..n]),
                }
            }
        });
        if drained.await.unwrap_or(false) {
            break true;
        }
        if Instant::now() > deadline || batches >= 600 {
            break false;
        }
    };
    assert!(cut, "the stream was never cut ({batches} batches of 500)");
    let text = String::from_utf8_lossy(&received);
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let mut parser = SseParser::new();
    let ids: Vec<u64> = parser
        .feed(body.as_bytes())
        .unwrap()
        .iter()
        .filter_map(|item| match item {
            SseItem::Event { id, .. } => id.as_ref()?.parse().ok(),
            _ => None,
        })
        .collect();
    let last = *ids.last().expect("some events came before the cut");
    assert_eq!(ids, (2..=last).collect::<Vec<_>>());
    let head = head(&client).await;
    assert!(head - last > 100, "cut at {last} of {head}");

    // It resumes from its last id and misses nothing.
    let target = stream_target();
    let none = EventFilter::default();
    let mut resumed = EventStream::open(&target, cluster.addr(follower), last, &none)
        .await
        .unwrap();
    let mut events = Vec::new();
    assert!(read_stream(&mut resumed, &mut events, head).await);
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (last + 1..=head).collect::<Vec<_>>());

    // A node told to stop ends its streams at once rather than holding its drain (10 s).
    let stopping = Instant::now();
    assert!(cluster.terminate(follower).await, "a clean exit");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?} to stop with a stream open",
        stopping.elapsed()
    );
    // The stream ends: a keep-alive queued before the stop may still arrive, no event does.
    let ended = loop {
        match resumed.next(Duration::from_secs(2)).await {
            Ok(Some(FeedItem::Head(_))) => continue,
            Ok(Some(FeedItem::Event(event))) => panic!("an event after the stop: {event:?}"),
            Ok(None) | Err(_) => break true,
        }
    };
    assert!(ended);
}
