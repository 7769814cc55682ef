//! openraft's network traits over a [`Transport`].
//!
//! Every Raft RPC is an HTTP `POST` to a `/raft/...` route of the target node, body and answer in
//! bincode, carrying the cluster secret. The answer body is `Result<Reply, String>`: a remote
//! Raft error here is always fatal at the remote (it is shutting down), which openraft treats like
//! an unreachable node, so its text is all we need.
//!
//! Every request carries this node's identity headers (`identity`: cluster id, node id and
//! incarnation, and the incarnation it knows of the target), and every answer is checked
//! against the target's recorded identity before openraft sees it: an answer from another
//! cluster or another incarnation of the target (a wiped voter) is an error, never a vote or an
//! acknowledgement. So is a refusal (409) by the target.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{NodeId, Snapshot, SnapshotMeta, TypeConfig, Vote};
use crate::client::routes::raft as routes;
use crate::client::wire::ErrorBody;
use crate::identity::{AdmitError, Identity, Presented};
use crate::storage::encode;
use crate::storage::fs::blocking;
use crate::storage::snapshots::SnapshotFile;
use crate::telemetry::{SnapshotPhase, Telemetry};
use crate::transport::{Transport, WireRequest};

/// Why a Raft RPC body (a request at the server, a reply at the client) could not be read.
#[derive(Debug, thiserror::Error)]
#[error("undecodable Raft RPC body: {0}")]
pub struct RpcDecodeError(String);

/// Encodes a Raft RPC body (bincode 2, as on disk).
pub fn encode_rpc<T: Serialize>(value: &T) -> Vec<u8> {
    encode(value)
}

/// Most bytes one Raft RPC body may make the decoder claim. A length prefix is trusted only up
/// to this: without a limit, a 20-byte body claiming a 2^40-byte string makes the allocation
/// fail and the process abort. It is the transport's body limit: nothing a body may carry
/// between nodes is larger. Bodies are far smaller (entries are under 100 KiB, at most a few
/// hundred per append, and at most [`APPEND_ENTRIES_BYTES_MAX`] of them; snapshot chunks 1 MiB).
pub const RPC_DECODE_LIMIT_BYTES: usize = crate::transport::BODY_LIMIT_BYTES;

/// Most bytes of entries (their encoding) one AppendEntries request carries. openraft sends up
/// to `max_payload_entries` (300) entries at once, a count sized for entries of a few hundred
/// bytes; a batch entry (`inventory::Command::Batch`, 10,000 lines) is up to ~1.1 MiB, and 300
/// of them would pass the body limit ([`RPC_DECODE_LIMIT_BYTES`]) and never be delivered: a
/// follower behind by such entries would never catch up. Past this many bytes a request carries
/// the longest prefix that fits (at least one entry), and its success is reported to openraft
/// as a `PartialSuccess` up to the last entry sent, so it sends the rest next.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 16 << 20;

// A request at the budget, plus one entry over it (the last taken), fits the body limit.
const _: () = assert!(APPEND_ENTRIES_BYTES_MAX + (2 << 20) < RPC_DECODE_LIMIT_BYTES);

/// Keeps the longest prefix of `entries` whose encoding takes at most `bytes_max` (and at
/// least one entry); whether any was left out. Measured without allocating (bincode counts).
fn fit_entries(entries: &mut Vec<super::Entry>, bytes_max: usize) -> bool {
    let mut total = 0usize;
    for (kept, entry) in entries.iter().enumerate() {
        let mut size = bincode::enc::write::SizeWriter::default();
        bincode::serde::encode_into_writer(entry, &mut size, bincode::config::standard())
            .expect("measuring an encoding cannot fail");
        total = total.saturating_add(size.bytes_written);
        if total > bytes_max && kept > 0 {
            entries.truncate(kept);
            return true;
        }
    }
    false
}

