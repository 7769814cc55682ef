//! Configuration in one place: defaults, then `cluster.toml`, then `STOCKRAFT_*` environment
//! variables, validated once at start-up.
//!
//! `cluster.toml` is the *bootstrap* description of a cluster: its initial voters, where data
//! lives, timeouts and the secret. Once a cluster has initialised, the live membership is the one
//! in the Raft log; the file's node list is then only used to find addresses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// Environment variable that overrides `cluster.secret`.
pub const SECRET_ENV: &str = "STOCKRAFT_SECRET";
/// Environment variable naming a file that holds the secret (wins over `STOCKRAFT_SECRET` and
/// the file's `cluster.secret`/`cluster.secret_file`): a secret in a file stays out of `ps`.
pub const SECRET_FILE_ENV: &str = "STOCKRAFT_SECRET_FILE";
/// Environment variable that overrides `cluster.client_token`.
pub const CLIENT_TOKEN_ENV: &str = "STOCKRAFT_CLIENT_TOKEN";
/// The secret this repository once committed in `cluster.toml`: public, so never accepted off
/// loopback.
pub const KNOWN_DEFAULT_SECRET: &str = "local-dev-secret-change-me";
/// Shortest secret (or client token) accepted at all, in bytes.
pub const SECRET_BYTES_MIN: usize = 8;
/// Shortest secret accepted by a node listening off loopback, in bytes.
pub const EXPOSED_SECRET_BYTES_MIN: usize = 16;
/// Environment variables that override `tls.ca_file`, `tls.cert_file` and `tls.key_file`.
pub const TLS_CA_ENV: &str = "STOCKRAFT_TLS_CA";
pub const TLS_CERT_ENV: &str = "STOCKRAFT_TLS_CERT";
pub const TLS_KEY_ENV: &str = "STOCKRAFT_TLS_KEY";
/// Environment variable that overrides `storage.data_dir`.
pub const DATA_DIR_ENV: &str = "STOCKRAFT_DATA_DIR";
/// Environment variables that override the event streams' limits (`[events]`): a node's own
/// business, unlike `kept_max` and `retention_s`, which every node must share.
pub const EVENTS_STREAM_BACKLOG_MAX_ENV: &str = "STOCKRAFT_EVENTS_STREAM_BACKLOG_MAX";
pub const EVENTS_SUBSCRIBERS_MAX_ENV: &str = "STOCKRAFT_EVENTS_SUBSCRIBERS_MAX";
pub const EVENTS_KEEP_ALIVE_MS_ENV: &str = "STOCKRAFT_EVENTS_KEEP_ALIVE_MS";
/// The seed's variable for the idempotency TTL in ms; overrides `api.idempotency_ttl_ms`.
pub const SEED_IDEMPOTENCY_TTL_ENV: &str = "IDEMP_TTL_MS";
/// The seed's snapshot frequency in events; overrides `raft.snapshot_every_entries`.
pub const SEED_SNAPSHOT_EVERY_ENV: &str = "SNAPSHOT_EVERY_N_EVENTS";
/// The seed's per-client rate limit (requests per second); overrides `api.rate_limit_rps`.
pub const SEED_RATE_LIMIT_RPS_ENV: &str = "RATE_LIMIT_RPS";
/// The seed's rate-limit burst; overrides `api.rate_limit_burst`.
pub const SEED_RATE_LIMIT_BURST_ENV: &str = "RATE_LIMIT_BURST";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cluster: ClusterConfig,
    /// The initial voters. The cluster initialises itself from this list exactly once.
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub reservations: ReservationsConfig,
    #[serde(default)]
    pub events: EventsConfig,
    #[serde(default)]
    pub backup: BackupConfig,
}

/// Scheduled backups (`[backup]`), off by default: with `dir` set, the leader writes a backup
/// (`backup::format`) into `dir` every `interval_s`, skipped when nothing was committed since
/// the last one, and keeps the newest `keep` (`app::backups`). A failure (disk full, no
/// permission) is logged and counted (`stockraft_backup_failures_total`) and never stops
/// writes. Every node may be given the same settings: only the leader of the moment writes.
/// A relative `dir` is relative to the configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// Where backups are written (`backup-<log index, 20 digits>.srb`); none: no scheduled
    /// backups.
    pub dir: Option<PathBuf>,
    /// Seconds between two backups. From 1 to 604,800 (a week). Default 3,600.
    pub interval_s: u64,
    /// Backups kept in `dir`, the newest; older ones are deleted after each new one. At least
    /// 1. Default 24.
    pub keep: usize,
}

/// The longest `backup.interval_s`: a week.
pub const BACKUP_INTERVAL_S_MAX: u64 = 7 * 24 * 60 * 60;

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: None,
            interval_s: 3_600,
            keep: 24,
        }
    }
}

/// TLS (`[tls]`): all three files, or none. With them, peers speak mutual TLS (a node accepts
/// Raft and admin calls on its peer listener only from a certificate the cluster CA signed) and
/// the client listener speaks HTTPS with the same certificate. `{id}` in a path is replaced by
/// the node's id, so one file serves a cluster (`stockraft certs` writes `node-{id}.pem`).
/// Relative paths are relative to the configuration file's directory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA's certificate (PEM): the only root peers and admin clients are trusted by.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate chain (PEM), used as server and as client certificate.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// The TLS files of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.ca_file.is_some()
    }

    /// Node `id`'s files, `{id}` filled in; None without TLS.
    pub fn files_for(&self, id: u64) -> Option<TlsFiles> {
        let fill =
            |path: &PathBuf| PathBuf::from(path.to_string_lossy().replace("{id}", &id.to_string()));
        Some(TlsFiles {
            ca: fill(self.ca_file.as_ref()?),
            cert: fill(self.cert_file.as_ref()?),
            key: fill(self.key_file.as_ref()?),
        })
    }
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Shared secret guarding Raft RPC and admin routes (header `x-stockraft-secret`), sent on
    /// every node-to-node request. `STOCKRAFT_SECRET` wins over the file; a secret file
    /// (`secret_file`, `STOCKRAFT_SECRET_FILE`, `--secret-file`) wins over both.
    #[serde(default)]
    pub secret: String,
    /// A file holding the secret (trailing whitespace ignored). Relative to the configuration
    /// file's directory.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Secrets accepted from peers and operators besides `secret`, never sent: rotating the
    /// secret without downtime adds the new one here on every node, then makes it `secret`
    /// (the old one here), then drops the old one (README, "Security").
    #[serde(default)]
    pub accepted_secrets: Vec<String>,
    /// A single client token with the scopes read, reserve and write (`Authorization: Bearer
    /// <token>`); kept for configurations written before `client_tokens`. Its callers are named
    /// `default` and keep the anonymous idempotency scope.
    #[serde(default)]
    pub client_token: Option<String>,
    /// Client tokens, each with a name (its callers' idempotency scope) and scopes. With no
    /// token at all, client routes (but admin ones) are open, which a node listening for
    /// clients off loopback refuses unless started with `--insecure-open-client`.
    #[serde(default)]
    pub client_tokens: Vec<ClientToken>,
}

