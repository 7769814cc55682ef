//! A real cluster of `stockraft serve` processes on loopback, for integration tests.
//!
//! Each test gets free ports and a data directory of its own; every process it starts is killed
//! when the [`Cluster`] is dropped, also when the test panics.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockraft::client::wire::Health;
use stockraft::client::{routes, Client};
use stockraft::transport::HttpTransport;

use serde_json::Value;

/// Waits until `$condition` (an expression that may `.await`) holds, failing the test after
/// [`CONDITION_TIMEOUT`]. A macro rather than a function so the condition can borrow freely.
#[macro_export]
macro_rules! eventually {
    ($what:expr, $condition:expr) => {{
        let deadline = std::time::Instant::now() + $crate::support::CONDITION_TIMEOUT;
        while !($condition) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for: {}",
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }};
}

pub const SECRET: &str = "integration-test-secret";

/// How long to wait for a cluster condition before failing the test.
pub const CONDITION_TIMEOUT: Duration = Duration::from_secs(30);

/// How a test cluster's nodes listen.
#[derive(Debug, Clone, Copy, Default)]
pub struct Layout {
    /// A client listener apart from the peer one (`client_addr`).
    pub split: bool,
    /// `[tls]` with certificates from `stockraft certs` in `<dir>/tls` (needs `split`).
    pub tls: bool,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The addresses clients use (`client_addr` when split, else `addr`).
    pub addrs: Vec<(u64, String)>,
    /// The peer listeners' addresses (`addr`), the same as `addrs` unless split.
    pub peer_addrs: Vec<(u64, String)>,
    /// `http`, or `https` with TLS.
    pub scheme: &'static str,
    children: Vec<(u64, Child)>,
    /// For requests the typed client cannot make (malformed ones, raw headers).
    pub http: reqwest::Client,
    transport: Arc<HttpTransport>,
    /// `RUST_LOG` of nodes spawned from now on.
    pub rust_log: String,
}

/// How long one test request may take (longer than a node's 5 s write deadline).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

impl Cluster {
    /// Starts `size` nodes; `extra` is appended to cluster.toml (e.g. a `[raft]` section).
    pub async fn start(size: u64, extra: &str) -> Self {
        Self::start_with(size, "", extra).await
    }

    /// Like [`Cluster::start`], with `cluster_lines` added to the `[cluster]` section.
    pub async fn start_with(size: u64, cluster_lines: &str, extra: &str) -> Self {
        let mut cluster = Self::configure(size, cluster_lines, extra);
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster
    }

    /// Like [`Cluster::start_with`], with listeners laid out as `layout` says.
    pub async fn start_layout(size: u64, cluster_lines: &str, extra: &str, layout: Layout) -> Self {
        let mut cluster = Self::configure_layout(size, cluster_lines, extra, layout);
        for id in 1..=size {
            cluster.spawn(id);
        }
        cluster
    }

    /// Writes the configuration of `size` nodes (as [`Cluster::start_with`]) but starts none:
    /// for tests that prepare the data directories first (e.g. mount a filesystem there), then
    /// [`Cluster::spawn`] each node.
    pub fn configure(size: u64, cluster_lines: &str, extra: &str) -> Self {
        Self::configure_layout(size, cluster_lines, extra, Layout::default())
    }

