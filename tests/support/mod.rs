//! A real cluster of `stockraft serve` processes on loopback, for integration tests.
//!
//! Each test gets ports and a data directory of its own; every process it starts is killed when
//! the [`Cluster`] is dropped, also when the test panics. A port is never given to two nodes,
//! not even to nodes of two tests running at once ([`free_port`]).
//!
//! A failing test says what its nodes were doing. Every node logs (at [`NODE_LOG_FILTER`]:
//! openraft's elections, votes and replication errors included; no colour) to `node-N.log` in
//! the test's directory. When the test panics (a wait that timed out, an assertion), dropping
//! the [`Cluster`] prints, for each node, where its Raft stood (role, leader, term, last log,
//! committed and applied index, from `/api/health`, or why it has none) and the last
//! [`LOG_TAIL_LINES`] lines of its log, each line prefixed with the node. With
//! `STOCKRAFT_TEST_KEEP_LOGS=<dir>` set, the whole logs are also copied under `<dir>` (the
//! test's own directory is deleted with it).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockraft::client::wire::Health;
use stockraft::client::{routes, Client};
use stockraft::transport::{HttpTransport, Transport, WireRequest};

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

/// `RUST_LOG` of the nodes a test starts (unless it sets [`Cluster::rust_log`]): the node's own
/// info lines, and openraft's (elections, membership, snapshots, replication errors), which
/// say why a node did not apply what the test waits for.
pub const NODE_LOG_FILTER: &str = "info,openraft=info";

/// Lines of each node's log printed when a test fails: enough to see the last few seconds of a
/// node, short enough that three of them still read as one failure message.
pub const LOG_TAIL_LINES: usize = 60;

/// Longer log lines are cut in a failed test's output (openraft logs its whole state at start-up).
pub const LOG_TAIL_LINE_CHARS: usize = 400;

/// Environment variable naming a directory where the whole node logs of failed tests are kept.
pub const KEEP_LOGS_ENV: &str = "STOCKRAFT_TEST_KEEP_LOGS";

/// Environment variable naming the `stockraft` binary the tests run instead of the one cargo
/// built beside them: a long repeated run (`scripts/repeat-tests.sh`) copies the binary once,
/// so a rebuild in the same target directory meanwhile does not change what it tests.
pub const BINARY_ENV: &str = "STOCKRAFT_TEST_BINARY";

