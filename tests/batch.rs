#![cfg(not(madsim))]
//! The batch route over HTTP on a real three-node cluster (issue 33), through the leader and
//! through a follower alike: both error policies and their answers, the refusal naming every
//! failing line, malformed batches refused with 400 before anything is proposed (the leader's
//! last log index does not move), 10,000 lines of the longest ids in one entry and 10,001
//! refused, a keyed batch replayed whole, and the first form of the route (`records`). The
//! route's body limit is checked where it is computed (`api::batch` unit tests); a 413 as a
//! client that writes its whole body first sees it belongs to the lingering close's tests.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stockraft::client::wire::{
    BatchAnswer, BatchApplied, BatchErrorPolicy, BatchLineRequest, BatchLineStatus,
    BatchLinesOutcome, BatchRequest, CreateBatchRequest, CreateRequest, BATCH_BODY_LIMIT_BYTES,
};
use stockraft::client::{routes, Client, Consistency, WriteOptions};
use stockraft::inventory::BATCH_LINES_MAX;
use support::{Answer, Cluster};

const STORE: &str = "s1";

/// A three-node cluster, its leader and one follower.
async fn cluster() -> (Cluster, u64, u64) {
    cluster_with("").await
}

/// Settings for batches of 10,000 lines in a debug build on a shared 2-core machine, where one
/// such batch takes seconds: most of it the state machine's 10,000 lookups (sled unoptimized)
/// on the node's runtime thread, during which that node answers no heartbeat. The election
/// timeout and the write deadline are sized for that; a release build applies the same batch
/// in well under the default election timeout.
const PATIENT: &str = "[raft]\nheartbeat_interval_ms = 250\nelection_timeout_min_ms = 8000\n\
    election_timeout_max_ms = 12000\n\n[api]\nwrite_deadline_ms = 60000\n\
    request_timeout_ms = 90000\n";

/// How long a client waits for an answer to 10,000 lines under [`PATIENT`].
const PATIENT_CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

async fn cluster_with(extra: &str) -> (Cluster, u64, u64) {
    let cluster = Cluster::start(3, extra).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    (cluster, leader, follower)
}

fn create(sku: &str, quantity: i64) -> BatchLineRequest {
    BatchLineRequest::Create {
        store_id: STORE.into(),
        sku: sku.into(),
        initial_quantity: quantity,
    }
}

fn adjust(sku: &str, delta: i64) -> BatchLineRequest {
    BatchLineRequest::Adjust {
        store_id: STORE.into(),
        sku: sku.into(),
        delta,
        expected_version: None,
    }
}

fn set(sku: &str, qty: i64) -> BatchLineRequest {
    BatchLineRequest::Set {
        store_id: STORE.into(),
        sku: sku.into(),
        qty,
        expected_version: None,
    }
}

fn reserve(sku: &str, qty: i64, ttl_seconds: Option<u64>) -> BatchLineRequest {
    BatchLineRequest::Reserve {
        store_id: STORE.into(),
        sku: sku.into(),
        qty,
        expected_version: None,
        ttl_seconds,
    }
}

fn batch(lines: Vec<BatchLineRequest>, policy: Option<BatchErrorPolicy>) -> BatchRequest {
    BatchRequest {
        lines,
        error_policy: policy,
    }
}

/// `(qty, reserved)` of a record, read linearizably; None if it does not exist.
async fn counts(client: &Client, sku: &str) -> Option<(i64, i64)> {
    let answer = client
        .read(STORE, sku, Consistency::Linearizable)
        .await
        .unwrap();
    answer.ok().ok().map(|record| (record.qty, record.reserved))
}

/// The leader's last log index: it moves with every entry, so an unchanged index shows that
/// nothing was proposed.
async fn last_log_index(cluster: &Cluster, leader: u64) -> u64 {
    let health = cluster.health(leader).await.expect("the leader answers");
    assert_eq!(health.raft.leader_id, Some(leader), "the leader changed");
    health.raft.last_log_index.unwrap()
}

