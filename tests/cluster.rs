//! The replicated core with real processes on loopback: election, replication, crash of the
//! leader, restart and catch-up (also behind a purged log), and the secret on Raft RPC.
#![cfg(not(madsim))]

mod support;

use stockraft::client::routes;

use stockraft::client::wire::{CreateRequest, ReserveRequest};
use support::{Cluster, SECRET};

const STORE: &str = "s1";

fn record_path(sku: &str) -> String {
    routes::record(STORE, sku)
}

async fn create(cluster: &Cluster, node: u64, sku: &str, qty: i64) {
    let (status, body) = cluster
        .post(
            node,
            routes::INVENTORY,
            CreateRequest {
                sku: sku.into(),
                store_id: STORE.into(),
                initial_quantity: qty,
            },
        )
        .await;
    assert_eq!(status, 201, "create {sku} on node {node}: {body}");
}

async fn reserve(cluster: &Cluster, node: u64, sku: &str, qty: i64) -> u16 {
    cluster
        .post(
            node,
            &routes::reserve(STORE, sku),
            ReserveRequest {
                qty,
                expected_version: None,
                ttl_seconds: None,
            },
        )
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_committed_through_the_leader_is_applied_on_all_three_nodes() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "apple", 10).await;
    assert_eq!(reserve(&cluster, leader, "apple", 3).await, 201);
    for id in cluster.ids() {
        eventually!(
            &format!("node {id} applies the reserve"),
            cluster.local_qty(id, STORE, "apple").await == Some(7)
        );
        // Each node's data directory is its owner's alone, whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cluster.data_dir(id))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "node {id}'s data directory mode {mode:o}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_a_new_one_and_every_acknowledged_write_survives() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "pear", 100).await;
    let mut acked = 0;
    for _ in 0..20 {
        if reserve(&cluster, leader, "pear", 1).await == 201 {
            acked += 1;
        }
    }
    assert_eq!(acked, 20);
    cluster.kill(leader);
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let new_leader = cluster.wait_for_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    // Linearizable read through the new leader: all 20 acknowledged reserves are there.
    let (status, body) = cluster.get(new_leader, &record_path("pear")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["qty"], 80);
    // Writes continue on the new leader.
    assert_eq!(reserve(&cluster, new_leader, "pear", 5).await, 201);

    // The killed node restarts from its disk and catches up.
    cluster.spawn(leader);
    eventually!(
        "the restarted node catches up",
        cluster.local_qty(leader, STORE, "pear").await == Some(75)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_a_purged_log_catches_up_from_a_snapshot() {
    let raft = "[raft]\nsnapshot_every_entries = 20\nlog_entries_kept_after_snapshot = 0\n";
    let mut cluster = Cluster::start(3, raft).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let lagging = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    create(&cluster, leader, "plum", 1000).await;
    assert!(
        cluster.terminate(lagging).await,
        "node {lagging} did not shut down cleanly"
    );
    for _ in 0..60 {
        assert_eq!(reserve(&cluster, leader, "plum", 1).await, 201);
    }
    eventually!(
        "the leader purges its log behind a snapshot",
        cluster
            .health(leader)
            .await
            .and_then(|h| h.raft.purged_index)
            .unwrap_or(0)
            > 20
    );
    cluster.spawn(lagging);
    eventually!(
        "the lagging node converges",
        cluster.local_qty(lagging, STORE, "plum").await == Some(940)
    );
    // The installed state is readable a moment before the node reports the snapshot: openraft
    // counts it once the state machine's install is done and Raft has taken note.
    eventually!(
        format!("node {lagging} reports holding the installed snapshot (above index 20)"),
        cluster.snapshot_index(lagging).await > 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_rpc_without_the_cluster_secret_is_refused_and_changes_nothing() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let term_before = cluster.health(leader).await.unwrap().raft.term;
    for target in cluster.ids() {
        for secret in [None, Some("wrong-secret-value")] {
            let mut request = cluster
                .http
                .post(cluster.url(target, routes::raft::VOTE))
                .body(vec![0u8; 16]);
            if let Some(secret) = secret {
                request = request.header("x-stockraft-secret", secret);
            }
            let status = request.send().await.unwrap().status().as_u16();
            assert_eq!(
                status, 401,
                "node {target} accepted a vote with secret {secret:?}"
            );
        }
        let status = cluster
            .http
            .get(cluster.url(target, routes::raft::STATUS))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 401);
        let with_secret = cluster
            .http
            .get(cluster.url(target, routes::raft::STATUS))
            .header("x-stockraft-secret", SECRET)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(with_secret.as_u16(), 200);
    }
    let health = cluster.health(leader).await.unwrap();
    assert_eq!(health.raft.term, term_before);
    assert_eq!(health.raft.leader_id, Some(leader));
}

/// `runtime.worker_threads` above 1 runs a node on a pool of workers (tokio's multi-thread
/// scheduler) instead of the default single thread: such a cluster commits and serves alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_a_pool_of_runtime_workers_commit_and_serve_like_nodes_on_one_thread() {
    // `Cluster` writes `extra` at the end of cluster.toml.
    let cluster = Cluster::start(3, "\n[runtime]\nworker_threads = 2\n").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    create(&cluster, leader, "kiwi", 5).await;
    assert_eq!(reserve(&cluster, follower, "kiwi", 2).await, 201);
    for id in cluster.ids() {
        eventually!(
            "every node applies the writes",
            cluster.local_qty(id, STORE, "kiwi").await == Some(3)
        );
    }
}

/// What bounds a node's memory (docs/performance.md): the binary allocates through jemalloc, whose
/// background thread hands freed pages back to the OS (glibc malloc kept about twice the live
/// heap), and the state is resident in its compact map, whose images a thread of their own
/// writes (`state image`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_jemalloc_s_purging_thread_and_its_state_image_thread() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    for sku in ["fig", "date", "plum"] {
        create(&cluster, leader, sku, 5).await;
    }
    assert_eq!(reserve(&cluster, leader, "fig", 2).await, 201);
    for id in cluster.ids() {
        eventually!(
            "every node applies the writes",
            cluster.local_qty(id, STORE, "fig").await == Some(3)
        );
    }
    for id in cluster.ids() {
        let pid = cluster.pid(id).unwrap();
        let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect();
        assert!(
            threads.iter().any(|name| name == "jemalloc_bg_thd"),
            "node {id} has no jemalloc purging thread: {threads:?}"
        );
        assert!(
            threads.iter().any(|name| name == "state image"),
            "node {id} writes no images of its state: {threads:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_a_node_down_cleanly_and_it_restarts_with_its_data() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "fig", 5).await;
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    eventually!(
        "the follower applies the create",
        cluster.local_qty(follower, STORE, "fig").await == Some(5)
    );
    assert!(
        cluster.terminate(follower).await,
        "SIGTERM should exit 0:\n{}",
        cluster.log(follower)
    );
    cluster.spawn(follower);
    eventually!(
        "the restarted follower serves its data",
        cluster.local_qty(follower, STORE, "fig").await == Some(5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_majority_refuses_writes_and_linearizable_reads() {
    let mut cluster = Cluster::start(3, "[api]\nwrite_deadline_ms = 1500\n").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "kiwi", 9).await;
    let survivor = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    eventually!(
        "the survivor applies the create",
        cluster.local_qty(survivor, STORE, "kiwi").await == Some(9)
    );
    for id in cluster.ids().into_iter().filter(|id| *id != survivor) {
        cluster.kill(id);
    }
    let (status, body) = cluster
        .post(
            survivor,
            &routes::reserve(STORE, "kiwi"),
            ReserveRequest {
                qty: 1,
                expected_version: None,
                ttl_seconds: None,
            },
        )
        .await;
    assert_eq!(status, 503, "a minority node acknowledged a write: {body}");
    // NO_LEADER once it knows the leader is gone; OUTCOME_UNKNOWN if it forwarded the write on a
    // connection the killed leader broke mid-request (it cannot know whether the leader got it).
    let code = body["error"]["code"].as_str().unwrap_or_default();
    assert!(["NO_LEADER", "OUTCOME_UNKNOWN"].contains(&code), "{body}");
    let (status, body) = cluster.get(survivor, &record_path("kiwi")).await;
    assert_eq!(
        status, 503,
        "a minority node served a linearizable read: {body}"
    );
    assert_eq!(body["error"]["code"], "NO_LEADER", "{body}");
    // Its own applied state stays readable, labelled as such.
    assert_eq!(cluster.local_qty(survivor, STORE, "kiwi").await, Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_catches_up_on_100k_records_from_a_streamed_snapshot_in_bounded_memory() {
    use stockraft::client::wire::MembersRequest;
    use stockraft::inventory::BATCH_RECORDS_MAX;
    use stockraft::raft::network::SNAPSHOT_CHUNK_BYTES;

    const RECORDS: usize = 100_000;
    let raft = "[raft]\nsnapshot_every_entries = 50\nlog_entries_kept_after_snapshot = 0\n";
    let mut cluster = Cluster::start(3, raft).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let client = cluster.client(leader);
    create_in_batches(&client, RECORDS, BATCH_RECORDS_MAX, 7).await;
    // The leader's log is purged behind a snapshot: a newcomer can only catch up from it.
    let started = std::time::Instant::now();
    let slow = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(120));
    let snapshot = match slow.snapshot().await {
        Ok(answer) => match answer.ok() {
            Ok(envelope) => envelope.data,
            Err(error) => panic!("{error}; leader log:\n{}", cluster.log(leader)),
        },
        Err(error) => panic!("{error}; leader log:\n{}", cluster.log(leader)),
    };
    eprintln!("snapshot and purge took {:?}", started.elapsed());
    assert!(snapshot.snapshot_index.is_some());

    cluster.spawn_joining(4, leader);
    let last = format!("sku-{}", RECORDS - 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while cluster.local_qty(4, STORE, &last).await != Some(7) {
        assert!(
            std::time::Instant::now() < deadline,
            "node 4 did not apply the snapshot; its log:\n{}\nleader log:\n{}",
            cluster.log(4),
            cluster.log(leader)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!("node 4 caught up after {:?}", started.elapsed());
    // The transfer shows in Prometheus: sent by a member, installed by node 4. The sender is
    // looked for: on a loaded machine the writes above can keep the first leader from
    // heartbeating long enough for another member to be elected and send the snapshot. (The
    // sender records the transfer once node 4 answered the last chunk, a moment after node 4
    // applied it.)
    const SENT: &str = r#"stockraft_snapshot_duration_seconds_count{phase="send"} "#;
    const INSTALLED: &str = r#"stockraft_snapshot_duration_seconds_count{phase="install"} "#;
    let mut sender = None;
    eventually!("a member reports sending node 4 the snapshot", {
        for node in [1, 2, 3] {
            if prometheus_count(&cluster, node, SENT).await >= Some(1.0) {
                sender = Some(node);
            }
        }
        sender.is_some()
    });
    let sender = sender.unwrap();
    let count = prometheus_count(&cluster, 4, INSTALLED).await;
    assert!(count >= Some(1.0), "node 4: {INSTALLED} is {count:?}");
    for node in [sender, 4] {
        let metrics = cluster
            .client(node)
            .metrics()
            .await
            .unwrap()
            .ok()
            .unwrap()
            .data;
        let peak = metrics.log.snapshot_chunk_bytes_peak;
        assert!(
            peak > 0 && peak <= SNAPSHOT_CHUNK_BYTES as u64,
            "node {node}: peak chunk {peak} bytes (chunk size {SNAPSHOT_CHUNK_BYTES})"
        );
        if node == 4 {
            assert!(
                metrics.log.snapshot_bytes > 2 * SNAPSHOT_CHUNK_BYTES as u64,
                "the snapshot ({} bytes) must span several chunks for this test to mean anything",
                metrics.log.snapshot_bytes
            );
        }
    }
    let remove = MembersRequest {
        ids: [4].into(),
        keep_as_learners: false,
    };
    assert_eq!(client.remove(&remove).await.unwrap().status, 200);
}

/// The value of Prometheus `series` (its name and labels, then a space) on node `node`.
async fn prometheus_count(cluster: &Cluster, node: u64, series: &str) -> Option<f64> {
    let text = cluster
        .request(node, reqwest::Method::GET, routes::PROMETHEUS, None, &[])
        .await
        .text;
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.parse::<f64>().ok())
}

/// bincode 2's varint for a length of 2^`exponent` (>= 2^32): a 0xFD tag and 8 bytes.
fn huge_length(exponent: u32) -> Vec<u8> {
    let mut bytes = vec![0xFD];
    bytes.extend_from_slice(&(1u64 << exponent).to_le_bytes());
    bytes
}

/// A valid append body (from a stale term 0, so a node that reads it refuses it) whose entry
/// carries a command with strings: lengths for a bomb to replace.
fn valid_append_body() -> Vec<u8> {
    use openraft::vote::RaftLeaderIdExt;
    use stockraft::inventory::{Command, RecordKey, Request};
    use stockraft::raft::{Entry, LogId, TypeConfig};
    let log_id = |index| {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, 1),
            index,
        )
    };
    let request: openraft::raft::AppendEntriesRequest<TypeConfig> =
        openraft::raft::AppendEntriesRequest {
            vote: openraft::Vote::new(0, 1),
            prev_log_id: None,
            entries: vec![Entry {
                log_id: log_id(1),
                payload: openraft::EntryPayload::Normal(Request {
                    command: Command::Create {
                        key: RecordKey::new("store-1", "SKU-1").unwrap(),
                        initial_quantity: 5,
                    },
                    proposed_at_ms: 1,
                    idempotency: None,
                }),
            }],
            leader_commit: None,
        };
    stockraft::raft::network::encode_rpc(&request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_bombs_on_the_raft_routes_are_refused_and_the_cluster_keeps_committing() {
    let cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    create(&cluster, leader, "bombed", 100).await;
    let valid = valid_append_body();
    // A huge length inserted at, and written over, every offset of a valid message.
    let mut bodies = Vec::new();
    for offset in 0..=valid.len() {
        for exponent in [40, 44] {
            let bomb = huge_length(exponent);
            let mut inserted = valid[..offset].to_vec();
            inserted.extend(&bomb);
            inserted.extend_from_slice(&valid[offset..]);
            bodies.push(inserted);
            let mut overwritten = valid.clone();
            for (i, byte) in bomb.into_iter().enumerate() {
                if let Some(slot) = overwritten.get_mut(offset + i) {
                    *slot = byte;
                }
            }
            bodies.push(overwritten);
        }
    }
    for target in cluster.ids() {
        // Presented as another member (its identity headers), so the bodies reach the decoder
        // instead of being refused as coming from no known node.
        let identity = cluster.identity_headers(target % 3 + 1);
        for route in [
            routes::raft::APPEND,
            routes::raft::SNAPSHOT,
            routes::raft::VOTE,
        ] {
            for body in &bodies {
                let mut request = cluster
                    .http
                    .post(cluster.url(target, route))
                    .header("x-stockraft-secret", SECRET);
                for (name, value) in &identity {
                    request = request.header(*name, value);
                }
                let status = request
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("node {target} died on {route}: {e}"))
                    .status()
                    .as_u16();
                // Refused (400), or read as a valid but stale request (200).
                assert!(
                    status == 400 || status == 200,
                    "node {target} {route}: answered {status}"
                );
            }
        }
    }
    // Every node is alive, and the cluster still commits.
    for id in cluster.ids() {
        assert!(
            cluster.health(id).await.is_some(),
            "node {id} stopped answering"
        );
    }
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    eventually!(
        "a reserve commits after the bombs",
        reserve(&cluster, leader, "bombed", 1).await == 201
    );
}

/// A state larger than a quarter of `snapshot_log_bytes` is snapshotted only once the log is as
/// large as its newest snapshot: being due by entries is not enough (a snapshot rewrites the
/// whole state, `node::SnapshotPolicy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_is_snapshotted_only_once_the_log_is_as_large_as_its_snapshot() {
    // The first lines land in `[storage]`, which the harness writes last: segments of 4 KiB
    // so that a purge leaves little more than the log since the snapshot.
    let extra = "wal_segment_bytes = 4096\n\n[raft]\nsnapshot_every_entries = 20\n\
                 snapshot_log_bytes = 65536\nlog_entries_kept_after_snapshot = 0\n";
    let cluster = Cluster::start(3, extra).await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let client = cluster.client(leader);
    // 400 records: a snapshot of ~30 KB, above a quarter of 64 KiB.
    create_in_batches(&client, 400, 200, 1_000_000).await;
    cluster.take_snapshot(leader).await;
    let first = cluster.snapshot_index(leader).await;
    assert!(first > 0);

    // Three times `snapshot_every_entries`, a few KB of log: due by entries, not worth it.
    for _ in 0..60 {
        assert_eq!(cluster.reserve_one(leader, "sku-0", &[]).await.status, 201);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        cluster.snapshot_index(leader).await,
        first,
        "a snapshot was built before the log was as large as the state"
    );

    // Once the log has grown to the snapshot's size, the next one comes by itself.
    let mut writes = 60;
    while cluster.snapshot_index(leader).await == first {
        assert!(
            writes < 3_000,
            "no snapshot after {writes} writes; leader log:\n{}",
            cluster.log(leader)
        );
        for _ in 0..50 {
            assert_eq!(cluster.reserve_one(leader, "sku-0", &[]).await.status, 201);
        }
        writes += 50;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(writes > 60, "the snapshot came with the log still small");
}

/// Creates records `sku-0` .. `sku-{count - 1}` of store `STORE` through `client`, `batch` at
/// a time.
async fn create_in_batches(
    client: &stockraft::client::Client,
    count: usize,
    batch: usize,
    initial_quantity: i64,
) {
    use stockraft::client::wire::CreateBatchRequest;
    use stockraft::client::WriteOptions;
    for first in (0..count).step_by(batch) {
        let records = (first..(first + batch).min(count))
            .map(|i| CreateRequest {
                sku: format!("sku-{i}"),
                store_id: STORE.into(),
                initial_quantity,
            })
            .collect();
        let answer = client
            .create_batch(&CreateBatchRequest { records }, &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(answer.status, 201, "{:?}", answer.body.err());
    }
}
