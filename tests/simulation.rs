//! The cluster under madsim: deterministic, by seed. Built only with `RUSTFLAGS="--cfg madsim"`.
#![cfg(madsim)]

/// Plays `fault` on `cluster` now, for `duration_ms`: its outcome and the trace of what was done.
async fn play_now(
    cluster: &stockraft::sim::SimCluster,
    fault: stockraft::sim::faults::Fault,
    duration_ms: u64,
) -> (stockraft::sim::run::FaultOutcome, Vec<String>) {
    let scheduled = stockraft::sim::faults::Scheduled {
        start_ms: 0,
        duration_ms,
        fault,
    };
    let mut trace = Vec::new();
    let start = madsim::time::Instant::now();
    let outcome = stockraft::sim::run::play(cluster, &scheduled, start, &mut trace).await;
    (outcome, trace)
}

use std::time::Duration;

use stockraft::client::wire::{ChangeAnswer, CreateRequest, ReserveRequest};
use stockraft::client::{ClientError, Consistency, WriteOptions};
use stockraft::sim::{SimCluster, SimOptions};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const STORE: &str = "s1";

/// Creates `sku` with `qty` units through `node`; returns the status (0: no answer).
async fn create(cluster: &SimCluster, node: u64, sku: &str, qty: i64) -> u16 {
    let body = CreateRequest {
        sku: sku.into(),
        store_id: STORE.into(),
        initial_quantity: qty,
    };
    let client = cluster.client(node).with_timeout(CALL_TIMEOUT);
    let answer = client.create(&body, &WriteOptions::default()).await;
    answer.map_or(0, |a| a.status)
}

/// Reserves `qty` of `sku` through `node`: the status (0: no answer) and the change, if any.
async fn reserve(
    cluster: &SimCluster,
    node: u64,
    sku: &str,
    qty: i64,
) -> (u16, Option<ChangeAnswer>) {
    let body = ReserveRequest {
        qty,
        expected_version: None,
        ttl_seconds: None,
    };
    let client = cluster.client(node).with_timeout(CALL_TIMEOUT);
    match client
        .reserve(STORE, sku, &body, &WriteOptions::default())
        .await
    {
        Ok(answer) => (answer.status, answer.body.ok()),
        Err(_) => (0, None),
    }
}

/// Reads `sku` through `node`: the status (0: no answer), the version read, the error code.
async fn read(
    cluster: &SimCluster,
    node: u64,
    sku: &str,
    consistency: Consistency,
) -> (u16, Option<u64>, Option<String>) {
    let client = cluster.client(node).with_timeout(CALL_TIMEOUT);
    match client.read(STORE, sku, consistency).await {
        Ok(answer) => {
            let code = answer.error_code().map(str::to_owned);
            (answer.status, answer.body.ok().map(|r| r.version), code)
        }
        Err(ClientError::Transport(_)) => (0, None, None),
        Err(other) => panic!("node {node} answered a malformed read: {other}"),
    }
}

/// Waits (in simulated time) until every node reports the same leader.
async fn wait_for_leader(cluster: &SimCluster) -> u64 {
    for _ in 0..200 {
        let mut leaders = Vec::new();
        for id in cluster.ids() {
            leaders.push(cluster.health(id).await.and_then(|h| h.raft.leader_id));
        }
        if let Some(Some(leader)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*leader)) {
                return *leader;
            }
        }
        madsim::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader elected within 20 simulated seconds");
}

