//! The receiving side of peer calls: hands Raft RPCs to openraft, answers
//! the bootstrap probe, and passes forwarded store requests to the store.

use std::sync::{Arc, RwLock};

use openraft::ServerState;

use super::peer::{
    BoxFuture, HelloInfo, PeerHandler, PeerIdentity, PeerResponse, PeerRpc, PositionSource,
    StoreError, StoreReply, StoreRequest,
};
use super::types::{NodeId, Raft};

/// Executes a store request on this node (the store layer implements it).
pub trait StoreExecutor: Send + Sync + 'static {
    fn execute(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>>;
}

/// Dispatches authenticated peer calls.
pub struct RaftPeerHandler {
    raft: Raft,
    name: String,
    identity: Arc<PeerIdentity>,
    store: Arc<dyn StoreExecutor>,
    /// Set once the data node's agent runs; a witness never sets it.
    position: RwLock<Option<Arc<dyn PositionSource>>>,
}

impl RaftPeerHandler {
    /// Lets peers ask this node's PostgreSQL position ([`PeerRpc::Position`]).
    pub fn set_position_source(&self, source: Arc<dyn PositionSource>) {
        *self.position.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    pub fn new(
        raft: Raft,
        name: &str,
        identity: Arc<PeerIdentity>,
        store: Arc<dyn StoreExecutor>,
    ) -> Arc<Self> {
        Arc::new(RaftPeerHandler {
            raft,
            name: name.to_string(),
            identity,
            store,
            position: RwLock::new(None),
        })
    }
}

/// The name openraft's server state goes by in status output.
pub fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Learner => "learner",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Leader => "leader",
        ServerState::Shutdown => "shutdown",
    }
}

/// This node's answer to a `Hello`.
pub async fn hello(raft: &Raft, name: &str, identity: &PeerIdentity) -> HelloInfo {
    let m = raft.metrics().borrow().clone();
    let initialized = raft.is_initialized().await.unwrap_or(true);
    HelloInfo {
        node_id: m.id,
        name: name.to_string(),
        cluster_id: identity.cluster_id(),
        initialized,
        state: state_name(m.state).to_string(),
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        current_leader: m.current_leader,
    }
}

/// Why a store request from node `from` is refused: a node that is not in
/// this node's membership (removed, or not added yet) must not renew
/// leases or write keys, or a removed member would keep its lease-bound
/// keys — even the leader key — alive. `None` while this node knows no
/// membership at all (it cannot be the leader that executes the request).
pub fn non_member_refusal(raft: &Raft, from: NodeId) -> Option<String> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let known = membership.nodes().next().is_some();
    (known && membership.get_node(&from).is_none()).then(|| {
        format!(
            "node {from} is not a member of this cluster (removed, or not added yet) — add it with pgkeelctl member add"
        )
    })
}

impl PeerHandler for RaftPeerHandler {
    fn handle(&self, from: NodeId, rpc: PeerRpc) -> BoxFuture<PeerResponse> {
        let raft = self.raft.clone();
        match rpc {
            PeerRpc::AppendEntries(req) => {
                Box::pin(async move { PeerResponse::AppendEntries(raft.append_entries(req).await) })
            }
            PeerRpc::Vote(req) => Box::pin(async move { PeerResponse::Vote(raft.vote(req).await) }),
            PeerRpc::InstallSnapshot(req) => {
                Box::pin(
                    async move { PeerResponse::InstallSnapshot(raft.install_snapshot(req).await) },
                )
            }
            PeerRpc::Hello => {
                let name = self.name.clone();
                let identity = self.identity.clone();
                Box::pin(async move { PeerResponse::Hello(hello(&raft, &name, &identity).await) })
            }
            PeerRpc::Store(req) => {
                if let Some(why) = non_member_refusal(&raft, from) {
                    return Box::pin(
                        async move { PeerResponse::Store(Err(StoreError::Refused(why))) },
                    );
                }
                let fut = self.store.execute(req);
                Box::pin(async move { PeerResponse::Store(fut.await) })
            }
            PeerRpc::Position => {
                let source = self
                    .position
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let name = self.name.clone();
                Box::pin(async move {
                    PeerResponse::Position(match source {
                        Some(s) => s.position().await,
                        None => Err(format!(
                            "{name} runs no PostgreSQL (a witness, or its agent has not started)"
                        )),
                    })
                })
            }
        }
    }
}
