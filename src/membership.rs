//! Cluster membership as operators see and change it: the member view, the safety rules for a
//! change, and the changes themselves (through openraft's joint consensus).
//!
//! `cluster.toml` only bootstraps a cluster; the live membership is the one in the Raft log and
//! survives restarts. Every change here is proposed by the leader (callers forward to it) and is
//! refused *before* it is proposed when it would leave the cluster unable to commit:
//! - removing or demoting the last voter;
//! - a voter set whose reachable members cannot form a majority of it.
//!
//! Removing a node also forgets its recorded incarnation (`identity`), so that the documented
//! way back for a wiped member (remove it, start it empty with `--join`, promote it) works.
//!
//! A leader asked to stop (SIGTERM) first **hands over** ([`hand_over`]): it transfers
//! leadership to the reachable voter whose log matches its own furthest
//! ([`hand_over_target`]) and waits, at most [`HAND_OVER_WAIT`], until it hears of a new
//! leader. Clients then see one short pause (an election the target starts at once, no
//! election timeout) instead of the 1.5-2 s a leader that vanishes costs. While the transfer
//! runs, openraft refuses the old leader's new proposals with "forward to the target"
//! (callers wait for that leader as for any other); nothing acknowledged is lost because
//! the target is elected by the same rules as any candidate. If no new leader is heard of in
//! time the node stops anyway: the others then elect one after their timeout, as after a
//! crash.
//!
//! Deliberately not done: automatic replacement of dead members, and any way to "force" a
//! change without a quorum. Recovering from a lost majority is a documented, manual operation
//! (README, "Operating a cluster").

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, Instant};

use crate::app::{raft_status_of, App};
pub use crate::client::wire::{ClusterView, MemberRole, MemberView};
use crate::raft::NodeId;

/// A member counts as reachable when the leader heard from it within this long.
pub const REACHABLE_WITHIN: Duration = Duration::from_secs(2);
/// Longest a stopping leader waits to hear of the leader it handed over to: an election the
/// target starts at once takes a few round trips (milliseconds on a LAN); beyond this the
/// target is down or cut off, and waiting longer only delays the stop an operator asked for.
pub const HAND_OVER_WAIT: Duration = Duration::from_secs(2);

/// Why a membership change was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("the change may or may not have been applied: {0}")]
    OutcomeUnknown(String),
}

/// The cluster as this node (normally the leader) sees it.
pub fn view(app: &App) -> ClusterView {
    let metrics = app.metrics();
    let position = raft_status_of(&metrics);
    let last_log_index = position.last_log_index;
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let replication = metrics.replication.clone().unwrap_or_default();
    let heartbeat = metrics.heartbeat.clone().unwrap_or_default();
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let (matched_index, reachable) = if *id == app.id() {
                (last_log_index, true)
            } else {
                let matched = replication
                    .get(id)
                    .cloned()
                    .flatten()
                    .map(|log_id| log_id.index);
                let heard = heartbeat.get(id).cloned().flatten();
                let reachable = heard.is_some_and(|at| at.elapsed() <= REACHABLE_WITHIN);
                (matched, reachable)
            };
            MemberView {
                id: *id,
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
                reachable,
                matched_index,
                lag: last_log_index
                    .unwrap_or(0)
                    .saturating_sub(matched_index.unwrap_or(0)),
            }
        })
        .collect();
    ClusterView {
        leader_id: position.leader_id,
        term: position.term,
        last_log_index,
        committed_index: position.committed_index,
        applied_index: position.applied_index,
        members,
    }
}

/// Refuses a new voter set that could not commit anything: empty, or without a reachable
/// majority. Pure, so the rule is tested on its own.
pub fn check_voter_set(
    new_voters: &BTreeSet<NodeId>,
    reachable: &BTreeSet<NodeId>,
) -> Result<(), String> {
    if new_voters.is_empty() {
        return Err("the cluster needs at least one voter".into());
    }
    let live = new_voters.intersection(reachable).count();
    let majority = new_voters.len() / 2 + 1;
    if live < majority {
        return Err(format!(
            "the remaining voters {new_voters:?} would have {live} reachable member(s), \
             fewer than the {majority} a quorum needs"
        ));
    }
    Ok(())
}

fn reachable_ids(view: &ClusterView) -> BTreeSet<NodeId> {
    view.members
        .iter()
        .filter(|m| m.reachable)
        .map(|m| m.id)
        .collect()
}

fn voter_ids(view: &ClusterView) -> BTreeSet<NodeId> {
    view.members
        .iter()
        .filter(|m| m.role == MemberRole::Voter)
        .map(|m| m.id)
        .collect()
}

fn map_error(
    error: openraft::errors::RaftError<
        crate::raft::TypeConfig,
        openraft::errors::ClientWriteError<crate::raft::TypeConfig>,
    >,
) -> MembershipError {
    use openraft::errors::{ClientWriteError, RaftError};
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            MembershipError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(refused)) => {
            MembershipError::Refused(refused.to_string())
        }
        other => MembershipError::OutcomeUnknown(other.to_string()),
    }
}

