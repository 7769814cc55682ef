//! How long a new node takes to catch up on a populated cluster (issue: cluster administration).
//!
//! Starts a real three-node cluster (release binary, loopback, temporary data), writes
//! `STOCKRAFT_BENCH_RECORDS` records (default 100 000) with 64 concurrent clients, snapshots and
//! purges the leader's log so the newcomer must install a snapshot, then times, three times over,
//! a fresh node joining as a learner until it has applied the leader's last index. The reference
//! measured in the same run is the same join on the same cluster before any record was written.
//!
//! Prints medians and the ratio. Run: `cargo bench --bench catch_up`.

/// Real processes and real HTTP: nothing to measure under `--cfg madsim`.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
fn main() {
    real::main()
}

#[cfg(not(madsim))]
mod real {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use stockraft::client::wire::{CreateRequest, Health, MembersRequest};
    use stockraft::client::{Client, WriteOptions};
    use stockraft::transport::HttpTransport;

    const SECRET: &str = "bench-secret-value";
    const CLIENTS: usize = 64;
    const JOINS: usize = 3;
    const WAIT_LIMIT: Duration = Duration::from_secs(600);
    /// One request's bound (creates under load, a join waiting for a snapshot).
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

    struct Nodes {
        dir: tempfile::TempDir,
        config: std::path::PathBuf,
        addrs: Vec<String>,
        children: Vec<Child>,
    }

    impl Drop for Nodes {
        fn drop(&mut self) {
            for child in &mut self.children {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn free_addr() -> String {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("127.0.0.1:{port}")
    }

    fn spawn(nodes: &mut Nodes, id: u64, extra: &[&str]) {
        let child = Command::new(env!("CARGO_BIN_EXE_stockraft"))
            .args(["serve", "--id", &id.to_string(), "--config"])
            .arg(&nodes.config)
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning stockraft");
        nodes.children.push(child);
    }

    async fn health(client: &Client, addr: &str) -> Option<Health> {
        Some(client.to_node(addr).health().await.ok()?.ok().ok()?.data)
    }

    async fn leader(client: &Client, addrs: &[String]) -> String {
        let deadline = Instant::now() + WAIT_LIMIT;
        while Instant::now() < deadline {
            if let Some(id) = health(client, &addrs[0])
                .await
                .and_then(|h| h.raft.leader_id)
            {
                return addrs[id as usize - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader");
    }

    async fn write_records(client: &Client, leader: &str, count: usize) -> Duration {
        let started = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (client, next) = (client.to_node(leader), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let body = CreateRequest {
                        sku: format!("sku-{i}"),
                        store_id: format!("store-{}", i % 50),
                        initial_quantity: 100,
                    };
                    let answer = client.create(&body, &WriteOptions::default()).await;
                    let status = answer.map(|a| a.status);
                    assert_eq!(status.ok(), Some(201), "write {i} failed");
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        started.elapsed()
    }

    /// Joins node `id` and returns how long until it applied the leader's last log index.
    async fn time_join(client: &Client, nodes: &mut Nodes, leader: &str, id: u64) -> Duration {
        let target = health(client, leader)
            .await
            .unwrap()
            .raft
            .last_log_index
            .unwrap();
        let addr = free_addr();
        let started = Instant::now();
        spawn(nodes, id, &["--addr", &addr, "--join", leader]);
        loop {
            let applied = health(client, &addr)
                .await
                .and_then(|h| h.raft.applied_index);
            if applied.is_some_and(|applied| applied >= target) {
                break;
            }
            assert!(started.elapsed() < WAIT_LIMIT, "node {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        // Remove it again so every join starts from the same cluster.
        let request = MembersRequest {
            ids: [id].into(),
            keep_as_learners: false,
        };
        let removed = client.to_node(leader).remove(&request).await.unwrap();
        assert_eq!(removed.status, 200);
        elapsed
    }

    fn median(mut values: Vec<Duration>) -> Duration {
        values.sort();
        values[values.len() / 2]
    }

    async fn bench() {
        let records: usize = std::env::var("STOCKRAFT_BENCH_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let mut toml = format!("[cluster]\nsecret = \"{SECRET}\"\n");
        for (i, addr) in addrs.iter().enumerate() {
            toml.push_str(&format!("[[nodes]]\nid = {}\naddr = \"{addr}\"\n", i + 1));
        }
        toml.push_str("[storage]\ndata_dir = \"data\"\n[raft]\nsnapshot_every_entries = 20000\n");
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).unwrap();
        let mut nodes = Nodes {
            dir,
            config,
            addrs: addrs.clone(),
            children: Vec::new(),
        };
        for id in 1..=3 {
            spawn(&mut nodes, id, &[]);
        }
        let client = Client::new(Arc::new(HttpTransport::new()), nodes.addrs[0].clone())
            .with_secret(SECRET)
            .with_timeout(REQUEST_TIMEOUT);
        let leader = leader(&client, &nodes.addrs).await;

        let mut reference = Vec::new();
        for j in 0..JOINS {
            reference.push(time_join(&client, &mut nodes, &leader, 10 + j as u64).await);
        }
        let write_time = write_records(&client, &leader, records).await;
        let snapshot = client.to_node(&leader).snapshot().await.unwrap();
        assert_eq!(snapshot.status, 200);
        let mut loaded = Vec::new();
        for j in 0..JOINS {
            loaded.push(time_join(&client, &mut nodes, &leader, 20 + j as u64).await);
        }
        let (reference, loaded) = (median(reference), median(loaded));
        println!(
            "write {records} records with {CLIENTS} clients: {:.1} s ({:.0} writes/s)",
            write_time.as_secs_f64(),
            records as f64 / write_time.as_secs_f64()
        );
        println!(
            "catch-up of a new node, empty cluster (reference): median {:.3} s over {JOINS}",
            reference.as_secs_f64()
        );
        println!(
            "catch-up of a new node, {records} records (snapshot): median {:.3} s over {JOINS}",
            loaded.as_secs_f64()
        );
        println!(
            "ratio loaded/reference: {:.1}x",
            loaded.as_secs_f64() / reference.as_secs_f64()
        );
        let _ = nodes.dir.path();
    }

    pub fn main() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(bench());
    }
}