/// One seed of the smoke scenario; returns a trace of what happened.
fn smoke_run(seed: u64) -> String {
    std::thread::spawn(move || {
        let mut runtime =
            madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
        runtime.set_time_limit(Duration::from_secs(300));
        runtime.block_on(async {
            let cluster = SimCluster::start(SimOptions::default());
            let leader = wait_for_leader(&cluster).await;
            let elected_at = madsim::time::Instant::now();
            // Through a follower, so the write is forwarded to the leader.
            let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
            let status = create(&cluster, follower, "apple", 10).await;
            assert_eq!(status, 201, "create through node {follower}");
            let (status, body) = reserve(&cluster, leader, "apple", 4).await;
            assert_eq!(status, 201, "{body:?}");
            let body = body.expect("a change");
            assert_eq!(body.new_quantity, 6);
            // Every replica applies the same entries and ends byte-identical.
            let target = cluster.applied(leader);
            for _ in 0..100 {
                if cluster
                    .ids()
                    .iter()
                    .all(|id| cluster.applied(*id) == target)
                {
                    break;
                }
                madsim::time::sleep(Duration::from_millis(50)).await;
            }
            let states: Vec<_> = cluster
                .ids()
                .iter()
                .map(|id| cluster.state_pairs(*id))
                .collect();
            assert!(states.windows(2).all(|w| w[0] == w[1]), "replicas differ");
            format!(
                "leader={leader} elected_after={:?} applied={:?} state={}",
                elected_at.elapsed(),
                target,
                states[0].len()
            ) + &format!(" body={body:?}")
        })
    })
    .join()
    .expect("simulation thread panicked")
}

