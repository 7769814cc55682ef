#![cfg(not(madsim))]
//! The seed's contract, as a seed client relies on it, on a three-node cluster: every place
//! stockraft once answered differently from the seed (`../shared/seed/README.md`), checked on
//! the leader and on a follower with the exact body shape and headers.
//!
//! 1. `GET .../stores/:storeId/inventory/:sku` answers the record itself with `ETag: "<v>"`;
//! 2. `GET /api/inventory/:sku/:storeId` answers `{success: true, data: record}` (deprecated);
//! 3. `GET /api/health/metrics` answers `{success, data}` with counters and the Raft position;
//! 4. `{"delta": 0}` on adjust is accepted (a new version, no stock moved);
//! 5. `{"qty": 0}` on reserve is accepted likewise;
//! 6. `"expectedVersion": null` is a 400 and changes nothing.

mod support;

use stockraft::client::routes::{self, Consistency};

use reqwest::Method;
use serde_json::Value;
use support::{Answer, Cluster};

const STORE: &str = "store-1";

fn record_path(sku: &str) -> String {
    routes::record(STORE, sku)
}

/// The seed's published record schema: its six fields, with these JSON types, and the two a
/// record gained with reservations (issue 31): `reserved` (0 here: no test holds) and `onHand`.
fn assert_seed_record(record: &Value, sku: &str, qty: i64, version: u64, what: &str) {
    let object = record
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not an object: {record}"));
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "createdAt",
            "onHand",
            "qty",
            "reserved",
            "sku",
            "storeId",
            "updatedAt",
            "version"
        ],
        "{what}: {record}"
    );
    assert_eq!(record["reserved"].as_i64(), Some(0), "{what}: {record}");
    assert_eq!(record["onHand"].as_i64(), Some(qty), "{what}: {record}");
    assert_eq!(record["sku"], sku, "{what}: {record}");
    assert_eq!(record["storeId"], STORE, "{what}: {record}");
    assert_eq!(record["qty"].as_i64(), Some(qty), "{what}: {record}");
    assert_eq!(
        record["version"].as_u64(),
        Some(version),
        "{what}: {record}"
    );
    for stamp in ["createdAt", "updatedAt"] {
        let text = record[stamp].as_str().unwrap_or("");
        assert!(
            text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T',
            "{what}: {stamp} is not an ISO-8601 UTC time: {record}"
        );
    }
}

fn assert_etag(answer: &Answer, version: u64, what: &str) {
    assert_eq!(
        answer.header("etag"),
        Some(format!("\"{version}\"").as_str()),
        "{what}: {answer}"
    );
}

/// `{success:false, error:{name, message, code, statusCode, timestamp}}`.
fn assert_seed_error(answer: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {answer}");
    assert_eq!(answer.json["success"], false, "{what}: {answer}");
    let error = &answer.json["error"];
    for field in ["name", "message", "code", "timestamp"] {
        assert!(error[field].is_string(), "{what}: error.{field}: {answer}");
    }
    assert_eq!(
        error["statusCode"].as_u64(),
        Some(u64::from(status)),
        "{what}: {answer}"
    );
    assert_eq!(error["code"], code, "{what}: {answer}");
}

async fn get(cluster: &Cluster, node: u64, path: &str) -> Answer {
    cluster.request(node, Method::GET, path, None, &[]).await
}

async fn post(
    cluster: &Cluster,
    node: u64,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    cluster
        .request(node, Method::POST, path, Some(body), headers)
        .await
}

