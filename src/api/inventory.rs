//! The seed's inventory routes: create, read, adjust, reserve.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;
use super::json;
use super::leader::{self, Attempt, RawRequest, RequestKind};
use crate::app::{App, Counters, ProposeError, ReadError};
use crate::client::wire::{AdjustRequest, CreateAtPathRequest, CreateRequest, ReserveRequest};
use crate::inventory::{self, Command, Operation, RecordKey, IDEMPOTENCY_KEY_LENGTH_MAX};

/// Header that makes a POST idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Set (to `true`) when the answer is the remembered answer of an earlier identical request.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Says how a read was served: `linearizable` or `local` (possibly stale).
pub const CONSISTENCY_HEADER: &str = "x-stockraft-consistency";

/// `:storeId` and `:sku` from the path. A path axum cannot decode (e.g. percent-encoding that is
/// not UTF-8) is a 400 in the seed's error shape, not axum's plain-text rejection.
pub struct RecordPath(String, String);

impl<S: Send + Sync> FromRequestParts<S> for RecordPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((store_id, sku)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::validation(rejection.body_text()))?;
        Ok(Self(store_id, sku))
    }
}

pub async fn create_from_body(State(app): State<Arc<App>>, request: Request) -> Response {
    Counters::bump(&app.counters.create_record);
    let parsed = async {
        let raw = read_request(&app, request).await?;
        let body: CreateRequest = json_body(&raw)?;
        let key = record_key(&body.store_id, &body.sku)?;
        let command = create_command(key, body.initial_quantity);
        Ok::<_, ApiError>((raw, command))
    };
    write_parsed(&app, parsed.await).await
}

pub async fn create_at_path(
    State(app): State<Arc<App>>,
    RecordPath(store_id, sku): RecordPath,
    request: Request,
) -> Response {
    Counters::bump(&app.counters.create_record);
    let parsed = async {
        let raw = read_request(&app, request).await?;
        let key = record_key(&store_id, &sku)?;
        let body: CreateAtPathRequest = json_body(&raw)?;
        if body.store_id.as_deref().is_some_and(|s| s != store_id)
            || body.sku.as_deref().is_some_and(|s| s != sku)
        {
            return Err(ApiError::validation(
                "storeId and sku in the body must match the path",
            ));
        }
        let command = create_command(key, body.initial_quantity);
        Ok((raw, command))
    };
    write_parsed(&app, parsed.await).await
}

pub async fn adjust(
    State(app): State<Arc<App>>,
    RecordPath(store_id, sku): RecordPath,
    request: Request,
) -> Response {
    Counters::bump(&app.counters.adjust_stock);
    let parsed = async {
        let raw = read_request(&app, request).await?;
        let key = record_key(&store_id, &sku)?;
        let body: AdjustRequest = json_body(&raw)?;
        let expected_version = precondition(&raw.headers, body.expected_version)?;
        let command = Command::Adjust {
            key,
            delta: body.delta,
            expected_version,
        };
        Ok((raw, command))
    };
    write_parsed(&app, parsed.await).await
}

pub async fn reserve(
    State(app): State<Arc<App>>,
    RecordPath(store_id, sku): RecordPath,
    request: Request,
) -> Response {
    Counters::bump(&app.counters.reserve_stock);
    let parsed = async {
        let raw = read_request(&app, request).await?;
        let key = record_key(&store_id, &sku)?;
        let body: ReserveRequest = json_body(&raw)?;
        let expected_version = precondition(&raw.headers, body.expected_version)?;
        let command = Command::Reserve {
            key,
            quantity: body.qty,
            expected_version,
        };
        Ok((raw, command))
    };
    write_parsed(&app, parsed.await).await
}

/// `GET /api/inventory/stores/:storeId/inventory/:sku`: the record itself, as the seed answers.
pub async fn get(
    State(app): State<Arc<App>>,
    RecordPath(store_id, sku): RecordPath,
    request: Request,
) -> Response {
    read(&app, &store_id, &sku, request, RecordShape::Bare).await
}

