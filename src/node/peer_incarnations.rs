//! Keeping the recorded incarnations in step with the membership, in a task per node.
//!
//! This lives with the node, not in `identity`: it follows Raft's membership, and Raft sits
//! above `identity` (which its network uses to check every RPC). The node wires the two.
//!
//! - **Forget** the incarnation of every node that left the membership, as soon as this node
//!   sees a membership without it: the operator's way out for a wiped member (remove it, start
//!   it empty with `--join`) brings it back under its old id with a new incarnation. The leader
//!   that removes a node also forgets it at once (`membership::remove`).
//! - **Learn** the incarnation of every member this node has none for, by asking it
//!   (`GET /raft/status` answers with its identity headers), about once a second. Raft alone
//!   would teach a follower a peer's incarnation only when one of them campaigns; without this,
//!   a voter wiped before its peers ever exchanged a message would be trusted on first use.
//!
//! What this does not cover: a node that sees a member removed and re-added only together
//! (both changes arrive in one batch or one snapshot while it lagged) keeps the old
//! incarnation, and refuses the re-added member's vote requests until that member is removed
//! and re-added again.

use std::sync::Arc;
use std::time::Duration;

use openraft_rt::WatchReceiver;

use crate::client::routes;
use crate::identity::{AdmitError, Identity, Presented};
use crate::raft::Raft;
use crate::transport::{Transport, WireRequest};
use crate::NodeId;

/// How often members without a recorded incarnation are asked for it.
pub const LEARN_INTERVAL: Duration = Duration::from_secs(1);
/// How long one identity question may take (answered locally by the asked node).
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs until Raft stops: forgets departed members, learns new ones (module docs).
pub async fn keep_peers(
    identity: Arc<Identity>,
    raft: Raft,
    transport: Arc<dyn Transport>,
    secret: Arc<str>,
) {
    let mut server = raft.server_metrics();
    let mut next_learning = tokio::time::Instant::now();
    loop {
        let members: Option<Vec<(NodeId, String)>> = {
            let metrics = server.borrow_watched();
            let stored = &metrics.membership_config;
            stored.log_id().is_some().then(|| {
                stored
                    .membership()
                    .nodes()
                    .map(|(id, node)| (*id, node.addr.clone()))
                    .collect()
            })
        };
        if let Some(members) = members {
            let ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
            if let Err(error) = identity.forget_all_but(&ids).await {
                tracing::warn!(%error, "could not forget departed members' incarnations");
            }
            if tokio::time::Instant::now() >= next_learning {
                learn(&identity, &*transport, &secret, &members).await;
                next_learning = tokio::time::Instant::now() + LEARN_INTERVAL;
            }
        }
        // Wake on a membership (or vote, or leader) change, or to learn again.
        let wait = next_learning.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Err(_stopped)) = tokio::time::timeout(wait, server.changed()).await {
            return;
        }
    }
}

/// Asks every member without a recorded incarnation for its identity, all at once.
async fn learn(
    identity: &Identity,
    transport: &dyn Transport,
    secret: &str,
    members: &[(NodeId, String)],
) {
    let unknown = members
        .iter()
        .filter(|(id, _)| *id != identity.own_id && identity.known(*id).is_none());
    let asks = unknown.map(|(id, addr)| learn_one(identity, transport, secret, *id, addr));
    futures::future::join_all(asks).await;
}

async fn learn_one(
    identity: &Identity,
    transport: &dyn Transport,
    secret: &str,
    target: NodeId,
    addr: &str,
) {
    let mut request = WireRequest::get(routes::raft::STATUS).with_secret(secret);
    request.headers.extend(identity.request_headers(target));
    let Ok(response) = transport.send(addr, request, STATUS_TIMEOUT).await else {
        return;
    };
    let presented = Presented::from_headers(|name| response.header(name));
    if response.status != 200 || presented.node.is_none() {
        return;
    }
    match identity.admit_reply(target, &presented).await {
        Ok(()) => {}
        Err(AdmitError::Refused(refusal)) => {
            identity.warn(&refusal, "a member's identity is not the one recorded")
        }
        Err(AdmitError::Storage(error)) => {
            tracing::warn!(%error, "could not record a member's incarnation")
        }
    }
}