fn ensure_leader(app: &App) -> Result<(), MembershipError> {
    match app.leader() {
        Some(leader) if leader == app.id() => Ok(()),
        leader => Err(MembershipError::NotLeader { leader }),
    }
}

/// Adds `id` at `addr` as a learner; with `wait`, returns once it has caught up.
pub async fn add_learner(
    app: &App,
    id: NodeId,
    addr: String,
    wait: bool,
) -> Result<ClusterView, MembershipError> {
    ensure_leader(app)?;
    if let Some(existing) = view(app).members.iter().find(|m| m.id == id) {
        if existing.addr != addr {
            return Err(MembershipError::Refused(format!(
                "node {id} is already a {} at {}; remove it first to move it",
                existing.role, existing.addr
            )));
        }
    }
    app.raft()
        .add_learner(id, BasicNode { addr }, wait)
        .await
        .map_err(map_error)?;
    Ok(view(app))
}

/// Makes learners `ids` voters (joint consensus).
pub async fn promote(app: &App, ids: BTreeSet<NodeId>) -> Result<ClusterView, MembershipError> {
    ensure_leader(app)?;
    let current = view(app);
    let learners: BTreeSet<NodeId> = current
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Learner)
        .map(|m| m.id)
        .collect();
    if let Some(unknown) = ids
        .iter()
        .find(|id| !learners.contains(id) && !voter_ids(&current).contains(id))
    {
        return Err(MembershipError::Refused(format!(
            "node {unknown} is not a member; add it as a learner first"
        )));
    }
    let mut new_voters = voter_ids(&current);
    new_voters.extend(ids.iter().copied());
    check_voter_set(&new_voters, &reachable_ids(&current)).map_err(MembershipError::Refused)?;
    app.raft()
        .change_membership(ChangeMembers::AddVoterIds(ids), true)
        .await
        .map_err(map_error)?;
    Ok(view(app))
}

/// Removes `ids`: demoted to learners with `keep_as_learners`, otherwise out of the cluster.
pub async fn remove(
    app: &App,
    ids: BTreeSet<NodeId>,
    keep_as_learners: bool,
) -> Result<ClusterView, MembershipError> {
    ensure_leader(app)?;
    let current = view(app);
    let members: BTreeSet<NodeId> = current.members.iter().map(|m| m.id).collect();
    if let Some(unknown) = ids.iter().find(|id| !members.contains(id)) {
        return Err(MembershipError::Refused(format!(
            "node {unknown} is not a member"
        )));
    }
    let voters = voter_ids(&current);
    let new_voters: BTreeSet<NodeId> = voters.difference(&ids).copied().collect();
    check_voter_set(&new_voters, &reachable_ids(&current)).map_err(MembershipError::Refused)?;
    let demoted: BTreeSet<NodeId> = ids.intersection(&voters).copied().collect();
    if !demoted.is_empty() {
        app.raft()
            .change_membership(ChangeMembers::RemoveVoters(demoted), true)
            .await
            .map_err(map_error)?;
    }
    if !keep_as_learners {
        let removed: Vec<NodeId> = ids.iter().copied().collect();
        app.raft()
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map_err(map_error)?;
        // A removed node may come back empty under its id (a new incarnation): forget the old
        // one now, not only when `node::peer_incarnations` next looks at the membership.
        if let Err(error) = app.identity().forget(&removed).await {
            tracing::warn!(%error, "could not forget the removed nodes' incarnations");
        }
    }
    Ok(view(app))
}

/// Asks the leader to hand leadership to `to` (which must be a reachable voter). The handover
/// completes asynchronously; the returned view is taken when it was requested.
pub async fn transfer_leader(app: &App, to: NodeId) -> Result<ClusterView, MembershipError> {
    ensure_leader(app)?;
    let current = view(app);
    let target = current.members.iter().find(|m| m.id == to);
    match target {
        Some(member) if member.role == MemberRole::Voter && member.reachable => {}
        Some(_) => {
            return Err(MembershipError::Refused(format!(
                "node {to} is not a reachable voter"
            )))
        }
        None => {
            return Err(MembershipError::Refused(format!(
                "node {to} is not a member"
            )))
        }
    }
    if to == app.id() {
        return Ok(current);
    }
    app.raft()
        .trigger()
        .transfer_leader(to)
        .await
        .map_err(|fatal| MembershipError::OutcomeUnknown(fatal.to_string()))?;
    Ok(view(app))
}

/// The voter a stopping leader hands leadership to: a reachable voter other than `own_id`
/// whose log matches the leader's furthest (it has the least to catch up before it can
/// commit, and a log at least as complete as any voter's wins the election); ties go to the
/// smallest id, so the choice is deterministic. None when no other voter is reachable. Pure,
/// so the rule is tested on its own.
pub fn hand_over_target(view: &ClusterView, own_id: NodeId) -> Option<NodeId> {
    view.members
        .iter()
        .filter(|member| member.id != own_id)
        .filter(|member| member.role == MemberRole::Voter && member.reachable)
        .max_by_key(|member| (member.matched_index, std::cmp::Reverse(member.id)))
        .map(|member| member.id)
}