#[test]
fn three_nodes_elect_a_leader_and_commit_a_command_and_the_same_seed_gives_the_same_trace() {
    let seed = std::env::var("MADSIM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let first = smoke_run(seed);
    let second = smoke_run(seed);
    assert_eq!(first, second, "seed {seed} is not deterministic");
    println!("seed {seed}: {first}");
}

/// madsim's own checker: runs the scenario twice and compares every random draw and its time.
/// (This is how tokio's watch channel, which wakes receivers in a random order, was caught.)
#[test]
fn madsim_finds_no_nondeterminism_in_a_forwarded_write() {
    async fn scenario() {
        let cluster = SimCluster::start(SimOptions::default());
        let leader = wait_for_leader(&cluster).await;
        let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
        assert_eq!(create(&cluster, follower, "apple", 10).await, 201);
        assert_eq!(reserve(&cluster, leader, "apple", 4).await.0, 201);
        madsim::time::sleep(Duration::from_secs(1)).await;
    }
    std::thread::spawn(|| {
        madsim::runtime::Runtime::check_determinism(7, madsim::Config::default(), scenario)
    })
    .join()
    .expect("non-determinism detected");
}

mod suite {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use std::time::Instant;

    use stockraft::sim::bugs::PlantedBug;
    use stockraft::sim::{run_seed, RunOptions, RunReport};

    fn env_u64(name: &str) -> Option<u64> {
        std::env::var(name)
            .ok()
            .and_then(|value| value.parse().ok())
    }

    /// Options for `seed` from the environment (`scripts/sim.sh` sets these).
    fn options(seed: u64) -> RunOptions {
        let mut options = RunOptions::new(seed);
        if let Some(nodes) = env_u64("STOCKRAFT_SIM_NODES") {
            options.nodes = nodes;
        }
        if let Some(number) = env_u64("STOCKRAFT_SIM_BUG") {
            options.bug = PlantedBug::from_number(number)
                .unwrap_or_else(|| panic!("no planted bug numbered {number}"));
        }
        options
    }

    fn reproduce_command(report: &RunReport, options: &RunOptions) -> String {
        let bug = match options.bug {
            PlantedBug::None => String::new(),
            bug => format!(" --bug {}", bug as u64),
        };
        format!(
            "scripts/sim.sh --seed {} --nodes {}{bug}",
            report.seed, options.nodes
        )
    }

    /// Runs `count` seeds from `first` on two threads (the machine has two cores).
    fn run_batch(
        first: u64,
        count: u64,
        configure: impl Fn(u64) -> RunOptions + Sync,
    ) -> Vec<RunReport> {
        let next = AtomicU64::new(first);
        let reports = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= first + count {
                        return;
                    }
                    let report = run_seed(configure(seed));
                    reports.lock().unwrap().push(report);
                });
            }
        });
        let mut reports = reports.into_inner().unwrap();
        reports.sort_by_key(|r| r.seed);
        reports
    }

    #[test]
    fn a_batch_of_seeds_with_faults_keeps_every_promise() {
        let first = env_u64("STOCKRAFT_SIM_SEED").unwrap_or(1);
        let count = env_u64("STOCKRAFT_SIM_SEEDS").unwrap_or(100);
        let started = Instant::now();
        let reports = run_batch(first, count, options);
        let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
        let mut faults = std::collections::BTreeMap::new();
        for report in &reports {
            for (kind, n) in &report.faults {
                *faults.entry(*kind).or_insert(0) += n;
            }
        }
        if std::env::var("STOCKRAFT_SIM_TRACE").is_ok() {
            for report in &reports {
                eprintln!(
                    "--- trace of seed {} (hash {:016x})",
                    report.seed, report.trace_hash
                );
                for line in &report.trace {
                    eprintln!("  {line}");
                }
            }
        }
        for report in &failed {
            eprintln!(
                "\n--- seed {} FAILED; reproduce: {}",
                report.seed,
                reproduce_command(report, &options(report.seed))
            );
            for violation in &report.violations {
                eprintln!("  violation: {violation}");
            }
        }
        let ops: usize = reports.iter().map(|r| r.ops_checked).sum();
        let unknown: usize = reports.iter().map(|r| r.unknown_ops).sum();
        let unchecked: usize = reports.iter().map(|r| r.unchecked_skus).sum();
        let mut reservations = std::collections::BTreeMap::new();
        for report in &reports {
            for (status, n) in &report.reservations {
                *reservations.entry(*status).or_insert(0) += n;
            }
        }
        println!("faults injected: {faults:?}; unknown outcomes: {unknown}; SKU histories the checker gave up on: {unchecked}");
        println!("reservations by final status: {reservations:?}");
        let events: u64 = reports.iter().map(|r| r.feed_events).sum();
        let lost: u64 = reports.iter().map(|r| r.feed_events_lost).sum();
        let retained = reports.iter().filter(|r| r.feed_oldest_seq > 1).count();
        println!("feed: {events} events; {retained} seed(s) forgot some; the consumer lost {lost} to retention");
        println!(
            "sim: {} seeds, {} failed, {} ops checked, {:.1} s",
            reports.len(),
            failed.len(),
            ops,
            started.elapsed().as_secs_f64()
        );
        assert!(
            failed.is_empty(),
            "{} seed(s) failed (see above)",
            failed.len()
        );
    }

    /// Seeds that once failed, run by every CI run whatever the batch size. 900456: a leader
    /// power-cut and restarted at once served a stale linearizable read (openraft's leader
    /// restore with an unsynced committed index). 3005: after a wipe, the membership restore
    /// could not find the leader. 5163: with leader restore switched back on, the
    /// restart-leader-at-once fault catches the stale read on this seed.
    const REGRESSION_SEEDS: [u64; 3] = [900_456, 3_005, 5_163];

    #[test]
    fn seeds_that_once_failed_keep_every_promise() {
        for seed in REGRESSION_SEEDS {
            // As they were found: the product's retention and snapshot frequency.
            let options = |seed| RunOptions {
                small_retention: false,
                ..options(seed)
            };
            let report = run_seed(options(seed));
            assert!(
                report.passed(),
                "regression seed {seed} failed; reproduce: {}\n{:#?}",
                reproduce_command(&report, &options(seed)),
                report.violations
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_hash() {
        let seed = env_u64("STOCKRAFT_SIM_SEED").unwrap_or(42);
        let first = run_seed(options(seed));
        let second = run_seed(options(seed));
        assert!(!first.trace.is_empty());
        assert_eq!(
            first.trace_hash, second.trace_hash,
            "seed {seed} is not reproducible"
        );
    }

    /// Runs seeds with `bug` planted until one fails; returns the failing seed.
    fn seeds_until_caught(bug: PlantedBug, seeds_max: u64) -> Option<RunReport> {
        (1..=seeds_max)
            .map(|seed| {
                run_seed(RunOptions {
                    bug,
                    ..RunOptions::new(seed)
                })
            })
            .find(|r| !r.passed())
    }

    #[test]
    fn a_follower_answering_linearizable_reads_locally_is_caught() {
        // Without the batch client: this checks the read path, and a stale read shows only
        // when a follower's read meets a write it has not applied yet, under faults; the batch
        // client's traffic shifts every draw of a seed, and with it the first such meeting
        // comes at seed 29 (`scripts/sim.sh --seeds 40 --seed 1 --bug 1`: 29, 30, 37). Without
        // it, the first is seed 22 since the election timeouts became 300-600 ms and cut-off
        // nodes refuse at once (it was within the first 20 before), hence 40 seeds.
        let caught = (1..=40)
            .map(|seed| {
                run_seed(RunOptions {
                    bug: PlantedBug::StaleFollowerReads,
                    batch_clients: 0,
                    ..RunOptions::new(seed)
                })
            })
            .find(|report| !report.passed())
            .expect("the planted stale read went unnoticed");
        assert!(
            caught
                .violations
                .iter()
                .any(|v| v.contains("linearizability")),
            "caught, but not by the linearizability checker: {:?}",
            caught.violations
        );
    }

    #[test]
    fn a_reserve_that_skips_the_stock_check_is_caught() {
        let caught = seeds_until_caught(PlantedBug::ReserveSkipsStockCheck, 20)
            .expect("the planted oversell went unnoticed");
        assert!(!caught.violations.is_empty());
    }

    /// The planted bug's seeds fail, and (at least) the named checker says so.
    fn caught_by(bug: PlantedBug, checker_says: &str) {
        let caught = seeds_until_caught(bug, 20)
            .unwrap_or_else(|| panic!("the planted {bug:?} went unnoticed in 20 seeds"));
        assert!(
            caught
                .violations
                .iter()
                .any(|v| v.starts_with(checker_says)),
            "seed {} caught {bug:?}, but no violation starts with {checker_says:?}: {:#?}",
            caught.seed,
            caught.violations
        );
    }

    #[test]
    fn an_expiry_that_gives_the_units_back_twice_is_caught_by_conservation() {
        caught_by(PlantedBug::DoubleExpiry, "conservation of held-");
    }

    #[test]
    fn a_cart_that_holds_only_its_first_line_is_caught_as_a_half_cart() {
        caught_by(PlantedBug::HalfCart, "half cart:");
    }

    #[test]
    fn a_reserve_that_records_no_event_is_caught_by_the_feed_check() {
        caught_by(PlantedBug::ReserveRecordsNoEvent, "feed of node");
    }

    #[test]
    fn a_refused_reserve_that_records_an_event_is_caught_by_the_feed_check() {
        caught_by(PlantedBug::RefusedReserveRecordsAnEvent, "feed of node");
    }

    #[test]
    fn a_refused_batch_that_keeps_its_first_line_is_caught_as_not_all_or_none() {
        caught_by(PlantedBug::RefusedBatchKeepsItsFirstLine, "all or none:");
    }

    #[test]
    fn a_feed_page_that_skips_an_event_is_caught_by_the_subscriber() {
        caught_by(PlantedBug::FeedPageSkipsAnEvent, "subscriber:");
    }

    /// The small-retention variant: chunks are forgotten during the run, the checks compare what
    /// each node still keeps, and a slow consumer is told 410 and counts what it lost.
    #[test]
    fn with_a_small_retention_nodes_forget_events_and_a_slow_consumer_counts_what_it_lost() {
        let reports: Vec<RunReport> = (1..=4)
            .map(|n| {
                run_seed(RunOptions {
                    small_retention: true,
                    ..RunOptions::new(n * 10 + 1)
                })
            })
            .collect();
        for report in &reports {
            assert!(
                report.passed(),
                "seed {}: {:#?}",
                report.seed,
                report.violations
            );
        }
        assert!(
            reports.iter().any(|r| r.feed_oldest_seq > 1),
            "no run forgot an event"
        );
        assert!(
            reports.iter().any(|r| r.feed_events_lost > 0),
            "no consumer fell behind the retention"
        );
    }
}

/// A read after an acknowledged write must see it, also when the node that acknowledged it (or
/// any other) loses power and comes back at once. The simulated disk keeps only synced bytes,
/// so a restarted node may have forgotten how far the log was committed and applied: it must
/// learn that again from a quorum before it answers a linearizable read.
mod power_cut {
    use super::*;

    /// Which node loses power right after the write is acknowledged.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Victim {
        Leader,
        Follower,
    }

    /// Where the first reads after the restart go.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum FirstReadAt {
        /// The restarted node itself, before anything else is written.
        RestartedNode,
        /// The other nodes first: they forward to whoever they believe leads, which may be the
        /// restarted node.
        OtherNodes,
    }

    /// Acknowledges a reserve, power-cuts `victim` and restarts it at once (well inside the
    /// election timeout), then reads the record through every node. Returns each read's
    /// (node, status, version).
    fn run(seed: u64, victim: Victim, first: FirstReadAt) -> Vec<(u64, u16, Option<u64>)> {
        std::thread::spawn(move || {
            let mut runtime =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.set_time_limit(Duration::from_secs(300));
            runtime.block_on(async move {
                let cluster = SimCluster::start(SimOptions::default());
                let leader = wait_for_leader(&cluster).await;
                assert_eq!(create(&cluster, leader, "apple", 10).await, 201);
                let (status, body) = reserve(&cluster, leader, "apple", 3).await;
                assert_eq!(status, 201, "{body:?}");
                assert_eq!(body.map(|b| b.new_version), Some(2));

                let restarted = match victim {
                    Victim::Leader => leader,
                    Victim::Follower => cluster.ids().into_iter().find(|id| *id != leader).unwrap(),
                };
                cluster.restart(restarted);
                // A lossy, slow network right after the restart (as in seed 900456): the
                // restarted node's replication stream may take a while to learn what its peers
                // hold, while heartbeats already confirm its leadership.
                cluster.degrade_network(0.2, 150);
                let healed_at = madsim::time::Instant::now() + LOSSY_FOR;
                let others: Vec<u64> = cluster
                    .ids()
                    .into_iter()
                    .filter(|id| *id != restarted)
                    .collect();
                let order: Vec<u64> = match first {
                    FirstReadAt::RestartedNode => [vec![restarted], others].concat(),
                    FirstReadAt::OtherNodes => [others, vec![restarted]].concat(),
                };
                let mut reads = Vec::new();
                for node in order {
                    reads.push(read_until_answered(&cluster, node, "apple", healed_at).await);
                }
                reads
            })
        })
        .join()
        .expect("simulation thread panicked")
    }

    /// Reads `sku` through `node` until it answers 200 or 404 (a 503 or a lost message means
    /// "try again": refusing is allowed, a stale answer is not). Returns (node, status, version).
    async fn read_until_answered(
        cluster: &SimCluster,
        node: u64,
        sku: &str,
        healed_at: madsim::time::Instant,
    ) -> (u64, u16, Option<u64>) {
        let deadline = madsim::time::Instant::now() + Duration::from_secs(30);
        loop {
            if madsim::time::Instant::now() >= healed_at {
                cluster.restore_network();
            }
            let (status, version, code) = read(cluster, node, sku, Consistency::Linearizable).await;
            if status == 200 || status == 404 {
                return (node, status, version);
            }
            if madsim::time::Instant::now() > deadline {
                panic!("node {node} answered no read within 30 s; last answer {status} {code:?}");
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How long the network stays lossy after the restart.
    const LOSSY_FOR: Duration = Duration::from_secs(2);

    /// Seeds per scenario: each draws different latencies, losses and election timeouts. With
    /// openraft's leader restore enabled (the bug of seed 900456), most seeds serve version 1.
    const SEEDS: u64 = 16;

    fn every_read_sees_the_acknowledged_write(victim: Victim, first: FirstReadAt) {
        for seed in 1..=SEEDS {
            for (node, status, version) in run(seed, victim, first) {
                assert_eq!(
                    (status, version),
                    (200, Some(2)),
                    "seed {seed}, {victim:?} power-cut, first read at {first:?}: node {node} \
                     answered {status} with version {version:?} after version 2 was acknowledged"
                );
            }
        }
    }

    #[test]
    fn a_leader_power_cut_and_restarted_at_once_serves_the_acknowledged_write_at_once() {
        every_read_sees_the_acknowledged_write(Victim::Leader, FirstReadAt::RestartedNode);
    }

    #[test]
    fn reads_forwarded_to_a_restarted_leader_see_the_acknowledged_write() {
        every_read_sees_the_acknowledged_write(Victim::Leader, FirstReadAt::OtherNodes);
    }

    #[test]
    fn a_follower_power_cut_and_restarted_at_once_serves_the_acknowledged_write() {
        every_read_sees_the_acknowledged_write(Victim::Follower, FirstReadAt::RestartedNode);
        every_read_sees_the_acknowledged_write(Victim::Follower, FirstReadAt::OtherNodes);
    }
}

/// Nodes outside the membership, and faults the cluster refuses.
mod outside_the_membership {
    use super::*;
    use stockraft::client::wire::{codes, Health, MembersRequest, TransferLeaderRequest};
    use stockraft::sim::faults::Fault;
    use stockraft::sim::run::FaultOutcome;

    fn simulate<T: Send + 'static>(
        seed: u64,
        scenario: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
            + Send
            + 'static,
    ) -> T {
        std::thread::spawn(move || {
            let mut runtime =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.set_time_limit(Duration::from_secs(300));
            runtime.block_on(scenario())
        })
        .join()
        .expect("simulation thread panicked")
    }

    fn members(ids: &[u64]) -> MembersRequest {
        MembersRequest {
            ids: ids.iter().copied().collect(),
            keep_as_learners: false,
        }
    }

    /// Removes `node` through `via`, then power-cuts it, wipes its disk and starts it empty.
    async fn remove_and_wipe(cluster: &SimCluster, node: u64, via: u64) {
        let answer = cluster.admin_client(via).remove(&members(&[node])).await;
        let status = answer.as_ref().map(|a| a.status).ok();
        assert_eq!(status, Some(200), "removing node {node}: {answer:?}");
        cluster.kill(node);
        cluster.wipe(node);
        cluster.restart(node);
    }

    #[test]
    fn an_empty_node_refuses_at_once_as_not_a_member_instead_of_claiming_a_record_is_missing() {
        simulate(3, || {
            Box::pin(async {
                let cluster = SimCluster::start(SimOptions::default());
                let leader = wait_for_leader(&cluster).await;
                assert_eq!(create(&cluster, leader, "apple", 10).await, 201);
                let empty = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
                remove_and_wipe(&cluster, empty, leader).await;
                madsim::time::sleep(Duration::from_secs(1)).await;

                let client = cluster.client(empty).with_timeout(CALL_TIMEOUT);
                let not_a_member = |what: &str, answer: Option<(u16, Option<String>)>| {
                    assert_eq!(
                        answer,
                        Some((503, Some(codes::NOT_A_MEMBER.to_owned()))),
                        "{what} on the empty node"
                    );
                };
                for consistency in [Consistency::Local, Consistency::Linearizable] {
                    let asked_at = madsim::time::Instant::now();
                    let answer = client.read(STORE, "apple", consistency).await;
                    let answer = answer
                        .ok()
                        .map(|a| (a.status, a.error_code().map(str::to_owned)));
                    not_a_member(&format!("a {consistency:?} read"), answer);
                    assert!(
                        asked_at.elapsed() < Duration::from_millis(500),
                        "refused late"
                    );
                }
                let asked_at = madsim::time::Instant::now();
                let body = ReserveRequest {
                    qty: 1,
                    expected_version: None,
                    ttl_seconds: None,
                };
                let answer = client
                    .reserve(STORE, "apple", &body, &WriteOptions::default())
                    .await;
                let answer = answer
                    .ok()
                    .map(|a| (a.status, a.error_code().map(str::to_owned)));
                not_a_member("a reserve", answer);
                assert!(
                    asked_at.elapsed() < Duration::from_millis(500),
                    "refused late"
                );
                let answer = cluster
                    .admin_client(empty)
                    .promote(&members(&[empty]))
                    .await;
                let answer = answer
                    .ok()
                    .map(|a| (a.status, a.error_code().map(str::to_owned)));
                not_a_member("an admin call", answer);
                // The members still serve the record.
                let (status, version, _) =
                    read(&cluster, leader, "apple", Consistency::Linearizable).await;
                assert_eq!((status, version), (200, Some(1)));
            })
        });
    }

    #[test]
    fn a_refused_fault_is_not_healed_so_no_healthy_node_is_restarted() {
        simulate(5, || {
            Box::pin(async {
                let cluster = SimCluster::start(SimOptions::default());
                let leader = wait_for_leader(&cluster).await;
                let others: Vec<u64> = cluster
                    .ids()
                    .into_iter()
                    .filter(|id| *id != leader)
                    .collect();
                // With one follower down, removing the leader would leave voters {down, up}
                // with only one reachable: the cluster refuses the removal.
                cluster.kill(others[0]);
                madsim::time::sleep(Duration::from_secs(3)).await;
                let uptime = |health: Option<Health>| health.map(|h| h.uptime);
                let before = uptime(cluster.health(leader).await).expect("the leader answers");
                let (outcome, trace) =
                    crate::play_now(&cluster, Fault::WipeAndRejoin { node: leader }, 500).await;
                assert_eq!(outcome, FaultOutcome::Refused, "{trace:?}");
                let after = uptime(cluster.health(leader).await).expect("the leader still answers");
                assert!(
                    after > before,
                    "node {leader} was restarted although its fault was refused (uptime {before} -> {after})"
                );
            })
        });
    }

    #[test]
    fn wipe_and_rejoin_goes_through_a_member_when_another_node_is_already_wiped() {
        simulate(11, || {
            Box::pin(async {
                let cluster = SimCluster::start(SimOptions::default());
                let mut leader = wait_for_leader(&cluster).await;
                if leader == 1 {
                    let body = TransferLeaderRequest { to: 3 };
                    let answer = cluster.admin_client(1).transfer_leader(&body).await;
                    assert_eq!(
                        answer.as_ref().map(|a| a.status).ok(),
                        Some(200),
                        "{answer:?}"
                    );
                    leader = wait_for_leader(&cluster).await;
                }
                // Node 1, a follower, is wiped and not re-added; the fault on the other follower
                // asks the remaining nodes in id order, node 1 first, which must be skipped (not
                // a member) rather than taken as the cluster refusing.
                assert_ne!(leader, 1);
                let (wiped, target) = (1, 5 - leader);
                remove_and_wipe(&cluster, wiped, leader).await;
                madsim::time::sleep(Duration::from_secs(1)).await;
                let (outcome, trace) =
                    crate::play_now(&cluster, Fault::WipeAndRejoin { node: target }, 500).await;
                assert_eq!(outcome, FaultOutcome::Applied, "{trace:?}");
            })
        });
    }
}

/// A voter restarted on an empty disk while still a member (`identity`).
mod wiped_voter {
    use super::*;
    use stockraft::client::wire::RaftRole;

    /// The scenario the identity checks exist for: a lagging voter and a wiped one form a
    /// majority. Were the wiped voter's vote to count, the lagging voter would lead without the
    /// writes only the (now crashed) leader and the wiped voter had acknowledged, and they would
    /// be lost. Instead no leader is elected until the old leader is back, and nothing is lost.
    #[test]
    fn a_wiped_voter_never_votes_so_a_lagging_voter_cannot_lead_without_the_committed_writes() {
        std::thread::spawn(|| {
            let mut runtime =
                madsim::runtime::Runtime::with_seed_and_config(21, madsim::Config::default());
            runtime.set_time_limit(Duration::from_secs(300));
            runtime.block_on(scenario())
        })
        .join()
        .expect("simulation thread panicked");
    }

    /// The simulation's `wipe-in-place` fault, both ways, on a cluster that is otherwise
    /// healthy: it takes effect, the wiped voter is kept out (its heal checks that and notes a
    /// violation otherwise), the cluster keeps serving, and the operator's way out (remove,
    /// start empty, add as a learner, promote) brings the node back.
    #[test]
    fn a_voter_wiped_in_place_is_kept_out_and_the_way_out_brings_it_back() {
        for (seed, peers_reachable) in [(31, true), (32, false)] {
            std::thread::spawn(move || {
                let mut runtime =
                    madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
                runtime.set_time_limit(Duration::from_secs(300));
                runtime.block_on(wipe_in_place(peers_reachable))
            })
            .join()
            .unwrap_or_else(|_| panic!("peers_reachable={peers_reachable}: the run panicked"));
        }
    }

    async fn wipe_in_place(peers_reachable: bool) {
        use stockraft::client::wire::{AddLearnerRequest, MemberRole, MembersRequest};
        use stockraft::sim::faults::Fault;
        use stockraft::sim::run::FaultOutcome;

        let cluster = SimCluster::start(SimOptions::default());
        let leader = wait_for_leader(&cluster).await;
        madsim::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(create(&cluster, leader, "apple", 10).await, 201);
        let victim = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
        let (outcome, trace) = crate::play_now(
            &cluster,
            Fault::WipeInPlace {
                node: victim,
                peers_reachable,
            },
            3_000,
        )
        .await;
        assert_eq!(outcome, FaultOutcome::Applied, "{trace:?}");
        assert_eq!(cluster.take_violations(), Vec::<String>::new(), "{trace:?}");

        // Healed: removed, and started empty. Writes go on; re-add and promote it.
        let leader = cluster.claimed_leader().await.expect("a leader");
        let (status, _) = reserve(&cluster, leader, "apple", 1).await;
        assert_eq!(status, 201);
        let admin = cluster.admin_client(leader).with_timeout(CALL_TIMEOUT);
        let body = AddLearnerRequest {
            id: victim,
            addr: stockraft::sim::cluster::address(victim),
            wait: true,
        };
        let added = admin.add_learner(&body).await.map(|a| a.status);
        assert_eq!(added.ok(), Some(200), "re-adding node {victim}");
        let promote = MembersRequest {
            ids: [victim].into(),
            keep_as_learners: false,
        };
        let mut role = None;
        for _ in 0..50 {
            let _ = admin.promote(&promote).await;
            let view = admin.cluster().await.ok().and_then(|a| a.ok().ok());
            role = view.and_then(|v| v.data.members.into_iter().find(|m| m.id == victim));
            if role.as_ref().is_some_and(|m| m.role == MemberRole::Voter) {
                break;
            }
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            role.as_ref().is_some_and(|m| m.role == MemberRole::Voter),
            "node {victim} is back as a voter: {role:?}"
        );
        let mut local = (0, None);
        for _ in 0..50 {
            let (status, version, _) = read(&cluster, victim, "apple", Consistency::Local).await;
            local = (status, version);
            if local == (200, Some(2)) {
                break;
            }
            madsim::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(local, (200, Some(2)), "node {victim} caught up");
    }

    async fn scenario() {
        let cluster = SimCluster::start(SimOptions::default());
        let leader = wait_for_leader(&cluster).await;
        let followers: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        let (lagging, wiped) = (followers[0], followers[1]);
        // Every node learns every member's incarnation within a second or so.
        madsim::time::sleep(Duration::from_secs(3)).await;

        // Writes that only the leader and `wiped` hold.
        cluster.partition(&[lagging], &[leader, wiped]);
        let skus: Vec<String> = (0..5).map(|i| format!("sku-{i}")).collect();
        for sku in &skus {
            assert_eq!(create(&cluster, leader, sku, 10).await, 201, "create {sku}");
        }

        // `wiped` loses its disk and starts again while cut off (no peer can tell it that it
        // is still a voter); then the leader crashes and the network heals.
        cluster.kill(wiped);
        cluster.wipe(wiped);
        cluster.partition(&[wiped], &[leader, lagging]);
        cluster.restart(wiped);
        madsim::time::sleep(Duration::from_secs(2)).await;
        cluster.kill(leader);
        cluster.heal();

        // `lagging` and `wiped` are two of three voters: with `wiped`'s vote, `lagging` would
        // lead. Many election timeouts later, nobody leads.
        for _ in 0..40 {
            madsim::time::sleep(Duration::from_millis(250)).await;
            for id in [lagging, wiped] {
                let role = cluster.health(id).await.map(|h| h.raft.role);
                assert_ne!(
                    role,
                    Some(RaftRole::Leader),
                    "node {id} leads without a quorum"
                );
            }
        }
        assert_eq!(
            cluster.applied(wiped),
            None,
            "the wiped voter was sent entries"
        );

        // The old leader comes back: the cluster serves again, every acknowledged write there.
        cluster.restart(leader);
        let mut served = Vec::new();
        for sku in &skus {
            let mut answer = (0, None, None);
            for _ in 0..100 {
                answer = read(&cluster, lagging, sku, Consistency::Linearizable).await;
                if answer.0 != 0 && answer.0 != 503 {
                    break;
                }
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
            served.push((sku.clone(), answer.0, answer.1));
        }
        assert!(
            served
                .iter()
                .all(|(_, status, version)| *status == 200 && *version == Some(1)),
            "an acknowledged write was lost: {served:?}"
        );
    }
}