async fn applied(client: &Client, body: &BatchRequest, options: &WriteOptions) -> BatchApplied {
    let answer = client.batch(body, options).await.unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    match answer.body.unwrap().data {
        BatchAnswer::Applied(applied) => applied,
        other => panic!("a rejectEverything batch answered {other:?}"),
    }
}

/// POSTs raw JSON text to the batch route of node `id`.
async fn post_text(cluster: &Cluster, id: u64, body: &str, headers: &[(&str, &str)]) -> Answer {
    cluster
        .request(
            id,
            reqwest::Method::POST,
            routes::INVENTORY_BATCH,
            Some(body),
            headers,
        )
        .await
}

/// The indexes `details.lines` names.
fn indexes(details: &Value) -> Vec<u64> {
    details["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no details.lines in {details}"))
        .iter()
        .map(|line| line["index"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_policies_answer_every_line_through_leader_and_follower() {
    let (cluster, leader, follower) = cluster().await;
    for (node, tag) in [(leader, "l"), (follower, "f")] {
        let client = cluster.client(node);
        let a = format!("a-{tag}");
        let b = format!("b-{tag}");
        let missing = format!("missing-{tag}");

        // rejectEverything, applied: every line in order, each seeing the ones before it.
        let body = batch(
            vec![
                create(&a, 10),
                adjust(&a, -3),
                set(&b, 4),
                reserve(&a, 2, None),
                reserve(&a, 1, Some(600)),
            ],
            None,
        );
        let answer = client.batch(&body, &WriteOptions::default()).await.unwrap();
        assert!(answer.header("x-stockraft-log-index").is_some());
        let results = match answer.body.unwrap().data {
            BatchAnswer::Applied(applied) => applied.results,
            other => panic!("{other:?}"),
        };
        let seen: Vec<(usize, i64, u64)> = results
            .iter()
            .map(|line| (line.index, line.record.qty, line.record.version))
            .collect();
        assert_eq!(
            seen,
            vec![(0, 10, 1), (1, 7, 2), (2, 4, 1), (3, 5, 3), (4, 4, 4)],
            "{results:?}"
        );
        assert_eq!(results[4].record.reserved, 1);
        assert!(
            results[4].reservation_id.is_some(),
            "a hold names its reservation"
        );
        assert!(results[..4]
            .iter()
            .all(|line| line.reservation_id.is_none()));
        assert_eq!(counts(&client, &a).await, Some((4, 1)));

        // The shorthands: no op with delta is an adjust, `set: N` a set.
        let shorthand = json!({"lines": [
            {"storeId": STORE, "sku": a, "delta": 6},
            {"storeId": STORE, "sku": b, "set": 9},
        ]});
        let answer = post_text(&cluster, node, &shorthand.to_string(), &[]).await;
        assert_eq!(answer.status, 200, "{answer}");
        assert_eq!(answer.json["data"]["results"][0]["record"]["qty"], 10);
        assert_eq!(answer.json["data"]["results"][1]["record"]["qty"], 9);

        // rejectEverything, refused: nothing applies; every failing line is named, each
        // evaluated as if the lines before it had applied; the status is the first one's.
        let failing = vec![
            adjust(&a, -5),
            reserve(&a, 6, None),
            adjust(&missing, 1),
            reserve(&a, 5, None),
        ];
        let answer = client
            .batch(&batch(failing.clone(), None), &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(answer.status, 422, "{:?}", answer.body);
        let error = answer.body.unwrap_err().error;
        assert_eq!(error.code, "BATCH_REFUSED");
        let details = error.details.unwrap();
        assert_eq!(indexes(&details), vec![1, 2], "{details}");
        assert_eq!(details["lines"][0]["code"], "INSUFFICIENT_STOCK");
        assert_eq!(details["lines"][0]["sku"], json!(a));
        assert_eq!(details["lines"][0]["storeId"], STORE);
        assert_eq!(details["lines"][1]["code"], "NOT_FOUND");
        assert!(details["lines"][1]["message"].is_string());
        assert_eq!(counts(&client, &a).await, Some((10, 1)), "nothing applied");
        // The status is the first failing line's: here a 404.
        let answer = client
            .batch(
                &batch(vec![adjust(&missing, 1), reserve(&a, 99, None)], None),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            (answer.status, answer.error_code()),
            (404, Some("BATCH_REFUSED"))
        );

        // rejectFailedLines: the same lines, each on its own.
        let policy = Some(BatchErrorPolicy::RejectFailedLines);
        let answer = client
            .batch(&batch(failing, policy), &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let BatchAnswer::Lines(BatchLinesOutcome {
            applied,
            failed,
            results,
        }) = answer.body.unwrap().data
        else {
            panic!("a rejectFailedLines batch answered the other shape")
        };
        assert_eq!((applied, failed), (2, 2));
        let statuses: Vec<BatchLineStatus> = results.iter().map(|line| line.status).collect();
        use BatchLineStatus::{Failed, Ok};
        assert_eq!(statuses, vec![Ok, Failed, Failed, Ok]);
        assert_eq!(results[0].record.as_ref().unwrap().qty, 5);
        assert_eq!(
            results[1].error.as_ref().unwrap().code,
            "INSUFFICIENT_STOCK"
        );
        assert_eq!(results[2].error.as_ref().unwrap().code, "NOT_FOUND");
        assert!(results[1].record.is_none());
        assert_eq!(results[3].record.as_ref().unwrap().qty, 0);
        assert_eq!(counts(&client, &a).await, Some((0, 1)));
        assert_eq!(counts(&client, &missing).await, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_are_refused_with_400_before_anything_is_proposed() {
    let (cluster, leader, follower) = cluster().await;
    let client = cluster.client(leader);
    applied(
        &client,
        &batch(vec![create("m", 5)], None),
        &WriteOptions::default(),
    )
    .await;
    let before = last_log_index(&cluster, leader).await;
    let good = json!({"op": "adjust", "storeId": STORE, "sku": "m", "delta": 1});
    let too_many: Vec<Value> = vec![good.clone(); BATCH_LINES_MAX + 1];
    let cases: Vec<(&str, Value, Vec<u64>)> = vec![
        (
            "unknown op, bad ids, non-integers",
            json!({"lines": [
                good,
                {"op": "remove", "storeId": STORE, "sku": "m"},
                {"op": "adjust", "storeId": STORE, "sku": "has space", "delta": 1},
                {"op": "adjust", "storeId": "", "sku": "m", "delta": 1},
                {"op": "adjust", "storeId": STORE, "sku": "m", "delta": 1.5},
                {"op": "reserve", "storeId": STORE, "sku": "m", "qty": "2"},
                good,
            ]}),
            vec![1, 2, 3, 4, 5],
        ),
        ("no lines", json!({"lines": []}), vec![]),
        ("10,001 lines", json!({ "lines": too_many }), vec![]),
        (
            "lines and records",
            json!({"lines": [good], "records": [{"sku": "x", "storeId": STORE, "initialQuantity": 1}]}),
            vec![],
        ),
        (
            "an unknown policy",
            json!({"lines": [good], "errorPolicy": "rejectSome"}),
            vec![],
        ),
        (
            "no lines at all",
            json!({"errorPolicy": "rejectEverything"}),
            vec![],
        ),
    ];
    for node in [leader, follower] {
        for (what, body, bad_lines) in &cases {
            let answer = post_text(&cluster, node, &body.to_string(), &[]).await;
            assert_eq!(answer.status, 400, "{what} on node {node}: {answer}");
            assert_eq!(answer.json["error"]["code"], "VALIDATION_ERROR", "{what}");
            if !bad_lines.is_empty() {
                let details = &answer.json["error"]["details"];
                assert_eq!(&indexes(details), bad_lines, "{what}: {details}");
                assert_eq!(details["invalidLines"], bad_lines.len());
            }
        }
        // If-Match names one record: a batch refuses it.
        let body = json!({ "lines": [good] }).to_string();
        let answer = post_text(&cluster, node, &body, &[("if-match", "\"1\"")]).await;
        assert_eq!(answer.status, 400, "{answer}");
    }
    assert_eq!(
        last_log_index(&cluster, leader).await,
        before,
        "a refused batch reached the log"
    );
    assert_eq!(counts(&client, "m").await, Some((5, 0)));
}

/// `BATCH_LINES_MAX` set lines with the longest ids: the largest batch a client may send.
fn largest_batch(policy: Option<BatchErrorPolicy>) -> BatchRequest {
    let store = "s".repeat(stockraft::inventory::STORE_ID_LENGTH_MAX);
    let lines: Vec<BatchLineRequest> = (0..BATCH_LINES_MAX)
        .map(|n| BatchLineRequest::Set {
            store_id: store.clone(),
            sku: longest_sku(n),
            qty: i64::MAX - n as i64,
            expected_version: None,
        })
        .collect();
    let body = batch(lines, policy);
    let text = serde_json::to_string(&body).unwrap();
    assert!(text.len() <= BATCH_BODY_LIMIT_BYTES, "{} bytes", text.len());
    body
}

/// SKU `n` of [`largest_batch`]: 50 characters.
fn longest_sku(n: usize) -> String {
    format!("{n:0>50}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_lines_are_one_entry_and_one_more_is_refused_before_proposing() {
    let (cluster, leader, follower) = cluster_with(PATIENT).await;
    let from_follower = cluster
        .client(follower)
        .with_timeout(PATIENT_CLIENT_TIMEOUT);
    let from_leader = cluster.client(leader).with_timeout(PATIENT_CLIENT_TIMEOUT);

    // 10,000 lines with the longest ids, through a follower: one request, one log entry.
    let body = largest_batch(None);
    let before = last_log_index(&cluster, leader).await;
    let answer = from_follower
        .batch(&body, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(answer.status, 200, "{:?}", answer.body.as_ref().err());
    let log_index: u64 = answer
        .header("x-stockraft-log-index")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(log_index, before + 1, "one batch, one entry");
    let BatchAnswer::Applied(applied_lines) = answer.body.unwrap().data else {
        panic!("a rejectEverything batch answered the other shape")
    };
    assert_eq!(applied_lines.results.len(), BATCH_LINES_MAX);
    let last = &applied_lines.results[BATCH_LINES_MAX - 1];
    assert_eq!(last.index, BATCH_LINES_MAX - 1);
    assert_eq!(last.record.sku, longest_sku(BATCH_LINES_MAX - 1));
    assert_eq!(last.record.qty, i64::MAX - (BATCH_LINES_MAX as i64 - 1));
    assert_eq!(last_log_index(&cluster, leader).await, before + 1);

    // 10,001 lines: 400 on either node, nothing proposed.
    let mut lines = body.lines.clone();
    lines.push(set("one-more", 1));
    let too_many = batch(lines, None);
    for client in [&from_follower, &from_leader] {
        let answer = client
            .batch(&too_many, &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(answer.status, 400, "{:?}", answer.body);
        let message = answer.body.unwrap_err().error.message;
        assert!(message.contains("10001"), "{message}");
    }
    assert_eq!(last_log_index(&cluster, leader).await, before + 1);
    assert_eq!(counts(&from_leader, "one-more").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_batch_replays_every_line_through_any_node() {
    let (cluster, leader, follower) = cluster_with(PATIENT).await;
    let from_follower = cluster
        .client(follower)
        .with_timeout(PATIENT_CLIENT_TIMEOUT);
    let from_leader = cluster.client(leader).with_timeout(PATIENT_CLIENT_TIMEOUT);

    // A keyed rejectFailedLines batch, retried through the other node: each line's outcome
    // replayed, failures included, and applied once.
    let mixed = batch(
        vec![create("k", 3), reserve("k", 5, None), reserve("k", 2, None)],
        Some(BatchErrorPolicy::RejectFailedLines),
    );
    let options = WriteOptions::keyed("mixed");
    let first = from_follower.batch(&mixed, &options).await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body);
    let replay = from_leader.batch(&mixed, &options).await.unwrap();
    assert_eq!(replay.status, 200, "{:?}", replay.body);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        replay.header("x-stockraft-log-index"),
        first.header("x-stockraft-log-index")
    );
    assert_eq!(first.body.unwrap().data, replay.body.unwrap().data);
    assert_eq!(
        counts(&from_leader, "k").await,
        Some((1, 0)),
        "applied once"
    );
    // The same key with another batch is refused.
    let other = batch(vec![adjust("k", 1)], None);
    let reused = from_follower.batch(&other, &options).await.unwrap();
    assert_eq!(
        (reused.status, reused.error_code()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );

    // The largest batch, keyed: its whole answer replayed, nothing applied again.
    let body = largest_batch(None);
    let options = WriteOptions::keyed("ten-thousand");
    let first = from_follower.batch(&body, &options).await.unwrap();
    assert_eq!(first.status, 200, "{:?}", first.body.as_ref().err());
    let after_first = last_log_index(&cluster, leader).await;
    let replay = from_leader.batch(&body, &options).await.unwrap();
    assert_eq!(replay.status, 200, "{:?}", replay.body.as_ref().err());
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        replay.header("x-stockraft-log-index"),
        first.header("x-stockraft-log-index")
    );
    assert_eq!(replay.body.unwrap().data, first.body.unwrap().data);
    let versions = from_leader
        .read(
            &"s".repeat(stockraft::inventory::STORE_ID_LENGTH_MAX),
            &longest_sku(0),
            Consistency::Linearizable,
        )
        .await
        .unwrap()
        .ok()
        .unwrap()
        .version;
    assert_eq!(versions, 1, "the replay applied nothing");
    assert!(last_log_index(&cluster, leader).await >= after_first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_records_form_still_creates_every_record_or_none() {
    let (cluster, leader, follower) = cluster_with(PATIENT).await;
    let record = |sku: &str| CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity: 5,
    };
    let records = |skus: &[&str]| CreateBatchRequest {
        records: skus.iter().map(|sku| record(sku)).collect(),
    };
    for (node, tag) in [(leader, "l"), (follower, "f")] {
        let client = cluster.client(node);
        let skus = [format!("r1-{tag}"), format!("r2-{tag}")];
        let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
        let answer = client
            .create_batch(&records(&skus), &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(answer.status, 201, "{:?}", answer.body);
        assert_eq!(answer.body.unwrap().data.created, 2);
        assert_eq!(counts(&client, skus[1]).await, Some((5, 0)));

        // An existing record refuses them all, with the code this form always answered.
        let fresh = format!("r3-{tag}");
        let answer = client
            .create_batch(&records(&[&fresh, skus[0]]), &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(answer.status, 409, "{:?}", answer.body);
        let error = answer.body.unwrap_err().error;
        assert_eq!(error.code, "CONFLICT_ERROR");
        let details = error.details.unwrap();
        assert_eq!(details["currentVersion"], 1);
        assert_eq!(indexes(&details), vec![1]);
        assert_eq!(counts(&client, &fresh).await, None, "none created");
    }
    // 10,000 records in one request; 10,001 refused.
    let many: Vec<String> = (0..=BATCH_LINES_MAX).map(|n| format!("many-{n}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let client = cluster
        .client(follower)
        .with_timeout(PATIENT_CLIENT_TIMEOUT);
    let answer = client
        .create_batch(&records(&many), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(answer.status, 400, "{:?}", answer.body);
    let answer = client
        .create_batch(&records(&many[..BATCH_LINES_MAX]), &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.body.unwrap().data.created, BATCH_LINES_MAX);
    // A bad record is named by index; errorPolicy does not go with records.
    let body = json!({"records": [
        {"sku": "ok", "storeId": STORE, "initialQuantity": 1},
        {"sku": "not ok", "storeId": STORE, "initialQuantity": 1},
    ]});
    let answer = post_text(&cluster, leader, &body.to_string(), &[]).await;
    assert_eq!(answer.status, 400, "{answer}");
    assert_eq!(indexes(&answer.json["error"]["details"]), vec![1]);
    let body = json!({"records": [record("p")], "errorPolicy": "rejectFailedLines"});
    let answer = post_text(&cluster, leader, &body.to_string(), &[]).await;
    assert_eq!(answer.status, 400, "{answer}");
}
