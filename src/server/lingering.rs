//! A lingering close (nginx's `lingering_close`): when hyper has answered and closes a
//! connection, the socket is not closed at once but half-closed, and what the client still sends
//! is read and thrown away (at most [`LINGER_BYTES_MAX`] bytes, for at most [`LINGER_TIME_MAX`]),
//! so that the answer reaches the client.
//!
//! Why: a request whose body is over the limit is answered 413 after the first
//! `api.body_limit_bytes` are read, while the rest of the body is still arriving. Closing a TCP
//! socket with unread bytes in its receive queue sends a reset (RFC 1122 4.2.2.13, and Linux does
//! so), and a client still writing its body, or one that reads only after writing it all (Python's
//! urllib, most simple clients), then sees "connection reset" instead of the 413 that was already
//! on its way: the reset discards the client's unread receive buffer. Curl, which reads while it
//! writes, saw the 413; urllib lost it 18 times in 20 with a 2 MiB body.
//!
//! How: [`Lingering`] wraps the connection's stream (under TLS or not) and changes only
//! `poll_shutdown`, which hyper calls once, when it is done with the connection. It shuts the
//! write side (FIN, after a TLS `close_notify`), so the client reads the whole answer and then the
//! end of the stream; then reads until the client closes its side (the common case: at once, or
//! right after the rest of its body), the byte bound is reached, or the time bound passes; only
//! then does the stream drop and the socket close. A connection that ended because the client
//! closed it reads that end at once: the cost is one read. A connection hyper abandons on an
//! error (a header-read timeout: a slow-loris) is dropped without lingering.
//!
//! Not done: lingering only when a body was left unread. hyper does not say why it closes,
//! and both bounds keep the cost of lingering on a well-behaved close to a read.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Most bytes read and discarded after the answer: above the rest of any body a client
/// plausibly sends past the largest route body limit, small enough to be read in milliseconds
/// on a local network.
pub const LINGER_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Longest time spent reading after the answer: a client still writing over a slow link gets
/// this long to finish and read its answer; a connection slot is held at most this long more.
pub const LINGER_TIME_MAX: Duration = Duration::from_secs(2);

/// Size of the buffer the discarded bytes are read into, per read.
const DISCARD_CHUNK_BYTES: usize = 16 * 1024;

/// Where a [`Lingering`] stream is in its close.
enum State {
    /// Serving: reads and writes pass through.
    Open,
    /// The write side is shut; reading and discarding until the client closes or a bound.
    Draining {
        deadline: Pin<Box<Sleep>>,
        discarded_bytes: usize,
    },
    /// Closed as far as this wrapper is concerned: the stream may be dropped.
    Closed,
}

/// A stream whose `poll_shutdown` lingers (see the module docs). Reads and writes pass through.
pub struct Lingering<S> {
    inner: S,
    state: State,
}

impl<S> Lingering<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            state: State::Open,
        }
    }
}

impl<S: AsyncRead + Unpin> Lingering<S> {
    /// Reads and discards until the client closes its side, a read fails, or a bound is reached.
    /// Always ends `Ready(Ok)`: the connection is over whatever the client does.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let State::Draining {
            deadline,
            discarded_bytes,
        } = &mut self.state
        else {
            return Poll::Ready(());
        };
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut chunk = [0u8; DISCARD_CHUNK_BYTES];
        while *discarded_bytes < LINGER_BYTES_MAX {
            let mut buffer = ReadBuf::new(&mut chunk);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buffer)) {
                Ok(()) if buffer.filled().is_empty() => return Poll::Ready(()),
                Ok(()) => *discarded_bytes += buffer.filled().len(),
                Err(_) => return Poll::Ready(()),
            }
        }
        Poll::Ready(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Lingering<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Open => {
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.state = State::Draining {
                        deadline: Box::pin(tokio::time::sleep(LINGER_TIME_MAX)),
                        discarded_bytes: 0,
                    };
                }
                State::Draining { .. } => {
                    ready!(this.poll_drain(cx));
                    this.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn shutdown_shuts_the_write_side_then_reads_until_the_client_closes() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut server = Lingering::new(server);
        server.write_all(b"HTTP/1.1 413").await.unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(
            answer, b"HTTP/1.1 413",
            "the answer, then the end of the stream"
        );
        assert!(!closing.is_finished(), "lingers while the client is open");
        client.write_all(&[7; 100_000]).await.unwrap();
        drop(client);
        closing.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn lingering_ends_after_the_time_bound_on_a_silent_client() {
        let (server, _client) = tokio::io::duplex(1024);
        let mut server = Lingering::new(server);
        let started = std::time::Instant::now();
        server.shutdown().await.unwrap();
        let lingered = started.elapsed();
        assert!(lingered >= LINGER_TIME_MAX, "{lingered:?}");
        assert!(lingered < LINGER_TIME_MAX * 2, "{lingered:?}");
    }

    #[tokio::test]
    async fn lingering_ends_after_the_byte_bound_on_an_endless_client() {
        let (server, mut client) = tokio::io::duplex(64 * 1024);
        let mut server = Lingering::new(server);
        let writer = tokio::spawn(async move {
            let chunk = [1u8; 64 * 1024];
            let mut written = 0usize;
            while client.write_all(&chunk).await.is_ok() {
                written += chunk.len();
            }
            written
        });
        tokio::time::timeout(LINGER_TIME_MAX / 2, server.shutdown())
            .await
            .expect("the byte bound ends lingering before the time bound")
            .unwrap();
        drop(server);
        let written = writer.await.unwrap();
        assert!(written >= LINGER_BYTES_MAX, "{written}");
        assert!(written <= LINGER_BYTES_MAX + 2 * 64 * 1024, "{written}");
    }
}
