//! Reading a client request: the body (bounded, JSON objects only), the path ids, and the
//! headers every route family shares (`Idempotency-Key` and the client scope it belongs to,
//! `If-Match`, `?consistency=`).
//!
//! Every check here answers 400/413/415 in the seed's error shape *before* anything reaches
//! Raft. The request is kept whole ([`RawRequest`]) because a follower forwards it unchanged to
//! the leader, which parses it again: both ends run the same checks.

use axum::extract::{FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use serde::de::DeserializeOwned;

use super::client_scope::{ClientScope, CLIENT_ID_LENGTH_MAX, CLIENT_ID_SCOPE_PREFIX};
use super::error::ApiError;
use crate::app::App;
use crate::client::{headers, Consistency};
use crate::inventory::{
    IdempotencyId, RecordKey, ReservationId, ValidationError, IDEMPOTENCY_KEY_LENGTH_MAX,
    IDEMPOTENCY_SCOPE_LENGTH_MAX,
};

/// The parts of a client request needed to parse it and to forward it unchanged.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// The authenticated client's scope, if the authentication middleware set one (it is not
    /// forwarded: the leader's own middleware sets it again from the forwarded headers).
    pub client_scope: Option<ClientScope>,
}

impl RawRequest {
    /// The request's id (`x-request-id`, set by `api::request_id` on every API request).
    pub fn request_id(&self) -> Option<&str> {
        self.headers
            .get(crate::client::headers::REQUEST_ID)
            .and_then(|value| value.to_str().ok())
    }

    /// Reads the whole request, refusing a body over `api.body_limit_bytes` (413).
    pub async fn read(app: &App, request: Request) -> Result<Self, ApiError> {
        Self::read_limited(app, request, app.config().api.body_limit_bytes).await
    }

    /// Reads the whole request, refusing a body over `limit` bytes (413): for a route with a
    /// limit of its own (the batch route's `client::wire::BATCH_BODY_LIMIT_BYTES`).
    pub async fn read_limited(
        _app: &App,
        request: Request,
        limit: usize,
    ) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| ApiError::payload_too_large(limit))?;
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        Ok(Self {
            method: parts.method,
            path_and_query,
            client_scope: parts.extensions.get::<ClientScope>().cloned(),
            headers: parts.headers,
            body: body.to_vec(),
        })
    }

    /// The body as `T`: `Content-Type: application/json` (415 otherwise) and a JSON object
    /// that `T` accepts (400 otherwise).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let content_type = self
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::unsupported_media_type());
        }
        // Every body is a JSON object. serde would also read a struct from an array (`[1]` as
        // `{"qty": 1}`), which no client means; the first byte says which it is.
        let first = self.body.iter().find(|byte| !byte.is_ascii_whitespace());
        if first.is_some_and(|byte| *byte != b'{') {
            return Err(ApiError::validation(
                "invalid JSON body: expected a JSON object",
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|error| ApiError::validation(format!("invalid JSON body: {error}")))
    }

    /// Like [`RawRequest::json`], but an empty body means "no body" (optional bodies).
    pub fn json_if_any<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        self.json().map(Some)
    }

    /// `Idempotency-Key`: 1 to 255 printable ASCII characters, if present.
    pub fn idempotency_key(&self) -> Result<Option<String>, ApiError> {
        let Some(value) = self.headers.get(headers::IDEMPOTENCY_KEY) else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        let printable = bytes.iter().all(|b| (0x20..=0x7e).contains(b));
        if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_LENGTH_MAX || !printable {
            return Err(ApiError::validation(format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LENGTH_MAX} printable ASCII characters"
            )));
        }
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The client scope of this request's idempotency key (see `api::client_scope`): the
    /// authenticated [`ClientScope`], else `client:` + `X-Client-Id`, else empty (anonymous).
    /// A malformed `X-Client-Id` is refused (400) even when a token names the scope: it is a
    /// client's mistake either way.
    pub fn idempotency_scope(&self) -> Result<String, ApiError> {
        let client_id = self.client_id()?;
        if let Some(ClientScope(scope)) = &self.client_scope {
            // The server made this scope (from a token's name), not the client: a 500.
            if scope.len() > IDEMPOTENCY_SCOPE_LENGTH_MAX {
                return Err(ApiError::internal(format!(
                    "a client scope is at most {IDEMPOTENCY_SCOPE_LENGTH_MAX} bytes"
                )));
            }
            return Ok(scope.clone());
        }
        Ok(client_id.map_or_else(String::new, |id| format!("{CLIENT_ID_SCOPE_PREFIX}{id}")))
    }

    /// `Idempotency-Key` within its client scope, if a key was sent.
    pub fn idempotency_id(&self) -> Result<Option<IdempotencyId>, ApiError> {
        let scope = self.idempotency_scope()?;
        Ok(self
            .idempotency_key()?
            .map(|key| IdempotencyId { scope, key }))
    }

    /// `X-Client-Id`: 1 to 128 visible ASCII characters (no spaces), if present.
    fn client_id(&self) -> Result<Option<&str>, ApiError> {
        let Some(value) = self.headers.get(headers::CLIENT_ID) else {
            return Ok(None);
        };
        let bytes = value.as_bytes();
        let visible = bytes.iter().all(u8::is_ascii_graphic);
        if bytes.is_empty() || bytes.len() > CLIENT_ID_LENGTH_MAX || !visible {
            return Err(ApiError::validation(format!(
                "X-Client-Id must be 1 to {CLIENT_ID_LENGTH_MAX} visible ASCII characters"
            )));
        }
        Ok(value.to_str().ok())
    }

    /// The expected version from `If-Match` and/or the body's `expectedVersion`; both present
    /// must agree.
    pub fn precondition(&self, body_version: Option<u64>) -> Result<Option<u64>, ApiError> {
        let header_version = match self.headers.get(headers::IF_MATCH) {
            None => None,
            Some(value) => parse_if_match(value.to_str().unwrap_or("\u{0}"))?,
        };
        match (header_version, body_version) {
            (Some(header), Some(body)) if header != body => Err(ApiError::validation(format!(
                "If-Match ({header}) and expectedVersion ({body}) disagree"
            ))),
            (header, body) => Ok(header.or(body)),
        }
    }

    /// `?consistency=linearizable|local`; linearizable when absent.
    pub fn consistency(&self) -> Result<Consistency, ApiError> {
        parse_consistency(&self.path_and_query)
    }

    /// The first value of query parameter `name`, as sent (not percent-decoded: the parameters
    /// read this way, `limit` and `after`, are digits and letters only).
    pub fn query_value(&self, name: &str) -> Option<&str> {
        query_value(&self.path_and_query, name)
    }
}

