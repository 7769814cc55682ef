//! HTTP in: the seed-compatible client API, the Raft RPC routes and the guards in front of them.
//!
//! Every node serves every route. Handlers are thin: they parse and validate ([`request`],
//! answering 400, 413, 415 in the seed's error shape) into the shared wire types
//! (`client::wire`), then call [`App`](crate::app::App) through [`leader`], which serves the
//! request here if this node leads, forwards it to the leader otherwise, and waits for a leader
//! within the write deadline when none is known. Failures become HTTP in exactly one place,
//! [`error::ApiError`]. Paths come from `client::routes`.
//!
//! Security: each route family has one guard ([`auth`]): Raft RPC needs the cluster secret in
//! `x-stockraft-secret`, admin routes the secret or an `admin` token, client routes a token
//! with their scope once any token is configured. Which routes a listener serves is its
//! [`Surface`]. The operator console's page (`/ui/`, [`console`]) is served where clients are.

mod admin;
pub mod auth;
mod batch;
mod client_scope;
mod console;
pub mod error;
mod event_stream;
mod events;
mod health;
mod inventory;
pub mod json;
pub mod leader;
mod metrics;
pub mod openapi;
mod overload;
mod prometheus;
mod raft_routes;
mod request;
pub mod request_id;
mod reservations;
mod status;
mod surface;
mod sync;
mod views;
mod whoami;

pub use client_scope::ClientScope;
pub use inventory::write_rendered;
pub use surface::Surface;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::{App, Counted};
use crate::client::routes;
use crate::config::Scope;
use error::ApiError;

/// The longest an admin call may take, body included.
const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Largest Raft RPC body: what its decoder accepts (snapshots travel in 1 MiB chunks).
pub const RAFT_BODY_LIMIT_BYTES: usize = crate::raft::network::RPC_DECODE_LIMIT_BYTES;

/// The node's whole HTTP surface, on one listener.
pub fn router(app: Arc<App>) -> Router {
    router_for(app, Surface::Both)
}

/// The routes `surface` serves, each behind its guard (`auth`), under the layers every route
/// shares: request metrics, the 404 and 405 answers, request counting, request ids, and the
/// stripping of nodes' own headers.
pub fn router_for(app: Arc<App>, surface: Surface) -> Router {
    let routes = Router::new()
        .merge(client_routes(&app, surface))
        .merge(admin_routes(&app, surface))
        .merge(open_routes());
    let routes = match surface {
        Surface::Both => routes.merge(raft_routes(&app)).merge(console_routes()),
        Surface::Peer => routes.merge(raft_routes(&app)),
        Surface::Client => routes.merge(console_routes()),
    };
    routes
        // A route layer: it runs after routing, so it sees the matched route pattern.
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            prometheus::observe,
        ))
        .fallback(|| async { ApiError::not_found("no such route").into_response() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed().into_response() })
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .layer(middleware::from_fn_with_state(
            Arc::new(request_id::RequestIds::new(app.id(), app.now_ms())),
            request_id::assign,
        ))
        .layer(middleware::from_fn_with_state(
            (app.clone(), surface),
            strip_internal_headers,
        ))
        .with_state(app)
}

/// The Raft RPC routes: the cluster secret, a body as large as an RPC may be, and the time a
/// snapshot chunk may take.
fn raft_routes(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route(routes::raft::APPEND, post(raft_routes::append))
        .route(routes::raft::VOTE, post(raft_routes::vote))
        .route(routes::raft::PRE_VOTE, post(raft_routes::pre_vote))
        .route(routes::raft::SNAPSHOT, post(raft_routes::snapshot))
        .route(
            routes::raft::TRANSFER_LEADER,
            post(raft_routes::transfer_leader),
        )
        .route(routes::raft::STATUS, get(raft_routes::status))
        .route(routes::raft::PROPOSE, post(raft_routes::propose))
        .layer(axum::extract::DefaultBodyLimit::max(RAFT_BODY_LIMIT_BYTES))
        // A whole RPC, body included, within the longest any RPC may take (a snapshot chunk's
        // send and install): a peer trickling a body cannot hold a handler longer.
        .route_layer(middleware::from_fn_with_state(
            Duration::from_millis(app.config().raft.install_snapshot_timeout_ms),
            overload::deadline,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_secret,
        ))
}

/// The seed's client routes, each behind a token with its scope, then under the client limits
/// ([`client_limits`]).
fn client_routes(app: &Arc<App>, surface: Surface) -> Router<Arc<App>> {
    let scope = |scope: Scope| {
        middleware::from_fn_with_state((app.clone(), scope, surface), auth::require_scope)
    };
    let routes = Router::new()
        .route(
            routes::INVENTORY,
            post(inventory::create_from_body).layer(scope(Scope::Write)),
        )
        .route(
            routes::INVENTORY_BATCH,
            post(batch::batch).layer(scope(Scope::Write)),
        )
        .route(
            routes::RECORD,
            get(inventory::get)
                .layer(scope(Scope::Read))
                .merge(post(inventory::create_at_path).layer(scope(Scope::Write))),
        )
        .route(
            routes::LEGACY_RECORD,
            get(inventory::get_legacy).layer(scope(Scope::Read)),
        )
        .route(
            routes::ADJUST,
            post(inventory::adjust).layer(scope(Scope::Write)),
        )
        .route(
            routes::RESERVE,
            post(inventory::reserve).layer(scope(Scope::Reserve)),
        )
        .route(routes::SKU_VIEW, get(views::sku).layer(scope(Scope::Read)))
        .route(
            routes::STORE_VIEW,
            get(views::store).layer(scope(Scope::Read)),
        )
        .route(
            routes::RESERVATIONS,
            post(reservations::cart).layer(scope(Scope::Reserve)),
        )
        .route(
            routes::RESERVATION,
            get(reservations::get).layer(scope(Scope::Read)),
        )
        .route(
            routes::RESERVATION_COMMIT,
            post(reservations::commit).layer(scope(Scope::Reserve)),
        )
        .route(
            routes::RESERVATION_RELEASE,
            post(reservations::release).layer(scope(Scope::Reserve)),
        )
        .route(
            routes::METRICS,
            get(metrics::metrics).layer(scope(Scope::Read)),
        )
        .route(
            routes::HEALTH_METRICS,
            get(metrics::metrics).layer(scope(Scope::Read)),
        )
        .route(routes::EVENTS, get(events::page).layer(scope(Scope::Read)))
        .route(
            routes::EVENTS_STREAM,
            get(event_stream::stream).layer(scope(Scope::Read)),
        )
        .route(
            routes::STATUS,
            get(status::status).layer(scope(Scope::Read)),
        )
        .route(routes::SYNC, post(sync::barrier).layer(scope(Scope::Read)))
        .route(
            routes::SYNC_STATUS,
            get(sync::status).layer(scope(Scope::Read)),
        );
    client_limits(routes, app, surface)
}

