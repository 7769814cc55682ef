//! The client side of stockraft's HTTP API: the one vocabulary of the wire.
//!
//! - [`routes`]: every path, as router patterns and as functions that fill them in;
//! - [`wire`]: request bodies (deserialized by the server with the seed's input rules) and
//!   answers (rendered by the server from the same types);
//! - [`Client`]: a small async client of one node over the [`Transport`] seam, so the same code
//!   runs on real HTTP (the CLI, the bench, the real-process tests) and on madsim's network
//!   (the simulation).
//!
//! Everything in stockraft that speaks the client API goes through here, so a field name or a
//! path changes in one place. The client does not retry or route: a node forwards writes to the
//! leader itself, and what to do with `503 NO_LEADER` is the caller's decision.

#[cfg(not(madsim))]
pub mod follow;
pub mod routes;
pub mod sse;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use routes::Consistency;
use wire::{
    AddLearnerRequest, AdjustRequest, Barrier, BatchAnswer, BatchCreated, BatchRequest,
    CartRequest, ChangeAnswer, ClusterView, CreateAtPathRequest, CreateBatchRequest, CreateRequest,
    Envelope, ErrorBody, Health, MembersRequest, Metrics, PeerStatus, Readiness, RecordBody,
    ReservationBody, ReserveRequest, Reset, SkuView, SnapshotSchedule, SnapshotTaken, StorePage,
    SyncStartRequest, SyncStatus, SyncStopped, TransferLeaderRequest,
};

use crate::transport::{Transport, TransportError, WireRequest, WireResponse};

/// Header names of the client API.
pub mod headers {
    /// Makes a POST idempotent: the same key and request replay the first answer.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// Names the client whose idempotency keys these are, when tokens are off (with a token,
    /// the token names it): two clients' equal keys are then two keys.
    pub const CLIENT_ID: &str = "x-client-id";
    /// `true` on an answer replayed for an idempotency key.
    pub const REPLAYED: &str = "idempotent-replayed";
    /// A write's version precondition, `"<version>"`.
    pub const IF_MATCH: &str = "if-match";
    /// The record's version, `"<version>"`.
    pub const ETAG: &str = "etag";
    /// How a read was served: `linearizable` or `local`.
    pub const CONSISTENCY: &str = "x-stockraft-consistency";
    /// On an accepted write's answer: the log index of the entry that answered it, the
    /// `logIndex` of its events in the feed (a replay names the entry it replays; a commit or
    /// release asked again names its own entry, which changed nothing and has no event).
    pub const LOG_INDEX: &str = "x-stockraft-log-index";
    /// The node that served a request routed to the leader.
    pub const LEADER: &str = "x-stockraft-leader";
    /// `Bearer <token>` when client tokens are configured.
    pub const AUTHORIZATION: &str = "authorization";
    /// Names one client request in every node's logs and in its answer (kept from the client
    /// when it sends a usable one, made up by the first node otherwise).
    pub const REQUEST_ID: &str = "x-request-id";
    pub use crate::transport::SECRET_HEADER as SECRET;
}

/// How long one request may take unless the caller says otherwise: longer than a node's write
/// deadline (5 s by default), so a node's own `503 NO_LEADER` arrives before the client gives up.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Why a request produced no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The node answered something that is not the documented body for its status.
    #[error("unexpected answer (status {status}): {body}")]
    Malformed { status: u16, body: String },
    /// The node refused the request (an error answer in the seed's shape).
    #[error("{status} {}: {}", .error.error.code, .error.error.message)]
    Refused { status: u16, error: Box<ErrorBody> },
}

/// Extra headers of a write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub idempotency_key: Option<String>,
    /// Sent as `If-Match: "<version>"`.
    pub if_match: Option<u64>,
}

impl WriteOptions {
    pub fn keyed(key: impl Into<String>) -> Self {
        Self {
            idempotency_key: Some(key.into()),
            if_match: None,
        }
    }
}

/// A typed answer: status, headers, and the body as `T` (2xx) or as the error body.
#[derive(Debug, Clone)]
pub struct Answer<T> {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Result<T, ErrorBody>,
}

impl<T> Answer<T> {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The error code, for an error answer.
    pub fn error_code(&self) -> Option<&str> {
        self.body
            .as_ref()
            .err()
            .map(|error| error.error.code.as_str())
    }

