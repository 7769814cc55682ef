//! `GET /api/whoami` (open): the caller's token and the scopes it carries, by the same rules
//! as the guards (`auth::whoami`). A client learns what it may do before trying: the console
//! shows its write actions only to a token with `write` or `reserve`. It tells a caller nothing
//! a scoped route would not (a wrong token is a 401 here as there), and never a token's value.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::auth;
use crate::app::App;
use crate::client::wire::Envelope;

/// `GET /api/whoami`.
pub async fn whoami(State(app): State<Arc<App>>, request: Request) -> Response {
    match auth::whoami(&app.config().cluster, request.headers()) {
        Ok(whoami) => axum::Json(Envelope::ok(whoami)).into_response(),
        Err(error) => error.into_response(),
    }
}