/// Runs every point against `node`, on a SKU of its own (created at version 1 with qty 10).
async fn seed_client_works_against(cluster: &Cluster, node: u64, role: &str) {
    let sku = format!("SKU-{role}");
    let what = |point: &str| format!("node {node} ({role}): {point}");
    let create = format!(r#"{{"sku":"{sku}","storeId":"{STORE}","initialQuantity":10}}"#);
    let created = post(cluster, node, routes::INVENTORY, &create, &[]).await;
    assert_eq!(created.status, 201, "{}", what("create"));

    // 1. The record itself, with the ETag.
    let read = get(cluster, node, &record_path(&sku)).await;
    assert_eq!(read.status, 200, "{}", what("read"));
    assert_seed_record(&read.json, &sku, 10, 1, &what("read"));
    assert_etag(&read, 1, &what("read"));
    let local = get(
        cluster,
        node,
        &routes::read(STORE, &sku, Consistency::Local),
    )
    .await;
    if local.status == 200 {
        assert_seed_record(
            &local.json,
            &sku,
            local.json["qty"].as_i64().unwrap_or(-1),
            local.json["version"].as_u64().unwrap_or(0),
            &what("local read"),
        );
    }

    // 2. The legacy route: sku first, wrapped.
    let legacy = get(cluster, node, &routes::legacy_record(&sku, STORE)).await;
    assert_eq!(legacy.status, 200, "{}", what("legacy read"));
    assert_eq!(legacy.json["success"], true, "{}", what("legacy read"));
    assert_seed_record(&legacy.json["data"], &sku, 10, 1, &what("legacy read"));
    assert_etag(&legacy, 1, &what("legacy read"));
    let missing = get(cluster, node, &routes::legacy_record("no-such-sku", STORE)).await;
    assert_seed_error(
        &missing,
        404,
        "NOT_FOUND",
        &what("legacy read of a missing record"),
    );

    // 4. delta 0: accepted, a new version, the same stock.
    let adjust = routes::adjust(STORE, &sku);
    let zero = post(cluster, node, &adjust, r#"{"delta":0}"#, &[]).await;
    assert_eq!(zero.status, 200, "{}", what("delta 0"));
    assert_eq!(zero.json["success"], true, "{}", what("delta 0"));
    assert_eq!(zero.json["newQuantity"], 10, "{}", what("delta 0"));
    assert_eq!(zero.json["newVersion"], 2, "{}", what("delta 0"));
    assert_seed_record(&zero.json["record"], &sku, 10, 2, &what("delta 0"));
    assert_etag(&zero, 2, &what("delta 0"));

    // 5. qty 0: accepted, 201, a new version, the same stock; If-Match as the seed quotes it.
    let reserve = routes::reserve(STORE, &sku);
    let zero = post(
        cluster,
        node,
        &reserve,
        r#"{"qty":0}"#,
        &[("if-match", "\"2\"")],
    )
    .await;
    assert_eq!(zero.status, 201, "{}", what("qty 0"));
    assert_eq!(zero.json["newQuantity"], 10, "{}", what("qty 0"));
    assert_eq!(zero.json["newVersion"], 3, "{}", what("qty 0"));
    assert_etag(&zero, 3, &what("qty 0"));

    // 6. expectedVersion null: 400, nothing applied.
    for body in [
        r#"{"qty":1,"expectedVersion":null}"#,
        r#"{"qty":1,"expectedVersion":0}"#,
    ] {
        let refused = post(cluster, node, &reserve, body, &[]).await;
        assert_seed_error(&refused, 400, "VALIDATION_ERROR", &what(body));
    }
    let refused = post(
        cluster,
        node,
        &adjust,
        r#"{"delta":1,"expectedVersion":null}"#,
        &[],
    )
    .await;
    assert_seed_error(
        &refused,
        400,
        "VALIDATION_ERROR",
        &what("adjust with expectedVersion null"),
    );
    let after = get(cluster, node, &record_path(&sku)).await;
    assert_seed_record(
        &after.json,
        &sku,
        10,
        3,
        &what("after the refused requests"),
    );

    // Idempotency-Key: the same request replays the first answer, marked as a replay.
    let key = format!("order-42-{role}");
    let keyed = [("idempotency-key", key.as_str())];
    let key_body = r#"{"qty":2,"expectedVersion":3}"#;
    let first = post(cluster, node, &reserve, key_body, &keyed).await;
    assert_eq!(first.status, 201, "{}", what("keyed reserve"));
    let again = post(cluster, node, &reserve, key_body, &keyed).await;
    assert_eq!(
        (again.status, &again.json),
        (201, &first.json),
        "{}",
        what("keyed replay")
    );
    assert_eq!(
        again.header("idempotent-replayed"),
        Some("true"),
        "{}",
        what("keyed replay")
    );
    assert_etag(&again, 4, &what("keyed replay"));

    // Errors in the seed's shape: a stale version, too little stock, an unknown record.
    let stale = post(
        cluster,
        node,
        &reserve,
        r#"{"qty":1,"expectedVersion":1}"#,
        &[],
    )
    .await;
    assert_seed_error(
        &stale,
        409,
        "CONFLICT_ERROR",
        &what("stale expectedVersion"),
    );
    let too_much = post(cluster, node, &reserve, r#"{"qty":100}"#, &[]).await;
    assert_seed_error(
        &too_much,
        422,
        "INSUFFICIENT_STOCK",
        &what("reserve beyond stock"),
    );
    let unknown = get(cluster, node, &record_path("no-such-sku")).await;
    assert_seed_error(
        &unknown,
        404,
        "NOT_FOUND",
        &what("read of an unknown record"),
    );

    // 3. Comprehensive metrics, as {success, data}.
    let metrics = get(cluster, node, routes::HEALTH_METRICS).await;
    assert_eq!(metrics.status, 200, "{}", what("health metrics"));
    assert_eq!(metrics.json["success"], true, "{}", what("health metrics"));
    let data = &metrics.json["data"];
    for counter in [
        "requests",
        "errors",
        "forwarded",
        "idempotentHits",
        "conflicts",
    ] {
        assert!(
            data[counter].is_u64(),
            "{}: {counter}: {metrics}",
            what("health metrics")
        );
    }
    assert!(
        data["requests"].as_u64() >= Some(10),
        "{}",
        what("health metrics")
    );
    assert!(
        data["errors"].as_u64() >= Some(5),
        "{}",
        what("health metrics")
    );
    let raft = &data["raft"];
    assert_eq!(raft["role"], role, "{}: {metrics}", what("health metrics"));
    assert!(
        raft["term"].as_u64() >= Some(1),
        "{}: {metrics}",
        what("health metrics")
    );
    for index in ["committedIndex", "appliedIndex"] {
        assert!(
            raft[index].is_u64(),
            "{}: raft.{index}: {metrics}",
            what("health metrics")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_client_works_unchanged_against_the_leader_and_a_follower() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    seed_client_works_against(&cluster, leader, "leader").await;
    seed_client_works_against(&cluster, follower, "follower").await;
    // A follower forwards writes: its forwarded counter shows it.
    let metrics = get(&cluster, follower, routes::HEALTH_METRICS).await;
    assert!(
        metrics.json["data"]["forwarded"].as_u64() >= Some(5),
        "{metrics}"
    );
    let metrics = get(&cluster, leader, routes::HEALTH_METRICS).await;
    assert!(
        metrics.json["data"]["idempotentHits"].as_u64() >= Some(1),
        "{metrics}"
    );
}
