//! `POST /api/inventory/batch` (issue 33): up to `inventory::BATCH_LINES_MAX` lines (create,
//! adjust, set, reserve) in one request, one Raft entry and one answer.
//!
//! The route reads the body once, under its own limit ([`BATCH_BODY_LIMIT_BYTES`]: 10,000 of
//! the longest lines fit), then reads every line on its own with the wire rules
//! (`client::wire::BatchLineRequest`), so that a 400 names every malformed line by index
//! (the first [`INVALID_LINES_LISTED_MAX`] of them) instead of stopping at the first. Nothing
//! is proposed unless every line is well formed. The lines become one `Command::PackedBatch`
//! (encoded once, here) that the write skeleton (`api::inventory`) proposes at the leader (a
//! follower forwards the parsed command, not the body) and this module renders:
//!
//! - `rejectEverything` (the default): 200 `{results: [{index, record, reservationId?}]}`, or the
//!   seed's error shape with code `BATCH_REFUSED`, the status of the first failing line's cause
//!   and `details.lines` naming every failing line;
//! - `rejectFailedLines`: 200 `{applied, failed, results: [{index, status, record? | error}]}`.
//!
//! The first form of this route, `{records: [...]}` (creates only), still works: it is read as
//! a `rejectEverything` batch of create lines and answered as before (201 `{created}`; a refusal
//! with the first failing line's own code, e.g. 409 `CONFLICT_ERROR`, plus `details.lines`).
//!
//! An `Idempotency-Key` covers the whole batch (the state machine remembers the batch's answer).
//! `If-Match` is refused: a batch names many records, each line carries its own
//! `expectedVersion`.

use crate::storage::fs::blocking;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::inventory::{ttl_ms, write_rendered};
use super::json;
use super::request::RawRequest;
use crate::app::{App, Counted};
use crate::client::headers;
use crate::client::wire::{
    BatchApplied, BatchCreated, BatchErrorPolicy, BatchLineApplied, BatchLineError,
    BatchLineOutcome, BatchLineRequest, BatchLineStatus, BatchLinesOutcome, CreateRequest,
    Envelope, BATCH_BODY_LIMIT_BYTES,
};
use crate::inventory::{
    self, BatchLine, Command, CommandResult, ErrorPolicy, LineResult, RecordKey, Rejection,
    BATCH_HOLD_LINES_MAX, BATCH_LINES_MAX,
};

/// Most malformed lines a 400 lists (`details.lines`); `details.invalidLines` counts them all.
/// A body of 10,000 bad lines answers a bounded error, not a second megabyte.
pub const INVALID_LINES_LISTED_MAX: usize = 100;

/// Which form the body had: it decides the answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `{lines, errorPolicy?}`.
    Lines,
    /// `{records}`: creates, all or none, answered `{created}`.
    Records,
}

/// The body as first read: the lines are kept as JSON values and read one by one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    lines: Option<Vec<Value>>,
    #[serde(default)]
    records: Option<Vec<Value>>,
    #[serde(default)]
    error_policy: Option<BatchErrorPolicy>,
}

pub async fn batch(State(app): State<Arc<App>>, request: Request) -> Response {
    // A node configured with a larger general limit keeps it here too.
    let body_limit_bytes = BATCH_BODY_LIMIT_BYTES.max(app.config().api.body_limit_bytes);
    let parse = |raw| parse_on_blocking_pool(app.clone(), raw);
    write_rendered(&app, None, request, body_limit_bytes, parse, render).await
}

/// [`parse`] on the blocking pool: 10,000 lines take the thread for a while (half a second in
/// a debug build), and a node runs its tasks, Raft's heartbeats among them, on one thread by
/// default. (`storage::fs::blocking`: under the simulation, inline.)
async fn parse_on_blocking_pool(
    app: Arc<App>,
    raw: RawRequest,
) -> Result<(RawRequest, Command, Form), ApiError> {
    let parsed = blocking(move || Ok(parse(&raw).map(|(command, form)| (raw, command, form))))
        .await
        .map_err(|error| ApiError::internal(format!("reading a batch stopped: {error}")))?;
    let (raw, command, form) = parsed?;
    if form == Form::Records {
        app.count(Counted::CreateRecord);
    }
    Ok((raw, command, form))
}

