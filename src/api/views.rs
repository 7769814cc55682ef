//! The views over many records (issue 31): one SKU in every store, and one store's records a
//! page at a time. The seed's central aggregator summed what stores reported, eventually; these
//! read the replicated state, linearizable by default (`?consistency=local` as for one record).
//!
//! A store page's cursor is opaque to clients: the hex of the last SKU of the page. Hex, not
//! the SKU itself, so that no client comes to depend on reading it; a cursor that does not
//! decode to a valid SKU is a 400.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::inventory::serve_read;
use super::json;
use super::request::{self, PathOne, RawRequest};
use crate::app::{App, Counted};
use crate::client::wire::{Envelope, SkuView, StorePage};
use crate::inventory::Record;

/// Records in a store page when the request names no `limit`.
pub const STORE_PAGE_LIMIT_DEFAULT: usize = 100;
/// Most records a store page may ask for (`limit`).
pub const STORE_PAGE_LIMIT_MAX: usize = crate::app::STORE_PAGE_RECORDS_MAX;

/// `GET /api/inventory/skus/:sku`: every store's record of the SKU, ordered by store id, and
/// their totals. A SKU no store has is an empty list, not a 404: the view is of the SKU.
pub async fn sku(State(app): State<Arc<App>>, PathOne(sku): PathOne, request: Request) -> Response {
    app.count(Counted::GetInventory);
    let parsed = async {
        let raw = RawRequest::read(&app, request).await?;
        request::sku(&sku)?;
        let consistency = raw.consistency()?;
        Ok::<_, ApiError>((raw, consistency))
    };
    let (raw, consistency) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let (app, sku) = (&app, sku.as_str());
    serve_read(
        app,
        &raw,
        consistency,
        || render_sku(sku, app.sku_records_local(sku).map_err(internal)),
        || async move {
            let records = app.sku_records_linearizable(sku).await?;
            Ok(render_sku(sku, Ok(records)))
        },
    )
    .await
}

/// `GET /api/inventory/stores/:storeId?limit=&after=`: a page of the store's records, ordered by
/// SKU, and the cursor of the next page (`null` on the last).
pub async fn store(
    State(app): State<Arc<App>>,
    PathOne(store_id): PathOne,
    request: Request,
) -> Response {
    app.count(Counted::GetInventory);
    let parsed = async {
        let raw = RawRequest::read(&app, request).await?;
        request::store_id(&store_id)?;
        let limit = page_limit(raw.query_value("limit"))?;
        let after = raw.query_value("after").map(decode_cursor).transpose()?;
        let consistency = raw.consistency()?;
        Ok::<_, ApiError>((raw, limit, after, consistency))
    };
    let (raw, limit, after, consistency) = match parsed.await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    let (app, store_id, after) = (&app, store_id.as_str(), after.as_deref());
    serve_read(
        app,
        &raw,
        consistency,
        || {
            let page = app.store_records_local(store_id, after, limit);
            render_page(page.map_err(internal))
        },
        || async move {
            let page = app
                .store_records_linearizable(store_id, after, limit)
                .await?;
            Ok(render_page(Ok(page)))
        },
    )
    .await
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::internal(error.to_string())
}

fn render_sku(sku: &str, records: Result<Vec<Record>, ApiError>) -> Response {
    match records {
        Ok(records) => {
            let view = SkuView {
                sku: sku.to_owned(),
                totals: json::totals(&records),
                stores: records.iter().map(json::record).collect(),
            };
            axum::Json(Envelope::ok(view)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn render_page(page: Result<(Vec<Record>, bool), ApiError>) -> Response {
    match page {
        Ok((records, more)) => {
            let next = match (more, records.last()) {
                (true, Some(last)) => Some(encode_cursor(&last.key.sku)),
                _ => None,
            };
            let page = StorePage {
                items: records.iter().map(json::record).collect(),
                next,
            };
            axum::Json(Envelope::ok(page)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// `limit`: 1 to [`STORE_PAGE_LIMIT_MAX`], [`STORE_PAGE_LIMIT_DEFAULT`] when absent.
fn page_limit(value: Option<&str>) -> Result<usize, ApiError> {
    request::page_limit(value, STORE_PAGE_LIMIT_DEFAULT, STORE_PAGE_LIMIT_MAX)
}

/// The cursor after `sku`: its bytes in lower-case hex.
fn encode_cursor(sku: &str) -> String {
    sku.bytes().map(|byte| format!("{byte:02x}")).collect()
}

/// The SKU a cursor names: 400 unless it is [`encode_cursor`] of a valid SKU.
fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let invalid =
        || ApiError::validation(format!("after is not a cursor this API gave: {cursor:?}"));
    if !cursor.len().is_multiple_of(2) || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&cursor[at..at + 2], 16).map_err(|_| invalid()))
        .collect::<Result<Vec<u8>, ApiError>>()?;
    let sku = String::from_utf8(bytes).map_err(|_| invalid())?;
    request::sku(&sku).map_err(|_| invalid())?;
    Ok(sku)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_a_sku_and_nothing_else_is_a_cursor() {
        for sku in ["A", "sku-0042", "x.y_z"] {
            assert_eq!(decode_cursor(&encode_cursor(sku)).unwrap(), sku);
        }
        for bad in ["", "4", "zz", "2f", "41 42", "c3a9"] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_page_limit_is_one_to_a_thousand_and_a_hundred_by_default() {
        assert_eq!(page_limit(None).unwrap(), 100);
        assert_eq!(page_limit(Some("1")).unwrap(), 1);
        assert_eq!(page_limit(Some("1000")).unwrap(), 1000);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert!(page_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
