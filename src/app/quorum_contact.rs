//! Whether this node is in contact with a quorum: the fact that lets a node cut off from the
//! majority answer its clients at once (503) instead of holding them until the write deadline.
//!
//! Why: measured on real processes cut apart by blackhole routes (`scripts/partition.sh`), a
//! leader cut off from both peers cost clients a 4.1 s write gap, twice a leader crash. The
//! time went to requests *waiting* on nodes that could not serve them: the isolated leader kept
//! its proposals pending until the 5 s write deadline (it cannot commit them, and nothing tells
//! it it was deposed until the partition heals), and a cut-off node kept retrying a leader it
//! could not reach. A client whose writes rotate over the nodes soon has every request stuck
//! on the cut-off node. Answering 503 there at once sends the client to a node that can serve.
//!
//! The rule ([`judge`]), with the **lease** being openraft's leader lease
//! (`election_timeout_max`: a leader whose quorum has not acknowledged it for that long stops
//! accepting proposals, and the followers may already have elected another):
//! - a **leader** is cut off once its last quorum acknowledgement is older than the lease
//!   (never when it is the only voter: it is its own quorum);
//! - a **follower** (or candidate, or learner) once it has not accepted a leader's append for
//!   longer than the lease: by then its own election timer has fired, and the majority, if it
//!   is elsewhere, may be electing without it.
//!
//! A node that never had contact (just started) is *not* judged cut off: it waits for its first
//! leader as before. The judgement only ever makes a node refuse sooner; it never lets one
//! serve: Raft's own rules (a quorum for every commit and read index) are untouched, so a
//! minority still acknowledges nothing and serves no linearizable read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::{Instant as _, ServerState};

use crate::raft::RaftMetrics;

/// The last time this node accepted a leader's append, and the lease it is judged against.
#[derive(Debug)]
pub struct QuorumContact {
    /// When the node started: the origin of [`QuorumContact::last_append_ms`].
    started: tokio::time::Instant,
    /// Milliseconds after `started` of the last accepted append, plus one (0: none yet).
    last_append_ms: AtomicU64,
    lease: Duration,
}

impl QuorumContact {
    pub fn new(lease: Duration) -> Self {
        assert!(
            !lease.is_zero(),
            "a lease of zero would call every node cut off"
        );
        Self {
            started: tokio::time::Instant::now(),
            last_append_ms: AtomicU64::new(0),
            lease,
        }
    }

    /// Notes that a leader's append was accepted now.
    pub fn note_append(&self) {
        let now_ms = self.started.elapsed().as_millis() as u64 + 1;
        self.last_append_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Why this node is cut off from a quorum, judged from `metrics` (see [`judge`]), if it is.
    pub fn lost(&self, metrics: &RaftMetrics) -> Option<String> {
        self.lost_at(metrics, tokio::time::Instant::now())
    }

    /// [`QuorumContact::lost`] as of `now`.
    fn lost_at(&self, metrics: &RaftMetrics, now: tokio::time::Instant) -> Option<String> {
        // A sole voter is its own quorum: openraft acknowledges nothing for it.
        let sole_voter = metrics.membership_config.membership().voter_ids().count() <= 1;
        let since_quorum_ack = if sole_voter {
            Some(Duration::ZERO)
        } else {
            metrics
                .last_quorum_acked
                .as_ref()
                .map(|acked| acked.elapsed())
        };
        let since_append = match self.last_append_ms.load(Ordering::Relaxed) {
            0 => None,
            plus_one => {
                let appended_at = self.started + Duration::from_millis(plus_one - 1);
                Some(now.saturating_duration_since(appended_at))
            }
        };
        judge(metrics.state, since_quorum_ack, since_append, self.lease)
    }
}

/// The rule of the module docs: `since_quorum_ack` is a leader's time since its quorum last
/// acknowledged it, `since_append` the time since this node last accepted a leader's append
/// (None: never).
pub fn judge(
    state: ServerState,
    since_quorum_ack: Option<Duration>,
    since_append: Option<Duration>,
    lease: Duration,
) -> Option<String> {
    let (age, what) = match state {
        ServerState::Leader => (since_quorum_ack?, "no quorum acknowledged this leader"),
        ServerState::Follower | ServerState::Candidate | ServerState::Learner => {
            (since_append?, "this node heard from no leader")
        }
        ServerState::Shutdown => return Some("this node is shutting down".into()),
    };
    (age > lease).then(|| {
        format!(
            "{what} for {} ms (more than the {} ms lease): it is cut off from the cluster's \
             majority; send requests to another node",
            age.as_millis(),
            lease.as_millis()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1_000);

    fn ms(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    #[test]
    fn a_leader_is_cut_off_once_its_quorum_acknowledgement_is_older_than_the_lease() {
        assert_eq!(judge(ServerState::Leader, ms(900), None, LEASE), None);
        let lost = judge(ServerState::Leader, ms(1_200), ms(0), LEASE).unwrap();
        assert!(
            lost.contains("no quorum acknowledged this leader for 1200 ms"),
            "{lost}"
        );
        assert_eq!(
            judge(ServerState::Leader, None, ms(60_000), LEASE),
            None,
            "a leader not yet acknowledged is not judged (its followers' appends do not count)"
        );
    }

    #[test]
    fn a_follower_is_cut_off_once_no_leader_append_came_for_longer_than_the_lease() {
        for state in [
            ServerState::Follower,
            ServerState::Candidate,
            ServerState::Learner,
        ] {
            assert_eq!(judge(state, None, ms(1_000), LEASE), None, "{state:?}");
            assert!(judge(state, ms(0), ms(1_001), LEASE).is_some(), "{state:?}");
            assert_eq!(
                judge(state, None, None, LEASE),
                None,
                "{state:?}: a node that never heard a leader waits for its first"
            );
        }
    }

    #[test]
    fn contact_is_judged_from_the_last_append_noted() {
        let contact = QuorumContact::new(LEASE);
        let mut follower = RaftMetrics::new_initial(1);
        follower.state = ServerState::Follower;
        let now = tokio::time::Instant::now();
        let later = now + Duration::from_secs(3_600);
        assert_eq!(
            contact.lost_at(&follower, later),
            None,
            "no append yet: waiting for a first leader"
        );
        contact.note_append();
        assert_eq!(contact.lost_at(&follower, now), None);
        assert!(contact.lost_at(&follower, later).is_some());
        contact.note_append();
        assert_eq!(
            contact.lost_at(&follower, tokio::time::Instant::now()),
            None,
            "a new append renews the contact"
        );
    }
}