/// The body into one `Command::Batch`, or a 400 naming what is wrong.
fn parse(raw: &RawRequest) -> Result<(Command, Form), ApiError> {
    if raw.headers.contains_key(headers::IF_MATCH) {
        return Err(ApiError::validation(
            "If-Match names one record's version: a batch line carries its own expectedVersion",
        ));
    }
    let body: Body = raw.json()?;
    let (form, values, policy) = match (body.lines, body.records) {
        (Some(lines), None) => (Form::Lines, lines, body.error_policy.unwrap_or_default()),
        (None, Some(records)) => {
            if body.error_policy.is_some() {
                return Err(ApiError::validation(
                    "errorPolicy goes with lines; records (creates, all or none) takes none",
                ));
            }
            (Form::Records, records, BatchErrorPolicy::RejectEverything)
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::validation(
                "a batch has lines or records (the create-only form), not both",
            ))
        }
        (None, None) => {
            return Err(ApiError::validation(
                "a batch needs lines (or records, the create-only form)",
            ))
        }
    };
    if values.is_empty() || values.len() > BATCH_LINES_MAX {
        return Err(ApiError::validation(format!(
            "a batch holds 1 to {BATCH_LINES_MAX} lines, got {}",
            values.len()
        )));
    }
    let lines = read_lines(form, values)?;
    let holds = lines.iter().filter(|line| line.is_hold()).count();
    if holds > BATCH_HOLD_LINES_MAX {
        return Err(ApiError::validation(format!(
            "a batch holds at most {BATCH_HOLD_LINES_MAX} reserve lines with ttlSeconds, got \
             {holds}"
        )));
    }
    let policy = match policy {
        BatchErrorPolicy::RejectEverything => ErrorPolicy::RejectEverything,
        BatchErrorPolicy::RejectFailedLines => ErrorPolicy::RejectFailedLines,
    };
    Ok((Command::packed_batch(&lines, policy), form))
}

/// Every line read on its own; a 400 listing the malformed ones if any is.
fn read_lines(form: Form, values: Vec<Value>) -> Result<Vec<BatchLine>, ApiError> {
    let mut lines = Vec::with_capacity(values.len());
    let mut invalid: Vec<(usize, String)> = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        let read = match form {
            Form::Lines => line(value),
            Form::Records => record(value),
        };
        match read {
            Ok(line) => lines.push(line),
            Err(message) => invalid.push((index, message)),
        }
    }
    if invalid.is_empty() {
        assert!(!lines.is_empty(), "a batch was checked to hold lines");
        return Ok(lines);
    }
    Err(ApiError::invalid_lines(&invalid, INVALID_LINES_LISTED_MAX))
}

/// One line of the `lines` form, by the wire rules.
fn line(value: Value) -> Result<BatchLine, String> {
    if !value.is_object() {
        return Err(format!("a line is a JSON object, got {value}"));
    }
    let line = BatchLineRequest::deserialize(value).map_err(|error| error.to_string())?;
    let (store_id, sku) = line.ids();
    let key = RecordKey::new(store_id, sku).map_err(|error| error.to_string())?;
    Ok(match line {
        BatchLineRequest::Create {
            initial_quantity, ..
        } => BatchLine::Create {
            key,
            initial_quantity,
        },
        BatchLineRequest::Adjust {
            delta,
            expected_version,
            ..
        } => BatchLine::Adjust {
            key,
            delta,
            expected_version,
        },
        BatchLineRequest::Set {
            qty,
            expected_version,
            ..
        } => BatchLine::Set {
            key,
            qty,
            expected_version,
        },
        BatchLineRequest::Reserve {
            qty,
            expected_version,
            ttl_seconds,
            ..
        } => BatchLine::Reserve {
            key,
            quantity: qty,
            expected_version,
            ttl_ms: ttl_seconds.map(ttl_ms),
        },
    })
}

/// One record of the `records` form: a create line.
fn record(value: Value) -> Result<BatchLine, String> {
    if !value.is_object() {
        return Err(format!("a record is a JSON object, got {value}"));
    }
    let record = CreateRequest::deserialize(value).map_err(|error| error.to_string())?;
    let key = RecordKey::new(&record.store_id, &record.sku).map_err(|error| error.to_string())?;
    Ok(BatchLine::Create {
        key,
        initial_quantity: record.initial_quantity,
    })
}