/// What bounds the client routes, innermost first: the request deadline, the limit of requests
/// in flight (shedding beyond it), the per-client rate limit (outermost: a client over its
/// rate takes no slot), and on the peer listener the cluster secret (there client routes serve
/// nodes, forwarding requests, and operators).
fn client_limits(routes: Router<Arc<App>>, app: &Arc<App>, surface: Surface) -> Router<Arc<App>> {
    let routes = routes
        .route_layer(middleware::from_fn_with_state(
            Duration::from_millis(app.config().api.request_timeout_ms),
            overload::deadline,
        ))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overload::shed))
                .layer(tower::load_shed::LoadShedLayer::new())
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    app.config().api.max_in_flight_requests,
                )),
        );
    let routes = match overload::RateLimit::from_config(&app.config().api) {
        Some(limit) => {
            routes.route_layer(middleware::from_fn_with_state(limit, overload::rate_limit))
        }
        None => routes,
    };
    match surface {
        Surface::Peer => routes.route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::require_secret,
        )),
        Surface::Both | Surface::Client => routes,
    }
}

/// The admin routes: the secret or an `admin` token, and a deadline longer than any admin call
/// takes (a learner catching up with `wait`).
fn admin_routes(app: &Arc<App>, surface: Surface) -> Router<Arc<App>> {
    Router::new()
        .route(routes::METRICS_RESET, post(metrics::reset))
        .route(routes::SYNC_START, post(sync::start))
        .route(routes::SYNC_STOP, post(sync::stop))
        .route(routes::CLUSTER, get(admin::cluster))
        .route(routes::CLUSTER_LEARNERS, post(admin::add_learner))
        .route(routes::CLUSTER_PROMOTE, post(admin::promote))
        .route(routes::CLUSTER_REMOVE, post(admin::remove))
        .route(
            routes::CLUSTER_TRANSFER_LEADER,
            post(admin::transfer_leader),
        )
        .route(routes::CLUSTER_SNAPSHOT, post(admin::snapshot))
        .route(routes::ADMIN_BACKUP, get(admin::backup))
        .route_layer(middleware::from_fn_with_state(
            ADMIN_REQUEST_TIMEOUT,
            overload::deadline,
        ))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Scope::Admin, surface),
            auth::require_scope,
        ))
}

/// The routes anyone may call: health, the Prometheus series, the API's own description, and
/// what the caller's own token may do.
fn open_routes() -> Router<Arc<App>> {
    Router::new()
        .route(routes::WHOAMI, get(whoami::whoami))
        .route(routes::HEALTH, get(health::health))
        .route(routes::LIVENESS, get(health::liveness))
        .route(routes::READINESS, get(health::readiness))
        .route(routes::PROMETHEUS, get(prometheus::scrape))
        .route(routes::OPENAPI, get(serve_openapi))
}

/// The operator console's page and files (`console`), open like health: they hold no data, and
/// the page reads through the scoped routes with the operator's token. Served where clients
/// are (not on a separate peer listener, which may demand a node certificate).
fn console_routes() -> Router<Arc<App>> {
    Router::new()
        .route(routes::console::ROOT, get(console::root))
        .route(routes::console::INDEX, get(console::index))
        .route(routes::console::ASSET, get(console::asset))
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
        app.count(Counted::Request);
        if response.status().is_client_error() || response.status().is_server_error() {
            app.count(Counted::Error);
        }
    }
    response
}

/// Only a node may speak the nodes' own headers: without the cluster secret, every
/// `x-stockraft-*` header (e.g. `x-stockraft-forwarded`, which a forwarding node adds) is
/// dropped before anything reads it, so a client cannot pose as a node. A client listener
/// drops them all: nodes talk to each other on the peer listener only.
async fn strip_internal_headers(
    State((app, surface)): State<(Arc<App>, Surface)>,
    mut request: Request,
    next: Next,
) -> Response {
    let internal =
        |name: &axum::http::HeaderName| name.as_str().starts_with(INTERNAL_HEADER_PREFIX);
    if request.headers().keys().any(internal)
        && (surface == Surface::Client
            || !auth::has_secret(&app.config().cluster, request.headers()))
    {
        let names: Vec<_> = request
            .headers()
            .keys()
            .filter(|n| internal(n))
            .cloned()
            .collect();
        for name in names {
            request.headers_mut().remove(name);
        }
    }
    next.run(request).await
}

/// Headers only nodes may send (header names are lower case in `http`).
const INTERNAL_HEADER_PREFIX: &str = "x-stockraft-";
