//! Cluster administration with real processes: grow and shrink under load, remove the leader,
//! wipe a node and re-add it.
#![cfg(not(madsim))]

mod support;

use stockraft::client::routes;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stockraft::client::wire::{CreateRequest, MembersRequest, ReserveRequest};
use support::{Cluster, SECRET};

const STORE: &str = "s1";

fn create_request(sku: &str, initial_quantity: i64) -> CreateRequest {
    CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity,
    }
}

fn one_unit() -> ReserveRequest {
    ReserveRequest {
        qty: 1,
        expected_version: None,
        ttl_seconds: None,
    }
}

fn members(ids: &[u64]) -> MembersRequest {
    MembersRequest {
        ids: ids.iter().copied().collect(),
        keep_as_learners: false,
    }
}

async fn admin_post(
    cluster: &Cluster,
    via: u64,
    path: &str,
    body: impl serde::Serialize,
) -> (u16, Value) {
    cluster
        .post_with(via, path, body, &[("x-stockraft-secret", SECRET)])
        .await
}

async fn cluster_view(cluster: &Cluster, via: u64) -> Value {
    cluster.get_admin(via, routes::CLUSTER).await.1["data"].clone()
}

fn role_of(view: &Value, id: u64) -> Option<String> {
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["role"].as_str().map(str::to_owned))
}

/// Keyed reserves of 1 from `sku`, round-robin over `nodes`, until stopped. Returns acknowledged
/// units, unknown outcomes and the number of 2xx answers.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicI64>,
    unknown: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

fn start_writer(cluster: &Cluster, nodes: Vec<u64>, sku: &str) -> Writer {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicI64::new(0));
    let unknown = Arc::new(AtomicI64::new(0));
    let urls: Vec<String> = nodes
        .iter()
        .map(|id| cluster.url(*id, &routes::reserve(STORE, sku)))
        .collect();
    let http = cluster.http.clone();
    let (s, a, u) = (stop.clone(), acked.clone(), unknown.clone());
    let task = tokio::spawn(async move {
        let mut n = 0usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
            n += 1;
            let response = http
                .post(&urls[n % urls.len()])
                .header("idempotency-key", format!("w-{n}"))
                .json(&one_unit())
                .send()
                .await;
            match response.map(|r| r.status().as_u16()) {
                Ok(201) => {
                    a.fetch_add(1, Ordering::SeqCst);
                }
                Ok(503) | Err(_) => {
                    u.fetch_add(1, Ordering::SeqCst);
                }
                Ok(status) => panic!("unexpected status {status} from a reserve"),
            }
        }
    });
    Writer {
        stop,
        acked,
        unknown,
        task,
    }
}

impl Writer {
    async fn finish(self) -> (i64, i64) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer task");
        (
            self.acked.load(Ordering::SeqCst),
            self.unknown.load(Ordering::SeqCst),
        )
    }
}

