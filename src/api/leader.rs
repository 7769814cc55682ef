//! Getting a request to the leader: serve it here when this node leads, forward it when another
//! node does, wait (up to the write deadline) while no leader is known.
//!
//! A node cut off from a quorum (`app::quorum_contact`: a leader no quorum acknowledged for a
//! lease, a follower that heard no leader for as long) does not hold retry-safe requests (reads,
//! keyed writes): it answers them at once, 503, so the client tries a node that can serve; one
//! already waiting (proposed here, or forwarded) stops waiting as soon as this node is cut off or
//! another node leads, and counts as an unknown outcome (a keyed write is then retried at the
//! new leader). An unkeyed write waits as before, up to the write deadline: a leader that heard
//! from no quorum for a lease may only be slow (a loaded machine), and an unkeyed write given up
//! on could only be answered `OUTCOME_UNKNOWN`. Both rules only ever refuse sooner: nothing is
//! acknowledged or read that a quorum did not vouch for.
//!
//! The retry rules keep "no acknowledged write lost, nothing applied twice":
//! - retry freely when nothing can have been applied: this node was not the leader, the target
//!   was unreachable before the request was sent, or the target said it is not the leader;
//! - when a write's fate is unknown (proposed but the leader changed, or a forward timed out),
//!   retry only if it carries an `Idempotency-Key` (the state machine then applies it at most
//!   once); otherwise answer 503 `OUTCOME_UNKNOWN` and let the client decide. Running out of
//!   time after such an attempt is also `OUTCOME_UNKNOWN`, never `NO_LEADER` ([`RequestKind`]);
//! - a forwarded request is never forwarded again: the receiving node answers at once with a
//!   "not leader" 503 (marked "maybe applied" if it had proposed the write), and the origin node
//!   (which owns the deadline) retries. No loops.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
pub use super::request::RawRequest;
use crate::app::{App, ProposeError, ReadError};
use crate::membership::MembershipError;
use crate::raft::NodeId;
use crate::transport::{TransportError, WireRequest, SECRET_HEADER};

/// Marks a request forwarded by another node (value: the forwarding node's id).
pub const FORWARDED_HEADER: &str = "x-stockraft-forwarded";
/// Set on a 503 from a node that received a forwarded request but does not lead.
pub const NOT_LEADER_HEADER: &str = "x-stockraft-not-leader";
/// Set (with [`NOT_LEADER_HEADER`]) when the node had proposed the forwarded write before it
/// lost leadership: the origin must then treat the outcome as unknown, not as "nothing happened".
pub const MAYBE_APPLIED_HEADER: &str = "x-stockraft-maybe-applied";
/// Names the node that served a request routed to the leader.
pub const LEADER_HEADER: &str = "x-stockraft-leader";
/// Pause between attempts while a leader is being elected or found.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl RawRequest {
    fn is_forwarded(&self) -> bool {
        self.headers.contains_key(FORWARDED_HEADER)
    }
}

/// What one attempt to serve a request on this node (as leader) produced.
pub enum Attempt {
    /// The final answer.
    Done(Response),
    /// This node turned out not to lead; nothing happened. Try again.
    NotLeader,
    /// Something may have happened; the message says what.
    Unknown(String),
}

impl Attempt {
    /// The attempt a layer's result makes: success is final, a "not the leader" is retried
    /// elsewhere, an unknown outcome is for [`at_leader`] to weigh, anything else is a final
    /// error answer (mapped in `api::error`).
    pub fn from_result<E: RoutingError>(result: Result<Response, E>) -> Self {
        match result {
            Ok(response) => Attempt::Done(response),
            Err(error) => match error.routing() {
                Routing::NotLeader => Attempt::NotLeader,
                Routing::OutcomeUnknown => Attempt::Unknown(error.to_string()),
                Routing::Final => Attempt::Done(error.into().into_response()),
            },
        }
    }
}

impl Attempt {
    /// What a failure to get an answer from the leader means: nothing was delivered (retry), or
    /// it may have been acted on.
    pub fn undelivered(error: TransportError) -> Self {
        match error {
            TransportError::Unreachable { .. } => Attempt::NotLeader,
            TransportError::NoAnswer { .. } => Attempt::Unknown(error.to_string()),
        }
    }

    /// The attempt a write sent to the leader in a batch (`app::forward`) made: `None` when the
    /// leader's address is unknown (nothing sent), else as [`Attempt::undelivered`], or the
    /// leader's own result, rendered here.
    pub fn from_forwarded<T, E: RoutingError>(
        forwarded: Option<Result<Result<T, E>, TransportError>>,
        render: impl FnOnce(T) -> Response,
    ) -> Self {
        match forwarded {
            None => Attempt::NotLeader,
            Some(Err(error)) => Attempt::undelivered(error),
            Some(Ok(result)) => Attempt::from_result(result.map(render)),
        }
    }
}

/// What an error of a layer below means for routing a request to the leader.
pub enum Routing {
    /// This node does not lead; nothing happened.
    NotLeader,
    /// Something may have happened.
    OutcomeUnknown,
    /// An answer for the client.
    Final,
}

