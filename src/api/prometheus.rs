//! `GET /metrics`: this node's series in the Prometheus text format (see `crate::telemetry`),
//! and the layer that times every client request by route pattern.
//!
//! Open like the health routes: the series carry no inventory data (routes are patterns, never
//! SKUs or store ids), and scrapers seldom carry secrets.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::{raft_status_of, App};
use crate::client::routes;
use crate::client::wire::RaftStatus;
use crate::raft::NodeId;
use crate::telemetry::{set_gauge, FollowerLabels, RaftSeries};

/// The exposition format's media type (OpenMetrics text, which Prometheus negotiates).
const CONTENT_TYPE_OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Reads Raft's position and the storage figures into their gauges, then encodes every series.
pub async fn scrape(State(app): State<Arc<App>>) -> Response {
    let telemetry = app.telemetry();
    app.with_metrics(|metrics| {
        let position = raft_status_of(metrics);
        set_raft_gauges(&telemetry.raft, &position, app.id());
        // Only the leader tracks followers; elsewhere the family is emptied so that a deposed
        // leader does not keep reporting stale lags.
        telemetry.raft.follower_lag.clear();
        let last = position.last_log_index.unwrap_or(0);
        if let Some(replication) = &metrics.replication {
            for (follower, matched) in replication.iter() {
                if *follower == app.id() {
                    continue;
                }
                let lag = last.saturating_sub(matched.as_ref().map_or(0, |id| id.index));
                set_gauge(
                    &telemetry.raft.follower_lag.get_or_create(&FollowerLabels {
                        follower: *follower,
                    }),
                    lag,
                );
            }
        }
    });
    set_gauge(
        &telemetry.requests.proposals_in_flight,
        app.proposals_in_flight() as u64,
    );
    set_gauge(&telemetry.disk.wal_bytes, app.wal_bytes());
    let storage = app.space().status();
    set_gauge(
        &telemetry.disk.data_dir_bytes,
        storage.data_dir_bytes.unwrap_or(0),
    );
    set_gauge(&telemetry.disk.no_space, u64::from(storage.no_space));
    if let Some(counts) = app.reservation_counts() {
        set_gauge(&telemetry.disk.reservations_held, counts.held);
        set_gauge(&telemetry.disk.reservations_ended, counts.ended);
    }
    (
        [(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)],
        telemetry.encode(),
    )
        .into_response()
}

/// This node's position into the Raft gauges (0 for "none").
fn set_raft_gauges(gauges: &RaftSeries, position: &RaftStatus, own_id: NodeId) {
    let index = |index: Option<u64>| index.unwrap_or(0);
    set_gauge(&gauges.term, position.term);
    set_gauge(&gauges.leader, index(position.leader_id));
    set_gauge(
        &gauges.is_leader,
        u64::from(position.leader_id == Some(own_id)),
    );
    set_gauge(&gauges.last_log_index, index(position.last_log_index));
    set_gauge(&gauges.committed_index, index(position.committed_index));
    set_gauge(&gauges.applied_index, index(position.applied_index));
    set_gauge(&gauges.snapshot_index, index(position.snapshot_index));
    set_gauge(&gauges.purged_index, index(position.purged_index));
}

/// Counts and times each client request (`/api/...`) by its route pattern, method and status.
pub async fn observe(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned())
        .filter(|route| route.starts_with(routes::API_PREFIX));
    let Some(route) = route else {
        return next.run(request).await;
    };
    let method = request.method().as_str().to_owned();
    let started = tokio::time::Instant::now();
    let response = next.run(request).await;
    app.telemetry().request_done(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
