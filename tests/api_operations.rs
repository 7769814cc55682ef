//! The seed's operational routes with stockraft's meanings: metrics and sync.
#![cfg(not(madsim))]

mod support;

use stockraft::client::routes;

use serde_json::json;
use stockraft::client::wire::{CreateBatchRequest, CreateRequest, SyncStartRequest};
use stockraft::inventory::BATCH_LINES_MAX;
use support::{Cluster, SECRET};

async fn create(cluster: &Cluster, node: u64, sku: &str) {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: "s1".into(),
        initial_quantity: 10,
    };
    let (status, body) = cluster.post(node, routes::INVENTORY, body).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_errors_and_reset_needs_the_secret() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "m1").await;
    let (status, _) = cluster.get(leader, &routes::record("s1", "absent")).await;
    assert_eq!(status, 404);
    let (status, metrics) = cluster.get(leader, routes::METRICS).await;
    assert_eq!(status, 200);
    let data = &metrics["data"];
    assert!(data["requests"].as_u64().unwrap() >= 2, "{metrics}");
    assert!(data["errors"].as_u64().unwrap() >= 1, "{metrics}");
    assert_eq!(data["createRecord"], 1);
    assert_eq!(data["raft"]["leaderId"].as_u64(), Some(leader));
    assert!(data["raft"]["committedIndex"].as_u64().unwrap() >= 2);

    let (status, body) = cluster.post_empty(leader, routes::METRICS_RESET, &[]).await;
    assert_eq!(
        status, 401,
        "reset without the secret must be refused: {body}"
    );
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    let (_, still) = cluster.get(leader, routes::METRICS).await;
    assert_eq!(still["data"]["createRecord"], 1);

    let secret = [("x-stockraft-secret", SECRET)];
    let (status, _) = cluster
        .post_empty(leader, routes::METRICS_RESET, &secret)
        .await;
    assert_eq!(status, 200);
    let (_, after) = cluster.get(leader, routes::METRICS).await;
    assert_eq!(after["data"]["createRecord"], 0);
    assert_eq!(after["data"]["errors"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_reports_every_member_and_the_barrier_catches_up() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    create(&cluster, leader, "s-a").await;

    let (status, body) = cluster.get(follower, routes::SYNC_STATUS).await;
    assert_eq!(status, 200, "{body}");
    let members = body["data"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for member in members {
        assert_eq!(member["role"], "voter");
        assert!(member["lag"].as_u64().is_some(), "{member}");
    }
    assert_eq!(body["data"]["leaderId"].as_u64(), Some(leader));

    // The barrier covers what this node knows to be committed. A follower learns that the
    // create is committed from the leader's next message (a heartbeat, 100 ms later, or more on
    // a loaded machine): wait for that, so that the barrier has the create to cover.
    let created = cluster.health(leader).await.unwrap().raft.committed_index;
    eventually!(
        format!("node {follower} hears that the create is committed"),
        cluster
            .health(follower)
            .await
            .and_then(|health| health.raft.committed_index)
            >= created
    );
    let (status, body) = cluster.post_empty(follower, routes::SYNC, &[]).await;
    assert_eq!(status, 200, "{body}");
    let committed = body["data"]["committedIndex"].as_u64().unwrap();
    let applied = body["data"]["appliedIndex"].as_u64().unwrap();
    assert!(Some(committed) >= created, "{body}");
    assert!(applied >= committed, "{body}");
    assert_eq!(cluster.local_qty(follower, "s1", "s-a").await, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_start_runs_periodic_snapshots_until_stopped() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "snap").await;
    // Sync control makes every node snapshot on a schedule: an admin route.
    let (status, body) = cluster
        .post(
            leader,
            routes::SYNC_START,
            SyncStartRequest {
                interval_ms: Some(1000),
            },
        )
        .await;
    assert_eq!(status, 401, "sync start without the secret: {body}");
    let (status, _) = cluster.post_empty(leader, routes::SYNC_STOP, &[]).await;
    assert_eq!(status, 401, "sync stop without the secret");
    let secret = [("x-stockraft-secret", SECRET)];
    let (status, body) = cluster
        .post_with(
            leader,
            routes::SYNC_START,
            SyncStartRequest {
                interval_ms: Some(10),
            },
            &secret,
        )
        .await;
    assert_eq!(
        status, 400,
        "an interval below the minimum is refused: {body}"
    );
    let (status, body) = cluster
        .post_with(
            leader,
            routes::SYNC_START,
            SyncStartRequest {
                interval_ms: Some(1000),
            },
            &secret,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["running"], true);
    eventually!(
        "a periodic snapshot is taken",
        cluster
            .health(leader)
            .await
            .is_some_and(|h| h.raft.snapshot_index.is_some())
    );
    let (status, body) = cluster.post_empty(leader, routes::SYNC_STOP, &secret).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["wasRunning"], true);
    let (_, status_body) = cluster.get(leader, routes::SYNC_STATUS).await;
    assert_eq!(status_body["data"]["snapshotSchedule"]["running"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_client_token_guards_client_routes_on_every_node() {
    let cluster = Cluster::start_with(3, "client_token = \"shop-token-123\"", "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let body = CreateRequest {
        sku: "tok".into(),
        store_id: "s1".into(),
        initial_quantity: 3,
    };
    for node in [leader, follower] {
        let (status, answer) = cluster.post(node, routes::INVENTORY, body.clone()).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], "UNAUTHORIZED");
        let wrong = [("authorization", "Bearer nope")];
        let (status, _) = cluster
            .post_with(node, routes::INVENTORY, body.clone(), &wrong)
            .await;
        assert_eq!(status, 401);
    }
    // Through a follower: the token travels with the forwarded request.
    let token = [("authorization", "Bearer shop-token-123")];
    let (status, answer) = cluster
        .post_with(follower, routes::INVENTORY, body, &token)
        .await;
    assert_eq!(status, 201, "{answer}");
    // Health stays open for probes.
    let (status, _) = cluster.get(follower, routes::HEALTH).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_creates_every_record_or_none_through_any_node() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let record = |sku: &str| CreateRequest {
        sku: sku.into(),
        store_id: "s1".into(),
        initial_quantity: 5,
    };
    let batch = |skus: &[&str]| CreateBatchRequest {
        records: skus.iter().map(|sku| record(sku)).collect(),
    };
    let (status, body) = cluster
        .post(
            follower,
            routes::INVENTORY_BATCH,
            batch(&["b1", "b2", "b3"]),
        )
        .await;
    assert_eq!(
        (status, &body["data"]["created"]),
        (201, &json!(3)),
        "{body}"
    );
    for sku in ["b1", "b2", "b3"] {
        let (status, body) = cluster.get(leader, &routes::record("s1", sku)).await;
        assert_eq!((status, &body["qty"]), (200, &json!(5)), "{sku}: {body}");
    }
    // One existing record refuses the whole batch: b4 is not created.
    let (status, body) = cluster
        .post(leader, routes::INVENTORY_BATCH, batch(&["b4", "b2"]))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("CONFLICT_ERROR")),
        "{body}"
    );
    let (status, _) = cluster.get(leader, &routes::record("s1", "b4")).await;
    assert_eq!(status, 404, "a refused batch created a record");
    // Too many, none, or a bad id: 400 before anything is proposed.
    let many: Vec<String> = (0..=BATCH_LINES_MAX).map(|i| format!("m{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for (what, body) in [
        ("too many", batch(&many)),
        ("none", batch(&[])),
        ("a bad sku", batch(&["ok", "not ok"])),
    ] {
        let (status, answer) = cluster.post(leader, routes::INVENTORY_BATCH, body).await;
        assert_eq!(status, 400, "{what}: {answer}");
    }
    let (status, _) = cluster.get(leader, &routes::record("s1", "ok")).await;
    assert_eq!(status, 404);
}

/// The lines of `log` (one JSON object each, `--log-format json`) that mention request `id`.
fn lines_of_request(log: &str, id: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|line| line.contains(id))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_follows_a_forwarded_write_into_both_nodes_logs_and_the_answer() {
    let mut cluster = Cluster::configure(3, "", "");
    cluster.rust_log = "info,openraft=warn,stockraft::api::request_id=debug".into();
    for id in 1..=3 {
        cluster.spawn_with(id, &["--log-format", "json"]);
    }
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    create(&cluster, leader, "traced").await;

    let id = "order-42.retry-1";
    let answer = cluster
        .reserve_one(follower, "traced", &[("x-request-id", id)])
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.header("x-request-id"), Some(id));

    // Lines are written as the request finishes; give the files a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let on_follower = lines_of_request(&cluster.log(follower), id);
    let on_leader = lines_of_request(&cluster.log(leader), id);
    assert!(
        !on_follower.is_empty(),
        "follower log:\n{}",
        cluster.log(follower)
    );
    assert!(
        !on_leader.is_empty(),
        "leader log:\n{}",
        cluster.log(leader)
    );
    let forwarded_by = on_leader[0]["spans"][0]["forwarded_by"].clone();
    assert_eq!(
        forwarded_by,
        serde_json::json!(follower.to_string()),
        "the leader's line names the forwarding node: {}",
        on_leader[0]
    );

    // No id (or an unusable one): the node makes one up, naming itself.
    for sent in [None, Some("has spaces"), Some(&*"x".repeat(200))] {
        let headers: Vec<(&str, &str)> = sent.iter().map(|v| ("x-request-id", *v)).collect();
        let answer = cluster
            .request(
                follower,
                reqwest::Method::GET,
                &routes::record("s1", "traced"),
                None,
                &headers,
            )
            .await;
        assert_eq!(answer.status, 200);
        let made = answer
            .header("x-request-id")
            .expect("every answer names its request");
        assert!(made.starts_with(&format!("{follower}-")), "{made}");
        assert_ne!(Some(made), sent);
    }
}