/// Final quantity must account for every acknowledged reserve; unknown ones may or may not count.
async fn assert_conserved(
    cluster: &Cluster,
    node: u64,
    sku: &str,
    initial: i64,
    acked: i64,
    unknown: i64,
) {
    let (status, body) = cluster.get(node, &routes::record(STORE, sku)).await;
    assert_eq!(status, 200, "{body}");
    let qty = body["qty"].as_i64().unwrap();
    assert!(qty >= 0, "oversold: {qty}");
    let taken = initial - qty;
    assert!(
        taken >= acked && taken <= acked + unknown,
        "taken {taken}, acknowledged {acked}, unknown {unknown}: an acknowledged write was lost or one applied twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_to_three_while_writing_loses_nothing() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let (status, _) = cluster
        .post(leader, routes::INVENTORY, create_request("grow", 100000))
        .await;
    assert_eq!(status, 201);
    let writer = start_writer(&cluster, vec![1, 2, 3], "grow");

    cluster.spawn_joining(4, 1);
    cluster.spawn_joining(5, 2);
    eventually!("4 and 5 join as learners", {
        let view = cluster_view(&cluster, 1).await;
        role_of(&view, 4).as_deref() == Some("learner")
            && role_of(&view, 5).as_deref() == Some("learner")
    });
    // The view lists a learner once its membership entry is in the leader's log; the next
    // change is refused (409, "already undergoing a configuration change") until that entry is
    // committed, which a loaded machine takes a moment to do.
    let listed_at = cluster.health(leader).await.unwrap().raft.last_log_index;
    eventually!(
        "the membership listing 4 and 5 is committed",
        cluster
            .health(leader)
            .await
            .and_then(|health| health.raft.committed_index)
            >= listed_at
    );
    let (code, out) = cluster.admin(3, &["promote", "--id", "4", "--id", "5"]);
    assert_eq!(code, 0, "{out}");
    let view = cluster_view(&cluster, 2).await;
    assert_eq!(role_of(&view, 4).as_deref(), Some("voter"), "{view}");
    assert_eq!(role_of(&view, 5).as_deref(), Some("voter"), "{view}");

    let (code, out) = cluster.admin(1, &["remove", "--id", "4", "--id", "5"]);
    assert_eq!(code, 0, "{out}");
    let view = cluster_view(&cluster, 1).await;
    assert_eq!(view["members"].as_array().unwrap().len(), 3, "{view}");

    let (acked, unknown) = writer.finish().await;
    assert!(
        acked > 0,
        "no write succeeded during the membership changes"
    );
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    assert_conserved(&cluster, leader, "grow", 100000, acked, unknown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_over_and_the_removed_node_accepts_no_writes() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let (status, _) = cluster
        .post(leader, routes::INVENTORY, create_request("rm", 50))
        .await;
    assert_eq!(status, 201);
    let started = Instant::now();
    let (status, body) =
        admin_post(&cluster, leader, routes::CLUSTER_REMOVE, members(&[leader])).await;
    assert_eq!(status, 200, "{body}");
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let new_leader = cluster.wait_for_leader(&survivors).await;
    let reserve = routes::reserve(STORE, "rm");
    let (status, body) = cluster.post(new_leader, &reserve, one_unit()).await;
    assert_eq!(status, 201, "{body}");
    println!(
        "write gap across the leader's removal: {:?}",
        started.elapsed()
    );

    let (status, body) = cluster.post(leader, &reserve, one_unit()).await;
    assert_ne!(
        status / 100,
        2,
        "the removed node acknowledged a write: {body}"
    );
    assert_eq!(
        body["error"]["code"], "NOT_A_MEMBER",
        "it should say why: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_re_added_as_a_learner_catches_up_from_a_snapshot() {
    let raft = "[raft]\nsnapshot_every_entries = 50\nlog_entries_kept_after_snapshot = 0\n";
    let mut cluster = Cluster::start(3, raft).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let (status, _) = cluster
        .post(leader, routes::INVENTORY, create_request("wipe", 500))
        .await;
    assert_eq!(status, 201);

    let (status, body) =
        admin_post(&cluster, leader, routes::CLUSTER_REMOVE, members(&[victim])).await;
    assert_eq!(status, 200, "{body}");
    cluster.kill(victim);
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wiping the data directory");
    let reserve = routes::reserve(STORE, "wipe");
    for _ in 0..120 {
        let (status, _) = cluster.post(leader, &reserve, one_unit()).await;
        assert_eq!(status, 201);
    }
    cluster.take_snapshot(leader).await;

    // Back with an empty disk, under its old id and address, joining as a learner.
    let via = leader;
    cluster.respawn_joined(victim, via);
    eventually!(
        "the wiped node catches up",
        cluster.local_qty(victim, STORE, "wipe").await == Some(380)
    );
    let snapshot = cluster.snapshot_index(victim).await;
    assert!(snapshot > 0, "caught up without a snapshot?");
    let (status, body) = admin_post(
        &cluster,
        leader,
        routes::CLUSTER_PROMOTE,
        members(&[victim]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        role_of(&cluster_view(&cluster, victim).await, victim).as_deref(),
        Some("voter")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_membership_changes_are_refused_and_admin_routes_need_the_secret() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let (status, body) = cluster
        .post(leader, routes::CLUSTER_REMOVE, members(&[1]))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = cluster.get(leader, routes::CLUSTER).await;
    assert_eq!(status, 401);

    let (status, body) = admin_post(
        &cluster,
        leader,
        routes::CLUSTER_REMOVE,
        members(&[1, 2, 3]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "MEMBERSHIP_CHANGE_REFUSED");

    // With one voter down, removing a live one would leave 2 voters with 1 reachable.
    let down = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(down);
    let live_follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != down)
        .unwrap();
    eventually!("the leader notices the dead member", {
        let view = cluster_view(&cluster, leader).await;
        view["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == down && m["reachable"] == false))
    });
    let (status, body) = admin_post(
        &cluster,
        leader,
        routes::CLUSTER_REMOVE,
        members(&[live_follower]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (code, out) = cluster.admin(leader, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("UNREACHABLE"),
        "status should flag the dead member:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_impossible_admin_requests_are_refused_and_change_nothing() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let cases = [
        (
            routes::CLUSTER_LEARNERS,
            json!({ "id": 0, "addr": "127.0.0.1:1" }),
            400,
        ),
        (
            routes::CLUSTER_LEARNERS,
            json!({ "id": 9, "addr": " " }),
            400,
        ),
        (routes::CLUSTER_LEARNERS, json!({ "id": 9 }), 400),
        (
            routes::CLUSTER_LEARNERS,
            json!({ "id": 2, "addr": "127.0.0.1:1" }),
            409,
        ),
        (routes::CLUSTER_PROMOTE, json!({ "ids": [9] }), 409),
        (routes::CLUSTER_PROMOTE, json!({ "ids": "1" }), 400),
        (routes::CLUSTER_REMOVE, json!({ "ids": [9] }), 409),
        (
            routes::CLUSTER_REMOVE,
            json!({ "ids": [1], "extra": true }),
            400,
        ),
        (routes::CLUSTER_TRANSFER_LEADER, json!({ "to": 9 }), 409),
    ];
    let roles = |view: Value| -> Vec<(u64, String)> {
        let members = view["members"].as_array().cloned().unwrap_or_default();
        members
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap(),
                    m["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let before = roles(cluster_view(&cluster, leader).await);
    for node in [leader, follower] {
        for (path, body, expected) in &cases {
            let (status, answer) = admin_post(&cluster, node, path, body.clone()).await;
            assert_eq!(status, *expected, "{path} {body} on node {node}: {answer}");
            assert_eq!(answer["success"], false, "{answer}");
        }
    }
    let after = roles(cluster_view(&cluster, leader).await);
    assert_eq!(before, after, "a refused change altered the membership");
}
