//! Request bodies of the client API, with the seed's input rules built into deserialization.
//!
//! The seed validated bodies with zod: `delta` an integer of any sign, `qty` and
//! `initialQuantity` integers >= 0, `expectedVersion` an integer >= 1 *when present* (`null` is
//! not "absent": it is refused). "Integer" is JavaScript's: a JSON number without a fractional
//! part, so `5.0` and `5e0` are 5. stockraft keeps these rules exactly, with one bound the seed
//! did not have: integers must fit in 64 bits (the seed accepted `1e20` as an imprecise float;
//! stockraft refuses it with 400 rather than store a wrong number).
//!
//! Serialization is the client's side: absent optional fields are omitted, never sent as
//! `null` (which the server refuses).
//!
//! Answers are here too: the server renders them from these types and clients parse them into
//! the same types, so the two cannot drift apart.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::NodeId;

/// `POST /api/inventory`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateRequest {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,50}$")]
    pub sku: String,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,20}$")]
    pub store_id: String,
    #[serde(deserialize_with = "integer::non_negative")]
    #[schema(minimum = 0)]
    pub initial_quantity: i64,
}

/// `POST /api/inventory/batch` in its first form, kept for the callers that send it: `records`
/// (1 to `inventory::BATCH_LINES_MAX`), created together or not at all. The server reads it as
/// a batch of create lines under `rejectEverything` and answers [`BatchCreated`] (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateBatchRequest {
    #[schema(min_items = 1, max_items = 10000)]
    pub records: Vec<CreateRequest>,
}

/// The answer to a batch create (the `records` form): every record was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchCreated {
    pub created: usize,
}

/// Longest line of a batch body the route's body limit makes room for, in bytes: the longest
/// line written compactly (a reserve with the longest ids, 20-digit integers and every optional
/// field) is 192 bytes; the rest is room for whitespace (pretty-printed with two-space indents,
/// as serde_json and `jq` write it, that line takes about 250) and the comma between lines.
/// `api::batch`'s tests render both.
pub const BATCH_LINE_BYTES_MAX: usize = 256;
/// The envelope around the lines (`{"lines": [...], "errorPolicy": "rejectFailedLines"}` and
/// whitespace), in bytes.
pub const BATCH_ENVELOPE_BYTES_MAX: usize = 4096;
/// The body limit of `POST /api/inventory/batch`, in bytes (2,564,096: about 2.45 MiB): room
/// for `inventory::BATCH_LINES_MAX` lines of [`BATCH_LINE_BYTES_MAX`] bytes. Bodies over it are
/// refused with 413 before they are parsed. Every other route keeps `api.body_limit_bytes`
/// (a node configured with a larger one uses that here too).
pub const BATCH_BODY_LIMIT_BYTES: usize =
    crate::inventory::BATCH_LINES_MAX * BATCH_LINE_BYTES_MAX + BATCH_ENVELOPE_BYTES_MAX;

/// What a batch does when some lines cannot be applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum BatchErrorPolicy {
    /// All lines or none: one failing line refuses the batch, naming every failing line.
    #[default]
    RejectEverything,
    /// Each line applies or fails on its own, in order.
    RejectFailedLines,
}

/// `POST /api/inventory/batch`: 1 to `inventory::BATCH_LINES_MAX` lines, applied in order in
/// one Raft entry (a line sees the effect of the lines before it). The server reads each line
/// on its own ([`BatchLineRequest`]'s rules) so that a 400 names every malformed line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchRequest {
    #[schema(min_items = 1, max_items = 10000)]
    pub lines: Vec<BatchLineRequest>,
    /// `rejectEverything` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error_policy: Option<BatchErrorPolicy>,
}

