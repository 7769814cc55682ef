//! A full disk is an alarm, not an outage: real processes on a small filesystem.
//!
//! 1. Three nodes whose data directories share a 32 MiB tmpfs are filled with keyed creates
//!    until writes answer `507 INSUFFICIENT_STORAGE`; reads, health and every process survive,
//!    readiness says `503 NO_SPACE`; freeing space (deleting a filler file written before the
//!    run) brings writes back without a restart, and every acknowledged write is readable.
//! 2. A node whose own disk fills up under Raft (its tmpfs filled directly, behind its back)
//!    exits with status 3, the cause in its last log line, while the others keep writing.
//!
//! The tests mount tmpfs filesystems, which needs root (they run as root here). Where mounting
//! is refused, the first test falls back to a tiny `quota_bytes` per node (the alarm's other
//! trigger) and the second, which needs a real full disk, is skipped with a message.
#![cfg(not(madsim))]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockraft::client::wire::{
    codes, AdjustRequest, CreateBatchRequest, CreateRequest, ReserveRequest, TransferLeaderRequest,
};
use stockraft::client::{routes, Client, Consistency, WriteOptions};
use stockraft::server::RaftStopped;
use support::Cluster;

const MIB: u64 = 1024 * 1024;
const STORE: &str = "disk";

/// The shared filesystem of the first test, and the free space its nodes insist on keeping.
const TMPFS_BYTES: u64 = 32 * MIB;
const FREE_BYTES_MIN: u64 = 8 * MIB;
/// Written onto the tmpfs before the nodes start, deleted to free space: it leaves about 3 MiB
/// to fill before the alarm (a few thousand creates), and deleting it frees far more than the
/// 10% margin the alarm needs to clear.
const FILLER_BYTES: u64 = 21 * MIB;
/// Fallback without tmpfs: each node's quota, and a filler in each node's directory that keeps
/// it 2 MiB under the quota until deleted.
const FALLBACK_QUOTA_BYTES: u64 = 8 * MIB;
const FALLBACK_FILLER_BYTES: u64 = 6 * MIB;

/// Concurrent writers filling the disk.
const WRITERS: u64 = 16;
/// Bounds on each phase.
const FILL_DEADLINE: Duration = Duration::from_secs(120);
const RECOVERY_DEADLINE: Duration = Duration::from_secs(15);
/// The second test: the node's Raft fails on its first append that finds no room, or hangs in
/// sled and the server's watchdog gives up on it after 20 s.
const EXIT_DEADLINE: Duration = Duration::from_secs(60);
/// The second test's private filesystem for node 3.
const NODE_TMPFS_BYTES: u64 = 4 * MIB;
/// The second test's Raft log segments (a bare key: `Cluster` appends it to `[storage]`). A
/// segment grows a sixteenth of its size at a time, at least 4 KiB, and records fill that room
/// before the file grows again: with the default 16 MiB segment, the 1 MiB of room taken before
/// the disk filled holds about 1,400 more entries, and the node failed only when its state
/// machine's next checkpoint met the full disk, a count of writes that a loaded machine did not
/// reach within `EXIT_DEADLINE`. With 4 KiB of room, the append that finds none comes a few
/// entries after the fill.
const SMALL_WAL_SEGMENTS: &str = "wal_segment_bytes = 65536\n";

/// Snapshots are kept out of the first test: building one writes the whole state at once (with
/// sled, as one value rewritten with later writes), a burst this test's 8 MiB reserve is not
/// sized for. The default reserve (256 MiB) is.
const NO_SNAPSHOTS: &str = "[raft]\nsnapshot_every_entries = 1000000\n";

