//! Every route path of a stockraft node, in one place.
//!
//! Constants are the router's patterns (axum syntax, `{param}`); functions fill them in for a
//! client. The router (`api::router`) and every client (CLI, bench, simulation, tests) name
//! routes only through this module, so a path changes in one place.

use crate::inventory::EventFilter;

/// Every client, admin and health route starts with this (Raft RPC does not).
pub const API_PREFIX: &str = "/api/";

/// Create a record from a body naming its ids.
pub const INVENTORY: &str = "/api/inventory";
/// Create many records at once (all or none).
pub const INVENTORY_BATCH: &str = "/api/inventory/batch";
/// One record: read it, or create it at its path.
pub const RECORD: &str = "/api/inventory/stores/{store_id}/inventory/{sku}";
pub const ADJUST: &str = "/api/inventory/stores/{store_id}/inventory/{sku}/adjust";
pub const RESERVE: &str = "/api/inventory/stores/{store_id}/inventory/{sku}/reserve";
/// The seed's backward-compatibility read (sku first). Deprecated. (A SKU named `skus` or
/// `stores` is read through [`RECORD`]: those first segments belong to the views below.)
pub const LEGACY_RECORD: &str = "/api/inventory/{sku}/{store_id}";
/// Every store's record of one SKU, with totals.
pub const SKU_VIEW: &str = "/api/inventory/skus/{sku}";
/// A page of one store's records, ordered by SKU (`?limit=&after=`).
pub const STORE_VIEW: &str = "/api/inventory/stores/{store_id}";

/// The event feed, a page at a time (`?after=&limit=&storeId=&sku=&type=`).
pub const EVENTS: &str = "/api/events";
/// The event feed as Server-Sent Events (`?after=` or `Last-Event-ID`, same filters).
pub const EVENTS_STREAM: &str = "/api/events/stream";

/// Hold a cart (all lines or none).
pub const RESERVATIONS: &str = "/api/reservations";
/// One reservation.
pub const RESERVATION: &str = "/api/reservations/{id}";
pub const RESERVATION_COMMIT: &str = "/api/reservations/{id}/commit";
pub const RESERVATION_RELEASE: &str = "/api/reservations/{id}/release";

pub const HEALTH: &str = "/api/health";
pub const LIVENESS: &str = "/api/health/liveness";
pub const READINESS: &str = "/api/health/readiness";
pub const HEALTH_METRICS: &str = "/api/health/metrics";
pub const METRICS: &str = "/api/metrics";
pub const METRICS_RESET: &str = "/api/metrics/reset";
/// The OpenAPI document of every route below (but Raft's).
pub const OPENAPI: &str = "/api/openapi.json";
/// Prometheus exposition (text format), outside `/api` as scrapers expect.
pub const PROMETHEUS: &str = "/metrics";

/// Every member's own health, gathered by the node asked (the console's cluster panel).
pub const STATUS: &str = "/api/status";
/// The caller's token and scopes.
pub const WHOAMI: &str = "/api/whoami";

pub const SYNC: &str = "/api/sync";
pub const SYNC_STATUS: &str = "/api/sync/status";
pub const SYNC_START: &str = "/api/sync/start";
pub const SYNC_STOP: &str = "/api/sync/stop";

pub const CLUSTER: &str = "/api/cluster";
pub const CLUSTER_LEARNERS: &str = "/api/cluster/learners";
pub const CLUSTER_PROMOTE: &str = "/api/cluster/promote";
pub const CLUSTER_REMOVE: &str = "/api/cluster/remove";
pub const CLUSTER_TRANSFER_LEADER: &str = "/api/cluster/transfer-leader";
pub const CLUSTER_SNAPSHOT: &str = "/api/cluster/snapshot";
/// A backup of the cluster's state, streamed (`backup::format`).
pub const ADMIN_BACKUP: &str = "/api/admin/backup";

/// Node-to-node Raft RPC (cluster secret required). Not a client API, but named here with the
/// rest so that every path lives in one module.
pub mod raft {
    pub const APPEND: &str = "/raft/append";
    pub const VOTE: &str = "/raft/vote";
    pub const PRE_VOTE: &str = "/raft/pre-vote";
    pub const SNAPSHOT: &str = "/raft/snapshot";
    pub const TRANSFER_LEADER: &str = "/raft/transfer-leader";
    /// Whether a node holds Raft state (asked before founding a cluster).
    pub const STATUS: &str = "/raft/status";
    /// A follower's batch of forwarded writes (`app::forward`).
    pub const PROPOSE: &str = "/raft/propose";
}

/// The operator console (`api::console`): pages for a browser, served on the client listener.
/// Not part of the API (they are HTML, JavaScript and CSS, and are not in its OpenAPI
/// document), so they live outside the list above.
pub mod console {
    /// Answers a redirect to [`INDEX`].
    pub const ROOT: &str = "/ui";
    pub const INDEX: &str = "/ui/";
    /// One of the page's files (`/ui/console.js`, `/ui/console.css`).
    pub const ASSET: &str = "/ui/{asset}";
}

/// How a read is served: by the leader after a read-index round (the default), or from the
/// asked node's own applied state (possibly behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Linearizable,
    Local,
}

impl Consistency {
    /// The `consistency` query parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Local => "local",
        }
    }
}

fn fill(pattern: &str, store_id: &str, sku: &str) -> String {
    pattern
        .replace("{store_id}", store_id)
        .replace("{sku}", sku)
}

