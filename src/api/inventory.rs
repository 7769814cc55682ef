//! The seed's inventory routes: create, read, adjust, reserve (and a hold: a reserve with
//! `ttlSeconds`, issue 31).
//!
//! Every write has the same skeleton ([`write_command`]): count it, read the request, parse it
//! into a [`Command`] (the route's own part), refuse it at once if this node is short of disk
//! space (507, `space`), then propose it at the leader and render the state machine's answer
//! ([`render`], which also renders the reservation routes' answers: `api::reservations`). The
//! batch route (`api::batch`) runs the same skeleton with its own body limit and rendering
//! ([`write_rendered`]).
//! Reads go through [`serve_read`]: local, or linearizable at the leader; the views and the
//! reservation read use it too.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::json;
use super::leader::{self, Attempt, RequestKind};
use super::request::{record_key, PathPair, RawRequest};
use crate::app::forward::ProposeItem;
use crate::app::{App, Counted, ReadError};
use crate::client::wire::{
    AdjustRequest, ChangeAnswer, CreateAtPathRequest, CreateRequest, Envelope, ReserveRequest,
};
use crate::client::{headers, Consistency};
use crate::inventory::{self, Command, Operation, Record, RecordKey};

pub async fn create_from_body(State(app): State<Arc<App>>, request: Request) -> Response {
    write_command(&app, Counted::CreateRecord, request, |raw| {
        let body: CreateRequest = raw.json()?;
        Ok(Command::Create {
            key: record_key(&body.store_id, &body.sku)?,
            initial_quantity: body.initial_quantity,
        })
    })
    .await
}

pub async fn create_at_path(
    State(app): State<Arc<App>>,
    PathPair(store_id, sku): PathPair,
    request: Request,
) -> Response {
    write_command(&app, Counted::CreateRecord, request, |raw| {
        let key = record_key(&store_id, &sku)?;
        let body: CreateAtPathRequest = raw.json()?;
        if body.store_id.as_deref().is_some_and(|s| s != store_id)
            || body.sku.as_deref().is_some_and(|s| s != sku)
        {
            return Err(ApiError::validation(
                "storeId and sku in the body must match the path",
            ));
        }
        Ok(Command::Create {
            key,
            initial_quantity: body.initial_quantity,
        })
    })
    .await
}

pub async fn adjust(
    State(app): State<Arc<App>>,
    PathPair(store_id, sku): PathPair,
    request: Request,
) -> Response {
    write_command(&app, Counted::AdjustStock, request, |raw| {
        let key = record_key(&store_id, &sku)?;
        let body: AdjustRequest = raw.json()?;
        Ok(Command::Adjust {
            key,
            delta: body.delta,
            expected_version: raw.precondition(body.expected_version)?,
        })
    })
    .await
}

pub async fn reserve(
    State(app): State<Arc<App>>,
    PathPair(store_id, sku): PathPair,
    request: Request,
) -> Response {
    write_command(&app, Counted::ReserveStock, request, |raw| {
        let key = record_key(&store_id, &sku)?;
        let body: ReserveRequest = raw.json()?;
        let expected_version = raw.precondition(body.expected_version)?;
        // With `ttlSeconds` the units are held (issue 31); without, the seed's plain reserve.
        Ok(match body.ttl_seconds {
            None => Command::Reserve {
                key,
                quantity: body.qty,
                expected_version,
            },
            Some(seconds) => Command::Hold {
                key,
                quantity: body.qty,
                expected_version,
                ttl_ms: ttl_ms(seconds),
            },
        })
    })
    .await
}

/// `GET /api/inventory/stores/:storeId/inventory/:sku`: the record itself, as the seed answers.
pub async fn get(
    State(app): State<Arc<App>>,
    PathPair(store_id, sku): PathPair,
    request: Request,
) -> Response {
    read(&app, &store_id, &sku, request, RecordShape::Bare).await
}

/// `GET /api/inventory/:sku/:storeId` (note the order): the seed's route "for backward
/// compatibility", answering `{success: true, data: record}`. Deprecated.
pub async fn get_legacy(
    State(app): State<Arc<App>>,
    PathPair(sku, store_id): PathPair,
    request: Request,
) -> Response {
    read(&app, &store_id, &sku, request, RecordShape::Wrapped).await
}

/// A client's `ttlSeconds` (already checked to be 1 to 604,800) in ms.
pub(super) fn ttl_ms(seconds: u64) -> u64 {
    let ttl_ms = seconds * 1_000;
    assert!(
        ttl_ms >= inventory::HOLD_TTL_MS_MIN,
        "ttlSeconds was checked"
    );
    assert!(
        ttl_ms <= inventory::HOLD_TTL_MS_MAX,
        "ttlSeconds was checked"
    );
    ttl_ms
}