/// The state machine's answer to a batch, in the shape of the body's form and the batch's
/// policy. An applied batch's body (up to 10,000 records, ~3 MB) is made on the blocking pool
/// as it is sent ([`json_off_runtime`]).
fn render(app: &App, command: &Command, form: &Form, response: inventory::Response) -> Response {
    let (Command::Batch { policy, .. } | Command::PackedBatch { policy, .. }) = command else {
        return ApiError::internal("the batch route proposed another command").into_response();
    };
    let inventory::Response {
        result,
        log_index,
        replayed,
        ..
    } = response;
    let accepted = !result.is_err();
    let http = match (result, form) {
        (CommandResult::Batch(results), Form::Records) => {
            let created = BatchCreated {
                created: results.lines.len(),
            };
            (StatusCode::CREATED, axum::Json(Envelope::ok(created))).into_response()
        }
        (CommandResult::Batch(results), Form::Lines) => match policy {
            ErrorPolicy::RejectEverything => applied(results.lines),
            ErrorPolicy::RejectFailedLines => {
                json_off_runtime(StatusCode::OK, move || outcome(&results.lines))
            }
        },
        (CommandResult::Err(rejection), _) => refused(app, &rejection, *form),
        (other, _) => ApiError::internal(format!("a batch answered {other:?}")).into_response(),
    };
    super::inventory::with_headers_of(app, accepted, log_index, replayed, http)
}

/// A JSON answer whose body is made, by `make`, on the blocking pool when the answer is sent:
/// 10,000 records take the runtime's one thread for longer than Raft's heartbeats may wait
/// in a debug build (and tens of milliseconds in a release build).
fn json_off_runtime<T: serde::Serialize>(
    status: StatusCode,
    make: impl FnOnce() -> T + Send + 'static,
) -> Response {
    let body = futures::stream::once(async move {
        blocking(move || serde_json::to_vec(&make()).map_err(std::io::Error::other))
            .await
            .map(axum::body::Bytes::from)
    });
    let content_type = [(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    )];
    (status, content_type, axum::body::Body::from_stream(body)).into_response()
}

/// A `rejectEverything` batch that applied: every line's record.
fn applied(lines: Vec<LineResult>) -> Response {
    if let Some(index) = lines.iter().position(|line| !line.is_ok()) {
        return ApiError::internal(format!(
            "line {index} of a rejectEverything batch failed, yet the batch applied"
        ))
        .into_response();
    }
    json_off_runtime(StatusCode::OK, move || {
        let results = lines
            .iter()
            .enumerate()
            .filter_map(|(index, line)| match line {
                LineResult::Ok {
                    record,
                    reservation_id,
                } => Some(BatchLineApplied {
                    index,
                    record: json::record(record),
                    reservation_id: reservation_id.map(|id| id.to_string()),
                }),
                LineResult::Failed(_) => None,
            })
            .collect();
        Envelope::ok(BatchApplied { results })
    })
}

/// A `rejectFailedLines` batch: each line applied or failed.
fn outcome(lines: &[LineResult]) -> Envelope<BatchLinesOutcome> {
    let results: Vec<BatchLineOutcome> = lines
        .iter()
        .enumerate()
        .map(|(index, line)| match line {
            LineResult::Ok {
                record,
                reservation_id,
            } => BatchLineOutcome {
                index,
                status: BatchLineStatus::Ok,
                record: Some(json::record(record)),
                reservation_id: reservation_id.map(|id| id.to_string()),
                error: None,
            },
            LineResult::Failed(rejection) => {
                let error = ApiError::from(rejection.clone());
                BatchLineOutcome {
                    index,
                    status: BatchLineStatus::Failed,
                    record: None,
                    reservation_id: None,
                    error: Some(BatchLineError {
                        code: error.code().to_owned(),
                        message: error.message().to_owned(),
                    }),
                }
            }
        })
        .collect();
    let failed = results
        .iter()
        .filter(|line| line.status == BatchLineStatus::Failed)
        .count();
    Envelope::ok(BatchLinesOutcome {
        applied: results.len() - failed,
        failed,
        results,
    })
}