/// The value of the first sample line of `text` that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_requests_raft_position_log_syncs_and_snapshots() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    create(&cluster, leader, "p1").await;
    let answer = cluster.reserve_one(follower, "p1", &[]).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    cluster.take_snapshot(leader).await;

    let scrape = |id| cluster.request(id, reqwest::Method::GET, routes::PROMETHEUS, None, &[]);
    let on_leader = scrape(leader).await;
    assert_eq!(on_leader.status, 200);
    assert!(
        on_leader
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/openmetrics-text"),
        "{on_leader}"
    );
    let text = &on_leader.text;
    for (series, at_least) in [
        ("stockraft_raft_is_leader", 1.0),
        ("stockraft_raft_term", 1.0),
        ("stockraft_raft_committed_index", 3.0),
        ("stockraft_raft_applied_index", 3.0),
        ("stockraft_wal_sync_duration_seconds_count", 1.0),
        ("stockraft_wal_sync_batch_waiters_count", 1.0),
        (
            r#"stockraft_snapshot_duration_seconds_count{phase="build"}"#,
            1.0,
        ),
        (r#"stockraft_snapshot_last_size_bytes{phase="build"}"#, 1.0),
        ("stockraft_wal_size_bytes", 1.0),
    ] {
        let value = sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
        assert!(
            value >= at_least,
            "{series} = {value}, expected >= {at_least}"
        );
    }
    for other in [1, 2, 3].into_iter().filter(|id| *id != leader) {
        let series = format!("stockraft_raft_follower_lag_entries{{follower=\"{other}\"}}");
        assert!(sample(text, &series).is_some(), "no {series} in:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"));

    // A request is counted by the node that received it: the follower, which forwarded the
    // reserve to the leader as a command.
    let on_follower = scrape(follower).await.text;
    let reserve = r#"stockraft_http_requests_total{route="/api/inventory/stores/{store_id}/inventory/{sku}/reserve",method="POST",status="201"}"#;
    assert_eq!(sample(&on_follower, reserve), Some(1.0), "{on_follower}");
    assert_eq!(
        sample(text, reserve),
        None,
        "not counted again by the leader"
    );
    assert_eq!(sample(&on_follower, "stockraft_raft_is_leader"), Some(0.0));
    assert_eq!(
        sample(&on_follower, "stockraft_raft_leader_id"),
        Some(leader as f64)
    );
    assert!(sample(&on_follower, "stockraft_forwarded_requests_total").unwrap() >= 1.0);
    assert!(
        !on_follower.contains("stockraft_raft_follower_lag_entries{"),
        "only the leader reports follower lag"
    );
    // Routes are patterns: no SKU or store id becomes a label.
    assert!(!on_follower.contains("p1"), "{on_follower}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pose_as_a_forwarding_node() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    create(&cluster, leader, "posed").await;
    // A follower answers a request a node forwarded to it with "not the leader"; a client's
    // claim to be such a node is dropped, so its write is forwarded and served.
    let answer = cluster
        .reserve_one(follower, "posed", &[("x-stockraft-forwarded", "9")])
        .await;
    assert_eq!(answer.status, 201, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sends_concurrent_writes_to_the_leader_in_batches_and_answers_each_one() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let body = CreateRequest {
        sku: "batched".into(),
        store_id: "s1".into(),
        initial_quantity: 150,
    };
    let (status, body) = cluster.post(leader, routes::INVENTORY, body).await;
    assert_eq!(status, 201, "{body}");

    // 200 reserves of one unit through the follower, 50 at a time, half of them keyed: more
    // than the stock allows, so the last 50 must be refused, each with its own answer.
    let keys: Vec<String> = (0..200).map(|i| format!("batched-{i}")).collect();
    let mut created = 0;
    let mut refused = 0;
    let cluster = &cluster;
    for wave in keys.chunks(50) {
        let answers = futures::future::join_all(wave.iter().enumerate().map(|(i, key)| {
            let headers: Vec<(&str, &str)> = if i % 2 == 0 {
                vec![("idempotency-key", key.as_str())]
            } else {
                vec![]
            };
            async move { cluster.reserve_one(follower, "batched", &headers).await }
        }))
        .await;
        for answer in answers {
            match answer.status {
                201 => created += 1,
                409 | 422 => refused += 1,
                other => panic!("unexpected {other}: {}", answer.text),
            }
            assert_eq!(
                answer.header("x-stockraft-leader"),
                Some(leader.to_string().as_str()),
                "the answer names the leader that applied it"
            );
        }
    }
    assert_eq!((created, refused), (150, 50), "no oversell, no lost answer");
    let local = cluster.local_qty(leader, "s1", "batched").await;
    assert_eq!(local, Some(0));

    // A keyed retry through the follower replays its first answer.
    let again = cluster
        .reserve_one(follower, "batched", &[("idempotency-key", "batched-0")])
        .await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let metrics = cluster
        .request(
            follower,
            reqwest::Method::GET,
            routes::PROMETHEUS,
            None,
            &[],
        )
        .await
        .text;
    let batches = sample(&metrics, "stockraft_forward_batch_items_count").unwrap();
    let items = sample(&metrics, "stockraft_forward_batch_items_sum").unwrap();
    assert!(items >= 201.0, "every write was forwarded: {items}");
    assert!(
        batches < items,
        "concurrent writes shared batches: {batches} batches for {items} writes"
    );
}
