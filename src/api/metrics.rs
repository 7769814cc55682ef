//! `GET /api/metrics` and `POST /api/metrics/reset`: the seed's counters plus Raft's view.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::app::App;

/// `GET /api/metrics`: this node's request counters and Raft state.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let raft = app.metrics();
    let mut data: Map<String, Value> = app
        .counters
        .values()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!(value)))
        .collect();
    data.insert(
        "raft".into(),
        json!({
            "nodeId": app.id,
            "state": format!("{:?}", raft.state),
            "term": raft.current_term,
            "leaderId": raft.current_leader,
            "lastLogIndex": raft.last_log_index,
            "commitIndex": raft.cluster_committed.map(|id| id.index),
            "appliedIndex": raft.last_applied.map(|id| id.index),
            "snapshotIndex": raft.snapshot.map(|id| id.index),
            "purgedIndex": raft.purged.map(|id| id.index),
        }),
    );
    axum::Json(json!({ "success": true, "data": data })).into_response()
}

/// `POST /api/metrics/reset` (admin): zeroes this node's counters. Raft state is not a counter
/// and is untouched.
pub async fn reset(State(app): State<Arc<App>>) -> Response {
    app.counters.reset();
    axum::Json(json!({ "success": true, "data": { "reset": true } })).into_response()
}