/// Two path parameters, in the route's order (`:storeId, :sku`, or `:sku, :storeId` on the
/// legacy route). A path axum cannot decode (e.g. percent-encoding that is not UTF-8) is a 400
/// in the seed's error shape, not axum's plain-text rejection.
pub struct PathPair(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathPair {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((first, second)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::validation(rejection.body_text()))?;
        Ok(Self(first, second))
    }
}

/// One path parameter (a reservation id, a SKU, a store id), with [`PathPair`]'s 400.
pub struct PathOne(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathOne {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::validation(rejection.body_text()))?;
        Ok(Self(value))
    }
}

/// A reservation id from a path: 400 unless it reads `rsv-<log index>-<number>`.
pub fn reservation_id(text: &str) -> Result<ReservationId, ApiError> {
    text.parse()
        .map_err(|error: ValidationError| ApiError::validation(format!("{error}, got {text:?}")))
}

/// A SKU from client input (the rules of [`record_key`]): 400 if malformed.
pub fn sku(sku: &str) -> Result<(), ApiError> {
    record_key("s", sku).map(|_| ())
}

/// A store id from client input (the rules of [`record_key`]): 400 if malformed.
pub fn store_id(store_id: &str) -> Result<(), ApiError> {
    record_key(store_id, "s").map(|_| ())
}

/// A record's identity from client input: 400 if either id is malformed.
pub fn record_key(store_id: &str, sku: &str) -> Result<RecordKey, ApiError> {
    RecordKey::new(store_id, sku).map_err(|error| ApiError::validation(error.to_string()))
}

/// `If-Match` accepts `"3"`, `3`, `W/"3"`, a list whose members all name the same version, and
/// `*` (any existing record, which every adjust and reserve requires anyway).
fn parse_if_match(value: &str) -> Result<Option<u64>, ApiError> {
    let invalid = || {
        ApiError::validation(format!(
            "If-Match must name a version, e.g. \"3\"; got {value:?}"
        ))
    };
    if value.trim() == "*" {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        let item = item.strip_prefix("W/").unwrap_or(item);
        let item = item
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(item);
        versions.push(item.parse::<u64>().map_err(|_| invalid())?);
    }
    versions.dedup();
    match versions.as_slice() {
        [version] => Ok(Some(*version)),
        [] => Err(invalid()),
        _ => Err(ApiError::validation(
            "If-Match may list only one version: a record has exactly one current version",
        )),
    }
}