/// Errors that [`Attempt::from_result`] can route.
pub trait RoutingError: Into<ApiError> + std::fmt::Display {
    fn routing(&self) -> Routing;
}

impl RoutingError for ProposeError {
    fn routing(&self) -> Routing {
        match self {
            ProposeError::NotLeader { .. } => Routing::NotLeader,
            ProposeError::OutcomeUnknown(_) => Routing::OutcomeUnknown,
            ProposeError::Unavailable(_)
            | ProposeError::NoSpace { .. }
            | ProposeError::Overloaded { .. } => Routing::Final,
        }
    }
}

impl RoutingError for ReadError {
    fn routing(&self) -> Routing {
        match self {
            ReadError::NotLeader { .. } => Routing::NotLeader,
            // Nothing changes on a read: an unavailable leader is retried like an unknown.
            ReadError::Unavailable(_) => Routing::OutcomeUnknown,
            ReadError::Storage(_) => Routing::Final,
        }
    }
}

impl RoutingError for MembershipError {
    fn routing(&self) -> Routing {
        match self {
            MembershipError::NotLeader { .. } => Routing::NotLeader,
            MembershipError::OutcomeUnknown(_) => Routing::OutcomeUnknown,
            MembershipError::Refused(_) => Routing::Final,
        }
    }
}

/// What kind of request is being routed: it decides what an unknown outcome means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Changes nothing: an unknown outcome is simply retried, and running out of time is 503
    /// `NO_LEADER` (a node cut off from the majority never answers from stale state).
    Read,
    /// Safe to apply twice (the state machine deduplicates it, or it is idempotent by nature):
    /// unknown outcomes are retried; out of time after one is 503 `OUTCOME_UNKNOWN`.
    RetryableWrite,
    /// A write that must not be retried blindly: an unknown outcome is answered at once.
    Write,
}

/// Serves `raw` at the leader. `serve_here(remaining)` runs the request on this node when it
/// leads; on a follower the request is forwarded as it came; `kind` says what an unknown
/// outcome means (see [`RequestKind`]).
pub async fn at_leader<F, Fut>(
    app: &App,
    raw: &RawRequest,
    kind: RequestKind,
    serve_here: F,
) -> Response
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let forward_raw = |leader, remaining| forward(app, leader, raw, remaining);
    write_at_leader(app, raw, kind, serve_here, forward_raw).await
}