/// One line of a batch, by `op`. Besides these forms the server accepts two shorthands: a line
/// without `op` that has `delta` is an adjust, and `{storeId, sku, set: N}` is a set to `N`.
/// Integers follow the single routes' rules (`qty` and `initialQuantity` >= 0, `delta` any
/// sign, `expectedVersion` >= 1 when present, `ttlSeconds` 1 to 604,800).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(
    tag = "op",
    rename_all = "camelCase",
    deny_unknown_fields,
    try_from = "batch_line::Fields"
)]
pub enum BatchLineRequest {
    /// Create a record (refused if it exists).
    #[serde(rename_all = "camelCase")]
    Create {
        #[schema(pattern = "^[A-Za-z0-9._-]{1,20}$")]
        store_id: String,
        #[schema(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        sku: String,
        #[schema(minimum = 0)]
        initial_quantity: i64,
    },
    /// Add `delta` to the available quantity.
    #[serde(rename_all = "camelCase")]
    Adjust {
        #[schema(pattern = "^[A-Za-z0-9._-]{1,20}$")]
        store_id: String,
        #[schema(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        sku: String,
        delta: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false, minimum = 1)]
        expected_version: Option<u64>,
    },
    /// Make the available quantity `qty`, creating the record if it is missing.
    #[serde(rename_all = "camelCase")]
    Set {
        #[schema(pattern = "^[A-Za-z0-9._-]{1,20}$")]
        store_id: String,
        #[schema(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        sku: String,
        #[schema(minimum = 0)]
        qty: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false, minimum = 1)]
        expected_version: Option<u64>,
    },
    /// Take `qty` units, or with `ttlSeconds` hold them (the answer's line names the
    /// reservation), as the reserve route does.
    #[serde(rename_all = "camelCase")]
    Reserve {
        #[schema(pattern = "^[A-Za-z0-9._-]{1,20}$")]
        store_id: String,
        #[schema(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        sku: String,
        #[schema(minimum = 0)]
        qty: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false, minimum = 1)]
        expected_version: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false, minimum = 1, maximum = 604800)]
        ttl_seconds: Option<u64>,
    },
}

impl BatchLineRequest {
    /// The line's record: `(storeId, sku)`.
    pub fn ids(&self) -> (&str, &str) {
        match self {
            BatchLineRequest::Create { store_id, sku, .. }
            | BatchLineRequest::Adjust { store_id, sku, .. }
            | BatchLineRequest::Set { store_id, sku, .. }
            | BatchLineRequest::Reserve { store_id, sku, .. } => (store_id, sku),
        }
    }
}

/// How a batch line is read: every field any form may carry, then the form its fields make.
mod batch_line {
    use super::{integer, BatchLineRequest, Deserialize};

    /// A line as sent. `op` is kept as text so that an unknown op is named in the 400.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    pub struct Fields {
        #[serde(default)]
        op: Option<String>,
        store_id: String,
        sku: String,
        #[serde(default, deserialize_with = "integer::some_non_negative")]
        initial_quantity: Option<i64>,
        #[serde(default, deserialize_with = "integer::some_any_sign")]
        delta: Option<i64>,
        #[serde(default, deserialize_with = "integer::some_non_negative")]
        qty: Option<i64>,
        #[serde(default, deserialize_with = "integer::some_non_negative")]
        set: Option<i64>,
        #[serde(default, deserialize_with = "integer::version")]
        expected_version: Option<u64>,
        #[serde(default, deserialize_with = "integer::ttl_seconds")]
        ttl_seconds: Option<u64>,
    }

    impl Fields {
        /// The names of the fields present that `allowed` does not list.
        fn extra(&self, allowed: &[&str]) -> Vec<&'static str> {
            let present = [
                ("initialQuantity", self.initial_quantity.is_some()),
                ("delta", self.delta.is_some()),
                ("qty", self.qty.is_some()),
                ("set", self.set.is_some()),
                ("expectedVersion", self.expected_version.is_some()),
                ("ttlSeconds", self.ttl_seconds.is_some()),
            ];
            present
                .into_iter()
                .filter(|(name, is_present)| *is_present && !allowed.contains(name))
                .map(|(name, _)| name)
                .collect()
        }
    }

    /// A required field, or the error naming it.
    fn required<T>(value: Option<T>, name: &str, form: &str) -> Result<T, String> {
        value.ok_or_else(|| format!("{form} needs {name}"))
    }

    impl TryFrom<Fields> for BatchLineRequest {
        type Error = String;

        fn try_from(fields: Fields) -> Result<Self, String> {
            let op = match fields.op.as_deref() {
                Some(op) => op.to_owned(),
                None if fields.delta.is_some() => "adjust".to_owned(),
                None if fields.set.is_some() => "set (shorthand)".to_owned(),
                None => {
                    return Err(
                        "a line needs op (create, adjust, set or reserve), or delta \
                        (an adjust), or set (a set)"
                            .to_owned(),
                    )
                }
            };
            let allowed: &[&str] = match op.as_str() {
                "create" => &["initialQuantity"],
                "adjust" => &["delta", "expectedVersion"],
                "set" => &["qty", "expectedVersion"],
                "set (shorthand)" => &["set", "expectedVersion"],
                "reserve" => &["qty", "expectedVersion", "ttlSeconds"],
                other => {
                    return Err(format!(
                        "unknown op {other:?}: expected create, adjust, set or reserve"
                    ))
                }
            };
            let extra = fields.extra(allowed);
            if !extra.is_empty() {
                return Err(format!("{op} takes no {}", extra.join(", ")));
            }
            let form = format!("{op} line");
            let Fields { store_id, sku, .. } = fields;
            Ok(match op.as_str() {
                "create" => BatchLineRequest::Create {
                    store_id,
                    sku,
                    initial_quantity: required(fields.initial_quantity, "initialQuantity", &form)?,
                },
                "adjust" => BatchLineRequest::Adjust {
                    store_id,
                    sku,
                    delta: required(fields.delta, "delta", &form)?,
                    expected_version: fields.expected_version,
                },
                "set" => BatchLineRequest::Set {
                    store_id,
                    sku,
                    qty: required(fields.qty, "qty", &form)?,
                    expected_version: fields.expected_version,
                },
                "set (shorthand)" => BatchLineRequest::Set {
                    store_id,
                    sku,
                    qty: required(fields.set, "set", &form)?,
                    expected_version: fields.expected_version,
                },
                _ => BatchLineRequest::Reserve {
                    store_id,
                    sku,
                    qty: required(fields.qty, "qty", &form)?,
                    expected_version: fields.expected_version,
                    ttl_seconds: fields.ttl_seconds,
                },
            })
        }
    }
}

