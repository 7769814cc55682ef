//! The one place where failures become HTTP: status code + the seed's error body
//! `{success:false, error:{name, message, code, statusCode, timestamp, details?}}`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::json::rfc3339_ms;
use crate::app::wall_clock_ms;
use crate::inventory::Rejection;

/// An error answer. Build one with the constructors; render it with `into_response`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub name: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after_s: Option<u64>,
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

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "ValidationError",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "NotFoundError", message)
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

    /// No leader could be reached before the deadline: nothing was applied.
    pub fn no_leader(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NO_LEADER",
            "ServiceUnavailableError",
            message,
        );
        error.retry_after_s = Some(1);
        error
    }

    /// The write may or may not have been applied; retry with the same Idempotency-Key to find
    /// out safely.
    pub fn outcome_unknown(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OUTCOME_UNKNOWN",
            "ServiceUnavailableError",
            message,
        );
        error.retry_after_s = Some(1);
        error
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "ServiceUnavailableError",
            message,
        );
        error.retry_after_s = Some(1);
        error
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "InternalError",
            message,
        )
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        let message = rejection.to_string();
        match rejection {
            Rejection::Invalid { .. } => Self::validation(message),
            Rejection::NotFound { .. } => Self::not_found(message),
            Rejection::AlreadyExists { version, .. } => Self::new(
                StatusCode::CONFLICT,
                "CONFLICT_ERROR",
                "ConflictError",
                message,
            )
            .with_details(json!({ "currentVersion": version })),
            Rejection::VersionMismatch { expected, actual } => Self::new(
                StatusCode::CONFLICT,
                "CONFLICT_ERROR",
                "ConflictError",
                message,
            )
            .with_details(json!({ "expectedVersion": expected, "currentVersion": actual })),
            Rejection::InsufficientStock {
                requested,
                available,
            } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "INSUFFICIENT_STOCK",
                "InsufficientStockError",
                message,
            )
            .with_details(json!({ "requested": requested, "available": available })),
            Rejection::Overflow => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "QUANTITY_OUT_OF_RANGE",
                "ValidationError",
                message,
            ),
            Rejection::IdempotencyKeyReused { .. } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "IDEMPOTENCY_KEY_REUSED",
                "IdempotencyError",
                message,
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({
            "name": self.name,
            "message": self.message,
            "code": self.code,
            "statusCode": self.status.as_u16(),
            "timestamp": rfc3339_ms(wall_clock_ms()),
        });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let body = json!({ "success": false, "error": error });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}