pub fn record(store_id: &str, sku: &str) -> String {
    fill(RECORD, store_id, sku)
}

/// A read of one record; the default (linearizable) sends no query parameter.
pub fn read(store_id: &str, sku: &str, consistency: Consistency) -> String {
    match consistency {
        Consistency::Linearizable => record(store_id, sku),
        other => format!("{}?consistency={}", record(store_id, sku), other.as_str()),
    }
}

pub fn adjust(store_id: &str, sku: &str) -> String {
    fill(ADJUST, store_id, sku)
}

pub fn reserve(store_id: &str, sku: &str) -> String {
    fill(RESERVE, store_id, sku)
}

pub fn legacy_record(sku: &str, store_id: &str) -> String {
    fill(LEGACY_RECORD, store_id, sku)
}

/// `?consistency=local`, or nothing for the default.
/// A page of the feed: events after `after` matching `filter`, at most `limit` (the node's
/// default when `None`).
pub fn events(
    after: u64,
    limit: Option<usize>,
    filter: &EventFilter,
    consistency: Consistency,
) -> String {
    let mut parameters = vec![
        Some(format!("after={after}")),
        limit.map(|limit| format!("limit={limit}")),
    ];
    parameters.extend(filter_query(filter));
    parameters.push(consistency_query(consistency));
    with_query(EVENTS.to_owned(), &parameters)
}

/// The feed's stream from `after` (when the stream is resumed by `Last-Event-ID`, that header
/// wins), with `filter`.
pub fn events_stream(after: Option<u64>, filter: &EventFilter) -> String {
    let mut parameters = vec![after.map(|after| format!("after={after}"))];
    parameters.extend(filter_query(filter));
    with_query(EVENTS_STREAM.to_owned(), &parameters)
}

/// `storeId=`, `sku=` and `type=` (kinds joined by commas) of a filter. Ids need no escaping:
/// they are ASCII letters, digits and `-_.` (`inventory::RecordKey`).
fn filter_query(filter: &EventFilter) -> [Option<String>; 3] {
    [
        filter
            .store_id
            .as_ref()
            .map(|store| format!("storeId={store}")),
        filter.sku.as_ref().map(|sku| format!("sku={sku}")),
        filter.kinds.as_ref().map(|kinds| {
            let names: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
            format!("type={}", names.join(","))
        }),
    ]
}

fn consistency_query(consistency: Consistency) -> Option<String> {
    match consistency {
        Consistency::Linearizable => None,
        other => Some(format!("consistency={}", other.as_str())),
    }
}

fn with_query(path: String, parameters: &[Option<String>]) -> String {
    let query: Vec<&str> = parameters.iter().flatten().map(String::as_str).collect();
    if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// A read of one reservation (`id` as written, `rsv-<log index>-<number>`).
pub fn reservation(id: &str, consistency: Consistency) -> String {
    with_query(
        RESERVATION.replace("{id}", id),
        &[consistency_query(consistency)],
    )
}

pub fn reservation_commit(id: &str) -> String {
    RESERVATION_COMMIT.replace("{id}", id)
}

pub fn reservation_release(id: &str) -> String {
    RESERVATION_RELEASE.replace("{id}", id)
}

pub fn sku_view(sku: &str, consistency: Consistency) -> String {
    with_query(
        SKU_VIEW.replace("{sku}", sku),
        &[consistency_query(consistency)],
    )
}

/// A page of a store's records: at most `limit` (the node's default when `None`), after the
/// cursor `after` (a previous page's `next`).
pub fn store_view(
    store_id: &str,
    limit: Option<usize>,
    after: Option<&str>,
    consistency: Consistency,
) -> String {
    with_query(
        STORE_VIEW.replace("{store_id}", store_id),
        &[
            limit.map(|limit| format!("limit={limit}")),
            after.map(|cursor| format!("after={cursor}")),
            consistency_query(consistency),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_the_router_patterns() {
        assert_eq!(record("s1", "A"), "/api/inventory/stores/s1/inventory/A");
        assert_eq!(
            reserve("s1", "A"),
            "/api/inventory/stores/s1/inventory/A/reserve"
        );
        assert_eq!(
            adjust("s1", "A"),
            "/api/inventory/stores/s1/inventory/A/adjust"
        );
        assert_eq!(legacy_record("A", "s1"), "/api/inventory/A/s1");
        assert_eq!(
            read("s1", "A", Consistency::Local),
            "/api/inventory/stores/s1/inventory/A?consistency=local"
        );
        assert_eq!(
            read("s1", "A", Consistency::Linearizable),
            record("s1", "A")
        );
        assert_eq!(
            reservation("rsv-7-0", Consistency::Local),
            "/api/reservations/rsv-7-0?consistency=local"
        );
        assert_eq!(
            reservation_commit("rsv-7-0"),
            "/api/reservations/rsv-7-0/commit"
        );
        assert_eq!(
            sku_view("A", Consistency::Linearizable),
            "/api/inventory/skus/A"
        );
        assert_eq!(
            store_view("s1", Some(2), Some("4142"), Consistency::Local),
            "/api/inventory/stores/s1?limit=2&after=4142&consistency=local"
        );
        assert_eq!(
            store_view("s1", None, None, Consistency::Linearizable),
            "/api/inventory/stores/s1"
        );
    }
}
