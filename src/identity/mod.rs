//! Who a node is, and which cluster it belongs to: the checks that keep a wiped voter and a
//! node of another cluster out of Raft.
//!
//! ## What goes wrong without it
//! - **A wiped voter.** A voter restarted on an empty data directory (a lost disk, a wrong
//!   path) has forgotten its vote and its log but still has its id, so its peers take it for
//!   the member they knew. It can grant a second vote in a term it already voted in (two
//!   leaders in one term), and its acknowledgements count towards a quorum for entries it no
//!   longer holds (a committed write can be lost).
//! - **A node of another cluster.** The cluster secret proves only that the sender was given
//!   the secret; two clusters deployed with the same one (copied `cluster.toml`) would happily
//!   exchange votes and entries.
//!
//! ## What each node persists (`<data_dir>/node-N/identity`, [`file`])
//! - `incarnation`: a random 64-bit number drawn when the data directory is first initialised.
//!   A wiped directory gets a new one, so the node is recognisably not the one it replaced.
//! - `clusterId`: a random 128-bit number drawn by the node that founds the cluster
//!   (`node::bootstrap`, before `Raft::initialize`), and adopted by every other node from the
//!   first leader RPC (append or snapshot chunk) it accepts.
//! - `peers`: the incarnation this node first saw for each member (trust on first use), kept
//!   locally, never replicated. A member's entry is forgotten when it leaves the membership
//!   (`node::peer_incarnations`), so a removed node can come back empty under its old id.
//!
//! Every change is written to a temporary file, fsynced, renamed over `identity` and the
//! directory fsynced before it takes effect (the simulation's files keep only synced bytes, so
//! it exercises this), and the node's identity exists before Raft starts.
//!
//! ## The checks (pure: [`judge_request`], [`judge_reply`])
//! Every Raft RPC carries the sender's cluster id and `(node id, incarnation)`, and the
//! `(node id, incarnation)` it believes the target has; every answer carries the receiver's.
//! - A node with a cluster id refuses (409 `WRONG_CLUSTER`) a request from another cluster id or
//!   without one, and a sender ignores an answer from another cluster id: never a vote, never
//!   an acknowledgement.
//! - A request or answer from a member presenting another incarnation than the recorded one is
//!   refused (409 `WRONG_INCARNATION`) or ignored: a wiped voter's vote never counts and it is
//!   sent no entries. A request that expects another incarnation of the receiver is refused by
//!   the receiver itself, which thus learns (and logs) that it was wiped.
//!
//! The TOFU gap (a member whose incarnation nobody recorded yet) is kept short: each node asks
//! every member it has no record of for its identity (`node::peer_incarnations`, through
//! `/raft/status`) about once a second. A start-time check closes the other door: a node whose
//! Raft state is empty asks its peers whether the cluster lists it as a voter, and if so
//! refuses to start (`node::start`), naming the way out: `stockraft admin remove --id N`, start
//! it empty with `--join`, then promote it.
//!
//! Deliberately not done: a cluster id for clusters founded before identities existed (nodes
//! of such a cluster keep none and accept peers that present none; creating one later would
//! race between successive leaders), and authentication beyond the shared secret (an
//! incarnation is an identity, not a credential).

pub mod file;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use file::IdentityError;
pub use state::{ClusterId, IdentityState, Incarnation};

use crate::storage::fs::Fs;
use crate::NodeId;

/// Request and answer header: the sender's (or answerer's) cluster id, 32 hex digits.
pub const CLUSTER_HEADER: &str = "x-stockraft-cluster";
/// Request and answer header: `<node id>/<incarnation>` of the sender (or answerer).
pub const NODE_HEADER: &str = "x-stockraft-node";
/// Request header: `<node id>` or `<node id>/<incarnation>` of the node the sender believes it
/// addresses.
pub const EXPECT_HEADER: &str = "x-stockraft-expect";

/// How often a refusal about one peer is logged at most (RPCs repeat every heartbeat).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What a request or an answer says about its sender, read from the headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presented {
    pub cluster: Option<ClusterId>,
    pub node: Option<(NodeId, Incarnation)>,
    /// Requests only: the node the sender believes it addresses, and its incarnation if known.
    pub expects: Option<(NodeId, Option<Incarnation>)>,
}

