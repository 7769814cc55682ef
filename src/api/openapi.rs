//! `GET /api/openapi.json`: a machine-readable description of every client, admin and health
//! route, for client generators, API explorers and property-based testing (CI runs
//! schemathesis against a live cluster from this document).
//!
//! Bodies are the wire types themselves (`client::wire`, `utoipa::ToSchema` derives), so a
//! field renamed there is renamed here. The operations are described in this one file rather
//! than on each handler: handlers read the raw request (to keep the seed's exact error
//! answers), so their signatures say nothing a generator could use, and one file reads as the
//! API's contract. `tests` below keeps the document and the router in step: every documented
//! operation is routed, and every routed client, admin and health path is documented. The Raft
//! RPC routes (`/raft/*`, bincode between nodes) are not part of this API.
//!
//! Every error answer has the seed's shape (`ErrorBody`); its `code` says which case it is.

use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi};

use crate::client::wire::EventsPage;
use crate::client::wire::{
    AddLearnerRequest, AdjustRequest, Barrier, BatchAnswer, BatchCreated, BatchRequest,
    CartRequest, ChangeAnswer, ClusterView, CreateAtPathRequest, CreateBatchRequest, CreateRequest,
    Envelope, ErrorBody, Health, Liveness, MembersRequest, Metrics, Readiness, RecordBody,
    ReservationBody, ReserveRequest, Reset, SkuView, SnapshotSchedule, SnapshotTaken, StorePage,
    SyncStartRequest, SyncStatus, SyncStopped, TransferLeaderRequest,
};
use crate::client::wire::{ClusterStatus, Whoami};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "stockraft",
        description = "A Raft-replicated inventory store, drop-in for the seed's REST API. \
            Writes may go to any node (followers forward them to the leader); reads are \
            linearizable unless `consistency=local`. Errors: `{success: false, error: {name, \
            message, code, statusCode, timestamp, details?}}`.",
    ),
    paths(
        paths::create_from_body,
        paths::batch,
        paths::get_record,
        paths::create_at_path,
        paths::get_legacy,
        paths::adjust,
        paths::reserve,
        paths::sku_view,
        paths::store_view,
        paths::events,
        paths::events_stream,
        paths::cart,
        paths::get_reservation,
        paths::commit_reservation,
        paths::release_reservation,
        paths::metrics,
        paths::health_metrics,
        paths::metrics_reset,
        paths::prometheus,
        paths::status,
        paths::whoami,
        paths::sync_barrier,
        paths::sync_status,
        paths::sync_start,
        paths::sync_stop,
        paths::cluster,
        paths::add_learner,
        paths::promote,
        paths::remove,
        paths::transfer_leader,
        paths::snapshot,
        paths::backup,
        paths::health,
        paths::liveness,
        paths::readiness,
        paths::openapi,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// The client token (when configured) and the cluster secret (admin routes).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityScheme;
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "clientToken",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "clusterSecret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(
                crate::transport::SECRET_HEADER,
            ))),
        );
    }
}

/// The document as served.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
}

/// Error answers several operations share, in the seed's shape (`ErrorBody`).
fn refusals(list: &[(u16, &str)]) -> std::collections::BTreeMap<String, RefOr<Response>> {
    list.iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

const UNAUTHORIZED: (u16, &str) = (401, "Missing or wrong client token");
const FORBIDDEN: (u16, &str) = (403, "The client token lacks this route's scope");
const RATE_LIMITED: (u16, &str) = (429, "Over the client's rate limit");

/// What any client route may answer besides its own: 401, 403, 429, 503.
struct ClientRefusals;

impl IntoResponses for ClientRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        refusals(&[
            UNAUTHORIZED,
            FORBIDDEN,
            RATE_LIMITED,
            (
                503,
                "No leader, overloaded, timed out or not a member; nothing was done",
            ),
        ])
    }
}

/// What every write may answer besides its own.
struct WriteRefusals;

