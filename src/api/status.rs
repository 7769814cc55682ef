//! `GET /api/status` (scope `read`): the whole cluster as an operator's first look wants it,
//! from any node: every member's own `/api/health` (role, term, log, commit and applied
//! indexes, disk-space alarm and data size), its lag behind the leader, the failure tolerance,
//! and the problems to look at now.
//!
//! Why a route of its own: `/api/cluster` has the membership but is admin-only, and it is the
//! leader's view (no member's applied index or disk); `/api/sync/status` (read) has the same
//! leader's view; each member's `/api/health` has the rest but lives on the member's own
//! address, which a browser page served by one node may not call (another origin). So the node
//! asked calls each member's health on its peer address, server-side, through the same
//! [`Transport`](crate::transport::Transport) that carries Raft (TLS included), and gathers
//! the answers. Its own health it reads directly.
//!
//! Every member is asked at once, each within [`MEMBER_HEALTH_TIMEOUT`]: a dead or cut-off
//! member costs the answer that long, never more, and is reported unreachable, with why.
//! The answer is a snapshot of answers taken a moment apart, not a consistent cut: the lag of a
//! member is the leader's last log index minus the member's as each reported it.
//!
//! The leader is the member that says it leads, with the highest term among such (a deposed
//! leader cut off from the others may still believe it leads at an older term). No member
//! saying so, the answer names no leader, whatever the asked node last heard: a leader that
//! died a moment ago is not shown as leading.
//!
//! [`summarize`] is pure (tested without a network); the handler only does the calls.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::health;
use crate::app::App;
use crate::client::routes;
use crate::client::wire::{
    ClusterStatus, Envelope, Health, MemberRole, MemberStatus, MemberView, RaftRole,
};
use crate::raft::NodeId;
use crate::transport::WireRequest;

/// Longest the asked node waits for a member's health: under the console's refresh period
/// (2 s), and far above a live member's answer on a LAN (a millisecond).
pub const MEMBER_HEALTH_TIMEOUT: Duration = Duration::from_millis(1_000);

/// `GET /api/status`.
pub async fn status(State(app): State<Arc<App>>) -> Response {
    let members = crate::membership::view(&app).members;
    let asks = members.into_iter().map(|member| {
        let app = app.clone();
        async move {
            let health = member_health(&app, &member).await;
            (member, health)
        }
    });
    let answers = futures::future::join_all(asks).await;
    axum::Json(Envelope::ok(summarize(app.id(), answers))).into_response()
}

