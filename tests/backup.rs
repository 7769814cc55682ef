//! Backups with real processes: a backup taken from a follower while clients write, checked,
//! restored into a new cluster that holds every write acknowledged before it began (records
//! with their versions, holds, idempotency keys) under a new cluster id and refuses the old
//! cluster's nodes; a damaged backup refused by `stockraft restore` with the reason named;
//! scheduled backups written by the leader and pruned.
#![cfg(not(madsim))]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::Value;
use stockraft::backup::{BackupWriter, Header};
use stockraft::client::routes::{self, Consistency};
use stockraft::client::wire::{AdjustRequest, CreateRequest, RecordBody};
use stockraft::client::WriteOptions;
use stockraft::identity::ClusterId;
use stockraft::raft::network::encode_rpc;
use stockraft::raft::{TypeConfig, Vote};
use support::{stockraft_binary, Cluster, SECRET};

const STORE: &str = "s1";
/// Records created before the backup, each adjusted a few times so versions differ.
const RECORDS: usize = 12;

/// Runs `stockraft <args>`; returns (exit code, stdout and stderr).
fn stockraft(args: &[&str]) -> (i32, String) {
    let output = Command::new(stockraft_binary())
        .args(args)
        .env_remove("STOCKRAFT_SECRET")
        .env_remove("STOCKRAFT_SECRET_FILE")
        .output()
        .expect("running stockraft");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

async fn create(cluster: &Cluster, via: u64, sku: &str, qty: i64) -> RecordBody {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity: qty,
    };
    let answer = cluster
        .client(via)
        .create(&body, &WriteOptions::default())
        .await;
    answer.unwrap().ok().unwrap().data
}

async fn adjust(cluster: &Cluster, via: u64, sku: &str, delta: i64) -> RecordBody {
    let body = AdjustRequest {
        delta,
        expected_version: None,
    };
    let answer = cluster
        .client(via)
        .adjust(STORE, sku, &body, &WriteOptions::default())
        .await;
    answer.unwrap().ok().unwrap().record
}

/// The test's keyed write: a reserve of 2 units of `item-1` with Idempotency-Key `order-77`,
/// sent to `via` (the restored cluster must answer a replay of it as the old one did).
async fn keyed_reserve(cluster: &Cluster, via: u64) -> support::Answer {
    let path = routes::reserve(STORE, "item-1");
    let header = [("Idempotency-Key", "order-77")];
    cluster
        .request(
            via,
            reqwest::Method::POST,
            &path,
            Some(r#"{"qty":2}"#),
            &header,
        )
        .await
}

/// Creates and adjusts one record after another through `via` until stopped; counts the acks.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(cluster: &Cluster, via: u64, prefix: &'static str) -> Self {
        let client = cluster.client(via);
        let (stop, acked) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (stopped, counted) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                let body = CreateRequest {
                    sku: format!("{prefix}-{n}"),
                    store_id: STORE.into(),
                    initial_quantity: 5,
                };
                if let Ok(answer) = client.create(&body, &WriteOptions::default()).await {
                    if answer.status == 201 {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
        });
        Self { stop, acked, task }
    }

    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.acked.load(Ordering::Relaxed)
    }
}