/// The answer to a `rejectEverything` batch that applied: one result per line, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchApplied {
    pub results: Vec<BatchLineApplied>,
}

/// One line of a [`BatchApplied`]: the record after the line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchLineApplied {
    /// The line's position in the request, from 0.
    pub index: usize,
    pub record: RecordBody,
    /// A hold's reservation (a reserve line with `ttlSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reservation_id: Option<String>,
}

/// The answer to a `rejectFailedLines` batch: how many lines applied and failed, and each
/// line's result in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchLinesOutcome {
    pub applied: usize,
    pub failed: usize,
    pub results: Vec<BatchLineOutcome>,
}

/// Whether one line of a `rejectFailedLines` batch applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum BatchLineStatus {
    Ok,
    Failed,
}

/// One line of a [`BatchLinesOutcome`]: `record` (and a hold's `reservationId`) when it
/// applied, `error` when it failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchLineOutcome {
    pub index: usize,
    pub status: BatchLineStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub record: Option<RecordBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reservation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<BatchLineError>,
}

/// Why one line failed: the code and message the single route would answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}

/// The 200 answer of a batch of lines, by its error policy (the two shapes are told apart by
/// `applied`, which only `rejectFailedLines` answers carry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BatchAnswer {
    Applied(BatchApplied),
    Lines(BatchLinesOutcome),
}

/// `POST /api/inventory/stores/:storeId/inventory/:sku`: the ids come from the path; when the
/// body names them too, they must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CreateAtPathRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._-]{1,50}$")]
    pub sku: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[A-Za-z0-9._-]{1,20}$")]
    pub store_id: Option<String>,
    #[serde(deserialize_with = "integer::non_negative")]
    #[schema(minimum = 0)]
    pub initial_quantity: i64,
}

/// `POST .../:sku/adjust`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdjustRequest {
    /// Any sign; 0 makes a new version and moves no stock (as in the seed).
    #[serde(deserialize_with = "integer::any_sign")]
    pub delta: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer::version"
    )]
    #[schema(nullable = false, minimum = 1)]
    pub expected_version: Option<u64>,
}

/// `POST .../:sku/reserve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReserveRequest {
    /// >= 0; 0 makes a new version and takes no stock (as in the seed).
    #[serde(deserialize_with = "integer::non_negative")]
    #[schema(minimum = 0)]
    pub qty: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer::version"
    )]
    #[schema(nullable = false, minimum = 1)]
    pub expected_version: Option<u64>,
    /// Hold the units for this many seconds (1 to 604,800: 7 days) instead of taking them for
    /// good: the answer adds `reservationId`. Absent: the seed's plain reserve.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer::ttl_seconds"
    )]
    #[schema(nullable = false, minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
}

/// Longest hold a client may ask for, in seconds: `inventory::HOLD_TTL_MS_MAX` (7 days).
pub const TTL_SECONDS_MAX: u64 = 604_800;

/// One line of a cart: units of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CartLineRequest {
    #[schema(pattern = "^[A-Za-z0-9._-]{1,20}$")]
    pub store_id: String,
    #[schema(pattern = "^[A-Za-z0-9._-]{1,50}$")]
    pub sku: String,
    /// Units to hold: >= 1.
    #[serde(deserialize_with = "integer::positive")]
    #[schema(minimum = 1)]
    pub qty: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer::version"
    )]
    #[schema(nullable = false, minimum = 1)]
    pub expected_version: Option<u64>,
}