/// The health of `member`: this node's own, or what the member answers on its address.
async fn member_health(app: &App, member: &MemberView) -> Result<Health, String> {
    if member.id == app.id() {
        return Ok(health::of(app));
    }
    let request = WireRequest::get(routes::HEALTH);
    let answer = app
        .transport()
        .send(&member.addr, request, MEMBER_HEALTH_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?;
    if answer.status != 200 {
        return Err(format!("its health answered {}", answer.status));
    }
    serde_json::from_slice::<Envelope<Health>>(&answer.body)
        .map(|envelope| envelope.data)
        .map_err(|error| format!("its health answer did not parse: {error}"))
}

/// The status of a cluster whose members answered `answers` (in membership order), gathered by
/// node `served_by`.
pub fn summarize(
    served_by: NodeId,
    answers: Vec<(MemberView, Result<Health, String>)>,
) -> ClusterStatus {
    let leader = answers
        .iter()
        .filter_map(|(member, health)| Some((member.id, health.as_ref().ok()?)))
        .filter(|(_, health)| health.raft.role == RaftRole::Leader)
        .max_by_key(|(id, health)| (health.raft.term, std::cmp::Reverse(*id)));
    let leader_id = leader.map(|(id, _)| id);
    let leader_log = leader.and_then(|(_, health)| health.raft.last_log_index);
    let term = answers
        .iter()
        .filter_map(|(_, health)| health.as_ref().ok())
        .map(|health| health.raft.term)
        .max()
        .unwrap_or(0);
    let members: Vec<MemberStatus> = answers
        .into_iter()
        .map(|(member, health)| member_status(member, health, leader_id.map(|_| leader_log)))
        .collect();
    let is_voter = |member: &&MemberStatus| member.role == MemberRole::Voter;
    let voters = members.iter().filter(is_voter).count() as u64;
    let reachable_voters = members
        .iter()
        .filter(is_voter)
        .filter(|member| member.reachable)
        .count() as u64;
    let quorum = if voters == 0 { 0 } else { voters / 2 + 1 };
    assert!(quorum <= voters, "a quorum is at most every voter");
    assert!(reachable_voters <= voters, "reachable voters are voters");
    let problems = problems(leader_id, &members, reachable_voters, voters, quorum);
    ClusterStatus {
        served_by,
        leader_id,
        term,
        voters,
        reachable_voters,
        quorum,
        failure_tolerance: voters - quorum,
        problems,
        members,
    }
}

/// One member's line; `leader_log` is `Some` when a leader answered (with its last log index).
fn member_status(
    member: MemberView,
    health: Result<Health, String>,
    leader_log: Option<Option<u64>>,
) -> MemberStatus {
    let (raft, storage, error) = match health {
        Ok(health) => (Some(health.raft), Some(health.storage), None),
        Err(error) => (None, None, Some(error)),
    };
    let lag = match (&raft, leader_log) {
        (Some(raft), Some(leader_log)) => Some(
            leader_log
                .unwrap_or(0)
                .saturating_sub(raft.last_log_index.unwrap_or(0)),
        ),
        _ => None,
    };
    MemberStatus {
        id: member.id,
        addr: member.addr,
        role: member.role,
        reachable: error.is_none(),
        error,
        raft,
        storage,
        lag,
    }
}

/// What an operator must look at now, most serious first.
fn problems(
    leader_id: Option<NodeId>,
    members: &[MemberStatus],
    reachable_voters: u64,
    voters: u64,
    quorum: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    if leader_id.is_none() {
        problems.push(
            "no leader: writes and linearizable reads wait for one, then fail with 503 NO_LEADER"
                .to_owned(),
        );
    }
    if reachable_voters < quorum {
        problems.push(format!(
            "only {reachable_voters} of {voters} voters answer, fewer than the {quorum} a \
             quorum needs: the cluster cannot commit"
        ));
    }
    for member in members {
        if let Some(error) = &member.error {
            problems.push(format!(
                "node {} ({}) is unreachable: {error}",
                member.id, member.addr
            ));
        }
        if let Some(storage) = member.storage.as_ref().filter(|storage| storage.no_space) {
            let reason = storage.reason.as_deref().unwrap_or("no reason given");
            problems.push(format!(
                "node {} has a disk-space alarm and refuses writes: {reason}",
                member.id
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::wire::{RaftStatus, StorageStatus};

    fn member(id: NodeId, role: MemberRole) -> MemberView {
        MemberView {
            id,
            addr: format!("127.0.0.1:2200{id}"),
            role,
            reachable: true,
            matched_index: None,
            lag: 0,
        }
    }

    fn health(id: NodeId, role: RaftRole, term: u64, last_log_index: u64) -> Health {
        Health {
            status: "ok".into(),
            timestamp: "2026-12-07T09:00:00.000Z".into(),
            uptime: 1.0,
            raft: RaftStatus {
                node_id: id,
                role,
                leader_id: None,
                term,
                last_log_index: Some(last_log_index),
                committed_index: Some(last_log_index),
                applied_index: Some(last_log_index),
                snapshot_index: None,
                purged_index: None,
            },
            storage: StorageStatus {
                no_space: false,
                reason: None,
                data_dir_bytes: Some(4096),
                free_bytes: Some(1 << 30),
                quota_bytes: 8 << 30,
                free_bytes_min: 256 << 20,
            },
        }
    }

    #[test]
    fn a_healthy_cluster_names_its_leader_each_lag_and_can_lose_one_of_three() {
        let status = summarize(
            2,
            vec![
                (
                    member(1, MemberRole::Voter),
                    Ok(health(1, RaftRole::Leader, 4, 100)),
                ),
                (
                    member(2, MemberRole::Voter),
                    Ok(health(2, RaftRole::Follower, 4, 97)),
                ),
                (
                    member(3, MemberRole::Voter),
                    Ok(health(3, RaftRole::Follower, 4, 100)),
                ),
            ],
        );
        assert_eq!(status.served_by, 2);
        assert_eq!(status.leader_id, Some(1));
        assert_eq!(status.term, 4);
        assert_eq!((status.voters, status.quorum), (3, 2));
        assert_eq!(status.failure_tolerance, 1);
        assert_eq!(status.reachable_voters, 3);
        let lags: Vec<_> = status.members.iter().map(|member| member.lag).collect();
        assert_eq!(lags, [Some(0), Some(3), Some(0)]);
        assert!(status.problems.is_empty(), "{:?}", status.problems);
    }

    #[test]
    fn a_dead_leader_leaves_no_leader_and_says_who_is_unreachable() {
        let status = summarize(
            3,
            vec![
                (
                    member(1, MemberRole::Voter),
                    Err("connection refused".into()),
                ),
                (
                    member(2, MemberRole::Voter),
                    Ok(health(2, RaftRole::Candidate, 5, 100)),
                ),
                (
                    member(3, MemberRole::Voter),
                    Ok(health(3, RaftRole::Follower, 4, 100)),
                ),
            ],
        );
        assert_eq!(status.leader_id, None);
        assert_eq!(status.term, 5);
        assert_eq!(status.reachable_voters, 2);
        assert!(status.members.iter().all(|member| member.lag.is_none()));
        assert!(!status.members[0].reachable);
        assert!(status.members[0].raft.is_none());
        assert_eq!(status.problems.len(), 2, "{:?}", status.problems);
        assert!(status.problems[0].starts_with("no leader"));
        assert!(status.problems[1].contains("node 1 (127.0.0.1:22001) is unreachable"));
    }

    #[test]
    fn a_deposed_leader_of_an_older_term_is_not_the_leader() {
        let status = summarize(
            1,
            vec![
                (
                    member(1, MemberRole::Voter),
                    Ok(health(1, RaftRole::Leader, 3, 90)),
                ),
                (
                    member(2, MemberRole::Voter),
                    Ok(health(2, RaftRole::Leader, 4, 100)),
                ),
                (
                    member(3, MemberRole::Voter),
                    Ok(health(3, RaftRole::Follower, 4, 100)),
                ),
            ],
        );
        assert_eq!(status.leader_id, Some(2));
        assert_eq!(status.members[0].lag, Some(10));
    }

    #[test]
    fn a_disk_alarm_and_a_lost_quorum_are_problems_and_learners_do_not_vote() {
        let mut short = health(2, RaftRole::Follower, 4, 100);
        short.storage.no_space = true;
        short.storage.reason = Some("free 10 MiB under the 256 MiB minimum".into());
        let status = summarize(
            2,
            vec![
                (member(1, MemberRole::Voter), Err("timed out".into())),
                (member(2, MemberRole::Voter), Ok(short)),
                (member(3, MemberRole::Voter), Err("timed out".into())),
                (
                    member(4, MemberRole::Learner),
                    Ok(health(4, RaftRole::Learner, 4, 100)),
                ),
            ],
        );
        assert_eq!(
            (status.voters, status.quorum, status.reachable_voters),
            (3, 2, 1)
        );
        let problems = status.problems.join("\n");
        assert!(problems.contains("only 1 of 3 voters answer"), "{problems}");
        assert!(
            problems.contains("node 2 has a disk-space alarm and refuses writes: free 10 MiB"),
            "{problems}"
        );
        assert_eq!(status.problems.len(), 5, "{problems}");
    }
}