    /// [`Cluster::configure`] with listeners laid out as `layout` says.
    pub fn configure_layout(size: u64, cluster_lines: &str, extra: &str, layout: Layout) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let peer_addrs: Vec<(u64, String)> = (1..=size)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let addrs: Vec<(u64, String)> = match layout.split {
            true => (1..=size)
                .map(|id| (id, format!("127.0.0.1:{}", free_port())))
                .collect(),
            false => peer_addrs.clone(),
        };
        let mut toml = format!("[cluster]\nsecret = \"{SECRET}\"\n{cluster_lines}\n");
        for ((id, addr), (_, client_addr)) in peer_addrs.iter().zip(&addrs) {
            toml.push_str(&format!("[[nodes]]\nid = {id}\naddr = \"{addr}\"\n"));
            if layout.split {
                toml.push_str(&format!("client_addr = \"{client_addr}\"\n"));
            }
            toml.push('\n');
        }
        toml.push_str("[storage]\ndata_dir = \"data\"\n\n");
        let mut http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy();
        let mut transport = HttpTransport::new();
        if layout.tls {
            let tls = dir.path().join("tls");
            let made = Command::new(env!("CARGO_BIN_EXE_stockraft"))
                .args(["certs", "--nodes"])
                .arg(
                    (1..=size)
                        .map(|id| id.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                )
                .arg("--out")
                .arg(&tls)
                .output()
                .expect("running stockraft certs");
            assert!(made.status.success(), "stockraft certs: {made:?}");
            toml.push_str(
                "[tls]\nca_file = \"tls/ca.pem\"\ncert_file = \"tls/node-{id}.pem\"\n\
                 key_file = \"tls/node-{id}-key.pem\"\n\n",
            );
            let ca = std::fs::read(tls.join("ca.pem")).unwrap();
            let mut identity = std::fs::read(tls.join("admin.pem")).unwrap();
            identity.extend(std::fs::read(tls.join("admin-key.pem")).unwrap());
            http = http
                .use_rustls_tls()
                .tls_built_in_root_certs(false)
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
            transport = HttpTransport::with_tls(&ca, Some(&identity)).unwrap();
        }
        toml.push_str(extra);
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, toml).expect("writing cluster.toml");
        Self {
            dir,
            config_path,
            addrs,
            peer_addrs,
            scheme: if layout.tls { "https" } else { "http" },
            children: Vec::new(),
            http: http.build().unwrap(),
            transport: Arc::new(transport),
            rust_log: "info,openraft=warn".into(),
        }
    }

    /// The directory holding every node's data directory (`data_dir` of cluster.toml).
    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether node `id`'s process (started by this cluster) is still running.
    pub fn is_running(&mut self, id: u64) -> bool {
        self.children
            .iter_mut()
            .filter(|(i, _)| *i == id)
            .any(|(_, child)| matches!(child.try_wait(), Ok(None)))
    }

    /// The process id of node `id` (started by this cluster), e.g. to read its memory use.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, child)| child.id())
    }

    /// Waits up to `timeout` for node `id`'s process to exit on its own; its exit status, or
    /// None if it still runs (or was never started).
    pub async fn wait_exit(
        &mut self,
        id: u64,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            for (_, child) in self.children.iter_mut().filter(|(i, _)| *i == id) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL to every node this cluster started.
    pub fn kill_all(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
    }

    pub fn spawn(&mut self, id: u64) {
        self.spawn_with(id, &[]);
    }

    /// Starts node `id` (not in cluster.toml) that joins through `via`; returns its address.
    pub fn spawn_joining(&mut self, id: u64, via: u64) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        self.addrs.push((id, addr.clone()));
        self.peer_addrs.push((id, addr.clone()));
        let join = self.addr(via).to_owned();
        self.spawn_with(id, &["--addr", &addr, "--join", &join]);
        addr
    }

    /// Restarts a node that joined (keeps its address).
    pub fn respawn_joined(&mut self, id: u64, via: u64) {
        let addr = self.addr(id).to_owned();
        let join = self.addr(via).to_owned();
        self.spawn_with(id, &["--addr", &addr, "--join", &join]);
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join("data").join(format!("node-{id}"))
    }

    /// Runs `stockraft admin <args>` against node `via`; returns (exit code, stdout).
    pub fn admin(&self, via: u64, args: &[&str]) -> (i32, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_stockraft"))
            .args(["admin", "--node", self.peer_addr(via), "--secret", SECRET])
            .args(args)
            .output()
            .expect("running stockraft admin");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        (
            output.status.code().unwrap_or(-1),
            format!("{stdout}{stderr}"),
        )
    }

    pub fn spawn_with(&mut self, id: u64, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node-{id}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stockraft"))
            .args(["serve", "--id", &id.to_string(), "--config"])
            .arg(&self.config_path)
            .args(extra)
            .env_remove("STOCKRAFT_SECRET")
            .env("RUST_LOG", &self.rust_log)
            // The node logs to stdout (tracing's default); errors before logging starts go to
            // stderr. Both end up in the node's log file.
            .stdout(log.try_clone().expect("sharing the log file"))
            .stderr(log)
            .spawn()
            .expect("spawning stockraft");
        self.children.push((id, child));
    }

    /// SIGKILL: no shutdown, no flush beyond what was already fsynced.
    pub fn kill(&mut self, id: u64) {
        for (_, child) in self.children.iter_mut().filter(|(i, _)| *i == id) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.retain(|(i, _)| *i != id);
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub async fn terminate(&mut self, id: u64) -> bool {
        let mut clean = false;
        for (_, child) in self.children.iter_mut().filter(|(i, _)| *i == id) {
            send_sigterm(child.id());
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    clean = status.success();
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self.children.retain(|(i, _)| *i != id);
        clean
    }

    pub fn addr(&self, id: u64) -> &str {
        &self
            .addrs
            .iter()
            .find(|(i, _)| *i == id)
            .expect("known node")
            .1
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr(id), path)
    }

    /// The Raft RPC identity headers of member `id` (`stockraft::identity`), from its data
    /// directory's `identity` file: requests sent as that member reach the Raft handlers
    /// instead of being refused as coming from no known node.
    pub fn identity_headers(&self, id: u64) -> Vec<(&'static str, String)> {
        let text = std::fs::read_to_string(self.data_dir(id).join("identity")).unwrap();
        let identity: serde_json::Value = serde_json::from_str(&text).unwrap();
        let field = |name: &str| identity[name].as_str().unwrap().to_owned();
        vec![
            (stockraft::identity::CLUSTER_HEADER, field("clusterId")),
            (
                stockraft::identity::NODE_HEADER,
                format!("{id}/{}", field("incarnation")),
            ),
        ]
    }

    /// Node `id`'s peer listener address.
    pub fn peer_addr(&self, id: u64) -> &str {
        &self
            .peer_addrs
            .iter()
            .find(|(i, _)| *i == id)
            .expect("known node")
            .1
    }

    pub fn ids(&self) -> Vec<u64> {
        self.addrs.iter().map(|(id, _)| *id).collect()
    }

    /// A typed client of node `id` (with the cluster secret, for admin routes).
    pub fn client(&self, id: u64) -> Client {
        Client::new(self.transport.clone(), self.addr(id))
            .with_secret(SECRET)
            .with_timeout(REQUEST_TIMEOUT)
    }

    /// Node `id`'s `/api/health`, or None if it does not answer.
    pub async fn health(&self, id: u64) -> Option<Health> {
        Some(self.client(id).health().await.ok()?.ok().ok()?.data)
    }

    /// Waits until every node in `among` answers and agrees on one leader, also in `among`.
    pub async fn wait_for_leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        loop {
            let mut leaders = Vec::new();
            for &id in among {
                leaders.push(self.health(id).await.and_then(|h| h.raft.leader_id));
            }
            if let Some(Some(leader)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*leader)) && among.contains(leader) {
                    return *leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs no body (routes that take none), with `headers`.
    pub async fn post_empty(&self, id: u64, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = self.http.post(self.url(id, path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST failed");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs `body` (a `client::wire` request type, or raw JSON for malformed requests).
    pub async fn post(&self, id: u64, path: &str, body: impl serde::Serialize) -> (u16, Value) {
        self.post_with(id, path, body, &[]).await
    }

    pub async fn post_with(
        &self,
        id: u64,
        path: &str,
        body: impl serde::Serialize,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.http.post(self.url(id, path)).json(&body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("POST failed");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Any request: `body` is sent as JSON text when given. Returns status, headers and the
    /// body parsed as JSON (`Value::Null` if it is not JSON).
    pub async fn request(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(method.clone(), self.url(id, path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{method} {path} on node {id}: {error}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// GET with the cluster secret (admin routes).
    pub async fn get_admin(&self, id: u64, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(id, path))
            .header("x-stockraft-secret", SECRET)
            .send()
            .await
            .expect("GET failed");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, id: u64, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(id, path))
            .send()
            .await
            .expect("GET failed");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The last index of the snapshot node `id` holds (0 if none).
    pub async fn snapshot_index(&self, id: u64) -> u64 {
        let health = self.health(id).await;
        health.and_then(|h| h.raft.snapshot_index).unwrap_or(0)
    }

    /// Reserves one unit of `sku` in store `s1` through node `id`, with extra `headers`; the raw
    /// answer (status, headers, body).
    pub async fn reserve_one(&self, id: u64, sku: &str, headers: &[(&str, &str)]) -> Answer {
        let path = routes::reserve("s1", sku);
        self.request(
            id,
            reqwest::Method::POST,
            &path,
            Some(r#"{"qty":1}"#),
            headers,
        )
        .await
    }

    /// Builds a snapshot on node `id` and purges the log behind it (admin route), or fails.
    pub async fn take_snapshot(&self, id: u64) {
        let (status, body) = self
            .post_empty(
                id,
                routes::CLUSTER_SNAPSHOT,
                &[("x-stockraft-secret", SECRET)],
            )
            .await;
        assert_eq!(status, 200, "snapshot on node {id}: {body}");
    }

    /// The record as node `id` has applied it (`?consistency=local`), or None.
    pub async fn local_qty(&self, id: u64, store: &str, sku: &str) -> Option<i64> {
        let path = routes::read(store, sku, routes::Consistency::Local);
        let response = self.http.get(self.url(id, &path)).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let body: Value = response.json().await.ok()?;
        body["qty"].as_i64()
    }

    /// The node's log file, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }
}

/// One HTTP answer, for tests that look at headers as well as the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text)
    }
}

fn send_sigterm(pid: u32) {
    // std has no portable "send SIGTERM"; the `kill` command is on every POSIX system.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