/// `GET /api/inventory/:sku/:storeId` (note the order): the seed's route "for backward
/// compatibility", answering `{success: true, data: record}`. Deprecated.
pub async fn get_legacy(
    State(app): State<Arc<App>>,
    RecordPath(sku, store_id): RecordPath,
    request: Request,
) -> Response {
    read(&app, &store_id, &sku, request, RecordShape::Wrapped).await
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
    Counters::bump(&app.counters.get_inventory);
    let parsed = async {
        let raw = read_request(app, request).await?;
        let key = record_key(store_id, sku)?;
        let local = wants_local_read(&raw.path_and_query)?;
        Ok::<_, ApiError>((raw, key, local))
    };
    let (raw, key, local) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    #[cfg(madsim)]
    let local = local
        || (crate::sim::bugs::planted() == crate::sim::bugs::PlantedBug::StaleFollowerReads
            && app.leader() != Some(app.id));
    if local {
        // A node outside the membership receives no more entries: its copy is stale without
        // bound, or empty (a wiped node would claim a record does not exist).
        if let Some(refusal) = leader::refuse_if_not_a_member(app) {
            return refusal;
        }
        let mut response = match app.read_local(&key) {
            Ok(found) => render_record(&key, found, shape),
            Err(error) => ApiError::internal(error.to_string()).into_response(),
        };
        response
            .headers_mut()
            .insert(CONSISTENCY_HEADER, HeaderValue::from_static("local"));
        return response;
    }
    leader::at_leader(app, &raw, RequestKind::Read, |_| async {
        match app.read_linearizable(&key).await {
            Ok(found) => {
                let mut response = render_record(&key, found, shape);
                response
                    .headers_mut()
                    .insert(CONSISTENCY_HEADER, HeaderValue::from_static("linearizable"));
                Attempt::Done(response)
            }
            Err(ReadError::NotLeader { .. }) => Attempt::NotLeader,
            Err(ReadError::Unavailable(message)) => Attempt::Unknown(message),
            Err(ReadError::Storage(error)) => {
                Attempt::Done(ApiError::internal(error.to_string()).into_response())
            }
        }
    })
    .await
}

/// Answers a parse error, or proposes the parsed command.
async fn write_parsed(app: &App, parsed: Result<(RawRequest, Command), ApiError>) -> Response {
    match parsed {
        Ok((raw, command)) => write(app, raw, command).await,
        Err(error) => error.into_response(),
    }
}

/// Proposes `command` at the leader and renders the state machine's answer.
async fn write(app: &App, raw: RawRequest, command: Command) -> Response {
    let key = match idempotency_key(&raw.headers) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let kind = if key.is_some() {
        RequestKind::RetryableWrite
    } else {
        RequestKind::Write
    };
    leader::at_leader(app, &raw, kind, |_| {
        let command = command.clone();
        let key = key.clone();
        async move {
            match app.propose(command, key).await {
                Ok(response) => Attempt::Done(render(app, response)),
                Err(ProposeError::NotLeader { .. }) => Attempt::NotLeader,
                Err(ProposeError::OutcomeUnknown(message)) => Attempt::Unknown(message),
                Err(ProposeError::Unavailable(message)) => {
                    Attempt::Done(ApiError::unavailable(message).into_response())
                }
            }
        }
    })
    .await
}

