//! Planted bugs: switches that break stockraft on purpose, so a test can prove the simulation's
//! checkers catch what they claim to catch. Exists only in `--cfg madsim` builds; off unless a
//! test plants one, and set by [`plant`] at the start of every run.
//!
//! The core has no test switches: each bug enters through a seam the core defines for any
//! caller ([`crate::node::Seams`], or the router the simulation serves), filled here:
//! - [`PlantedBug::ReserveSkipsStockCheck`], [`PlantedBug::DoubleExpiry`],
//!   [`PlantedBug::HalfCart`], [`PlantedBug::ReserveRecordsNoEvent`],
//!   [`PlantedBug::RefusedReserveRecordsAnEvent`] and [`PlantedBug::RefusedBatchKeepsItsFirstLine`]:
//!   wrappers of `inventory::apply` ([`apply_fn`]);
//! - [`PlantedBug::StaleFollowerReads`]: a router layer in front of the node ([`wrap_router`])
//!   that turns a follower's linearizable reads into local ones;
//! - [`PlantedBug::FeedPageSkipsAnEvent`]: a router layer that drops one event from the pages
//!   of the feed that hold it.

use std::cell::Cell;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request as HttpRequest;
use axum::http::header::CONTENT_LENGTH;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::app::App;
use crate::client::routes;
use crate::inventory::{
    self, ApplyContext, Command, CommandResult, Effects, ErrorPolicy, Event, EventKind,
    MemoryState, Rejection, ReservationStatus, StateView,
};
use crate::raft::state_machine::ApplyFn;

/// A known bug the simulation must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlantedBug {
    None = 0,
    /// A follower answers a linearizable read from its own, possibly stale, state.
    StaleFollowerReads = 1,
    /// A reserve beyond the available stock succeeds and empties the record (an oversell).
    ReserveSkipsStockCheck = 2,
    /// An expiry gives each expired line's units back twice.
    DoubleExpiry = 3,
    /// A cart holds only its first line (and answers a reservation of that line).
    HalfCart = 4,
    /// A plain reserve changes the record but records no event in the feed.
    ReserveRecordsNoEvent = 5,
    /// A page of `GET /api/events` leaves out the event [`SKIPPED_SEQ`] (a consumer paging
    /// through it never sees it; the stored feed is whole).
    FeedPageSkipsAnEvent = 6,
    /// A reserve refused for want of stock records a `reserved` event anyway (the record does
    /// not change).
    RefusedReserveRecordsAnEvent = 7,
    /// A `rejectEverything` batch refused for a later line keeps its first line's change (and
    /// its events); the answer is the refusal.
    RefusedBatchKeepsItsFirstLine = 8,
}

impl PlantedBug {
    /// Every planted bug, and none.
    pub const ALL: [PlantedBug; 9] = [
        PlantedBug::None,
        PlantedBug::StaleFollowerReads,
        PlantedBug::ReserveSkipsStockCheck,
        PlantedBug::DoubleExpiry,
        PlantedBug::HalfCart,
        PlantedBug::ReserveRecordsNoEvent,
        PlantedBug::FeedPageSkipsAnEvent,
        PlantedBug::RefusedReserveRecordsAnEvent,
        PlantedBug::RefusedBatchKeepsItsFirstLine,
    ];

    /// The bug numbered `number` (`scripts/sim.sh --bug N`).
    pub fn from_number(number: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|bug| *bug as u64 == number)
    }
}

/// The seq [`PlantedBug::FeedPageSkipsAnEvent`] leaves out: early, so every run's feed has it.
pub const SKIPPED_SEQ: u64 = 10;

thread_local! {
    /// Per OS thread, because a madsim runtime (all its nodes) runs on one thread and several
    /// runs may proceed in parallel threads of one test process.
    static PLANTED: Cell<PlantedBug> = const { Cell::new(PlantedBug::None) };
}

pub fn plant(bug: PlantedBug) {
    PLANTED.with(|planted| planted.set(bug));
}

pub fn planted() -> PlantedBug {
    PLANTED.with(Cell::get)
}