fn format_node(id: NodeId, incarnation: Option<Incarnation>) -> String {
    match incarnation {
        Some(incarnation) => format!("{id}/{incarnation}"),
        None => id.to_string(),
    }
}

fn parse_node(text: &str) -> Option<(NodeId, Option<Incarnation>)> {
    match text.split_once('/') {
        Some((id, incarnation)) => Some((id.parse().ok()?, Some(Incarnation::parse(incarnation)?))),
        None => Some((text.parse().ok()?, None)),
    }
}

impl Presented {
    /// Reads the identity headers through `header` (a lookup by name). A malformed header counts
    /// as absent (and an absent one is refused wherever it matters).
    pub fn from_headers<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Self {
        let node = header(NODE_HEADER)
            .and_then(parse_node)
            .and_then(|(id, incarnation)| Some((id, incarnation?)));
        Self {
            cluster: header(CLUSTER_HEADER).and_then(ClusterId::parse),
            node,
            expects: header(EXPECT_HEADER).and_then(parse_node),
        }
    }
}

/// Why an RPC (or its answer) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The other side belongs to another cluster, or presents none while this node has one.
    #[error(
        "node {node:?} belongs to cluster {theirs:?}, this node to cluster {ours:?}: \
         nodes of different clusters never exchange Raft messages (same secret reused?)"
    )]
    WrongCluster {
        node: Option<NodeId>,
        ours: Option<ClusterId>,
        theirs: Option<ClusterId>,
    },
    /// A member presents another incarnation than the one recorded for it: its data directory
    /// was wiped or replaced while it was still a member.
    #[error(
        "node {node} presents incarnation {presented}, but this node knows it as {known}: its \
         data directory was wiped or replaced while it was a member, so its vote and log are \
         lost and it takes no part. Way out: `stockraft admin remove --id {node}`, start it \
         again empty with `--join <member>`, then `stockraft admin promote --id {node}`"
    )]
    WrongIncarnation {
        node: NodeId,
        known: Incarnation,
        presented: Incarnation,
    },
    /// The sender knows this node by another incarnation: this node's data directory was wiped.
    #[error(
        "node {sender:?} knows this node ({node}) as incarnation {expected}, but this data \
         directory is incarnation {ours}: it was wiped or replaced while node {node} was a \
         member, so it must not take part as that member. Way out: `stockraft admin remove \
         --id {node}`, start this node again empty with `--join <member>`, then `stockraft \
         admin promote --id {node}`"
    )]
    NotThisIncarnation {
        node: NodeId,
        sender: Option<NodeId>,
        expected: Incarnation,
        ours: Incarnation,
    },
    /// The message was meant for another node id than the one that got it (a wrong address).
    #[error("a message for node {meant} reached node {reached}: check the members' addresses")]
    WrongNode { meant: NodeId, reached: NodeId },
}

impl Refusal {
    /// The error code the receiver answers with (409).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::WrongCluster { .. } => crate::client::wire::codes::WRONG_CLUSTER,
            _ => crate::client::wire::codes::WRONG_INCARNATION,
        }
    }

    /// The peer this refusal is about (for rate-limiting its log line).
    fn about(&self) -> Option<NodeId> {
        match self {
            Refusal::WrongCluster { node, .. } => *node,
            Refusal::WrongIncarnation { node, .. } => Some(*node),
            Refusal::NotThisIncarnation { sender, .. } => *sender,
            Refusal::WrongNode { meant, .. } => Some(*meant),
        }
    }
}

/// What accepting a message changes in this node's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// A member seen for the first time, with its incarnation.
    pub record_peer: Option<(NodeId, Incarnation)>,
    /// The cluster id adopted from a leader.
    pub adopt_cluster: Option<ClusterId>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self == &Changes::default()
    }

    pub fn apply(&self, state: &mut IdentityState) {
        if let Some((node, incarnation)) = self.record_peer {
            state.peers.insert(node, incarnation);
        }
        if let Some(cluster) = self.adopt_cluster {
            state.cluster = Some(cluster);
        }
    }
}

