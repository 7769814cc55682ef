//! The one place where failures become HTTP: status code + the seed's error body
//! `{success:false, error:{name, message, code, statusCode, timestamp, details?}}`.
//!
//! Handlers never build a status or a code themselves: they use a named constructor here, or
//! convert a layer's error (`Rejection`, `ProposeError`, `ReadError`, `MembershipError`,
//! `SnapshotError`) with `From`. The fields are private so that a code always travels with its
//! status and name.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::json::rfc3339_ms;
use crate::app::{wall_clock_ms, ProposeError, ReadError, SnapshotError};
use crate::client::wire::{codes, ErrorBody, ErrorDetail};
use crate::inventory::{LineRefusal, Rejection};
use crate::membership::MembershipError;
use crate::raft::events::EventsError;

/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_S: u64 = 1;

/// An error answer. Build one with the constructors; render it with `into_response`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    name: &'static str,
    message: String,
    details: Option<Value>,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        name: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            name,
            message: message.into(),
            details: None,
            retry_after_s: None,
        }
    }

    /// A 503: the client may retry after a short wait.
    fn unavailable_with_code(code: &'static str, message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code,
            "ServiceUnavailableError",
            message,
        );
        error.retry_after_s = Some(RETRY_AFTER_S);
        error
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// A 400 naming malformed lines of a batch: `details.lines: [{index, message}]` (at most
    /// `listed_max` of them, in order) and `details.invalidLines`, how many there are.
    pub fn invalid_lines(lines: &[(usize, String)], listed_max: usize) -> Self {
        let listed: Vec<Value> = lines
            .iter()
            .take(listed_max)
            .map(|(index, message)| json!({ "index": index, "message": message }))
            .collect();
        let first = lines.first().map_or(0, |(index, _)| *index);
        Self::validation(format!(
            "{} malformed line(s), the first at index {first}; nothing was proposed",
            lines.len()
        ))
        .with_details(json!({ "lines": listed, "invalidLines": lines.len() }))
    }

    /// A batch of creates in the first form of the batch route (`records`), refused: the first
    /// failing line's own error, as that form answered before lines existed, with
    /// `details.lines` naming every failing line as [`Rejection::BatchRefused`] does.
    pub fn first_line_refused(lines: &[LineRefusal]) -> Self {
        let Some(first) = lines.first() else {
            return Self::internal("a batch was refused without a failing line");
        };
        let mut error = Self::from(first.rejection.clone());
        let mut details = error.details.take().unwrap_or_else(|| json!({}));
        details["lines"] = Self::line_details(lines);
        error.with_details(details)
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            codes::VALIDATION_ERROR,
            "ValidationError",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "NotFoundError",
            message,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "MethodNotAllowedError",
            "this route does not accept that method",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "UnauthorizedError",
            "missing or wrong credentials",
        )
    }

    /// Credentials were good but do not allow this route (a token without its scope).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "ForbiddenError",
            message,
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "UnsupportedMediaTypeError",
            "Content-Type must be application/json",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "PayloadTooLargeError",
            format!("request body exceeds {limit} bytes"),
        )
    }

    /// The node sheds this request (too many in flight): nothing was done.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::OVERLOADED, message)
    }

    /// The request ran past `api.request_timeout_ms`.
    pub fn timed_out(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::TIMEOUT, message)
    }

    /// The client is over its rate limit: nothing was done.
    pub fn rate_limited(retry_after_s: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            codes::RATE_LIMITED,
            "TooManyRequestsError",
            "too many requests from this client; retry after the Retry-After delay",
        );
        error.retry_after_s = Some(retry_after_s.max(1));
        error
    }

    /// No leader could be reached before the deadline: nothing was applied.
    pub fn no_leader(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::NO_LEADER, message)
    }

    /// The write may or may not have been applied; retry with the same Idempotency-Key to find
    /// out safely.
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::OUTCOME_UNKNOWN, message)
    }

    /// This node is outside the cluster's membership: nothing was done.
    pub fn not_a_member(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::NOT_A_MEMBER, message)
    }

    /// Readiness: this node cannot serve yet.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::NOT_READY, message)
    }

    /// Readiness: this node's disk-space alarm is raised (it refuses writes).
    pub fn no_space(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::NO_SPACE, message)
    }

    /// Liveness: Raft stopped on this node; the process is about to exit.
    pub fn raft_stopped(message: impl Into<String>) -> Self {
        Self::unavailable_with_code(codes::RAFT_STOPPED, message)
    }

    /// 507: a write refused because this node is short of disk space. Nothing was proposed.
    /// No `Retry-After`: the alarm clears only once space is freed, which a retry cannot do.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            codes::INSUFFICIENT_STORAGE,
            "InsufficientStorageError",
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::unavailable_with_code("UNAVAILABLE", message)
    }

    /// A membership change the safety rules (or openraft) refused before proposing it.
    pub fn membership_refused(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            codes::MEMBERSHIP_CHANGE_REFUSED,
            "ConflictError",
            message,
        )
    }

    /// A Raft RPC refused by the identity checks: the sender belongs to another cluster
    /// (`WRONG_CLUSTER`), or one side is not the incarnation of that member its peer knows
    /// (`WRONG_INCARNATION`). Nothing was handed to Raft.
    pub fn identity_refused(refusal: &crate::identity::Refusal) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            refusal.code(),
            "ConflictError",
            refusal.to_string(),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "InternalError",
            message,
        )
    }

    /// The body this error renders to.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            success: false,
            error: ErrorDetail {
                name: self.name.to_owned(),
                message: self.message.clone(),
                code: self.code.to_owned(),
                status_code: self.status.as_u16(),
                timestamp: rfc3339_ms(wall_clock_ms()),
                details: self.details.clone(),
            },
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let message = rejection.to_string();
        let conflict = |message| {
            Self::new(
                StatusCode::CONFLICT,
                codes::CONFLICT_ERROR,
                "ConflictError",
                message,
            )
        };
        let unprocessable =
            |code, name, message| Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, name, message);
        match rejection {
            Rejection::Invalid { .. } => Self::validation(message),
            Rejection::NotFound { .. } => Self::not_found(message),
            Rejection::AlreadyExists { version, .. } => {
                conflict(message).with_details(json!({ "currentVersion": version }))
            }
            Rejection::VersionMismatch { expected, actual } => conflict(message)
                .with_details(json!({ "expectedVersion": expected, "currentVersion": actual })),
            Rejection::InsufficientStock {
                requested,
                available,
            } => unprocessable(codes::INSUFFICIENT_STOCK, "InsufficientStockError", message)
                .with_details(json!({ "requested": requested, "available": available })),
            Rejection::Overflow => {
                unprocessable("QUANTITY_OUT_OF_RANGE", "ValidationError", message)
            }
            Rejection::IdempotencyKeyReused { .. } => {
                unprocessable(codes::IDEMPOTENCY_KEY_REUSED, "IdempotencyError", message)
            }
            Rejection::ReservationNotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                codes::RESERVATION_NOT_FOUND,
                "NotFoundError",
                message,
            ),
            Rejection::ReservationExpired { .. } => Self::new(
                StatusCode::CONFLICT,
                codes::RESERVATION_EXPIRED,
                "ConflictError",
                message,
            ),
            Rejection::ReservationNotHeld { status, .. } => Self::new(
                StatusCode::CONFLICT,
                codes::RESERVATION_NOT_HELD,
                "ConflictError",
                message,
            )
            .with_details(json!({ "status": status.as_str() })),
            Rejection::HoldLimitReached { max } => Self::new(
                StatusCode::CONFLICT,
                codes::HOLD_LIMIT_REACHED,
                "ConflictError",
                message,
            )
            .with_details(json!({ "max": max })),
            Rejection::CartRefused { lines } => {
                Self::lines_refused(codes::CART_REFUSED, message, &lines)
            }
            Rejection::BatchRefused { lines } => {
                Self::lines_refused(codes::BATCH_REFUSED, message, &lines)
            }
        }
    }
}