impl IntoResponses for WriteRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        refusals(&[
            (400, "Invalid ids, body or If-Match"),
            UNAUTHORIZED,
            FORBIDDEN,
            (413, "Body too large"),
            (415, "Not application/json"),
            (422, "Idempotency key reused for another request (or, on adjust and reserve, insufficient stock)"),
            RATE_LIMITED,
            (503, "No leader, overloaded, timed out, not a member, or outcome unknown"),
            (507, "The node is short of disk space"),
        ])
    }
}

/// What the batch route may answer besides its successes.
struct BatchRefusals;

impl IntoResponses for BatchRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        refusals(&[
            (400, "Malformed body or lines (details.lines names them), 0 or over 10,000 lines, over 100 reserve lines with ttlSeconds, If-Match sent; or a line refused as invalid"),
            UNAUTHORIZED,
            FORBIDDEN,
            (404, "BATCH_REFUSED: the first failing line's record does not exist (nothing applied)"),
            (409, "BATCH_REFUSED: the first failing line's version conflict or hold limit (nothing applied); the records form: a record exists"),
            (413, "Body over the route's limit (2564096 bytes)"),
            (415, "Not application/json"),
            (422, "BATCH_REFUSED: the first failing line's insufficient stock or quantity out of range (nothing applied); idempotency key reused for another batch"),
            RATE_LIMITED,
            (503, "No leader, overloaded, timed out, not a member, or outcome unknown"),
            (507, "The node is short of disk space"),
        ])
    }
}

const ADMIN_UNAUTHORIZED: (u16, &str) = (401, "Missing or wrong cluster secret or admin token");
const ADMIN_FORBIDDEN: (u16, &str) = (403, "The client token lacks the admin scope");

/// What every admin route may answer besides its own.
struct AdminRefusals;

impl IntoResponses for AdminRefusals {
    fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
        refusals(&[
            (400, "Invalid body"),
            ADMIN_UNAUTHORIZED,
            ADMIN_FORBIDDEN,
            (409, "Refused by the membership rules"),
            (415, "Not application/json"),
            (503, "No leader, or outcome unknown"),
        ])
    }
}

/// Documentation-only operations: one per route, named after its handler.
#[allow(dead_code)]
mod paths {
    use super::*;

