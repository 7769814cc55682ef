//! The server side of Raft RPC: check who is asking (`identity`), decode bincode, hand to
//! openraft, encode the answer as `Result<Reply, String>` (see `raft::network`).
//!
//! Every RPC first passes the identity checks: a sender of another cluster, a member presenting
//! another incarnation than the recorded one, or a sender that knows another incarnation of
//! this node is answered 409 (`WRONG_CLUSTER`, `WRONG_INCARNATION`) and nothing reaches Raft.
//! Every answer, refusals included, carries this node's identity headers, which the sender
//! checks in turn.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;
use crate::app::forward::{ProposeBatch, ProposeReply, PROPOSE_BATCH_ITEMS_MAX};
use crate::app::App;
use crate::client::wire::PeerStatus;
use crate::identity::{AdmitError, Presented};
use crate::raft::network::{
    decode_rpc, encode_rpc, note_snapshot_chunk, RpcDecodeError, SnapshotChunk,
};
use crate::raft::{Snapshot, TypeConfig};
use crate::storage::fs::blocking;
use openraft::raft::{AppendEntriesResponse, SnapshotResponse};
use tracing::Instrument;

/// An append or a snapshot chunk: only a leader sends them, and a node without a cluster id
/// adopts the sender's.
const FROM_LEADER: bool = true;
/// A vote, a pre-vote or a leadership transfer.
const FROM_ANY: bool = false;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcDecodeError> {
    decode_rpc(body)
}

fn bad_request(error: RpcDecodeError) -> Response {
    (StatusCode::BAD_REQUEST, error.to_string()).into_response()
}

fn reply<T: Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Response {
    let result = result.map_err(|error| error.to_string());
    (StatusCode::OK, encode_rpc(&result)).into_response()
}

/// The identity checks of an RPC (see `identity::judge_request`): Ok to hand it to Raft, or
/// the answer refusing it.
async fn admit(app: &App, headers: &HeaderMap, from_leader: bool) -> Result<(), Response> {
    let presented =
        Presented::from_headers(|name| headers.get(name).and_then(|value| value.to_str().ok()));
    match app.identity().admit_request(&presented, from_leader).await {
        Ok(()) => Ok(()),
        Err(AdmitError::Refused(refusal)) => {
            app.identity().warn(&refusal, "refused a Raft RPC");
            Err(ApiError::identity_refused(&refusal).into_response())
        }
        Err(AdmitError::Storage(error)) => {
            Err(ApiError::internal(error.to_string()).into_response())
        }
    }
}

