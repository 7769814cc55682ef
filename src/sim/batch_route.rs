//! A route only simulated nodes serve: `POST /sim/command` takes an inventory [`Command`] as
//! followers forward one (bincode, `raft::network`), routes it to the leader exactly as every
//! client write is routed (`api::leader::write_at_leader`: proposed here when this node leads,
//! sent in the next batch of forwarded writes when another does, retried within the write
//! deadline, `Idempotency-Key` in its client scope) and answers the state machine's whole
//! [`inventory::Response`] (bincode) with its log index (`x-stockraft-log-index`). Failures
//! to route answer in the seed's error shape (503 `NO_LEADER`, `OUTCOME_UNKNOWN`, ...).
//!
//! The batch traffic (`sim::batches`) sends its `Command::Batch`es through it, so the checks
//! read every line's own result from the state machine, whatever the HTTP batch route makes of
//! it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use crate::api;
use crate::api::error::ApiError;
use crate::api::leader::RawRequest;
use crate::app::App;
use crate::client::headers;
use crate::inventory::{self, Command};
use crate::raft::network::{decode_rpc, encode_rpc};

/// The route's path.
pub const SIM_COMMAND: &str = "/sim/command";

/// The route, to merge into a simulated node's router.
pub fn route(app: Arc<App>) -> Router {
    Router::new()
        .route(SIM_COMMAND, post(command))
        .with_state(app)
}

async fn command(State(app): State<Arc<App>>, request: Request) -> Response {
    // The product's write path (`api::write_rendered`), with a command decoded as followers
    // forward one instead of parsed from JSON, and the whole answer instead of its JSON.
    let parse = |raw: RawRequest| async move {
        let command: Command = decode_rpc(&raw.body)
            .map_err(|error| ApiError::validation(format!("not a command: {error}")))?;
        Ok((raw, command, ()))
    };
    let body_limit_bytes = app.config().api.body_limit_bytes;
    api::write_rendered(
        &app,
        None,
        request,
        body_limit_bytes,
        parse,
        |_, _, _, response| render(response),
    )
    .await
}

/// The state machine's answer, whole.
fn render(response: inventory::Response) -> Response {
    let log_index = HeaderValue::from(response.log_index);
    let mut http = (StatusCode::OK, encode_rpc(&response)).into_response();
    http.headers_mut().insert(headers::LOG_INDEX, log_index);
    http
}