/// Whether a member's presented incarnation matches the recorded one (or is the first seen).
fn judge_incarnation(
    state: &IdentityState,
    node: NodeId,
    presented: Incarnation,
) -> Result<Option<(NodeId, Incarnation)>, Refusal> {
    match state.peers.get(&node) {
        Some(&known) if known != presented => Err(Refusal::WrongIncarnation {
            node,
            known,
            presented,
        }),
        Some(_) => Ok(None),
        None => Ok(Some((node, presented))),
    }
}

/// The receiver's rule for a Raft RPC arriving at node `own_id`. `from_leader`: an append or a
/// snapshot chunk, whose cluster id a node without one adopts.
pub fn judge_request(
    state: &IdentityState,
    own_id: NodeId,
    presented: &Presented,
    from_leader: bool,
) -> Result<Changes, Refusal> {
    let sender = presented.node.map(|(id, _)| id);
    let mut changes = Changes::default();
    match (state.cluster, presented.cluster) {
        (Some(ours), Some(theirs)) if ours == theirs => {}
        // A node of a founded cluster hears only from nodes that know it: a fresh node sends
        // no Raft RPC before it adopted the cluster id (it has no membership to act on).
        (Some(ours), theirs) => {
            return Err(Refusal::WrongCluster {
                node: sender,
                ours: Some(ours),
                theirs,
            })
        }
        (None, Some(theirs)) if from_leader => changes.adopt_cluster = Some(theirs),
        (None, _) => {}
    }
    if let Some((meant, expected)) = presented.expects {
        if meant != own_id {
            return Err(Refusal::WrongNode {
                meant,
                reached: own_id,
            });
        }
        if let Some(expected) = expected.filter(|e| *e != state.incarnation) {
            return Err(Refusal::NotThisIncarnation {
                node: own_id,
                sender,
                expected,
                ours: state.incarnation,
            });
        }
    }
    // A sender without a node header is a node of a cluster without ids (founded before them):
    // the cluster check above already refused it if this node has one.
    if let Some((node, incarnation)) = presented.node {
        changes.record_peer = judge_incarnation(state, node, incarnation)?;
    }
    Ok(changes)
}

/// The sender's rule for the answer of node `target`: never adopts a cluster id, refuses an
/// answer from another cluster, from another node, or from another incarnation of `target`.
/// An answer without a cluster id is from a node not yet in any cluster (a fresh node granting
/// its first vote while the cluster is founded).
pub fn judge_reply(
    state: &IdentityState,
    target: NodeId,
    presented: &Presented,
) -> Result<Changes, Refusal> {
    if let (Some(ours), Some(theirs)) = (state.cluster, presented.cluster) {
        if ours != theirs {
            return Err(Refusal::WrongCluster {
                node: Some(target),
                ours: Some(ours),
                theirs: Some(theirs),
            });
        }
    }
    let Some((node, incarnation)) = presented.node else {
        return match state.cluster {
            // Only a node of a cluster without ids answers without saying who it is.
            None => Ok(Changes::default()),
            Some(ours) => Err(Refusal::WrongCluster {
                node: Some(target),
                ours: Some(ours),
                theirs: None,
            }),
        };
    };
    if node != target {
        return Err(Refusal::WrongNode {
            meant: target,
            reached: node,
        });
    }
    Ok(Changes {
        record_peer: judge_incarnation(state, node, incarnation)?,
        adopt_cluster: None,
    })
}

/// Why a message was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Recording what the message taught failed: nothing is admitted on an unrecorded change.
    #[error(transparent)]
    Storage(#[from] IdentityError),
}

/// One node's identity: the persisted state, the checks, and the headers.
pub struct Identity {
    pub own_id: NodeId,
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// What is on disk; only ever replaced after the new state was synced.
    state: Mutex<IdentityState>,
    /// Serialises the writers (a change is read, decided and written under it).
    writer: tokio::sync::Mutex<()>,
    /// When a refusal about each peer was last logged.
    logged: Mutex<BTreeMap<Option<NodeId>, tokio::time::Instant>>,
}

