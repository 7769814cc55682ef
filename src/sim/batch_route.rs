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

use crate::api::error::ApiError;
use crate::api::leader::{self, Attempt, RawRequest, RequestKind};
use crate::app::forward::ProposeItem;
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
    let parsed = async {
        let raw = RawRequest::read(&app, request).await?;
        let command: Command = decode_rpc(&raw.body)
            .map_err(|error| ApiError::validation(format!("not a command: {error}")))?;
        let key = raw.idempotency_id()?;
        Ok::<_, ApiError>((raw, command, key))
    };
    let (raw, command, key) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let app = app.as_ref();
    if let Err(no_space) = app.check_space() {
        return ApiError::from(no_space).into_response();
    }
    let kind = if key.is_some() {
        RequestKind::RetryableWrite
    } else {
        RequestKind::Write
    };
    let serve_here = |_| {
        let (command, key) = (command.clone(), key.clone());
        async move { Attempt::from_result(app.propose(command, key).await.map(render)) }
    };
    let send = |leader, remaining| {
        let item = ProposeItem {
            command: command.clone(),
            idempotency: key.clone(),
            request_id: String::new(),
            path: SIM_COMMAND.to_owned(),
        };
        async move {
            let forwarded = app.forward_proposal(leader, item, remaining).await;
            Attempt::from_forwarded(forwarded, render)
        }
    };
    leader::write_at_leader(app, &raw, kind, serve_here, send).await
}

/// The state machine's answer, whole.
fn render(response: inventory::Response) -> Response {
    let log_index = HeaderValue::from(response.log_index);
    let mut http = (StatusCode::OK, encode_rpc(&response)).into_response();
    http.headers_mut().insert(headers::LOG_INDEX, log_index);
    http
}
