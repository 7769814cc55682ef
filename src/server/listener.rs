//! One listener's accept loop: a bounded number of connections, each served by hyper's HTTP/1
//! with a header-read timeout, behind TLS when configured, drained on shutdown.
//!
//! `axum::serve` has no connection limit and no header or handshake timeout, so a slow-loris
//! (connections that send half a request head, or nothing) could hold sockets and memory
//! forever. Here:
//! - at most [`Limits::max_connections`] connections are open at once: at the limit the loop
//!   stops accepting (the kernel's backlog holds newcomers) until one closes;
//! - a connection must finish its TLS handshake, and send each request head, within
//!   [`Limits::header_read_timeout`] of being ready for it (hyper's `header_read_timeout`, which
//!   also bounds idle keep-alive connections), else it is closed;
//! - the whole request is bounded by the routes' own deadlines (`api::overload::deadline`);
//! - when hyper closes a connection it lingers first ([`Lingering`]): the write side is shut and
//!   what the client still sends (the rest of a body answered 413) is read and discarded, up to
//!   [`super::lingering::LINGER_BYTES_MAX`] bytes for [`super::lingering::LINGER_TIME_MAX`], so
//!   the answer is not lost to a reset.
//!
//! The load shedding of *requests* in flight is not here but in `api::overload`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::lingering::Lingering;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// How long in-flight requests may take to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A failed `accept` (out of file descriptors, say) is retried after this pause rather than in
/// a hot loop.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One accepted connection, and what it is served with.
struct Connection {
    /// The listener's name, for the logs.
    listener: &'static str,
    peer: SocketAddr,
    http: Builder,
    tls: Option<TlsAcceptor>,
    header_read_timeout: Duration,
}

impl Connection {
    /// Serves `router` on `stream` (after the TLS handshake, if any) until the client closes
    /// it or the shutdown drains it (`drain`, hyper's graceful-shutdown handle).
    async fn serve(self, stream: TcpStream, router: Router, drain: Watcher) {
        let Connection {
            listener,
            peer,
            http,
            tls,
            header_read_timeout,
        } = self;
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            router,
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                // For extractors that want the peer (the per-client rate limit).
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let served = match tls {
            None => {
                let connection =
                    http.serve_connection(TokioIo::new(Lingering::new(stream)), service);
                drain.watch(connection).await
            }
            Some(acceptor) => {
                let handshake = tokio::time::timeout(header_read_timeout, acceptor.accept(stream));
                let stream = match handshake.await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(listener, %peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener, %peer, "TLS handshake timed out");
                        return;
                    }
                };
                let connection =
                    http.serve_connection(TokioIo::new(Lingering::new(stream)), service);
                drain.watch(connection).await
            }
        };
        if let Err(error) = served {
            tracing::debug!(listener, %peer, %error, "connection ended with an error");
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// open connections finish their requests (up to [`DRAIN_TIMEOUT`]).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the slots are never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            listener: name,
            peer,
            http: http.clone(),
            tls: tls.clone(),
            header_read_timeout: limits.header_read_timeout,
        };
        let service = router.clone();
        let drain = graceful.watcher();
        tokio::spawn(async move {
            let _slot = slot;
            connection.serve(stream, service, drain).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after the drain timeout"
        );
    }
}