/// A tmpfs mounted for a test, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` at `dir`; None if mounting is not permitted here.
    fn mount(dir: &Path, bytes: u64) -> Option<Self> {
        std::fs::create_dir_all(dir).expect("creating the mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Self {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds a file open: detach it now, freed when released.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A cluster on a filesystem of its own. Drop order matters: the nodes die first, then the
/// filesystem is unmounted, then the cluster's temporary directory goes.
struct DiskCluster {
    cluster: Cluster,
    tmpfs: Option<Tmpfs>,
}

impl Drop for DiskCluster {
    fn drop(&mut self) {
        self.cluster.kill_all();
        self.tmpfs.take();
    }
}

/// Writes `bytes` of zeros to `path` (zeros, but tmpfs stores every page).
fn write_filler(path: &Path, bytes: u64) {
    std::fs::write(path, vec![0u8; bytes as usize]).expect("writing the filler file");
}

/// Appends to `path` until the filesystem is full.
fn fill_to_the_brim(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("creating the filler file");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(error.kind(), std::io::ErrorKind::StorageFull, "{error}");
            break;
        }
    }
    // The last partial page may hold a little more.
    let _ = file.write_all(&[0u8; 512]);
}

fn create_body(sku: &str) -> CreateRequest {
    CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity: 5,
    }
}

/// Keyed creates from [`WRITERS`] tasks, spread over every node, until one is refused with 507.
/// Returns the acknowledged skus. Any answer but 201 and 507 fails the test.
async fn fill_until_refused(clients: &[Client]) -> Vec<String> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + FILL_DEADLINE;
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let clients = clients.to_vec();
        let (acknowledged, refused) = (acknowledged.clone(), refused.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !refused.load(Ordering::Relaxed) {
                assert!(Instant::now() < deadline, "no 507 within {FILL_DEADLINE:?}");
                n += 1;
                let sku = format!("fill-{writer}-{n}");
                let client = &clients[((writer + n) % clients.len() as u64) as usize];
                let answer = client
                    .create(&create_body(&sku), &WriteOptions::keyed(&sku))
                    .await
                    .unwrap_or_else(|error| panic!("create {sku}: {error}"));
                match answer.status {
                    201 => acknowledged.lock().unwrap().push(sku),
                    507 => {
                        assert_eq!(answer.error_code(), Some(codes::INSUFFICIENT_STORAGE));
                        refused.store(true, Ordering::Relaxed);
                    }
                    other => panic!("create {sku}: unexpected {other}: {:?}", answer.body.err()),
                }
            }
        }));
    }
    for writer in writers {
        writer.await.expect("a writer failed");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    acknowledged
}

/// Reads every sku through the nodes in turn (linearizable), concurrently.
async fn assert_all_readable(clients: &[Client], skus: &[String]) {
    let skus = Arc::new(skus.to_vec());
    let mut readers = Vec::new();
    for reader in 0..WRITERS as usize {
        let (clients, skus) = (clients.to_vec(), skus.clone());
        readers.push(tokio::spawn(async move {
            for (i, sku) in skus
                .iter()
                .enumerate()
                .skip(reader)
                .step_by(WRITERS as usize)
            {
                let client = &clients[i % clients.len()];
                let answer = client
                    .read(STORE, sku, Consistency::Linearizable)
                    .await
                    .unwrap_or_else(|error| panic!("read {sku}: {error}"));
                let record = answer
                    .ok()
                    .unwrap_or_else(|error| panic!("acknowledged {sku} is not readable: {error}"));
                assert_eq!(record.qty, 5, "{sku}");
            }
        }));
    }
    for reader in readers {
        reader.await.expect("a reader failed");
    }
}

