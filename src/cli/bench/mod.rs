//! `stockraft bench`: throughput and tail latency of reserves, against stockraft or etcd.
//!
//! Two scenarios, each one run per invocation:
//! - **hot**: one SKU with `--stock` units; `--clients` clients reserve 1 unit at a time until
//!   it runs out or `--seconds` pass. Afterwards the final stock is read and the oversell is
//!   reported: acknowledged reserves minus the stock that left (must be 0).
//! - **spread**: `--skus` SKUs with ample stock (created in batches, concurrently, so a million
//!   is practical); clients reserve 1 unit of a random SKU for `--seconds`.
//! - **hold** (stockraft only): as spread, but each reserve is a hold (`ttlSeconds`,
//!   [`HOLD_TTL_S`]): the figure to set beside spread's.
//! - **commit** (stockraft only): first an untimed phase of holds as in `hold` (up to
//!   `--seconds`), then the timed run: clients commit those holds, one each, until none is left
//!   or `--seconds` pass.
//!
//! - **failover** (stockraft only): keyed writers that retry each write until it is
//!   acknowledged, and `--readers` linearizable readers, while a script stops, restarts or
//!   cuts off nodes: acknowledged writes lost, stale reads, replica agreement and the longest
//!   write gap ([`failover`]); `--stop-file` ends it when the script is done.
//!
//! `--ops N` stops a run once N operations succeeded (a fixed amount of state, say a million
//! holds, rather than a time); `--hold-due-at-ms` gives each hold the TTL that makes it fall due
//! at one instant, so holds made over a minute all fall due in the same second (an expiry
//! storm: `scripts/bench.sh --holds`).
//!
//! `--batch SIZE` (stockraft only, spread): the reserves go as batches of SIZE lines
//! (`POST /api/inventory/batch`, `--batch-policy`), one batch per operation: ops/s and the
//! latency percentiles are per batch, and the report adds the lines committed per second
//! ([`batches`]).
//!
//! `--subscribers N` (stockraft only): N readers of the event feed's stream on the followers
//! during the run, each checked to receive every event in order, and the delay from a write's
//! acknowledgement to its event's arrival ([`subscribers`]).
//!
//! A logical reserve's latency includes its retries: stockraft retries a `503 NO_LEADER`
//! (nothing was applied); etcd, as its users do, reads the stock (a linearizable range), then
//! writes `qty - 1` in a transaction that compares the key's `mod_revision`, and re-reads and
//! retries when the compare fails. Latency percentiles are of the reserves that were served. A
//! reserve shed by an overloaded node (503 `OVERLOADED`) or a rate limit (429) is counted by
//! outcome, and its client waits the answer's `Retry-After` before the next one, as a
//! well-behaved client does. Clients spread over `--nodes` round-robin on one keep-alive
//! connection pool. Output: a table row and one `BENCH {json}` line per run (for scripts).

pub mod batches;
pub mod failover;
pub mod subscribers;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{json, Value};

use crate::client::wire::{codes, CreateBatchRequest, CreateRequest, ReserveRequest};
use crate::client::{Client, Consistency, WriteOptions};
use crate::transport::HttpTransport;
use batches::{spread_sku, BatchFigures, BatchLoad, BatchPolicy};
use subscribers::{Acks, Delivery, Subscribers};

