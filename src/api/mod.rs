//! HTTP in: the seed-compatible client API, the Raft RPC routes and the guards in front of them.
//!
//! Every node serves every route. Handlers are thin: they parse and validate ([`request`],
//! answering 400, 413, 415 in the seed's error shape) into the shared wire types
//! (`client::wire`), then call [`App`](crate::app::App) through [`leader`], which serves the
//! request here if this node leads, forwards it to the leader otherwise, and waits for a leader
//! within the write deadline when none is known. Failures become HTTP in exactly one place,
//! [`error::ApiError`]. Paths come from `client::routes`.
//!
//! Security: `/raft/*` (and admin routes) require the cluster secret in `x-stockraft-secret`;
//! client routes require `Authorization: Bearer <token>` only when a client token is configured.
//! Secrets are compared in constant time.

mod admin;
mod client_scope;
pub mod error;
mod health;
mod inventory;
pub mod json;
mod leader;
mod metrics;
pub mod openapi;
mod overload;
mod prometheus;
mod raft_routes;
mod request;
pub mod request_id;
mod sync;

pub use client_scope::ClientScope;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::{App, Counters};
use crate::client::{headers, routes};
use crate::transport::SECRET_HEADER;
use error::ApiError;

/// Largest Raft RPC body: what its decoder accepts (snapshots travel in 1 MiB chunks).
pub const RAFT_BODY_LIMIT_BYTES: usize = crate::raft::network::RPC_DECODE_LIMIT_BYTES;

/// The node's whole HTTP surface.
pub fn router(app: Arc<App>) -> Router {
    let raft = Router::new()
        .route(routes::raft::APPEND, post(raft_routes::append))
        .route(routes::raft::VOTE, post(raft_routes::vote))
        .route(routes::raft::PRE_VOTE, post(raft_routes::pre_vote))
        .route(routes::raft::SNAPSHOT, post(raft_routes::snapshot))
        .route(
            routes::raft::TRANSFER_LEADER,
            post(raft_routes::transfer_leader),
        )
        .route(routes::raft::STATUS, get(raft_routes::status))
        .layer(axum::extract::DefaultBodyLimit::max(RAFT_BODY_LIMIT_BYTES))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_secret));

    let client = Router::new()
        .route(routes::INVENTORY, post(inventory::create_from_body))
        .route(routes::INVENTORY_BATCH, post(inventory::create_batch))
        .route(
            routes::RECORD,
            get(inventory::get).post(inventory::create_at_path),
        )
        .route(routes::LEGACY_RECORD, get(inventory::get_legacy))
        .route(routes::ADJUST, post(inventory::adjust))
        .route(routes::RESERVE, post(inventory::reserve))
        .route(routes::METRICS, get(metrics::metrics))
        .route(routes::HEALTH_METRICS, get(metrics::metrics))
        .route(routes::SYNC, post(sync::barrier))
        .route(routes::SYNC_STATUS, get(sync::status))
        .route(routes::SYNC_START, post(sync::start))
        .route(routes::SYNC_STOP, post(sync::stop))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            require_client_token,
        ))
        .route_layer(middleware::from_fn_with_state(
            Duration::from_millis(app.config.api.request_timeout_ms),
            overload::deadline,
        ))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overload::shed))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    app.config.api.max_in_flight_requests,
                )),
        );
    // Outermost: a client over its rate takes no slot.
    let client = match overload::RateLimit::from_config(&app.config.api) {
        Some(limit) => {
            client.route_layer(middleware::from_fn_with_state(limit, overload::rate_limit))
        }
        None => client,
    };

    let admin = Router::new()
        .route(routes::METRICS_RESET, post(metrics::reset))
        .route(routes::CLUSTER, get(admin::cluster))
        .route(routes::CLUSTER_LEARNERS, post(admin::add_learner))
        .route(routes::CLUSTER_PROMOTE, post(admin::promote))
        .route(routes::CLUSTER_REMOVE, post(admin::remove))
        .route(
            routes::CLUSTER_TRANSFER_LEADER,
            post(admin::transfer_leader),
        )
        .route(routes::CLUSTER_SNAPSHOT, post(admin::snapshot))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_secret));

    let open = Router::new()
        .route(routes::HEALTH, get(health::health))
        .route(routes::LIVENESS, get(health::liveness))
        .route(routes::READINESS, get(health::readiness))
        .route(routes::PROMETHEUS, get(prometheus::scrape))
        .route(routes::OPENAPI, get(serve_openapi));

    Router::new()
        .merge(raft)
        .merge(client)
        .merge(admin)
        .merge(open)
        // A route layer: it runs after routing, so it sees the matched route pattern.
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            prometheus::observe,
        ))
        .fallback(|| async { ApiError::not_found("no such route").into_response() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed().into_response() })
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(middleware::from_fn_with_state(
            Arc::new(request_id::RequestIds::new(app.id, app.now_ms())),
            request_id::assign,
        ))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            strip_internal_headers,
        ))
        .with_state(app)
}

/// `GET /api/openapi.json`, rendered once.
async fn serve_openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(openapi::document).clone();
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Counts every `/api` request and every error answer, for `GET /api/metrics`.
async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let counted = request.uri().path().starts_with(routes::API_PREFIX);
    let response = next.run(request).await;
    if counted {
        Counters::bump(&app.counters.requests);
        if response.status().is_client_error() || response.status().is_server_error() {
            Counters::bump(&app.counters.errors);
        }
    }
    response
}

/// Compares a `guess` with the `expected` secret without leaking, through timing, how much of
/// the guess was right or how long the secret is: the work is the same for every guess (one
/// pass over the expected bytes), and a length mismatch is folded in, not returned early.
fn constant_time_eq(guess: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(guess.len() != expected.len());
    for (i, byte) in expected.iter().enumerate() {
        diff |= byte ^ guess.get(i).copied().unwrap_or(!byte);
    }
    diff == 0
}

/// Only a node may say a request was forwarded by a node: a client's `x-stockraft-forwarded`
/// (without the cluster secret a forwarding node adds) is dropped before anything reads it.
async fn strip_internal_headers(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.headers().contains_key(leader::FORWARDED_HEADER)
        && !has_secret(&app, request.headers())
    {
        request.headers_mut().remove(leader::FORWARDED_HEADER);
    }
    next.run(request).await
}

fn has_secret(app: &App, headers: &HeaderMap) -> bool {
    headers.get(SECRET_HEADER).is_some_and(|value| {
        constant_time_eq(value.as_bytes(), app.config.cluster.secret.as_bytes())
    })
}

async fn require_secret(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if !has_secret(&app, request.headers()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

async fn require_client_token(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.config.cluster.client_token {
        let expected = format!("Bearer {token}");
        let authorized = request
            .headers()
            .get(headers::AUTHORIZATION)
            .is_some_and(|value| constant_time_eq(value.as_bytes(), expected.as_bytes()));
        // Nodes forwarding a client's request pass its Authorization header along unchanged.
        if !authorized {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_equal_only_when_identical_whatever_the_lengths() {
        assert!(constant_time_eq(b"sekret-value", b"sekret-value"));
        assert!(!constant_time_eq(b"sekret-valuX", b"sekret-value"));
        assert!(!constant_time_eq(b"sekret", b"sekret-value"));
        assert!(!constant_time_eq(b"sekret-value-and-more", b"sekret-value"));
        assert!(!constant_time_eq(b"", b"sekret-value"));
        // A guess padded with what `unwrap_or` would compare against still fails.
        assert!(!constant_time_eq(b"ab", b"ab\xff"));
        assert!(constant_time_eq(b"", b""));
    }
}
