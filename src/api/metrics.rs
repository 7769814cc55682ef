//! `GET /api/metrics` and `POST /api/metrics/reset`: the seed's counters plus Raft's view.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::app::App;

/// `GET /api/metrics`: this node's request counters and Raft state.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut data: Map<String, Value> = app
        .counters
        .values()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), json!(value)))
        .collect();
    data.insert(
        "raft".into(),
        Value::Object(super::health::raft_status(&app)),
    );
    axum::Json(json!({ "success": true, "data": data })).into_response()
}

/// `POST /api/metrics/reset` (admin): zeroes this node's counters. Raft state is not a counter
/// and is untouched.
pub async fn reset(State(app): State<Arc<App>>) -> Response {
    app.counters.reset();
    axum::Json(json!({ "success": true, "data": { "reset": true } })).into_response()
}
