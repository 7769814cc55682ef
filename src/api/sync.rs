//! The seed's `/api/sync*` routes, given honest meanings for a replicated store.
//!
//! The seed copied store files to a central view on a timer. stockraft replicates every write
//! before acknowledging it, so there is nothing to copy; instead:
//! - `GET /api/sync/status`: the replication state as the leader sees it (each member's matched
//!   log index and lag behind the leader's last log index), plus this node's snapshot schedule;
//! - `POST /api/sync`: a barrier that returns once this node has applied everything known to be
//!   committed when the call began (after it, `?consistency=local` reads on this node are at
//!   least that fresh);
//! - `POST /api/sync/start` `{intervalMs?}` / `POST /api/sync/stop`: start or stop a periodic
//!   snapshot on this node (in addition to the entry-count policy in `cluster.toml`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::leader::{self, Attempt, RequestKind};
use super::request::RawRequest;
use crate::app::App;
use crate::client::wire::{Barrier, Envelope, SyncStartRequest, SyncStatus, SyncStopped};
use crate::membership;

/// Default period of `/api/sync/start` when no `intervalMs` is given.
pub const SNAPSHOT_INTERVAL_MS_DEFAULT: u64 = 60_000;
/// Bounds on `intervalMs`: a snapshot copies the whole state, so not more than once a second.
pub const SNAPSHOT_INTERVAL_MS_MIN: u64 = 1_000;
pub const SNAPSHOT_INTERVAL_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// `GET /api/sync/status`, served by the leader (forwarded there if needed).
pub async fn status(State(app): State<Arc<App>>, request: Request) -> Response {
    let raw = match RawRequest::read(&app, request).await {
        Ok(raw) => raw,
        Err(error) => return error.into_response(),
    };
    leader::at_leader(&app, &raw, RequestKind::Read, |_| async {
        let view = membership::view(&app);
        Attempt::Done(
            axum::Json(Envelope::ok(SyncStatus {
                leader_id: view.leader_id,
                term: view.term,
                last_log_index: view.last_log_index,
                committed_index: view.committed_index,
                members: view.members,
                snapshot_schedule: app.snapshot_schedule(),
            }))
            .into_response(),
        )
    })
    .await
}

/// `POST /api/sync`: waits until this node applied everything committed when the call began.
pub async fn barrier(State(app): State<Arc<App>>) -> Response {
    let deadline = Duration::from_millis(app.config().api.write_deadline_ms);
    match app.apply_barrier(deadline).await {
        Ok((committed_index, applied_index)) => axum::Json(Envelope::ok(Barrier {
            committed_index,
            applied_index,
        }))
        .into_response(),
        Err(error) => ApiError::unavailable(error.to_string()).into_response(),
    }
}

/// `POST /api/sync/start` `{intervalMs?}`: (re)starts the periodic snapshot on this node.
pub async fn start(State(app): State<Arc<App>>, request: Request) -> Response {
    let parsed = async {
        let raw = RawRequest::read(&app, request).await?;
        let body: SyncStartRequest = raw.json_if_any()?.unwrap_or_default();
        let interval_ms = body.interval_ms.unwrap_or(SNAPSHOT_INTERVAL_MS_DEFAULT);
        if !(SNAPSHOT_INTERVAL_MS_MIN..=SNAPSHOT_INTERVAL_MS_MAX).contains(&interval_ms) {
            return Err(ApiError::validation(format!(
                "intervalMs must be between {SNAPSHOT_INTERVAL_MS_MIN} and {SNAPSHOT_INTERVAL_MS_MAX}"
            )));
        }
        Ok(interval_ms)
    };
    match parsed.await {
        Ok(interval_ms) => {
            axum::Json(Envelope::ok(app.start_snapshot_timer(interval_ms))).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /api/sync/stop`: stops the periodic snapshot on this node.
pub async fn stop(State(app): State<Arc<App>>) -> Response {
    let was_running = app.stop_snapshot_timer();
    axum::Json(Envelope::ok(SyncStopped {
        was_running,
        running: false,
    }))
    .into_response()
}
