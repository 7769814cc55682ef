//! Health endpoints: what a load balancer or Kubernetes asks.
//!
//! - `/api/health`: always 200 while the process serves; Raft position and disk-space alarm.
//! - liveness: 503 `RAFT_STOPPED` once Raft stopped (the server exits on a fatal error; this
//!   covers the moment before it does), 200 otherwise.
//! - readiness: 503 `NO_SPACE` while the disk-space alarm is raised (the node refuses writes),
//!   503 `NOT_READY` without a known leader or while behind the commit; 200 otherwise.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::json::rfc3339_ms;
use crate::app::{wall_clock_ms, App};
use crate::client::wire::{Envelope, Health, Liveness, Readiness};

/// `GET /api/health`: always 200 while the process serves; says who leads.
pub async fn health(State(app): State<Arc<App>>) -> Response {
    axum::Json(Envelope::ok(of(&app))).into_response()
}

/// This node's health, as `/api/health` answers it (and `/api/status` shows it for this node).
pub fn of(app: &App) -> Health {
    Health {
        status: "ok".into(),
        timestamp: rfc3339_ms(wall_clock_ms()),
        uptime: app.uptime().as_secs_f64(),
        raft: app.raft_status(),
        storage: app.space().status(),
    }
}

/// `GET /api/health/liveness`: the process is up and its Raft runs.
pub async fn liveness(State(app): State<Arc<App>>) -> Response {
    let stopped = app.with_metrics(|metrics| match &metrics.running_state {
        Err(fatal) => Some(fatal.to_string()),
        Ok(()) => None,
    });
    if let Some(cause) = stopped {
        return ApiError::raft_stopped(format!("raft stopped on node {}: {cause}", app.id()))
            .into_response();
    }
    axum::Json(Envelope::ok(Liveness {
        status: "alive".into(),
    }))
    .into_response()
}

/// `GET /api/health/readiness`: 200 only when this node has disk space for writes, knows a
/// leader and has applied everything it knows to be committed; 503 otherwise.
pub async fn readiness(State(app): State<Arc<App>>) -> Response {
    if let crate::space::Alarm::NoSpace { reason } = app.space().alarm() {
        return ApiError::no_space(format!(
            "not ready: node {} is short of disk space and refuses writes: {reason}",
            app.id()
        ))
        .into_response();
    }
    let raft = app.raft_status();
    let (leader, committed, applied) = (raft.leader_id, raft.committed_index, raft.applied_index);
    if leader.is_some() && applied >= committed {
        return axum::Json(Envelope::ok(Readiness {
            status: "ready".into(),
            leader_id: leader,
            applied_index: applied,
        }))
        .into_response();
    }
    let reason = if leader.is_none() {
        "no known leader".to_owned()
    } else {
        format!("applied {applied:?} is behind committed {committed:?}")
    };
    ApiError::not_ready(format!("not ready: {reason}")).into_response()
}