/// `POST /api/reservations`: hold every line (1 to `inventory::CART_LINES_MAX`, one per record)
/// or none, as one reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CartRequest {
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<CartLineRequest>,
    /// Seconds to hold (1 to 604,800); absent: the node's `reservations.default_ttl_s`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "integer::ttl_seconds"
    )]
    #[schema(nullable = false, minimum = 1, maximum = 604800)]
    pub ttl_seconds: Option<u64>,
}

/// One line of a reservation, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationLineBody {
    pub store_id: String,
    pub sku: String,
    pub qty: i64,
}

/// A reservation: `held` until committed, released or expired (each at most once). Times are
/// log time, ISO-8601 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationBody {
    /// `rsv-<log index>-<number>`.
    #[schema(pattern = "^rsv-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)$")]
    pub id: String,
    /// `held`, `committed`, `released` or `expired`.
    pub status: String,
    pub lines: Vec<ReservationLineBody>,
    pub created_at: String,
    pub updated_at: String,
    /// From this time on it can no longer be committed or released.
    pub expires_at: String,
}

/// The sums over a SKU's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub qty: i64,
    pub reserved: i64,
    pub on_hand: i64,
}

/// `GET /api/inventory/skus/:sku`: every store's record of one SKU, ordered by store id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkuView {
    pub sku: String,
    pub stores: Vec<RecordBody>,
    pub totals: Totals,
}

/// `GET /api/inventory/stores/:storeId`: a page of a store's records, ordered by SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorePage {
    pub items: Vec<RecordBody>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

/// One event of the feed: `{seq, logIndex, type, storeId, sku, qty, reserved, delta?, version,
/// reservationId?, idempotencyKey?, at}` (absent optionals are left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventBody {
    /// Dense from 1, the same on every node: the cursor (`after`, `Last-Event-ID`).
    pub seq: u64,
    /// The Raft log entry that made the change (a write's answer carries it too).
    pub log_index: u64,
    /// created, adjusted, reserved, held, committed, released or expired.
    #[serde(rename = "type")]
    pub kind: String,
    pub store_id: String,
    pub sku: String,
    /// The record's available quantity after the change.
    pub qty: i64,
    /// The record's held units after the change.
    pub reserved: i64,
    /// How much the available quantity moved for this event (absent for created, committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<i64>,
    /// The record's version after the change.
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Log time of the change, as records' times are rendered.
    pub at: String,
}

/// `GET /api/events`: a page of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    pub events: Vec<EventBody>,
    /// Pass as `after` for the next page; `null` when this page reached the head (then poll
    /// with the last event's seq, or stream).
    pub next: Option<u64>,
    /// The newest seq on the node that answered, when it answered.
    pub head: u64,
}

/// `POST /api/cluster/learners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddLearnerRequest {
    pub id: NodeId,
    /// The new node's `host:port`.
    pub addr: String,
    /// Answer only once the learner has caught up.
    #[serde(default)]
    pub wait: bool,
}

/// `POST /api/cluster/promote` (`keepAsLearners` unused) and `POST /api/cluster/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MembersRequest {
    pub ids: BTreeSet<NodeId>,
    /// On remove: demote voters to learners instead of removing them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_as_learners: bool,
}

/// `POST /api/cluster/transfer-leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransferLeaderRequest {
    pub to: NodeId,
}

/// `POST /api/sync/start` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncStartRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1000, maximum = 86400000)]
    pub interval_ms: Option<u64>,
}

/// `{"success": true, "data": ...}`: how most answers are wrapped (as in the seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self {
        Self {
            success: true,
            data,
        }
    }
}

/// A record as the API shows it (the seed's schema). Times are ISO-8601 UTC with milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordBody {
    pub sku: String,
    pub store_id: String,
    /// Available: units that can still be reserved or held.
    pub qty: i64,
    /// Units in live holds (0 for a record never held).
    pub reserved: i64,
    /// `qty + reserved`: units physically in the store.
    pub on_hand: i64,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// The answer to an adjust or a reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangeAnswer {
    pub success: bool,
    pub new_quantity: i64,
    pub new_version: u64,
    pub record: RecordBody,
    /// A hold's reservation (`rsv-<log index>-<number>`); absent on a plain reserve or adjust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reservation_id: Option<String>,
}

