//! How one node sends an HTTP request to another: Raft RPC and forwarded client writes both go
//! through the [`Transport`] trait.
//!
//! The product uses [`HttpTransport`] (reqwest over TCP). The simulation provides its own
//! transport that carries a [`WireRequest`] over madsim's network and hands it to the target
//! node's real axum `Router`, so the simulated cluster runs the same handlers, the same secret
//! checks and the same forwarding code as the real one. Nothing above this trait knows which
//! wire it is on.

#[cfg(not(madsim))]
mod http;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

#[cfg(not(madsim))]
pub use http::HttpTransport;
use serde::{Deserialize, Serialize};

/// Header carrying the cluster secret on node-to-node and admin requests.
pub const SECRET_HEADER: &str = "x-stockraft-secret";

/// Most bytes of one message body between nodes. Whatever sends a body decides how long it is;
/// every reader of a peer's body is bounded by this, so that one bad or hostile message cannot
/// grow a node's memory without bound: the answers this transport reads (plus a margin for
/// their envelope), and the Raft RPC decoder (`raft::network::RPC_DECODE_LIMIT_BYTES`), which
/// trusts a length prefix only up to it. The largest legitimate bodies are Raft's: appends of
/// entries under 100 KiB, at most a few hundred per append, and snapshot chunks of 1 MiB.
pub const BODY_LIMIT_BYTES: usize = 64 << 20;

/// An HTTP request, reduced to what crosses between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequest {
    pub method: String,
    /// Path and query, e.g. `/api/inventory?x=1`.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireRequest {
    /// A `GET` of `path` with no headers.
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: "GET".into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `POST` of `body` serialized as JSON to `path`.
    pub fn post(path: impl Into<String>, body: &impl Serialize) -> Self {
        Self {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).expect("request bodies serialize to JSON"),
        }
    }

    /// A `POST` of opaque bytes (`application/octet-stream`): Raft RPC.
    pub fn post_bytes(path: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            method: "POST".into(),
            path: path.into(),
            headers: vec![("content-type".into(), "application/octet-stream".into())],
            body,
        }
    }

    /// A `POST` with no body.
    pub fn post_empty(path: impl Into<String>) -> Self {
        Self {
            method: "POST".into(),
            ..Self::get(path)
        }
    }

    /// Adds the cluster secret (node-to-node and admin requests).
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.headers.push((SECRET_HEADER.into(), secret.into()));
        self
    }
}

/// An HTTP response, reduced likewise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WireResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The request was certainly not delivered (no connection could be made).
    #[error("{addr} unreachable: {message}")]
    Unreachable { addr: String, message: String },
    /// The request may have been delivered and acted on, but no answer came back in time.
    #[error("no answer from {addr}: {message}")]
    NoAnswer { addr: String, message: String },
}

pub type TransportFuture =
    Pin<Box<dyn Future<Output = Result<WireResponse, TransportError>> + Send>>;

/// Sends one request to the node at `addr` and waits at most `timeout` for its answer.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, addr: &str, request: WireRequest, timeout: Duration) -> TransportFuture;
}
