//! Health endpoints: what a load balancer or Kubernetes asks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::json::rfc3339_ms;
use crate::app::{wall_clock_ms, App};

fn role(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    }
}

/// This node's Raft position, shared by `/api/health` and `/api/metrics`.
pub(super) fn raft_status(app: &App) -> Map<String, Value> {
    let metrics = app.metrics();
    let index = |log_id: Option<crate::raft::LogId>| log_id.map(|id| id.index);
    let status = json!({
        "nodeId": app.id,
        "role": role(metrics.state),
        "leaderId": metrics.current_leader,
        "term": metrics.current_term,
        "lastLogIndex": metrics.last_log_index,
        "committedIndex": index(metrics.cluster_committed),
        "appliedIndex": index(metrics.last_applied),
        "snapshotIndex": index(metrics.snapshot),
        "purgedIndex": index(metrics.purged),
    });
    match status {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// `GET /api/health`: always 200 while the process serves; says who leads.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    let mut data = raft_status(&app);
    data.insert("status".into(), json!("ok"));
    data.insert("timestamp".into(), json!(rfc3339_ms(wall_clock_ms())));
    data.insert("uptime".into(), json!(app.uptime().as_secs_f64()));
    axum::Json(json!({ "success": true, "data": data })).into_response()
}

/// `GET /api/health/liveness`: the process is up.
pub async fn liveness() -> Response {
    axum::Json(json!({ "success": true, "data": { "status": "alive" } })).into_response()
}

/// `GET /api/health/readiness`: 200 only when this node knows a leader and has applied
/// everything it knows to be committed; 503 otherwise.
pub async fn readiness(State(app): State<Arc<App>>) -> Response {
    let metrics = app.metrics();
    let committed = metrics.cluster_committed.map(|id| id.index);
    let applied = metrics.last_applied.map(|id| id.index);
    let leader = metrics.current_leader;
    if leader.is_some() && applied >= committed {
        return (
            StatusCode::OK,
            axum::Json(json!({
                "success": true,
                "data": { "status": "ready", "leaderId": leader, "appliedIndex": applied }
            })),
        )
            .into_response();
    }
    let reason = if leader.is_none() {
        "no known leader".to_owned()
    } else {
        format!("applied {applied:?} is behind committed {committed:?}")
    };
    let mut error = ApiError::unavailable(format!("not ready: {reason}"));
    error.code = "NOT_READY";
    error.into_response()
}