/// Decodes a Raft RPC body (a request at the server, a reply at the client), refusing any
/// length that claims more than [`RPC_DECODE_LIMIT_BYTES`].
pub fn decode_rpc<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcDecodeError> {
    let config = bincode::config::standard().with_limit::<RPC_DECODE_LIMIT_BYTES>();
    bincode::serde::decode_from_slice(bytes, config)
        .map(|(value, _)| value)
        .map_err(|error| RpcDecodeError(error.to_string()))
}

/// The body of a full-snapshot RPC.
/// One chunk of a snapshot transfer. A snapshot file travels as consecutive chunks of at most
/// [`SNAPSHOT_CHUNK_BYTES`], each a request of its own: neither side ever holds more than one
/// chunk of it in memory. The receiver appends chunk after chunk to a temporary file, checks
/// the whole file's checksum after the last, and only then installs it.
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// Names the transfer (sender and snapshot), so that a retry restarts the same file.
    pub transfer: String,
    /// Where `data` goes in the file; a transfer starts at 0.
    pub offset: u64,
    pub data: Vec<u8>,
    /// The last chunk: install after it.
    pub done: bool,
}

/// Bytes of snapshot per chunk request.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The largest snapshot chunk this process has held (sent or received), for the metrics and
/// the test that snapshot memory stays bounded.
static SNAPSHOT_CHUNK_BYTES_PEAK: AtomicUsize = AtomicUsize::new(0);

/// Records a chunk of `bytes` held in memory.
pub fn note_snapshot_chunk(bytes: usize) {
    SNAPSHOT_CHUNK_BYTES_PEAK.fetch_max(bytes, Ordering::Relaxed);
}

/// See [`SNAPSHOT_CHUNK_BYTES_PEAK`].
pub fn snapshot_chunk_bytes_peak() -> usize {
    SNAPSHOT_CHUNK_BYTES_PEAK.load(Ordering::Relaxed)
}

/// Creates one [`PeerClient`] per target; they share the transport.
#[derive(Clone)]
pub struct NetworkFactory {
    own_id: NodeId,
    transport: Arc<dyn Transport>,
    secret: Arc<str>,
    identity: Arc<Identity>,
    telemetry: Option<Arc<Telemetry>>,
}

impl NetworkFactory {
    pub fn new(
        own_id: NodeId,
        transport: Arc<dyn Transport>,
        secret: Arc<str>,
        identity: Arc<Identity>,
    ) -> Self {
        Self {
            own_id,
            transport,
            secret,
            identity,
            telemetry: None,
        }
    }

    /// The same factory, reporting snapshot transfers to `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            own_id: self.own_id,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            secret: self.secret.clone(),
            identity: self.identity.clone(),
            telemetry: self.telemetry.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    own_id: NodeId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
    secret: Arc<str>,
    identity: Arc<Identity>,
    telemetry: Option<Arc<Telemetry>>,
}