/// What a client token may do. A route belongs to exactly one scope (`api::auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Reads of records, counters, sync status, the sync barrier.
    Read,
    /// Reserve, commit and release (the reserve route, any sign of quantity).
    Reserve,
    /// Create, adjust, batch create.
    Write,
    /// Membership, leadership, snapshots, sync control, metrics reset.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Reserve, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Reserve => "reserve",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

/// One client token (`[[cluster.client_tokens]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientToken {
    /// Names the caller in logs and scopes its idempotency keys (`token:<name>`).
    pub name: String,
    pub token: String,
    pub scopes: Vec<Scope>,
}

/// A configured client token as the guards see it, borrowed from the configuration (they look
/// at every token on every request, so nothing is cloned).
#[derive(Clone, Copy)]
pub struct TokenRef<'a> {
    pub name: &'a str,
    pub token: &'a str,
    pub scopes: &'a [Scope],
    /// The older single `client_token`: its callers keep the anonymous idempotency scope they
    /// had before scopes existed (a retry across the upgrade still finds its key).
    pub legacy: bool,
}

/// The scopes of the legacy `client_token`: the client routes it always opened (admin routes
/// needed the secret before scopes existed).
const LEGACY_TOKEN_SCOPES: [Scope; 3] = [Scope::Read, Scope::Reserve, Scope::Write];

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientToken")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl ClusterConfig {
    /// Every client token, the legacy `client_token` first (named `default`, with the client
    /// scopes it always had: admin routes needed the secret before scopes existed).
    pub fn tokens(&self) -> impl Iterator<Item = TokenRef<'_>> {
        let legacy = self.client_token.iter().map(|token| TokenRef {
            name: "default",
            token,
            scopes: &LEGACY_TOKEN_SCOPES,
            legacy: true,
        });
        let configured = self.client_tokens.iter().map(|token| TokenRef {
            name: &token.name,
            token: &token.token,
            scopes: &token.scopes,
            legacy: false,
        });
        legacy.chain(configured)
    }

    /// Whether any client token is configured (client routes closed).
    pub fn client_routes_closed(&self) -> bool {
        self.client_token.is_some() || !self.client_tokens.is_empty()
    }
}

/// Secrets never reach a log line or a panic message through `{:?}`.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("secret", &"<redacted>")
            .field("secret_file", &self.secret_file)
            .field("accepted_secrets", &self.accepted_secrets.len())
            .field(
                "client_token",
                &self.client_token.as_ref().map(|_| "<redacted>"),
            )
            .field("client_tokens", &self.client_tokens)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    /// `host:port` this node's HTTP server listens on and peers reach it at: Raft RPC,
    /// forwarded requests and admin calls (and client calls too, without `client_addr`).
    pub addr: String,
    /// `host:port` of a separate listener for clients. With it, `addr` serves only nodes and
    /// secret holders (so client load or abuse cannot starve heartbeats, and peers can be bound
    /// to a private interface); without it one listener serves everything.
    #[serde(default)]
    pub client_addr: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Node `N` keeps its data in `<data_dir>/node-N`: the state machine (`state/`), the Raft log
    /// (`wal/`) and snapshots (`snapshots/`). Relative paths are relative to the configuration
    /// file's directory. Default: `./data`.
    pub data_dir: PathBuf,
    /// A Raft log segment file rolls over at this size; whole segments are deleted once a
    /// snapshot covers them. Default 16 MiB.
    pub wal_segment_bytes: u64,
    /// The most bytes this node's data directory (`<data_dir>/node-N`) may hold. At or above it
    /// the node raises its disk-space alarm and refuses client writes with 507 until the
    /// directory shrinks 10% below it (`space`). Default 8 GiB (etcd's
    /// `--quota-backend-bytes` idea: a bound chosen before the disk chooses one).
    pub quota_bytes: u64,
    /// The least free space the filesystem holding the data directory must keep. Below it the
    /// node raises the same alarm, until free space is 10% above it again. It is the room Raft
    /// still needs while the alarm is up (entries already in flight, votes, snapshots); a full
    /// disk would stop Raft instead. Default 256 MiB.
    pub free_bytes_min: u64,
    /// sled's page cache (`cache_capacity`) while the state of a data directory written by an
    /// earlier stockraft, which kept the state machine in sled, is moved into the resident
    /// state (once, at the first start; `storage::upgrade_sled_into`). Default 32 MiB.
    pub cache_bytes: u64,
    /// No effect: the read cache in front of sled it sized is gone, the state being resident in
    /// memory (`storage::resident`). Accepted so that older files still load.
    pub read_cache_bytes: u64,
}