/// Stock of each SKU in the spread scenario: never runs out within a run.
const SPREAD_STOCK: i64 = 1_000_000_000;
/// Concurrent setup requests (batch creates, etcd transactions).
const SETUP_CONCURRENCY: usize = 8;
/// Records per setup batch create: 200 requests for 100,000 SKUs. The route takes up to
/// `inventory::BATCH_LINES_MAX`, but builds before the batch route took at most 500 records
/// (`scripts/bench.sh --feed` runs this load generator against such a base build), and 8
/// concurrent creates of 10,000 records through the followers were answered 503 "the leader
/// did not answer in time" on a loaded 2-core machine (2026-12-07): a setup that fails
/// measures nothing.
const SETUP_BATCH_RECORDS: usize = 500;
/// Most operations in one etcd transaction (etcd's default `--max-txn-ops`).
const ETCD_TXN_OPS_MAX: usize = 128;
/// One request's bound: beyond a node's write deadline, so its own 503 arrives first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a reserve nothing happened to (no leader yet).
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Attempts of one logical reserve before it is counted as failed.
const ATTEMPTS_MAX: u32 = 100;
/// Runs at least this long get a progress bar.
const PROGRESS_BAR_AFTER_S: f64 = 3.0;
/// Latencies above this are recorded as this (the histogram's range).
const LATENCY_US_MAX: u64 = 60_000_000;
/// TTL of the holds of the hold and commit scenarios: longer than both phases of a run, so no
/// hold expires before it is committed.
const HOLD_TTL_S: u64 = 3_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Stockraft,
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Hot,
    Spread,
    Hold,
    Commit,
    Failover,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Nodes to drive (host:port, comma-separated); clients spread over them round-robin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<String>,
    #[arg(long, value_enum, default_value = "stockraft")]
    pub target: Target,
    #[arg(long, value_enum, default_value = "spread")]
    pub scenario: Scenario,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Time bound of the run.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// SKUs of the spread scenario.
    #[arg(long, default_value_t = 1_000)]
    pub skus: usize,
    /// Initial stock of the hot SKU.
    #[arg(long, default_value_t = 100_000)]
    pub stock: i64,
    /// Send an Idempotency-Key with every reserve (stockraft), as a careful shop would.
    #[arg(long)]
    pub keyed: bool,
    /// Client token (stockraft), when the cluster requires one.
    #[arg(long, env = "STOCKRAFT_CLIENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A name for this run in the output (e.g. "any-node", "leader").
    #[arg(long, default_value = "")]
    pub label: String,
    /// Stop once this many operations succeeded (as well as after `--seconds`).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Hold and commit scenarios: give each hold the TTL that makes it fall due at this
    /// instant (Unix ms; the TTL is whole seconds, so within a second after it), instead of an
    /// hour. Many holds made over a while then fall due in the same second.
    #[arg(long)]
    pub hold_due_at_ms: Option<u64>,
    /// Readers of the event feed's stream (stockraft), opened on the nodes that do not lead
    /// before the load starts; each must receive every event, in order, by the end.
    #[arg(long, default_value_t = 0)]
    pub subscribers: usize,
    /// Spread scenario (stockraft): send the reserves as batches of this many lines, one batch
    /// per operation (`POST /api/inventory/batch`).
    #[arg(long)]
    pub batch: Option<usize>,
    /// With `--batch`: all lines or none (`reject-everything`, the route's default), or each
    /// line on its own (`reject-failed-lines`).
    #[arg(long, value_enum, default_value_t)]
    pub batch_policy: BatchPolicy,
    /// Failover scenario: linearizable readers beside the `--clients` writers.
    #[arg(long, default_value_t = 0)]
    pub readers: usize,
    /// Failover scenario: end the run once this file exists (before `--seconds` if sooner).
    #[arg(long)]
    pub stop_file: Option<std::path::PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub target: Target,
    pub scenario: Scenario,
    pub label: String,
    pub clients: usize,
    pub nodes: usize,
    pub skus: usize,
    pub seconds: f64,
    /// Reserves that succeeded.
    pub ok: u64,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Final outcome of every logical reserve, by name (HTTP status or etcd result).
    pub outcomes: BTreeMap<String, u64>,
    /// Extra attempts (stockraft: no leader yet; etcd: failed compares).
    pub retries: u64,
    /// Hot scenario: acknowledged reserves minus the stock that left. Must be 0 (or below, by
    /// at most the number of unknown outcomes).
    pub oversell: Option<i64>,
    /// `--subscribers`: what the feed's readers received, and how soon.
    #[serde(flatten)]
    pub delivery: Option<Delivery>,
    /// `--batch`: the lines applied and failed, and lines per second.
    #[serde(flatten)]
    pub batch: Option<BatchFigures>,
}