impl ApiError {
    /// A cart or batch refused as a whole: the status (and name) of its first failing line's
    /// cause, `code` (`CART_REFUSED` or `BATCH_REFUSED`), and `details.lines` naming every
    /// failing line with its own code.
    fn lines_refused(code: &'static str, message: String, lines: &[LineRefusal]) -> Self {
        let (status, name) =
            lines
                .first()
                .map_or((StatusCode::CONFLICT, "ConflictError"), |line| {
                    let cause = ApiError::from(line.rejection.clone());
                    (cause.status, cause.name)
                });
        Self::new(status, code, name, message)
            .with_details(json!({ "lines": Self::line_details(lines) }))
    }

    /// `[{index, storeId, sku, code, message}]`: each failing line and its own cause.
    fn line_details(lines: &[LineRefusal]) -> Value {
        let details: Vec<Value> = lines
            .iter()
            .map(|line| {
                let cause = ApiError::from(line.rejection.clone());
                json!({
                    "index": line.index,
                    "storeId": line.key.store_id,
                    "sku": line.key.sku,
                    "code": cause.code,
                    "message": cause.message,
                })
            })
            .collect();
        Value::Array(details)
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::NotLeader { .. } => Self::no_leader(error.to_string()),
            ProposeError::OutcomeUnknown(message) => Self::outcome_unknown(message),
            ProposeError::Unavailable(message) => Self::unavailable(message),
            ProposeError::Overloaded { .. } => Self::overloaded(error.to_string()),
            ProposeError::NoSpace { node, .. } => Self::insufficient_storage(error.to_string())
                .with_details(json!({ "nodeId": node })),
        }
    }
}