/// `storage.quota_bytes` unless configured: 8 GiB.
pub const QUOTA_BYTES_DEFAULT: u64 = 8 * 1024 * 1024 * 1024;
/// `storage.free_bytes_min` unless configured: 256 MiB.
pub const FREE_BYTES_MIN_DEFAULT: u64 = 256 * 1024 * 1024;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            wal_segment_bytes: crate::storage::wal::SEGMENT_BYTES_DEFAULT,
            quota_bytes: QUOTA_BYTES_DEFAULT,
            free_bytes_min: FREE_BYTES_MIN_DEFAULT,
            cache_bytes: crate::storage::CACHE_BYTES_DEFAULT,
            read_cache_bytes: crate::storage::READ_CACHE_BYTES_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat period. Default 100 ms.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for the max (openraft's leader lease), then a random
    /// time in [min, max], starts an election: a vanished leader is replaced after
    /// `max + [min, max]`. Defaults 300 and 600 ms (0.9-1.2 s to replace a
    /// leader; 500 and 1000 before 2026-12-07, 1.5-2 s, which `scripts/partition.sh` measured as
    /// the write gap of an isolated leader): still 3 and 6 heartbeats, so one lost packet
    /// does not depose a leader; the simulation has always run with them.
    /// The max is also the lease of `app::quorum_contact`: a leader no quorum acknowledged for
    /// that long, or a follower that heard no leader for that long, answers clients 503 at once.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot every this many applied entries (and, independently, when the log's
    /// files pass `snapshot_log_bytes`). Default 100,000 (etcd's default snapshot count). A
    /// snapshot rewrites the whole state, so a state larger than a quarter of
    /// `snapshot_log_bytes` waits until the log is at least as large as the newest snapshot
    /// (`node::SnapshotPolicy`).
    pub snapshot_every_entries: u64,
    /// Also build one when the Raft log's files pass this many bytes (large entries reach it
    /// before the entry count does). Default 64 MiB.
    pub snapshot_log_bytes: u64,
    /// How long one snapshot chunk may take to send, and the last one to send and install on
    /// the follower (a large state takes seconds to load). A timeout restarts the transfer.
    /// Default 60 000 ms.
    pub install_snapshot_timeout_ms: u64,
    /// Entries kept in the log behind a snapshot, so a briefly lagging follower catches up from
    /// the log instead of a full snapshot. Default 1000.
    pub log_entries_kept_after_snapshot: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_entries: 100_000,
            snapshot_log_bytes: 64 << 20,
            install_snapshot_timeout_ms: 60_000,
            log_entries_kept_after_snapshot: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// How long a write waits for a leader (election, partition) before answering 503.
    /// Default 5000 ms.
    pub write_deadline_ms: u64,
    /// How long an idempotency key is remembered, in log time. Default 24 h.
    pub idempotency_ttl_ms: u64,
    /// Largest accepted request body; a larger one is 413 (the rest of it is read and discarded,
    /// within the bounds of `server::lingering`, so the client reads the 413). Default 64 KiB.
    pub body_limit_bytes: usize,
    /// Client requests this node handles at once; more are shed at once with 503 `OVERLOADED`
    /// and `Retry-After` (never queued). Default 512.
    pub max_in_flight_requests: usize,
    /// Client commands this node (as leader) has proposed to Raft and not yet answered; more are
    /// refused with 503 `OVERLOADED`, nothing proposed. Default 256.
    pub max_in_flight_proposals: usize,
    /// Longest a client request may take before it is answered 503 `TIMEOUT` (a write's outcome
    /// is then unknown: retry with its Idempotency-Key). Longer than `write_deadline_ms`, so it
    /// only catches what nothing else bounds. Default 30000 ms.
    pub request_timeout_ms: u64,
    /// Per-client (by IP) rate limit, requests per second; 0 (the default) turns it off. Over
    /// it: 429 `RATE_LIMITED` with `Retry-After`. The seed's `RATE_LIMIT_RPS`.
    pub rate_limit_rps: u32,
    /// Requests a client may send at once above the steady rate (token-bucket size); 0 means
    /// "equal to `rate_limit_rps`". The seed's `RATE_LIMIT_BURST`.
    pub rate_limit_burst: u32,
    /// Connections the client listener (or the only listener) holds open at once; past it the
    /// node stops accepting until one closes. Default 10,000.
    pub max_connections: usize,
    /// Connections the peer listener holds open at once (nodes and operators). Default 1,024.
    pub max_peer_connections: usize,
    /// A connection must send a whole request head within this time of being ready for one
    /// (also between keep-alive requests), and finish a TLS handshake within it, or it is
    /// closed: a slow-loris holds a slot this long at most. Default 10,000 ms.
    pub header_read_timeout_ms: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            write_deadline_ms: 5_000,
            idempotency_ttl_ms: 24 * 60 * 60 * 1000,
            body_limit_bytes: 64 * 1024,
            max_in_flight_requests: 512,
            max_in_flight_proposals: 256,
            request_timeout_ms: 30_000,
            rate_limit_rps: 0,
            rate_limit_burst: 0,
            max_connections: 10_000,
            max_peer_connections: 1_024,
            header_read_timeout_ms: 10_000,
        }
    }
}

/// Reservations (`[reservations]`): holds and carts (`inventory::reservation`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationsConfig {
    /// How long a cart is held when its request names no TTL, in seconds. From 1 s to 7 days
    /// (the bounds of any hold). Default 900 (15 minutes).
    pub default_ttl_s: u64,
    /// How often the leader looks for holds past their deadline and proposes their expiry
    /// (`app::expiry`), in ms: a hold expires within about this long (plus one commit) of its
    /// deadline. From 10 ms to 60,000 ms. Default 250.
    pub expiry_interval_ms: u64,
    /// While clients are writing, the leader expires at most this many holds per second
    /// (`app::expiry`: a storm of holds due together must not stall writes); an idle leader
    /// expires them as fast as the log takes them. From 100 to 1,000,000. Default 1,000.
    pub expiry_per_second_under_load: u64,
}

/// Bounds of `reservations.expiry_per_second_under_load`.
pub const EXPIRY_PER_SECOND_MIN: u64 = 100;
pub const EXPIRY_PER_SECOND_MAX: u64 = 1_000_000;

/// Shortest `reservations.expiry_interval_ms` accepted: more often only spins the leader.
pub const EXPIRY_INTERVAL_MS_MIN: u64 = 10;
/// Longest `reservations.expiry_interval_ms` accepted: a hold must come back within about a
/// second of its deadline (issue 31); a minute is already far past that.
pub const EXPIRY_INTERVAL_MS_MAX: u64 = 60_000;

impl ReservationsConfig {
    /// [`Self::default_ttl_s`] in ms: what a cart without a TTL is held for.
    pub fn default_ttl_ms(&self) -> u64 {
        self.default_ttl_s.saturating_mul(1_000)
    }
}

impl Default for ReservationsConfig {
    fn default() -> Self {
        Self {
            default_ttl_s: 900,
            expiry_interval_ms: 250,
            expiry_per_second_under_load: 1_000,
        }
    }
}

