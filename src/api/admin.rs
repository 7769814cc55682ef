//! Admin routes (cluster secret required): the cluster view and membership changes, forwarded
//! to the leader; snapshot and purge on the node asked.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::inventory::{json_body, read_request};
use super::leader::{self, Attempt, RawRequest, RequestKind};
use crate::app::App;
use crate::membership::{self, ClusterView, MembershipError};
use crate::raft::NodeId;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AddLearnerBody {
    id: NodeId,
    addr: String,
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IdsBody {
    ids: BTreeSet<NodeId>,
    #[serde(default)]
    keep_as_learners: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TransferBody {
    to: NodeId,
}

fn view_response(view: &ClusterView) -> Response {
    axum::Json(json!({ "success": true, "data": view })).into_response()
}

fn attempt_of(result: Result<ClusterView, MembershipError>) -> Attempt {
    match result {
        Ok(view) => Attempt::Done(view_response(&view)),
        Err(MembershipError::NotLeader { .. }) => Attempt::NotLeader,
        Err(MembershipError::Refused(message)) => Attempt::Done(refused(message)),
        Err(MembershipError::OutcomeUnknown(message)) => Attempt::Unknown(message),
    }
}

fn refused(message: String) -> Response {
    let mut error = ApiError::validation(message);
    error.status = StatusCode::CONFLICT;
    error.code = "MEMBERSHIP_CHANGE_REFUSED";
    error.name = "ConflictError";
    error.into_response()
}

async fn parse<T: serde::de::DeserializeOwned>(
    app: &App,
    request: Request,
) -> Result<(RawRequest, T), ApiError> {
    let raw = read_request(app, request).await?;
    let body = json_body(&raw)?;
    Ok((raw, body))
}

/// `GET /api/cluster`: members, roles, reachability, matched index and lag, as the leader sees.
pub async fn cluster(State(app): State<Arc<App>>, request: Request) -> Response {
    match read_request(&app, request).await {
        Ok(raw) => {
            leader::at_leader(&app, &raw, RequestKind::Read, |_| async {
                Attempt::Done(view_response(&membership::view(&app)))
            })
            .await
        }
        Err(error) => error.into_response(),
    }
}

/// `POST /api/cluster/learners` `{id, addr, wait?}`.
pub async fn add_learner(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, AddLearnerBody) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
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
    let (raw, body): (_, IdsBody) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    leader::at_leader(&app, &raw, RequestKind::Write, |_| async {
        attempt_of(membership::promote(&app, body.ids.clone()).await)
    })
    .await
}

/// `POST /api/cluster/remove` `{ids, keepAsLearners?}`.
pub async fn remove(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, IdsBody) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    leader::at_leader(&app, &raw, RequestKind::Write, |_| async {
        attempt_of(membership::remove(&app, body.ids.clone(), body.keep_as_learners).await)
    })
    .await
}

/// `POST /api/cluster/transfer-leader` `{to}`.
pub async fn transfer_leader(State(app): State<Arc<App>>, request: Request) -> Response {
    let (raw, body): (_, TransferBody) = match parse(&app, request).await {
        Ok(parsed) => parsed,
        Err(error) => return error.into_response(),
    };
    leader::at_leader(&app, &raw, RequestKind::RetryableWrite, |_| async {
        attempt_of(membership::transfer_leader(&app, body.to).await)
    })
    .await
}

/// `POST /api/cluster/snapshot`: snapshot this node now and purge its log behind it.
pub async fn snapshot(State(app): State<Arc<App>>) -> Response {
    match membership::snapshot_and_purge(&app).await {
        Ok(index) => axum::Json(
            json!({ "success": true, "data": { "nodeId": app.id, "snapshotIndex": index } }),
        )
        .into_response(),
        Err(error) => ApiError::unavailable(error.to_string()).into_response(),
    }
}