/// Runs one benchmark and prints its table row and JSON line.
pub async fn run(args: BenchArgs) -> anyhow::Result<i32> {
    if args.nodes.is_empty() || args.clients == 0 || args.seconds <= 0.0 || args.skus == 0 {
        bail!("--nodes, --clients, --seconds and --skus must be positive");
    }
    if args.ops == Some(0) {
        bail!("--ops must be positive");
    }
    let holds = matches!(args.scenario, Scenario::Hold | Scenario::Commit);
    if holds && args.target == Target::Etcd {
        bail!("the hold and commit scenarios are stockraft's (etcd has no holds)");
    }
    if args.hold_due_at_ms.is_some() && !holds {
        bail!("--hold-due-at-ms is for the hold and commit scenarios");
    }
    if args.subscribers > 0 && args.target == Target::Etcd {
        bail!("--subscribers reads stockraft's event feed");
    }
    if args.batch.is_some() && (args.target, args.scenario) != (Target::Stockraft, Scenario::Spread)
    {
        bail!("--batch sends stockraft batches in the spread scenario");
    }
    if args.batch.is_some() && args.subscribers > 0 {
        bail!("--batch and --subscribers are not measured together");
    }
    if args.scenario == Scenario::Failover {
        return run_failover(&args).await;
    }
    let stockraft = Arc::new(Stockraft::new(&args)?);
    let driver: Arc<dyn Driver> = match args.target {
        Target::Stockraft => stockraft.clone(),
        Target::Etcd => Arc::new(Etcd::new(&args)?),
    };
    let run_id = new_run_id();
    let skus: Vec<String> = match args.scenario {
        Scenario::Hot => vec!["hot".to_owned()],
        Scenario::Spread | Scenario::Hold | Scenario::Commit | Scenario::Failover => {
            (0..args.skus).map(spread_sku).collect()
        }
    };
    let stock = match args.scenario {
        Scenario::Hot => args.stock,
        Scenario::Spread | Scenario::Hold | Scenario::Commit | Scenario::Failover => SPREAD_STOCK,
    };
    let setup_started = Instant::now();
    driver
        .setup(&run_id, &skus, stock)
        .await
        .context("setting up the SKUs")?;
    eprintln!(
        "bench: {} {:?} set up {} SKU(s) in {:.1} s",
        driver.name(),
        args.scenario,
        skus.len(),
        setup_started.elapsed().as_secs_f64()
    );
    let skus = Arc::new(skus);
    let subscribers = match &stockraft.acks {
        Some(acks) => Some(
            Subscribers::connect(
                &stockraft.clients,
                stockraft.http.clone(),
                args.token.clone(),
                args.subscribers,
                acks.clone(),
            )
            .await?,
        ),
        None => None,
    };
    if args.scenario == Scenario::Commit {
        let holding = drive(&args, driver.clone(), &run_id, skus.clone(), stock).await?;
        eprintln!(
            "bench: {} holds to commit ({:.0}/s)",
            holding.ok, holding.ops_per_sec
        );
        stockraft.start_committing();
    }
    let mut report = drive(&args, driver.clone(), &run_id, skus, stock).await?;
    report.batch = stockraft
        .batch
        .as_ref()
        .map(|batch| batch.figures(report.seconds));
    if let Some(subscribers) = subscribers {
        report.delivery = Some(subscribers.finish(&stockraft.clients[0]).await?);
    }
    print_report(&report);
    let oversold = report.oversell.is_some_and(|o| o > 0);
    let missed = report.delivery.as_ref().is_some_and(|d| !d.complete());
    Ok(if oversold || missed { 1 } else { 0 })
}

/// A name for this run's store (its records stay apart from other runs' on the same cluster).
fn new_run_id() -> String {
    format!(
        "b{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 1_000_000_000)
    )
}

/// The failover scenario ([`failover`]): one SKU per writer, then the writers and readers.
async fn run_failover(args: &BenchArgs) -> anyhow::Result<i32> {
    if args.target != Target::Stockraft {
        bail!("the failover scenario is stockraft's");
    }
    let stockraft = Stockraft::new(args)?;
    let load = failover::FailoverLoad {
        run_id: new_run_id(),
        writers: args.clients,
        readers: args.readers,
        seconds: args.seconds,
        stop_file: args.stop_file.clone(),
    };
    let report = failover::run(load, stockraft.clients.clone()).await?;
    failover::print_report(&report);
    Ok(if report.kept_promises() { 0 } else { 1 })
}

/// What one logical reserve ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Reserved,
    OutOfStock,
    /// Nothing left to do (the commit scenario committed every hold): every client stops.
    Drained,
    /// Shed by an overloaded node (503 `OVERLOADED`) or over a rate limit (429): nothing was
    /// done, and the client waits `Retry-After` before its next reserve, as a well-behaved
    /// client would (retrying at once would only turn the bench into a 503 generator).
    Shed {
        name: String,
        retry_after: Duration,
    },
    /// Something else, by name (a status, an error code, a transport error).
    Other(String),
}

impl Outcome {
    fn name(&self) -> String {
        match self {
            Outcome::Reserved => "ok".into(),
            Outcome::OutOfStock => "out-of-stock".into(),
            Outcome::Drained => "drained".into(),
            Outcome::Shed { name, .. } | Outcome::Other(name) => name.clone(),
        }
    }
}

/// One system under test.
trait Driver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Creates `skus` with `stock` units each, under this run's namespace.
    fn setup<'a>(
        &'a self,
        run_id: &'a str,
        skus: &'a [String],
        stock: i64,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>>;
    /// One logical reserve of 1 unit through node `node`: its outcome and extra attempts.
    fn reserve<'a>(
        &'a self,
        node: usize,
        run_id: &'a str,
        sku: &'a str,
        sequence: u64,
    ) -> futures::future::BoxFuture<'a, (Outcome, u64)>;
    /// The stock of `sku` now (a linearizable read).
    fn stock<'a>(
        &'a self,
        run_id: &'a str,
        sku: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<i64>>;
}