/// What [`hand_over`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOver {
    /// This node did not lead: nothing to hand over.
    NotLeader,
    /// No other voter was reachable: there is nobody to hand over to.
    NoReachableVoter,
    /// `to` was asked to take over and `leader` is now known as the leader, after `waited`.
    Done {
        to: NodeId,
        leader: NodeId,
        waited: Duration,
    },
    /// `to` was asked to take over, but no new leader was heard of within the bound (or the
    /// request could not be made: `cause`).
    Unconfirmed { to: NodeId, cause: String },
}

/// Hands leadership over before this node stops (see the module docs): picks the target by
/// [`hand_over_target`], asks it to take over, then waits at most `wait` until a leader other
/// than this node is known.
pub async fn hand_over(app: &App, wait: Duration) -> HandOver {
    if app.leader() != Some(app.id()) {
        return HandOver::NotLeader;
    }
    let Some(to) = hand_over_target(&view(app), app.id()) else {
        return HandOver::NoReachableVoter;
    };
    assert_ne!(to, app.id(), "a leader hands over to another node");
    let began = tokio::time::Instant::now();
    if let Err(fatal) = app.raft().trigger().transfer_leader(to).await {
        return HandOver::Unconfirmed {
            to,
            cause: fatal.to_string(),
        };
    }
    let own_id = app.id();
    let new_leader = app
        .raft()
        .wait(Some(wait))
        .metrics(
            |metrics| {
                metrics
                    .current_leader
                    .is_some_and(|leader| leader != own_id)
            },
            "a new leader after the hand-over",
        )
        .await;
    match new_leader.map(|metrics| metrics.current_leader) {
        Ok(Some(leader)) => HandOver::Done {
            to,
            leader,
            waited: began.elapsed(),
        },
        Ok(None) => unreachable!("the wait ends only on a known leader"),
        Err(error) => HandOver::Unconfirmed {
            to,
            cause: error.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{check_voter_set, hand_over_target};
    use crate::client::wire::{ClusterView, MemberRole, MemberView};
    use std::collections::BTreeSet;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_voter_set_needs_a_reachable_majority() {
        assert!(check_voter_set(&set(&[1, 2, 3]), &set(&[1, 2, 3])).is_ok());
        assert!(check_voter_set(&set(&[1, 2, 3]), &set(&[1, 2])).is_ok());
        assert!(
            check_voter_set(&set(&[1, 2]), &set(&[1])).is_err(),
            "2 voters, 1 reachable: no quorum"
        );
        assert!(check_voter_set(&set(&[1, 2, 3, 4, 5]), &set(&[1, 2])).is_err());
        assert!(check_voter_set(&set(&[1]), &set(&[1])).is_ok());
    }

    fn member(id: u64, role: MemberRole, reachable: bool, matched: Option<u64>) -> MemberView {
        MemberView {
            id,
            addr: format!("127.0.0.1:{}", 22_000 + id),
            role,
            reachable,
            matched_index: matched,
            lag: 0,
        }
    }

    fn cluster(members: Vec<MemberView>) -> ClusterView {
        ClusterView {
            leader_id: Some(1),
            term: 3,
            last_log_index: Some(100),
            committed_index: Some(100),
            applied_index: Some(100),
            members,
        }
    }

    #[test]
    fn a_leader_hands_over_to_the_reachable_voter_with_the_furthest_matched_log() {
        let view = cluster(vec![
            member(1, MemberRole::Voter, true, Some(100)),
            member(2, MemberRole::Voter, true, Some(90)),
            member(3, MemberRole::Voter, true, Some(97)),
            member(4, MemberRole::Learner, true, Some(100)),
            member(5, MemberRole::Voter, false, Some(99)),
        ]);
        assert_eq!(
            hand_over_target(&view, 1),
            Some(3),
            "not itself, not a learner, not an unreachable voter: the furthest of the rest"
        );
    }

    #[test]
    fn a_hand_over_tie_goes_to_the_smallest_id_and_nobody_reachable_means_none() {
        let tie = cluster(vec![
            member(1, MemberRole::Voter, true, Some(100)),
            member(3, MemberRole::Voter, true, Some(100)),
            member(2, MemberRole::Voter, true, Some(100)),
        ]);
        assert_eq!(hand_over_target(&tie, 1), Some(2));
        let unmatched = cluster(vec![
            member(1, MemberRole::Voter, true, Some(100)),
            member(2, MemberRole::Voter, true, None),
            member(3, MemberRole::Voter, true, Some(1)),
        ]);
        assert_eq!(
            hand_over_target(&unmatched, 1),
            Some(3),
            "any match beats none"
        );
        let alone = cluster(vec![
            member(1, MemberRole::Voter, true, Some(100)),
            member(2, MemberRole::Voter, false, Some(100)),
            member(3, MemberRole::Learner, true, Some(100)),
        ]);
        assert_eq!(hand_over_target(&alone, 1), None);
    }

    #[test]
    fn the_last_voter_cannot_be_removed() {
        assert!(check_voter_set(&set(&[]), &set(&[1, 2])).is_err());
    }
}
