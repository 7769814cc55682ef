//! `GET /api/events`: the event feed a page at a time. Linearizable by default (forwarded to
//! the leader from a follower, as record reads are); `?consistency=local` reads this node's
//! applied feed, which may be behind but is the same feed (seqs are assigned in apply).
//!
//! A cursor older than what is kept is a 410 `EVENTS_GONE` naming `details.oldestSeq`, never a
//! silent skip: the consumer knows it missed events and restarts from `oldestSeq - 1` after
//! rebuilding what it derives from them (see the README, "Event feed").

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::inventory::serve_read;
use super::json;
use super::request::{self, RawRequest};
use crate::app::{App, EventsReadError, EVENTS_PAGE_LIMIT_DEFAULT, EVENTS_PAGE_LIMIT_MAX};
use crate::client::wire::{Envelope, EventsPage};
use crate::inventory::{EventFilter, EventKind};
use crate::raft::events::{EventPage, EventsError};

/// `GET /api/events?after=&limit=&storeId=&sku=&type=&consistency=`.
pub async fn page(State(app): State<Arc<App>>, request: Request) -> Response {
    let parsed = async {
        let raw = RawRequest::read(&app, request).await?;
        let after = cursor(raw.query_value("after"))?.unwrap_or(0);
        let limit = page_limit(raw.query_value("limit"))?;
        let filter = filter(&raw)?;
        let consistency = raw.consistency()?;
        Ok::<_, ApiError>((raw, after, limit, filter, consistency))
    };
    let (raw, after, limit, filter, consistency) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let (app, filter) = (&app, &filter);
    serve_read(
        app,
        &raw,
        consistency,
        || render(app.events_local(after, limit, filter)),
        || async move {
            match app.events_linearizable(after, limit, filter).await {
                Ok(page) => Ok(render(Ok(page))),
                Err(EventsReadError::Events(error)) => Ok(render(Err(error))),
                Err(EventsReadError::Read(error)) => Err(error),
            }
        },
    )
    .await
}

fn render(page: Result<EventPage, EventsError>) -> Response {
    match page {
        Ok(page) => {
            let body = EventsPage {
                events: page.events.iter().map(json::event).collect(),
                next: page.next,
                head: page.head,
            };
            axum::Json(Envelope::ok(body)).into_response()
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// A seq cursor (`after`, `Last-Event-ID`): a non-negative integer, or absent.
pub fn cursor(value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|value| {
            value.trim().parse::<u64>().map_err(|_| {
                ApiError::validation(format!(
                    "after must be a non-negative integer (an event's seq), got {value:?}"
                ))
            })
        })
        .transpose()
}

/// `limit`: 1 to [`EVENTS_PAGE_LIMIT_MAX`], [`EVENTS_PAGE_LIMIT_DEFAULT`] when absent.
fn page_limit(value: Option<&str>) -> Result<usize, ApiError> {
    request::page_limit(value, EVENTS_PAGE_LIMIT_DEFAULT, EVENTS_PAGE_LIMIT_MAX)
}

/// `storeId=`, `sku=` and `type=` (one or more kinds, comma-separated) of a feed request.
pub fn filter(raw: &RawRequest) -> Result<EventFilter, ApiError> {
    let store_id = raw.query_value("storeId").map(str::to_owned);
    if let Some(store_id) = &store_id {
        request::store_id(store_id)?;
    }
    let sku = raw.query_value("sku").map(str::to_owned);
    if let Some(sku) = &sku {
        request::sku(sku)?;
    }
    let kinds = raw.query_value("type").map(kinds).transpose()?;
    Ok(EventFilter {
        store_id,
        sku,
        kinds,
    })
}

fn kinds(value: &str) -> Result<Vec<EventKind>, ApiError> {
    value
        .split(',')
        .map(|name| {
            EventKind::parse(name).ok_or_else(|| {
                let names: Vec<&str> = EventKind::ALL.iter().map(|kind| kind.as_str()).collect();
                ApiError::validation(format!(
                    "type must be one or more of {} (comma-separated), got {name:?}",
                    names.join(", ")
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_a_seq_and_a_limit_one_to_a_thousand() {
        assert_eq!(cursor(None).unwrap(), None);
        assert_eq!(cursor(Some("0")).unwrap(), Some(0));
        assert_eq!(cursor(Some("42")).unwrap(), Some(42));
        for bad in ["-1", "x", "", "1.5"] {
            assert!(cursor(Some(bad)).is_err(), "{bad:?}");
        }
        assert_eq!(page_limit(None).unwrap(), 100);
        assert_eq!(page_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "x"] {
            assert!(page_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn types_are_the_event_kinds_by_name() {
        assert_eq!(
            kinds("held,expired").unwrap(),
            [EventKind::Held, EventKind::Expired]
        );
        assert!(kinds("held,sold").is_err());
        assert!(kinds("").is_err());
    }
}