/// Starts the first test's cluster: on a shared tmpfs holding a filler file, or (fallback) with
/// a tiny quota per node and a filler in each node's directory. Returns it with the fillers.
async fn start_on_a_small_disk() -> (DiskCluster, Vec<PathBuf>) {
    let storage_tmpfs = format!("free_bytes_min = {FREE_BYTES_MIN}\n");
    let mut cluster = Cluster::configure(3, "", &format!("{storage_tmpfs}\n{NO_SNAPSHOTS}"));
    let root = cluster.data_root();
    let tmpfs = Tmpfs::mount(&root, TMPFS_BYTES);
    let fillers = if tmpfs.is_some() {
        let filler = root.join("filler");
        write_filler(&filler, FILLER_BYTES);
        vec![filler]
    } else {
        // No tmpfs: the quota is the trigger instead of free space (the free-space minimum is
        // set to one byte, out of the way).
        eprintln!("mounting a tmpfs is not permitted here: testing with storage.quota_bytes");
        let fallback = format!("quota_bytes = {FALLBACK_QUOTA_BYTES}\nfree_bytes_min = 1\n");
        let text = std::fs::read_to_string(&cluster.config_path).unwrap();
        std::fs::write(
            &cluster.config_path,
            text.replace(&storage_tmpfs, &fallback),
        )
        .unwrap();
        cluster
            .ids()
            .into_iter()
            .map(|id| {
                std::fs::create_dir_all(cluster.data_dir(id)).unwrap();
                let filler = cluster.data_dir(id).join("filler");
                write_filler(&filler, FALLBACK_FILLER_BYTES);
                filler
            })
            .collect()
    };
    for id in cluster.ids() {
        cluster.spawn(id);
    }
    (DiskCluster { cluster, tmpfs }, fillers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_keeps_serving_and_recovers_once_space_is_freed() {
    let (mut disk, fillers) = start_on_a_small_disk().await;
    let cluster = &disk.cluster;
    let ids = cluster.ids();
    cluster.wait_for_leader(&ids).await;
    let clients: Vec<Client> = ids.iter().map(|&id| cluster.client(id)).collect();

    let mut acknowledged = fill_until_refused(&clients).await;
    assert!(!acknowledged.is_empty(), "the disk was full from the start");

    // Every node raises its own alarm within a measurement interval (they share the disk), and
    // then refuses writes itself, at once, in the seed's error shape.
    for &id in &ids {
        eventually!(
            format!("node {id} raises its disk-space alarm"),
            cluster
                .health(id)
                .await
                .is_some_and(|health| health.storage.no_space)
        );
        let body = serde_json::to_string(&create_body(&format!("refused-{id}"))).unwrap();
        let refused = cluster
            .request(
                id,
                reqwest::Method::POST,
                routes::INVENTORY,
                Some(&body),
                &[],
            )
            .await;
        assert_eq!(refused.status, 507, "node {id}: {refused}");
        let error = &refused.json["error"];
        assert_eq!(refused.json["success"], false, "{refused}");
        assert_eq!(error["code"], codes::INSUFFICIENT_STORAGE, "{refused}");
        assert_eq!(error["name"], "InsufficientStorageError", "{refused}");
        assert_eq!(error["statusCode"], 507, "{refused}");
        assert_eq!(
            error["details"]["nodeId"], id,
            "refused by the node asked: {refused}"
        );
        assert!(error["message"].as_str().unwrap().contains("disk space"));
        assert!(error["timestamp"].is_string(), "{refused}");
    }
    // Adjust and reserve are writes too.
    let some = &acknowledged[0];
    let reserve = ReserveRequest {
        qty: 1,
        expected_version: None,
        ttl_seconds: None,
    };
    let refused = clients[1]
        .reserve(
            STORE,
            some,
            &reserve,
            &WriteOptions::keyed("refused-reserve"),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 507, "reserve: {:?}", refused.body.err());
    let adjust = AdjustRequest {
        delta: 1,
        expected_version: None,
    };
    let refused = clients[2]
        .adjust(STORE, some, &adjust, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(refused.status, 507, "adjust: {:?}", refused.body.err());
    let batch = CreateBatchRequest {
        records: vec![
            create_body("refused-batch-1"),
            create_body("refused-batch-2"),
        ],
    };
    let refused = clients[0]
        .create_batch(&batch, &WriteOptions::keyed("refused-batch"))
        .await
        .unwrap();
    assert_eq!(refused.status, 507, "batch: {:?}", refused.body.err());

    // Reads, health and metrics keep answering on every node; readiness says why it is not.
    for (&id, client) in ids.iter().zip(&clients) {
        let read = client.read(STORE, some, Consistency::Linearizable).await;
        assert_eq!(read.unwrap().status, 200, "node {id} reads while full");
        let health = cluster.health(id).await.expect("health answers");
        assert!(health.storage.no_space, "node {id}: {health:?}");
        assert_eq!(
            health.raft.leader_id,
            cluster.health(1).await.unwrap().raft.leader_id
        );
        let readiness = client.readiness().await.unwrap();
        assert_eq!(readiness.status, 503, "node {id}");
        assert_eq!(readiness.error_code(), Some(codes::NO_SPACE), "node {id}");
        let metrics = client.metrics().await.unwrap().ok().unwrap().data.storage;
        assert!(
            metrics.no_space && metrics.data_dir_bytes.is_some(),
            "{metrics:?}"
        );
        assert!(metrics.reason.is_some(), "{metrics:?}");
    }

    // Free space: the alarm clears by itself and writes succeed again, on every node, with
    // the same processes.
    for filler in &fillers {
        std::fs::remove_file(filler).expect("deleting the filler");
    }
    let started = Instant::now();
    for (&id, client) in ids.iter().zip(&clients) {
        let sku = format!("after-{id}");
        loop {
            let answer = client
                .create(&create_body(&sku), &WriteOptions::keyed(&sku))
                .await
                .unwrap();
            if answer.status == 201 {
                break;
            }
            assert_eq!(answer.status, 507, "node {id}: {:?}", answer.body.err());
            assert!(
                started.elapsed() < RECOVERY_DEADLINE,
                "node {id} still refuses writes {RECOVERY_DEADLINE:?} after space was freed"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        acknowledged.push(sku);
    }
    for (&id, client) in ids.iter().zip(&clients) {
        eventually!(
            format!("node {id} is ready again"),
            client.readiness().await.unwrap().status == 200
        );
    }

    assert_all_readable(&clients, &acknowledged).await;
    for &id in &ids {
        assert!(disk.cluster.is_running(id), "node {id} exited");
        let log = disk.cluster.log(id);
        assert!(log.contains("disk-space alarm raised"), "node {id}: {log}");
        assert!(log.contains("disk-space alarm cleared"), "node {id}: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_fills_under_raft_exits_with_status_3_naming_the_cause() {
    let cluster = Cluster::configure(3, "", SMALL_WAL_SEGMENTS);
    let Some(tmpfs) = Tmpfs::mount(&cluster.data_dir(3), NODE_TMPFS_BYTES) else {
        eprintln!("skipped: mounting a tmpfs is not permitted here, and this test needs one");
        return;
    };
    let mut disk = DiskCluster {
        cluster,
        tmpfs: Some(tmpfs),
    };
    for id in disk.cluster.ids() {
        disk.cluster.spawn(id);
    }
    let mut leader = disk.cluster.wait_for_leader(&[1, 2, 3]).await;
    if leader == 3 {
        let to = TransferLeaderRequest { to: 1 };
        let moved = disk.cluster.client(3).transfer_leader(&to).await.unwrap();
        assert_eq!(moved.status, 200, "{:?}", moved.body.err());
        eventually!(
            "leadership leaves node 3",
            disk.cluster.wait_for_leader(&[1, 2, 3]).await != 3
        );
        leader = disk.cluster.wait_for_leader(&[1, 2, 3]).await;
    }

    // Node 3's disk fills behind its back: its own alarm cannot stop the leader's writes, so
    // its next append finds no room.
    fill_to_the_brim(&disk.cluster.data_dir(3).join("filler"));
    let client = disk.cluster.client(leader);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let sku = format!("w-{n}");
                let answer = client
                    .create(&create_body(&sku), &WriteOptions::keyed(&sku))
                    .await;
                let status = answer.map(|answer| answer.status).ok();
                assert!(
                    status == Some(201),
                    "create {sku} on the leader: {status:?}"
                );
            }
        })
    };
    let exited = disk.cluster.wait_exit(3, EXIT_DEADLINE).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the leader kept accepting writes");

    let status = exited.unwrap_or_else(|| {
        panic!(
            "node 3 did not exit within {EXIT_DEADLINE:?}: {}",
            disk.cluster.log(3)
        )
    });
    assert_eq!(status.code(), Some(RaftStopped::EXIT_CODE), "{status:?}");
    let log = disk.cluster.log(3);
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("exiting: raft stopped"), "last line: {last}");
    assert!(
        last.contains("No space left on device") || last.contains("bytes free"),
        "the last line names the full disk: {last}"
    );
    // The majority carries on.
    let after = client
        .create(
            &create_body("after-exit"),
            &WriteOptions::keyed("after-exit"),
        )
        .await
        .unwrap();
    assert_eq!(after.status, 201);
}
