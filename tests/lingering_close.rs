//! A body over the limit is answered 413 *as the client sees it*: a client that writes its whole
//! body before reading anything (Python's urllib, most simple clients) reads the 413, instead of
//! a connection reset. The node reads and discards the rest of the body for a bounded time and
//! number of bytes after answering (`server::lingering`), over plain HTTP and over TLS.
//!
//! The clients here are raw sockets on purpose: reqwest and curl read while they write, and so
//! see the 413 even without the lingering close.
#![cfg(not(madsim))]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stockraft::client::routes;
use support::{Cluster, Layout};

/// 96 times the default body limit (64 KiB), and more than the socket buffers of a loopback
/// connection hold while the node is not reading (the client's send buffer grows to 4 MiB here,
/// `net.ipv4.tcp_wmem`), so the client is still writing when the 413 is sent. With 2 MiB the
/// whole body sometimes fits in the buffers and the client never sees the reset (urllib: 7 resets
/// in 20 tries against a release build, none against a debug build); from 4 MiB every try failed
/// before the lingering close.
const BODY_BYTES: usize = 6 * 1024 * 1024 + 1;

/// The same request several times: a reset is a matter of timing, so one lucky try proves
/// little.
const TRIES: usize = 5;

/// How long the raw client waits on one read or write before the test fails.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// A reserve request with a `BODY_BYTES` JSON body, as one buffer of bytes.
fn oversized_reserve() -> Vec<u8> {
    let padding = "x".repeat(BODY_BYTES - r#"{"qty":1,"note":""}"#.len());
    let body = format!(r#"{{"qty":1,"note":"{padding}"}}"#);
    assert_eq!(body.len(), BODY_BYTES);
    let head = format!(
        "POST {} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        routes::reserve("s1", "A"),
        body.len()
    );
    [head.into_bytes(), body.into_bytes()].concat()
}

/// Writes the whole `request` on `stream`, and only then reads the answer to its end.
fn write_all_then_read(mut stream: impl Read + Write, request: &[u8]) -> String {
    stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .unwrap_or_else(|error| panic!("writing the whole request: {error}"));
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|error| panic!("reading the answer after the whole body: {error}"));
    String::from_utf8_lossy(&answer).into_owned()
}

fn tcp(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(SOCKET_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(SOCKET_TIMEOUT)).unwrap();
    stream
}

fn assert_payload_too_large(answer: &str, try_number: usize) {
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "try {try_number}: {}",
        &answer[..answer.len().min(300)]
    );
    assert!(
        answer.contains("PAYLOAD_TOO_LARGE"),
        "try {try_number}: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_writing_its_whole_oversized_body_before_reading_reads_the_413() {
    let cluster = Cluster::start(1, "").await;
    cluster.wait_for_leader(&[1]).await;
    let addr = cluster.addr(1).to_owned();
    tokio::task::spawn_blocking(move || {
        let request = oversized_reserve();
        for try_number in 1..=TRIES {
            let answer = write_all_then_read(tcp(&addr), &request);
            assert_payload_too_large(&answer, try_number);
        }
    })
    .await
    .unwrap();
}

/// A rustls client trusting only the cluster CA in `ca`, for the name `localhost`.
fn tls_client(ca: &Path, addr: &str) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(connection, tcp(addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_client_writing_its_whole_oversized_body_before_reading_reads_the_413() {
    let layout = Layout {
        split: true,
        tls: true,
    };
    let cluster = Cluster::start_layout(1, "", "", layout).await;
    cluster.wait_for_leader(&[1]).await;
    let addr = cluster.addr(1).to_owned();
    let ca = cluster.dir.path().join("tls").join("ca.pem");
    tokio::task::spawn_blocking(move || {
        let request = oversized_reserve();
        for try_number in 1..=TRIES {
            let answer = write_all_then_read(tls_client(&ca, &addr), &request);
            assert_payload_too_large(&answer, try_number);
        }
    })
    .await
    .unwrap();
}
