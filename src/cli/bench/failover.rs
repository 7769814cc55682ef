//! `stockraft bench --scenario failover`: what clients see while nodes stop, restart or are cut
//! off. A driver script (`scripts/rolling-restart.sh`, `scripts/partition.sh`) makes the faults;
//! this load measures them.
//!
//! - **Writers** (`--clients`): each reserves one unit at a time of a SKU of its own, with an
//!   idempotency key, and retries *the same key* on the next node after any failure (a 503, a
//!   refused connection, an attempt past `--attempt-timeout-ms`) until it is acknowledged: what
//!   a careful shop does. A write is therefore applied once whatever happened to its attempts,
//!   and each writer's SKU ends at version `1 + acknowledged` exactly (`unknown` counts the
//!   writes still unanswered when the finish bound ran out, which may or may not have applied).
//! - **Readers** (`--readers`): linearizable reads of the writers' SKUs, through every node in
//!   turn. Before each read a reader notes the version of the SKU's newest acknowledged write;
//!   a read answering an older version is **stale** (a node served a linearizable read it
//!   could not vouch for: a deposed leader, say). A read refused (503) is not stale.
//! - The **write gap**: the longest time during which no writer had a write acknowledged.
//! - At the end: every node's barrier (`POST /api/sync`), then each SKU read locally from each
//!   node: the **replicas agree** when every node holds the version the linearizable read gave.
//!
//! The run ends after `--seconds`, or earlier once `--stop-file` exists (a fault script touches
//! it when its faults are over). Output: a summary line and `FAILOVER {json}`; the exit status
//! is 1 if a write was lost or applied twice, a read was stale, or the replicas disagree.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::batches::spread_sku;
use crate::client::wire::{codes, CreateRequest, ReserveRequest};
use crate::client::{Client, Consistency, WriteOptions};

/// Units of each writer's SKU: never runs out within a run.
const STOCK: i64 = 1_000_000_000;
/// Longest a writer keeps retrying its last write once the run is over: past any election or
/// partition a fault script makes, short enough to end a run whose cluster never recovered.
const FINISH_WAIT: Duration = Duration::from_secs(30);
/// Pause before retrying after a quick refusal (no leader yet, a refused connection), so a
/// writer does not spin while a cluster elects.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// Longest the end-of-run checks (final reads, barriers) wait for a node to answer.
const CHECK_WAIT: Duration = Duration::from_secs(30);
/// How often the run looks for the stop file.
const STOP_FILE_POLL: Duration = Duration::from_millis(50);

/// The failover scenario's own settings (the rest come from `bench`'s arguments).
#[derive(Debug, Clone)]
pub struct FailoverLoad {
    pub run_id: String,
    pub writers: usize,
    pub readers: usize,
    pub seconds: f64,
    pub stop_file: Option<PathBuf>,
}

/// What a failover run measured.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverReport {
    pub writers: usize,
    pub readers: usize,
    pub seconds: f64,
    /// Writes acknowledged (2xx).
    pub acked: u64,
    /// Writes still unanswered when the finish bound ran out.
    pub unknown: u64,
    /// Acknowledged writes the cluster does not hold. Must be 0.
    pub lost: u64,
    /// Writes applied beyond the acknowledged and unknown ones (an idempotency key applied
    /// twice). Must be 0.
    pub duplicated: u64,
    /// Attempts that failed and were retried (on the next node).
    pub retries: u64,
    /// The longest time no writer had a write acknowledged, and when it began (seconds into
    /// the run).
    pub longest_gap_ms: f64,
    pub longest_gap_at_s: f64,
    /// Linearizable reads answered, and how many of them were stale. Must be 0.
    pub reads_ok: u64,
    pub reads_refused: u64,
    pub stale_reads: u64,
    /// Every node holds what the linearizable read of each SKU gave.
    pub replicas_agree: bool,
    /// What disagreed, or which node could not be checked.
    pub disagreements: Vec<String>,
}

impl FailoverReport {
    /// Whether the run kept every promise (the gap is measured, not judged).
    pub fn kept_promises(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.stale_reads == 0 && self.replicas_agree
    }
}

/// Acknowledged writes missing from `applied`, and writes applied beyond the acknowledged and
/// unknown ones.
fn lost_and_duplicated(acked: u64, unknown: u64, applied: u64) -> (u64, u64) {
    (
        acked.saturating_sub(applied),
        applied.saturating_sub(acked + unknown),
    )
}