/// Every error answer: `{"success": false, "error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub success: bool,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub name: String,
    pub message: String,
    /// Stable machine-readable code, e.g. `CONFLICT_ERROR`, `NO_LEADER`.
    pub code: String,
    pub status_code: u16,
    pub timestamp: String,
    /// Facts about the refusal: `currentVersion`, `expectedVersion`, `requested`, `available`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// Error codes a client acts on.
pub mod codes {
    pub const VALIDATION_ERROR: &str = "VALIDATION_ERROR";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const CONFLICT_ERROR: &str = "CONFLICT_ERROR";
    pub const INSUFFICIENT_STOCK: &str = "INSUFFICIENT_STOCK";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    /// No leader answered within the deadline: nothing was applied.
    pub const NO_LEADER: &str = "NO_LEADER";
    /// The write may or may not have been applied.
    pub const OUTCOME_UNKNOWN: &str = "OUTCOME_UNKNOWN";
    /// The node is outside the cluster's membership: nothing was done.
    pub const NOT_A_MEMBER: &str = "NOT_A_MEMBER";
    pub const NOT_READY: &str = "NOT_READY";
    /// A write refused (507) because the node that received it is short of disk space: its
    /// disk-space alarm is raised. Nothing was proposed; the alarm clears by itself once space
    /// is freed.
    pub const INSUFFICIENT_STORAGE: &str = "INSUFFICIENT_STORAGE";
    /// Readiness (503): this node's disk-space alarm is raised.
    pub const NO_SPACE: &str = "NO_SPACE";
    /// Liveness (503): Raft stopped on this node (the process is about to exit).
    pub const RAFT_STOPPED: &str = "RAFT_STOPPED";
    pub const MEMBERSHIP_CHANGE_REFUSED: &str = "MEMBERSHIP_CHANGE_REFUSED";
    /// 503: the node is at its limit of requests or proposals in flight; nothing was done.
    pub const OVERLOADED: &str = "OVERLOADED";
    /// 503: the request took longer than `api.request_timeout_ms`; a write's outcome is unknown.
    pub const TIMEOUT: &str = "TIMEOUT";
    /// 429: this client is over its rate limit; nothing was done.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// 409 on a Raft RPC: the sender belongs to another cluster (`identity`).
    pub const WRONG_CLUSTER: &str = "WRONG_CLUSTER";
    /// 409 on a Raft RPC: the sender or the receiver is not the incarnation of that member its
    /// peer knows: its data directory was wiped while it was a member (`identity`).
    pub const WRONG_INCARNATION: &str = "WRONG_INCARNATION";
    /// 404: no such reservation (never made, or ended and forgotten after its retention).
    pub const RESERVATION_NOT_FOUND: &str = "RESERVATION_NOT_FOUND";
    /// 409: the reservation's deadline passed: it expired (or will at the next expiry entry).
    pub const RESERVATION_EXPIRED: &str = "RESERVATION_EXPIRED";
    /// 409: the reservation already ended otherwise; `details.status` names how.
    pub const RESERVATION_NOT_HELD: &str = "RESERVATION_NOT_HELD";
    /// 409: the store holds as many reservations as it keeps; `details.max`.
    pub const HOLD_LIMIT_REACHED: &str = "HOLD_LIMIT_REACHED";
    /// A cart refused as a whole (status of the first failing line's cause: 404, 409 or 422);
    /// `details.lines: [{index, storeId, sku, code}]` names every failing line.
    pub const CART_REFUSED: &str = "CART_REFUSED";
    /// A `rejectEverything` batch refused as a whole (status of the first failing line's
    /// cause: 404, 409 or 422); `details.lines: [{index, storeId, sku, code, message}]` names
    /// every failing line.
    pub const BATCH_REFUSED: &str = "BATCH_REFUSED";
    /// 410 on the feed: events after the cursor are no longer kept; `details.oldestSeq` is the
    /// oldest kept (start again after `oldestSeq - 1`, knowing some were missed).
    pub const EVENTS_GONE: &str = "EVENTS_GONE";
    /// 503 on the feed: this node's state predates the feed (see `raft::events`).
    pub const FEED_NOT_STARTED: &str = "FEED_NOT_STARTED";
    /// 503 on the stream: the node serves as many streams as it allows.
    pub const TOO_MANY_SUBSCRIBERS: &str = "TOO_MANY_SUBSCRIBERS";
}

/// A node's Raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

// The one Raft position type: every answer that carries parts of it (`ClusterView`,
// `SyncStatus`, `Barrier`, `Readiness`) is made from one (`app::raft_status_of`) and names each
// part as it does, whatever their JSON spelling.
/// A node's Raft position, as `/api/health` and `/api/metrics` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    pub node_id: NodeId,
    pub role: RaftRole,
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
}

