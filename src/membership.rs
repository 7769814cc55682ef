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

#[cfg(test)]
mod tests {
    use super::check_voter_set;
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

    #[test]
    fn the_last_voter_cannot_be_removed() {
        assert!(check_voter_set(&set(&[]), &set(&[1, 2])).is_err());
    }
}
