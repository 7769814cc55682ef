//! `GET /api/events/stream`: the event feed as Server-Sent Events, served by every node from
//! its own applied state (it never forwards: a follower streams what it has applied, in order).
//!
//! The answer is `text/event-stream`: first `retry: 1000` (the reconnection delay a client
//! should use), then one frame per event, `id: <seq>`, `event: <type>`, `data: <the event's JSON
//! as the paged route renders it>`, and a comment `: head <last seq>` after every
//! `events.keep_alive_ms` without a frame. The cursor is `Last-Event-ID` when the client
//! sends one (a reconnect), else `?after=` (default 0); filters `storeId`, `sku` and `type` as
//! on the paged route (`api::events`).
//!
//! Errors, in the seed's shape and before any byte of the stream: 400 on a bad parameter or
//! `Last-Event-ID`; 410 `EVENTS_GONE` with `details.oldestSeq` when events after the cursor
//! are no longer kept; 503 `OVERLOADED` when `events.subscribers_max` streams are already open
//! on this node. Once streaming, the stream simply ends (the client resumes from its last id):
//! when retention overtakes it, when it falls `events.stream_backlog_max` events behind
//! (`app::event_stream`), or when the body stays full for `STREAM_STALL_MAX`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::events;
use super::json;
use super::request::RawRequest;
use crate::app::event_stream::{self, Frame, StreamSettings, STREAM_STALL_MAX};
use crate::app::recent_feed::FeedItem;
use crate::app::App;

/// The SSE request header naming the last event a reconnecting client received.
pub const LAST_EVENT_ID: &str = "last-event-id";

/// `GET /api/events/stream`.
pub async fn stream(State(app): State<Arc<App>>, request: Request) -> Response {
    match open(app, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn open(app: Arc<App>, request: Request) -> Result<Response, ApiError> {
    let last_event_id = last_event_id(request.headers())?;
    let raw = RawRequest::read(&app, request).await?;
    let after = events::cursor(raw.query_value("after"))?.unwrap_or(0);
    let after = last_event_id.unwrap_or(after);
    let filter = events::filter(&raw)?;
    let Some(slot) = app.feed_subscriber_slot() else {
        return Err(ApiError::overloaded(format!(
            "{} event streams are open on this node, its limit (events.subscribers_max); \
             retry later or on another node",
            app.config().events.subscribers_max
        )));
    };
    let node = app.id();
    let frames = event_stream::open(app.clone(), after, filter, settings(&app), move |end| {
        drop(slot);
        tracing::debug!(node, ?end, "event stream ended");
    })?;
    // Every frame waiting when the body is polled goes out as one chunk (one write for many
    // events when the subscriber is busy, one per event when it is not).
    let body = futures::stream::unfold(frames, |mut frames| async move {
        let mut chunk = Vec::new();
        write_frame(frames.recv().await?, &mut chunk);
        while chunk.len() < STREAM_CHUNK_BYTES {
            match frames.try_recv() {
                Ok(frame) => write_frame(frame, &mut chunk),
                Err(_) => break,
            }
        }
        Some((Ok::<_, Infallible>(Bytes::from(chunk)), frames))
    });
    let headers = [
        (header::CONTENT_TYPE, "text/event-stream"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    Ok((headers, Body::from_stream(body)).into_response())
}

/// A chunk of the stream's body is cut after this many bytes of frames.
const STREAM_CHUNK_BYTES: usize = 64 << 10;

fn settings(app: &App) -> StreamSettings {
    let config = &app.config().events;
    StreamSettings {
        keepalive: Duration::from_millis(config.keep_alive_ms),
        backlog_max: config.stream_backlog_max,
        stall_max: STREAM_STALL_MAX,
    }
}

/// `Last-Event-ID`, when sent: a seq (an empty value, as the SSE standard allows a client to
/// send, means none).
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(LAST_EVENT_ID) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("?").trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        ApiError::validation(format!(
            "Last-Event-ID must be an event's seq (a whole number), got {text:?}"
        ))
    })
}

/// Appends `frame` to `out` in the SSE format (a field per line, `name: value`; a blank line
/// ends the frame; a comment is a line starting with `:`).
fn write_frame(frame: Frame, out: &mut Vec<u8>) {
    match frame {
        Frame::Retry { ms } => out.extend_from_slice(format!("retry: {ms}\n\n").as_bytes()),
        Frame::KeepAlive { head } => out.extend_from_slice(format!(": head {head}\n\n").as_bytes()),
        Frame::Events(items) => {
            // Rendered once for all of the node's subscribers (`app::recent_feed`); the chunk
            // grows once, to its exact size, before the texts are copied in.
            let texts: Vec<&str> = items.iter().map(|item| rendered(item)).collect();
            out.reserve(texts.iter().map(|text| text.len()).sum());
            for text in texts {
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

/// `item`'s SSE frame text, rendered by the first subscriber that sends it.
fn rendered(item: &FeedItem) -> &str {
    item.rendered.get_or_init(|| {
        let data = serde_json::to_string(&json::event(&item.event))
            .expect("an event's JSON has string keys only");
        // Compact JSON escapes every line break, so `data:` is one line.
        assert!(!data.contains(['\n', '\r']), "an event's JSON is one line");
        format!(
            "id: {}\nevent: {}\ndata: {data}\n\n",
            item.event.seq,
            item.event.kind.as_str()
        )
    })
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::inventory::{Event, EventKind, RecordKey};

    #[test]
    fn frames_are_written_in_the_sse_format_and_an_event_is_rendered_once() {
        let item = FeedItem::new(Event {
            seq: 7,
            log_index: 9,
            kind: EventKind::Held,
            key: RecordKey::new("s1", "a").unwrap(),
            quantity: 3,
            reserved: 2,
            delta: Some(-2),
            version: 4,
            reservation_id: None,
            idempotency_key: None,
            at_ms: 5,
        });
        let mut out = Vec::new();
        write_frame(Frame::Retry { ms: 1000 }, &mut out);
        write_frame(Frame::KeepAlive { head: 6 }, &mut out);
        write_frame(Frame::Events(vec![item.clone()]), &mut out);
        let text = String::from_utf8(out).unwrap();
        let data = serde_json::to_string(&json::event(&item.event)).unwrap();
        assert_eq!(
            text,
            format!("retry: 1000\n\n: head 6\n\nid: 7\nevent: held\ndata: {data}\n\n")
        );
        // The second subscriber sends the same rendering.
        let mut again = Vec::new();
        write_frame(Frame::Events(vec![item.clone()]), &mut again);
        assert!(text.ends_with(std::str::from_utf8(&again).unwrap()));
        assert!(item.rendered.get().is_some());
    }
}
