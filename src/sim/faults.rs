//! Fault schedules drawn from the seed, and the per-node clock skew the simulation injects.
//!
//! A schedule is a sequence of non-overlapping faults, each applied for a while and then healed,
//! so every run mixes several kinds and always ends healed. madsim has one global clock, so
//! clock drift is modelled where it matters to stockraft: the leader's wall clock, which stamps
//! every proposal ([`clock_skew_ms`] is added in `app::wall_clock_ms`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;

use madsim::rand::Rng;
use madsim::task::NodeId as HostId;

use crate::raft::NodeId;

/// One kind of fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Cut `minority` off from the rest, both directions.
    Partition { minority: Vec<NodeId> },
    /// Cut whoever leads when the fault starts off from everyone.
    IsolateLeader,
    /// Drop every message from `from` to `to` (one direction only).
    ClogLink { from: NodeId, to: NodeId },
    /// Lose a fraction of all messages and delay the rest by up to `latency_ms_max`.
    Lossy { loss_rate: f64, latency_ms_max: u64 },
    /// Kill a node (unflushed writes lost) and restart it from its disk when healed.
    Crash { node: NodeId },
    /// Kill whoever leads, restart it when healed.
    CrashLeader,
    /// Power-cut whoever leads and restart it at once, before any follower's election timeout:
    /// it comes back with only what it had synced (its committed index and state machine may
    /// be behind what it acknowledged). The network is lossy and slow meanwhile (as in seed
    /// 900456), so the restarted node learns slowly what its peers hold; healed by restoring
    /// the network.
    RestartLeaderAtOnce { loss_rate: f64, latency_ms_max: u64 },
    /// Snapshot and purge the log on `node` now, then snapshot every second until healed.
    SnapshotStorm { node: NodeId },
    /// Shift `node`'s wall clock by `offset_ms` (it stamps proposals while it leads).
    ClockSkew { node: NodeId, offset_ms: i64 },
    /// Demote `node` to learner through the admin API; promote it back when healed.
    Demote { node: NodeId },
    /// Ask the leader to hand leadership to `to` (admin API); nothing to heal.
    TransferLeader { to: NodeId },
    /// Remove `node` from the cluster, kill it and wipe its disk; when healed, start it empty and
    /// re-add it (learner, then voter). Skipped if the removal is refused.
    WipeAndRejoin { node: NodeId },
    /// Kill voter `node`, wipe its disk and start it empty **without** removing it (a lost disk,
    /// a wrong path). With `peers_reachable` it must refuse to start (its peers list it as a
    /// voter); without, its start-time question goes unanswered (it is cut off while starting,
    /// then the cut is healed) and its peers must refuse it by incarnation: it never receives
    /// an entry and its votes never count. Healed the operator's way: remove it, wipe it,
    /// start it empty (re-added at the end). Skipped unless every node is a voter.
    WipeInPlace { node: NodeId, peers_reachable: bool },
}

impl Fault {
    /// A short stable name, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Partition { .. } => "partition",
            Fault::IsolateLeader => "isolate-leader",
            Fault::ClogLink { .. } => "clog-link",
            Fault::Lossy { .. } => "lossy-network",
            Fault::Crash { .. } => "crash",
            Fault::CrashLeader => "crash-leader",
            Fault::RestartLeaderAtOnce { .. } => "restart-leader-at-once",
            Fault::SnapshotStorm { .. } => "snapshot-storm",
            Fault::ClockSkew { .. } => "clock-skew",
            Fault::Demote { .. } => "demote-voter",
            Fault::TransferLeader { .. } => "transfer-leader",
            Fault::WipeAndRejoin { .. } => "wipe-and-rejoin",
            Fault::WipeInPlace { .. } => "wipe-in-place",
        }
    }
}

/// A fault and when it is active, in ms of simulated time from the start of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    pub start_ms: u64,
    pub duration_ms: u64,
    pub fault: Fault,
}

/// Bounds of a generated schedule.
pub const FAULTS_PER_RUN_MAX: usize = 8;
const FAULT_DURATION_MS_MIN: u64 = 300;
const FAULT_DURATION_MS_MAX: u64 = 4_000;
const FAULT_GAP_MS_MAX: u64 = 1_500;
/// The first fault starts at least this long (ms) after the workload starts, so clients are busy.
const FIRST_FAULT_MS_MIN: u64 = 100;
/// Smallest gap between one fault's heal and the next fault, in ms.
const FAULT_GAP_MS_MIN: u64 = 50;
/// Range a degraded network's latency bound is drawn from, in ms: up to four heartbeat intervals
/// (50 ms) of delay per message, so heartbeats and votes arrive late and out of order.
const FAULT_LATENCY_MS_MAX: Range<u64> = 20..200;
/// A skewed clock's offsets, in ms: a minute behind or 45 s ahead, far beyond real drift, so a
/// skewed leader's stamps plainly go back or jump ahead.
const CLOCK_SKEW_BEHIND_MS: i64 = -60_000;
const CLOCK_SKEW_AHEAD_MS: i64 = 45_000;