/// The `stockraft` binary the cluster runs (see [`BINARY_ENV`]).
pub fn stockraft_binary() -> PathBuf {
    std::env::var_os(BINARY_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stockraft")))
}

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

/// Ports handed to nodes by this test process, each with the open lock file that claims it
/// from other test processes (see [`free_port`]). Never released: a process hands out a few
/// hundred ports at most.
static CLAIMED_PORTS: Mutex<BTreeMap<u16, Option<std::fs::File>>> = Mutex::new(BTreeMap::new());

/// How many ports [`free_port`] tries before giving up.
const PORT_ATTEMPTS_MAX: usize = 1000;

/// A loopback port for a node to listen on, never handed out before by this process nor
/// claimed by another test process still running.
///
/// The kernel's free port (bind to port 0) is free only while it is bound, and the node that
/// will listen on it starts later. Tests run in parallel, so two clusters configured at the same
/// moment could be given the same port: one node would fail to bind it, and its cluster's
/// requests for that node would reach the other cluster's node (which answers, agrees on a
/// "leader 1" of its own and refuses this cluster's entries as `WRONG_CLUSTER`). That was a
/// test that waited 30 s for a node to apply a write it never could. So each port is claimed:
/// in this process (never twice), and across test processes by a lock on
/// `<temp dir>/stockraft-test-ports/<port>.lock`, held until the process exits.
fn free_port() -> u16 {
    let mut claimed = CLAIMED_PORTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..PORT_ATTEMPTS_MAX {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("finding a free port")
            .port();
        if claimed.contains_key(&port) {
            continue;
        }
        if let Some(lock) = claim_across_processes(port) {
            claimed.insert(port, lock);
            return port;
        }
    }
    panic!("no unclaimed free port in {PORT_ATTEMPTS_MAX} attempts");
}

/// Locks `port`'s lock file: `Some(Some(file))` holds the claim while `file` is open, `None`
/// means another process holds it. Where locking is impossible (no writable temp directory, a
/// filesystem without locks) the claim is this process's alone: `Some(None)`.
fn claim_across_processes(port: u16) -> Option<Option<std::fs::File>> {
    let dir = std::env::temp_dir().join("stockraft-test-ports");
    let opened = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
    });
    let Ok(file) = opened else {
        return Some(None);
    };
    match file.try_lock() {
        Ok(()) => Some(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => None,
        Err(std::fs::TryLockError::Error(_)) => Some(None),
    }
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
            let made = Command::new(stockraft_binary())
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
            rust_log: NODE_LOG_FILTER.into(),
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
        let output = Command::new(stockraft_binary())
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
            .open(self.log_path(id))
            .unwrap();
        let child = Command::new(stockraft_binary())
            .args(["serve", "--id", &id.to_string(), "--config"])
            .arg(&self.config_path)
            .args(extra)
            .env_remove("STOCKRAFT_SECRET")
            .env("RUST_LOG", &self.rust_log)
            // Plain text: the log is read by people (in a failed test's output) and by tests.
            .env("NO_COLOR", "1")
            // A node that exits on an error says why in one line, not under a backtrace that
            // fills the log's tail (panics still follow `RUST_BACKTRACE`).
            .env("RUST_LIB_BACKTRACE", "0")
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

    /// Waits until every node in `among` answers, agrees on one leader (also in `among`) and
    /// holds a log, and the leader has heard from each of them lately: the cluster every test
    /// starts from. On a loaded machine each step can lag the one before: a node hears of the
    /// leader with its first heartbeat, which may come before the entries (until the first
    /// entry, the membership, arrives, the node refuses client requests: 503 `NOT_A_MEMBER`);
    /// and the leader counts a member reachable only once it acknowledged a heartbeat (100 ms
    /// deadline each) within `membership::REACHABLE_WITHIN`, without which a membership change
    /// is refused as leaving too few reachable voters.
    pub async fn wait_for_leader(&self, among: &[u64]) -> u64 {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        loop {
            // (leader, last log index) as each node reports them.
            let mut seen = Vec::new();
            for &id in among {
                let raft = self.health(id).await.map(|health| health.raft);
                seen.push((
                    raft.as_ref().and_then(|raft| raft.leader_id),
                    raft.as_ref().and_then(|raft| raft.last_log_index),
                ));
            }
            let every_node_holds_a_log = seen.iter().all(|(_, last_log)| last_log.is_some());
            let mut unheard = Vec::new();
            if let Some((Some(leader), _)) = seen.first() {
                let agreed = seen.iter().all(|(l, _)| *l == Some(*leader));
                if agreed && among.contains(leader) && every_node_holds_a_log {
                    self.assert_one_cluster(among).await;
                    unheard = self.unheard_by(*leader, among).await;
                    if unheard.is_empty() {
                        return *leader;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?} that heard from all of them (each node's \
                 leader and last log index: {seen:?}; not heard from lately: {unheard:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The nodes of `among` that `leader` has not heard from lately (not `reachable` in its
    /// cluster view), all of them if it does not answer.
    async fn unheard_by(&self, leader: u64, among: &[u64]) -> Vec<u64> {
        let request = WireRequest::get(routes::CLUSTER).with_secret(SECRET);
        let view = self
            .transport
            .send(self.peer_addr(leader), request, REQUEST_TIMEOUT)
            .await
            .ok()
            .and_then(|response| serde_json::from_slice::<Value>(&response.body).ok())
            .unwrap_or(Value::Null);
        let heard: Vec<u64> = view["data"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|member| member["reachable"] == true)
            .filter_map(|member| member["id"].as_u64())
            .collect();
        among
            .iter()
            .copied()
            .filter(|id| !heard.contains(id))
            .collect()
    }

    /// Fails the test if nodes of `among` present different cluster ids: an address of this
    /// cluster is answered by a node of another one (a port two tests were given), which would
    /// agree on a leader of its own and never apply this cluster's writes.
    async fn assert_one_cluster(&self, among: &[u64]) {
        let mut clusters = Vec::new();
        for &id in among {
            clusters.push((id, self.cluster_id(id).await));
        }
        let mut distinct: Vec<&String> = clusters.iter().filter_map(|(_, c)| c.as_ref()).collect();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() <= 1,
            "the nodes answering for this cluster belong to different clusters: {clusters:?}"
        );
    }

    /// The cluster id node `id` presents (the identity header of its `/raft/status` answer),
    /// or None if it has none or does not answer.
    pub async fn cluster_id(&self, id: u64) -> Option<String> {
        let request = WireRequest::get(routes::raft::STATUS).with_secret(SECRET);
        let response = self
            .transport
            .send(self.peer_addr(id), request, REQUEST_TIMEOUT)
            .await
            .ok()?;
        response
            .header(stockraft::identity::CLUSTER_HEADER)
            .map(str::to_owned)
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

    /// Where node `id` logs (all its lives: a restarted node appends).
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    /// The node's log file, for failure messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// The ids of the nodes that have a log (every node started, also those that were stopped).
    fn logged_ids(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|id| self.log_path(*id).exists())
            .collect()
    }

    /// The last [`LOG_TAIL_LINES`] lines of every node's log, each under a header naming the
    /// node: what a failed test prints.
    pub fn log_tails(&self) -> String {
        let mut tails = String::new();
        for id in self.logged_ids() {
            let log = self.log(id);
            let lines: Vec<&str> = log.lines().collect();
            let shown = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            tails.push_str(&format!(
                "\n---- node {id}: last {} of {} log lines ({}) ----\n",
                shown.len(),
                lines.len(),
                self.log_path(id).display()
            ));
            for line in shown {
                tails.push_str(&format!("node {id} | {}\n", shortened(line)));
            }
        }
        tails
    }

    /// Copies every node's whole log to `<$STOCKRAFT_TEST_KEEP_LOGS>/<test name>-<cluster
    /// directory name>/` if that variable is set; returns the directory written.
    fn keep_logs(&self) -> Option<PathBuf> {
        let root = PathBuf::from(std::env::var_os(KEEP_LOGS_ENV)?);
        let test = std::thread::current()
            .name()
            .unwrap_or("unnamed-test")
            .replace("::", "-");
        let cluster = self.dir.path().file_name()?.to_string_lossy().into_owned();
        let kept = root.join(format!("{test}-{cluster}"));
        std::fs::create_dir_all(&kept).ok()?;
        for id in self.logged_ids() {
            let _ = std::fs::copy(self.log_path(id), kept.join(format!("node-{id}.log")));
        }
        Some(kept)
    }

    /// What a failing test prints about its cluster: where each running node's Raft stood
    /// (`positions`, asked before the nodes were killed), each node's log tail, and where the
    /// whole logs were kept.
    fn report_failure(&self, positions: &[(u64, String)]) {
        let mut report = format!(
            "\n==== the test failed; the Raft positions of the nodes of the cluster in {}: ====\n",
            self.dir.path().display()
        );
        for (id, position) in positions {
            report.push_str(&format!("node {id}: {position}\n"));
        }
        report.push_str("==== and the end of each node's log: ====");
        report.push_str(&self.log_tails());
        if let Some(kept) = self.keep_logs() {
            report.push_str(&format!(
                "==== whole node logs kept in {} ====\n",
                kept.display()
            ));
        }
        eprintln!("{report}");
    }

    /// Each node's Raft position from its `/api/health`, asked without the test's runtime (the
    /// cluster is dropped outside it), or why there is none.
    fn positions(&mut self) -> Vec<(u64, String)> {
        self.ids()
            .into_iter()
            .map(|id| {
                // The newest process of node `id` (a node that exited may have been started again).
                let exited = self
                    .children
                    .iter_mut()
                    .rev()
                    .find(|(i, _)| *i == id)
                    .map(|(_, child)| child.try_wait().ok().flatten());
                let position = match exited {
                    None => "not running (never started, or stopped by the test)".to_owned(),
                    Some(Some(status)) => format!("exited on its own ({status})"),
                    Some(None) if self.scheme == "https" => "running (TLS: not asked)".to_owned(),
                    Some(None) => describe_health(plain_http_get(self.addr(id), routes::HEALTH)),
                };
                (id, position)
            })
            .collect()
    }
}

/// How long a failure report waits for one node's health.
const FAILURE_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET path` over plain HTTP/1.0 with std only (a failing test's runtime may be gone): the
/// body, or why there is none.
fn plain_http_get(addr: &str, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let socket: std::net::SocketAddr = addr.parse().map_err(|error| format!("{error}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&socket, FAILURE_REPORT_TIMEOUT)
        .map_err(|error| format!("no connection: {error}"))?;
    stream.set_read_timeout(Some(FAILURE_REPORT_TIMEOUT)).ok();
    stream.set_write_timeout(Some(FAILURE_REPORT_TIMEOUT)).ok();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|error| format!("request not sent: {error}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|error| format!("no answer within {FAILURE_REPORT_TIMEOUT:?}: {error}"))?;
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => Ok(body.to_owned()),
        None => Err(format!("not an HTTP answer: {answer:?}")),
    }
}

/// One line from a node's `/api/health` body: its role, leader, term and log positions.
fn describe_health(body: Result<String, String>) -> String {
    let body = match body {
        Ok(body) => body,
        Err(why) => return format!("running, health not answered ({why})"),
    };
    let Ok(health) = serde_json::from_str::<Value>(&body) else {
        return format!("running, health not JSON: {body}");
    };
    let raft = &health["data"];
    let field = |name: &str| match &raft[name] {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        value => value.to_string(),
    };
    format!(
        "{} of term {}, leader {}, last log {}, committed {}, applied {}, snapshot {}, purged {}",
        field("role"),
        field("term"),
        field("leaderId"),
        field("lastLogIndex"),
        field("committedIndex"),
        field("appliedIndex"),
        field("snapshotIndex"),
        field("purgedIndex"),
    )
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

/// `line`, cut to [`LOG_TAIL_LINE_CHARS`] characters with a note of what was left out.
fn shortened(line: &str) -> String {
    match line.char_indices().nth(LOG_TAIL_LINE_CHARS) {
        None => line.to_owned(),
        Some((cut, _)) => {
            let left_out = line[cut..].chars().count();
            format!("{} [... {left_out} more characters]", &line[..cut])
        }
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
        // Dropped while unwinding: a wait timed out or an assertion failed. Ask the nodes where
        // they stand while they live; print it with their logs once they are dead (complete).
        let failed = std::thread::panicking();
        let positions = if failed { self.positions() } else { Vec::new() };
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if failed {
            self.report_failure(&positions);
        }
    }
}
