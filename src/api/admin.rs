//! Admin routes (cluster secret required): the cluster view and membership changes, forwarded
//! to the leader; snapshot and purge on the node asked.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::leader::{self, Attempt, RequestKind};
use super::request::RawRequest;
use crate::app::App;
use crate::client::wire::{
    AddLearnerRequest, ClusterView, Envelope, MembersRequest, SnapshotTaken, TransferLeaderRequest,
};
use crate::membership::{self, MembershipError};

fn view_response(view: ClusterView) -> Response {
    axum::Json(Envelope::ok(view)).into_response()
}

fn attempt_of(result: Result<ClusterView, MembershipError>) -> Attempt {
    Attempt::from_result(result.map(view_response))
}

/// Reads the request and its body (`T`), answering an error response if either is wrong.
async fn parse<T: DeserializeOwned>(
    app: &App,
    request: Request,
) -> Result<(RawRequest, T), Response> {
    let parsed = async {
        let raw = RawRequest::read(app, request).await?;
        let body = raw.json()?;
        Ok::<_, ApiError>((raw, body))
    };
    parsed.await.map_err(IntoResponse::into_response)
}

/// `GET /api/cluster`: members, roles, reachability, matched index and lag, as the leader sees.
pub async fn cluster(State(app): State<Arc<App>>, request: Request) -> Response {
    match RawRequest::read(&app, request).await {
        Ok(raw) => {
            leader::at_leader(&app, &raw, RequestKind::Read, |_| async {
                Attempt::Done(view_response(membership::view(&app)))
            })
            .await
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /api/cluster/learners` `{id, addr, wait?}`.
pub async fn add_learner(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, AddLearnerRequest) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    if body.id == 0 || body.addr.trim().is_empty() {
        return ApiError::validation("id must be positive and addr non-empty").into_response();
    }
    leader::at_leader(&app, &raw, RequestKind::Write, |_| async {
        attempt_of(membership::add_learner(&app, body.id, body.addr.clone(), body.wait).await)
    })
    .await
}

/// `POST /api/cluster/promote` `{ids}`: learners become voters.
pub async fn promote(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, MembersRequest) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    leader::at_leader(&app, &raw, RequestKind::Write, |_| async {
        attempt_of(membership::promote(&app, body.ids.clone()).await)
    })
    .await
}

/// `POST /api/cluster/remove` `{ids, keepAsLearners?}`.
pub async fn remove(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, MembersRequest) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    leader::at_leader(&app, &raw, RequestKind::Write, |_| async {
        attempt_of(membership::remove(&app, body.ids.clone(), body.keep_as_learners).await)
    })
    .await
}

/// `POST /api/cluster/transfer-leader` `{to}`.
pub async fn transfer_leader(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, TransferLeaderRequest) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };
    leader::at_leader(&app, &raw, RequestKind::RetryableWrite, |_| async {
        attempt_of(membership::transfer_leader(&app, body.to).await)
    })
    .await
}

/// `POST /api/cluster/snapshot`: snapshot this node now and purge its log behind it. Works
/// while the disk-space alarm is raised (it is one way to free space), and measures again
/// afterwards so the alarm reflects what it freed.
pub async fn snapshot(State(app): State<Arc<App>>) -> Response {
    let taken = app.snapshot_and_purge().await;
    app.space().refresh_async().await;
    match taken {
        Ok(snapshot_index) => axum::Json(Envelope::ok(SnapshotTaken {
            node_id: app.id(),
            snapshot_index,
        }))
        .into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}