/// [`at_leader`] for a client write whose command this node has already parsed: a follower
/// hands `forward_to(leader, remaining)` the job of getting it to the leader (`app::forward`
/// batches it with others) instead of forwarding the HTTP request. The routing loop itself
/// (see the module docs) is the same for both.
pub async fn write_at_leader<F, Fut, G, GFut>(
    app: &App,
    raw: &RawRequest,
    kind: RequestKind,
    mut serve_here: F,
    mut forward_to: G,
) -> Response
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt>,
    G: FnMut(NodeId, Duration) -> GFut,
    GFut: Future<Output = Attempt>,
{
    if let Some(response) = refuse_if_not_a_member(app) {
        return response;
    }
    let deadline_ms = app.config().api.write_deadline_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(deadline_ms);
    // Whether an earlier attempt may have taken effect: then running out of time is not "nothing
    // happened" (NO_LEADER) but "we do not know" (OUTCOME_UNKNOWN).
    let mut maybe_applied = false;
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if remaining.is_zero() {
            let message = format!("no leader answered within {deadline_ms} ms");
            return if maybe_applied {
                ApiError::outcome_unknown(format!(
                    "{message}; an earlier attempt may have been applied"
                ))
            } else {
                ApiError::no_leader(message)
            }
            .into_response();
        }
        if kind != RequestKind::Write {
            if let Some(reason) = app.quorum_contact_lost() {
                return cut_off_response(app, raw, reason, maybe_applied);
            }
        }
        // The node whose answer this is (named in `LEADER_HEADER` unless the answer does).
        let mut served_by = app.id();
        let attempt = match app.leader() {
            Some(leader) if leader == app.id() => {
                let served = async {
                    match tokio::time::timeout(remaining, serve_here(remaining)).await {
                        Ok(attempt) => attempt,
                        Err(_) => {
                            Attempt::Unknown(format!("not committed within {deadline_ms} ms"))
                        }
                    }
                };
                unless_unservable(app, kind, leader, served).await
            }
            _ if raw.is_forwarded() => return not_leader_response(app, maybe_applied),
            Some(leader) => {
                served_by = leader;
                unless_unservable(app, kind, leader, forward_to(leader, remaining)).await
            }
            None => Attempt::NotLeader,
        };
        match attempt {
            Attempt::Done(mut response) => {
                if !response.headers().contains_key(LEADER_HEADER) {
                    response
                        .headers_mut()
                        .insert(LEADER_HEADER, HeaderValue::from(served_by));
                }
                return response;
            }
            Attempt::NotLeader => {}
            Attempt::Unknown(message) if kind == RequestKind::Write => {
                return ApiError::outcome_unknown(format!(
                    "{message}; the write may or may not have been applied (send an Idempotency-Key to retry safely)"
                ))
                .into_response();
            }
            Attempt::Unknown(message) => {
                maybe_applied |= kind == RequestKind::RetryableWrite;
                tracing::debug!(%message, "retrying after an unknown outcome");
            }
        }
        let pause =
            RETRY_PAUSE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

/// `attempt`, sent to `leader`, unless it should stop waiting first (`App::until_unservable`:
/// this node is cut off from a quorum, or another node leads now): its outcome is then
/// unknown, which a retry-safe request (`kind`: a read, a keyed write) retries. Without this, a
/// request proposed on a leader that was then cut off, or forwarded to one, waited the whole
/// write deadline for an answer that could not come. An unkeyed write waits as it always did:
/// its unknown outcome would be final, and a leader slow to hear from its quorum (a loaded
/// machine) may still commit it.
async fn unless_unservable(
    app: &App,
    kind: RequestKind,
    leader: NodeId,
    attempt: impl Future<Output = Attempt>,
) -> Attempt {
    if kind == RequestKind::Write {
        return attempt.await;
    }
    tokio::select! {
        attempt = attempt => attempt,
        reason = app.until_unservable(leader) => Attempt::Unknown(reason),
    }
}

/// The answer of a node cut off from a quorum (`app::quorum_contact`): at once, so the client
/// tries another node; 503 `NO_LEADER` (nothing happened) unless an earlier attempt may have
/// been applied (`OUTCOME_UNKNOWN`). A forwarded request gets the "not the leader" answer its
/// origin retries elsewhere.
fn cut_off_response(app: &App, raw: &RawRequest, reason: String, maybe_applied: bool) -> Response {
    if raw.is_forwarded() {
        return not_leader_response(app, maybe_applied);
    }
    if maybe_applied {
        ApiError::outcome_unknown(format!(
            "{reason}; an earlier attempt may have been applied"
        ))
    } else {
        ApiError::no_leader(reason)
    }
    .into_response()
}

/// A node outside the cluster's membership cannot serve anything that needs the cluster: say so
/// at once (503 `NOT_A_MEMBER`) instead of waiting for a leader that will never accept it.
/// Two cases: the node was removed (it knows a membership without itself), or it holds no
/// membership at all (never initialised or joined, or its data directory was wiped).
pub(super) fn refuse_if_not_a_member(app: &App) -> Option<Response> {
    let message = match app.is_member() {
        Some(true) => return None,
        Some(false) => format!(
            "node {} is not a member of the cluster (it was removed); send requests to a member",
            app.id()
        ),
        None => format!(
            "node {} holds no cluster membership (not yet initialised or joined, or its data was \
             wiped); send requests to a member",
            app.id()
        ),
    };
    Some(ApiError::not_a_member(message).into_response())
}

fn not_leader_response(app: &App, maybe_applied: bool) -> Response {
    let mut response =
        ApiError::no_leader(format!("node {} is not the leader", app.id())).into_response();
    let headers = response.headers_mut();
    headers.insert(NOT_LEADER_HEADER, HeaderValue::from_static("true"));
    if maybe_applied {
        headers.insert(MAYBE_APPLIED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// Hop-by-hop headers that must not be copied onto another connection.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-length" | "connection" | "transfer-encoding" | "keep-alive" | "upgrade"
    )
}

async fn forward(app: &App, leader: u64, raw: &RawRequest, timeout: Duration) -> Attempt {
    let Some(addr) = app.address_of(leader) else {
        return Attempt::NotLeader;
    };
    app.count_forwarded();
    let mut headers: Vec<(String, String)> = raw
        .headers
        .iter()
        .filter(|(name, _)| !is_hop_by_hop(name.as_str()) && name.as_str() != SECRET_HEADER)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    headers.push((FORWARDED_HEADER.to_owned(), app.id().to_string()));
    // The secret marks the request as a peer's (a client cannot claim to be a forwarding node,
    // e.g. to skip the rate limit it was already counted against here).
    headers.push((
        SECRET_HEADER.to_owned(),
        app.config().cluster.secret.clone(),
    ));
    let wire = WireRequest {
        method: raw.method.as_str().to_owned(),
        path: raw.path_and_query.clone(),
        headers,
        body: raw.body.clone(),
    };
    match app.transport().send(&addr, wire, timeout).await {
        Ok(answer) if answer.header(MAYBE_APPLIED_HEADER).is_some() => {
            Attempt::Unknown(format!("node {leader} lost leadership after proposing"))
        }
        Ok(answer) if answer.header(NOT_LEADER_HEADER).is_some() => Attempt::NotLeader,
        Ok(answer) => Attempt::Done(into_response(answer)),
        Err(error) => Attempt::undelivered(error),
    }
}

fn into_response(answer: crate::transport::WireResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = status;
    for (name, value) in answer.headers {
        if is_hop_by_hop(&name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