/// Adds this node's identity headers to `response`.
fn with_identity(app: &App, mut response: Response) -> Response {
    for (name, value) in app.identity().answer_headers() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// Runs `handle` if the RPC passes the identity checks; answers with this node's identity.
async fn guarded(
    app: &App,
    headers: &HeaderMap,
    from_leader: bool,
    handle: impl Future<Output = Response>,
) -> Response {
    let response = match admit(app, headers, from_leader).await {
        Ok(()) => handle.await,
        Err(refused) => refused,
    };
    with_identity(app, response)
}

pub async fn append(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    guarded(&app, &headers, FROM_LEADER, async {
        match parse(&body) {
            Ok(request) => {
                let answer = app.raft().append_entries(request).await;
                // A leader this node recognises reached it: it is in contact (`app`'s
                // quorum contact). A refusal for a higher vote is not contact with a leader.
                if answer
                    .as_ref()
                    .is_ok_and(|response| !matches!(response, AppendEntriesResponse::HigherVote(_)))
                {
                    app.note_leader_append();
                }
                reply(answer)
            }
            Err(error) => bad_request(error),
        }
    })
    .await
}

pub async fn vote(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    guarded(&app, &headers, FROM_ANY, async {
        match parse(&body) {
            Ok(request) => reply(app.raft().vote(request).await),
            Err(error) => bad_request(error),
        }
    })
    .await
}

pub async fn pre_vote(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    guarded(&app, &headers, FROM_ANY, async {
        match parse(&body) {
            Ok(request) => reply(app.raft().pre_vote(request).await),
            Err(error) => bad_request(error),
        }
    })
    .await
}

/// One chunk of a snapshot transfer (see `raft::network::SnapshotChunk`): appended to a
/// temporary file; after the last one the file is checked and installed. Answers `None` until
/// then, and the install's answer (or the newer vote that refuses it) at the end.
pub async fn snapshot(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    guarded(&app, &headers, FROM_LEADER, receive_chunk(&app, body)).await
}

async fn receive_chunk(app: &App, body: Bytes) -> Response {
    let chunk: SnapshotChunk = match parse(&body) {
        Ok(chunk) => chunk,
        Err(error) => return bad_request(error),
    };
    note_snapshot_chunk(chunk.data.len());
    let dir = app.snapshot_dir().clone();
    let (transfer, offset, done) = (chunk.transfer.clone(), chunk.offset, chunk.done);
    let data = chunk.data;
    let received = blocking(move || dir.receive(&transfer, offset, &data, done)).await;
    let file = match received {
        Ok(None) => return reply(Ok::<Option<SnapshotResponse<TypeConfig>>, String>(None)),
        Ok(Some(file)) => file,
        Err(error) => return reply(Err::<Option<SnapshotResponse<TypeConfig>>, _>(error)),
    };
    let snapshot = Snapshot {
        meta: chunk.meta,
        snapshot: file,
    };
    reply(
        app.raft()
            .install_full_snapshot(chunk.vote, snapshot)
            .await
            .map(Some),
    )
}

pub async fn transfer_leader(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    guarded(&app, &headers, FROM_ANY, async {
        match parse(&body) {
            Ok(request) => reply(app.raft().handle_transfer_leader(request).await),
            Err(error) => bad_request(error),
        }
    })
    .await
}

/// Whether this node holds any Raft state, and the voters of its membership: the bootstrap node
/// asks this before initialising (so a node whose data was wiped never founds a second cluster
/// beside the live one), and a node starting on an empty disk asks it to find out whether it
/// is still a voter (`node::start`). Answers with this node's identity headers, from which
/// peers learn its incarnation (`node::peer_incarnations`); asking changes nothing here.
pub async fn status(State(app): State<Arc<App>>) -> Response {
    let response = match app.raft().is_initialized().await {
        Ok(initialized) => {
            let (voters, membership_index) = app.with_metrics(|metrics| {
                let stored = &metrics.membership_config;
                (
                    stored.membership().voter_ids().collect(),
                    stored.log_id().as_ref().map(|id| id.index),
                )
            });
            axum::Json(PeerStatus {
                id: app.id(),
                initialized,
                voters,
                membership_index,
            })
            .into_response()
        }
        Err(fatal) => (StatusCode::SERVICE_UNAVAILABLE, fatal.to_string()).into_response(),
    };
    with_identity(&app, response)
}

/// `POST /raft/propose` (peers only: behind the cluster secret, and the identity checks of
/// every Raft RPC): proposes every item of a follower's batch here, concurrently, and answers
/// each one's result in order.
pub async fn propose(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    guarded(&app, &headers, FROM_ANY, propose_batch(&app, body)).await
}

async fn propose_batch(app: &Arc<App>, body: Bytes) -> Response {
    let batch: ProposeBatch = match parse(&body) {
        Ok(batch) => batch,
        Err(error) => return bad_request(error),
    };
    if batch.items.len() > PROPOSE_BATCH_ITEMS_MAX {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "a forwarded batch holds at most {PROPOSE_BATCH_ITEMS_MAX} items, got {}",
                batch.items.len()
            ),
        )
            .into_response();
    }
    let from = batch.from;
    let proposals = batch.items.into_iter().map(|item| {
        let span = super::request_id::forwarded_span(&item.request_id, &item.path, from);
        let app = app.clone();
        async move {
            let started = tokio::time::Instant::now();
            let result = app.propose(item.command, item.idempotency).await;
            super::request_id::forwarded_served(&result, started);
            result
        }
        .instrument(span)
    });
    let reply: ProposeReply = futures::future::join_all(proposals).await;
    (StatusCode::OK, encode_rpc(&reply)).into_response()
}
