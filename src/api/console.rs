//! The operator console: one page (`GET /ui/`) showing the cluster, a SKU, a reservation and
//! the live event feed, served by every node on its client listener.
//!
//! Its three files (in `console/` beside this module: HTML, one script, one style sheet, and the
//! ESLint configuration that checks the script) are compiled into the binary with `include_str!`: no separate server, no CDN, nothing fetched at
//! build or run time, so a node's console works offline and matches the node's own API. They
//! stay small ([`CONSOLE_BYTES_MAX`], checked at build time), plain and framework-free.
//!
//! The page is a client of the public API like any other, nothing more: it reads with the
//! token typed into it (kept in the tab's session storage, sent as `Authorization: Bearer`),
//! through the same scoped routes, so tokens and scopes apply to it exactly as to `curl`. The
//! pages themselves are open, like health: they hold no data. What the page calls:
//! `/api/whoami` (which actions to offer), `/api/status` (the cluster panel), the SKU view,
//! reservation and event routes, and the event stream (read with `fetch`, since a browser's
//! `EventSource` cannot send a token).
//!
//! Every answer carries a Content-Security-Policy that allows only this origin's own script,
//! style and requests: nothing injected into a SKU or a store id can run as script, and the
//! page cannot be framed.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;
use crate::client::routes;

/// The console's files together stay under this: a page an operator's browser loads in an
/// instant over any link, and a guard against the console growing a framework.
pub const CONSOLE_BYTES_MAX: usize = 150 * 1024;

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("console/index.html"),
};

/// The files the page loads, by the name it asks for them under `/ui/`.
const ASSETS: [Asset; 2] = [
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console/console.css"),
    },
];

// Checked when the binary is built: the console cannot grow past its budget unnoticed.
const _: () = assert!(
    INDEX.body.len() + ASSETS[0].body.len() + ASSETS[1].body.len() < CONSOLE_BYTES_MAX,
    "the console's files weigh more than CONSOLE_BYTES_MAX"
);

/// Only this origin's own files and API; no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /ui`: the page lives at `/ui/` (its files are named relative to it).
pub async fn root() -> Response {
    Redirect::permanent(routes::console::INDEX).into_response()
}

/// `GET /ui/`: the page.
pub async fn index() -> Response {
    serve(&INDEX)
}

/// `GET /ui/{asset}`: one of its files; any other name is a 404.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => serve(asset),
        None => ApiError::not_found(format!("the console has no file {name:?}")).into_response(),
    }
}

fn serve(asset: &Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            // Always asked again (cheap): after an upgrade the page matches the node's API.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_exactly_the_files_served_and_nothing_inline() {
        for asset in &ASSETS {
            assert!(
                INDEX.body.contains(&format!("\"{}\"", asset.name)),
                "index.html does not load {}",
                asset.name
            );
        }
        // Nothing from elsewhere, nothing inline the policy would block.
        for needle in ["http://", "https://", "<script>", " style=\"", " onclick="] {
            assert!(!INDEX.body.contains(needle), "index.html holds {needle:?}");
        }
        assert!(
            !ASSETS[0].body.contains("innerHTML"),
            "console.js writes text, not HTML"
        );
    }
}