/// The longest stretch without an acknowledged write, updated at each acknowledgement.
#[derive(Debug)]
struct GapClock {
    started: Instant,
    last_ack: Option<Instant>,
    longest: Duration,
    longest_began: Duration,
}

impl GapClock {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last_ack: None,
            longest: Duration::ZERO,
            longest_began: Duration::ZERO,
        }
    }

    /// A write acknowledged at `at`. The stretch before the first one is the set-up's and the
    /// first connections', not a gap.
    fn ack(&mut self, at: Instant) {
        if let Some(last) = self.last_ack {
            let gap = at.saturating_duration_since(last);
            if gap > self.longest {
                self.longest = gap;
                self.longest_began = last.saturating_duration_since(self.started);
            }
        }
        self.last_ack = Some(self.last_ack.map_or(at, |last| last.max(at)));
    }
}

/// What the writers and readers share.
struct Shared {
    load: FailoverLoad,
    clients: Vec<Client>,
    /// Per writer: the version of its newest acknowledged write (1: only the create).
    acked_version: Vec<AtomicU64>,
    acked: AtomicU64,
    unknown: AtomicU64,
    retries: AtomicU64,
    reads_ok: AtomicU64,
    reads_refused: AtomicU64,
    stale: Mutex<Vec<String>>,
    gaps: Mutex<GapClock>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Shared {
    fn sku(&self, writer: usize) -> String {
        spread_sku(writer)
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// Runs the scenario on SKUs `sku-0..writers` of store `run_id`, which it creates first.
/// `clients` are one per node.
pub async fn run(load: FailoverLoad, clients: Vec<Client>) -> anyhow::Result<FailoverReport> {
    assert!(!clients.is_empty(), "at least one node");
    assert!(load.writers > 0, "at least one writer");
    for writer in 0..load.writers {
        create_sku(
            &clients[writer % clients.len()],
            &load.run_id,
            &spread_sku(writer),
        )
        .await?;
    }
    eprintln!("bench: failover set up {} SKU(s)", load.writers);
    let started = Instant::now();
    let shared = Arc::new(Shared {
        acked_version: (0..load.writers).map(|_| AtomicU64::new(1)).collect(),
        acked: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        reads_ok: AtomicU64::new(0),
        reads_refused: AtomicU64::new(0),
        stale: Mutex::default(),
        gaps: Mutex::new(GapClock::new(started)),
        stopping: tokio::sync::watch::channel(false).0,
        load,
        clients,
    });
    let mut tasks = Vec::new();
    for writer in 0..shared.load.writers {
        tasks.push(tokio::spawn(write_until_stopped(shared.clone(), writer)));
    }
    for reader in 0..shared.load.readers {
        tasks.push(tokio::spawn(read_until_stopped(shared.clone(), reader)));
    }
    wait_for_the_end(&shared.load, started).await;
    shared.stopping.send_replace(true);
    for task in tasks {
        task.await.context("a failover client task failed")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    summarize(&shared, seconds).await
}

/// Creates `sku` with [`STOCK`] units, retrying (with a key: at most once) until created.
async fn create_sku(client: &Client, store: &str, sku: &str) -> anyhow::Result<()> {
    let body = CreateRequest {
        sku: sku.to_owned(),
        store_id: store.to_owned(),
        initial_quantity: STOCK,
    };
    let options = WriteOptions::keyed(format!("{store}-create-{sku}"));
    let deadline = Instant::now() + CHECK_WAIT;
    loop {
        let answer = client.create(&body, &options).await;
        match answer {
            Ok(answer) if answer.body.is_ok() => return Ok(()),
            failed if Instant::now() >= deadline => {
                anyhow::bail!("creating {sku} failed for {CHECK_WAIT:?}: {failed:?}")
            }
            _ => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Resolves after `--seconds`, or once the stop file exists.
async fn wait_for_the_end(load: &FailoverLoad, started: Instant) {
    let deadline = started + Duration::from_secs_f64(load.seconds);
    while Instant::now() < deadline {
        if load.stop_file.as_ref().is_some_and(|file| file.exists()) {
            return;
        }
        tokio::time::sleep(STOP_FILE_POLL).await;
    }
}

/// Writer `writer`: one keyed write after another until the run stops.
async fn write_until_stopped(shared: Arc<Shared>, writer: usize) {
    let mut sequence = 0u64;
    while !shared.is_stopping() {
        sequence += 1;
        let key = format!("{}-w{writer}-{sequence}", shared.load.run_id);
        write_once(&shared, writer, sequence as usize, &key).await;
    }
}

/// One logical write: the same key through node after node until acknowledged (or, once the
/// run is over, until [`FINISH_WAIT`] has passed: then its outcome is unknown).
async fn write_once(shared: &Shared, writer: usize, first_node: usize, key: &str) {
    let sku = shared.sku(writer);
    let body = ReserveRequest {
        qty: 1,
        expected_version: None,
        ttl_seconds: None,
    };
    let options = WriteOptions::keyed(key);
    let mut stopping = shared.stopping.subscribe();
    let mut finish_by: Option<Instant> = None;
    for attempt in 0.. {
        let client = &shared.clients[(first_node + attempt) % shared.clients.len()];
        let answer = client
            .reserve(&shared.load.run_id, &sku, &body, &options)
            .await;
        if let Ok(answer) = &answer {
            if let Ok(change) = &answer.body {
                acknowledge(shared, writer, change.new_version);
                return;
            }
            assert_ne!(
                answer.error_code(),
                Some(codes::INSUFFICIENT_STOCK),
                "the failover scenario's stock never runs out"
            );
        }
        shared.retries.fetch_add(1, Ordering::Relaxed);
        if *stopping.borrow_and_update() {
            let finish_by = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_WAIT);
            if Instant::now() >= finish_by {
                shared.unknown.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Notes writer `writer`'s write acknowledged at `version`, now.
fn acknowledge(shared: &Shared, writer: usize, version: u64) {
    let now = Instant::now();
    let previous = shared.acked_version[writer].swap(version, Ordering::SeqCst);
    assert!(
        version > previous,
        "writer {writer}: an acknowledged version {version} not after the previous {previous}"
    );
    shared.acked.fetch_add(1, Ordering::Relaxed);
    shared.gaps.lock().expect("gap clock lock").ack(now);
}

/// Reader `reader`: linearizable reads of the writers' SKUs, each checked against the newest
/// write acknowledged before it began.
async fn read_until_stopped(shared: Arc<Shared>, reader: usize) {
    let mut round = 0usize;
    while !shared.is_stopping() {
        round += 1;
        let writer = (reader + round) % shared.load.writers;
        let client = &shared.clients[(reader + round) % shared.clients.len()];
        let floor = shared.acked_version[writer].load(Ordering::SeqCst);
        let answer = client
            .read(
                &shared.load.run_id,
                &shared.sku(writer),
                Consistency::Linearizable,
            )
            .await;
        match answer.ok().and_then(|answer| answer.body.ok()) {
            Some(record) => {
                shared.reads_ok.fetch_add(1, Ordering::Relaxed);
                if record.version < floor {
                    shared.stale.lock().expect("stale lock").push(format!(
                        "{} answered version {} of {} after version {floor} was acknowledged",
                        client.node(),
                        record.version,
                        record.sku
                    ));
                }
            }
            None => {
                shared.reads_refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// The end-of-run checks and the report.
async fn summarize(shared: &Shared, seconds: f64) -> anyhow::Result<FailoverReport> {
    let acked = shared.acked.load(Ordering::Relaxed);
    let unknown = shared.unknown.load(Ordering::Relaxed);
    let mut applied = 0;
    let mut final_versions = Vec::new();
    for writer in 0..shared.load.writers {
        let version = final_version(shared, writer).await?;
        applied += version.checked_sub(1).context("a record below version 1")?;
        final_versions.push(version);
    }
    let (lost, duplicated) = lost_and_duplicated(acked, unknown, applied);
    let disagreements = replica_disagreements(shared, &final_versions).await;
    let stale = shared.stale.lock().expect("stale lock").clone();
    for line in &stale {
        eprintln!("failover: STALE read: {line}");
    }
    let gaps = shared.gaps.lock().expect("gap clock lock");
    Ok(FailoverReport {
        writers: shared.load.writers,
        readers: shared.load.readers,
        seconds,
        acked,
        unknown,
        lost,
        duplicated,
        retries: shared.retries.load(Ordering::Relaxed),
        longest_gap_ms: gaps.longest.as_secs_f64() * 1000.0,
        longest_gap_at_s: gaps.longest_began.as_secs_f64(),
        reads_ok: shared.reads_ok.load(Ordering::Relaxed),
        reads_refused: shared.reads_refused.load(Ordering::Relaxed),
        stale_reads: stale.len() as u64,
        replicas_agree: disagreements.is_empty(),
        disagreements,
    })
}

/// Writer `writer`'s SKU's version now, by a linearizable read through any node that serves it.
async fn final_version(shared: &Shared, writer: usize) -> anyhow::Result<u64> {
    let sku = shared.sku(writer);
    let deadline = Instant::now() + CHECK_WAIT;
    for attempt in 0.. {
        let client = &shared.clients[attempt % shared.clients.len()];
        let answer = client
            .read(&shared.load.run_id, &sku, Consistency::Linearizable)
            .await;
        if let Some(record) = answer.ok().and_then(|answer| answer.body.ok()) {
            return Ok(record.version);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no node served a linearizable read of {sku} within {CHECK_WAIT:?}"
        );
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    unreachable!("the loop returns or fails")
}

/// Each node's copy of every SKU after its barrier, against `final_versions`: one line per
/// difference (or node that could not be checked); empty when the replicas agree.
async fn replica_disagreements(shared: &Shared, final_versions: &[u64]) -> Vec<String> {
    let mut disagreements = Vec::new();
    for client in &shared.clients {
        if let Err(error) = barrier(client).await {
            disagreements.push(format!("{}: {error}", client.node()));
            continue;
        }
        for (writer, version) in final_versions.iter().enumerate() {
            let sku = shared.sku(writer);
            let local = client
                .read(&shared.load.run_id, &sku, Consistency::Local)
                .await
                .ok()
                .and_then(|answer| answer.body.ok())
                .map(|record| record.version);
            if local != Some(*version) {
                disagreements.push(format!(
                    "{} holds version {local:?} of {sku}, the cluster {version}",
                    client.node()
                ));
            }
        }
    }
    disagreements
}

/// `POST /api/sync` on `client`'s node until it answers (it applied what it knew committed).
async fn barrier(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + CHECK_WAIT;
    loop {
        match client.sync_barrier().await.map(|answer| answer.ok()) {
            Ok(Ok(_)) => return Ok(()),
            failed if Instant::now() >= deadline => {
                anyhow::bail!("its barrier failed for {CHECK_WAIT:?}: {failed:?}")
            }
            _ => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Prints the summary line and the `FAILOVER {json}` line.
pub fn print_report(report: &FailoverReport) {
    println!(
        "failover: {} writers, {} readers, {:.1} s: {} writes acknowledged, {} lost, {} \
         duplicated, {} unknown, {} retried attempts; longest write gap {:.0} ms (at {:.1} s); \
         {} linearizable reads ({} refused), {} stale; replicas agree: {}",
        report.writers,
        report.readers,
        report.seconds,
        report.acked,
        report.lost,
        report.duplicated,
        report.unknown,
        report.retries,
        report.longest_gap_ms,
        report.longest_gap_at_s,
        report.reads_ok,
        report.reads_refused,
        report.stale_reads,
        report.replicas_agree,
    );
    for line in &report.disagreements {
        println!("failover: REPLICAS DISAGREE: {line}");
    }
    println!(
        "FAILOVER {}",
        serde_json::to_string(report).expect("a report serializes")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledged_write_missing_is_lost_and_one_beyond_the_unknown_is_duplicated() {
        assert_eq!(lost_and_duplicated(10, 0, 10), (0, 0));
        assert_eq!(
            lost_and_duplicated(10, 2, 11),
            (0, 0),
            "one unknown applied"
        );
        assert_eq!(lost_and_duplicated(10, 2, 9), (1, 0));
        assert_eq!(lost_and_duplicated(10, 2, 13), (0, 1));
    }

    #[test]
    fn the_write_gap_is_the_longest_stretch_between_acknowledgements_after_the_first() {
        let started = Instant::now();
        let at = |ms: u64| started + Duration::from_millis(ms);
        let mut clock = GapClock::new(started);
        clock.ack(at(5_000));
        assert_eq!(clock.longest, Duration::ZERO, "the set-up is not a gap");
        clock.ack(at(5_010));
        clock.ack(at(5_400));
        clock.ack(at(5_390));
        clock.ack(at(5_500));
        assert_eq!(clock.longest, Duration::from_millis(390));
        assert_eq!(clock.longest_began, Duration::from_millis(5_010));
        assert_eq!(
            clock.last_ack,
            Some(at(5_500)),
            "an acknowledgement noted late does not move the clock back"
        );
    }
}
