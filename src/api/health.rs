//! Health endpoints: what a load balancer or Kubernetes asks.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

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

/// `GET /api/health`: always 200 while the process serves; says who leads.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    let metrics = app.metrics();
    axum::Json(json!({
        "success": true,
        "data": {
            "status": "ok",
            "timestamp": rfc3339_ms(wall_clock_ms()),
            "uptime": app.uptime().as_secs_f64(),
            "nodeId": app.id,
            "role": role(metrics.state),
            "leaderId": metrics.current_leader,
            "term": metrics.current_term,
            "lastLogIndex": metrics.last_log_index,
            "committedIndex": metrics.cluster_committed.map(|id| id.index),
            "appliedIndex": metrics.last_applied.map(|id| id.index),
            "snapshotIndex": metrics.snapshot.map(|id| id.index),
            "purgedIndex": metrics.purged.map(|id| id.index),
        }
    }))
    .into_response()
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
