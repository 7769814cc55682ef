#![cfg(not(madsim))]
//! The client API's contract against a real three-node cluster, checked on the leader and on a
//! follower alike: every endpoint and status code, the seed's error shape on every error,
//! idempotency across nodes, no oversell under concurrency, and no lost acknowledged write (nor
//! a double application) while the leader crashes.

mod support;

use stockraft::client::routes::{self, Consistency};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};
use support::Cluster;

const STORE: &str = "s1";

fn record_path(sku: &str) -> String {
    routes::record(STORE, sku)
}

fn adjust_path(sku: &str) -> String {
    routes::adjust(STORE, sku)
}

fn reserve_path(sku: &str) -> String {
    routes::reserve(STORE, sku)
}

// ---------------------------------------------------------------------------------------------
// Requests and replies
// ---------------------------------------------------------------------------------------------

/// One HTTP request, described independently of the node it is sent to.
#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    body: Option<Vec<u8>>,
    headers: Vec<(&'static str, HeaderValue)>,
}

impl Req {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body: None,
            headers: Vec::new(),
        }
    }

    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// A POST with a JSON body and `content-type: application/json`.
    fn post(path: impl Into<String>, body: Value) -> Self {
        Self::post_raw(path, Some("application/json"), body.to_string())
    }

    /// A POST with exactly these bytes and this content type (none if `None`).
    fn post_raw(
        path: impl Into<String>,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> Self {
        let request = Self {
            body: Some(body.into()),
            ..Self::new(Method::POST, path)
        };
        match content_type {
            Some(content_type) => request.with("content-type", content_type),
            None => request,
        }
    }

    fn with(self, name: &'static str, value: &str) -> Self {
        self.with_bytes(name, value.as_bytes())
    }

    fn with_bytes(mut self, name: &'static str, value: &[u8]) -> Self {
        let value = HeaderValue::from_bytes(value).expect("a transmissible header value");
        self.headers.push((name, value));
        self
    }

    fn keyed(self, key: &str) -> Self {
        self.with("idempotency-key", key)
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: HeaderMap,
    text: String,
    json: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn replayed(&self) -> bool {
        self.header("idempotent-replayed") == Some("true")
    }

    fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
            && serde_json::from_str::<Value>(&self.text).is_ok()
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} content-type={:?} body={}",
            self.status,
            self.header("content-type"),
            self.text
        )
    }
}

fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .expect("HTTP client")
}

fn base_urls(cluster: &Cluster) -> Vec<(u64, String)> {
    cluster
        .ids()
        .into_iter()
        .map(|id| (id, format!("http://{}", cluster.addr(id))))
        .collect()
}

async fn send(http: &reqwest::Client, base: &str, req: &Req) -> Result<Reply, reqwest::Error> {
    let mut request = http.request(req.method.clone(), format!("{base}{}", req.path));
    for (name, value) in &req.headers {
        request = request.header(*name, value.clone());
    }
    if let Some(body) = &req.body {
        request = request.body(body.clone());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        status,
        headers,
        text,
        json,
    })
}

/// Sends `req` to node `node`; a transport failure fails the test.
async fn call(cluster: &Cluster, node: u64, req: &Req) -> Reply {
    send(
        &cluster.http,
        &format!("http://{}", cluster.addr(node)),
        req,
    )
    .await
    .unwrap_or_else(|error| panic!("{} {} on node {node}: {error}", req.method, req.path))
}

