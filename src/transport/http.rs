//! [`Transport`] over real HTTP with reqwest: plain HTTP, or mutual TLS when the cluster has a
//! CA (`[tls]`): the node presents its own certificate and trusts only the cluster CA (no web
//! roots), so it talks only to peers the CA signed.

use std::time::Duration;

use super::{Transport, TransportError, TransportFuture, WireRequest, WireResponse};

/// How long to wait for a TCP connection before calling a peer unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A pooled HTTP/1.1 client shared by all outgoing node-to-node requests.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
}

impl HttpTransport {
    /// Plain HTTP.
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .expect("building an HTTP client with static settings cannot fail");
        Self {
            client,
            scheme: "http",
        }
    }

    /// HTTPS trusting only the CA in `ca_pem`, presenting `identity_pem` (certificate chain
    /// then private key, PEM) when a server asks for a client certificate.
    pub fn with_tls(ca_pem: &[u8], identity_pem: Option<&[u8]>) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .https_only(true);
        for ca in reqwest::Certificate::from_pem_bundle(ca_pem)? {
            builder = builder.add_root_certificate(ca);
        }
        if let Some(identity) = identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(identity)?);
        }
        Ok(Self {
            client: builder.build()?,
            scheme: "https",
        })
    }

    /// From a node's TLS files (`None`: plain HTTP).
    pub fn from_files(tls: Option<&crate::config::TlsFiles>) -> anyhow::Result<Self> {
        use anyhow::Context;
        let Some(files) = tls else {
            return Ok(Self::new());
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let ca = read(&files.ca)?;
        let mut identity = read(&files.cert)?;
        identity.push(b'\n');
        identity.extend(read(&files.key)?);
        Self::with_tls(&ca, Some(&identity)).context("building the TLS client")
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
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
        let scheme = self.scheme;
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
                .request(method, format!("{scheme}://{addr}{}", request.path))
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