/// A vote request for a far higher term, sent with the identity headers of `from_cluster`'s
/// node `from` to `to_cluster`'s node `to`: (status, body).
async fn foreign_vote(
    from_cluster: &Cluster,
    from: u64,
    to_cluster: &Cluster,
    to: u64,
) -> (u16, Value) {
    let request = openraft::raft::VoteRequest::<TypeConfig>::new(Vote::new(1_000, from), None);
    let mut post = to_cluster
        .http
        .post(to_cluster.url(to, routes::raft::VOTE))
        .header("x-stockraft-secret", SECRET)
        .header("content-type", "application/octet-stream")
        .body(encode_rpc(&request));
    for (name, value) in from_cluster.identity_headers(from) {
        post = post.header(name, value);
    }
    let answer = post.send().await.expect("vote request");
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_from_a_follower_under_writes_restores_into_a_new_cluster() {
    let old = Cluster::start(3, "").await;
    let leader = old.wait_for_leader(&[1, 2, 3]).await;
    let follower = old.ids().into_iter().find(|id| *id != leader).unwrap();

    // Acknowledged before the backup: records with versions above 1, a hold, a keyed write.
    for i in 0..RECORDS {
        let sku = format!("item-{i}");
        create(&old, leader, &sku, 100).await;
        adjust(&old, follower, &sku, -1).await;
        for _ in 0..i % 3 {
            adjust(&old, leader, &sku, 2).await;
        }
    }
    let held = old
        .client(leader)
        .hold(STORE, "item-0", 3, 3_600, &WriteOptions::default())
        .await
        .unwrap()
        .ok()
        .unwrap();
    let hold_id = held.reservation_id.clone().expect("a hold has an id");
    let keyed = keyed_reserve(&old, leader).await;
    assert!((200..300).contains(&keyed.status), "{keyed}");
    let mut acknowledged = Vec::new();
    for i in 0..RECORDS {
        let (client, sku) = (old.client(leader), format!("item-{i}"));
        let read = client.read(STORE, &sku, Consistency::Linearizable).await;
        acknowledged.push(read.unwrap().ok().unwrap());
    }
    let old_cluster_id = old.cluster_id(leader).await.expect("a cluster id");

    // The backup, from a follower, while a writer keeps writing through the leader.
    let writer = Writer::start(&old, leader, "during");
    let file = old.dir.path().join("cluster.srb");
    let (code, out) = {
        let (node, file) = (old.peer_addr(follower).to_owned(), file.clone());
        tokio::task::spawn_blocking(move || {
            stockraft(&[
                "admin",
                "--node",
                &node,
                "--secret",
                SECRET,
                "backup",
                "--out",
                path_arg(&file),
            ])
        })
        .await
        .unwrap()
    };
    let written_during = writer.stop().await;
    assert_eq!(code, 0, "{out}");
    assert!(written_during > 0, "the writer wrote during the backup");
    assert!(!Path::new(&format!("{}.tmp", file.display())).exists());

    let (code, verified) = stockraft(&["admin", "backup", "--verify", path_arg(&file), "--json"]);
    assert_eq!(code, 0, "{verified}");
    let described: Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(
        described["clusterId"],
        old_cluster_id.as_str(),
        "{described}"
    );
    assert!(
        described["records"].as_u64().unwrap() >= RECORDS as u64,
        "{described}"
    );
    assert_eq!(described["heldReservations"], 1, "{described}");
    assert!(
        described["idempotencyKeys"].as_u64().unwrap() >= 1,
        "{described}"
    );
    assert!(described["logTimeMs"].as_u64().unwrap() > 0, "{described}");

    // Restore into a new cluster (new ports, new directories) and start it.
    let mut new = Cluster::configure(3, "", "");
    let config = new.config_path.clone();
    let (code, out) = stockraft(&[
        "restore",
        "--from",
        path_arg(&file),
        "--config",
        path_arg(&config),
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = stockraft(&[
        "restore",
        "--from",
        path_arg(&file),
        "--config",
        path_arg(&config),
    ]);
    assert_eq!(
        code, 1,
        "a second restore into the same directories is refused: {out}"
    );
    assert!(out.contains("not empty"), "{out}");
    for id in new.ids() {
        new.spawn(id);
    }
    let new_leader = new.wait_for_leader(&[1, 2, 3]).await;

    // Every acknowledged record, with its version; the hold; the keyed write's answer.
    for record in &acknowledged {
        let answer = new
            .client(new_leader)
            .read(STORE, &record.sku, Consistency::Linearizable)
            .await
            .unwrap()
            .ok()
            .unwrap();
        let restored = answer;
        assert_eq!(
            (restored.qty, restored.reserved, restored.version),
            (record.qty, record.reserved, record.version),
            "{} restored as {restored:?}, acknowledged as {record:?}",
            record.sku
        );
    }
    let hold = new
        .client(new_leader)
        .reservation(&hold_id, Consistency::Linearizable)
        .await
        .unwrap()
        .ok()
        .unwrap()
        .data;
    assert_eq!(hold.status, "held", "{hold:?}");
    let replayed = keyed_reserve(&new, new_leader).await;
    assert_eq!(replayed.status, keyed.status, "{replayed}");
    assert_eq!(
        replayed.json, keyed.json,
        "the replayed key answers the first answer"
    );

    // A new cluster id on every node, and the old cluster's nodes are refused.
    let new_cluster_id = new.cluster_id(new_leader).await.expect("a cluster id");
    assert_ne!(new_cluster_id, old_cluster_id);
    assert!(ClusterId::parse(&new_cluster_id).is_some());
    let target = new.ids().into_iter().find(|id| *id != new_leader).unwrap();
    let term_before = new.health(target).await.unwrap().raft.term;
    let (status, body) = foreign_vote(&old, leader, &new, target).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "WRONG_CLUSTER", "{body}");
    assert!(new.health(target).await.unwrap().raft.term < 1_000);
    assert!(new.health(target).await.unwrap().raft.term >= term_before);

    // And the restored cluster takes writes, with versions going on.
    let after = adjust(&new, new_leader, "item-2", 1).await;
    assert!(after.version > acknowledged[2].version);
}

/// A whole, valid backup made with the library: one record's worth of items.
fn valid_backup() -> Vec<u8> {
    let header = Header {
        cluster: Some(ClusterId(0xabc)),
        log_index: 99,
        log_term: 2,
        log_time_ms: 1_765_000_000_000,
        item_count: 1,
    };
    let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
    writer
        .push(b"Sr\x02s1\0sku", b"not read by restore")
        .unwrap();
    writer.finish().unwrap().0
}

#[test]
fn a_damaged_backup_is_refused_by_restore_with_the_reason_and_nothing_is_written() {
    let cluster = Cluster::configure(3, "", "");
    let config = path_arg(&cluster.config_path).to_owned();
    let good = valid_backup();
    let mut flipped = good.clone();
    flipped[70] ^= 0x01;
    let mut version = good.clone();
    version[8] = 2;
    let cases: [(&str, Vec<u8>, &str); 6] = [
        ("flipped", flipped, "checksum mismatch"),
        ("truncated", good[..good.len() - 10].to_vec(), "truncated"),
        ("header-cut", good[..20].to_vec(), "truncated"),
        ("version", version, "unknown backup format version 2"),
        ("empty", Vec::new(), "empty"),
        (
            "not-a-backup",
            b"[cluster]\nsecret = \"x\"\n".to_vec(),
            "not a stockraft backup",
        ),
    ];
    for (name, bytes, reason) in cases {
        let file = cluster.dir.path().join(format!("{name}.srb"));
        std::fs::write(&file, bytes).unwrap();
        let (code, out) = stockraft(&["restore", "--from", path_arg(&file), "--config", &config]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(reason), "{name}: expected {reason:?} in {out}");
        assert!(out.contains("nothing was written"), "{name}: {out}");
        let (code, out) = stockraft(&["admin", "backup", "--verify", path_arg(&file)]);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains(reason), "{name}: expected {reason:?} in {out}");
        assert!(
            !cluster.data_root().exists(),
            "{name}: a refused restore wrote nothing"
        );
    }
    let file = cluster.dir.path().join("good.srb");
    std::fs::write(&file, &good).unwrap();
    let (code, out) = stockraft(&["restore", "--from", path_arg(&file), "--config", &config]);
    assert_eq!(code, 0, "{out}");
    for id in cluster.ids() {
        assert!(cluster.data_dir(id).join("identity").exists(), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_writes_scheduled_backups_skips_idle_intervals_and_keeps_the_newest() {
    let cluster =
        Cluster::start(3, "[backup]\ndir = \"backups\"\ninterval_s = 1\nkeep = 2\n").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let dir = cluster.dir.path().join("backups");
    let written = |metrics: &Value| metrics["data"]["backups"]["written"].as_u64().unwrap_or(0);

    // Writes between ticks: a backup at each of several ticks, the older ones pruned.
    let writer = Writer::start(&cluster, leader, "scheduled");
    eventually!(
        "three scheduled backups written",
        written(&cluster.get(leader, routes::HEALTH_METRICS).await.1) >= 3
    );
    writer.stop().await;
    let listed = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    eventually!("the newest two kept", listed().len() == 2);
    let names = listed();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("backup-") && n.ends_with(".srb")),
        "{names:?}"
    );
    for name in &names {
        let (code, out) = stockraft(&["admin", "backup", "--verify", path_arg(&dir.join(name))]);
        assert_eq!(code, 0, "{out}");
    }

    // Idle: ticks are skipped, and nothing new is written (one more may be on its way).
    let (_, metrics) = cluster.get(leader, routes::HEALTH_METRICS).await;
    let (written_idle, skipped) = (
        written(&metrics),
        metrics["data"]["backups"]["skipped"].as_u64().unwrap(),
    );
    eventually!(
        "idle ticks are skipped",
        cluster.get(leader, routes::HEALTH_METRICS).await.1["data"]["backups"]["skipped"]
            .as_u64()
            .unwrap()
            >= skipped + 2
    );
    let (_, metrics) = cluster.get(leader, routes::HEALTH_METRICS).await;
    let backups = &metrics["data"]["backups"];
    assert!(written(&metrics) <= written_idle + 1, "{backups}");
    assert_eq!(backups["failures"], 0, "{backups}");
    assert_eq!(backups["enabled"], true, "{backups}");
    let newest = listed().pop().unwrap();
    let index: u64 = newest["backup-".len()..newest.len() - ".srb".len()]
        .parse()
        .unwrap();
    assert_eq!(backups["lastLogIndex"], index, "{backups}");
    assert!(backups["lastSizeBytes"].as_u64().unwrap() > 0, "{backups}");
    let scrape = cluster
        .http
        .get(cluster.url(leader, routes::PROMETHEUS))
        .send()
        .await
        .unwrap();
    let text = scrape.text().await.unwrap();
    assert!(
        text.contains(&format!("stockraft_backup_last_log_index {index}")),
        "{text}"
    );
    assert!(text.contains("stockraft_backup_failures_total 0"), "{text}");
}
