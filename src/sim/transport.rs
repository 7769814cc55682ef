//! [`Transport`] over madsim's simulated network, and the server side that feeds a node's
//! `Router`.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use madsim::net::rpc::{Bytes, Request as RpcRequest};
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use crate::storage::{decode, encode};
use crate::transport::{Transport, TransportError, TransportFuture, WireRequest, WireResponse};

/// The one RPC type on the simulated wire: an HTTP request in the data bytes.
#[derive(Serialize, Deserialize)]
struct HttpCall;

impl RpcRequest for HttpCall {
    type Response = ();
    const ID: u64 = 0x5354_4f43_4b52_4654;
}

/// Sends requests from the current simulated node.
///
/// madsim drops a message to a partitioned or dead node silently, so a failure here never
/// proves the request was not delivered: every failure is [`TransportError::NoAnswer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SimTransport;

impl Transport for SimTransport {
    fn send(&self, addr: &str, request: WireRequest, timeout: Duration) -> TransportFuture {
        let addr = addr.to_owned();
        Box::pin(async move {
            let no_answer = |message: String| TransportError::NoAnswer {
                addr: addr.clone(),
                message,
            };
            let target: SocketAddr = addr.parse().map_err(|_| TransportError::Unreachable {
                addr: addr.clone(),
                message: "not a socket address".into(),
            })?;
            let endpoint = Endpoint::bind("0.0.0.0:0")
                .await
                .map_err(|error| no_answer(error.to_string()))?;
            let payload = encode(&request);
            let call = endpoint.call_with_data(target, HttpCall, &payload);
            match madsim::time::timeout(timeout, call).await {
                Ok(Ok(((), bytes))) => {
                    decode(b"sim-response", &bytes).map_err(|error| no_answer(error.to_string()))
                }
                Ok(Err(error)) => Err(no_answer(error.to_string())),
                Err(_) => Err(no_answer(format!("timed out after {timeout:?}"))),
            }
        })
    }
}

/// Serves `router` on `addr` of the current simulated node. Keep the endpoint alive.
pub async fn serve(addr: SocketAddr, router: axum::Router) -> io::Result<Endpoint> {
    let endpoint = Endpoint::bind(addr).await?;
    endpoint.add_rpc_handler_with_data(move |_: HttpCall, data: Bytes| {
        let router = router.clone();
        async move { ((), handle(router, &data).await) }
    });
    Ok(endpoint)
}

async fn handle(router: axum::Router, data: &[u8]) -> Vec<u8> {
    let response = match decode::<WireRequest>(b"sim-request", data) {
        Ok(request) => call_router(router, request).await,
        Err(error) => WireResponse {
            status: 400,
            headers: Vec::new(),
            body: error.to_string().into_bytes(),
        },
    };
    encode(&response)
}

async fn call_router(router: axum::Router, request: WireRequest) -> WireResponse {
    let mut builder = axum::http::Request::builder()
        .method(request.method.as_str())
        .uri(request.path.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let Ok(http_request) = builder.body(axum::body::Body::from(request.body)) else {
        return WireResponse {
            status: 400,
            headers: Vec::new(),
            body: b"malformed request".to_vec(),
        };
    };
    let response = match router.oneshot(http_request).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    WireResponse {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body,
    }
}
