//! Request ids: one id per client request, from the node it arrived at to the leader that
//! served it, so one `grep` finds a forwarded write in both nodes' logs.
//!
//! The id is the client's `X-Request-Id` when it sent a usable one (1 to
//! [`REQUEST_ID_LEN_MAX`] visible ASCII characters), else one this node makes up:
//! `<node>-<boot time, base 36>-<counter>`, unique per node and restart without randomness (so
//! the simulation stays deterministic). The id is written into the request's own headers before
//! the handler runs, which is how forwarding carries it (a forwarded request keeps its headers),
//! and into the answer. Every log line of the request is inside a `request` span that names it.
//!
//! Raft RPCs (`/raft/*`, anything outside `/api/`) get no id: they are not client requests, and a heartbeat or an append
//! batch serves many.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::client::{headers, routes};

/// Longest client-supplied id kept; a longer (or non-printable) one is replaced by our own.
pub const REQUEST_ID_LEN_MAX: usize = 128;

/// Makes this node's request ids.
#[derive(Debug)]
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    /// `boot_ms` (milliseconds since the epoch when the node started) tells one run of a node
    /// from the next, so counters starting at 1 again do not repeat ids.
    pub fn new(node: u64, boot_ms: u64) -> Self {
        Self {
            prefix: format!("{node}-{}", base36(boot_ms)),
            next: AtomicU64::new(1),
        }
    }

    fn make(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}", self.prefix, base36(n))
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

/// A client's id is kept if it is 1 to [`REQUEST_ID_LEN_MAX`] visible ASCII characters: it goes
/// into log lines and headers, where control characters or megabytes do harm.
fn usable(value: &HeaderValue) -> Option<&str> {
    value.to_str().ok().filter(|id| is_usable(id))
}

fn is_usable(id: &str) -> bool {
    let fits = !id.is_empty() && id.len() <= REQUEST_ID_LEN_MAX;
    fits && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware: assigns the id, runs the request inside its span, returns the id.
pub async fn assign(
    State(ids): State<Arc<RequestIds>>,
    mut request: Request,
    next: Next,
) -> Response {
    if !request.uri().path().starts_with(routes::API_PREFIX) {
        return next.run(request).await;
    }
    let id = match request.headers().get(headers::REQUEST_ID).and_then(usable) {
        Some(id) => id.to_owned(),
        None => ids.make(),
    };
    let value = HeaderValue::from_str(&id).expect("request ids are visible ASCII");
    request
        .headers_mut()
        .insert(headers::REQUEST_ID, value.clone());
    let forwarded_by = request
        .headers()
        .get(super::leader::FORWARDED_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        forwarded_by = forwarded_by.as_deref(),
    );
    let started = tokio::time::Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request served"
        );
    });
    response.headers_mut().insert(headers::REQUEST_ID, value);
    response
}

/// The span of a write a follower forwarded in a batch (`app::forward`): the same fields as a
/// request's own span, so that the leader's lines carry the client's id and the forwarding
/// node. An id that is not usable (a peer sent it, but still) is logged as `-`.
pub fn forwarded_span(id: &str, path: &str, forwarded_by: u64) -> tracing::Span {
    let id = if is_usable(id) { id } else { "-" };
    tracing::info_span!(
        "request",
        id = %id,
        method = "POST",
        path = %path,
        forwarded_by = %forwarded_by,
    )
}

/// The "request served" line of a forwarded write, inside its [`forwarded_span`].
pub fn forwarded_served<T, E: std::fmt::Display>(
    result: &Result<T, E>,
    started: tokio::time::Instant,
) {
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(_) => tracing::debug!(elapsed_ms, "forwarded write served"),
        Err(error) => tracing::debug!(elapsed_ms, %error, "forwarded write refused"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_ids_are_unique_and_name_the_node_and_its_start() {
        let ids = RequestIds::new(2, 36 * 36);
        assert_eq!(ids.make(), "2-100-1");
        assert_eq!(ids.make(), "2-100-2");
        let later = RequestIds::new(2, 36 * 36 + 1);
        assert_eq!(later.make(), "2-101-1");
    }

    #[test]
    fn a_client_id_is_kept_only_if_short_and_printable() {
        let ok = HeaderValue::from_static("order-42/retry.1");
        assert_eq!(usable(&ok), Some("order-42/retry.1"));
        assert_eq!(usable(&HeaderValue::from_static("")), None);
        assert_eq!(usable(&HeaderValue::from_static("a b")), None);
        let long = "x".repeat(REQUEST_ID_LEN_MAX + 1);
        assert_eq!(usable(&HeaderValue::from_str(&long).unwrap()), None);
        let longest = "x".repeat(REQUEST_ID_LEN_MAX);
        assert!(usable(&HeaderValue::from_str(&longest).unwrap()).is_some());
    }
}