    /// A record's path: the seed's `:storeId` and `:sku`.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct RecordPath {
        /// 1-20 characters of `[A-Za-z0-9._-]`.
        #[param(pattern = "^[A-Za-z0-9._-]{1,20}$")]
        pub store_id: String,
        /// 1-50 characters of `[A-Za-z0-9._-]`.
        #[param(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        pub sku: String,
    }

    /// How a read is served.
    #[derive(utoipa::ToSchema)]
    #[schema(rename_all = "lowercase")]
    pub enum Consistency {
        /// Through the leader, after it confirms its leadership (the default).
        Linearizable,
        /// This node's applied state, possibly behind.
        Local,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct ReadQuery {
        #[param(inline)]
        pub consistency: Option<Consistency>,
    }

    /// Headers of a write.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct WriteHeaders {
        /// Makes the write exactly-once: the same key and request replay the first answer
        /// (`Idempotent-Replayed: true`); the same key with another request is a 422.
        /// 1-255 printable ASCII characters.
        #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
        pub idempotency_key: Option<String>,
        /// Whose idempotency keys these are when no client token is used: keys are remembered
        /// per client (per token when tokens are configured). 1-128 visible ASCII characters.
        #[param(rename = "X-Client-Id", pattern = "^[!-~]{1,128}$")]
        pub x_client_id: Option<String>,
        /// Apply only if the record is at this version: `"3"`, `3`, `W/"3"` or `*`.
        #[param(
            rename = "If-Match",
            pattern = r#"^(\*|W/"[1-9][0-9]{0,15}"|"[1-9][0-9]{0,15}"|[1-9][0-9]{0,15})$"#
        )]
        pub if_match: Option<String>,
    }

    #[utoipa::path(post, path = "/api/inventory", tag = "inventory",
        request_body = CreateRequest, params(WriteHeaders),
        responses(
            (status = 201, description = "Created", body = Envelope<RecordBody>),
            (status = 409, description = "The record exists", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn create_from_body() {}

    /// The batch route's body: lines (with an error policy), or the first form, records
    /// (creates only, all or none).
    #[derive(utoipa::ToSchema)]
    #[serde(untagged)]
    pub enum BatchBody {
        Lines(BatchRequest),
        Records(CreateBatchRequest),
    }

    /// Headers of a batch: no `If-Match` (refused with 400: each line carries its own
    /// `expectedVersion`).
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct BatchHeaders {
        /// Covers the whole batch: a retry with the same key and body replays every line's
        /// result (`Idempotent-Replayed: true`); the same key with another body is a 422.
        /// 1-255 printable ASCII characters.
        #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
        pub idempotency_key: Option<String>,
        /// Whose idempotency keys these are when no client token is used. 1-128 visible ASCII
        /// characters.
        #[param(rename = "X-Client-Id", pattern = "^[!-~]{1,128}$")]
        pub x_client_id: Option<String>,
    }

    /// 1 to 10,000 lines, applied in order in one Raft entry, each seeing the lines before it.
    /// A line is `{op: "create", storeId, sku, initialQuantity}`, `{op: "adjust", storeId, sku,
    /// delta, expectedVersion?}`, `{op: "set", storeId, sku, qty, expectedVersion?}` (creates a
    /// missing record), or `{op: "reserve", storeId, sku, qty, expectedVersion?, ttlSeconds?}`
    /// (a hold with `ttlSeconds`); shorthands: no `op` with `delta` is an adjust, `{storeId,
    /// sku, set: N}` a set. `errorPolicy` `rejectEverything` (default): all lines or none,
    /// answered `{results: [{index, record, reservationId?}]}`, or `BATCH_REFUSED` with the
    /// status of the first failing line's cause and `details.lines: [{index, storeId, sku,
    /// code, message}]`. `rejectFailedLines`: each line on its own, answered `{applied,
    /// failed, results: [{index, status, record? | error: {code, message}}]}`. Malformed lines
    /// are a 400 before anything is proposed, `details.lines: [{index, message}]` (the first
    /// 100) and `details.invalidLines`. The body limit of this route is 2564096 bytes (10,000
    /// lines of 256 bytes: the longest line is 192). The first form, `{records: [{sku,
    /// storeId, initialQuantity}]}`, creates every record or none and answers 201 `{created}`.
    #[utoipa::path(post, path = "/api/inventory/batch", tag = "inventory",
        request_body = BatchBody, params(BatchHeaders),
        responses(
            (status = 200, description = "Lines applied: every line (rejectEverything), or each line's outcome (rejectFailedLines)", body = Envelope<BatchAnswer>),
            (status = 201, description = "The records form: every record created", body = Envelope<BatchCreated>),
            BatchRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn batch() {}

    #[utoipa::path(get, path = "/api/inventory/stores/{store_id}/inventory/{sku}", tag = "inventory",
        params(RecordPath, ReadQuery),
        responses(
            (status = 200, description = "The record itself, with `ETag: \"<version>\"`", body = RecordBody),
            (status = 400, description = "Invalid id or query", body = ErrorBody),
            (status = 404, description = "No such record", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn get_record() {}

    #[utoipa::path(post, path = "/api/inventory/stores/{store_id}/inventory/{sku}", tag = "inventory",
        params(RecordPath, WriteHeaders), request_body = CreateAtPathRequest,
        responses(
            (status = 201, description = "Created", body = Envelope<RecordBody>),
            (status = 409, description = "The record exists", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn create_at_path() {}

    /// Deprecated: the seed's backward-compatibility read (sku first).
    #[utoipa::path(get, path = "/api/inventory/{sku}/{store_id}", tag = "inventory",
        params(RecordPath, ReadQuery),
        responses(
            (status = 200, description = "The record, wrapped", body = Envelope<RecordBody>),
            (status = 400, description = "Invalid id or query", body = ErrorBody),
            (status = 404, description = "No such record", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    #[deprecated]
    fn get_legacy() {}

    #[utoipa::path(post, path = "/api/inventory/stores/{store_id}/inventory/{sku}/adjust", tag = "inventory",
        params(RecordPath, WriteHeaders), request_body = AdjustRequest,
        responses(
            (status = 200, description = "Adjusted", body = ChangeAnswer),
            (status = 404, description = "No such record", body = ErrorBody),
            (status = 409, description = "Version conflict", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn adjust() {}

    /// Without `ttlSeconds`, the seed's reserve: the units leave the available quantity for
    /// good. With it, a hold: they move to `reserved` until the reservation named by
    /// `reservationId` is committed, released or expires.
    #[utoipa::path(post, path = "/api/inventory/stores/{store_id}/inventory/{sku}/reserve", tag = "inventory",
        params(RecordPath, WriteHeaders), request_body = ReserveRequest,
        responses(
            (status = 201, description = "Reserved (held, with `reservationId`, when `ttlSeconds` was sent)", body = ChangeAnswer),
            (status = 404, description = "No such record", body = ErrorBody),
            (status = 409, description = "Version conflict, or HOLD_LIMIT_REACHED", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn reserve() {}

    /// A SKU's path.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SkuPath {
        /// 1-50 characters of `[A-Za-z0-9._-]`.
        #[param(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        pub sku: String,
    }

    /// A store's path.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct StorePath {
        /// 1-20 characters of `[A-Za-z0-9._-]`.
        #[param(pattern = "^[A-Za-z0-9._-]{1,20}$")]
        pub store_id: String,
    }

    /// A page of a store's records.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct PageQuery {
        /// Records in the page: 1-1000, 100 when absent.
        #[param(minimum = 1, maximum = 1000)]
        pub limit: Option<u64>,
        /// The previous page's `next` (an opaque cursor).
        #[param(pattern = "^([0-9a-f]{2}){1,50}$")]
        pub after: Option<String>,
        #[param(inline)]
        pub consistency: Option<Consistency>,
    }

    /// A page of the event feed.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct EventsQuery {
        /// Events with a seq greater than this (a previous page's `next`, or the last seq
        /// seen); 0 when absent.
        #[param(minimum = 0)]
        pub after: Option<u64>,
        /// Events in the page: 1-1000, 100 when absent.
        #[param(minimum = 1, maximum = 1000)]
        pub limit: Option<u64>,
        #[param(inline)]
        pub consistency: Option<Consistency>,
    }

    /// Which events a feed request wants (both feed routes).
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct EventFilterQuery {
        /// Only this store's events.
        #[param(rename = "storeId", pattern = "^[A-Za-z0-9._-]{1,20}$")]
        pub store_id: Option<String>,
        /// Only this SKU's events.
        #[param(pattern = "^[A-Za-z0-9._-]{1,50}$")]
        pub sku: Option<String>,
        /// Only these kinds, comma-separated: created, adjusted, reserved, held, committed,
        /// released, expired.
        #[param(
            rename = "type",
            pattern = "^(created|adjusted|reserved|held|committed|released|expired)(,(created|adjusted|reserved|held|committed|released|expired))*$"
        )]
        pub kind: Option<String>,
    }

    /// One Server-Sent Events frame of the stream, as a client's SSE parser hands it over: the
    /// first carries only `retry` (ms); each event `id` (its seq), `event` (its type) and
    /// `data` (the event's JSON, as `GET /api/events` renders it). Keep-alive comments
    /// (`: head <seq>`) are not frames.
    #[derive(utoipa::ToSchema)]
    #[allow(dead_code)] // a schema only
    pub struct EventStreamFrame {
        pub id: Option<String>,
        pub event: Option<String>,
        pub data: Option<String>,
        pub retry: Option<u64>,
    }

    /// The event feed as Server-Sent Events.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct EventsStreamQuery {
        /// Stream the events with a seq greater than this; 0 when absent. `Last-Event-ID`
        /// wins when sent.
        #[param(minimum = 0)]
        pub after: Option<u64>,
    }

    /// Headers of a stream request.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct EventsStreamHeaders {
        /// The last seq a reconnecting client received (the SSE standard's header); wins over
        /// `after`.
        #[param(rename = "Last-Event-ID", minimum = 0)]
        pub last_event_id: Option<u64>,
    }

    /// A reservation's path.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ReservationPath {
        /// `rsv-<log index>-<number>`, as the hold or cart answered it.
        #[param(pattern = "^rsv-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)$")]
        pub id: String,
    }

    /// Headers of a reservation's commit or release (no body).
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct TransitionHeaders {
        /// As on every write: the same key replays the first answer.
        #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
        pub idempotency_key: Option<String>,
        #[param(rename = "X-Client-Id", pattern = "^[!-~]{1,128}$")]
        pub x_client_id: Option<String>,
    }

    #[utoipa::path(get, path = "/api/inventory/skus/{sku}", tag = "inventory",
        params(SkuPath, ReadQuery),
        responses(
            (status = 200, description = "Every store's record of the SKU (at most 1,000, by store id) and their totals", body = Envelope<SkuView>),
            (status = 400, description = "Invalid SKU or query", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn sku_view() {}

    #[utoipa::path(get, path = "/api/inventory/stores/{store_id}", tag = "inventory",
        params(StorePath, PageQuery),
        responses(
            (status = 200, description = "A page of the store's records by SKU, and the next page's cursor (null on the last)", body = Envelope<StorePage>),
            (status = 400, description = "Invalid store id, limit, cursor or query", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn store_view() {}

    /// The event feed a page at a time: every change, one event per changed record, in `seq`
    /// order (dense, the same on every node). A cursor older than the oldest event kept is a
    /// 410 `EVENTS_GONE` with `details.oldestSeq`: start again after `oldestSeq - 1`, knowing
    /// events were missed.
    #[utoipa::path(get, path = "/api/events", tag = "events",
        params(EventsQuery, EventFilterQuery),
        responses(
            (status = 200, description = "Events after the cursor, the next cursor (null at the head) and the head seq", body = Envelope<EventsPage>),
            (status = 400, description = "Invalid cursor, limit, filter or query", body = ErrorBody),
            (status = 410, description = "EVENTS_GONE: events after the cursor are no longer kept (details.oldestSeq)", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn events() {}

    /// The event feed as Server-Sent Events, from this node's applied state (never forwarded;
    /// a follower streams what it has applied, in seq order). Frames: `retry: 1000` first;
    /// then per event `id: <seq>`, `event: <type>`, `data: <the event's JSON, as in GET
    /// /api/events>`; a comment `: head <last seq>` after each `events.keep_alive_ms` without
    /// one. Resume with `Last-Event-ID` (on any node). The stream ends when retention overtakes
    /// it or the subscriber falls `events.stream_backlog_max` behind: reconnect with the last
    /// id (a cursor no longer kept then answers 410).
    #[utoipa::path(get, path = "/api/events/stream", tag = "events",
        params(EventsStreamQuery, EventFilterQuery, EventsStreamHeaders),
        responses(
            (status = 200, description = "The stream (text/event-stream), until the client or the node ends it", body = EventStreamFrame, content_type = "text/event-stream"),
            (status = 400, description = "Invalid cursor, Last-Event-ID or filter", body = ErrorBody),
            (status = 410, description = "EVENTS_GONE: events after the cursor are no longer kept (details.oldestSeq)", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn events_stream() {}

    /// Hold every line or none, as one reservation (`CART_REFUSED` names every failing line in
    /// `details.lines`, with the status of the first one's cause).
    #[utoipa::path(post, path = "/api/reservations", tag = "reservations",
        request_body = CartRequest, params(WriteHeaders),
        responses(
            (status = 201, description = "Every line held", body = Envelope<ReservationBody>),
            (status = 404, description = "CART_REFUSED: the first failing line's record does not exist", body = ErrorBody),
            (status = 409, description = "CART_REFUSED on a version conflict, or HOLD_LIMIT_REACHED", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn cart() {}

    #[utoipa::path(get, path = "/api/reservations/{id}", tag = "reservations",
        params(ReservationPath, ReadQuery),
        responses(
            (status = 200, description = "The reservation", body = Envelope<ReservationBody>),
            (status = 400, description = "Invalid id or query", body = ErrorBody),
            (status = 404, description = "RESERVATION_NOT_FOUND (never made, or forgotten after its retention)", body = ErrorBody),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn get_reservation() {}

    /// The held units leave: `reserved` and `onHand` drop. Answered 200 again once committed.
    #[utoipa::path(post, path = "/api/reservations/{id}/commit", tag = "reservations",
        params(ReservationPath, TransitionHeaders),
        responses(
            (status = 200, description = "Committed", body = Envelope<ReservationBody>),
            (status = 404, description = "RESERVATION_NOT_FOUND", body = ErrorBody),
            (status = 409, description = "RESERVATION_NOT_HELD (details.status) or RESERVATION_EXPIRED", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn commit_reservation() {}

    /// The held units come back to `qty`. Answered 200 again once released.
    #[utoipa::path(post, path = "/api/reservations/{id}/release", tag = "reservations",
        params(ReservationPath, TransitionHeaders),
        responses(
            (status = 200, description = "Released", body = Envelope<ReservationBody>),
            (status = 404, description = "RESERVATION_NOT_FOUND", body = ErrorBody),
            (status = 409, description = "RESERVATION_NOT_HELD (details.status) or RESERVATION_EXPIRED", body = ErrorBody),
            WriteRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn release_reservation() {}

    #[utoipa::path(get, path = "/api/metrics", tag = "operations",
        responses(
            (status = 200, description = "This node's counters and Raft position", body = Envelope<Metrics>),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn metrics() {}

    #[utoipa::path(get, path = "/api/health/metrics", tag = "operations",
        responses(
            (status = 200, description = "The same as /api/metrics (the seed's path)", body = Envelope<Metrics>),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn health_metrics() {}

    #[utoipa::path(post, path = "/api/metrics/reset", tag = "admin",
        responses(
            (status = 200, description = "Counters zeroed", body = Envelope<Reset>),
            (status = 401, description = "Missing or wrong cluster secret or admin token", body = ErrorBody),
            (status = 403, description = "The client token lacks the admin scope", body = ErrorBody),
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn metrics_reset() {}

    #[utoipa::path(get, path = "/metrics", tag = "operations",
        responses(
            (status = 200, description = "Every series in the Prometheus text format",
             body = String, content_type = "application/openmetrics-text"),
        ))]
    fn prometheus() {}

    #[utoipa::path(get, path = "/api/status", tag = "operations",
        responses(
            (status = 200, description = "Every member's own health (role, term, log, commit and applied indexes, disk-space alarm and data size) as the asked node gathered it, each member's lag behind the leader, the failure tolerance and the problems to look at now; a member that did not answer within a second is listed unreachable", body = Envelope<ClusterStatus>),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn status() {}

    #[utoipa::path(get, path = "/api/whoami", tag = "health",
        responses(
            (status = 200, description = "The token sent (its name) and the scopes it carries; without a token, every client scope while no token is configured and none once one is", body = Envelope<Whoami>),
            (status = 401, description = "An unknown token", body = ErrorBody),
        ),
        security((), ("clientToken" = [])))]
    fn whoami() {}

    #[utoipa::path(post, path = "/api/sync", tag = "operations",
        responses(
            (status = 200, description = "This node applied everything committed when called", body = Envelope<Barrier>),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn sync_barrier() {}

    #[utoipa::path(get, path = "/api/sync/status", tag = "operations",
        responses(
            (status = 200, description = "Replication as the leader sees it", body = Envelope<SyncStatus>),
            ClientRefusals,
        ),
        security((), ("clientToken" = [])))]
    fn sync_status() {}

    #[utoipa::path(post, path = "/api/sync/start", tag = "admin",
        request_body(content = Option<SyncStartRequest>, description = "Optional"),
        responses(
            (status = 200, description = "Periodic snapshots running on this node", body = Envelope<SnapshotSchedule>),
            (status = 400, description = "Invalid body", body = ErrorBody),
            (status = 401, description = "Missing or wrong cluster secret or admin token", body = ErrorBody),
            (status = 403, description = "The client token lacks the admin scope", body = ErrorBody),
            (status = 413, description = "Body too large", body = ErrorBody),
            (status = 415, description = "Not application/json", body = ErrorBody),
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn sync_start() {}

    #[utoipa::path(post, path = "/api/sync/stop", tag = "admin",
        responses(
            (status = 200, description = "Periodic snapshots stopped on this node", body = Envelope<SyncStopped>),
            (status = 401, description = "Missing or wrong cluster secret or admin token", body = ErrorBody),
            (status = 403, description = "The client token lacks the admin scope", body = ErrorBody),
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn sync_stop() {}

    #[utoipa::path(get, path = "/api/cluster", tag = "admin",
        responses(
            (status = 200, description = "Members, roles, lag", body = Envelope<ClusterView>),
            (status = 401, description = "Missing or wrong cluster secret or admin token", body = ErrorBody),
            (status = 403, description = "The client token lacks the admin scope", body = ErrorBody),
            (status = 503, description = "No leader", body = ErrorBody),
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn cluster() {}

    #[utoipa::path(post, path = "/api/cluster/learners", tag = "admin",
        request_body = AddLearnerRequest,
        responses(
            (status = 200, description = "Added as a learner", body = Envelope<ClusterView>),
            AdminRefusals,
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn add_learner() {}

    #[utoipa::path(post, path = "/api/cluster/promote", tag = "admin",
        request_body = MembersRequest,
        responses(
            (status = 200, description = "Promoted to voters", body = Envelope<ClusterView>),
            AdminRefusals,
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn promote() {}

    #[utoipa::path(post, path = "/api/cluster/remove", tag = "admin",
        request_body = MembersRequest,
        responses(
            (status = 200, description = "Removed (or demoted to learners)", body = Envelope<ClusterView>),
            AdminRefusals,
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn remove() {}

    #[utoipa::path(post, path = "/api/cluster/transfer-leader", tag = "admin",
        request_body = TransferLeaderRequest,
        responses(
            (status = 200, description = "Leadership moved", body = Envelope<ClusterView>),
            AdminRefusals,
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn transfer_leader() {}

    #[utoipa::path(post, path = "/api/cluster/snapshot", tag = "admin",
        responses(
            (status = 200, description = "A snapshot built on this node, the log behind it purged", body = Envelope<SnapshotTaken>),
            (status = 401, description = "Missing or wrong cluster secret or admin token", body = ErrorBody),
            (status = 403, description = "The client token lacks the admin scope", body = ErrorBody),
            (status = 503, description = "Raft unavailable, or the build did not finish in time", body = ErrorBody),
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn snapshot() {}

    #[utoipa::path(get, path = "/api/admin/backup", tag = "admin",
        responses(
            (status = 200, description = "A backup file (application/octet-stream, README \"Backup and restore\"): the state as of a committed index at or after the commit index when the request began; streamed, cut short if taking it fails (the file's checksum then fails)", content_type = "application/octet-stream"),
            (status = 401, description = "Missing or wrong cluster secret or admin token", body = ErrorBody),
            (status = 403, description = "The client token lacks the admin scope", body = ErrorBody),
            (status = 503, description = "No leader, not caught up, or the snapshot did not finish in time", body = ErrorBody),
        ),
        security(("clusterSecret" = []), ("clientToken" = [])))]
    fn backup() {}

    #[utoipa::path(get, path = "/api/health", tag = "health",
        responses((status = 200, description = "Always, while the process serves", body = Envelope<Health>)))]
    fn health() {}

    #[utoipa::path(get, path = "/api/health/liveness", tag = "health",
        responses(
            (status = 200, description = "The process serves and its Raft runs", body = Envelope<Liveness>),
            (status = 503, description = "RAFT_STOPPED: the process is about to exit", body = ErrorBody),
        ))]
    fn liveness() {}

    #[utoipa::path(get, path = "/api/health/readiness", tag = "health",
        responses(
            (status = 200, description = "Disk space for writes, a leader known, everything committed applied", body = Envelope<Readiness>),
            (status = 503, description = "NO_SPACE or NOT_READY", body = ErrorBody),
        ))]
    fn readiness() {}

    #[utoipa::path(get, path = "/api/openapi.json", tag = "health",
        responses((status = 200, description = "This document", content_type = "application/json")))]
    fn openapi() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_with_every_body_type_resolved() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        // Every `$ref` points at a schema the document holds.
        let text = document();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        let reserve = &doc["paths"]["/api/inventory/stores/{store_id}/inventory/{sku}/reserve"];
        assert!(reserve["post"]["responses"]["201"].is_object());
    }

    /// utoipa takes only literals in its attributes: this keeps them equal to the rules the
    /// server applies.
    #[test]
    fn the_documented_limits_are_the_ones_the_server_applies() {
        use crate::inventory::{BATCH_LINES_MAX, SKU_LENGTH_MAX, STORE_ID_LENGTH_MAX};
        let text = document();
        let pattern = |max: usize| format!("^[A-Za-z0-9._-]{{1,{max}}}$");
        for (name, max) in [("sku", SKU_LENGTH_MAX), ("store_id", STORE_ID_LENGTH_MAX)] {
            let expected = serde_json::to_string(&pattern(max)).unwrap();
            assert!(text.contains(&expected), "{name}: no pattern {expected}");
        }
        let patterns = text.matches("^[A-Za-z0-9._-]{1,").count();
        let expected = text.matches(&pattern(SKU_LENGTH_MAX)).count()
            + text.matches(&pattern(STORE_ID_LENGTH_MAX)).count();
        assert_eq!(patterns, expected, "an id pattern with another length");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (body, list) in [("CreateBatchRequest", "records"), ("BatchRequest", "lines")] {
            assert_eq!(
                schemas[body]["properties"][list]["maxItems"], BATCH_LINES_MAX,
                "{body}"
            );
        }
        let batch = doc["paths"]["/api/inventory/batch"]["post"].to_string();
        let limit = crate::client::wire::BATCH_BODY_LIMIT_BYTES.to_string();
        assert_eq!(
            batch.matches(&limit).count(),
            2,
            "the body limit, documented twice"
        );
        assert_eq!(BATCH_LINES_MAX, 10_000, "the descriptions say 10,000 lines");
        assert_eq!(
            crate::client::wire::BATCH_LINE_BYTES_MAX,
            256,
            "the descriptions say 256 bytes a line"
        );
        assert_eq!(
            schemas["CartRequest"]["properties"]["lines"]["maxItems"],
            crate::inventory::CART_LINES_MAX
        );
        for body in ["CartRequest", "ReserveRequest"] {
            let ttl = &schemas[body]["properties"]["ttlSeconds"];
            assert_eq!(
                ttl["minimum"],
                crate::inventory::HOLD_TTL_MS_MIN / 1000,
                "{body}"
            );
            assert_eq!(
                ttl["maximum"],
                crate::inventory::HOLD_TTL_MS_MAX / 1000,
                "{body}"
            );
        }
        assert_eq!(
            crate::client::wire::TTL_SECONDS_MAX * 1000,
            crate::inventory::HOLD_TTL_MS_MAX
        );
        let interval = &schemas["SyncStartRequest"]["properties"]["intervalMs"];
        assert_eq!(
            interval["minimum"],
            super::super::sync::SNAPSHOT_INTERVAL_MS_MIN
        );
        assert_eq!(
            interval["maximum"],
            super::super::sync::SNAPSHOT_INTERVAL_MS_MAX
        );
    }
}