fn followers(cluster: &Cluster, leader: u64) -> Vec<u64> {
    cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, like JavaScript's `Date.toISOString()`.
fn is_iso_timestamp(value: &str) -> bool {
    let pattern = b"dddd-dd-ddTdd:dd:dd.dddZ";
    value.len() == pattern.len()
        && value.bytes().zip(pattern.iter()).all(|(c, p)| {
            if *p == b'd' {
                c.is_ascii_digit()
            } else {
                c == *p
            }
        })
}

/// The seed's error shape: `{success:false, error:{name, message, code, statusCode, timestamp}}`
/// as a JSON body, with `statusCode` equal to the HTTP status.
fn assert_error_shape(reply: &Reply, what: &str) {
    let problems = error_shape_problems(reply);
    assert!(
        problems.is_empty(),
        "{what}: {}: {reply}",
        problems.join("; ")
    );
}

/// What is wrong with `reply` as an error answer (nothing if it has the seed's shape).
fn error_shape_problems(reply: &Reply) -> Vec<String> {
    if !reply.is_json() {
        return vec!["an error body must be JSON".into()];
    }
    let mut problems = Vec::new();
    let error = &reply.json["error"];
    if reply.json["success"] != false {
        problems.push("success must be false".into());
    }
    for field in ["name", "message", "code"] {
        if error[field].as_str().is_none_or(str::is_empty) {
            problems.push(format!("error.{field} must be a non-empty string"));
        }
    }
    if error["statusCode"].as_u64() != Some(u64::from(reply.status)) {
        problems.push("error.statusCode must equal the HTTP status".into());
    }
    if !error["timestamp"].as_str().is_some_and(is_iso_timestamp) {
        problems.push("error.timestamp must be an ISO-8601 UTC time".into());
    }
    problems
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// A body and headers compared across replays: error timestamps are stamped per answer.
fn without_error_timestamp(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(error) = body.get_mut("error").and_then(Value::as_object_mut) {
        error.remove("timestamp");
    }
    body
}

// ---------------------------------------------------------------------------------------------
// 1. The table-driven contract
// ---------------------------------------------------------------------------------------------

type Check = Box<dyn Fn(&Reply) + Send + Sync>;

enum Step {
    /// Send once and compare: status, the error code for errors, then `check`.
    Call {
        name: String,
        req: Req,
        status: u16,
        code: Option<&'static str>,
        check: Option<Check>,
    },
    /// Poll (with a deadline) until the request answers `status`, e.g. a lagging local read.
    Await { name: String, req: Req, status: u16 },
}

fn ok(name: impl Into<String>, req: Req, status: u16, check: Check) -> Step {
    Step::Call {
        name: name.into(),
        req,
        status,
        code: None,
        check: Some(check),
    }
}

fn err(name: impl Into<String>, req: Req, status: u16, code: &'static str) -> Step {
    Step::Call {
        name: name.into(),
        req,
        status,
        code: Some(code),
        check: None,
    }
}

fn err_then(
    name: impl Into<String>,
    req: Req,
    status: u16,
    code: &'static str,
    check: Check,
) -> Step {
    Step::Call {
        name: name.into(),
        req,
        status,
        code: Some(code),
        check: Some(check),
    }
}

/// `{success, data: record}` (a create's answer) with this quantity and version, and
/// `ETag: "<version>"`.
fn is_record(sku: &str, qty: i64, version: u64) -> Check {
    record_at(sku, qty, version, |json| &json["data"])
}

/// The record itself (a read's answer, as the seed gives it), with this quantity and version,
/// and `ETag: "<version>"`.
fn is_bare_record(sku: &str, qty: i64, version: u64) -> Check {
    record_at(sku, qty, version, |json| json)
}

fn record_at(sku: &str, qty: i64, version: u64, at: fn(&Value) -> &Value) -> Check {
    let sku = sku.to_owned();
    Box::new(move |reply| {
        let data = at(&reply.json);
        assert_eq!(data["sku"], sku.as_str(), "{reply}");
        assert_eq!(data["storeId"], STORE, "{reply}");
        assert_eq!(data["qty"], qty, "{reply}");
        assert_eq!(data["version"], version, "{reply}");
        for stamp in ["createdAt", "updatedAt"] {
            assert!(
                data[stamp].as_str().is_some_and(is_iso_timestamp),
                "{stamp}: {reply}"
            );
        }
        assert_eq!(
            reply.header("etag"),
            Some(etag(version).as_str()),
            "{reply}"
        );
    })
}

/// `{success, newQuantity, newVersion, record}` and `ETag: "<newVersion>"`.
fn is_change(qty: i64, version: u64) -> Check {
    Box::new(move |reply| {
        let body = &reply.json;
        assert_eq!(body["success"], true, "{reply}");
        assert_eq!(body["newQuantity"], qty, "{reply}");
        assert_eq!(body["newVersion"], version, "{reply}");
        assert_eq!(body["record"]["qty"], qty, "{reply}");
        assert_eq!(body["record"]["version"], version, "{reply}");
        assert_eq!(body["record"]["storeId"], STORE, "{reply}");
        assert_eq!(
            reply.header("etag"),
            Some(etag(version).as_str()),
            "{reply}"
        );
    })
}

fn current_version_is(version: u64) -> Check {
    Box::new(move |reply| {
        assert_eq!(
            reply.json["error"]["details"]["currentVersion"], version,
            "{reply}"
        );
    })
}

fn consistency_is(value: &'static str) -> Check {
    Box::new(move |reply| {
        assert_eq!(
            reply.header("x-stockraft-consistency"),
            Some(value),
            "{reply}"
        );
    })
}

fn both(first: Check, second: Check) -> Check {
    Box::new(move |reply| {
        first(reply);
        second(reply);
    })
}

/// The whole contract for one target node. `tag` keeps the two targets' records apart.
fn contract(target: u64, leader: u64, tag: &str) -> Vec<Step> {
    let x = format!("x-{tag}");
    let y = format!("y-{tag}");
    let z = format!("z-{tag}");
    let missing = format!("missing-{tag}");
    let role = if target == leader {
        "leader"
    } else {
        "follower"
    };
    let adjust = |delta: i64| Req::post(adjust_path(&x), json!({ "delta": delta }));
    let reserve = |qty: i64| Req::post(reserve_path(&x), json!({ "qty": qty }));
    vec![
        ok(
            "health names the node, its role and the leader",
            Req::get(routes::HEALTH),
            200,
            Box::new(move |reply| {
                let data = &reply.json["data"];
                assert_eq!(reply.json["success"], true, "{reply}");
                assert_eq!(data["status"], "ok", "{reply}");
                assert_eq!(data["nodeId"], target, "{reply}");
                assert_eq!(data["role"], role, "{reply}");
                assert_eq!(data["leaderId"], leader, "{reply}");
                assert!(data["timestamp"].as_str().is_some_and(is_iso_timestamp));
                assert!(data["uptime"].as_f64().is_some(), "{reply}");
                assert!(data["term"].as_u64().is_some(), "{reply}");
            }),
        ),
        ok(
            "liveness",
            Req::get(routes::LIVENESS),
            200,
            Box::new(|reply| assert_eq!(reply.json["success"], true, "{reply}")),
        ),
        Step::Await {
            name: "readiness becomes 200".into(),
            req: Req::get(routes::READINESS),
            status: 200,
        },
        ok(
            "readiness when ready",
            Req::get(routes::READINESS),
            200,
            Box::new(move |reply| {
                assert_eq!(reply.json["data"]["status"], "ready", "{reply}");
                assert_eq!(reply.json["data"]["leaderId"], leader, "{reply}");
            }),
        ),
        // Create, from the body and at the path.
        ok(
            "create from the body",
            Req::post(
                routes::INVENTORY,
                json!({ "sku": x, "storeId": STORE, "initialQuantity": 10 }),
            ),
            201,
            is_record(&x, 10, 1),
        ),
        err_then(
            "create of an existing record is a conflict",
            Req::post(
                routes::INVENTORY,
                json!({ "sku": x, "storeId": STORE, "initialQuantity": 99 }),
            ),
            409,
            "CONFLICT_ERROR",
            current_version_is(1),
        ),
        ok(
            "create at the path (charset parameter accepted)",
            Req::post_raw(
                record_path(&y),
                Some("application/json; charset=utf-8"),
                json!({ "initialQuantity": 5 }).to_string(),
            ),
            201,
            is_record(&y, 5, 1),
        ),
        err(
            "create at the path with another sku in the body",
            Req::post(
                record_path(&z),
                json!({ "sku": "other", "initialQuantity": 5 }),
            ),
            400,
            "VALIDATION_ERROR",
        ),
        err(
            "create at the path with another storeId in the body",
            Req::post(
                record_path(&z),
                json!({ "storeId": "s2", "initialQuantity": 5 }),
            ),
            400,
            "VALIDATION_ERROR",
        ),
        Step::Await {
            name: "the mismatching creates created nothing".into(),
            req: Req::get(record_path(&z)),
            status: 404,
        },
        err_then(
            "create at the path of an existing record, ids matching",
            Req::post(
                record_path(&y),
                json!({ "sku": y, "storeId": STORE, "initialQuantity": 7 }),
            ),
            409,
            "CONFLICT_ERROR",
            current_version_is(1),
        ),
        // Reads.
        ok(
            "linearizable read (default)",
            Req::get(record_path(&x)),
            200,
            both(is_bare_record(&x, 10, 1), consistency_is("linearizable")),
        ),
        ok(
            "explicitly linearizable read",
            Req::get(format!("{}?consistency=linearizable", record_path(&x))), // explicit, not the default form
            200,
            both(is_bare_record(&x, 10, 1), consistency_is("linearizable")),
        ),
        err(
            "read of an unknown record",
            Req::get(record_path(&missing)),
            404,
            "NOT_FOUND",
        ),
        Step::Await {
            name: "the target applied the create".into(),
            req: Req::get(routes::read(STORE, &x, Consistency::Local)),
            status: 200,
        },
        ok(
            "local read",
            Req::get(routes::read(STORE, &x, Consistency::Local)),
            200,
            both(is_bare_record(&x, 10, 1), consistency_is("local")),
        ),
        err(
            "local read of an unknown record",
            Req::get(routes::read(STORE, &missing, Consistency::Local)),
            404,
            "NOT_FOUND",
        ),
        err(
            "unknown consistency value",
            Req::get(format!("{}?consistency=stale", record_path(&x))),
            400,
            "VALIDATION_ERROR",
        ),
        // Adjust.
        ok("adjust up", adjust(5), 200, is_change(15, 2)),
        ok(
            "adjust down, body expectedVersion matches",
            Req::post(
                adjust_path(&x),
                json!({ "delta": -1, "expectedVersion": 2 }),
            ),
            200,
            is_change(14, 3),
        ),
        ok(
            "If-Match quoted",
            adjust(1).with("if-match", "\"3\""),
            200,
            is_change(15, 4),
        ),
        ok(
            "If-Match bare",
            adjust(1).with("if-match", "4"),
            200,
            is_change(16, 5),
        ),
        ok(
            "If-Match weak",
            adjust(-1).with("if-match", "W/\"5\""),
            200,
            is_change(15, 6),
        ),
        ok(
            "If-Match star",
            adjust(1).with("if-match", "*"),
            200,
            is_change(16, 7),
        ),
        ok(
            "If-Match list of one version",
            adjust(-1).with("if-match", "\"7\", W/\"7\", 7"),
            200,
            is_change(15, 8),
        ),
        err(
            "If-Match list of different versions",
            adjust(1).with("if-match", "\"8\", \"9\""),
            400,
            "VALIDATION_ERROR",
        ),
        err(
            "If-Match not a version",
            adjust(1).with("if-match", "\"abc\""),
            400,
            "VALIDATION_ERROR",
        ),
        err(
            "If-Match and expectedVersion disagree",
            Req::post(adjust_path(&x), json!({ "delta": 1, "expectedVersion": 7 }))
                .with("if-match", "\"8\""),
            400,
            "VALIDATION_ERROR",
        ),
        ok(
            "If-Match and expectedVersion agree",
            Req::post(adjust_path(&x), json!({ "delta": 1, "expectedVersion": 8 }))
                .with("if-match", "\"8\""),
            200,
            is_change(16, 9),
        ),
        err_then(
            "adjust with a stale If-Match",
            adjust(1).with("if-match", "\"3\""),
            409,
            "CONFLICT_ERROR",
            current_version_is(9),
        ),
        err_then(
            "adjust with a stale expectedVersion",
            Req::post(adjust_path(&x), json!({ "delta": 1, "expectedVersion": 3 })),
            409,
            "CONFLICT_ERROR",
            current_version_is(9),
        ),
        err("adjust below zero", adjust(-100), 422, "INSUFFICIENT_STOCK"),
        err(
            "adjust of an unknown record",
            Req::post(adjust_path(&missing), json!({ "delta": 1 })),
            404,
            "NOT_FOUND",
        ),
        // Reserve.
        ok("reserve", reserve(6), 201, is_change(10, 10)),
        err(
            "reserve a negative amount",
            reserve(-1),
            400,
            "VALIDATION_ERROR",
        ),
        ok(
            "reserve with If-Match",
            reserve(1).with("if-match", "\"10\""),
            201,
            is_change(9, 11),
        ),
        ok(
            "reserve with agreeing weak If-Match and expectedVersion",
            Req::post(reserve_path(&x), json!({ "qty": 2, "expectedVersion": 11 }))
                .with("if-match", "W/\"11\""),
            201,
            is_change(7, 12),
        ),
        err_then(
            "reserve with a stale If-Match",
            reserve(1).with("if-match", "\"4\""),
            409,
            "CONFLICT_ERROR",
            current_version_is(12),
        ),
        err(
            "reserve with disagreeing If-Match and expectedVersion",
            Req::post(reserve_path(&x), json!({ "qty": 1, "expectedVersion": 12 }))
                .with("if-match", "11"),
            400,
            "VALIDATION_ERROR",
        ),
        err_then(
            "reserve more than available",
            reserve(100),
            422,
            "INSUFFICIENT_STOCK",
            Box::new(|reply| {
                let details = &reply.json["error"]["details"];
                assert_eq!(details["requested"], 100, "{reply}");
                assert_eq!(details["available"], 7, "{reply}");
            }),
        ),
        err(
            "reserve of an unknown record",
            Req::post(reserve_path(&missing), json!({ "qty": 1 })),
            404,
            "NOT_FOUND",
        ),
        ok(
            "refused writes changed nothing",
            Req::get(record_path(&x)),
            200,
            is_bare_record(&x, 7, 12),
        ),
    ]
}

/// Every GET of the contract steps is a health route or a record read.
fn is_record_read(req: &Req) -> bool {
    req.method == Method::GET && !req.path.starts_with(routes::HEALTH)
}

async fn run_steps(cluster: &Cluster, target: u64, leader: u64, steps: Vec<Step>) {
    for step in steps {
        match step {
            Step::Await { name, req, status } => {
                eventually!(
                    format!("node {target}: {name}"),
                    call(cluster, target, &req).await.status == status
                );
            }
            Step::Call {
                name,
                req,
                status,
                code,
                check,
            } => {
                let what = format!("node {target} ({}): {name}", role_of(target, leader));
                let reply = call(cluster, target, &req).await;
                assert_eq!(reply.status, status, "{what}: {reply}");
                if status >= 400 {
                    assert_error_shape(&reply, &what);
                    if let Some(code) = code {
                        assert_eq!(reply.code(), code, "{what}: {reply}");
                    }
                } else {
                    assert!(reply.is_json(), "{what}: {reply}");
                    // A record read answers the record itself (the seed's shape); everything
                    // else is wrapped in {success: true, ...}.
                    if !is_record_read(&req) {
                        assert_eq!(reply.json["success"], true, "{what}: {reply}");
                    }
                    if req.method == Method::POST {
                        assert_eq!(
                            reply.header("x-stockraft-leader"),
                            Some(leader.to_string().as_str()),
                            "{what}: a write is served by the leader: {reply}"
                        );
                    }
                }
                if let Some(check) = check {
                    check(&reply);
                }
            }
        }
    }
}

fn role_of(target: u64, leader: u64) -> &'static str {
    if target == leader {
        "leader"
    } else {
        "follower"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_its_documented_status_on_leader_and_follower() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = followers(&cluster, leader)[0];
    for target in [leader, follower] {
        let steps = contract(target, leader, &format!("n{target}"));
        run_steps(&cluster, target, leader, steps).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The error shape on every error
// ---------------------------------------------------------------------------------------------

/// Requests that must be refused before anything is proposed, with their status and code.
fn malformed_requests(existing: &str) -> Vec<(String, Req, &'static [u16], Option<&'static str>)> {
    let create = |body: Value| Req::post(routes::INVENTORY, body);
    let create_raw = |raw: &str| Req::post_raw(routes::INVENTORY, Some("application/json"), raw);
    let reserve_raw =
        |raw: &str| Req::post_raw(reserve_path(existing), Some("application/json"), raw);
    let adjust_raw =
        |raw: &str| Req::post_raw(adjust_path(existing), Some("application/json"), raw);
    let ids =
        |store: &str, sku: &str| json!({ "sku": sku, "storeId": store, "initialQuantity": 1 });
    let long = |n: usize| "a".repeat(n);
    let huge_body = json!({
        "sku": "big", "storeId": STORE, "initialQuantity": 1, "pad": "x".repeat(70 * 1024)
    });
    const BAD: &[u16] = &[400];
    const V: Option<&str> = Some("VALIDATION_ERROR");
    let mut cases: Vec<(String, Req, &'static [u16], Option<&'static str>)> = vec![
        (
            "malformed JSON".into(),
            create_raw("{\"sku\": \"a\","),
            BAD,
            V,
        ),
        ("empty body".into(), create_raw(""), BAD, V),
        (
            "JSON that is not an object".into(),
            reserve_raw("[1]"),
            BAD,
            V,
        ),
        (
            "text/plain".into(),
            Req::post_raw(
                routes::INVENTORY,
                Some("text/plain"),
                ids(STORE, "a").to_string(),
            ),
            &[415],
            Some("UNSUPPORTED_MEDIA_TYPE"),
        ),
        (
            "no content type".into(),
            Req::post_raw(reserve_path(existing), None, "{\"qty\":1}"),
            &[415],
            Some("UNSUPPORTED_MEDIA_TYPE"),
        ),
        (
            "form content type".into(),
            Req::post_raw(
                adjust_path(existing),
                Some("application/x-www-form-urlencoded"),
                "delta=1",
            ),
            &[415],
            Some("UNSUPPORTED_MEDIA_TYPE"),
        ),
        (
            "body over 64 KiB".into(),
            create(huge_body),
            &[413],
            Some("PAYLOAD_TOO_LARGE"),
        ),
        (
            "unknown route".into(),
            Req::get("/api/no-such-route"),
            &[404],
            Some("NOT_FOUND"),
        ),
        (
            "unknown sub-route of a record".into(),
            Req::post(format!("{}/explode", record_path(existing)), json!({})),
            &[404],
            Some("NOT_FOUND"),
        ),
        (
            "unknown method on a known route".into(),
            Req::new(Method::DELETE, record_path(existing)),
            &[404, 405],
            None,
        ),
        (
            "unknown field in create".into(),
            create(json!({ "sku": "u", "storeId": STORE, "initialQuantity": 1, "color": "red" })),
            BAD,
            V,
        ),
        (
            "unknown field in reserve".into(),
            reserve_raw("{\"qty\":1,\"priority\":true}"),
            BAD,
            V,
        ),
        (
            "unknown field in adjust".into(),
            adjust_raw("{\"delta\":1,\"reason\":\"x\"}"),
            BAD,
            V,
        ),
        (
            "qty as a string".into(),
            reserve_raw("{\"qty\":\"1\"}"),
            BAD,
            V,
        ),
        (
            "delta as a string".into(),
            adjust_raw("{\"delta\":\"5\"}"),
            BAD,
            V,
        ),
        (
            "initialQuantity as a string".into(),
            create_raw("{\"sku\":\"t\",\"storeId\":\"s1\",\"initialQuantity\":\"10\"}"),
            BAD,
            V,
        ),
        (
            "expectedVersion as a string".into(),
            reserve_raw("{\"qty\":1,\"expectedVersion\":\"1\"}"),
            BAD,
            V,
        ),
        ("qty missing".into(), reserve_raw("{}"), BAD, V),
        ("qty null".into(), reserve_raw("{\"qty\":null}"), BAD, V),
        ("qty 1e30".into(), reserve_raw("{\"qty\":1e30}"), BAD, V),
        (
            "qty 99999999999999999999".into(),
            reserve_raw("{\"qty\":99999999999999999999}"),
            BAD,
            V,
        ),
        ("qty 1.5".into(), reserve_raw("{\"qty\":1.5}"), BAD, V),
        (
            "delta 99999999999999999999".into(),
            adjust_raw("{\"delta\":99999999999999999999}"),
            BAD,
            V,
        ),
        (
            "delta -1e30".into(),
            adjust_raw("{\"delta\":-1e30}"),
            BAD,
            V,
        ),
        (
            "initialQuantity 1e30".into(),
            create_raw("{\"sku\":\"h\",\"storeId\":\"s1\",\"initialQuantity\":1e30}"),
            BAD,
            V,
        ),
        (
            "initialQuantity 99999999999999999999".into(),
            create_raw(
                "{\"sku\":\"h\",\"storeId\":\"s1\",\"initialQuantity\":99999999999999999999}",
            ),
            BAD,
            V,
        ),
        (
            "expectedVersion negative".into(),
            reserve_raw("{\"qty\":1,\"expectedVersion\":-1}"),
            BAD,
            V,
        ),
        (
            "negative initialQuantity in the body".into(),
            create(json!({ "sku": "neg", "storeId": STORE, "initialQuantity": -1 })),
            BAD,
            V,
        ),
        (
            "negative initialQuantity at the path".into(),
            Req::post(record_path("neg"), json!({ "initialQuantity": -1 })),
            BAD,
            V,
        ),
        ("empty storeId".into(), create(ids("", "a")), BAD, V),
        (
            "storeId of 21 chars".into(),
            create(ids(&long(21), "a")),
            BAD,
            V,
        ),
        (
            "storeId with a space".into(),
            create(ids("bad store", "a")),
            BAD,
            V,
        ),
        (
            "storeId with a slash".into(),
            create(ids("s/1", "a")),
            BAD,
            V,
        ),
        (
            "storeId with a non-ASCII letter".into(),
            create(ids("st\u{e9}", "a")),
            BAD,
            V,
        ),
        ("empty sku".into(), create(ids(STORE, "")), BAD, V),
        (
            "sku of 51 chars".into(),
            create(ids(STORE, &long(51))),
            BAD,
            V,
        ),
        ("sku with a '!'".into(), create(ids(STORE, "sku!")), BAD, V),
        ("sku with a colon".into(), create(ids(STORE, "a:b")), BAD, V),
        (
            "storeId of 21 chars in the path".into(),
            Req::get(routes::record(&long(21), "a")),
            BAD,
            V,
        ),
        (
            "sku of 51 chars in the path".into(),
            Req::post(reserve_path(&long(51)), json!({ "qty": 1 })),
            BAD,
            V,
        ),
        (
            "encoded space in the path".into(),
            Req::get(routes::record("bad%20store", "a")),
            BAD,
            V,
        ),
        (
            "'$' in the path".into(),
            Req::post(adjust_path("bad$sku"), json!({ "delta": 1 })),
            BAD,
            V,
        ),
        (
            "encoded non-ASCII letter in the path".into(),
            Req::get(routes::record("s1", "%C3%A9")),
            BAD,
            V,
        ),
        (
            "percent-encoding that is not UTF-8 in the path".into(),
            Req::get(routes::record("s1", "%FF")),
            BAD,
            None,
        ),
    ];
    // The Idempotency-Key is checked before anything is proposed: sent to an unknown record,
    // a request that got past the check would be a 404 instead.
    let keyed = |key: &[u8]| {
        Req::post(reserve_path("no-such-record"), json!({ "qty": 1 }))
            .with_bytes("idempotency-key", key)
    };
    cases.extend([
        (
            "Idempotency-Key of 256 chars".to_owned(),
            keyed(long(256).as_bytes()),
            BAD,
            V,
        ),
        ("empty Idempotency-Key".to_owned(), keyed(b""), BAD, V),
        (
            "Idempotency-Key with a tab".to_owned(),
            keyed(b"order\t42"),
            BAD,
            V,
        ),
        (
            "Idempotency-Key with non-ASCII bytes".to_owned(),
            keyed("order-\u{e9}".as_bytes()),
            BAD,
            V,
        ),
    ]);
    // So is the X-Client-Id naming the client whose key it is.
    let client = |id: &[u8]| keyed(b"order-1").with_bytes("x-client-id", id);
    cases.extend([
        (
            "X-Client-Id of 129 chars".to_owned(),
            client(long(129).as_bytes()),
            BAD,
            V,
        ),
        ("empty X-Client-Id".to_owned(), client(b""), BAD, V),
        (
            "X-Client-Id with a space".to_owned(),
            client(b"shop 1"),
            BAD,
            V,
        ),
        (
            "X-Client-Id with non-ASCII bytes".to_owned(),
            client("caf\u{e9}".as_bytes()),
            BAD,
            V,
        ),
    ]);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_json_body_in_the_seed_error_shape_on_leader_and_follower() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = followers(&cluster, leader)[0];
    let existing = "err-target";
    let create = Req::post(
        routes::INVENTORY,
        json!({ "sku": existing, "storeId": STORE, "initialQuantity": 5 }),
    );
    assert_eq!(call(&cluster, leader, &create).await.status, 201);

    let mut failures = Vec::new();
    for target in [leader, follower] {
        for (name, req, statuses, code) in malformed_requests(existing) {
            let what = format!("node {target} ({}): {name}", role_of(target, leader));
            let reply = call(&cluster, target, &req).await;
            // Collect every failure rather than stopping at the first: one report, all bugs.
            let mut problems = error_shape_problems(&reply);
            if !statuses.contains(&reply.status) {
                problems.push(format!("status must be one of {statuses:?}"));
            }
            if let Some(code) = code.filter(|code| reply.code() != *code) {
                problems.push(format!("error.code must be {code}"));
            }
            if !problems.is_empty() {
                failures.push(format!("{what}: {}: {reply}", problems.join("; ")));
            }
        }
    }
    // Nothing was applied: the existing record is untouched, nothing else was created.
    let (status, body) = cluster.get(leader, &record_path(existing)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 1, "{body}");
    for sku in ["a", "big", "u", "t", "h", "neg", "no-such-record"] {
        let (status, body) = cluster.get(leader, &record_path(sku)).await;
        assert_eq!(status, 404, "{sku} must not exist: {body}");
    }
    assert!(
        failures.is_empty(),
        "{} error answers broke the contract:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Idempotency
// ---------------------------------------------------------------------------------------------

/// Sends `req` to `first`, then replays it on each of `others`: same status and body, marked
/// replayed. Returns the first answer.
async fn assert_replays(cluster: &Cluster, req: &Req, first: u64, others: &[u64]) -> Reply {
    let original = call(cluster, first, req).await;
    assert!(
        !original.replayed(),
        "the first answer is not a replay: {original}"
    );
    for &node in others {
        let replay = call(cluster, node, req).await;
        assert_eq!(
            replay.status, original.status,
            "replay on node {node}: {replay}"
        );
        assert_eq!(
            without_error_timestamp(&replay.json),
            without_error_timestamp(&original.json),
            "replay on node {node} must answer as the first request did"
        );
        assert!(
            replay.replayed(),
            "replay on node {node} must say so: {replay}"
        );
        if original.status < 300 {
            assert_eq!(replay.header("etag"), original.header("etag"), "{replay}");
        }
    }
    original
}

async fn linearizable_record(cluster: &Cluster, node: u64, sku: &str) -> Value {
    let reply = call(cluster, node, &Req::get(record_path(sku))).await;
    assert_eq!(reply.status, 200, "{reply}");
    reply.json.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_first_answer_on_any_node_and_refuses_a_different_request() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let f = followers(&cluster, leader);
    let sku = "idem";

    // A keyed create on a follower replays on the others (not a 409).
    let create = Req::post(
        routes::INVENTORY,
        json!({ "sku": sku, "storeId": STORE, "initialQuantity": 100 }),
    )
    .keyed("create-1");
    let first = assert_replays(&cluster, &create, f[0], &[leader, f[1]]).await;
    assert_eq!(first.status, 201, "{first}");

    // Reserve first on a follower, replayed on the leader and the other follower.
    let reserve = Req::post(reserve_path(sku), json!({ "qty": 3 })).keyed("reserve-1");
    let first = assert_replays(&cluster, &reserve, f[0], &[leader, f[1], f[0]]).await;
    assert_eq!(first.status, 201, "{first}");
    assert_eq!(first.json["newQuantity"], 97);
    let record = linearizable_record(&cluster, f[1], sku).await;
    assert_eq!(
        (record["qty"].clone(), record["version"].clone()),
        (json!(97), json!(2))
    );

    // Adjust first on the leader, replayed on both followers.
    let adjust = Req::post(adjust_path(sku), json!({ "delta": 5 })).keyed("adjust-1");
    let first = assert_replays(&cluster, &adjust, leader, &f).await;
    assert_eq!(first.status, 200, "{first}");
    let record = linearizable_record(&cluster, leader, sku).await;
    assert_eq!(
        (record["qty"].clone(), record["version"].clone()),
        (json!(102), json!(3))
    );

    // The longest key (255 printable characters, spaces and symbols included) works.
    let longest: String = (0..255)
        .map(|i| char::from(b' ' + (i % 95) as u8))
        .collect();
    let reserve_long = Req::post(reserve_path(sku), json!({ "qty": 1 })).keyed(&longest);
    let first = assert_replays(&cluster, &reserve_long, f[1], &[f[0]]).await;
    assert_eq!(first.status, 201, "{first}");

    // A refusal is remembered and replayed too, and changes nothing.
    let too_much = Req::post(reserve_path(sku), json!({ "qty": 1000 })).keyed("too-much");
    let first = assert_replays(&cluster, &too_much, leader, &[f[0]]).await;
    assert_eq!(first.status, 422, "{first}");
    assert_eq!(first.code(), "INSUFFICIENT_STOCK");

    // Same key, different request: refused, on any node, without effect.
    let reuses = [
        (
            "another qty",
            Req::post(reserve_path(sku), json!({ "qty": 4 })),
        ),
        (
            "an added precondition",
            Req::post(reserve_path(sku), json!({ "qty": 3, "expectedVersion": 4 })),
        ),
        (
            "another operation",
            Req::post(adjust_path(sku), json!({ "delta": 3 })),
        ),
        (
            "another record",
            Req::post(reserve_path("other"), json!({ "qty": 3 })),
        ),
    ];
    for (what, req) in reuses {
        for node in [leader, f[0], f[1]] {
            let reply = call(&cluster, node, &req.clone().keyed("reserve-1")).await;
            assert_eq!(reply.status, 422, "{what} on node {node}: {reply}");
            assert_eq!(reply.code(), "IDEMPOTENCY_KEY_REUSED", "{what}: {reply}");
            assert_error_shape(&reply, what);
        }
    }
    let record = linearizable_record(&cluster, f[0], sku).await;
    assert_eq!(
        (record["qty"].clone(), record["version"].clone()),
        (json!(101), json!(4)),
        "each keyed write applied exactly once, refusals applied nothing"
    );
    // And the original request still replays after all the refused reuses.
    let again = call(&cluster, leader, &reserve).await;
    assert_eq!(again.status, 201, "{again}");
    assert!(again.replayed(), "{again}");
    assert_eq!(again.json["newQuantity"], 97, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_belongs_to_its_client_id_and_replays_only_for_that_client() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let f = followers(&cluster, leader);
    let sku = "scoped";
    let create = Req::post(
        routes::INVENTORY,
        json!({ "sku": sku, "storeId": STORE, "initialQuantity": 10 }),
    );
    assert_eq!(call(&cluster, leader, &create).await.status, 201);
    // Every client uses the same, guessable key.
    let reserve = |client: Option<&str>| {
        let req = Req::post(reserve_path(sku), json!({ "qty": 2 })).keyed("order-42");
        match client {
            Some(client) => req.with("x-client-id", client),
            None => req,
        }
    };

    // Two clients with the same key each get a fresh answer of their own.
    let alice = call(&cluster, leader, &reserve(Some("alice"))).await;
    assert_eq!((alice.status, alice.replayed()), (201, false), "{alice}");
    assert_eq!(alice.json["newQuantity"], 8, "{alice}");
    let bob = call(&cluster, f[0], &reserve(Some("bob"))).await;
    assert_eq!((bob.status, bob.replayed()), (201, false), "{bob}");
    assert_eq!(
        bob.json["newQuantity"], 6,
        "bob's reserve was applied: {bob}"
    );

    // One client's retry replays its own answer, through any node: a follower first, then the
    // leader and the other follower.
    let carol = assert_replays(&cluster, &reserve(Some("carol")), f[0], &[leader, f[1]]).await;
    assert_eq!(carol.status, 201, "{carol}");
    assert_eq!(carol.json["newQuantity"], 4, "{carol}");
    for node in [f[1], leader] {
        let again = call(&cluster, node, &reserve(Some("alice"))).await;
        assert!(again.replayed(), "alice's retry on node {node}: {again}");
        assert_eq!(again.json["newQuantity"], 8, "alice's own answer: {again}");
    }

    // A client sending no id is in the anonymous scope: its own key too.
    let anonymous = call(&cluster, f[1], &reserve(None)).await;
    assert_eq!((anonymous.status, anonymous.replayed()), (201, false));
    assert_eq!(anonymous.json["newQuantity"], 2, "{anonymous}");

    // Key reuse with another request is refused within a client's scope only.
    let reused = Req::post(reserve_path(sku), json!({ "qty": 1 }))
        .keyed("order-42")
        .with("x-client-id", "bob");
    let refused = call(&cluster, f[0], &reused).await;
    assert_eq!(refused.status, 422, "{refused}");
    assert_eq!(refused.code(), "IDEMPOTENCY_KEY_REUSED", "{refused}");

    // A malformed client id is refused before anything is proposed.
    for node in [leader, f[0]] {
        let bad = reserve(None).with_bytes("x-client-id", b"two words");
        let reply = call(&cluster, node, &bad).await;
        assert_eq!(reply.status, 400, "node {node}: {reply}");
        assert_eq!(reply.code(), "VALIDATION_ERROR", "{reply}");
        assert_error_shape(&reply, "a malformed X-Client-Id");
    }

    let record = linearizable_record(&cluster, f[1], sku).await;
    assert_eq!(
        (record["qty"].clone(), record["version"].clone()),
        (json!(2), json!(5)),
        "four reserves applied, once each"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Concurrency
// ---------------------------------------------------------------------------------------------

/// A tiny deterministic generator (xorshift64*): reproducible amounts without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reserves_through_every_node_grant_exactly_the_stock_and_never_oversell() {
    const STOCK: i64 = 500;
    const CLIENTS: u64 = 32;
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let sku = "hot";
    let create = Req::post(
        routes::INVENTORY,
        json!({ "sku": sku, "storeId": STORE, "initialQuantity": STOCK }),
    );
    assert_eq!(call(&cluster, leader, &create).await.status, 201);

    let nodes = base_urls(&cluster);
    let http = client(Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let nodes = nodes.clone();
        let http = http.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = Rng::new(c + 1);
            let mut amount = 1 + rng.below(3) as i64;
            let mut granted = 0i64;
            let mut versions = Vec::new();
            for i in 0.. {
                assert!(Instant::now() < deadline, "client {c} still reserving");
                let (node, base) = &nodes[(c as usize + i) % nodes.len()];
                let req = Req::post(reserve_path(sku), json!({ "qty": amount }));
                let reply = send(&http, base, &req)
                    .await
                    .unwrap_or_else(|e| panic!("client {c} on node {node}: {e}"));
                match reply.status {
                    201 => {
                        let left = reply.json["newQuantity"].as_i64().expect("newQuantity");
                        assert!(left >= 0, "oversold: {reply}");
                        granted += amount;
                        versions.push(reply.json["newVersion"].as_u64().expect("newVersion"));
                        amount = 1 + rng.below(3) as i64;
                    }
                    422 if reply.code() == "INSUFFICIENT_STOCK" => {
                        assert!(
                            reply.json["error"]["details"]["available"]
                                .as_i64()
                                .is_some_and(|available| available < amount),
                            "refused although enough stock: {reply}"
                        );
                        if amount == 1 {
                            break;
                        }
                        amount = 1; // Take what is left, unit by unit, until nothing is.
                    }
                    _ => panic!("client {c} on node {node}: unexpected {reply}"),
                }
            }
            (granted, versions)
        }));
    }
    let mut granted = 0;
    let mut versions = Vec::new();
    for client in clients {
        let (g, v) = client.await.expect("client task");
        granted += g;
        versions.extend(v);
    }
    assert_eq!(
        granted, STOCK,
        "the acknowledged reserves add up to the stock"
    );
    let distinct: BTreeSet<u64> = versions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        versions.len(),
        "every acknowledged reserve is its own version"
    );
    let final_version = 1 + versions.len() as u64;
    assert_eq!(distinct.last().copied(), Some(final_version));

    for id in cluster.ids() {
        let local = Req::get(routes::read(STORE, sku, Consistency::Local));
        eventually!(format!("node {id} converges"), {
            let reply = call(&cluster, id, &local).await;
            let record = &reply.json;
            assert!(record["qty"].as_i64().is_some_and(|q| q >= 0), "{reply}");
            reply.status == 200 && record["version"] == final_version
        });
        let reply = call(&cluster, id, &local).await;
        assert_eq!(reply.json["qty"], 0, "node {id}: {reply}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Idempotency across nodes and a leader crash
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_reserve_sent_to_two_nodes_and_resent_after_a_leader_crash_applies_once() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let f = followers(&cluster, leader);
    let sku = "once";
    let create = Req::post(
        routes::INVENTORY,
        json!({ "sku": sku, "storeId": STORE, "initialQuantity": 10 }),
    );
    assert_eq!(call(&cluster, leader, &create).await.status, 201);

    let reserve = Req::post(reserve_path(sku), json!({ "qty": 2 })).keyed("order-5");
    let (a, b) = tokio::join!(
        call(&cluster, leader, &reserve),
        call(&cluster, f[0], &reserve)
    );
    assert_eq!(a.status, 201, "{a}");
    assert_eq!(
        (a.status, &a.json),
        (b.status, &b.json),
        "identical answers"
    );
    assert!(
        a.replayed() || b.replayed(),
        "one of the two is a replay: {a} / {b}"
    );
    assert_eq!(a.json["newQuantity"], 8);

    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(&f).await;
    for node in [f[1], f[0], new_leader] {
        let again = call(&cluster, node, &reserve).await;
        assert_eq!(
            (again.status, &again.json),
            (a.status, &a.json),
            "resent to node {node} after the crash"
        );
        assert!(again.replayed(), "{again}");
    }
    let record = linearizable_record(&cluster, f[1], sku).await;
    assert_eq!(
        (record["qty"].clone(), record["version"].clone()),
        (json!(8), json!(2)),
        "applied exactly once"
    );
    for &id in &f {
        eventually!(
            format!("node {id} applied it once"),
            cluster.local_qty(id, STORE, sku).await == Some(8)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Forwarding while the leader crashes
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    acked_reserved: i64,
    acked_added: i64,
    unknown_reserved: i64,
    unknown_added: i64,
    acked: u64,
    unknown: u64,
    not_applied: u64,
    acked_after_kill: u64,
    versions: Vec<u64>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acked (reserved {}, added {}), {} unknown (reserved {}, added {}), \
             {} not applied, {} acked after the crash",
            self.acked,
            self.acked_reserved,
            self.acked_added,
            self.unknown,
            self.unknown_reserved,
            self.unknown_added,
            self.not_applied,
            self.acked_after_kill
        )
    }
}

enum Outcome {
    Acked(u64),
    NotApplied,
    Unknown,
}

fn classify(result: &Result<Reply, reqwest::Error>, keyed: bool) -> Outcome {
    match result {
        Err(_) => Outcome::Unknown,
        Ok(reply) if (200..300).contains(&reply.status) => {
            Outcome::Acked(reply.json["newVersion"].as_u64().expect("newVersion"))
        }
        Ok(reply) if reply.status == 503 && reply.code() == "NO_LEADER" => Outcome::NotApplied,
        Ok(reply) if reply.status == 503 && reply.code() == "OUTCOME_UNKNOWN" => {
            assert!(
                !keyed,
                "a keyed write is retried by the server, never OUTCOME_UNKNOWN: {reply}"
            );
            Outcome::Unknown
        }
        Ok(reply) => panic!("unexpected answer: {reply}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_forwarded_across_a_leader_crash_lose_no_acknowledgement() {
    const INITIAL: i64 = 10_000;
    const CLIENTS: u64 = 4;
    const MAX_OPS: usize = 80;
    const OPS_AFTER_KILL: u64 = 15;
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let sku = "stream";
    let create = Req::post(
        routes::INVENTORY,
        json!({ "sku": sku, "storeId": STORE, "initialQuantity": INITIAL }),
    );
    assert_eq!(call(&cluster, leader, &create).await.status, 201);

    let nodes = base_urls(&cluster);
    let http = client(Duration::from_secs(8));
    let dead = Arc::new(AtomicU64::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (nodes, http) = (nodes.clone(), http.clone());
        let (dead, killed, done) = (dead.clone(), killed.clone(), done.clone());
        clients.push(tokio::spawn(async move {
            let keyed = c % 2 == 0;
            let mut rng = Rng::new(100 + c);
            let mut tally = Tally::default();
            let mut turn = c as usize;
            let mut after_kill = 0;
            let mut next_node = || loop {
                turn += 1;
                let (id, base) = &nodes[turn % nodes.len()];
                if *id != dead.load(Ordering::SeqCst) {
                    return base.clone();
                }
            };
            for op in 0..MAX_OPS {
                if Instant::now() > deadline || after_kill >= OPS_AFTER_KILL {
                    break;
                }
                let was_killed = killed.load(Ordering::SeqCst);
                let reserve = rng.below(2) == 0;
                let amount = 1 + rng.below(3) as i64;
                let req = if reserve {
                    Req::post(reserve_path(sku), json!({ "qty": amount }))
                } else {
                    Req::post(adjust_path(sku), json!({ "delta": amount }))
                };
                let outcome = if keyed {
                    // Resend under the same key until the outcome is known (bounded).
                    let req = req.keyed(&format!("client-{c}-op-{op}"));
                    let mut outcome = Outcome::Unknown;
                    for _ in 0..20 {
                        if Instant::now() > deadline {
                            break;
                        }
                        outcome = classify(&send(&http, &next_node(), &req).await, true);
                        if let Outcome::Acked(_) = outcome {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    if let Outcome::NotApplied = outcome {
                        // An earlier attempt's fate may still be unknown.
                        Outcome::Unknown
                    } else {
                        outcome
                    }
                } else {
                    classify(&send(&http, &next_node(), &req).await, false)
                };
                let (acked, unknown) = if reserve {
                    (&mut tally.acked_reserved, &mut tally.unknown_reserved)
                } else {
                    (&mut tally.acked_added, &mut tally.unknown_added)
                };
                match outcome {
                    Outcome::Acked(version) => {
                        *acked += amount;
                        tally.acked += 1;
                        tally.versions.push(version);
                        if was_killed {
                            tally.acked_after_kill += 1;
                        }
                    }
                    Outcome::Unknown => {
                        *unknown += amount;
                        tally.unknown += 1;
                    }
                    Outcome::NotApplied => tally.not_applied += 1,
                }
                if was_killed {
                    after_kill += 1;
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            tally
        }));
    }

    eventually!(
        "a first part of the stream is served",
        done.load(Ordering::SeqCst) >= 30
    );
    dead.store(leader, Ordering::SeqCst);
    cluster.kill(leader);
    killed.store(true, Ordering::SeqCst);
    let survivors = followers(&cluster, leader);

    let mut total = Tally::default();
    for client in clients {
        let t = client.await.expect("client task");
        total.acked_reserved += t.acked_reserved;
        total.acked_added += t.acked_added;
        total.unknown_reserved += t.unknown_reserved;
        total.unknown_added += t.unknown_added;
        total.acked += t.acked;
        total.unknown += t.unknown;
        total.not_applied += t.not_applied;
        total.acked_after_kill += t.acked_after_kill;
        total.versions.extend(t.versions);
    }
    let new_leader = cluster.wait_for_leader(&survivors).await;
    eprintln!("leader {leader} killed, new leader {new_leader}; answers: {total:?}");
    assert!(
        total.acked_after_kill > 0,
        "writes are served again after the crash: {total:?}"
    );
    let distinct: BTreeSet<u64> = total.versions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        total.versions.len(),
        "every acknowledged write is its own version: {total:?}"
    );

    let record = linearizable_record(&cluster, new_leader, sku).await;
    let qty = record["qty"].as_i64().expect("qty");
    let version = record["version"].as_u64().expect("version");
    let certain = INITIAL - total.acked_reserved + total.acked_added;
    let lowest = certain - total.unknown_reserved;
    let highest = certain + total.unknown_added;
    assert!(
        (lowest..=highest).contains(&qty),
        "final qty {qty} outside [{lowest}, {highest}] implied by the answers: {total:?}"
    );
    let changes = version - 1;
    assert!(
        (total.acked..=total.acked + total.unknown).contains(&changes),
        "{changes} changes applied, {} acknowledged, {} unknown",
        total.acked,
        total.unknown
    );
    assert!(
        distinct.last().is_none_or(|v| *v <= version),
        "an acknowledged version beyond the record's"
    );
    for &id in &survivors {
        let local = Req::get(routes::read(STORE, sku, Consistency::Local));
        eventually!(format!("node {id} converges"), {
            let reply = call(&cluster, id, &local).await;
            reply.status == 200 && reply.json == record
        });
    }
}