/// What the clients of one run have seen so far, shared by all of them.
struct Tally {
    /// Latency of the reserves that were served, in microseconds.
    histogram: Mutex<Histogram<u64>>,
    outcomes: Mutex<BTreeMap<String, u64>>,
    retries: AtomicU64,
    /// A reserve found no stock, or `--ops` succeeded: every client stops.
    sold_out: AtomicBool,
    /// Operations that succeeded so far, and how many may (`--ops`).
    served: AtomicU64,
    ops_max: Option<u64>,
}

impl Tally {
    fn new(ops_max: Option<u64>) -> Self {
        Self {
            histogram: Mutex::new(
                Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static bounds"),
            ),
            outcomes: Mutex::default(),
            retries: AtomicU64::new(0),
            sold_out: AtomicBool::new(false),
            served: AtomicU64::new(0),
            ops_max,
        }
    }

    fn sold_out(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed)
    }

    /// One logical reserve that took `latency_us` and `extra` attempts beyond the first.
    fn record(&self, outcome: &Outcome, latency_us: u64, extra: u64) {
        // Latency is of the reserves that were served (a shed answer is not one).
        if *outcome == Outcome::Reserved {
            self.histogram
                .lock()
                .expect("histogram lock")
                .saturating_record(latency_us.clamp(1, LATENCY_US_MAX));
        }
        self.retries.fetch_add(extra, Ordering::Relaxed);
        if matches!(outcome, Outcome::OutOfStock | Outcome::Drained) {
            self.sold_out.store(true, Ordering::Relaxed);
        }
        if *outcome == Outcome::Reserved {
            let served = self.served.fetch_add(1, Ordering::Relaxed) + 1;
            if self.ops_max.is_some_and(|max| served >= max) {
                self.sold_out.store(true, Ordering::Relaxed);
            }
        }
        *self
            .outcomes
            .lock()
            .expect("outcomes lock")
            .entry(outcome.name())
            .or_default() += 1;
    }
}

