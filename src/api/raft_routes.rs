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
use crate::raft::network::{
    decode_rpc, encode_rpc, note_snapshot_chunk, RpcDecodeError, SnapshotChunk,
};
use crate::raft::{Snapshot, TypeConfig};
use crate::storage::fs::blocking;
use openraft::raft::SnapshotResponse;

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

/// One chunk of a snapshot transfer (see `raft::network::SnapshotChunk`): appended to a
/// temporary file; after the last one the file is checked and installed. Answers `None` until
/// then, and the install's answer (or the newer vote that refuses it) at the end.
pub async fn snapshot(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let chunk: SnapshotChunk = match parse(&body) {
        Ok(chunk) => chunk,
        Err(error) => return bad_request(error),
    };
    note_snapshot_chunk(chunk.data.len());
    let dir = app.state.snapshot_dir().clone();
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
        app.raft
            .install_full_snapshot(chunk.vote, snapshot)
            .await
            .map(Some),
    )
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
