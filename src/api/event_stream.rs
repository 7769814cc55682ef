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

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::events;
use super::json;
use super::request::RawRequest;
use crate::app::event_stream::{self, Frame, StreamSettings, STREAM_STALL_MAX};
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
    let body = futures::stream::unfold(frames, |mut frames| async move {
        let frame = frames.recv().await?;
        Some((Ok::<_, Infallible>(sse_frame(frame)), frames))
    });
    Ok(Sse::new(body).into_response())
}

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

fn sse_frame(frame: Frame) -> SseEvent {
    match frame {
        Frame::Retry { ms } => SseEvent::default().retry(Duration::from_millis(ms)),
        Frame::KeepAlive { head } => SseEvent::default().comment(format!("head {head}")),
        Frame::Event(event) => {
            let data = serde_json::to_string(&json::event(&event))
                .expect("an event's JSON has string keys only");
            SseEvent::default()
                .id(event.seq.to_string())
                .event(event.kind.as_str())
                .data(data)
        }
    }
}
