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
/// Environment variable that overrides `cluster.client_token`.
pub const CLIENT_TOKEN_ENV: &str = "STOCKRAFT_CLIENT_TOKEN";
/// Environment variable that overrides `storage.data_dir`.
pub const DATA_DIR_ENV: &str = "STOCKRAFT_DATA_DIR";
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
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Shared secret guarding Raft RPC and admin routes (header `x-stockraft-secret`).
    /// `STOCKRAFT_SECRET` wins over the file.
    #[serde(default)]
    pub secret: String,
    /// When set, client routes require `Authorization: Bearer <token>`. Default: open.
    #[serde(default)]
    pub client_token: Option<String>,
}

/// Secrets never reach a log line or a panic message through `{:?}`.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("secret", &"<redacted>")
            .field(
                "client_token",
                &self.client_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    /// `host:port` this node's HTTP server listens on and peers reach it at.
    pub addr: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Node `N` keeps its data in `<data_dir>/node-N`: the state machine (sled), the Raft log
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
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat period. Default 100 ms.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in [min, max] starts an election.
    /// Defaults 500 and 1000 ms: several heartbeats, so one lost packet does not depose a leader.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot every this many applied entries (and, independently, when the log's
    /// files pass `snapshot_log_bytes`). Default 100,000 (etcd's default snapshot count): a
    /// snapshot rewrites the whole state, so with a state of hundreds of MB (a million
    /// idempotency keys) a snapshot every few thousand entries would keep the disk busy
    /// rewriting it; every 100,000 entries it costs each write a few KB of sequential I/O.
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
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
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
    /// Largest accepted request body. Default 64 KiB.
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
        }
    }
}

impl Config {
    /// Reads `path`, applies the environment, resolves the data directory and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            message: error.to_string(),
        })?;
        let mut config = Self::parse(&text)?;
        config.apply_env(|name| std::env::var(name).ok())?;
        if config.storage.data_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.storage.data_dir = base.join(&config.storage.data_dir);
        }
        config.validate()?;
        Ok(config)
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
        if let Some(token) = lookup(CLIENT_TOKEN_ENV) {
            self.cluster.client_token = Some(token).filter(|t| !t.is_empty());
        }
        if let Some(dir) = lookup(DATA_DIR_ENV) {
            self.storage.data_dir = PathBuf::from(dir);
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if self.cluster.secret.len() < 8 {
            return invalid(format!(
                "cluster.secret (or {SECRET_ENV}) must be at least 8 characters"
            ));
        }
        if self.nodes.is_empty() {
            return invalid("at least one [[nodes]] entry is required".into());
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.nodes.len() {
            return invalid("node ids must be unique".into());
        }
        if self.nodes.iter().any(|n| n.id == 0) {
            return invalid("node id 0 is reserved".into());
        }
        if self.storage.wal_segment_bytes < 4096 {
            return invalid("storage.wal_segment_bytes must be at least 4096".into());
        }
        if self.api.write_deadline_ms == 0 || self.api.body_limit_bytes == 0 {
            return invalid(
                "api.write_deadline_ms and api.body_limit_bytes must be positive".into(),
            );
        }
        if self.api.max_in_flight_requests == 0 || self.api.max_in_flight_proposals == 0 {
            return invalid(
                "api.max_in_flight_requests and api.max_in_flight_proposals must be positive"
                    .into(),
            );
        }
        if self.api.request_timeout_ms <= self.api.write_deadline_ms {
            return invalid(format!(
                "api.request_timeout_ms ({}) must be longer than api.write_deadline_ms ({})",
                self.api.request_timeout_ms, self.api.write_deadline_ms
            ));
        }
        if self.storage.quota_bytes == 0 || self.storage.free_bytes_min == 0 {
            return invalid(
                "storage.quota_bytes and storage.free_bytes_min must be positive".into(),
            );
        }
        self.openraft_config()?;
        Ok(())
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
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(raft.snapshot_every_entries),
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
        assert_eq!(config.storage.quota_bytes, QUOTA_BYTES_DEFAULT);
        assert_eq!(config.storage.free_bytes_min, FREE_BYTES_MIN_DEFAULT);
        config
            .apply_env(|name| (name == SECRET_ENV).then(|| "env-secret-123".to_owned()))
            .unwrap();
        assert_eq!(config.cluster.secret, "env-secret-123");
        assert!(config.validate().is_ok());
        assert_eq!(config.bootstrap_node_id(), 1);
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
    fn bad_configurations_are_refused_with_a_reason() {
        let unknown_field = SAMPLE.replace("[cluster]", "[cluster]\nsecrte = \"x\"");
        assert!(Config::parse(&unknown_field).is_err());
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
}
