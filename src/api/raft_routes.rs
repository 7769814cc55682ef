//! The server side of Raft RPC: decode bincode, hand to openraft, encode the answer as
//! `Result<Reply, String>` (see `raft::network`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::app::App;
use crate::client::wire::PeerStatus;
use crate::raft::network::{decode_rpc, encode_rpc, RpcDecodeError, SnapshotRequest};
use crate::raft::Snapshot;

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

pub async fn append(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(request) => reply(app.raft.append_entries(request).await),
        Err(error) => bad_request(error),
    }
}

pub async fn vote(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(request) => reply(app.raft.vote(request).await),
        Err(error) => bad_request(error),
    }
}

pub async fn pre_vote(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(request) => reply(app.raft.pre_vote(request).await),
        Err(error) => bad_request(error),
    }
}

pub async fn snapshot(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let request: SnapshotRequest = match parse(&body) {
        Ok(request) => request,
        Err(error) => return bad_request(error),
    };
    let snapshot = Snapshot {
        meta: request.meta,
        snapshot: request.data,
    };
    reply(app.raft.install_full_snapshot(request.vote, snapshot).await)
}

pub async fn transfer_leader(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match parse(&body) {
        Ok(request) => reply(app.raft.handle_transfer_leader(request).await),
        Err(error) => bad_request(error),
    }
}

/// Whether this node holds any Raft state: the bootstrap node asks this before initialising, so
/// a node whose data was wiped never founds a second cluster beside the live one.
pub async fn status(State(app): State<Arc<App>>) -> Response {
    match app.raft.is_initialized().await {
        Ok(initialized) => axum::Json(PeerStatus {
            id: app.id,
            initialized,
        })
        .into_response(),
        Err(fatal) => (StatusCode::SERVICE_UNAVAILABLE, fatal.to_string()).into_response(),
    }
}