fn query_value<'q>(path_and_query: &'q str, name: &str) -> Option<&'q str> {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn parse_consistency(path_and_query: &str) -> Result<Consistency, ApiError> {
    match query_value(path_and_query, "consistency") {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("local") => Ok(Consistency::Local),
        Some(other) => Err(ApiError::validation(format!(
            "consistency must be 'linearizable' or 'local', got {other:?}"
        ))),
    }
}

/// A page's `limit`: 1 to `max`, `default` when absent; anything else a 400.
pub fn page_limit(value: Option<&str>, default: usize, max: usize) -> Result<usize, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.parse::<usize>() {
        Ok(limit) if (1..=max).contains(&limit) => Ok(limit),
        _ => Err(ApiError::validation(format!(
            "limit must be an integer from 1 to {max}, got {value:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(headers: &[(&'static str, &[u8])], scope: Option<&str>) -> RawRequest {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, axum::http::HeaderValue::from_bytes(value).unwrap());
        }
        RawRequest {
            method: Method::POST,
            path_and_query: "/x".into(),
            headers: map,
            body: Vec::new(),
            client_scope: scope.map(|scope| ClientScope(scope.to_owned())),
        }
    }

    #[test]
    fn the_scope_is_the_token_then_the_client_id_then_anonymous() {
        let scope = |headers: &[(&'static str, &[u8])], token: Option<&str>| {
            raw(headers, token).idempotency_scope().unwrap()
        };
        assert_eq!(scope(&[], None), "");
        assert_eq!(scope(&[("x-client-id", b"shop-1")], None), "client:shop-1");
        assert_eq!(
            scope(&[("x-client-id", b"shop-1")], Some("token:ops")),
            "token:ops",
            "a token names the client; the header cannot override it"
        );
        assert_eq!(scope(&[], Some("token:ops")), "token:ops");
        // A client id cannot pose as a token's scope.
        assert_eq!(
            scope(&[("x-client-id", b"token:ops")], None),
            "client:token:ops"
        );
        let id = raw(
            &[("x-client-id", b"shop-1"), ("idempotency-key", b"order-42")],
            None,
        )
        .idempotency_id()
        .unwrap();
        assert_eq!(
            id,
            Some(IdempotencyId {
                scope: "client:shop-1".into(),
                key: "order-42".into()
            })
        );
        assert_eq!(
            raw(&[("x-client-id", b"shop-1")], None)
                .idempotency_id()
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_malformed_client_id_is_a_validation_error() {
        let longest = "c".repeat(CLIENT_ID_LENGTH_MAX);
        assert!(raw(&[("x-client-id", longest.as_bytes())], None)
            .idempotency_scope()
            .is_ok());
        let too_long = "c".repeat(CLIENT_ID_LENGTH_MAX + 1);
        for bad in [
            too_long.as_bytes(),
            b"",
            b"shop 1",
            b"shop\t1",
            "caf\u{e9}".as_bytes(),
        ] {
            let error = raw(&[("x-client-id", bad)], None)
                .idempotency_scope()
                .unwrap_err();
            assert_eq!(
                error.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{bad:?}"
            );
            assert_eq!(error.code(), "VALIDATION_ERROR", "{bad:?}");
        }
    }

    #[test]
    fn if_match_accepts_quoted_bare_weak_lists_and_star() {
        assert_eq!(parse_if_match("\"3\"").unwrap(), Some(3));
        assert_eq!(parse_if_match("3").unwrap(), Some(3));
        assert_eq!(parse_if_match("W/\"3\"").unwrap(), Some(3));
        assert_eq!(parse_if_match("\"3\", \"3\"").unwrap(), Some(3));
        assert_eq!(parse_if_match("*").unwrap(), None);
        assert!(parse_if_match("\"3\", \"4\"").is_err());
        assert!(parse_if_match("abc").is_err());
        assert!(parse_if_match("-1").is_err());
    }

    #[test]
    fn consistency_parameter_is_parsed_strictly() {
        use Consistency::{Linearizable, Local};
        assert_eq!(parse_consistency("/x").unwrap(), Linearizable);
        assert_eq!(parse_consistency("/x?consistency=local").unwrap(), Local);
        assert_eq!(
            parse_consistency("/x?a=b&consistency=linearizable").unwrap(),
            Linearizable
        );
        assert!(parse_consistency("/x?consistency=stale").is_err());
    }
}