/// A refused batch. The `records` form answers as it did before the lines existed: the first
/// failing line's own error (409 `CONFLICT_ERROR` for an existing record), with `details.lines`
/// added.
fn refused(app: &App, rejection: &Rejection, form: Form) -> Response {
    let conflict = |rejection: &Rejection| {
        matches!(
            rejection,
            Rejection::VersionMismatch { .. } | Rejection::AlreadyExists { .. }
        )
    };
    match (rejection, form) {
        (Rejection::BatchRefused { lines }, Form::Records) if !lines.is_empty() => {
            if conflict(&lines[0].rejection) {
                app.count(Counted::Conflict);
            }
            ApiError::first_line_refused(lines).into_response()
        }
        _ => {
            if conflict(rejection) {
                app.count(Counted::Conflict);
            }
            ApiError::from(rejection.clone()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::client::wire::{BatchRequest, CreateBatchRequest};

    fn lines_of(body: Value) -> Result<Vec<BatchLine>, Value> {
        let values = body["lines"].as_array().unwrap().clone();
        read_lines(Form::Lines, values).map_err(|error| {
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            error.body().error.details.unwrap()
        })
    }

    fn key(sku: &str) -> RecordKey {
        RecordKey::new("s1", sku).unwrap()
    }

    #[test]
    fn every_form_and_shorthand_reads_as_its_line() {
        let lines = lines_of(json!({"lines": [
            {"op": "create", "storeId": "s1", "sku": "a", "initialQuantity": 5},
            {"op": "adjust", "storeId": "s1", "sku": "a", "delta": -2, "expectedVersion": 1},
            {"op": "set", "storeId": "s1", "sku": "a", "qty": 9},
            {"op": "reserve", "storeId": "s1", "sku": "a", "qty": 1},
            {"op": "reserve", "storeId": "s1", "sku": "a", "qty": 1, "ttlSeconds": 60},
            {"storeId": "s1", "sku": "a", "delta": 3},
            {"storeId": "s1", "sku": "a", "set": 4, "expectedVersion": 7},
        ]}))
        .unwrap();
        assert_eq!(
            lines,
            vec![
                BatchLine::Create {
                    key: key("a"),
                    initial_quantity: 5
                },
                BatchLine::Adjust {
                    key: key("a"),
                    delta: -2,
                    expected_version: Some(1)
                },
                BatchLine::Set {
                    key: key("a"),
                    qty: 9,
                    expected_version: None
                },
                BatchLine::Reserve {
                    key: key("a"),
                    quantity: 1,
                    expected_version: None,
                    ttl_ms: None
                },
                BatchLine::Reserve {
                    key: key("a"),
                    quantity: 1,
                    expected_version: None,
                    ttl_ms: Some(60_000)
                },
                BatchLine::Adjust {
                    key: key("a"),
                    delta: 3,
                    expected_version: None
                },
                BatchLine::Set {
                    key: key("a"),
                    qty: 4,
                    expected_version: Some(7)
                },
            ]
        );
    }

    #[test]
    fn malformed_lines_are_named_by_index_and_nothing_else_is() {
        let details = lines_of(json!({"lines": [
            {"op": "adjust", "storeId": "s1", "sku": "ok", "delta": 1},
            {"op": "delete", "storeId": "s1", "sku": "a"},
            {"op": "adjust", "storeId": "s1", "sku": "not ok", "delta": 1},
            {"op": "reserve", "storeId": "s1", "sku": "a", "qty": 1.5},
            {"op": "create", "storeId": "s1", "sku": "a", "initialQuantity": 1, "delta": 2},
            {"storeId": "s1", "sku": "a"},
            7,
            {"op": "adjust", "storeId": "s1", "sku": "a", "delta": 1, "colour": "red"},
            {"op": "reserve", "storeId": "s1", "sku": "a", "qty": 1, "ttlSeconds": 0},
            {"op": "adjust", "storeId": "s1", "sku": "a", "delta": 1, "expectedVersion": null},
            {"op": "set", "storeId": "s1", "sku": "a"},
        ]}))
        .unwrap_err();
        let indexes: Vec<u64> = details["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|line| line["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, (1..=10).collect::<Vec<u64>>(), "{details}");
        assert_eq!(details["invalidLines"], 10);
        let message = |index: usize| details["lines"][index - 1]["message"].to_string();
        assert!(message(1).contains("unknown op"), "{}", message(1));
        assert!(message(3).contains("integer"), "{}", message(3));
        assert!(message(4).contains("takes no delta"), "{}", message(4));
        assert!(message(6).contains("JSON object"), "{}", message(6));
        assert!(message(7).contains("colour"), "{}", message(7));
        assert!(message(10).contains("needs qty"), "{}", message(10));
    }

    #[test]
    fn more_holds_than_a_batch_may_make_are_refused_before_proposing() {
        let raw = |holds: usize| {
            let lines: Vec<Value> = (0..holds)
                .map(|n| json!({"op": "reserve", "storeId": "s1", "sku": format!("h{n}"), "qty": 1, "ttlSeconds": 60}))
                .chain([json!({"op": "reserve", "storeId": "s1", "sku": "plain", "qty": 1})])
                .collect();
            let mut headers = axum::http::HeaderMap::new();
            headers.insert("content-type", "application/json".parse().unwrap());
            RawRequest {
                method: axum::http::Method::POST,
                path_and_query: "/api/inventory/batch".into(),
                headers,
                body: json!({ "lines": lines }).to_string().into_bytes(),
                client_scope: None,
            }
        };
        assert!(parse(&raw(BATCH_HOLD_LINES_MAX)).is_ok());
        let error = parse(&raw(BATCH_HOLD_LINES_MAX + 1)).unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(
            error.message().contains("ttlSeconds"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn a_400_lists_a_bounded_number_of_lines_and_counts_them_all() {
        let bad: Vec<Value> = (0..BATCH_LINES_MAX)
            .map(|_| json!({"op": "nope", "storeId": "s1", "sku": "a"}))
            .collect();
        let details = lines_of(json!({ "lines": bad })).unwrap_err();
        assert_eq!(
            details["lines"].as_array().unwrap().len(),
            INVALID_LINES_LISTED_MAX
        );
        assert_eq!(details["invalidLines"], BATCH_LINES_MAX);
    }

    #[test]
    fn what_the_client_sends_is_what_the_server_reads() {
        let sent = BatchRequest {
            lines: vec![
                BatchLineRequest::Reserve {
                    store_id: "s1".into(),
                    sku: "a".into(),
                    qty: 2,
                    expected_version: None,
                    ttl_seconds: Some(30),
                },
                BatchLineRequest::Set {
                    store_id: "s1".into(),
                    sku: "b".into(),
                    qty: 0,
                    expected_version: Some(3),
                },
            ],
            error_policy: Some(BatchErrorPolicy::RejectFailedLines),
        };
        let text = serde_json::to_string(&sent).unwrap();
        assert!(text.contains(r#""op":"reserve""#), "{text}");
        assert!(
            text.contains(r#""errorPolicy":"rejectFailedLines""#),
            "{text}"
        );
        let read: BatchRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(read, sent);
        let legacy = CreateBatchRequest {
            records: vec![CreateRequest {
                sku: "a".into(),
                store_id: "s1".into(),
                initial_quantity: 1,
            }],
        };
        let value = serde_json::to_value(&legacy).unwrap();
        let records = value["records"].as_array().unwrap().clone();
        assert_eq!(
            read_lines(Form::Records, records).unwrap(),
            vec![BatchLine::Create {
                key: key("a"),
                initial_quantity: 1
            }]
        );
    }

    /// The body limit is computed, not measured: the longest line, compact and pretty-printed,
    /// must fit the budget it is computed from.
    #[test]
    fn ten_thousand_of_the_longest_lines_fit_the_body_limit() {
        use crate::client::wire::{BATCH_ENVELOPE_BYTES_MAX, BATCH_LINE_BYTES_MAX};
        use crate::inventory::{SKU_LENGTH_MAX, STORE_ID_LENGTH_MAX};
        let longest = json!({
            "op": "reserve",
            "storeId": "s".repeat(STORE_ID_LENGTH_MAX),
            "sku": "k".repeat(SKU_LENGTH_MAX),
            "qty": i64::MAX,
            "expectedVersion": i64::MAX,
            "ttlSeconds": crate::client::wire::TTL_SECONDS_MAX,
        });
        assert!(line(longest.clone()).is_ok());
        let compact = serde_json::to_string(&longest).unwrap().len();
        assert_eq!(compact, 192, "the figure the limit's docs give");
        let one_pretty = serde_json::to_string_pretty(&json!({ "lines": [longest.clone()] }))
            .unwrap()
            .len();
        let lines = vec![longest; BATCH_LINES_MAX];
        let body = json!({ "lines": lines, "errorPolicy": "rejectFailedLines" });
        let pretty = serde_json::to_string_pretty(&body).unwrap().len();
        assert!(pretty <= BATCH_BODY_LIMIT_BYTES, "{pretty} bytes");
        assert!(one_pretty <= BATCH_LINE_BYTES_MAX + BATCH_ENVELOPE_BYTES_MAX);
        assert_eq!(
            BATCH_BODY_LIMIT_BYTES,
            BATCH_LINES_MAX * BATCH_LINE_BYTES_MAX + BATCH_ENVELOPE_BYTES_MAX
        );
    }
}