impl Identity {
    /// An identity already persisted in `dir` (see [`file::load`]).
    pub fn new(own_id: NodeId, fs: Arc<dyn Fs>, dir: PathBuf, state: IdentityState) -> Self {
        Self {
            own_id,
            fs,
            dir,
            state: Mutex::new(state),
            writer: tokio::sync::Mutex::new(()),
            logged: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdentityState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the current (persisted) state.
    pub fn state(&self) -> IdentityState {
        self.lock().clone()
    }

    pub fn incarnation(&self) -> Incarnation {
        self.lock().incarnation
    }

    pub fn cluster(&self) -> Option<ClusterId> {
        self.lock().cluster
    }

    /// The incarnation recorded for `node`, if any.
    pub fn known(&self, node: NodeId) -> Option<Incarnation> {
        self.lock().peers.get(&node).copied()
    }

    /// Runs `decide` on the current state; persists and publishes the changes it returns.
    /// Changes are decided again under the writer lock, so two racing messages cannot both
    /// record a different first incarnation of one peer.
    async fn change(
        &self,
        decide: impl Fn(&IdentityState) -> Result<Changes, Refusal>,
    ) -> Result<(), AdmitError> {
        if decide(&self.lock())?.is_empty() {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        let mut next = self.state();
        let changes = decide(&next)?;
        if changes.is_empty() {
            return Ok(());
        }
        changes.apply(&mut next);
        file::store(self.fs.clone(), self.dir.clone(), next.clone()).await?;
        *self.lock() = next;
        Ok(())
    }

    /// Admits (or refuses) a Raft RPC carrying `presented`; see [`judge_request`].
    pub async fn admit_request(
        &self,
        presented: &Presented,
        from_leader: bool,
    ) -> Result<(), AdmitError> {
        let own_id = self.own_id;
        self.change(|state| judge_request(state, own_id, presented, from_leader))
            .await
    }

    /// Admits (or refuses) the answer of `target`; see [`judge_reply`].
    pub async fn admit_reply(
        &self,
        target: NodeId,
        presented: &Presented,
    ) -> Result<(), AdmitError> {
        self.change(|state| judge_reply(state, target, presented))
            .await
    }

    /// Draws and persists this node's cluster id if it has none (the founder, before it
    /// initialises the cluster); returns it.
    pub async fn found_cluster(&self) -> Result<ClusterId, IdentityError> {
        let drawn = ClusterId::random();
        let adopted = self
            .change(|state| {
                Ok(Changes {
                    adopt_cluster: state.cluster.is_none().then_some(drawn),
                    record_peer: None,
                })
            })
            .await;
        match adopted {
            Ok(()) => Ok(self.cluster().unwrap_or(drawn)),
            Err(AdmitError::Storage(error)) => Err(error),
            Err(AdmitError::Refused(refusal)) => {
                unreachable!("founding refuses nothing: {refusal}")
            }
        }
    }

    /// Forgets the recorded incarnations of every peer not in `members` (they left the
    /// membership: one may come back empty under its old id).
    pub async fn forget_all_but(&self, members: &[NodeId]) -> Result<(), IdentityError> {
        let _writer = self.writer.lock().await;
        let mut next = self.state();
        let before = next.peers.len();
        next.peers.retain(|node, _| members.contains(node));
        if next.peers.len() == before {
            return Ok(());
        }
        let forgotten: Vec<NodeId> = self
            .lock()
            .peers
            .keys()
            .filter(|node| !members.contains(node))
            .copied()
            .collect();
        file::store(self.fs.clone(), self.dir.clone(), next.clone()).await?;
        *self.lock() = next;
        tracing::info!(
            ?forgotten,
            "forgot the incarnations of nodes no longer members"
        );
        Ok(())
    }

    /// Forgets the recorded incarnations of `nodes` (removed by this leader).
    pub async fn forget(&self, nodes: &[NodeId]) -> Result<(), IdentityError> {
        let keep: Vec<NodeId> = self
            .lock()
            .peers
            .keys()
            .filter(|node| !nodes.contains(node))
            .copied()
            .collect();
        self.forget_all_but(&keep).await
    }

    /// The identity headers of a request to `target`.
    pub fn request_headers(&self, target: NodeId) -> Vec<(String, String)> {
        let state = self.lock();
        let mut headers = self.own_headers(&state);
        headers.push((
            EXPECT_HEADER,
            format_node(target, state.peers.get(&target).copied()),
        ));
        headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }

    /// The identity headers of an answer (this node's cluster and incarnation).
    pub fn answer_headers(&self) -> Vec<(&'static str, String)> {
        self.own_headers(&self.lock())
    }

    fn own_headers(&self, state: &IdentityState) -> Vec<(&'static str, String)> {
        let mut headers = vec![(
            NODE_HEADER,
            format_node(self.own_id, Some(state.incarnation)),
        )];
        if let Some(cluster) = state.cluster {
            headers.push((CLUSTER_HEADER, cluster.to_string()));
        }
        headers
    }

    /// Logs `refusal` as a warning, at most once per [`REFUSAL_LOG_INTERVAL`] per peer.
    pub fn warn(&self, refusal: &Refusal, context: &str) {
        if self.due(refusal.about()) {
            tracing::warn!(code = refusal.code(), "{context}: {refusal}");
        }
    }

    /// Logs that `peer` refused this node's RPC (its answer's `message`), at most once per
    /// [`REFUSAL_LOG_INTERVAL`] per peer.
    pub fn warn_refused_by(&self, peer: NodeId, message: &str) {
        if self.due(Some(peer)) {
            tracing::warn!(peer, "node {peer} refused this node's Raft RPC: {message}");
        }
    }

    /// Whether a line about `peer` may be logged now (and notes that it was).
    fn due(&self, peer: Option<NodeId>) -> bool {
        let now = tokio::time::Instant::now();
        let mut logged = self
            .logged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let last = logged.get(&peer).copied();
        let due = last.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL);
        if due {
            logged.insert(peer, now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(cluster: Option<u128>, peers: &[(NodeId, u64)]) -> IdentityState {
        IdentityState {
            cluster: cluster.map(ClusterId),
            incarnation: Incarnation(0xAA),
            peers: peers
                .iter()
                .map(|(node, incarnation)| (*node, Incarnation(*incarnation)))
                .collect(),
        }
    }

    fn from(cluster: Option<u128>, node: NodeId, incarnation: u64) -> Presented {
        Presented {
            cluster: cluster.map(ClusterId),
            node: Some((node, Incarnation(incarnation))),
            expects: None,
        }
    }

    #[test]
    fn a_known_member_with_its_recorded_incarnation_is_admitted_unchanged() {
        let ours = state(Some(7), &[(2, 0x22)]);
        assert_eq!(
            judge_request(&ours, 1, &from(Some(7), 2, 0x22), true),
            Ok(Changes::default())
        );
        assert_eq!(
            judge_reply(&ours, 2, &from(Some(7), 2, 0x22)),
            Ok(Changes::default())
        );
    }

    #[test]
    fn a_member_with_another_incarnation_is_refused_as_sender_and_as_answerer() {
        let ours = state(Some(7), &[(3, 0x33)]);
        let wiped = from(Some(7), 3, 0x99);
        let expected = Refusal::WrongIncarnation {
            node: 3,
            known: Incarnation(0x33),
            presented: Incarnation(0x99),
        };
        // Its vote request, and its vote (the answer to ours): neither counts.
        assert_eq!(
            judge_request(&ours, 1, &wiped, false),
            Err(expected.clone())
        );
        assert_eq!(judge_reply(&ours, 3, &wiped), Err(expected.clone()));
        assert!(expected.to_string().contains("admin remove --id 3"));
        assert!(expected.to_string().contains("--join"));
    }

    #[test]
    fn the_first_incarnation_seen_is_recorded() {
        let ours = state(Some(7), &[]);
        let changes = judge_request(&ours, 1, &from(Some(7), 4, 0x44), false).unwrap();
        assert_eq!(changes.record_peer, Some((4, Incarnation(0x44))));
        let changes = judge_reply(&ours, 4, &from(Some(7), 4, 0x44)).unwrap();
        assert_eq!(changes.record_peer, Some((4, Incarnation(0x44))));
    }

    #[test]
    fn a_wiped_receiver_refuses_a_sender_that_knows_its_old_incarnation() {
        let wiped = state(None, &[]);
        let mut request = from(Some(7), 1, 0x11);
        request.expects = Some((3, Some(Incarnation(0x33))));
        let refused = judge_request(&wiped, 3, &request, true).unwrap_err();
        assert!(matches!(
            refused,
            Refusal::NotThisIncarnation { node: 3, .. }
        ));
        assert!(refused.to_string().contains("admin remove --id 3"));
        // Expecting this very incarnation, or none yet, is fine.
        request.expects = Some((3, Some(Incarnation(0xAA))));
        assert!(judge_request(&wiped, 3, &request, true).is_ok());
        request.expects = Some((3, None));
        assert!(judge_request(&wiped, 3, &request, true).is_ok());
        // A message for another node id is refused whatever the incarnation.
        request.expects = Some((2, None));
        assert_eq!(
            judge_request(&wiped, 3, &request, true),
            Err(Refusal::WrongNode {
                meant: 2,
                reached: 3
            })
        );
    }

    #[test]
    fn another_cluster_is_refused_both_ways_and_never_adopted_from_an_answer() {
        let ours = state(Some(7), &[]);
        let foreign = from(Some(8), 2, 0x22);
        assert_eq!(
            judge_request(&ours, 1, &foreign, true).unwrap_err().code(),
            "WRONG_CLUSTER"
        );
        assert_eq!(
            judge_reply(&ours, 2, &foreign).unwrap_err().code(),
            "WRONG_CLUSTER"
        );
        // A request without a cluster id, to a node that has one, is refused too.
        assert!(judge_request(&ours, 1, &from(None, 2, 0x22), true).is_err());
        // Answers never teach a cluster id.
        let fresh = state(None, &[]);
        let changes = judge_reply(&fresh, 2, &foreign).unwrap();
        assert_eq!(changes.adopt_cluster, None);
    }

    #[test]
    fn a_fresh_node_adopts_the_cluster_of_a_leader_rpc_only() {
        let fresh = state(None, &[]);
        let leader = from(Some(7), 1, 0x11);
        let changes = judge_request(&fresh, 3, &leader, true).unwrap();
        assert_eq!(changes.adopt_cluster, Some(ClusterId(7)));
        // A vote request (the founder's election) is answered without adopting.
        let changes = judge_request(&fresh, 3, &leader, false).unwrap();
        assert_eq!(changes.adopt_cluster, None);
        // Once adopted, the cluster is the cluster.
        let mut adopted = fresh.clone();
        changes.apply(&mut adopted);
        Changes {
            adopt_cluster: Some(ClusterId(7)),
            record_peer: None,
        }
        .apply(&mut adopted);
        assert!(judge_request(&adopted, 3, &from(Some(8), 1, 0x11), true).is_err());
    }

    #[test]
    fn an_answer_from_a_node_not_yet_in_a_cluster_counts_while_founding() {
        let founder = state(Some(7), &[]);
        let changes = judge_reply(&founder, 2, &from(None, 2, 0x22)).unwrap();
        assert_eq!(changes.record_peer, Some((2, Incarnation(0x22))));
        // But an answer that names no node is only accepted between nodes without cluster ids.
        let anonymous = Presented::default();
        assert!(judge_reply(&founder, 2, &anonymous).is_err());
        assert!(judge_reply(&state(None, &[]), 2, &anonymous).is_ok());
        // And it must come from the node addressed.
        assert_eq!(
            judge_reply(&founder, 2, &from(Some(7), 5, 0x55)),
            Err(Refusal::WrongNode {
                meant: 2,
                reached: 5
            })
        );
    }

    #[test]
    fn headers_round_trip_and_malformed_ones_count_as_absent() {
        let presented = from(
            Some(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            3,
            0xdead_beef,
        );
        let headers = [
            (
                CLUSTER_HEADER.to_owned(),
                presented.cluster.unwrap().to_string(),
            ),
            (
                NODE_HEADER.to_owned(),
                format_node(3, Some(Incarnation(0xdead_beef))),
            ),
            (EXPECT_HEADER.to_owned(), format_node(1, None)),
        ];
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        };
        let read = Presented::from_headers(lookup);
        assert_eq!(read.cluster, presented.cluster);
        assert_eq!(read.node, presented.node);
        assert_eq!(read.expects, Some((1, None)));
        let garbage = |name: &str| match name {
            NODE_HEADER => Some("3/not-hex"),
            CLUSTER_HEADER => Some("abc"),
            _ => None,
        };
        assert_eq!(Presented::from_headers(garbage), Presented::default());
    }
}
