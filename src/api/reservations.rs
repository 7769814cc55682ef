//! The reservation routes (issue 31): hold a cart, commit or release a reservation, read one.
//!
//! A single-line hold is the seed's reserve route with `ttlSeconds` (`api::inventory`); a cart
//! holds many lines, all or none, as one reservation. Every write here is a [`Command`] on the
//! ordinary write path ([`write_command`]): proposed at the leader (forwarded from a follower),
//! deduplicated by `Idempotency-Key`, answered from the state machine's outcome. Nothing here
//! decides whether a transition is allowed: the state machine does, at the entry's log time,
//! so a commit racing its deadline has one outcome on every replica.
//!
//! Errors (mapped in `api::error`): a malformed id in the path is 400 before anything is
//! proposed; an unknown id 404 `RESERVATION_NOT_FOUND`; a reservation that ended otherwise 409
//! `RESERVATION_NOT_HELD` (`details.status`); past its deadline 409 `RESERVATION_EXPIRED`; a
//! refused cart the status of its first failing line with `details.lines`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::inventory::{serve_read, ttl_ms, write_command};
use super::json;
use super::request::{record_key, reservation_id, PathOne, RawRequest};
use crate::app::{App, Counted};
use crate::client::wire::{CartRequest, Envelope};
use crate::inventory::{CartLine, Command, Rejection, Reservation, ReservationId, CART_LINES_MAX};

/// `POST /api/reservations`: hold every line or none (201 with the reservation).
pub async fn cart(State(app): State<Arc<App>>, request: Request) -> Response {
    let default_ttl_ms = default_cart_ttl_ms(&app);
    write_command(&app, Counted::ReserveStock, request, |raw| {
        let body: CartRequest = raw.json()?;
        if body.lines.is_empty() || body.lines.len() > CART_LINES_MAX {
            return Err(ApiError::validation(format!(
                "a cart holds 1 to {CART_LINES_MAX} lines, got {}",
                body.lines.len()
            )));
        }
        let lines = body
            .lines
            .iter()
            .map(|line| {
                Ok(CartLine {
                    key: record_key(&line.store_id, &line.sku)?,
                    quantity: line.qty,
                    expected_version: line.expected_version,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        let ttl_ms = body.ttl_seconds.map_or(default_ttl_ms, ttl_ms);
        Ok(Command::Cart { lines, ttl_ms })
    })
    .await
}

/// The TTL of a cart that names none: `reservations.default_ttl_s` (validated at start-up to
/// lie within the bounds of any hold).
fn default_cart_ttl_ms(app: &App) -> u64 {
    app.config().reservations.default_ttl_ms()
}

/// `POST /api/reservations/:id/commit`: the held units leave (200; 200 again if already so).
pub async fn commit(
    State(app): State<Arc<App>>,
    PathOne(id): PathOne,
    request: Request,
) -> Response {
    write_command(&app, Counted::ReserveStock, request, |_| {
        Ok(Command::Commit {
            id: reservation_id(&id)?,
        })
    })
    .await
}

/// `POST /api/reservations/:id/release`: the held units come back (200; 200 again if already
/// so).
pub async fn release(
    State(app): State<Arc<App>>,
    PathOne(id): PathOne,
    request: Request,
) -> Response {
    write_command(&app, Counted::ReserveStock, request, |_| {
        Ok(Command::Release {
            id: reservation_id(&id)?,
        })
    })
    .await
}

/// `GET /api/reservations/:id`: linearizable by default, `?consistency=local` as for records.
pub async fn get(State(app): State<Arc<App>>, PathOne(id): PathOne, request: Request) -> Response {
    app.count(Counted::GetInventory);
    let parsed = async {
        let raw = RawRequest::read(&app, request).await?;
        let id = reservation_id(&id)?;
        let consistency = raw.consistency()?;
        Ok::<_, ApiError>((raw, id, consistency))
    };
    let (raw, id, consistency) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let app = &app;
    serve_read(
        app,
        &raw,
        consistency,
        || {
            render(
                id,
                app.reservation_local(id)
                    .map_err(|error| ApiError::internal(error.to_string())),
            )
        },
        || async move {
            let found = app.reservation_linearizable(id).await?;
            Ok(render(id, Ok(found)))
        },
    )
    .await
}

/// A reservation read's answer: the reservation, or 404 `RESERVATION_NOT_FOUND`.
fn render(id: ReservationId, found: Result<Option<Reservation>, ApiError>) -> Response {
    match found {
        Ok(Some(reservation)) => {
            axum::Json(Envelope::ok(json::reservation(&reservation))).into_response()
        }
        Ok(None) => ApiError::from(Rejection::ReservationNotFound { id }).into_response(),
        Err(error) => error.into_response(),
    }
}
