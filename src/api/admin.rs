//! Admin routes (cluster secret required): the cluster view and membership changes, forwarded
//! to the leader; snapshot and purge on the node asked; a backup streamed by the node asked.
//!
//! ## The backup stream
//! `GET /api/admin/backup` answers once the node holds the state to back up
//! (`App::backup_source`: a follower waits until it has applied the leader's commit index, it
//! does not forward), then streams the file: a blocking task writes it ([`backup::write_backup`])
//! into a channel of at most [`BACKUP_CHUNKS_IN_FLIGHT`] chunks of [`BACKUP_CHUNK_BYTES`], which
//! the body drains, so a slow client holds the writer back instead of the node buffering the
//! state. If writing fails half-way the body ends with an error (the connection is cut): the
//! client's copy then fails its checksum, never passing for a whole backup.

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::leader::{self, Attempt, RequestKind};
use super::request::RawRequest;
use crate::app::backups::BackupSource;
use crate::app::App;
use crate::backup;
use crate::client::wire::{
    AddLearnerRequest, ClusterView, Envelope, MembersRequest, SnapshotTaken, TransferLeaderRequest,
};
use crate::membership::{self, MembershipError};

/// Bytes of one chunk of a streamed backup.
pub const BACKUP_CHUNK_BYTES: usize = 256 << 10;
/// Chunks of a streamed backup written and not yet sent: with the chunk size, the most a
/// backup stream buffers (1 MiB), whatever the state's size.
pub const BACKUP_CHUNKS_IN_FLIGHT: usize = 4;
/// The response header naming the backup's log index.
pub const BACKUP_INDEX_HEADER: &str = "x-stockraft-backup-index";

type Chunk = io::Result<Vec<u8>>;

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

/// `GET /api/admin/backup`: a backup of the cluster's state, streamed (module docs).
pub async fn backup(State(app): State<Arc<App>>) -> Response {
    let source = match app.backup_source().await {
        Ok(source) => source,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let index = source.snapshot.meta.last_log_id.map_or(0, |id| id.index);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Chunk>(BACKUP_CHUNKS_IN_FLIGHT);
    tokio::spawn(stream_backup(source, sender));
    let chunks = futures::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((chunk, receiver))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(BACKUP_INDEX_HEADER, index)
        .body(Body::from_stream(chunks))
        .expect("a response of valid headers")
}

/// Writes the backup of `source` into `sender` on the blocking pool; a failure ends the stream
/// with the error (and is logged).
async fn stream_backup(source: BackupSource, sender: tokio::sync::mpsc::Sender<Chunk>) {
    let errors = sender.clone();
    let written = crate::storage::fs::blocking(move || {
        let sink = ChannelWriter {
            sender,
            buffer: Vec::with_capacity(BACKUP_CHUNK_BYTES),
        };
        let snapshot = &source.snapshot;
        let (mut sink, written) =
            backup::write_backup(&snapshot.snapshot, &snapshot.meta, source.cluster, sink)?;
        sink.flush()?;
        Ok(written)
    })
    .await;
    match written {
        Ok(written) => tracing::info!(
            index = written.header.log_index,
            bytes = written.size_bytes,
            "streamed a backup"
        ),
        Err(error) => {
            tracing::warn!(%error, "a backup stream failed; the client's copy is cut short");
            // The client may be gone already (which is what failed): nothing more to tell it.
            let _ = errors.send(Err(error)).await;
        }
    }
}

/// An [`io::Write`] into a bounded channel of chunks, blocking while it is full (run it on the
/// blocking pool). Fails once the receiver is gone (the client hung up).
struct ChannelWriter {
    sender: tokio::sync::mpsc::Sender<Chunk>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(BACKUP_CHUNK_BYTES));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client hung up"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = BACKUP_CHUNK_BYTES - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == BACKUP_CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffer()
    }
}
