//! The leader's expiry proposer: the one place that proposes `Command::Expire` (and, on the
//! same tick, the one that proposes `Command::StartFeed` when the leader's store lacks the event
//! feed: see `App::start_feed_if_missing`).
//!
//! A hold past its deadline must come back by itself, on every replica at the same log index.
//! The state machine cannot do it alone: apply runs only when an entry arrives, and must not
//! scan. So the leader, every `reservations.expiry_interval_ms`, reads the holds due at the
//! stamp its next proposal would carry (its clock, bounded like every proposal's stamp:
//! `inventory::proposal_stamp`) from the due index (`StateMachineStore::due_holds`, a bounded
//! range scan, off the write path), and proposes an expiry naming at most
//! [`EXPIRE_IDS_MAX`] of them through the ordinary propose path.
//!
//! **The log decides, not the proposer.** Each replica expires, at that entry, those named
//! holds that are still held and due at the entry's log time; one committed or released in the
//! meantime is skipped. So a stale read here, a duplicate proposal by a leader that lost its
//! term, or two leaders' proposals for the same hold, all end the hold exactly once. A new
//! leader finds every due hold in its own due index: a leader change or restart loses no
//! expiry.
//!
//! One proposal is in flight at a time (the loop awaits it). A full batch is followed by the
//! next without waiting for the tick, so many holds due in the same second drain as a run of
//! entries, interleaved with client writes. **How fast depends on whether clients are
//! writing.** On an idle leader batches of [`EXPIRE_IDS_MAX`] follow each other at the speed of
//! the log. While client commands are in flight on the leader, batches are of
//! [`PACED_BATCH_IDS`] and paced to `reservations.expiry_per_second_under_load`: an expiry
//! costs the state machine about four writes (the reservation, its due entry, the retention
//! queue, the record) against one or two for a reserve, so an unpaced storm of 100,000 holds
//! due in one second took 30% of the write throughput and multiplied the writes' p99 by 7;
//! paced at 1,000/s, 1.5 (`scripts/bench.sh --holds`, three nodes on one 2-core machine). Pacing delays only the units' return to `qty`: a hold past its
//! deadline can no longer be committed or released (apply refuses it by log time), so no
//! outcome changes. Otherwise the proposer waits for the next tick. A failure (not the leader
//! any more, overloaded, short of disk space) is logged and retried at the next tick. On a
//! follower the proposer does nothing. It ends when Raft stops or the node's [`App`] is
//! dropped.

use std::sync::Weak;
use std::time::Duration;

use openraft_rt::WatchReceiver;
use tokio::time::Instant;

use super::{App, ProposeError};
use crate::inventory::{self, Command, CommandResult, EXPIRE_IDS_MAX};
use crate::storage::StorageError;

/// Most holds one expiry names while client commands are in flight: small entries, so a client
/// write waits behind little expiry work (an idle leader names [`EXPIRE_IDS_MAX`]).
pub const PACED_BATCH_IDS: usize = 100;

/// What one round of the expiry proposer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryRound {
    /// This node is not the leader: nothing read, nothing proposed.
    NotLeader,
    /// No hold is due.
    NothingDue,
    /// An expiry naming `named` holds was applied; `expired` of them were still held and due.
    Expired { named: usize, expired: u64 },
}

/// Why a round of the expiry proposer (or the feed start on its tick) failed (retried at the
/// next tick).
#[derive(Debug, thiserror::Error)]
pub enum ExpiryError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Propose(#[from] ProposeError),
}

impl App {
    /// One round of the expiry proposer (module docs): on the leader, proposes the expiry of at
    /// most `limit` (at most [`EXPIRE_IDS_MAX`]) due holds and waits for it to apply.
    pub async fn propose_due_expiries(&self, limit: usize) -> Result<ExpiryRound, ExpiryError> {
        if !self.is_leader() {
            return Ok(ExpiryRound::NotLeader);
        }
        let stamp_ms = inventory::proposal_stamp(self.clock.now_ms(), self.state.log_time_ms()?);
        let ids = self
            .state
            .due_holds(stamp_ms, limit.clamp(1, EXPIRE_IDS_MAX))?;
        if ids.is_empty() {
            return Ok(ExpiryRound::NothingDue);
        }
        let named = ids.len();
        let response = self.propose(Command::Expire { ids }, None).await?;
        let expired = match response.result {
            CommandResult::Expired { count } => count,
            other => {
                tracing::warn!(?other, "an expiry was answered with something else");
                0
            }
        };
        Ok(ExpiryRound::Expired { named, expired })
    }

    /// Whether this node is the leader now, as its Raft metrics say.
    pub(super) fn is_leader(&self) -> bool {
        self.with_metrics(|metrics| {
            metrics.state == openraft::ServerState::Leader
                && metrics.current_leader == Some(self.id)
        })
    }
}

/// How long expiring `named` holds takes at `per_second`.
fn pace(named: usize, per_second: u64) -> Duration {
    Duration::from_secs_f64(named as f64 / per_second.max(1) as f64)
}

/// Runs the expiry proposer of `app` every `period` until Raft stops or the app is dropped
/// (module docs). Holds the app weakly: the task must not keep a stopped node alive.
/// Raft's server metrics, which a node's background loops watch to notice that Raft stopped.
pub(super) type ServerMetrics = openraft::alias::WatchReceiverOf<
    crate::raft::TypeConfig,
    openraft::metrics::RaftServerMetrics<crate::raft::TypeConfig>,
>;

/// Sleeps `period`, waking early only to notice that Raft stopped: false once it has.
pub(super) async fn sleep_while_running(server: &mut ServerMetrics, period: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + period;
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(wait, server.changed()).await {
            Err(_tick) => return true,
            Ok(Ok(())) => {}
            Ok(Err(_stopped)) => return false,
        }
    }
}

pub async fn propose_expiries(app: Weak<App>, period: Duration) {
    let Some(mut server) = app.upgrade().map(|app| app.raft().server_metrics()) else {
        return;
    };
    loop {
        if !sleep_while_running(&mut server, period).await {
            return;
        }
        let Some(app) = app.upgrade() else {
            return;
        };
        if let Err(error) = app.start_feed_if_missing().await {
            tracing::warn!(%error, "could not start the event feed; retrying");
        }
        let per_second = app.config().reservations.expiry_per_second_under_load;
        // Full batches follow each other (paced while clients write); less waits for the tick.
        loop {
            let paced = app.proposals_in_flight() > 0;
            let limit = if paced {
                PACED_BATCH_IDS
            } else {
                EXPIRE_IDS_MAX
            };
            let started = Instant::now();
            match app.propose_due_expiries(limit).await {
                Ok(ExpiryRound::Expired { named, expired }) => {
                    tracing::debug!(named, expired, paced, "proposed the expiry of due holds");
                    if named < limit {
                        break;
                    }
                    if paced || app.proposals_in_flight() > 0 {
                        tokio::time::sleep_until(started + pace(named, per_second)).await;
                    }
                }
                Ok(ExpiryRound::NotLeader | ExpiryRound::NothingDue) => break,
                Err(error) => {
                    tracing::warn!(%error, "could not propose the expiry of due holds; retrying");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_batch_takes_its_share_of_a_second() {
        assert_eq!(pace(PACED_BATCH_IDS, 1_000), Duration::from_millis(100));
        assert_eq!(pace(1, 1_000_000), Duration::from_micros(1));
        // A rate of 0 (refused by the config's validation) would not divide by zero.
        assert_eq!(pace(5, 0), Duration::from_secs(5));
    }
}
