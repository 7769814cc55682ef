//! Node identity with real processes: a voter restarted on an empty disk refuses to start and
//! says how to bring it back, while the cluster keeps serving; following the message brings it
//! back; a node of another cluster (same secret) and a member presenting another incarnation
//! are refused over Raft RPC.
#![cfg(not(madsim))]

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use stockraft::client::routes;
use stockraft::client::wire::CreateRequest;
use stockraft::identity::{CLUSTER_HEADER, EXPECT_HEADER, NODE_HEADER};
use stockraft::raft::network::encode_rpc;
use stockraft::raft::{TypeConfig, Vote};
use support::{Cluster, SECRET};

const STORE: &str = "s1";

/// What a node persists about itself (`<data_dir>/node-N/identity`).
fn identity_file(cluster: &Cluster, id: u64) -> Value {
    let path = cluster.data_dir(id).join("identity");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    serde_json::from_str(&text).expect("the identity file is JSON")
}

/// The identity file once the node has written it: a node writes it as it starts, and on a
/// loaded machine two nodes can elect a leader and commit before the third has got that far.
async fn written_identity_file(cluster: &Cluster, id: u64) -> Value {
    let path = cluster.data_dir(id).join("identity");
    for _ in 0..200 {
        if path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    identity_file(cluster, id)
}

async fn create(cluster: &Cluster, via: u64, sku: &str, qty: i64) {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity: qty,
    };
    let (status, answer) = cluster.post(via, routes::INVENTORY, body).await;
    assert_eq!(status, 201, "{answer}");
}

/// Reserves one unit at a time through `nodes` in turn until stopped; counts the 201s.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(cluster: &Cluster, nodes: Vec<u64>, sku: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicI64::new(0));
        let urls: Vec<String> = nodes
            .iter()
            .map(|id| cluster.url(*id, &routes::reserve(STORE, sku)))
            .collect();
        let http = cluster.http.clone();
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut n = 0usize;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let answer = http
                    .post(&urls[n % urls.len()])
                    .header("idempotency-key", format!("w-{n}"))
                    .json(&serde_json::json!({"qty": 1}))
                    .send()
                    .await;
                if answer.is_ok_and(|r| r.status() == 201) {
                    a.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self { stop, acked, task }
    }

    fn acked(&self) -> i64 {
        self.acked.load(Ordering::SeqCst)
    }

    async fn finish(self) -> i64 {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer task");
        self.acked.load(Ordering::SeqCst)
    }
}