    /// The body, or [`ClientError::Refused`].
    pub fn ok(self) -> Result<T, ClientError> {
        let status = self.status;
        self.body.map_err(|error| ClientError::Refused {
            status,
            error: Box::new(error),
        })
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// A client of one node. Cheap to clone; clones share the transport (and its connection pool).
#[derive(Clone)]
pub struct Client {
    transport: Arc<dyn Transport>,
    node: String,
    timeout: Duration,
    secret: Option<String>,
    token: Option<String>,
    client_id: Option<String>,
}

impl Client {
    /// A client of the node at `node` (`host:port`).
    pub fn new(transport: Arc<dyn Transport>, node: impl Into<String>) -> Self {
        Self {
            transport,
            node: node.into(),
            timeout: REQUEST_TIMEOUT_DEFAULT,
            secret: None,
            token: None,
            client_id: None,
        }
    }

    /// The same client, talking to another node (sharing the transport).
    pub fn to_node(&self, node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            ..self.clone()
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The cluster secret, sent on admin and Raft routes.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(secret.into());
        self
    }

    /// A client token, sent as `Authorization: Bearer <token>` on every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A client id, sent as `X-Client-Id` on every request: its idempotency keys are then its
    /// own (when tokens are off; a token names the client instead).
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Sends `request` as is (plus the token and client id, if any); for callers that need the
    /// raw answer.
    pub async fn send(&self, mut request: WireRequest) -> Result<WireResponse, TransportError> {
        if let Some(token) = &self.token {
            request
                .headers
                .push((headers::AUTHORIZATION.into(), format!("Bearer {token}")));
        }
        if let Some(client_id) = &self.client_id {
            request
                .headers
                .push((headers::CLIENT_ID.into(), client_id.clone()));
        }
        self.transport.send(&self.node, request, self.timeout).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: WireRequest,
    ) -> Result<Answer<T>, ClientError> {
        let response = self.send(request).await?;
        parse(response)
    }

    fn admin(&self, request: WireRequest) -> WireRequest {
        match &self.secret {
            Some(secret) => request.with_secret(secret),
            None => request,
        }
    }

    fn write(path: String, body: &impl Serialize, options: &WriteOptions) -> WireRequest {
        let mut request = WireRequest::post(path, body);
        if let Some(key) = &options.idempotency_key {
            request
                .headers
                .push((headers::IDEMPOTENCY_KEY.into(), key.clone()));
        }
        if let Some(version) = options.if_match {
            request
                .headers
                .push((headers::IF_MATCH.into(), format!("\"{version}\"")));
        }
        request
    }

    /// A POST without a body, with a write's headers.
    fn write_empty(path: String, options: &WriteOptions) -> WireRequest {
        let mut request = WireRequest::post_empty(path);
        if let Some(key) = &options.idempotency_key {
            request
                .headers
                .push((headers::IDEMPOTENCY_KEY.into(), key.clone()));
        }
        request
    }

    pub async fn create(
        &self,
        body: &CreateRequest,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<RecordBody>>, ClientError> {
        self.call(Self::write(routes::INVENTORY.into(), body, options))
            .await
    }

    /// Creates every record of `body`, or none.
    pub async fn create_batch(
        &self,
        body: &CreateBatchRequest,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<BatchCreated>>, ClientError> {
        self.call(Self::write(routes::INVENTORY_BATCH.into(), body, options))
            .await
    }

    /// `POST /api/inventory/batch` with lines: 200 with `BatchAnswer::Applied`
    /// (`rejectEverything`) or `BatchAnswer::Lines` (`rejectFailedLines`); a refused
    /// `rejectEverything` batch is a `BATCH_REFUSED` error naming every failing line.
    pub async fn batch(
        &self,
        body: &BatchRequest,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<BatchAnswer>>, ClientError> {
        self.call(Self::write(routes::INVENTORY_BATCH.into(), body, options))
            .await
    }

    pub async fn create_at(
        &self,
        store_id: &str,
        sku: &str,
        body: &CreateAtPathRequest,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<RecordBody>>, ClientError> {
        self.call(Self::write(routes::record(store_id, sku), body, options))
            .await
    }

    pub async fn read(
        &self,
        store_id: &str,
        sku: &str,
        consistency: Consistency,
    ) -> Result<Answer<RecordBody>, ClientError> {
        self.call(WireRequest::get(routes::read(store_id, sku, consistency)))
            .await
    }

    pub async fn adjust(
        &self,
        store_id: &str,
        sku: &str,
        body: &AdjustRequest,
        options: &WriteOptions,
    ) -> Result<Answer<ChangeAnswer>, ClientError> {
        self.call(Self::write(routes::adjust(store_id, sku), body, options))
            .await
    }

    pub async fn reserve(
        &self,
        store_id: &str,
        sku: &str,
        body: &ReserveRequest,
        options: &WriteOptions,
    ) -> Result<Answer<ChangeAnswer>, ClientError> {
        self.call(Self::write(routes::reserve(store_id, sku), body, options))
            .await
    }

    /// Holds `quantity` units of one record for `ttl_seconds` (a reserve with `ttlSeconds`):
    /// 201 with the seed's reserve answer plus `reservationId`. A version precondition travels
    /// in `options.if_match`.
    pub async fn hold(
        &self,
        store_id: &str,
        sku: &str,
        quantity: i64,
        ttl_seconds: u64,
        options: &WriteOptions,
    ) -> Result<Answer<ChangeAnswer>, ClientError> {
        let body = ReserveRequest {
            qty: quantity,
            expected_version: None,
            ttl_seconds: Some(ttl_seconds),
        };
        self.reserve(store_id, sku, &body, options).await
    }

    /// Holds every line of `body` or none, as one reservation (201).
    pub async fn cart(
        &self,
        body: &CartRequest,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<ReservationBody>>, ClientError> {
        self.call(Self::write(routes::RESERVATIONS.into(), body, options))
            .await
    }

    /// Commits a held reservation: its units leave (200; 200 again if already committed).
    pub async fn commit_reservation(
        &self,
        id: &str,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<ReservationBody>>, ClientError> {
        let request = Self::write_empty(routes::reservation_commit(id), options);
        self.call(request).await
    }

    /// Releases a held reservation: its units come back (200; 200 again if already released).
    pub async fn release_reservation(
        &self,
        id: &str,
        options: &WriteOptions,
    ) -> Result<Answer<Envelope<ReservationBody>>, ClientError> {
        let request = Self::write_empty(routes::reservation_release(id), options);
        self.call(request).await
    }

    pub async fn reservation(
        &self,
        id: &str,
        consistency: Consistency,
    ) -> Result<Answer<Envelope<ReservationBody>>, ClientError> {
        self.call(WireRequest::get(routes::reservation(id, consistency)))
            .await
    }

    /// Every store's record of `sku`, with totals.
    pub async fn sku_view(
        &self,
        sku: &str,
        consistency: Consistency,
    ) -> Result<Answer<Envelope<SkuView>>, ClientError> {
        self.call(WireRequest::get(routes::sku_view(sku, consistency)))
            .await
    }

    /// A page of the event feed: events after `after` matching `filter`, at most `limit`.
    pub async fn events(
        &self,
        after: u64,
        limit: Option<usize>,
        filter: &crate::inventory::EventFilter,
        consistency: Consistency,
    ) -> Result<Answer<Envelope<wire::EventsPage>>, ClientError> {
        let path = routes::events(after, limit, filter, consistency);
        self.call(WireRequest::get(path)).await
    }

    /// A page of `store_id`'s records ordered by SKU, after the cursor `after` (a previous
    /// page's `next`).
    pub async fn store_page(
        &self,
        store_id: &str,
        limit: Option<usize>,
        after: Option<&str>,
        consistency: Consistency,
    ) -> Result<Answer<Envelope<StorePage>>, ClientError> {
        let path = routes::store_view(store_id, limit, after, consistency);
        self.call(WireRequest::get(path)).await
    }

    pub async fn health(&self) -> Result<Answer<Envelope<Health>>, ClientError> {
        self.call(WireRequest::get(routes::HEALTH)).await
    }

    pub async fn readiness(&self) -> Result<Answer<Envelope<Readiness>>, ClientError> {
        self.call(WireRequest::get(routes::READINESS)).await
    }

    pub async fn metrics(&self) -> Result<Answer<Envelope<Metrics>>, ClientError> {
        self.call(WireRequest::get(routes::METRICS)).await
    }

    /// Zeroes the node's counters (admin).
    pub async fn reset_metrics(&self) -> Result<Answer<Envelope<Reset>>, ClientError> {
        self.call(self.admin(WireRequest::post_empty(routes::METRICS_RESET)))
            .await
    }

    pub async fn sync_status(&self) -> Result<Answer<Envelope<SyncStatus>>, ClientError> {
        self.call(WireRequest::get(routes::SYNC_STATUS)).await
    }

    pub async fn sync_barrier(&self) -> Result<Answer<Envelope<Barrier>>, ClientError> {
        self.call(WireRequest::post_empty(routes::SYNC)).await
    }

    pub async fn sync_start(
        &self,
        body: &SyncStartRequest,
    ) -> Result<Answer<Envelope<SnapshotSchedule>>, ClientError> {
        self.call(WireRequest::post(routes::SYNC_START, body)).await
    }

    pub async fn sync_stop(&self) -> Result<Answer<Envelope<SyncStopped>>, ClientError> {
        self.call(WireRequest::post_empty(routes::SYNC_STOP)).await
    }

    /// The membership as the leader sees it (admin).
    pub async fn cluster(&self) -> Result<Answer<Envelope<ClusterView>>, ClientError> {
        self.call(self.admin(WireRequest::get(routes::CLUSTER)))
            .await
    }

    pub async fn add_learner(
        &self,
        body: &AddLearnerRequest,
    ) -> Result<Answer<Envelope<ClusterView>>, ClientError> {
        let request = WireRequest::post(routes::CLUSTER_LEARNERS, body);
        self.call(self.admin(request)).await
    }

    pub async fn promote(
        &self,
        body: &MembersRequest,
    ) -> Result<Answer<Envelope<ClusterView>>, ClientError> {
        let request = WireRequest::post(routes::CLUSTER_PROMOTE, body);
        self.call(self.admin(request)).await
    }

    pub async fn remove(
        &self,
        body: &MembersRequest,
    ) -> Result<Answer<Envelope<ClusterView>>, ClientError> {
        let request = WireRequest::post(routes::CLUSTER_REMOVE, body);
        self.call(self.admin(request)).await
    }

    pub async fn transfer_leader(
        &self,
        body: &TransferLeaderRequest,
    ) -> Result<Answer<Envelope<ClusterView>>, ClientError> {
        let request = WireRequest::post(routes::CLUSTER_TRANSFER_LEADER, body);
        self.call(self.admin(request)).await
    }

    /// Snapshots the node this client talks to and purges its log behind the snapshot (admin).
    pub async fn snapshot(&self) -> Result<Answer<Envelope<SnapshotTaken>>, ClientError> {
        let request = WireRequest::post_empty(routes::CLUSTER_SNAPSHOT);
        self.call(self.admin(request)).await
    }

    /// Whether the node holds Raft state (the founding rule asks its peers this; secret).
    pub async fn peer_status(&self) -> Result<Answer<PeerStatus>, ClientError> {
        self.call(self.admin(WireRequest::get(routes::raft::STATUS)))
            .await
    }
}

/// Reads `response` as `T` (2xx) or as the seed's error body (anything else).
fn parse<T: DeserializeOwned>(response: WireResponse) -> Result<Answer<T>, ClientError> {
    let malformed = || ClientError::Malformed {
        status: response.status,
        body: String::from_utf8_lossy(&response.body).into_owned(),
    };
    let body = if (200..300).contains(&response.status) {
        Ok(serde_json::from_slice::<T>(&response.body).map_err(|_| malformed())?)
    } else {
        Err(serde_json::from_slice::<ErrorBody>(&response.body).map_err(|_| malformed())?)
    };
    Ok(Answer {
        status: response.status,
        headers: response.headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{TransportFuture, SECRET_HEADER};
    use std::sync::Mutex;

    /// A transport that records the request and answers with a canned response.
    struct Canned {
        answer: WireResponse,
        seen: Mutex<Vec<(String, WireRequest)>>,
    }

    impl Transport for Canned {
        fn send(&self, addr: &str, request: WireRequest, _timeout: Duration) -> TransportFuture {
            self.seen.lock().unwrap().push((addr.to_owned(), request));
            let answer = self.answer.clone();
            Box::pin(async move { Ok(answer) })
        }
    }

    fn canned(status: u16, body: &str) -> Arc<Canned> {
        Arc::new(Canned {
            answer: WireResponse {
                status,
                headers: vec![("ETag".into(), "\"2\"".into())],
                body: body.as_bytes().to_vec(),
            },
            seen: Mutex::default(),
        })
    }

    const RECORD: &str = r#"{"sku":"A","storeId":"s1","qty":7,"reserved":0,"onHand":7,"version":2,"createdAt":"2026-01-01T00:00:00.000Z","updatedAt":"2026-01-01T00:00:01.000Z"}"#;

    #[test]
    fn a_reserve_sends_the_body_path_and_headers_and_reads_the_typed_answer() {
        let transport = canned(
            201,
            &format!(r#"{{"success":true,"newQuantity":7,"newVersion":2,"record":{RECORD}}}"#),
        );
        let client = Client::new(transport.clone(), "n1:1")
            .with_token("t0k")
            .with_client_id("shop-7");
        let options = WriteOptions {
            idempotency_key: Some("order-1".into()),
            if_match: Some(1),
        };
        let body = ReserveRequest {
            qty: 3,
            expected_version: None,
            ttl_seconds: None,
        };
        let answer = futures::executor::block_on(client.reserve("s1", "A", &body, &options))
            .expect("a typed answer");
        assert_eq!(answer.status, 201);
        assert_eq!(answer.header("etag"), Some("\"2\""));
        let change = answer.ok().expect("a success");
        assert_eq!((change.new_quantity, change.record.version), (7, 2));

        let seen = transport.seen.lock().unwrap();
        let (addr, request) = &seen[0];
        assert_eq!(addr, "n1:1");
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/api/inventory/stores/s1/inventory/A/reserve");
        assert_eq!(request.body, br#"{"qty":3}"#);
        let sent = |name: &str| header(&request.headers, name).map(str::to_owned);
        assert_eq!(sent("idempotency-key").as_deref(), Some("order-1"));
        assert_eq!(sent("if-match").as_deref(), Some("\"1\""));
        assert_eq!(sent("authorization").as_deref(), Some("Bearer t0k"));
        assert_eq!(sent("x-client-id").as_deref(), Some("shop-7"));
        assert_eq!(sent("content-type").as_deref(), Some("application/json"));
    }

    #[test]
    fn an_error_answer_is_the_seed_error_body_and_anything_else_is_malformed() {
        let error = r#"{"success":false,"error":{"name":"ConflictError","message":"m","code":"CONFLICT_ERROR","statusCode":409,"timestamp":"t","details":{"currentVersion":3}}}"#;
        let client = Client::new(canned(409, error), "n");
        let answer = futures::executor::block_on(client.read("s1", "A", Consistency::Local))
            .expect("an error answer");
        assert_eq!(answer.error_code(), Some("CONFLICT_ERROR"));
        let details = answer.body.as_ref().unwrap_err().error.details.clone();
        assert_eq!(details.unwrap()["currentVersion"], 3);

        let client = Client::new(canned(200, "not json"), "n");
        let result = futures::executor::block_on(client.read("s1", "A", Consistency::Local));
        assert!(matches!(
            result,
            Err(ClientError::Malformed { status: 200, .. })
        ));
    }

    #[test]
    fn admin_calls_carry_the_secret_and_client_calls_do_not() {
        let transport = canned(200, &format!(r#"{{"success":true,"data":{RECORD}}}"#));
        let client = Client::new(transport.clone(), "n").with_secret("s3cret-value");
        let _ = futures::executor::block_on(client.read("s1", "A", Consistency::Linearizable));
        let _ = futures::executor::block_on(client.snapshot());
        let seen = transport.seen.lock().unwrap();
        assert_eq!(header(&seen[0].1.headers, SECRET_HEADER), None);
        assert_eq!(
            header(&seen[1].1.headers, SECRET_HEADER),
            Some("s3cret-value")
        );
        assert_eq!(seen[1].1.path, routes::CLUSTER_SNAPSHOT);
    }
}
