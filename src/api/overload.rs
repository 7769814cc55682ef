//! What a node does when too many clients arrive: it sheds, it never queues without bound.
//!
//! Three limits stand in front of the client routes (Raft RPC, admin and health routes are
//! outside them, so client load cannot starve heartbeats of a slot):
//! - **Requests in flight** (`api.max_in_flight_requests`): tower's global concurrency limit
//!   under a load-shed layer. A request that finds every slot taken is answered at once with
//!   503 `OVERLOADED` and `Retry-After`; nothing was done.
//! - **Proposals in flight** (`api.max_in_flight_proposals`): enforced in `App::propose`, same
//!   answer. It bounds what the leader feeds Raft, whichever node the requests arrived at.
//! - **Time** (`api.request_timeout_ms`): a request still running then is answered 503
//!   `TIMEOUT`. It is longer than every bound inside (write deadline, forwarding), so it only
//!   catches a hang; a write's outcome is then unknown (retry it with its Idempotency-Key).
//!   The timer is the runtime's own (madsim's under simulation), not tower's.
//!
//! And, when configured (`api.rate_limit_rps`, the seed's `RATE_LIMIT_RPS`), a per-client token
//! bucket keyed by the client's IP: 429 `RATE_LIMITED` with `Retry-After`. A request forwarded
//! by another node was counted there and is not counted again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use super::leader::FORWARDED_HEADER;
use crate::config::ApiConfig;

/// Answers a request the tower limits refused (the only error they raise is load shedding).
pub async fn shed(error: tower::BoxError) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::overloaded("this node is handling as many requests as it is allowed to")
            .into_response()
    } else {
        ApiError::unavailable(format!("request refused: {error}")).into_response()
    }
}

/// Answers 503 `TIMEOUT` to a request still running after `timeout`
/// (`api.request_timeout_ms`).
pub async fn deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(format!(
            "no answer within {} ms; a write's outcome is unknown (retry with its \
             Idempotency-Key)",
            timeout.as_millis()
        ))
        .into_response(),
    }
}

/// The per-client token buckets, when a rate limit is configured.
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Requests seen, to forget idle clients' buckets now and then.
    seen: AtomicU64,
}

/// Every this many requests, buckets of clients back at full burst are dropped.
const FORGET_IDLE_CLIENTS_EVERY: u64 = 10_000;

impl RateLimit {
    /// `None` when `api.rate_limit_rps` is 0 (off).
    pub fn from_config(api: &ApiConfig) -> Option<Arc<Self>> {
        let rate = NonZeroU32::new(api.rate_limit_rps)?;
        let burst = NonZeroU32::new(api.rate_limit_burst).unwrap_or(rate);
        Some(Arc::new(Self {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            seen: AtomicU64::new(0),
        }))
    }

    /// `Err(seconds to wait)` when `client` is over its rate.
    fn check(&self, client: IpAddr) -> Result<(), u64> {
        if self
            .seen
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(FORGET_IDLE_CLIENTS_EVERY)
        {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&client).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Refuses a client over its rate with 429 `RATE_LIMITED`. A request a node forwarded was
/// counted at that node (the header reaches here only with the cluster secret: see
/// `strip_internal_headers`).
pub async fn rate_limit(
    State(limit): State<Arc<RateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    if !request.headers().contains_key(FORWARDED_HEADER) {
        // Under simulation (no socket) every client shares one bucket.
        let client = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        if let Err(wait_s) = limit.check(client) {
            return ApiError::rate_limited(wait_s).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_request_past_its_deadline_is_answered_503_timeout_and_a_quick_one_is_not() {
        let router = axum::Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            )
            .route("/quick", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(50),
                deadline,
            ));
        let call = |path: &'static str| {
            let request = axum::http::Request::get(path).body(Body::empty()).unwrap();
            router.clone().oneshot(request)
        };
        let slow = call("/slow").await.unwrap();
        assert_eq!(slow.status(), 503);
        assert_eq!(slow.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(slow.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "TIMEOUT");
        assert_eq!(call("/quick").await.unwrap().status(), 200);
    }

    #[test]
    fn a_client_past_its_burst_waits_and_others_do_not() {
        let api = ApiConfig {
            rate_limit_rps: 1,
            rate_limit_burst: 2,
            ..ApiConfig::default()
        };
        let limit = RateLimit::from_config(&api).expect("configured");
        let (one, two) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert!(limit.check(one).is_ok());
        assert!(limit.check(one).is_ok());
        assert_eq!(limit.check(one), Err(1), "1 request/s: wait about a second");
        assert!(limit.check(two).is_ok(), "buckets are per client");
        assert!(
            RateLimit::from_config(&ApiConfig::default()).is_none(),
            "off by default"
        );
    }
}