/// A node's disk-space alarm and its last measurement, as `/api/health` and `/api/metrics`
/// report them (`space` explains the alarm).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageStatus {
    /// The alarm is raised: client writes are refused with 507 `INSUFFICIENT_STORAGE`.
    pub no_space: bool,
    /// Why, while it is raised.
    pub reason: Option<String>,
    /// Bytes in this node's data directory at the last measurement (None before the first,
    /// or on a node without a disk to watch).
    pub data_dir_bytes: Option<u64>,
    /// Free bytes of the filesystem holding it at the last measurement.
    pub free_bytes: Option<u64>,
    /// `storage.quota_bytes`.
    pub quota_bytes: u64,
    /// `storage.free_bytes_min`.
    pub free_bytes_min: u64,
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    pub timestamp: String,
    /// Seconds since the process started.
    pub uptime: f64,
    #[serde(flatten)]
    pub raft: RaftStatus,
    pub storage: StorageStatus,
}

/// `GET /api/health/liveness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    pub status: String,
}

/// `GET /api/health/readiness` when ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub status: String,
    pub leader_id: Option<NodeId>,
    pub applied_index: Option<u64>,
}

/// `GET /api/metrics` and `GET /api/health/metrics` (README documents every field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub requests: u64,
    pub errors: u64,
    pub conflicts: u64,
    pub idempotent_hits: u64,
    pub adjust_stock: u64,
    pub reserve_stock: u64,
    pub create_record: u64,
    pub get_inventory: u64,
    pub forwarded: u64,
    pub raft: RaftStatus,
    pub storage: StorageStatus,
    pub log: LogStatus,
    /// This node's applied reservation state; null if it could not be read.
    pub reservations: Option<ReservationCounts>,
    /// The scheduled backups this node wrote while it led (`[backup]`).
    #[serde(default)]
    pub backups: BackupStatus,
}

/// Scheduled backups written by this node (`GET /api/metrics`; `/metrics` has the same as
/// `stockraft_backup_*`). Only the leader writes them, so a follower's figures are those of its
/// own terms as leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// `[backup] dir` is set.
    pub enabled: bool,
    /// Unix time of the last backup written, in seconds; null before the first.
    pub last_success_unix_s: Option<u64>,
    /// Its log index and size.
    pub last_log_index: Option<u64>,
    pub last_size_bytes: Option<u64>,
    /// Backups written, skipped (nothing committed since the last one), and failed (logged).
    pub written: u64,
    pub skipped: u64,
    pub failures: u64,
}

/// How many reservations this node's applied state holds (`GET /api/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationCounts {
    /// Reservations held now (at most 2,000,000: past that a hold is refused).
    pub held: u64,
    /// Ended reservations still remembered (24 h of log time, at most 1,000,000).
    pub ended: u64,
}

/// The Raft log and snapshots on this node's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogStatus {
    /// Bytes in the Raft log's segment files.
    pub wal_bytes: u64,
    pub wal_segments: u64,
    /// Bytes in the snapshot directory (the newest two snapshots, and any transfer in flight).
    pub snapshot_bytes: u64,
    /// The largest snapshot chunk this process has held in memory, sending or receiving.
    pub snapshot_chunk_bytes_peak: u64,
}

/// A member's role in the cluster's membership.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Voter,
    Learner,
}

impl std::fmt::Display for MemberRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        })
    }
}

/// One member, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub id: NodeId,
    pub addr: String,
    pub role: MemberRole,
    /// The leader heard from it recently (`membership::REACHABLE_WITHIN`).
    pub reachable: bool,
    pub matched_index: Option<u64>,
    /// Entries the member is behind the leader's last log index.
    pub lag: u64,
}

/// The cluster as `GET /api/cluster` (and every membership change) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    // `RaftStatus::committed_index`, spelt `commitIndex` here since the first release (a
    // comment, not a doc comment: doc comments become the OpenAPI document's descriptions).
    #[serde(rename = "commitIndex")]
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberView>,
}

/// One member in `GET /api/status`: its entry in the membership, and its own `/api/health`
/// as the node serving the request fetched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub id: NodeId,
    /// Its peer address, as the membership holds it.
    pub addr: String,
    pub role: MemberRole,
    /// Its `/api/health` answered in time (`api::status::MEMBER_HEALTH_TIMEOUT`).
    pub reachable: bool,
    /// Why it did not, when it did not.
    pub error: Option<String>,
    /// Its Raft position as it reports it; null when unreachable.
    pub raft: Option<RaftStatus>,
    /// Its disk-space alarm and data size; null when unreachable.
    pub storage: Option<StorageStatus>,
    /// Entries its log is behind the leader's last log index; null without a leader or an
    /// answer.
    pub lag: Option<u64>,
}

