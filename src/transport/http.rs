//! [`Transport`] over real HTTP with reqwest.

use std::time::Duration;

use super::{Transport, TransportError, TransportFuture, WireRequest, WireResponse};

/// How long to wait for a TCP connection before calling a peer unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A pooled HTTP/1.1 client shared by all outgoing node-to-node requests.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .expect("building an HTTP client with static settings cannot fail");
        Self { client }
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport for HttpTransport {
    fn send(&self, addr: &str, request: WireRequest, timeout: Duration) -> TransportFuture {
        let client = self.client.clone();
        let addr = addr.to_owned();
        Box::pin(async move {
            let unreachable = |error: reqwest::Error| {
                if error.is_connect() {
                    TransportError::Unreachable {
                        addr: addr.clone(),
                        message: error.to_string(),
                    }
                } else {
                    TransportError::NoAnswer {
                        addr: addr.clone(),
                        message: error.to_string(),
                    }
                }
            };
            let method =
                reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|error| {
                    TransportError::Unreachable {
                        addr: addr.clone(),
                        message: error.to_string(),
                    }
                })?;
            let mut builder = client
                .request(method, format!("http://{}{}", addr, request.path))
                .timeout(timeout)
                .body(request.body);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            let response = builder.send().await.map_err(unreachable)?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = response.bytes().await.map_err(unreachable)?.to_vec();
            Ok(WireResponse {
                status,
                headers,
                body,
            })
        })
    }
}