/// Runs the clients for the scenario and summarizes.
async fn drive(
    args: &BenchArgs,
    driver: Arc<dyn Driver>,
    run_id: &str,
    skus: Arc<Vec<String>>,
    stock: i64,
) -> anyhow::Result<Report> {
    let tally = Arc::new(Tally::new(args.ops));
    let progress = progress_bar(args.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let client = BenchClient {
            client,
            nodes: args.nodes.len(),
            driver: driver.clone(),
            run_id: run_id.to_owned(),
            skus: skus.clone(),
            tally: tally.clone(),
        };
        tasks.push(tokio::spawn(client.run(deadline)));
    }
    if let Some(bar) = &progress {
        while Instant::now() < deadline && !tally.sold_out() {
            bar.set_position(started.elapsed().as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for task in tasks {
        task.await.context("a client task failed")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let outcomes = tally.outcomes.lock().expect("outcomes lock").clone();
    let ok = outcomes.get("ok").copied().unwrap_or(0);
    let oversell = match args.scenario {
        Scenario::Hot => {
            let remaining = driver.stock(run_id, &skus[0]).await?;
            Some(oversell(ok, stock, remaining))
        }
        Scenario::Spread | Scenario::Hold | Scenario::Commit | Scenario::Failover => None,
    };
    let histogram = tally.histogram.lock().expect("histogram lock");
    let ms = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(Report {
        target: args.target,
        scenario: args.scenario,
        label: args.label.clone(),
        clients: args.clients,
        nodes: args.nodes.len(),
        skus: skus.len(),
        seconds: elapsed,
        ok,
        ops_per_sec: ok as f64 / elapsed,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
        outcomes,
        retries: tally.retries.load(Ordering::Relaxed),
        oversell,
        delivery: None,
        batch: None,
    })
}

/// One bench client: reserves one unit of a random SKU after another, through the nodes in
/// turn.
struct BenchClient {
    client: usize,
    nodes: usize,
    driver: Arc<dyn Driver>,
    run_id: String,
    skus: Arc<Vec<String>>,
    tally: Arc<Tally>,
}

impl BenchClient {
    /// Reserves until `deadline` or until the stock runs out.
    async fn run(self, deadline: Instant) {
        let mut sequence = 0u64;
        while Instant::now() < deadline && !self.tally.sold_out() {
            sequence += 1;
            let sku = &self.skus[rand::random_range(0..self.skus.len())];
            let began = Instant::now();
            let node = (self.client + sequence as usize) % self.nodes;
            let id = (self.client as u64) << 40 | sequence;
            let (outcome, extra) = self.driver.reserve(node, &self.run_id, sku, id).await;
            let latency_us = began.elapsed().as_micros() as u64;
            self.tally.record(&outcome, latency_us, extra);
            if let Outcome::Shed { retry_after, .. } = outcome {
                let wake = (Instant::now() + retry_after).min(deadline);
                tokio::time::sleep_until(wake.into()).await;
            }
        }
    }
}

/// Acknowledged reserves of one unit minus the stock that actually left.
fn oversell(acknowledged: u64, initial: i64, remaining: i64) -> i64 {
    acknowledged as i64 - (initial - remaining)
}

fn progress_bar(seconds: f64) -> Option<indicatif::ProgressBar> {
    if seconds < PROGRESS_BAR_AFTER_S {
        return None;
    }
    let bar = indicatif::ProgressBar::new((seconds * 1000.0) as u64);
    let style = indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

fn print_report(report: &Report) {
    println!(
        "{:<10} {:<7} {:<10} {:>3} {:>10} {:>8} {:>8} {:>8} {:>8}  outcomes",
        "target", "scenario", "label", "C", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let outcomes: Vec<String> = report
        .outcomes
        .iter()
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    println!(
        "{:<10} {:<7} {:<10} {:>3} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {}{}",
        format!("{:?}", report.target).to_lowercase(),
        format!("{:?}", report.scenario).to_lowercase(),
        report.label,
        report.clients,
        report.ops_per_sec,
        report.p50_ms,
        report.p99_ms,
        report.p999_ms,
        report.max_ms,
        outcomes.join(" "),
        report
            .oversell
            .map_or(String::new(), |o| format!(" oversell={o}"))
    );
    if let Some(delivery) = &report.delivery {
        print_delivery(delivery);
    }
    if let Some(batch) = &report.batch {
        println!(
            "batches of {} lines ({:?}): {} lines applied, {} failed, {:.0} lines/s \
             (ops/s and latencies above are per batch)",
            batch.batch_size,
            batch.batch_policy,
            batch.lines_applied,
            batch.lines_failed,
            batch.lines_per_sec,
        );
    }
    println!(
        "BENCH {}",
        serde_json::to_string(report).expect("a report serializes")
    );
}

fn print_delivery(delivery: &Delivery) {
    println!(
        "subscribers {}: {} complete, {} events delivered (seqs {}..{}), delivery p50 {:.2} ms \
         p99 {:.2} ms max {:.2} ms ({} timed), {} reconnect(s)",
        delivery.subscribers,
        delivery.subscribers_complete,
        delivery.events_delivered,
        delivery.feed_head_start + 1,
        delivery.feed_head_end,
        delivery.delivery_p50_ms,
        delivery.delivery_p99_ms,
        delivery.delivery_max_ms,
        delivery.deliveries_timed,
        delivery.subscriber_reconnects,
    );
    for failure in &delivery.subscriber_failures {
        println!("subscriber MISSED: {failure}");
    }
}

/// stockraft through its typed client: one keep-alive pool shared by every client.
struct Stockraft {
    clients: Vec<Client>,
    /// The clients' connection pool, for the feed's streams (`--subscribers`).
    http: reqwest::Client,
    keyed: bool,
    scenario: Scenario,
    /// `--hold-due-at-ms`.
    hold_due_at_ms: Option<u64>,
    /// Reservations held in the commit scenario's first phase, to commit in its second.
    held: Mutex<Vec<String>>,
    /// The commit scenario's second phase has begun.
    committing: AtomicBool,
    /// `--subscribers`: every acknowledged write's log index, for the delivery delays.
    acks: Option<Arc<Acks>>,
    /// `--batch`: each operation is a batch of reserves.
    batch: Option<BatchLoad>,
}

impl Stockraft {
    fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let transport = Arc::new(HttpTransport::new());
        let clients = args
            .nodes
            .iter()
            .map(|node| {
                let client =
                    Client::new(transport.clone(), node.clone()).with_timeout(REQUEST_TIMEOUT);
                match &args.token {
                    Some(token) => client.with_token(token.clone()),
                    None => client,
                }
            })
            .collect();
        let batch = match args.batch {
            Some(size) => Some(BatchLoad::new(size, args.batch_policy, args.skus)?),
            None => None,
        };
        Ok(Self {
            http: transport.http_client().clone(),
            clients,
            keyed: args.keyed,
            scenario: args.scenario,
            hold_due_at_ms: args.hold_due_at_ms,
            held: Mutex::default(),
            committing: AtomicBool::new(false),
            acks: (args.subscribers > 0).then(|| Arc::new(Acks::new())),
            batch,
        })
    }

    /// A hold's TTL: [`HOLD_TTL_S`], or what makes it fall due at `--hold-due-at-ms`.
    fn hold_ttl_s(&self) -> u64 {
        let Some(due_ms) = self.hold_due_at_ms else {
            return HOLD_TTL_S;
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        due_ms.saturating_sub(now_ms).div_ceil(1_000).max(1)
    }

    /// From now on each logical operation commits one of the holds made so far.
    fn start_committing(&self) {
        self.committing.store(true, Ordering::Relaxed);
    }

    /// One attempt of this scenario's operation through `client`: its status, error code and
    /// `Retry-After`, or the transport's error.
    async fn attempt(
        &self,
        client: &Client,
        run_id: &str,
        sku: &str,
        options: &WriteOptions,
    ) -> Result<Attempted, Outcome> {
        let failed = |error: crate::client::ClientError| Outcome::Other(format!("error: {error}"));
        if self.committing.load(Ordering::Relaxed) {
            let Some(id) = self.held.lock().expect("held lock").pop() else {
                return Err(Outcome::Drained);
            };
            let answer = client
                .commit_reservation(&id, options)
                .await
                .map_err(failed)?;
            self.record_ack(&answer);
            return Ok(Attempted::of(&answer));
        }
        if let Some(batch) = &self.batch {
            let answer = batch
                .send(client, run_id, options)
                .await
                .map_err(|error| failed(error.into()))?;
            return Ok(Attempted {
                status: answer.status,
                code: answer.code,
                retry_after_s: answer.retry_after_s,
            });
        }
        let body = ReserveRequest {
            qty: 1,
            expected_version: None,
            ttl_seconds: matches!(self.scenario, Scenario::Hold | Scenario::Commit)
                .then(|| self.hold_ttl_s()),
        };
        let answer = client
            .reserve(run_id, sku, &body, options)
            .await
            .map_err(failed)?;
        if self.scenario == Scenario::Commit {
            if let Ok(change) = &answer.body {
                let id = change.reservation_id.clone();
                self.held.lock().expect("held lock").extend(id);
            }
        }
        self.record_ack(&answer);
        Ok(Attempted::of(&answer))
    }

    /// Notes an accepted write's log index and when its answer arrived (`--subscribers`).
    fn record_ack<T>(&self, answer: &crate::client::Answer<T>) {
        if let Some(acks) = &self.acks {
            acks.record_answer(answer.status, &answer.headers);
        }
    }
}

/// What one attempt answered.
struct Attempted {
    status: u16,
    code: Option<String>,
    retry_after_s: Option<u64>,
}

impl Attempted {
    fn of<T>(answer: &crate::client::Answer<T>) -> Self {
        Self {
            status: answer.status,
            code: answer.error_code().map(str::to_owned),
            retry_after_s: answer
                .header("retry-after")
                .and_then(|value| value.parse().ok()),
        }
    }
}

impl Stockraft {
    async fn setup_batches(&self, store: &str, skus: &[String], stock: i64) -> anyhow::Result<()> {
        let batches: Vec<CreateBatchRequest> = skus
            .chunks(SETUP_BATCH_RECORDS)
            .map(|chunk| CreateBatchRequest {
                records: chunk
                    .iter()
                    .map(|sku| CreateRequest {
                        sku: sku.clone(),
                        store_id: store.to_owned(),
                        initial_quantity: stock,
                    })
                    .collect(),
            })
            .collect();
        let queue = Arc::new(Mutex::new(batches));
        let mut tasks = Vec::new();
        for worker in 0..SETUP_CONCURRENCY {
            let client = self.clients[worker % self.clients.len()].clone();
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(batch) = queue.lock().expect("queue lock").pop() else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let options = WriteOptions::default();
                    loop {
                        let answer = client.create_batch(&batch, &options).await?;
                        match answer.error_code() {
                            None => break,
                            Some(codes::NO_LEADER) => tokio::time::sleep(RETRY_PAUSE).await,
                            Some(_) => bail!("batch create refused: {:?}", answer.body.err()),
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(())
    }
}

impl Driver for Stockraft {
    fn name(&self) -> &'static str {
        "stockraft"
    }

    fn setup<'a>(
        &'a self,
        run_id: &'a str,
        skus: &'a [String],
        stock: i64,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(self.setup_batches(run_id, skus, stock))
    }

    fn reserve<'a>(
        &'a self,
        node: usize,
        run_id: &'a str,
        sku: &'a str,
        sequence: u64,
    ) -> futures::future::BoxFuture<'a, (Outcome, u64)> {
        Box::pin(async move {
            let client = &self.clients[node];
            let options = WriteOptions {
                idempotency_key: self.keyed.then(|| {
                    // The commit phase numbers its operations from 1 again.
                    let phase = if self.committing.load(Ordering::Relaxed) {
                        "c"
                    } else {
                        "r"
                    };
                    format!("{run_id}-{phase}{sequence}")
                }),
                if_match: None,
            };
            let mut extra = 0;
            loop {
                let attempted = match self.attempt(client, run_id, sku, &options).await {
                    Ok(attempted) => attempted,
                    Err(outcome) => return (outcome, u64::from(extra)),
                };
                let outcome = match (attempted.status, attempted.code.as_deref()) {
                    (200 | 201, _) => Outcome::Reserved,
                    (_, Some(codes::INSUFFICIENT_STOCK)) => Outcome::OutOfStock,
                    (_, Some(codes::NO_LEADER)) if extra + 1 < ATTEMPTS_MAX => {
                        extra += 1;
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                    (
                        status @ (503 | 429),
                        Some(code @ (codes::OVERLOADED | codes::RATE_LIMITED)),
                    ) => Outcome::Shed {
                        name: format!("{status} {code}"),
                        retry_after: Duration::from_secs(attempted.retry_after_s.unwrap_or(1)),
                    },
                    (status, code) => Outcome::Other(match code {
                        Some(code) => format!("{status} {code}"),
                        None => status.to_string(),
                    }),
                };
                return (outcome, u64::from(extra));
            }
        })
    }

    fn stock<'a>(
        &'a self,
        run_id: &'a str,
        sku: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<i64>> {
        Box::pin(async move {
            let record = self.clients[0]
                .read(run_id, sku, Consistency::Linearizable)
                .await?
                .ok()?;
            Ok(record.qty)
        })
    }
}

/// etcd v3 through its JSON gateway (`/v3/kv/range`, `/v3/kv/txn`), as an etcd user would
/// implement a reserve: a linearizable read, then a compare-and-swap on `mod_revision`.
struct Etcd {
    http: reqwest::Client,
    nodes: Vec<String>,
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn unb64(text: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// The stock and `mod_revision` in an etcd range answer, if the key exists.
fn etcd_stock(range: &Value) -> Option<(i64, String)> {
    let kv = range["kvs"].as_array()?.first()?;
    let qty = unb64(kv["value"].as_str()?)?.parse().ok()?;
    let revision = match &kv["mod_revision"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    Some((qty, revision))
}

impl Etcd {
    fn new(args: &BenchArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            nodes: args.nodes.clone(),
        })
    }

    fn key(run_id: &str, sku: &str) -> String {
        format!("stockraft-bench/{run_id}/{sku}")
    }

    async fn post(&self, node: usize, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("http://{}{path}", self.nodes[node % self.nodes.len()]);
        let response = self.http.post(url).json(body).send().await?;
        let status = response.status();
        let answer: Value = response.json().await?;
        if !status.is_success() {
            bail!("etcd answered {status}: {answer}");
        }
        Ok(answer)
    }

    async fn range(&self, node: usize, key: &str) -> anyhow::Result<Value> {
        self.post(node, "/v3/kv/range", &json!({ "key": b64(key) }))
            .await
    }
}

impl Driver for Etcd {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn setup<'a>(
        &'a self,
        run_id: &'a str,
        skus: &'a [String],
        stock: i64,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let chunks: Vec<Vec<String>> = skus
                .chunks(ETCD_TXN_OPS_MAX)
                .map(<[String]>::to_vec)
                .collect();
            let queue = Arc::new(Mutex::new(chunks));
            futures::future::try_join_all((0..SETUP_CONCURRENCY).map(|worker| {
                let queue = queue.clone();
                async move {
                    loop {
                        let Some(chunk) = queue.lock().expect("queue lock").pop() else {
                            return Ok::<_, anyhow::Error>(());
                        };
                        let puts: Vec<Value> = chunk
                            .iter()
                            .map(|sku| {
                                json!({ "request_put": {
                                    "key": b64(&Self::key(run_id, sku)),
                                    "value": b64(&stock.to_string()),
                                }})
                            })
                            .collect();
                        self.post(worker, "/v3/kv/txn", &json!({ "success": puts }))
                            .await?;
                    }
                }
            }))
            .await?;
            Ok(())
        })
    }

    fn reserve<'a>(
        &'a self,
        node: usize,
        run_id: &'a str,
        sku: &'a str,
        _sequence: u64,
    ) -> futures::future::BoxFuture<'a, (Outcome, u64)> {
        Box::pin(async move {
            let key = Self::key(run_id, sku);
            let mut extra = 0u64;
            for _ in 0..ATTEMPTS_MAX {
                let range = match self.range(node, &key).await {
                    Ok(range) => range,
                    Err(error) => return (Outcome::Other(format!("error: {error}")), extra),
                };
                let Some((qty, revision)) = etcd_stock(&range) else {
                    return (Outcome::Other("missing".into()), extra);
                };
                if qty < 1 {
                    return (Outcome::OutOfStock, extra);
                }
                let txn = json!({
                    "compare": [{
                        "key": b64(&key), "target": "MOD", "result": "EQUAL",
                        "mod_revision": revision,
                    }],
                    "success": [{ "request_put": {
                        "key": b64(&key), "value": b64(&(qty - 1).to_string()),
                    }}],
                });
                match self.post(node, "/v3/kv/txn", &txn).await {
                    // proto3 JSON leaves `succeeded: false` out.
                    Ok(answer) if answer["succeeded"] == true => return (Outcome::Reserved, extra),
                    Ok(_) => extra += 1,
                    Err(error) => return (Outcome::Other(format!("error: {error}")), extra),
                }
            }
            (Outcome::Other("gave up".into()), extra)
        })
    }

    fn stock<'a>(
        &'a self,
        run_id: &'a str,
        sku: &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<i64>> {
        Box::pin(async move {
            let range = self.range(0, &Self::key(run_id, sku)).await?;
            etcd_stock(&range)
                .map(|(qty, _)| qty)
                .context("the hot key is missing")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversell_is_acknowledged_units_beyond_the_stock_that_left() {
        assert_eq!(oversell(100, 100, 0), 0);
        assert_eq!(oversell(90, 100, 10), 0);
        assert_eq!(
            oversell(101, 100, 0),
            1,
            "one acknowledged unit never existed"
        );
        assert_eq!(oversell(89, 100, 10), -1, "an unknown outcome took a unit");
    }

    #[test]
    fn etcd_range_answers_are_read_with_their_mod_revision() {
        let range = json!({
            "header": { "revision": "9" },
            "kvs": [{ "key": b64("k"), "value": b64("41"), "mod_revision": "7" }],
            "count": "1"
        });
        assert_eq!(etcd_stock(&range), Some((41, "7".to_owned())));
        assert_eq!(etcd_stock(&json!({ "header": {} })), None);
        assert_eq!(unb64(&b64("stock/a")), Some("stock/a".to_owned()));
    }

    #[test]
    fn clients_stop_once_ops_operations_succeeded_and_not_before() {
        let tally = Tally::new(Some(2));
        tally.record(&Outcome::Reserved, 10, 0);
        tally.record(&Outcome::Other("503".into()), 10, 0);
        assert!(!tally.sold_out(), "a failed operation is not one of --ops");
        tally.record(&Outcome::Reserved, 10, 0);
        assert!(tally.sold_out());
        let unbounded = Tally::new(None);
        for _ in 0..1_000 {
            unbounded.record(&Outcome::Reserved, 10, 0);
        }
        assert!(!unbounded.sold_out());
    }

    #[test]
    fn holds_due_at_an_instant_get_the_ttl_that_reaches_it() {
        let args = |due: Option<u64>| BenchArgs {
            nodes: vec!["127.0.0.1:1".into()],
            target: Target::Stockraft,
            scenario: Scenario::Hold,
            clients: 1,
            seconds: 1.0,
            skus: 1,
            stock: 1,
            keyed: false,
            token: None,
            label: String::new(),
            ops: None,
            hold_due_at_ms: due,
            subscribers: 0,
            batch: None,
            batch_policy: BatchPolicy::default(),
            readers: 0,
            stop_file: None,
        };
        assert_eq!(
            Stockraft::new(&args(None)).unwrap().hold_ttl_s(),
            HOLD_TTL_S
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let ttl = Stockraft::new(&args(Some(now_ms + 90_500)))
            .unwrap()
            .hold_ttl_s();
        assert!((90..=91).contains(&ttl), "{ttl}");
        assert_eq!(
            Stockraft::new(&args(Some(now_ms - 5_000)))
                .unwrap()
                .hold_ttl_s(),
            1
        );
    }
}