/// The write skeleton: count, read, parse (the route's part), check disk space, propose at the
/// leader, render.
pub(super) async fn write_command(
    app: &App,
    counted: Counted,
    request: Request,
    parse: impl FnOnce(&RawRequest) -> Result<Command, ApiError>,
) -> Response {
    let body_limit_bytes = app.config().api.body_limit_bytes;
    let parse = |raw: RawRequest| std::future::ready(parse(&raw).map(|command| (raw, command, ())));
    let render_single = |app: &App, _: &Command, _: &(), response| render(app, response);
    write_rendered(
        app,
        Some(counted),
        request,
        body_limit_bytes,
        parse,
        render_single,
    )
    .await
}

/// [`write_command`] for a route that renders its own answers (the batch route, `api::batch`,
/// and the simulation's raw-command route, `sim::batch_route`): the body may be up to
/// `body_limit_bytes`; `parse` takes the request and gives it back (so that it can parse
/// elsewhere than on the runtime's thread) with the command and what `render` needs to know
/// of the request. `counted`, if any, is counted on arrival.
pub async fn write_rendered<C: Sync, Parsed>(
    app: &App,
    counted: Option<Counted>,
    request: Request,
    body_limit_bytes: usize,
    parse: impl FnOnce(RawRequest) -> Parsed,
    render: impl Fn(&App, &Command, &C, inventory::Response) -> Response + Sync,
) -> Response
where
    Parsed: std::future::Future<Output = Result<(RawRequest, Command, C), ApiError>>,
{
    if let Some(counted) = counted {
        app.count(counted);
    }
    let parsed = async {
        let raw = RawRequest::read_limited(app, request, body_limit_bytes).await?;
        let (raw, command, context) = parse(raw).await?;
        // The key within its client scope, computed from the request alone: a follower and the
        // leader it forwards to compute the same (`api::client_scope`).
        let key = raw.idempotency_id()?;
        Ok::<_, ApiError>((raw, command, context, key))
    };
    let (raw, command, context, key) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    // Before routing: a node short of space refuses whether it leads or would forward, and a
    // leader refuses a forwarded write here too (and again in `App::propose`).
    if let Err(no_space) = app.check_space() {
        return ApiError::from(no_space).into_response();
    }
    let kind = if key.is_some() {
        RequestKind::RetryableWrite
    } else {
        RequestKind::Write
    };
    let (command, context, render) = (&command, &context, &render);
    let serve_here = |_| {
        let key = key.clone();
        async move {
            let response = app.propose(command.clone(), key).await;
            Attempt::from_result(response.map(|r| render(app, command, context, r)))
        }
    };
    let send = |leader, remaining| {
        let item = ProposeItem {
            command: command.clone(),
            idempotency: key.clone(),
            request_id: raw.request_id().unwrap_or_default().to_owned(),
            path: raw.path_and_query.clone(),
        };
        async move {
            let forwarded = app.forward_proposal(leader, item, remaining).await;
            Attempt::from_forwarded(forwarded, |response| {
                render(app, command, context, response)
            })
        }
    };
    leader::write_at_leader(app, &raw, kind, serve_here, send).await
}

/// How a read answers a found record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordShape {
    /// The record itself: `{sku, storeId, qty, version, createdAt, updatedAt}`.
    Bare,
    /// `{success: true, data: record}`.
    Wrapped,
}

async fn read(
    app: &App,
    store_id: &str,
    sku: &str,
    request: Request,
    shape: RecordShape,
) -> Response {
    app.count(Counted::GetInventory);
    let parsed = async {
        let raw = RawRequest::read(app, request).await?;
        let key = record_key(store_id, sku)?;
        let consistency = raw.consistency()?;
        Ok::<_, ApiError>((raw, key, consistency))
    };
    let (raw, key, consistency) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let key = &key;
    serve_read(
        app,
        &raw,
        consistency,
        || {
            let found = app
                .read_local(key)
                .map_err(|error| ApiError::internal(error.to_string()));
            render_read(key, found, shape)
        },
        || async move {
            let found = app.read_linearizable(key).await?;
            Ok(render_read(key, Ok(found), shape))
        },
    )
    .await
}