/// Draws a schedule of non-overlapping faults that fits in `run_ms`.
pub fn schedule(rng: &mut impl Rng, nodes: u64, run_ms: u64) -> Vec<Scheduled> {
    let mut faults = Vec::new();
    let mut at = rng.gen_range(FIRST_FAULT_MS_MIN..FAULT_GAP_MS_MAX);
    while faults.len() < FAULTS_PER_RUN_MAX {
        let duration_ms = rng.gen_range(FAULT_DURATION_MS_MIN..FAULT_DURATION_MS_MAX);
        if at + duration_ms > run_ms {
            break;
        }
        faults.push(Scheduled {
            start_ms: at,
            duration_ms,
            fault: draw(rng, nodes),
        });
        at += duration_ms + rng.gen_range(FAULT_GAP_MS_MIN..FAULT_GAP_MS_MAX);
    }
    faults
}

fn draw(rng: &mut impl Rng, nodes: u64) -> Fault {
    let node = rng.gen_range(1..=nodes);
    match rng.gen_range(0..13) {
        0 => {
            // A minority that starts at `node`: (n - 1) / 2 consecutive ids, wrapping around.
            let minority_size = (nodes - 1) / 2;
            let minority = (0..minority_size)
                .map(|i| (node - 1 + i) % nodes + 1)
                .collect();
            Fault::Partition { minority }
        }
        1 => Fault::IsolateLeader,
        2 => Fault::ClogLink {
            from: node,
            to: node % nodes + 1,
        },
        3 => Fault::Lossy {
            loss_rate: [0.0, 0.05, 0.1, 0.2][rng.gen_range(0..4)],
            latency_ms_max: rng.gen_range(FAULT_LATENCY_MS_MAX),
        },
        4 => Fault::Crash { node },
        5 => Fault::CrashLeader,
        6 => Fault::SnapshotStorm { node },
        7 => Fault::Demote { node },
        8 => Fault::WipeAndRejoin { node },
        9 => Fault::TransferLeader { to: node },
        12 => Fault::WipeInPlace {
            node,
            peers_reachable: rng.gen_bool(0.5),
        },
        10 => Fault::RestartLeaderAtOnce {
            loss_rate: [0.05, 0.1, 0.2][rng.gen_range(0..3)],
            latency_ms_max: rng.gen_range(FAULT_LATENCY_MS_MAX),
        },
        _ => Fault::ClockSkew {
            node,
            offset_ms: if rng.gen_bool(0.5) {
                CLOCK_SKEW_BEHIND_MS
            } else {
                CLOCK_SKEW_AHEAD_MS
            },
        },
    }
}

thread_local! {
    /// Clock offsets by simulated host. Per OS thread: one madsim run lives on one thread, and
    /// runs may proceed in parallel threads of one process.
    static CLOCK_SKEW_MS: RefCell<BTreeMap<HostId, i64>> = const { RefCell::new(BTreeMap::new()) };
}

/// The clock a simulated node stamps proposals with: the (virtual) wall clock plus the skew
/// of the host it runs on ([`set_clock_skew`]), injected through `node::Seams`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SkewedClock;

impl crate::app::Clock for SkewedClock {
    fn now_ms(&self) -> u64 {
        crate::app::wall_clock_ms().saturating_add_signed(clock_skew_ms())
    }
}

/// The wall-clock offset of the simulated host this code runs on (0 if none is set).
pub fn clock_skew_ms() -> i64 {
    if madsim::runtime::Handle::try_current().is_err() {
        return 0;
    }
    let host = madsim::plugin::node();
    CLOCK_SKEW_MS.with(|skews| skews.borrow().get(&host).copied().unwrap_or(0))
}

pub(crate) fn set_clock_skew(host: HostId, offset_ms: i64) {
    CLOCK_SKEW_MS.with(|skews| {
        let mut skews = skews.borrow_mut();
        if offset_ms == 0 {
            skews.remove(&host);
        } else {
            skews.insert(host, offset_ms);
        }
    });
}

pub(crate) fn clear_clock_skews() {
    CLOCK_SKEW_MS.with(|skews| skews.borrow_mut().clear());
}