impl From<EventsError> for ApiError {
    fn from(error: EventsError) -> Self {
        match error {
            EventsError::Gone { oldest_seq, .. } => Self::new(
                StatusCode::GONE,
                codes::EVENTS_GONE,
                "GoneError",
                format!(
                    "{error}: start again after {} (and rebuild what you derived from the \
                     events missed)",
                    oldest_seq.saturating_sub(1)
                ),
            )
            .with_details(json!({ "oldestSeq": oldest_seq })),
            EventsError::NotStarted => {
                Self::unavailable_with_code(codes::FEED_NOT_STARTED, error.to_string())
            }
            EventsError::Storage(storage) => Self::internal(storage.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::NotLeader { .. } => Self::no_leader(error.to_string()),
            ReadError::Unavailable(message) => Self::unavailable(message),
            ReadError::Storage(storage) => Self::internal(storage.to_string()),
        }
    }
}

impl From<MembershipError> for ApiError {
    fn from(error: MembershipError) -> Self {
        match error {
            MembershipError::Refused(message) => Self::membership_refused(message),
            MembershipError::NotLeader { .. } => Self::no_leader(error.to_string()),
            MembershipError::OutcomeUnknown(message) => Self::outcome_unknown(message),
        }
    }
}

impl From<SnapshotError> for ApiError {
    fn from(error: SnapshotError) -> Self {
        Self::unavailable(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inventory::{RecordKey, ReservationId, ReservationStatus};

    /// Status, code and details of the answer a rejection becomes.
    fn answered(rejection: Rejection) -> (u16, String, Option<Value>) {
        let body = ApiError::from(rejection).body();
        (body.error.status_code, body.error.code, body.error.details)
    }

    #[test]
    fn reservation_refusals_answer_their_status_code_and_details() {
        let id = ReservationId::new(7, 0).unwrap();
        assert_eq!(
            answered(Rejection::ReservationNotFound { id }),
            (404, codes::RESERVATION_NOT_FOUND.into(), None)
        );
        assert_eq!(
            answered(Rejection::ReservationExpired { id }),
            (409, codes::RESERVATION_EXPIRED.into(), None)
        );
        assert_eq!(
            answered(Rejection::ReservationNotHeld {
                id,
                status: ReservationStatus::Committed
            }),
            (
                409,
                codes::RESERVATION_NOT_HELD.into(),
                Some(json!({ "status": "committed" }))
            )
        );
        assert_eq!(
            answered(Rejection::HoldLimitReached { max: 2_000_000 }),
            (
                409,
                codes::HOLD_LIMIT_REACHED.into(),
                Some(json!({ "max": 2_000_000 }))
            )
        );
    }

    #[test]
    fn a_refused_cart_takes_its_first_causes_status_and_names_every_line() {
        let key = |sku: &str| RecordKey::new("s1", sku).unwrap();
        let lines = vec![
            LineRefusal {
                index: 1,
                key: key("b"),
                rejection: Rejection::InsufficientStock {
                    requested: 5,
                    available: 1,
                },
            },
            LineRefusal {
                index: 3,
                key: key("d"),
                rejection: Rejection::NotFound { key: key("d") },
            },
        ];
        let (status, code, details) = answered(Rejection::CartRefused { lines });
        assert_eq!((status, code.as_str()), (422, codes::CART_REFUSED));
        let lines = &details.unwrap()["lines"];
        assert_eq!(lines[0]["index"], 1);
        assert_eq!(lines[0]["code"], codes::INSUFFICIENT_STOCK);
        assert_eq!(lines[1]["index"], 3);
        assert_eq!(lines[1]["sku"], "d");
        assert_eq!(lines[1]["code"], "NOT_FOUND");
    }

    #[test]
    fn a_refused_batch_takes_its_first_failing_lines_status_and_names_every_line() {
        let key = |sku: &str| RecordKey::new("s1", sku).unwrap();
        let refusal = |index, sku: &str, rejection| LineRefusal {
            index,
            key: key(sku),
            rejection,
        };
        let not_found = |sku| Rejection::NotFound { key: key(sku) };
        let mismatch = Rejection::VersionMismatch {
            expected: 1,
            actual: 2,
        };
        let short = Rejection::InsufficientStock {
            requested: 5,
            available: 1,
        };
        for (first, status) in [
            (not_found("a"), 404),
            (mismatch.clone(), 409),
            (short.clone(), 422),
        ] {
            let lines = vec![refusal(2, "a", first), refusal(7, "b", not_found("b"))];
            let (answered_status, code, details) = answered(Rejection::BatchRefused { lines });
            assert_eq!(
                (answered_status, code.as_str()),
                (status, codes::BATCH_REFUSED)
            );
            let lines = &details.unwrap()["lines"];
            assert_eq!(lines.as_array().unwrap().len(), 2, "every failing line");
            assert_eq!(
                (lines[1]["index"].as_u64(), lines[1]["sku"].as_str()),
                (Some(7), Some("b"))
            );
            assert_eq!(lines[1]["code"], "NOT_FOUND");
        }
    }
}
