//! openraft's network, over any [`Transport`].
//!
//! Each target gets a [`PeerConn`]; the transport underneath keeps one
//! cached channel per peer. A call that could not be delivered is reported
//! as `Unreachable`, which makes openraft back off instead of spinning.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use super::peer::{PeerIdentity, PeerResponse, PeerRpc, Transport, TransportError};
use super::types::{Member, NodeId, TypeConfig};

/// Creates a [`PeerConn`] per Raft target.
#[derive(Clone)]
pub struct Network {
    transport: Arc<dyn Transport>,
    identity: Arc<PeerIdentity>,
}

impl Network {
    pub fn new(transport: Arc<dyn Transport>, identity: Arc<PeerIdentity>) -> Self {
        Network {
            transport,
            identity,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConn;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerConn {
        PeerConn {
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
            identity: self.identity.clone(),
        }
    }
}

/// Raft RPCs to one peer.
pub struct PeerConn {
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
    identity: Arc<PeerIdentity>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Member, RaftError<NodeId, E>>;

fn unexpected<E: std::error::Error>(what: &str, got: &PeerResponse) -> RPCError<NodeId, Member, E> {
    let msg = format!("peer answered a {what} call with {}", variant(got));
    RPCError::Network(NetworkError::new(&std::io::Error::other(msg)))
}

fn variant(r: &PeerResponse) -> &'static str {
    match r {
        PeerResponse::AppendEntries(_) => "append-entries reply",
        PeerResponse::Vote(_) => "vote reply",
        PeerResponse::InstallSnapshot(_) => "install-snapshot reply",
        PeerResponse::Hello(_) => "hello reply",
        PeerResponse::Store(_) => "store reply",
        PeerResponse::Position(_) => "position reply",
    }
}

fn transport_err<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, Member, E> {
    match e {
        // Not delivered, or refused: back off.
        TransportError::Unreachable(_) | TransportError::Refused(_) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        TransportError::Failed(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerConn {
    async fn call(&self, rpc: PeerRpc, timeout: Duration) -> Result<PeerResponse, TransportError> {
        self.transport
            .call(
                self.target,
                &self.addr,
                self.identity.credentials(),
                rpc,
                timeout,
            )
            .await
    }
}

/// How long openraft waits before calling a peer it could not reach
/// again. openraft's default is 500 ms; after a short network stall that
/// delays the moment a cut-off leader learns it was replaced (and so the
/// lease renewals of every node) by up to that much.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(100);

impl RaftNetwork<TypeConfig> for PeerConn {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        match self
            .call(PeerRpc::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(transport_err)?
        {
            PeerResponse::AppendEntries(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected("append-entries", &other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        match self
            .call(PeerRpc::InstallSnapshot(rpc), option.hard_ttl())
            .await
            .map_err(transport_err)?
        {
            PeerResponse::InstallSnapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected("install-snapshot", &other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        match self
            .call(PeerRpc::Vote(rpc), option.hard_ttl())
            .await
            .map_err(transport_err)?
        {
            PeerResponse::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(unexpected("vote", &other)),
        }
    }
}