/// `GET /api/status`: every member's own view, gathered by the node asked (the console's
/// cluster panel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The node that gathered this answer.
    pub served_by: NodeId,
    /// The member that reports itself leader (of the highest term among such); null if none.
    pub leader_id: Option<NodeId>,
    /// The highest term any member reports.
    pub term: u64,
    pub voters: u64,
    /// Voters whose health answered.
    pub reachable_voters: u64,
    /// Voters a commit needs (a majority).
    pub quorum: u64,
    /// Voters the cluster can lose and still commit, when all are up (`voters - quorum`).
    pub failure_tolerance: u64,
    /// What an operator must look at now, one sentence each: no leader, a member unreachable,
    /// a disk-space alarm. Empty when all is well.
    pub problems: Vec<String>,
    pub members: Vec<MemberStatus>,
}

/// `GET /api/whoami`: what the caller's token may do, so that a client (the console) offers
/// only what it may.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Whoami {
    /// Client routes need a token (some are configured).
    pub tokens_required: bool,
    /// The name of the token sent; null without one.
    pub token: Option<String>,
    /// The scopes the caller has (`read`, `reserve`, `write`, `admin`): a token's own, every
    /// client scope when no token is configured, none without a token when one is required.
    pub scopes: Vec<String>,
}

/// The periodic snapshot of `/api/sync/start|stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSchedule {
    pub running: bool,
    pub interval_ms: Option<u64>,
}

/// `GET /api/sync/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    pub leader_id: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    // `RaftStatus::committed_index`, spelt `commitIndex` here since the first release (a
    // comment, not a doc comment: doc comments become the OpenAPI document's descriptions).
    #[serde(rename = "commitIndex")]
    pub committed_index: Option<u64>,
    pub members: Vec<MemberView>,
    pub snapshot_schedule: SnapshotSchedule,
}

/// `POST /api/sync/stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStopped {
    pub was_running: bool,
    pub running: bool,
}

/// `POST /api/sync`: this node applied at least `committed_index` (commit when called).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Barrier {
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
}

/// `POST /api/metrics/reset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reset {
    pub reset: bool,
}

/// `POST /api/cluster/snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotTaken {
    pub node_id: NodeId,
    pub snapshot_index: Option<u64>,
}

/// `GET /raft/status`: whether a node holds Raft state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub initialized: bool,
    /// The voters of the membership this node holds (empty before it holds one): a node that
    /// starts on an empty disk refuses to start if it is one of them (`node::start`).
    #[serde(default)]
    pub voters: Vec<NodeId>,
    /// The log index of that membership, to prefer the newest among several answers.
    #[serde(default)]
    pub membership_index: Option<u64>,
}

/// The seed's integer rules, one deserializer per rule. Each reads any JSON value and refuses
/// what is not an integral number in range with a message naming the rule.
mod integer {
    use super::*;
    use serde::de::Error;
    use serde_json::Value;

    /// Bounds of an `i64` as `f64`: `-2^63` is exact, `2^63` is the first value beyond.
    const I64_MIN_F64: f64 = -9_223_372_036_854_775_808.0;
    const I64_END_F64: f64 = 9_223_372_036_854_775_808.0;

    /// The integer a JSON value denotes, if it is an integral number within `i64`.
    pub(super) fn as_i64(value: &Value) -> Option<i64> {
        let Value::Number(number) = value else {
            return None;
        };
        if let Some(integer) = number.as_i64() {
            return Some(integer);
        }
        if number.is_u64() {
            return None; // above i64::MAX
        }
        let float = number.as_f64()?;
        let integral = float.fract() == 0.0 && (I64_MIN_F64..I64_END_F64).contains(&float);
        integral.then_some(float as i64)
    }