/// The read skeleton after parsing: `local()` on this node's applied state, or
/// `linearizable()` at the leader (forwarded there from a follower), answered with the
/// consistency it was served at (`x-stockraft-consistency`) unless it failed on the server.
pub(super) async fn serve_read<L, F, Fut>(
    app: &App,
    raw: &RawRequest,
    consistency: Consistency,
    local: L,
    mut linearizable: F,
) -> Response
where
    L: FnOnce() -> Response,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Response, ReadError>>,
{
    let mut response = match consistency {
        Consistency::Local => {
            // A node outside the membership receives no more entries: its copy is stale
            // without bound, or empty (a wiped node would claim a record does not exist).
            if let Some(refusal) = leader::refuse_if_not_a_member(app) {
                return refusal;
            }
            local()
        }
        Consistency::Linearizable => {
            let serve_here = |_| {
                let read = linearizable();
                async move { Attempt::from_result(read.await) }
            };
            leader::at_leader(app, raw, RequestKind::Read, serve_here).await
        }
    };
    if !response.status().is_server_error() {
        response.headers_mut().insert(
            headers::CONSISTENCY,
            HeaderValue::from_static(consistency.as_str()),
        );
    }
    response
}

/// The state machine's answer to a single command, as the seed renders it (and, for
/// reservations, as issue 31 does).
fn render(app: &App, response: inventory::Response) -> Response {
    let http = match &response.result {
        inventory::CommandResult::Held {
            record,
            reservation_id,
        } => {
            let body = ChangeAnswer {
                success: true,
                new_quantity: record.quantity,
                new_version: record.version,
                record: json::record(record),
                reservation_id: Some(reservation_id.to_string()),
            };
            let mut http = (StatusCode::CREATED, axum::Json(body)).into_response();
            http.headers_mut()
                .insert(headers::ETAG, etag(record.version));
            http
        }
        inventory::CommandResult::Reservation(reservation) => {
            // A cart is created (201); a commit or release changes what exists (200).
            let status = if response.operation == Operation::Cart {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = Envelope::ok(json::reservation(reservation));
            (status, axum::Json(body)).into_response()
        }
        inventory::CommandResult::Ok(record) => {
            let mut http = match response.operation {
                Operation::Create => (
                    StatusCode::CREATED,
                    axum::Json(Envelope::ok(json::record(record))),
                )
                    .into_response(),
                Operation::Adjust | Operation::Reserve => {
                    let status = if response.operation == Operation::Adjust {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    };
                    let body = ChangeAnswer {
                        success: true,
                        new_quantity: record.quantity,
                        new_version: record.version,
                        record: json::record(record),
                        reservation_id: None,
                    };
                    (status, axum::Json(body)).into_response()
                }
                // A hold, cart, commit or release answers a reservation, never a bare record.
                other => {
                    ApiError::internal(format!("{other:?} answered a bare record")).into_response()
                }
            };
            http.headers_mut()
                .insert(headers::ETAG, etag(record.version));
            http
        }
        inventory::CommandResult::Err(rejection) => {
            if matches!(
                rejection,
                inventory::Rejection::VersionMismatch { .. }
                    | inventory::Rejection::AlreadyExists { .. }
            ) {
                app.count(Counted::Conflict);
            }
            ApiError::from(rejection.clone()).into_response()
        }
        other => ApiError::internal(format!("no route renders {other:?}")).into_response(),
    };
    with_write_headers(app, &response, http)
}

/// The headers of every write's answer: where an accepted change is in the log, and whether
/// the answer was replayed for an idempotency key.
pub(super) fn with_write_headers(
    app: &App,
    response: &inventory::Response,
    http: Response,
) -> Response {
    let accepted = !matches!(response.result, inventory::CommandResult::Err(_));
    with_headers_of(app, accepted, response.log_index, response.replayed, http)
}

/// [`with_write_headers`] from the parts of the answer they name: whether it was `accepted`
/// (not a rejection), its entry's `log_index`, whether it was `replayed`.
pub(super) fn with_headers_of(
    app: &App,
    accepted: bool,
    log_index: u64,
    replayed: bool,
    mut http: Response,
) -> Response {
    if accepted {
        // Where the change is in the log: its events carry the same `logIndex`.
        http.headers_mut()
            .insert(headers::LOG_INDEX, HeaderValue::from(log_index));
    }
    if replayed {
        app.count_idempotent_replay();
        http.headers_mut()
            .insert(headers::REPLAYED, HeaderValue::from_static("true"));
    }
    http
}

fn render_read(
    key: &RecordKey,
    found: Result<Option<Record>, ApiError>,
    shape: RecordShape,
) -> Response {
    match found {
        Ok(Some(record)) => {
            let body = json::record(&record);
            let mut response = match shape {
                RecordShape::Bare => axum::Json(body).into_response(),
                RecordShape::Wrapped => axum::Json(Envelope::ok(body)).into_response(),
            };
            response
                .headers_mut()
                .insert(headers::ETAG, etag(record.version));
            response
        }
        Ok(None) => {
            ApiError::not_found(format!("inventory record {key} not found")).into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .expect("a quoted integer is a valid header value")
}