/// The state transition a node of this run uses: `inventory::apply`, or the planted oversell.
pub fn apply_fn() -> ApplyFn {
    match planted() {
        PlantedBug::ReserveSkipsStockCheck => reserve_skipping_the_stock_check,
        PlantedBug::DoubleExpiry => expiry_giving_units_back_twice,
        PlantedBug::HalfCart => cart_holding_only_its_first_line,
        PlantedBug::ReserveRecordsNoEvent => reserve_recording_no_event,
        PlantedBug::RefusedReserveRecordsAnEvent => refused_reserve_recording_an_event,
        PlantedBug::RefusedBatchKeepsItsFirstLine => refused_batch_keeping_its_first_line,
        PlantedBug::None | PlantedBug::StaleFollowerReads | PlantedBug::FeedPageSkipsAnEvent => {
            inventory::apply
        }
    }
}

/// `inventory::apply`, except that a reserve beyond the stock is applied as if the stock had
/// been there: it succeeds and leaves the record at 0.
fn reserve_skipping_the_stock_check(
    view: &MemoryState,
    request: &inventory::Request,
    context: ApplyContext,
) -> (inventory::Response, Effects) {
    if let Command::Reserve { key, quantity, .. } = &request.command {
        if let Some(record) = view.records.get(key).filter(|r| *quantity > r.quantity) {
            let mut inflated = view.clone();
            let mut record = record.clone();
            record.quantity = *quantity;
            inflated.records.insert(key.clone(), record);
            return inventory::apply(&inflated, request, context);
        }
    }
    inventory::apply(view, request, context)
}

/// `inventory::apply`, except that an expiry gives every expired line's units back to the
/// available quantity a second time (as a state machine that settled a reservation both when
/// it expired it and again when it forgot it would).
fn expiry_giving_units_back_twice(
    view: &MemoryState,
    request: &inventory::Request,
    context: ApplyContext,
) -> (inventory::Response, Effects) {
    let (response, mut effects) = inventory::apply(view, request, context);
    if matches!(request.command, Command::Expire { .. }) {
        let expired = effects
            .reservations
            .iter()
            .filter(|r| r.status == ReservationStatus::Expired);
        for line in expired.flat_map(|r| &r.lines) {
            if let Some(record) = effects.records.iter_mut().find(|r| r.key == line.key) {
                record.quantity += line.quantity;
            }
        }
    }
    (response, effects)
}

/// `inventory::apply`, except that a cart of several lines (not a replay) is applied as a cart
/// of its first line only, and remembered under the client's whole request.
fn cart_holding_only_its_first_line(
    view: &MemoryState,
    request: &inventory::Request,
    context: ApplyContext,
) -> (inventory::Response, Effects) {
    let replay = request
        .idempotency
        .as_ref()
        .is_some_and(|key| view.idempotency(&key.id()).is_some());
    let Command::Cart { lines, ttl_ms } = &request.command else {
        return inventory::apply(view, request, context);
    };
    if lines.len() < 2 || replay {
        return inventory::apply(view, request, context);
    }
    let first_only = inventory::Request {
        command: Command::Cart {
            lines: lines[..1].to_vec(),
            ttl_ms: *ttl_ms,
        },
        ..request.clone()
    };
    let (response, mut effects) = inventory::apply(view, &first_only, context);
    if let Some((_, entry)) = &mut effects.idempotency {
        entry.fingerprint = request.command.fingerprint();
    }
    (response, effects)
}

/// `inventory::apply`, except that a reserve's events are dropped: the record changes, the
/// feed does not say so.
fn reserve_recording_no_event(
    view: &MemoryState,
    request: &inventory::Request,
    context: ApplyContext,
) -> (inventory::Response, Effects) {
    let (response, mut effects) = inventory::apply(view, request, context);
    if matches!(request.command, Command::Reserve { .. }) {
        effects.events.clear();
    }
    (response, effects)
}