/// The event feed (`[events]`): what is kept (`raft::events`) and how streams are served.
///
/// `kept_max` and `retention_s` decide replicated state (which events a node keeps): every node
/// of a cluster must have the same, as they share this file. Seqs never depend on them, only
/// which old events answer 410 Gone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Most events kept: whole chunks of 64 are forgotten from the oldest past it. At least 64.
    /// Default 1,000,000.
    pub kept_max: u64,
    /// Events older than this (log time) are forgotten, in seconds. At least 1. Default
    /// 604,800 (7 days).
    pub retention_s: u64,
    /// A stream subscriber that reads too slowly is disconnected (it resumes from its last id),
    /// so a slow consumer cannot hold a connection forever: when, while its socket is full, it
    /// is more than this many events further behind the head than the least it has been since
    /// it connected (`app::event_stream`; a subscriber starting far back may catch up at its
    /// own pace). Its memory is bounded whatever this is. At least 1. Default 10,000.
    pub stream_backlog_max: u64,
    /// Streams a node serves at once; one more is refused with 503. At least 1. Default 1,000.
    pub subscribers_max: usize,
    /// A stream sends a keep-alive comment (carrying the head seq) after this long without an
    /// event, in ms. From 100 to 300,000. Default 15,000.
    pub keep_alive_ms: u64,
    /// A node's stream subscribers at the head are woken at most this often, in ms, each time
    /// with every event applied meanwhile (`app::recent_feed`): longer costs a little delivery
    /// delay and saves each subscriber a wake-up, a write and its reader a read per interval.
    /// From 1 to 1,000. Default 20.
    pub stream_interval_ms: u64,
}

/// Fewest events `events.kept_max` may keep: one chunk (`raft::events::EVENTS_PER_CHUNK`).
pub const EVENTS_KEPT_MIN: u64 = 64;

impl EventsConfig {
    pub fn retention_ms(&self) -> u64 {
        self.retention_s.saturating_mul(1_000)
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            kept_max: 1_000_000,
            retention_s: 7 * 24 * 60 * 60,
            stream_backlog_max: 10_000,
            subscribers_max: 1_000,
            keep_alive_ms: 15_000,
            stream_interval_ms: 20,
        }
    }
}

/// The node's async runtime (`[runtime]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads that run the node's tasks: HTTP, Raft, apply. Blocking file work (log syncs,
    /// snapshot files, the key index build) runs on a pool beside them either way. 1, the
    /// default, runs them all on one thread (tokio's current-thread scheduler): on this
    /// project's 2-core machine, shared by three nodes and a load generator, that cut CPU per
    /// write by about a third against two workers, because a task woken on another worker
    /// costs a cross-CPU wake-up and a context switch, dear in a VM (docs/performance.md).
    /// More than 1: tokio's multi-thread scheduler with that many workers, for a node with
    /// cores of its own to spare (one thread then bounds it to one core's worth of requests).
    pub worker_threads: usize,
}

/// `runtime.worker_threads` unless configured.
pub const WORKER_THREADS_DEFAULT: usize = 1;
/// Most `runtime.worker_threads` accepted.
pub const WORKER_THREADS_MAX: usize = 256;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            worker_threads: WORKER_THREADS_DEFAULT,
        }
    }
}