fn role_of(view: &Value, id: u64) -> Option<String> {
    view["data"]["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["role"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_refuses_to_start_naming_the_way_out_and_the_cluster_keeps_serving() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "wiped", 100_000).await;
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let victim = survivors[0];
    let writer = Writer::start(&cluster, vec![leader, survivors[1]], "wiped");

    // A voter loses its disk and is started again, still a member.
    let before = written_identity_file(&cluster, victim).await;
    cluster.kill(victim);
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wiping the data directory");
    let acked_at_wipe = writer.acked();
    cluster.spawn(victim);
    let status = cluster.wait_exit(victim, Duration::from_secs(20)).await;
    let log = cluster.log(victim);
    let status = status.unwrap_or_else(|| panic!("the wiped voter kept running:\n{log}"));
    assert!(!status.success(), "it exited, but with success: {log}");
    for way_out in [
        format!("admin remove --id {victim}"),
        "--join".to_owned(),
        format!("admin promote --id {victim}"),
    ] {
        assert!(
            log.contains(&way_out),
            "the refusal should name `{way_out}`:\n{log}"
        );
    }
    eventually!(
        "writes keep being acknowledged without the wiped voter",
        writer.acked() > acked_at_wipe + 20
    );

    // The way out, as the message says: remove, start empty with --join, promote.
    let (code, out) = cluster.admin(leader, &["remove", "--id", &victim.to_string()]);
    assert_eq!(code, 0, "{out}");
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("emptying the data directory");
    cluster.respawn_joined(victim, leader);
    eventually!("the wiped node is back as a learner", {
        let view = cluster.get_admin(leader, routes::CLUSTER).await.1;
        role_of(&view, victim).as_deref() == Some("learner")
    });
    // The learner's addition may still be committing (a busy machine): an operator retries.
    eventually!(
        "the re-added node is promoted",
        cluster
            .admin(leader, &["promote", "--id", &victim.to_string()])
            .0
            == 0
    );
    let acked = writer.finish().await;
    let leader_qty = cluster
        .local_qty(leader, STORE, "wiped")
        .await
        .expect("the leader holds the record");
    assert!(
        leader_qty <= 100_000 - acked,
        "an acknowledged write was lost: {leader_qty} left after {acked} acknowledged"
    );
    eventually!(
        "the re-added voter holds every write",
        cluster.local_qty(victim, STORE, "wiped").await == Some(leader_qty)
    );
    let after = identity_file(&cluster, victim);
    assert_ne!(
        after["incarnation"], before["incarnation"],
        "a new data directory is a new incarnation"
    );
    assert_eq!(after["clusterId"], before["clusterId"], "same cluster");
    let view = cluster.get_admin(leader, routes::CLUSTER).await.1;
    assert_eq!(role_of(&view, victim).as_deref(), Some("voter"), "{view}");
}

/// A Raft vote request for term `term` from `candidate`, with identity `headers`, to node
/// `to`: the raw answer.
async fn vote_request(
    cluster: &Cluster,
    to: u64,
    candidate: u64,
    term: u64,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let vote: Vote = Vote::new(term, candidate);
    let request = openraft::raft::VoteRequest::<TypeConfig>::new(vote, None);
    let mut post = cluster
        .http
        .post(cluster.url(to, routes::raft::VOTE))
        .header("x-stockraft-secret", SECRET)
        .header("content-type", "application/octet-stream")
        .body(encode_rpc(&request));
    for (name, value) in headers {
        post = post.header(*name, value);
    }
    let answer = post.send().await.expect("vote request");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_and_a_wrong_incarnation_are_refused_and_change_nothing() {
    let first = Cluster::start(3, "").await;
    let second = Cluster::start(3, "").await;
    let leader = first.wait_for_leader(&[1, 2, 3]).await;
    let other_leader = second.wait_for_leader(&[1, 2, 3]).await;
    create(&first, leader, "apple", 10).await;

    // Every node of a founded cluster holds the founder's cluster id and an incarnation of its
    // own; the second cluster (same secret) has another id.
    let ids: Vec<Value> = (1..=3).map(|id| identity_file(&first, id)).collect();
    assert!(
        ids.iter().all(|i| i["clusterId"] == ids[0]["clusterId"]),
        "{ids:?}"
    );
    assert!(ids[0]["clusterId"].is_string(), "{ids:?}");
    assert_ne!(ids[0]["incarnation"], ids[1]["incarnation"]);
    let foreign = identity_file(&second, other_leader);
    assert_ne!(foreign["clusterId"], ids[0]["clusterId"]);
    let term_before = first.health(leader).await.unwrap().raft.term;

    // The second cluster's leader is told a node of the first is its learner: it sends it
    // appends, which the first cluster's node refuses.
    let target = first.ids().into_iter().find(|id| *id != leader).unwrap();
    let (code, out) = second.admin(
        other_leader,
        &["add-learner", "--id", "9", "--addr", first.addr(target)],
    );
    assert_eq!(code, 0, "{out}");
    eventually!(
        "the first cluster's node refuses the second cluster's appends",
        first.log(target).contains("WRONG_CLUSTER")
    );
    eventually!(
        "the second cluster's leader sees the refusal",
        second
            .log(other_leader)
            .contains("refused this node's Raft RPC")
    );

    // A vote request from the other cluster's identity, with a far higher term: refused.
    let node = format!(
        "{other_leader}/{}",
        foreign["incarnation"].as_str().unwrap()
    );
    let foreign_headers = [
        (
            CLUSTER_HEADER,
            foreign["clusterId"].as_str().unwrap().to_owned(),
        ),
        (NODE_HEADER, node),
    ];
    let (status, body) = vote_request(&first, target, other_leader, 1_000, &foreign_headers).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "WRONG_CLUSTER", "{body}");

    // A member of this cluster presenting another incarnation (its disk was wiped): refused.
    let member = first.ids().into_iter().find(|id| *id != target).unwrap();
    let wiped_headers = [
        (
            CLUSTER_HEADER,
            ids[0]["clusterId"].as_str().unwrap().to_owned(),
        ),
        (NODE_HEADER, format!("{member}/00000000000000ff")),
        (EXPECT_HEADER, target.to_string()),
    ];
    eventually!(
        format!("node {target} knows node {member}'s incarnation"),
        { identity_file(&first, target)["peers"][member.to_string()].is_string() }
    );
    let (status, body) = vote_request(&first, target, member, 1_000, &wiped_headers).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "WRONG_INCARNATION", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("admin remove --id {member}"))),
        "{body}"
    );

    // The first cluster did not notice: same leader, same term, writes still commit.
    let reserve = routes::reserve(STORE, "apple");
    let (status, body) = first
        .post(leader, &reserve, serde_json::json!({"qty": 1}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(first.wait_for_leader(&[1, 2, 3]).await, leader);
    assert_eq!(first.health(leader).await.unwrap().raft.term, term_before);
    let view = first.get_admin(leader, routes::CLUSTER).await.1;
    assert_eq!(
        view["data"]["members"].as_array().unwrap().len(),
        3,
        "{view}"
    );
}
