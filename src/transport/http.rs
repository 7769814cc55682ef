//! [`Transport`] over real HTTP with reqwest: plain HTTP, or mutual TLS when the cluster has a
//! CA (`[tls]`): the node presents its own certificate and trusts only the cluster CA (no web
//! roots), so it talks only to peers the CA signed.

use std::time::Duration;

use super::{
    Transport, TransportError, TransportFuture, WireRequest, WireResponse, BODY_LIMIT_BYTES,
};

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

    /// The pooled client itself, for a caller that reads an answer as it arrives (an event
    /// stream, `client::follow`) rather than whole.
    pub fn http_client(&self) -> &reqwest::Client {
        &self.client
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
            let body = read_body(response, RESPONSE_BODY_LIMIT_BYTES, &addr).await?;
            Ok(WireResponse {
                status,
                headers,
                body,
            })
        })
    }
}

/// Most bytes of one answer body read from a peer: whatever listens at a peer's address decides
/// how long its body is, and reading it whole would let one bad answer grow this node's memory
/// without bound. The largest answer worth reading is a Raft reply, a body of at most
/// [`BODY_LIMIT_BYTES`]; the extra 64 KiB covers its envelope. Forwarded client answers are far
/// smaller.
pub const RESPONSE_BODY_LIMIT_BYTES: usize = BODY_LIMIT_BYTES + (64 << 10);
/// Bytes reserved up front for an answer body. A claimed `content-length` is not trusted with
/// more than this: the buffer grows with the bytes that really arrive.
const RESPONSE_BODY_RESERVE_BYTES: usize = 64 << 10;

/// Reads `response`'s body, refusing it as soon as it claims or brings more than `limit` bytes
/// (the connection is then dropped, not drained).
async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
    addr: &str,
) -> Result<Vec<u8>, TransportError> {
    let too_large = |what: String| TransportError::NoAnswer {
        addr: addr.to_owned(),
        message: format!("answer body refused: {what}, over the limit of {limit} bytes"),
    };
    let claimed = response.content_length().unwrap_or(0);
    if claimed > limit as u64 {
        return Err(too_large(format!("it claims {claimed} bytes")));
    }
    let mut body = Vec::with_capacity((claimed as usize).min(RESPONSE_BODY_RESERVE_BYTES));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| TransportError::NoAnswer {
            addr: addr.to_owned(),
            message: error.to_string(),
        })?
    {
        if body.len() + chunk.len() > limit {
            let brought = body.len() + chunk.len();
            return Err(too_large(format!("it brought {brought} bytes so far")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// How a fake peer answers.
    #[derive(Clone, Copy)]
    enum Answer {
        Small,
        /// Claims a body of this many bytes, sends a few and then nothing.
        Claims(u64),
        /// Streams this many bytes in chunks, with no length announced.
        Streams(usize),
    }

    async fn answer(mut stream: TcpStream, answer: Answer) -> std::io::Result<()> {
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                return Ok(());
            }
            request.extend_from_slice(&buffer[..read]);
        }
        match answer {
            Answer::Small => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                    .await?;
            }
            Answer::Claims(bytes) => {
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\n\r\nab");
                stream.write_all(head.as_bytes()).await?;
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Answer::Streams(bytes) => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await?;
                let chunk = vec![b'x'; 1 << 20];
                let mut sent = 0;
                while sent < bytes {
                    let len = chunk.len().min(bytes - sent);
                    stream.write_all(format!("{len:x}\r\n").as_bytes()).await?;
                    stream.write_all(&chunk[..len]).await?;
                    stream.write_all(b"\r\n").await?;
                    sent += len;
                }
                stream.write_all(b"0\r\n\r\n").await?;
            }
        }
        stream.flush().await
    }

    /// A peer on a free loopback port that answers every request as told; its address.
    async fn fake_peer(how: Answer) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, how));
            }
        });
        addr
    }

    async fn send_to(how: Answer) -> Result<WireResponse, TransportError> {
        let addr = fake_peer(how).await;
        let request = WireRequest::post_bytes("/raft/append", vec![1, 2, 3]);
        HttpTransport::new()
            .send(&addr, request, Duration::from_secs(20))
            .await
    }

    fn assert_refused_for_size(result: Result<WireResponse, TransportError>) {
        match result {
            Err(TransportError::NoAnswer { message, .. }) => {
                assert!(message.contains("over the limit"), "{message}")
            }
            other => panic!(
                "an oversize answer was not refused: {:?}",
                other.map(|r| r.status)
            ),
        }
    }

    #[tokio::test]
    async fn a_small_answer_is_read_whole() {
        let response = send_to(Answer::Small).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
    }

    #[tokio::test]
    async fn an_answer_claiming_more_than_the_limit_is_refused_without_waiting_for_it() {
        let started = Instant::now();
        assert_refused_for_size(send_to(Answer::Claims(200 << 20)).await);
        // The fake peer never sends the claimed bytes: only an early refusal ends this quickly.
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn an_answer_streaming_past_the_limit_is_cut_off() {
        assert_refused_for_size(send_to(Answer::Streams(RESPONSE_BODY_LIMIT_BYTES + 1)).await);
    }
}
