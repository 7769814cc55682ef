//! openraft's network traits over a [`Transport`].
//!
//! Every Raft RPC is an HTTP `POST` to a `/raft/...` route of the target node, body and answer in
//! bincode, carrying the cluster secret. The answer body is `Result<Reply, String>`: a remote
//! Raft error here is always fatal at the remote (it is shutting down), which openraft treats like
//! an unreachable node, so its text is all we need.

use std::future::Future;
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
use crate::storage::encode;
use crate::transport::{Transport, WireRequest};

/// Why a Raft RPC body (a request at the server, a reply at the client) could not be read.
#[derive(Debug, thiserror::Error)]
#[error("undecodable Raft RPC body: {0}")]
pub struct RpcDecodeError(String);

/// Encodes a Raft RPC body (bincode 2, as on disk).
pub fn encode_rpc<T: Serialize>(value: &T) -> Vec<u8> {
    encode(value)
}

/// Decodes a Raft RPC body.
pub fn decode_rpc<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RpcDecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|error| RpcDecodeError(error.to_string()))
}

/// The body of a full-snapshot RPC.
#[derive(Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Creates one [`PeerClient`] per target; they share the transport.
#[derive(Clone)]
pub struct NetworkFactory {
    transport: Arc<dyn Transport>,
    secret: Arc<str>,
}

impl NetworkFactory {
    pub fn new(transport: Arc<dyn Transport>, secret: Arc<str>) -> Self {
        Self { transport, secret }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            secret: self.secret.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
    secret: Arc<str>,
}

impl PeerClient {
    async fn call<Req: Serialize, Reply: DeserializeOwned>(
        &self,
        route: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Reply, Unreachable<TypeConfig>> {
        let wire = WireRequest::post_bytes(route, encode_rpc(request)).with_secret(&self.secret);
        let response = self
            .transport
            .send(&self.addr, wire, timeout)
            .await
            .map_err(Unreachable::from_string)?;
        if response.status != 200 {
            return Err(Unreachable::from_string(format!(
                "node {} answered {} on {route}: {}",
                self.target,
                response.status,
                String::from_utf8_lossy(&response.body)
            )));
        }
        let reply: Result<Reply, String> =
            decode_rpc(&response.body).map_err(Unreachable::from_string)?;
        reply
            .map_err(|message| Unreachable::from_string(format!("node {}: {message}", self.target)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(routes::APPEND, &rpc, option.hard_ttl()).await?)
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
        let request = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot,
        };
        let send = self.call(routes::SNAPSHOT, &request, option.hard_ttl());
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            reply = send => Ok(reply?),
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