    fn integer_at_least<'de, D: Deserializer<'de>>(
        deserializer: D,
        minimum: i64,
        rule: &str,
    ) -> Result<i64, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match as_i64(&value) {
            Some(integer) if integer >= minimum => Ok(integer),
            _ => Err(D::Error::custom(format!("{rule}, got {value}"))),
        }
    }

    pub fn any_sign<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        integer_at_least(deserializer, i64::MIN, "must be an integer (64-bit)")
    }

    pub fn non_negative<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        integer_at_least(deserializer, 0, "must be an integer >= 0 (64-bit)")
    }

    pub fn positive<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
        integer_at_least(deserializer, 1, "must be an integer >= 1 (64-bit)")
    }

    /// An optional integer >= 0, called only when the field is present (`null` refused).
    pub fn some_non_negative<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        non_negative(deserializer).map(Some)
    }

    /// An optional integer of any sign, called only when the field is present.
    pub fn some_any_sign<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        any_sign(deserializer).map(Some)
    }

    /// `ttlSeconds`, called only when the field is present: 1 to [`TTL_SECONDS_MAX`].
    pub fn ttl_seconds<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match as_i64(&value) {
            Some(seconds) if (1..=TTL_SECONDS_MAX as i64).contains(&seconds) => {
                Ok(Some(seconds as u64))
            }
            _ => Err(D::Error::custom(format!(
                "ttlSeconds must be an integer from 1 to {TTL_SECONDS_MAX} when present, got {value}"
            ))),
        }
    }

    /// `expectedVersion`, called only when the field is present: `null` is refused.
    pub fn version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        let rule = "expectedVersion must be an integer >= 1 when present (null is not a version)";
        integer_at_least(deserializer, 1, rule).map(|version| Some(version as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserve(body: &str) -> Result<ReserveRequest, String> {
        serde_json::from_str(body).map_err(|error| error.to_string())
    }

    fn adjust(body: &str) -> Result<AdjustRequest, String> {
        serde_json::from_str(body).map_err(|error| error.to_string())
    }

    #[test]
    fn delta_is_any_integer_including_zero() {
        for (body, delta) in [
            (r#"{"delta":0}"#, 0),
            (r#"{"delta":-7}"#, -7),
            (r#"{"delta":5.0}"#, 5),
            (r#"{"delta":2e1}"#, 20),
            (r#"{"delta":-9223372036854775808}"#, i64::MIN),
        ] {
            assert_eq!(adjust(body).map(|a| a.delta), Ok(delta), "{body}");
        }
        for body in [
            r#"{"delta":1.5}"#,
            r#"{"delta":"5"}"#,
            r#"{"delta":null}"#,
            r#"{"delta":9223372036854775808}"#,
            r#"{"delta":99999999999999999999}"#,
            r#"{"delta":-1e30}"#,
            r#"{"delta":true}"#,
            r#"{}"#,
        ] {
            assert!(adjust(body).is_err(), "{body} was accepted");
        }
    }

    #[test]
    fn qty_is_an_integer_of_zero_or_more() {
        assert_eq!(reserve(r#"{"qty":0}"#).map(|r| r.qty), Ok(0));
        assert_eq!(reserve(r#"{"qty":1}"#).map(|r| r.qty), Ok(1));
        assert_eq!(reserve(r#"{"qty":3.0}"#).map(|r| r.qty), Ok(3));
        for body in [
            r#"{"qty":-1}"#,
            r#"{"qty":0.5}"#,
            r#"{"qty":"1"}"#,
            r#"{"qty":null}"#,
            r#"{"qty":1e30}"#,
            r#"{"qty":99999999999999999999}"#,
        ] {
            let error = reserve(body).expect_err(body);
            assert!(error.contains("integer"), "{body}: {error}");
        }
    }

    #[test]
    fn expected_version_is_an_integer_of_one_or_more_when_present_and_never_null() {
        assert_eq!(
            reserve(r#"{"qty":1}"#).map(|r| r.expected_version),
            Ok(None)
        );
        assert_eq!(
            reserve(r#"{"qty":1,"expectedVersion":1}"#).map(|r| r.expected_version),
            Ok(Some(1))
        );
        assert_eq!(
            reserve(r#"{"qty":1,"expectedVersion":2.0}"#).map(|r| r.expected_version),
            Ok(Some(2))
        );
        for body in [
            r#"{"qty":1,"expectedVersion":null}"#,
            r#"{"qty":1,"expectedVersion":0}"#,
            r#"{"qty":1,"expectedVersion":-1}"#,
            r#"{"qty":1,"expectedVersion":"1"}"#,
            r#"{"qty":1,"expectedVersion":1.5}"#,
            r#"{"qty":1,"expectedVersion":99999999999999999999}"#,
        ] {
            let error = reserve(body).expect_err(body);
            assert!(error.contains("expectedVersion"), "{body}: {error}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(adjust(r#"{"delta":1,"reason":"x"}"#).is_err());
    }

    #[test]
    fn clients_omit_absent_fields_instead_of_sending_null() {
        let body = ReserveRequest {
            qty: 2,
            expected_version: None,
            ttl_seconds: None,
        };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"qty":2}"#);
        let round_trip: ReserveRequest =
            serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap();
        assert_eq!(round_trip, body);
    }
}
