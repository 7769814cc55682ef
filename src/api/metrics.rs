//! `GET /api/metrics` (also served as the seed's `GET /api/health/metrics`) and
//! `POST /api/metrics/reset`: the seed's counters plus Raft's view and the disk-space alarm.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::client::wire::{Envelope, Reset};

/// This node's request counters, Raft position and disk-space alarm.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    axum::Json(Envelope::ok(app.metrics_readout())).into_response()
}

/// `POST /api/metrics/reset` (admin): zeroes this node's counters. Raft state is not a counter
/// and is untouched.
pub async fn reset(State(app): State<Arc<App>>) -> Response {
    app.reset_counters();
    axum::Json(Envelope::ok(Reset { reset: true })).into_response()
}