impl PeerClient {
    async fn call<Req: Serialize, Reply: DeserializeOwned>(
        &self,
        route: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Reply, Unreachable<TypeConfig>> {
        let mut wire =
            WireRequest::post_bytes(route, encode_rpc(request)).with_secret(&self.secret);
        wire.headers
            .extend(self.identity.request_headers(self.target));
        let response = self
            .transport
            .send(&self.addr, wire, timeout)
            .await
            .map_err(Unreachable::from_string)?;
        if response.status == 409 {
            if let Ok(refused) = serde_json::from_slice::<ErrorBody>(&response.body) {
                self.identity
                    .warn_refused_by(self.target, &refused.error.message);
            }
        }
        if response.status != 200 {
            return Err(Unreachable::from_string(format!(
                "node {} answered {} on {route}: {}",
                self.target,
                response.status,
                String::from_utf8_lossy(&response.body)
            )));
        }
        let presented = Presented::from_headers(|name| response.header(name));
        match self.identity.admit_reply(self.target, &presented).await {
            Ok(()) => {}
            Err(AdmitError::Refused(refusal)) => {
                self.identity.warn(
                    &refusal,
                    &format!("ignored the answer of node {}", self.target),
                );
                return Err(Unreachable::from_string(refusal.to_string()));
            }
            Err(AdmitError::Storage(error)) => return Err(Unreachable::from_string(error)),
        }
        let reply: Result<Reply, String> =
            decode_rpc(&response.body).map_err(Unreachable::from_string)?;
        reply
            .map_err(|message| Unreachable::from_string(format!("node {}: {message}", self.target)))
    }
}

impl PeerClient {
    /// Streams `snapshot` chunk by chunk; the answer to the last chunk is the receiver's.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let file = snapshot.snapshot;
        let (index, term) = snapshot
            .meta
            .last_log_id
            .as_ref()
            .map_or((0, 0), |id| (id.index, id.leader_id.term));
        let transfer = format!("n{}-{index}-{term}", self.own_id);
        let started = tokio::time::Instant::now();
        let sent = |response| {
            if let Some(telemetry) = &self.telemetry {
                telemetry.snapshot_done(SnapshotPhase::Send, started.elapsed(), file.size());
            }
            Ok(response)
        };
        let mut offset = 0u64;
        loop {
            let reader = file.clone();
            let data = blocking(move || reader.read_chunk(offset, SNAPSHOT_CHUNK_BYTES))
                .await
                .map_err(|error| {
                    Unreachable::from_string(format!("reading the snapshot: {error}"))
                })?;
            note_snapshot_chunk(data.len());
            let len = data.len() as u64;
            let done = offset + len >= file.size();
            let chunk = SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                transfer: transfer.clone(),
                offset,
                data,
                done,
            };
            let reply: Option<SnapshotResponse<TypeConfig>> = self
                .call(routes::SNAPSHOT, &chunk, option.hard_ttl())
                .await?;
            match (done, reply) {
                (true, Some(response)) => return sent(response),
                (true, None) => {
                    return Err(Unreachable::from_string(format!(
                        "node {} did not answer the last snapshot chunk",
                        self.target
                    ))
                    .into())
                }
                // The receiver answers early when it already has a newer vote.
                (false, Some(response)) => return Ok(response),
                (false, None) => offset += len,
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let trimmed = fit_entries(&mut rpc.entries, APPEND_ENTRIES_BYTES_MAX);
        let last_sent = rpc.entries.last().map(|entry| entry.log_id);
        let reply = self.call(routes::APPEND, &rpc, option.hard_ttl()).await?;
        Ok(match reply {
            // The entries sent matched: openraft sends the rest from there.
            AppendEntriesResponse::Success if trimmed => {
                AppendEntriesResponse::PartialSuccess(last_sent)
            }
            reply => reply,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(routes::VOTE, &rpc, option.hard_ttl()).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(routes::PRE_VOTE, &rpc, option.hard_ttl()).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let send = self.send_snapshot(vote, snapshot, option);
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => reply,
        }
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self
            .call(routes::TRANSFER_LEADER, &request, option.hard_ttl())
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Command, IdempotencyKey, NewRecord, RecordKey, Request};

    /// bincode 2's varint for a u64 of 2^`exponent` (>= 2^32): a 0xFD tag and 8 bytes.
    fn huge_length(exponent: u32) -> Vec<u8> {
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&(1u64 << exponent).to_le_bytes());
        bytes
    }

    fn sample() -> Vec<u8> {
        let key = RecordKey {
            store_id: "store-1".into(),
            sku: "SKU-1".into(),
        };
        encode_rpc(&Request {
            command: Command::CreateBatch {
                records: vec![
                    NewRecord {
                        key: key.clone(),
                        initial_quantity: 5,
                    };
                    3
                ],
            },
            proposed_at_ms: 1,
            idempotency: Some(IdempotencyKey {
                scope: "client:shop-1".into(),
                key: "order-42".into(),
                ttl_ms: 1000,
            }),
        })
    }

