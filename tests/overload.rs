//! Overload over real processes: a node at its limits sheds with 503 `OVERLOADED` at once and
//! recovers at once; a client over its rate gets 429; thousands of idle and half-sent
//! connections do not stop a node serving, and the half-sent ones are closed. No timing is asserted (shared machines are noisy): only what was answered.
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use stockraft::client::routes;
use stockraft::client::wire::CreateRequest;
use support::Cluster;

const STOCK: i64 = 1_000_000;

async fn create(cluster: &Cluster, node: u64, sku: &str) {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: "s1".into(),
        initial_quantity: STOCK,
    };
    let (status, body) = cluster.post(node, routes::INVENTORY, body).await;
    assert_eq!(status, 201, "{body}");
}

async fn stock(cluster: &Cluster, node: u64, sku: &str) -> i64 {
    let (status, record) = cluster.get(node, &routes::record("s1", sku)).await;
    assert_eq!(status, 200, "{record}");
    record["qty"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_limit_sheds_at_once_with_503_and_serves_again_when_the_load_drops() {
    // Small limits, so that 64 concurrent clients are far past them.
    let cluster = Arc::new(
        Cluster::start(
            3,
            "[api]\nmax_in_flight_requests = 4\nmax_in_flight_proposals = 4\n",
        )
        .await,
    );
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "busy").await;

    let mut clients = Vec::new();
    for client in 0..64u64 {
        let cluster = cluster.clone();
        // Through every node: followers forward, so the leader's proposal limit is hit too.
        let node = 1 + client % 3;
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..15 {
                let answer = cluster.reserve_one(node, "busy", &[]).await;
                let code = answer.json["error"]["code"].as_str().map(str::to_owned);
                let retry_after = answer.header("retry-after").map(str::to_owned);
                outcomes.push((answer.status, code, retry_after));
            }
            outcomes
        }));
    }
    let mut by_outcome: BTreeMap<(u16, Option<String>), u64> = BTreeMap::new();
    for client in clients {
        for (status, code, retry_after) in client.await.unwrap() {
            if status == 503 {
                assert!(
                    retry_after.is_some(),
                    "a 503 tells the client when to retry"
                );
            }
            *by_outcome.entry((status, code)).or_default() += 1;
        }
    }
    let served = by_outcome.get(&(201, None)).copied().unwrap_or(0);
    let shed = by_outcome
        .get(&(503, Some("OVERLOADED".to_owned())))
        .copied()
        .unwrap_or(0);
    assert!(
        served > 0,
        "the node kept serving under overload: {by_outcome:?}"
    );
    assert!(shed > 0, "the excess was shed: {by_outcome:?}");
    assert_eq!(
        served + shed,
        64 * 15,
        "every request was served or shed, nothing else: {by_outcome:?}"
    );
    // A shed request did nothing: the stock moved by exactly the reserves served.
    assert_eq!(stock(&cluster, leader, "busy").await, STOCK - served as i64);

    // The load is gone: the next requests are served, none shed.
    for node in [1, 2, 3] {
        let answer = cluster.reserve_one(node, "busy", &[]).await;
        assert_eq!(answer.status, 201, "node {node} after the load: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_rate_gets_429_and_forwarded_requests_are_not_counted_twice() {
    // 1 request/s with a burst of 3 per client IP (all test clients are 127.0.0.1).
    let cluster = Cluster::start(3, "[api]\nrate_limit_rps = 1\nrate_limit_burst = 3\n").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    create(&cluster, leader, "limited").await;
    // The create took one token at the leader; two more pass, then the bucket is empty.
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let answer = cluster.reserve_one(leader, "limited", &[]).await;
        statuses.push(answer.status);
        if answer.status == 429 {
            refused = Some(answer);
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("no 429 after the burst: {statuses:?}"));
    assert_eq!(refused.json["error"]["code"], "RATE_LIMITED", "{refused}");
    assert!(refused.header("retry-after").is_some(), "{refused}");
    // The follower counts this client on its own bucket and forwards; the leader, whose bucket
    // for this IP is empty, does not count the forwarded request again.
    let answer = cluster.reserve_one(follower, "limited", &[]).await;
    assert_eq!(answer.status, 201, "{answer}");
}

/// The soft limit on open files of this process (the nodes inherit it).
fn open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if ok {
        limit.rlim_cur
    } else {
        1024
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_neither_stop_a_node_serving_nor_cause_an_election() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Clients apart from peers (as cluster.toml lays them out), and a short header timeout.
    let layout = support::Layout {
        split: true,
        tls: false,
    };
    let cluster =
        Cluster::start_layout(3, "", "[api]\nheader_read_timeout_ms = 2000\n", layout).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "idle").await;
    let term_before = cluster.health(leader).await.unwrap().raft.term;

    // 5,000 connections that send nothing (as many as the open-file limit allows, with room
    // for the node's own files) and 200 that send half a request head (a slow-loris).
    let wanted = 5_000usize.min(open_files_limit().saturating_sub(1_500) as usize);
    assert!(
        wanted >= 1_000,
        "open-file limit too low for this test: {}",
        open_files_limit()
    );
    let addr = cluster.addr(leader).to_owned();
    let mut idle = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        idle.push(
            tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connecting"),
        );
    }
    let mut half_sent = Vec::with_capacity(200);
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connecting");
        stream
            .write_all(b"POST /api/inventory HTTP/1.1\r\nHost: stockraft\r\nContent-Ty")
            .await
            .expect("sending half a head");
        half_sent.push(stream);
    }

    for _ in 0..20 {
        let answer = cluster.reserve_one(leader, "idle", &[]).await;
        assert_eq!(
            answer.status, 201,
            "with {wanted} idle and 200 half-sent connections open: {answer}"
        );
    }
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let answer = cluster.reserve_one(follower, "idle", &[]).await;
    assert_eq!(answer.status, 201, "a forwarded write: {answer}");

    // The half-sent heads are cut off by the header timeout: each connection is closed (EOF,
    // or an error) rather than held open.
    let closed = futures::future::join_all(half_sent.iter_mut().map(|stream| async move {
        let mut buffer = [0u8; 512];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut buffer))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                // A 408 or other answer before the close: keep reading until the close.
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }))
    .await;
    let still_open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(still_open, 0, "half-sent connections still open after 30 s");

    let health = cluster.health(leader).await.unwrap();
    assert_eq!(health.raft.leader_id, Some(leader));
    assert_eq!(
        health.raft.term, term_before,
        "no election while the connections were open"
    );
    drop(idle);
}
