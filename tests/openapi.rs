//! The OpenAPI document and the router stay in step: every route a node serves (but Raft's) is
//! documented, every documented operation is routed, and each answer's status is one the
//! document lists for it. (CI also fuzzes a live cluster from the document: scripts/api-fuzz.sh.)
#![cfg(not(madsim))]

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{Cluster, SECRET};

/// Every path constant of `client::routes` outside its `raft` module, read from the source: a
/// route added there without documentation fails here.
fn routed_paths() -> BTreeSet<String> {
    let source = include_str!("../src/client/routes.rs");
    let outside_raft = source.split("pub mod raft").next().unwrap();
    outside_raft
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line.strip_prefix("pub const ")?;
            let value = rest.split('=').nth(1)?.trim();
            let path = value.strip_prefix('"')?.strip_suffix("\";")?;
            path.starts_with('/').then(|| path.to_owned())
        })
        // A prefix, not a route.
        .filter(|path| path != "/api/")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_operation_is_routed() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let doc = cluster
        .request(leader, reqwest::Method::GET, "/api/openapi.json", None, &[])
        .await;
    assert_eq!(doc.status, 200, "{doc}");
    let paths = doc.json["paths"].as_object().expect("paths").clone();

    let documented: BTreeSet<String> = paths.keys().cloned().collect();
    let routed = routed_paths();
    assert!(
        routed.len() >= 20,
        "reading routes.rs found too few: {routed:?}"
    );
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not documented: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&routed).collect();
    assert!(
        unknown.is_empty(),
        "documented but not in client::routes: {unknown:?}"
    );

    // Each documented operation answers (with the secret, a JSON body where one may be sent)
    // something other than the router's "no such route" or "wrong method", and a status the
    // document lists for it. Bodies are empty objects: no membership changes.
    for (path, operations) in &paths {
        let concrete = path.replace("{store_id}", "s1").replace("{sku}", "doc-sku");
        for (method, operation) in operations.as_object().unwrap() {
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let body = (method == reqwest::Method::POST).then_some("{}");
            let answer = cluster
                .request(
                    leader,
                    method.clone(),
                    &concrete,
                    body,
                    &[("x-stockraft-secret", SECRET)],
                )
                .await;
            assert_ne!(answer.status, 405, "{method} {path}: {answer}");
            assert!(
                !(answer.status == 404 && answer.text.contains("no such route")),
                "{method} {path} is documented but not routed"
            );
            let statuses = &operation["responses"];
            assert!(
                statuses.get(answer.status.to_string()).is_some(),
                "{method} {path} answered {} which the document does not list: {}",
                answer.status,
                answer.text
            );
        }
    }
    assert!(doc.json["components"]["schemas"]["ErrorBody"].is_object());
    let _: &Value = &doc.json;
}