    /// An entry holding the largest batch: 10,000 lines with the longest ids and values.
    fn largest_batch_entry(index: u64) -> crate::raft::Entry {
        use crate::inventory::{BatchLine, ErrorPolicy, BATCH_LINES_MAX};
        use crate::inventory::{SKU_LENGTH_MAX, STORE_ID_LENGTH_MAX};
        use openraft::vote::RaftLeaderIdExt;
        let lines: Vec<BatchLine> = (0..BATCH_LINES_MAX)
            .map(|n| BatchLine::Reserve {
                key: RecordKey {
                    store_id: "s".repeat(STORE_ID_LENGTH_MAX),
                    sku: format!("{n:0>width$}", width = SKU_LENGTH_MAX),
                },
                quantity: i64::MAX,
                expected_version: Some(u64::MAX),
                ttl_ms: Some(u64::MAX),
            })
            .collect();
        let leader = <crate::raft::TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(
            u64::MAX,
            u64::MAX,
        );
        crate::raft::Entry {
            log_id: crate::raft::LogId::new(leader, index),
            payload: openraft::EntryPayload::Normal(Request {
                command: Command::packed_batch(&lines, ErrorPolicy::RejectFailedLines),
                proposed_at_ms: u64::MAX,
                idempotency: Some(IdempotencyKey {
                    scope: "s".repeat(crate::inventory::IDEMPOTENCY_SCOPE_LENGTH_MAX),
                    key: "k".repeat(crate::inventory::IDEMPOTENCY_KEY_LENGTH_MAX),
                    ttl_ms: u64::MAX,
                }),
            }),
        }
    }

    #[test]
    fn an_append_of_batch_entries_carries_what_fits_in_its_byte_budget() {
        let entry = largest_batch_entry(1);
        let entry_bytes = encode_rpc(&entry).len();
        assert!(
            entry_bytes < (3 << 20) / 2,
            "a batch entry takes {entry_bytes} bytes"
        );
        // 300 (openraft's max_payload_entries) would be far over the body limit; 40 is enough.
        let mut entries: Vec<_> = (1..=40).map(largest_batch_entry).collect();
        assert!(fit_entries(&mut entries, APPEND_ENTRIES_BYTES_MAX));
        let sent = encode_rpc(&entries).len();
        assert!(sent <= APPEND_ENTRIES_BYTES_MAX, "{sent} bytes sent");
        assert_eq!(entries.len(), APPEND_ENTRIES_BYTES_MAX / entry_bytes);
        assert_eq!(entries.last().unwrap().log_id.index, entries.len() as u64);
        // What fits is sent whole; a lone entry over the budget still goes.
        let mut few: Vec<_> = (1..=3).map(largest_batch_entry).collect();
        assert!(!fit_entries(&mut few, APPEND_ENTRIES_BYTES_MAX));
        assert_eq!(few.len(), 3);
        assert!(!fit_entries(&mut few[..1].to_vec(), 1));
        assert!(fit_entries(&mut few, 1));
        assert_eq!(few.len(), 1);
    }

    #[test]
    fn a_length_bomb_at_any_offset_is_an_error_not_an_abort() {
        let valid = sample();
        assert!(decode_rpc::<Request>(&valid).is_ok());
        for offset in 0..=valid.len() {
            for exponent in [32, 36, 40, 44, 62] {
                // Inserted, and written over the bytes that were there.
                let mut inserted = valid[..offset].to_vec();
                inserted.extend(huge_length(exponent));
                inserted.extend_from_slice(&valid[offset..]);
                let _ = decode_rpc::<Request>(&inserted);
                let mut overwritten = valid.clone();
                for (i, byte) in huge_length(exponent).into_iter().enumerate() {
                    if let Some(slot) = overwritten.get_mut(offset + i) {
                        *slot = byte;
                    }
                }
                let _ = decode_rpc::<Request>(&overwritten);
            }
        }
        // The same on disk values.
        let bomb = [vec![0u8; 3], huge_length(44)].concat();
        assert!(crate::storage::decode::<Request>(b"Sr-key", &bomb).is_err());
    }
}
