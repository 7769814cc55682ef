//! The graceful hand-over with real processes: SIGTERM to a leader under keyed writes.
//!
//! The load is the failover scenario of `stockraft bench` (`cli::bench::failover`): writers that
//! retry each keyed write until it is acknowledged, linearizable readers, and at the end every
//! acknowledged write counted, every replica compared.
#![cfg(not(madsim))]

mod support;

use stockraft::cli::bench::failover::{self, FailoverLoad, FailoverReport};
use support::Cluster;

const WRITERS: usize = 4;
const READERS: usize = 2;
/// Bounds the load if the test fails before it touches the stop file.
const LOAD_SECONDS_MAX: f64 = 120.0;

/// Starts the failover load on every node of `cluster`; it ends once `stop_file` exists.
fn start_load(
    cluster: &Cluster,
    stop_file: std::path::PathBuf,
) -> tokio::task::JoinHandle<anyhow::Result<FailoverReport>> {
    let clients = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.client(id))
        .collect();
    let load = FailoverLoad {
        run_id: "handover".into(),
        writers: WRITERS,
        readers: READERS,
        seconds: LOAD_SECONDS_MAX,
        stop_file: Some(stop_file),
    };
    tokio::spawn(failover::run(load, clients))
}

/// Node `id`'s commit index (0 if it does not answer).
async fn committed_index(cluster: &Cluster, id: u64) -> u64 {
    let health = cluster.health(id).await;
    health
        .and_then(|health| health.raft.committed_index)
        .unwrap_or(0)
}

/// The leader node `id` said it handed over to, from its log line
/// "shutting down: handed leadership over ... leader=N".
fn handed_over_to(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .find(|line| line.contains("shutting down: handed leadership over"))?;
    let leader = line.split("leader=").nth(1)?;
    leader
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_by_sigterm_hands_over_before_it_stops_and_no_write_is_lost() {
    let mut cluster = Cluster::start(3, "").await;
    let leader = cluster.wait_for_leader(&[1, 2, 3]).await;
    let stop_file = cluster.dir.path().join("stop-load");
    let load = start_load(&cluster, stop_file.clone());
    let committed_at_start = committed_index(&cluster, leader).await;
    eventually!(
        "the load commits writes before the leader is stopped",
        committed_index(&cluster, leader).await > committed_at_start + 50
    );

    assert!(
        cluster.terminate(leader).await,
        "the leader stops cleanly on SIGTERM"
    );
    let log = cluster.log(leader);
    let successor = handed_over_to(&log).unwrap_or_else(|| {
        panic!("the leader did not hear of a new leader before it stopped:\n{log}")
    });
    assert_ne!(successor, leader);
    let survivors: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    assert_eq!(
        cluster.wait_for_leader(&survivors).await,
        successor,
        "the survivors follow the leader the old one handed over to"
    );

    // Back, so that the end of the load can compare every replica.
    cluster.spawn(leader);
    cluster.wait_for_leader(&[1, 2, 3]).await;
    std::fs::write(&stop_file, b"").expect("writing the stop file");
    let report = load.await.expect("the load task").expect("the load");
    println!("{report:?}");
    assert!(report.acked > 0, "{report:?}");
    assert_eq!(report.lost, 0, "an acknowledged write was lost: {report:?}");
    assert_eq!(
        report.duplicated, 0,
        "a keyed write applied twice: {report:?}"
    );
    assert_eq!(
        report.stale_reads, 0,
        "a stale linearizable read: {report:?}"
    );
    assert!(report.replicas_agree, "{report:?}");
}

#[test]
fn the_hand_over_line_names_the_new_leader() {
    let log = "INFO stockraft::server: node started\n\
               INFO stockraft::server: shutting down: handed leadership over to=2 leader=2 \
               waited_ms=40\n";
    assert_eq!(handed_over_to(log), Some(2));
    assert_eq!(
        handed_over_to("INFO shutting down: draining connections"),
        None
    );
}