impl Config {
    /// Reads `path`, applies the environment, resolves the data directory and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_secret_file(path, None)
    }

    /// [`Config::load`], with the secret read from `secret_file` when given (`--secret-file`,
    /// which wins over every other source of the secret).
    pub fn load_with_secret_file(
        path: &Path,
        secret_file: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            message: error.to_string(),
        })?;
        let mut config = Self::parse(&text)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.storage.data_dir.is_relative() {
            config.storage.data_dir = base.join(&config.storage.data_dir);
        }
        if let Some(dir) = config.backup.dir.as_mut().filter(|dir| dir.is_relative()) {
            *dir = base.join(&*dir);
        }
        let relative_to_base = |file: &mut PathBuf| {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        };
        match secret_file {
            Some(file) => config.cluster.secret_file = Some(file.to_owned()),
            None => config
                .cluster
                .secret_file
                .iter_mut()
                .for_each(relative_to_base),
        }
        let tls = &mut config.tls;
        for file in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file] {
            file.iter_mut().for_each(relative_to_base);
        }
        config.read_secret_file()?;
        config.validate()?;
        Ok(config)
    }

    /// Replaces `cluster.secret` with the contents of `cluster.secret_file`, if one is set.
    fn read_secret_file(&mut self) -> Result<(), ConfigError> {
        let Some(file) = &self.cluster.secret_file else {
            return Ok(());
        };
        let text = std::fs::read_to_string(file).map_err(|error| ConfigError::Read {
            path: file.display().to_string(),
            message: error.to_string(),
        })?;
        self.cluster.secret = text.trim_end().to_owned();
        Ok(())
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Invalid(error.to_string()))
    }

    /// Overrides from the environment; `lookup` is `std::env::var` in the product. Besides
    /// `STOCKRAFT_*`, the seed's own variables that have an equivalent here are honoured
    /// (README, "Differences from the seed", lists the others).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let number = |name: &str| -> Result<Option<u64>, ConfigError> {
            lookup(name)
                .map(|value| {
                    value.trim().parse::<u64>().map_err(|_| {
                        ConfigError::Invalid(format!(
                            "{name} must be a whole number, got {value:?}"
                        ))
                    })
                })
                .transpose()
        };
        if let Some(ttl_ms) = number(SEED_IDEMPOTENCY_TTL_ENV)? {
            self.api.idempotency_ttl_ms = ttl_ms;
        }
        if let Some(every) = number(SEED_SNAPSHOT_EVERY_ENV)? {
            self.raft.snapshot_every_entries = every;
        }
        let small = |name: &str| -> Result<Option<u32>, ConfigError> {
            number(name)?
                .map(|value| {
                    u32::try_from(value)
                        .map_err(|_| ConfigError::Invalid(format!("{name} is too large")))
                })
                .transpose()
        };
        if let Some(rps) = small(SEED_RATE_LIMIT_RPS_ENV)? {
            self.api.rate_limit_rps = rps;
        }
        if let Some(burst) = small(SEED_RATE_LIMIT_BURST_ENV)? {
            self.api.rate_limit_burst = burst;
        }
        if let Some(secret) = lookup(SECRET_ENV) {
            self.cluster.secret = secret;
        }
        // Paths from the environment are relative to the working directory, like a shell's.
        let from_cwd = |path: String| std::path::absolute(&path).unwrap_or_else(|_| path.into());
        if let Some(file) = lookup(SECRET_FILE_ENV).filter(|f| !f.is_empty()) {
            self.cluster.secret_file = Some(from_cwd(file));
        }
        if let Some(token) = lookup(CLIENT_TOKEN_ENV) {
            self.cluster.client_token = Some(token).filter(|t| !t.is_empty());
        }
        for (name, file) in [
            (TLS_CA_ENV, &mut self.tls.ca_file),
            (TLS_CERT_ENV, &mut self.tls.cert_file),
            (TLS_KEY_ENV, &mut self.tls.key_file),
        ] {
            if let Some(path) = lookup(name).filter(|p| !p.is_empty()) {
                *file = Some(from_cwd(path));
            }
        }
        if let Some(dir) = lookup(DATA_DIR_ENV) {
            self.storage.data_dir = PathBuf::from(dir);
        }
        if let Some(backlog) = number(EVENTS_STREAM_BACKLOG_MAX_ENV)? {
            self.events.stream_backlog_max = backlog;
        }
        if let Some(subscribers) = number(EVENTS_SUBSCRIBERS_MAX_ENV)? {
            self.events.subscribers_max = usize::try_from(subscribers).map_err(|_| {
                ConfigError::Invalid(format!("{EVENTS_SUBSCRIBERS_MAX_ENV} is too large"))
            })?;
        }
        if let Some(keep_alive_ms) = number(EVENTS_KEEP_ALIVE_MS_ENV)? {
            self.events.keep_alive_ms = keep_alive_ms;
        }
        Ok(())
    }

    /// Refuses a configuration a node cannot run with, naming the first field at fault; the
    /// checks run in this order.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_secrets()?;
        self.validate_tokens()?;
        self.validate_nodes()?;
        self.validate_limits()?;
        self.validate_tls()?;
        self.validate_space()?;
        self.openraft_config()?;
        Ok(())
    }

    fn validate_secrets(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.cluster.secret.is_empty() {
            return invalid(format!(
                "no cluster secret: set {SECRET_FILE_ENV} (or --secret-file), {SECRET_ENV}, or \
                 cluster.secret_file in the configuration (scripts/cluster.sh up makes one)"
            ));
        }
        for secret in std::iter::once(&self.cluster.secret).chain(&self.cluster.accepted_secrets) {
            if secret.len() < SECRET_BYTES_MIN {
                return invalid(format!(
                    "cluster secrets (secret, accepted_secrets) must be at least \
                     {SECRET_BYTES_MIN} bytes"
                ));
            }
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), ConfigError> {
        let invalid = |message: &str| Err(ConfigError::Invalid(message.into()));
        if self.nodes.is_empty() {
            return invalid("at least one [[nodes]] entry is required");
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.nodes.len() {
            return invalid("node ids must be unique");
        }
        if self.nodes.iter().any(|n| n.id == 0) {
            return invalid("node id 0 is reserved");
        }
        Ok(())
    }

    /// The storage, runtime and API limits.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.storage.wal_segment_bytes < 4096 {
            return invalid("storage.wal_segment_bytes must be at least 4096".into());
        }
        if self.storage.cache_bytes < 1024 * 1024 {
            return invalid("storage.cache_bytes must be at least 1048576 (1 MiB)".into());
        }
        if !(1..=WORKER_THREADS_MAX).contains(&self.runtime.worker_threads) {
            return invalid(format!(
                "runtime.worker_threads must be 1 to {WORKER_THREADS_MAX}"
            ));
        }
        self.validate_api_limits()?;
        self.validate_reservations()?;
        self.validate_events()?;
        self.validate_backup()
    }

    fn validate_backup(&self) -> Result<(), ConfigError> {
        let backup = &self.backup;
        if !(1..=BACKUP_INTERVAL_S_MAX).contains(&backup.interval_s) {
            return Err(ConfigError::Invalid(format!(
                "backup.interval_s must be 1 to {BACKUP_INTERVAL_S_MAX}"
            )));
        }
        if backup.keep == 0 {
            return Err(ConfigError::Invalid(
                "backup.keep must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_events(&self) -> Result<(), ConfigError> {
        let events = &self.events;
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if events.kept_max < EVENTS_KEPT_MIN {
            return invalid(format!(
                "events.kept_max must be at least {EVENTS_KEPT_MIN}"
            ));
        }
        if events.retention_s == 0 {
            return invalid("events.retention_s must be at least 1".into());
        }
        if events.stream_backlog_max == 0 || events.subscribers_max == 0 {
            return invalid(
                "events.stream_backlog_max and events.subscribers_max must be at least 1".into(),
            );
        }
        if !(100..=300_000).contains(&events.keep_alive_ms) {
            return invalid("events.keep_alive_ms must be 100 to 300000".into());
        }
        if !(1..=1_000).contains(&events.stream_interval_ms) {
            return invalid("events.stream_interval_ms must be 1 to 1000".into());
        }
        Ok(())
    }

    fn validate_reservations(&self) -> Result<(), ConfigError> {
        let reservations = &self.reservations;
        let ttl_ms = reservations.default_ttl_ms();
        let (ttl_min, ttl_max) = (
            crate::inventory::HOLD_TTL_MS_MIN,
            crate::inventory::HOLD_TTL_MS_MAX,
        );
        if !(ttl_min..=ttl_max).contains(&ttl_ms) {
            return Err(ConfigError::Invalid(format!(
                "reservations.default_ttl_s must be {} to {}",
                ttl_min / 1_000,
                ttl_max / 1_000
            )));
        }
        let interval = reservations.expiry_interval_ms;
        if !(EXPIRY_INTERVAL_MS_MIN..=EXPIRY_INTERVAL_MS_MAX).contains(&interval) {
            return Err(ConfigError::Invalid(format!(
                "reservations.expiry_interval_ms must be {EXPIRY_INTERVAL_MS_MIN} to \
                 {EXPIRY_INTERVAL_MS_MAX}"
            )));
        }
        let rate = reservations.expiry_per_second_under_load;
        if !(EXPIRY_PER_SECOND_MIN..=EXPIRY_PER_SECOND_MAX).contains(&rate) {
            return Err(ConfigError::Invalid(format!(
                "reservations.expiry_per_second_under_load must be {EXPIRY_PER_SECOND_MIN} to \
                 {EXPIRY_PER_SECOND_MAX}"
            )));
        }
        Ok(())
    }

    fn validate_api_limits(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let api = &self.api;
        if api.write_deadline_ms == 0 || api.body_limit_bytes == 0 {
            return invalid(
                "api.write_deadline_ms and api.body_limit_bytes must be positive".into(),
            );
        }
        if api.max_in_flight_requests == 0 || api.max_in_flight_proposals == 0 {
            return invalid(
                "api.max_in_flight_requests and api.max_in_flight_proposals must be positive"
                    .into(),
            );
        }
        if api.request_timeout_ms <= api.write_deadline_ms {
            return invalid(format!(
                "api.request_timeout_ms ({}) must be longer than api.write_deadline_ms ({})",
                api.request_timeout_ms, api.write_deadline_ms
            ));
        }
        if api.max_connections == 0
            || api.max_peer_connections == 0
            || api.header_read_timeout_ms == 0
        {
            return invalid(
                "api.max_connections, api.max_peer_connections and api.header_read_timeout_ms \
                 must be positive"
                    .into(),
            );
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let tls = &self.tls;
        let set = [&tls.ca_file, &tls.cert_file, &tls.key_file]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if set != 0 && set != 3 {
            return Err(ConfigError::Invalid(
                "[tls] needs ca_file, cert_file and key_file together (or none of them)".into(),
            ));
        }
        Ok(())
    }

    /// The disk-space alarm's limits (`space`).
    fn validate_space(&self) -> Result<(), ConfigError> {
        if self.storage.quota_bytes == 0 || self.storage.free_bytes_min == 0 {
            return Err(ConfigError::Invalid(
                "storage.quota_bytes and storage.free_bytes_min must be positive".into(),
            ));
        }
        Ok(())
    }

    fn validate_tokens(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        let tokens: Vec<_> = self.cluster.tokens().collect();
        for (i, token) in tokens.iter().enumerate() {
            let name_ok = !token.name.is_empty()
                && token.name.len() <= 64
                && token
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !name_ok {
                return invalid(format!(
                    "client token name {:?}: 1-64 characters of A-Z a-z 0-9 - _ .",
                    token.name
                ));
            }
            if token.token.len() < SECRET_BYTES_MIN {
                return invalid(format!(
                    "client token {:?} must be at least {SECRET_BYTES_MIN} bytes",
                    token.name
                ));
            }
            if token.scopes.is_empty() {
                return invalid(format!("client token {:?} has no scopes", token.name));
            }
            if tokens[..i]
                .iter()
                .any(|other| other.name == token.name || other.token == token.token)
            {
                return invalid(format!(
                    "client token {:?}: names and tokens must be unique (the legacy \
                     client_token is named \"default\")",
                    token.name
                ));
            }
        }
        Ok(())
    }

    /// Checks what only matters once a node's listen addresses are known: off loopback the
    /// secret must be strong (not the once-committed default, 16 bytes or more), and client
    /// routes must not be open unless the operator said so (`--insecure-open-client`).
    /// Returns the warnings to log loudly.
    pub fn check_exposure(
        &self,
        peer_addr: &str,
        client_addr: &str,
        insecure_open_client: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        let exposed = !is_loopback(peer_addr) || !is_loopback(client_addr);
        if exposed {
            for secret in
                std::iter::once(&self.cluster.secret).chain(&self.cluster.accepted_secrets)
            {
                if secret == KNOWN_DEFAULT_SECRET || secret.len() < EXPOSED_SECRET_BYTES_MIN {
                    return Err(ConfigError::Invalid(format!(
                        "this node listens off loopback ({peer_addr}, {client_addr}): its \
                         cluster secrets must be at least {EXPOSED_SECRET_BYTES_MIN} bytes and \
                         not the example one; generate one (e.g. `openssl rand -hex 32 > \
                         secret`) and pass it with --secret-file"
                    )));
                }
            }
        }
        if !is_loopback(client_addr) && !self.cluster.client_routes_closed() {
            if !insecure_open_client {
                return Err(ConfigError::Invalid(format!(
                    "client routes would be open to anyone reaching {client_addr}: configure \
                     [[cluster.client_tokens]] (or {CLIENT_TOKEN_ENV}), or start with \
                     --insecure-open-client to accept that"
                )));
            }
            warnings.push(format!(
                "INSECURE: client routes on {client_addr} are open to anyone who can reach \
                 them (--insecure-open-client): any caller can create, adjust and reserve stock"
            ));
        }
        Ok(warnings)
    }

    pub fn node(&self, id: u64) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node that initialises a fresh cluster: the initial voter with the smallest id.
    pub fn bootstrap_node_id(&self) -> u64 {
        self.nodes.iter().map(|n| n.id).min().unwrap_or(0)
    }

    pub fn data_dir_for(&self, id: u64) -> PathBuf {
        self.storage.data_dir.join(format!("node-{id}"))
    }

    /// The openraft configuration derived from `[raft]`, validated by openraft itself.
    pub fn openraft_config(&self) -> Result<Arc<openraft::Config>, ConfigError> {
        let raft = &self.raft;
        let config = openraft::Config {
            cluster_name: "stockraft".into(),
            heartbeat_interval: raft.heartbeat_interval_ms,
            election_timeout_min: raft.election_timeout_min_ms,
            election_timeout_max: raft.election_timeout_max_ms,
            // Snapshots are asked for by `node::SnapshotPolicy`, which also weighs their cost.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: raft.log_entries_kept_after_snapshot,
            install_snapshot_timeout: raft.install_snapshot_timeout_ms,
            enable_pre_vote: Some(true),
            // A restarted leader must win a new election (and commit a blank entry of its new
            // term) before it serves anything: neither the committed index nor the state
            // machine is synced on its own, so a leader restored without an election could
            // compute a read index below a write it had already acknowledged. See
            // ARCHITECTURE.md, "What is persisted when".
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        let config = config
            .validate()
            .map_err(|error| ConfigError::Invalid(format!("[raft]: {error}")))?;
        Ok(Arc::new(config))
    }
}

/// Whether `addr` (`host:port`) names a loopback interface. A name other than `localhost`
/// counts as exposed: it may resolve anywhere.
pub fn is_loopback(addr: &str) -> bool {
    if let Ok(socket) = addr.parse::<std::net::SocketAddr>() {
        return socket.ip().is_loopback();
    }
    addr.rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [cluster]
        secret = "file-secret"
        [[nodes]]
        id = 1
        addr = "127.0.0.1:1"
        [[nodes]]
        id = 2
        addr = "127.0.0.1:2"
    "#;

    #[test]
    fn defaults_fill_missing_sections_and_env_overrides_the_file() {
        let mut config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.api.write_deadline_ms, 5_000);
        assert_eq!(config.runtime.worker_threads, WORKER_THREADS_DEFAULT);
        assert_eq!(config.storage.quota_bytes, QUOTA_BYTES_DEFAULT);
        assert_eq!(config.storage.free_bytes_min, FREE_BYTES_MIN_DEFAULT);
        assert_eq!(
            config.storage.cache_bytes,
            crate::storage::CACHE_BYTES_DEFAULT
        );
        assert_eq!(
            config.storage.read_cache_bytes,
            crate::storage::READ_CACHE_BYTES_DEFAULT
        );
        config
            .apply_env(|name| (name == SECRET_ENV).then(|| "env-secret-123".to_owned()))
            .unwrap();
        assert_eq!(config.cluster.secret, "env-secret-123");
        assert!(config.validate().is_ok());
        assert_eq!(config.bootstrap_node_id(), 1);
    }

    #[test]
    fn scheduled_backups_are_off_by_default_and_their_settings_are_validated() {
        let config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.backup.dir, None);
        assert!(config.validate().is_ok());
        let with = |section: &str| {
            Config::parse(&format!("{SAMPLE}\n[backup]\n{section}"))
                .unwrap()
                .validate()
        };
        assert!(with("dir = \"b\"\ninterval_s = 60\nkeep = 3").is_ok());
        for refused in ["interval_s = 0", "interval_s = 604801", "keep = 0"] {
            let error = with(refused).unwrap_err().to_string();
            assert!(error.contains("backup."), "{refused}: {error}");
        }
        // A relative dir is relative to the configuration file.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, format!("{SAMPLE}\n[backup]\ndir = \"backups\"\n")).unwrap();
        let loaded = Config::load(&path).unwrap();
        assert_eq!(loaded.backup.dir, Some(dir.path().join("backups")));
    }

    #[test]
    fn reservations_default_to_fifteen_minute_carts_and_a_quarter_second_expiry_tick() {
        let mut config = Config::parse(SAMPLE).unwrap();
        assert_eq!(config.reservations.default_ttl_s, 900);
        assert_eq!(config.reservations.default_ttl_ms(), 900_000);
        assert_eq!(config.reservations.expiry_interval_ms, 250);
        config.cluster.secret = "a-secret-of-16-bytes".into();
        assert!(config.validate().is_ok());
        assert_eq!(config.reservations.expiry_per_second_under_load, 1_000);
        for (ttl_s, interval_ms, per_second) in [
            (0, 250, 1_000),
            (7 * 24 * 3_600 + 1, 250, 1_000),
            (900, 9, 1_000),
            (900, 60_001, 1_000),
            (900, 250, 99),
            (900, 250, 1_000_001),
        ] {
            config.reservations.default_ttl_s = ttl_s;
            config.reservations.expiry_interval_ms = interval_ms;
            config.reservations.expiry_per_second_under_load = per_second;
            let refused = config.validate().unwrap_err().to_string();
            assert!(refused.contains("reservations."), "{refused}");
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret_or_the_client_token() {
        let mut config = Config::parse(SAMPLE).unwrap();
        config.cluster.client_token = Some("token-value-xyz".into());
        let printed = format!("{config:?}");
        assert!(!printed.contains("file-secret"), "{printed}");
        assert!(!printed.contains("token-value-xyz"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn the_seeds_own_variables_are_honoured_where_they_have_an_equivalent() {
        let mut config = Config::parse(SAMPLE).unwrap();
        let env = |name: &str| match name {
            SEED_IDEMPOTENCY_TTL_ENV => Some("300000".to_owned()),
            SEED_SNAPSHOT_EVERY_ENV => Some("100".to_owned()),
            SEED_RATE_LIMIT_RPS_ENV => Some("50".to_owned()),
            SEED_RATE_LIMIT_BURST_ENV => Some("80".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.api.idempotency_ttl_ms, 300_000);
        assert_eq!(config.raft.snapshot_every_entries, 100);
        assert_eq!(
            (config.api.rate_limit_rps, config.api.rate_limit_burst),
            (50, 80)
        );
        let garbage = |name: &str| (name == SEED_IDEMPOTENCY_TTL_ENV).then(|| "5m".to_owned());
        let error = Config::parse(SAMPLE)
            .unwrap()
            .apply_env(garbage)
            .unwrap_err();
        assert!(
            error.to_string().contains(SEED_IDEMPOTENCY_TTL_ENV),
            "{error}"
        );
    }

    #[test]
    fn the_event_streams_limits_come_from_the_environment_too() {
        let mut config = Config::parse(SAMPLE).unwrap();
        let env = |name: &str| match name {
            EVENTS_STREAM_BACKLOG_MAX_ENV => Some("500".to_owned()),
            EVENTS_SUBSCRIBERS_MAX_ENV => Some("20".to_owned()),
            EVENTS_KEEP_ALIVE_MS_ENV => Some("1000".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        let events = &config.events;
        assert_eq!(
            (
                events.stream_backlog_max,
                events.subscribers_max,
                events.keep_alive_ms
            ),
            (500, 20, 1_000)
        );
        let zero = |name: &str| (name == EVENTS_SUBSCRIBERS_MAX_ENV).then(|| "0".to_owned());
        let mut config = Config::parse(SAMPLE).unwrap();
        config.apply_env(zero).unwrap();
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("subscribers_max"), "{error}");
        for interval in [0, 1_001] {
            let mut config = Config::parse(SAMPLE).unwrap();
            config.events.stream_interval_ms = interval;
            let error = config.validate().unwrap_err();
            assert!(error.to_string().contains("stream_interval_ms"), "{error}");
        }
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        let unknown_field = SAMPLE.replace("[cluster]", "[cluster]\nsecrte = \"x\"");
        assert!(Config::parse(&unknown_field).is_err());
        let tiny_cache = SAMPLE.to_owned() + "[storage]\ncache_bytes = 65536\n";
        let error = Config::parse(&tiny_cache).unwrap().validate().unwrap_err();
        assert!(error.to_string().contains("storage.cache_bytes"), "{error}");
        for threads in [0, WORKER_THREADS_MAX + 1] {
            let text = format!("{SAMPLE}[runtime]\nworker_threads = {threads}\n");
            let error = Config::parse(&text).unwrap().validate().unwrap_err();
            assert!(
                error.to_string().contains("runtime.worker_threads"),
                "{error}"
            );
        }
        let short_secret = Config::parse(&SAMPLE.replace("file-secret", "short")).unwrap();
        assert!(short_secret.validate().is_err());
        let duplicate = Config::parse(&SAMPLE.replace("id = 2", "id = 1")).unwrap();
        assert!(duplicate.validate().is_err());
        let no_quota = SAMPLE.to_owned() + "[storage]\nquota_bytes = 0\n";
        assert!(Config::parse(&no_quota).unwrap().validate().is_err());
        let no_reserve = SAMPLE.to_owned() + "[storage]\nfree_bytes_min = 0\n";
        assert!(Config::parse(&no_reserve).unwrap().validate().is_err());
        let mut bad_timeouts = Config::parse(SAMPLE).unwrap();
        bad_timeouts.raft.election_timeout_min_ms = 50;
        bad_timeouts.raft.heartbeat_interval_ms = 100;
        assert!(bad_timeouts.validate().is_err());
        let no_slots = SAMPLE.to_owned() + "[api]\nmax_in_flight_requests = 0\n";
        assert!(Config::parse(&no_slots).unwrap().validate().is_err());
        let no_proposals = SAMPLE.to_owned() + "[api]\nmax_in_flight_proposals = 0\n";
        assert!(Config::parse(&no_proposals).unwrap().validate().is_err());
        // The request timeout must outlast the write deadline, or it would cut writes short.
        let short_timeout = SAMPLE.to_owned() + "[api]\nrequest_timeout_ms = 5000\n";
        let error = Config::parse(&short_timeout)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(error.to_string().contains("request_timeout_ms"), "{error}");
        for (name, value) in [
            (SEED_RATE_LIMIT_RPS_ENV, "ten"),
            (SEED_RATE_LIMIT_BURST_ENV, "5000000000"),
        ] {
            let error = Config::parse(SAMPLE)
                .unwrap()
                .apply_env(|asked| (asked == name).then(|| value.to_owned()))
                .unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn an_exposed_node_needs_a_strong_secret_and_tokens_or_an_explicit_waiver() {
        let mut config = Config::parse(SAMPLE).unwrap();
        config.cluster.secret = "a-strong-secret-0123456789".into();
        let loopback = "127.0.0.1:1";
        let exposed = "10.0.0.5:1";
        // Loopback: the quick start, anything valid goes.
        config.cluster.secret = KNOWN_DEFAULT_SECRET.into();
        assert!(config
            .check_exposure(loopback, "localhost:2", false)
            .is_ok());
        // Off loopback (either listener): no example secret, none under 16 bytes.
        for weak in [KNOWN_DEFAULT_SECRET, "fifteen-bytes-x"] {
            config.cluster.secret = weak.into();
            let error = config.check_exposure(exposed, loopback, false).unwrap_err();
            assert!(error.to_string().contains("16 bytes"), "{error}");
            assert!(config.check_exposure(loopback, exposed, true).is_err());
        }
        config.cluster.secret = "a-strong-secret-0123456789".into();
        // A weak secret still accepted during a rotation counts too.
        config.cluster.accepted_secrets = vec!["short-old-1".into()];
        assert!(config.check_exposure(exposed, loopback, false).is_err());
        config.cluster.accepted_secrets.clear();
        // Peers exposed, clients on loopback: fine without tokens.
        assert_eq!(
            config
                .check_exposure(exposed, loopback, false)
                .unwrap()
                .len(),
            0
        );
        // Clients exposed without tokens: refused, unless waived (then a loud warning).
        let error = config.check_exposure(loopback, exposed, false).unwrap_err();
        assert!(
            error.to_string().contains("--insecure-open-client"),
            "{error}"
        );
        let warnings = config.check_exposure(loopback, exposed, true).unwrap();
        assert!(warnings[0].contains("INSECURE"), "{warnings:?}");
        config.cluster.client_token = Some("shop-token-123".into());
        assert!(config
            .check_exposure(loopback, exposed, false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn loopback_means_a_loopback_ip_or_localhost() {
        for addr in [
            "127.0.0.1:1",
            "127.9.9.9:80",
            "[::1]:5",
            "localhost:9",
            "LOCALHOST:9",
        ] {
            assert!(is_loopback(addr), "{addr}");
        }
        for addr in [
            "0.0.0.0:1",
            "10.0.0.1:2",
            "[::]:3",
            "db.internal:4",
            "nonsense",
        ] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }

    #[test]
    fn the_secret_file_wins_and_tokens_tls_and_secrets_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, SAMPLE).unwrap();
        std::fs::write(dir.path().join("secret"), "from-the-file-123\n").unwrap();
        let config =
            Config::load_with_secret_file(&config_path, Some(&dir.path().join("secret"))).unwrap();
        assert_eq!(config.cluster.secret, "from-the-file-123");
        // `secret_file` in the configuration is relative to it.
        std::fs::write(
            &config_path,
            SAMPLE.replace("secret = \"file-secret\"", "secret_file = \"secret\""),
        )
        .unwrap();
        assert_eq!(
            Config::load(&config_path).unwrap().cluster.secret,
            "from-the-file-123"
        );
        let missing = Config::load_with_secret_file(&config_path, Some(Path::new("/no/such")));
        assert!(missing.unwrap_err().to_string().contains("/no/such"));

        let no_secret = Config::parse(&SAMPLE.replace("secret = \"file-secret\"", "")).unwrap();
        let error = no_secret.validate().unwrap_err();
        assert!(error.to_string().contains(SECRET_FILE_ENV), "{error}");

        let with = |extra: &str| {
            Config::parse(&(SAMPLE.to_owned() + extra))
                .unwrap()
                .validate()
        };
        let token = |name: &str, token: &str, scopes: &str| {
            format!(
                "[[cluster.client_tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\n\
                 scopes = [{scopes}]\n"
            )
        };
        assert!(with(&token("shop", "shop-token-1", "\"read\"")).is_ok());
        assert!(with(&token("shop", "short", "\"read\"")).is_err());
        assert!(with(&token("shop", "shop-token-1", "")).is_err());
        assert!(with(&token("bad name", "shop-token-1", "\"read\"")).is_err());
        assert!(
            Config::parse(&(SAMPLE.to_owned() + &token("s", "shop-token-1", "\"root\""))).is_err()
        );
        let twice =
            token("shop", "shop-token-1", "\"read\"") + &token("shop", "shop-token-2", "\"write\"");
        assert!(with(&twice).is_err());
        let same_token =
            token("a", "shop-token-1", "\"read\"") + &token("b", "shop-token-1", "\"write\"");
        assert!(with(&same_token).is_err());
        assert!(
            with("[tls]\nca_file = \"ca.pem\"\n").is_err(),
            "TLS needs all three files"
        );
        assert!(with("[tls]\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\n").is_ok());
        let tls = Config::parse(
            &(SAMPLE.to_owned() + "[tls]\nca_file = \"ca.pem\"\ncert_file = \"n-{id}.pem\"\nkey_file = \"k-{id}.pem\"\n"),
        )
        .unwrap();
        let files = tls.tls.files_for(7).unwrap();
        assert_eq!(files.cert, PathBuf::from("n-7.pem"));
        assert_eq!(files.key, PathBuf::from("k-7.pem"));
    }
}