/// `inventory::apply`, except that a reserve refused for want of stock records the event an
/// accepted one would have, on the unchanged record.
fn refused_reserve_recording_an_event(
    view: &MemoryState,
    request: &inventory::Request,
    context: ApplyContext,
) -> (inventory::Response, Effects) {
    let (response, mut effects) = inventory::apply(view, request, context);
    let refused = matches!(
        response.result,
        CommandResult::Err(Rejection::InsufficientStock { .. })
    );
    if let (Command::Reserve { key, quantity, .. }, true) = (&request.command, refused) {
        if let Some(record) = view.records.get(key) {
            effects.events.push(Event {
                seq: 0,
                log_index: context.log_index,
                kind: EventKind::Reserved,
                key: key.clone(),
                quantity: record.quantity,
                reserved: record.reserved,
                delta: Some(-quantity),
                version: record.version,
                reservation_id: None,
                idempotency_key: None,
                at_ms: context.now_ms,
            });
        }
    }
    (response, effects)
}

/// `inventory::apply`, except that a `rejectEverything` batch it refuses keeps the change its
/// first line makes alone (if that line can apply): the answer and the remembered answer are
/// the refusal.
fn refused_batch_keeping_its_first_line(
    view: &MemoryState,
    request: &inventory::Request,
    context: ApplyContext,
) -> (inventory::Response, Effects) {
    let (response, mut effects) = inventory::apply(view, request, context);
    let refused = matches!(
        response.result,
        CommandResult::Err(Rejection::BatchRefused { .. })
    );
    let Command::Batch {
        lines,
        policy: ErrorPolicy::RejectEverything,
    } = &request.command
    else {
        return (response, effects);
    };
    if refused && !response.replayed {
        let first_line = inventory::Request {
            command: Command::Batch {
                lines: lines[..1].to_vec(),
                policy: ErrorPolicy::RejectEverything,
            },
            ..request.clone()
        };
        let (_, kept) = inventory::apply(view, &first_line, context);
        effects.records = kept.records;
        effects.reservations = kept.reservations;
        effects.events = kept.events;
    }
    (response, effects)
}

/// The router a node of this run serves: `router`, with the planted router bug in front of it.
pub fn wrap_router(router: Router, app: Arc<App>) -> Router {
    match planted() {
        PlantedBug::StaleFollowerReads => router.layer(middleware::from_fn(
            move |request: HttpRequest, next: Next| {
                let app = app.clone();
                async move { next.run(read_locally_on_followers(&app, request)).await }
            },
        )),
        PlantedBug::FeedPageSkipsAnEvent => router.layer(middleware::from_fn(skip_one_event)),
        _ => router,
    }
}

/// On a follower, a record read (any GET under the inventory routes) becomes
/// `?consistency=local`.
fn read_locally_on_followers(app: &App, mut request: HttpRequest) -> HttpRequest {
    let is_record_read =
        request.method() == Method::GET && request.uri().path().starts_with(routes::INVENTORY);
    if is_record_read && app.leader() != Some(app.id()) {
        let local = format!("{}?consistency=local", request.uri().path());
        if let Ok(uri) = local.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// Largest page body the planted skip rewrites (a page of 1,000 events is ~300 KB).
const PAGE_BODY_BYTES_MAX: usize = 4 << 20;

/// Drops the event [`SKIPPED_SEQ`] from a successful page of the feed.
async fn skip_one_event(request: HttpRequest, next: Next) -> Response {
    let is_page = request.method() == Method::GET && request.uri().path() == routes::EVENTS;
    let response = next.run(request).await;
    if !is_page || response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, PAGE_BODY_BYTES_MAX)
        .await
        .expect("a page of the feed fits the bound");
    let mut page: serde_json::Value =
        serde_json::from_slice(&bytes).expect("a page of the feed is JSON");
    if let Some(events) = page
        .pointer_mut("/data/events")
        .and_then(|e| e.as_array_mut())
    {
        events.retain(|event| event.get("seq").and_then(|seq| seq.as_u64()) != Some(SKIPPED_SEQ));
    }
    parts.headers.remove(CONTENT_LENGTH);
    let body = serde_json::to_vec(&page).expect("JSON values serialise");
    Response::from_parts(parts, Body::from(body))
}
