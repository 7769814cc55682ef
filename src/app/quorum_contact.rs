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
//! The rule ([`judge`], [`Leases`]), with the **lease** being openraft's leader lease
//! (`election_timeout_max`: a leader whose quorum has not acknowledged it for that long stops
//! accepting proposals, and the followers may already have elected another):
//! - a **leader** is cut off once its last quorum acknowledgement is older than the lease
//!   (never when it is the only voter: it is its own quorum);
//! - a **follower** (or candidate, or learner) once it has not accepted a leader's append for
//!   longer than a whole election takes (`2 * election_timeout_max + election_timeout_min`: the
//!   lease, the longest election timeout, and a round of votes): a follower whose leader
//!   crashed hears from the new one sooner, so it keeps waiting for it as before; one that
//!   heard nothing for longer is cut off (or no majority is left).
//!
//! A node that never had contact (just started) is *not* judged cut off: it waits for its first
//! leader as before. The judgement only ever makes a node refuse sooner; it never lets one
//! serve: Raft's own rules (a quorum for every commit and read index) are untouched, so a
//! minority still acknowledges nothing and serves no linearizable read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::{Instant as _, ServerState};

use crate::raft::RaftMetrics;

/// How long a node may go without contact before it is judged cut off (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leases {
    /// A leader's: openraft's leader lease (`election_timeout_max`).
    pub leader: Duration,
    /// A follower's: a whole election.
    pub follower: Duration,
}

impl Leases {
    /// From the election timeouts, in milliseconds.
    pub fn of_election_timeouts(min_ms: u64, max_ms: u64) -> Self {
        Self {
            leader: Duration::from_millis(max_ms),
            follower: Duration::from_millis(2 * max_ms + min_ms),
        }
    }
}

/// The last time this node accepted a leader's append, and the leases it is judged against.
#[derive(Debug)]
pub struct QuorumContact {
    /// When the node started: the origin of [`QuorumContact::last_append_ms`].
    started: tokio::time::Instant,
    /// Milliseconds after `started` of the last accepted append, plus one (0: none yet).
    last_append_ms: AtomicU64,
    leases: Leases,
}

impl QuorumContact {
    pub fn new(leases: Leases) -> Self {
        assert!(
            !leases.leader.is_zero(),
            "a lease of zero calls every leader cut off"
        );
        assert!(
            leases.follower >= leases.leader,
            "a follower waits at least as long as a leader"
        );
        Self {
            started: tokio::time::Instant::now(),
            last_append_ms: AtomicU64::new(0),
            leases,
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
        judge(metrics.state, since_quorum_ack, since_append, self.leases)
    }
}

/// The rule of the module docs: `since_quorum_ack` is a leader's time since its quorum last
/// acknowledged it, `since_append` the time since this node last accepted a leader's append
/// (None: never).
pub fn judge(
    state: ServerState,
    since_quorum_ack: Option<Duration>,
    since_append: Option<Duration>,
    leases: Leases,
) -> Option<String> {
    let (age, lease, what) = match state {
        ServerState::Leader => (
            since_quorum_ack?,
            leases.leader,
            "no quorum acknowledged this leader",
        ),
        ServerState::Follower | ServerState::Candidate | ServerState::Learner => (
            since_append?,
            leases.follower,
            "this node heard from no leader",
        ),
        ServerState::Shutdown => return Some("this node is shutting down".into()),
    };
    (age > lease).then(|| {
        format!(
            "{what} for {} ms (more than {} ms): it is cut off from the cluster's majority; \
             send requests to another node",
            age.as_millis(),
            lease.as_millis()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASES: Leases = Leases {
        leader: Duration::from_millis(600),
        follower: Duration::from_millis(1_500),
    };

    #[test]
    fn a_follower_waits_out_a_whole_election_and_a_leader_its_lease() {
        assert_eq!(Leases::of_election_timeouts(300, 600), LEASES);
    }

    fn ms(ms: u64) -> Option<Duration> {
        Some(Duration::from_millis(ms))
    }

    #[test]
    fn a_leader_is_cut_off_once_its_quorum_acknowledgement_is_older_than_the_lease() {
        assert_eq!(judge(ServerState::Leader, ms(600), None, LEASES), None);
        let lost = judge(ServerState::Leader, ms(700), ms(0), LEASES).unwrap();
        assert!(
            lost.contains("no quorum acknowledged this leader for 700 ms"),
            "{lost}"
        );
        assert_eq!(
            judge(ServerState::Leader, None, ms(60_000), LEASES),
            None,
            "a leader not yet acknowledged is not judged (its followers' appends do not count)"
        );
    }

    #[test]
    fn a_follower_is_cut_off_once_no_leader_append_came_for_longer_than_an_election() {
        for state in [
            ServerState::Follower,
            ServerState::Candidate,
            ServerState::Learner,
        ] {
            assert_eq!(judge(state, None, ms(1_500), LEASES), None, "{state:?}");
            assert!(
                judge(state, ms(0), ms(1_501), LEASES).is_some(),
                "{state:?}"
            );
            assert_eq!(
                judge(state, None, None, LEASES),
                None,
                "{state:?}: a node that never heard a leader waits for its first"
            );
        }
    }

    #[test]
    fn contact_is_judged_from_the_last_append_noted() {
        let contact = QuorumContact::new(LEASES);
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