fn render(app: &App, response: inventory::Response) -> Response {
    let mut http = match &response.result {
        Ok(record) => {
            let (status, body) = match response.operation {
                Operation::Create => (
                    StatusCode::CREATED,
                    json!({ "success": true, "data": json::record(record) }),
                ),
                Operation::Adjust | Operation::Reserve => {
                    let status = if response.operation == Operation::Adjust {
                        StatusCode::OK
                    } else {
                        StatusCode::CREATED
                    };
                    let body = json!({
                        "success": true,
                        "newQuantity": record.quantity,
                        "newVersion": record.version,
                        "record": json::record(record),
                    });
                    (status, body)
                }
            };
            let mut http = (status, axum::Json(body)).into_response();
            http.headers_mut().insert("etag", etag(record.version));
            http
        }
        Err(rejection) => {
            if matches!(
                rejection,
                inventory::Rejection::VersionMismatch { .. }
                    | inventory::Rejection::AlreadyExists { .. }
            ) {
                Counters::bump(&app.counters.conflicts);
            }
            ApiError::from(rejection.clone()).into_response()
        }
    };
    if response.replayed {
        Counters::bump(&app.counters.idempotent_hits);
        http.headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    http
}

fn render_record(
    key: &RecordKey,
    found: Option<inventory::Record>,
    shape: RecordShape,
) -> Response {
    match found {
        Some(record) => {
            let body = match shape {
                RecordShape::Bare => json::record(&record),
                RecordShape::Wrapped => json!({ "success": true, "data": json::record(&record) }),
            };
            let mut response = (StatusCode::OK, axum::Json(body)).into_response();
            response.headers_mut().insert("etag", etag(record.version));
            response
        }
        None => ApiError::not_found(format!("inventory record {key} not found")).into_response(),
    }
}

fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\""))
        .expect("a quoted integer is a valid header value")
}

pub(super) async fn read_request(app: &App, request: Request) -> Result<RawRequest, ApiError> {
    let (parts, body) = request.into_parts();
    let limit = app.config.api.body_limit_bytes;
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::payload_too_large(limit))?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    Ok(RawRequest {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body: body.to_vec(),
    })
}

/// Like [`json_body`], but an empty body means "no body" (for routes whose body is optional).
pub(super) fn json_body_if_any<T: DeserializeOwned>(
    raw: &RawRequest,
) -> Result<Option<T>, ApiError> {
    if raw.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    json_body(raw).map(Some)
}

pub(super) fn json_body<T: DeserializeOwned>(raw: &RawRequest) -> Result<T, ApiError> {
    let content_type = raw
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::unsupported_media_type());
    }
    let invalid =
        |error: serde_json::Error| ApiError::validation(format!("invalid JSON body: {error}"));
    // Every body is a JSON object. serde would also read a struct from an array (`[1]` as
    // `{"qty": 1}`), which no client means.
    let value: serde_json::Value = serde_json::from_slice(&raw.body).map_err(invalid)?;
    if !value.is_object() {
        return Err(ApiError::validation(
            "invalid JSON body: expected a JSON object",
        ));
    }
    serde_json::from_value(value).map_err(invalid)
}

fn record_key(store_id: &str, sku: &str) -> Result<RecordKey, ApiError> {
    RecordKey::new(store_id, sku).map_err(|error| ApiError::validation(error.to_string()))
}

fn create_command(key: RecordKey, initial_quantity: i64) -> Command {
    Command::Create {
        key,
        initial_quantity,
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
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

/// The expected version from `If-Match` and/or the body's `expectedVersion`.
///
/// `If-Match` accepts `"3"`, `3`, `W/"3"`, a list whose members all name the same version, and
/// `*` (any existing record, which every adjust and reserve requires anyway).
fn precondition(headers: &HeaderMap, body_version: Option<u64>) -> Result<Option<u64>, ApiError> {
    let header_version = match headers.get("if-match") {
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

/// `?consistency=local` asks for this node's applied state; the default is linearizable.
fn wants_local_read(path_and_query: &str) -> Result<bool, ApiError> {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "consistency" {
            return match value {
                "local" => Ok(true),
                "linearizable" => Ok(false),
                other => Err(ApiError::validation(format!(
                    "consistency must be 'linearizable' or 'local', got {other:?}"
                ))),
            };
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!wants_local_read("/x").unwrap());
        assert!(wants_local_read("/x?consistency=local").unwrap());
        assert!(!wants_local_read("/x?a=b&consistency=linearizable").unwrap());
        assert!(wants_local_read("/x?consistency=stale").is_err());
    }
}
