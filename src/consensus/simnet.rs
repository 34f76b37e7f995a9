//! An in-process network for deterministic tests: voters in one process
//! talk through it, and a test can cut links in either direction.
//!
//! Every call goes through the same credential check and JSON encoding as
//! the gRPC path, so what passes here passes on the wire.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::peer::{
    BoxFuture, Credentials, PeerHandler, PeerIdentity, PeerResponse, PeerRpc, Transport,
    TransportError,
};
use super::types::NodeId;

struct Endpoint {
    identity: Arc<PeerIdentity>,
    handler: Arc<dyn PeerHandler>,
}

#[derive(Default)]
struct Links {
    endpoints: HashMap<String, (NodeId, Arc<Endpoint>)>,
    /// Directed links that drop everything: (from, to).
    cut: HashSet<(NodeId, NodeId)>,
}

/// The simulated network. Cheap to clone.
#[derive(Clone, Default)]
pub struct SimNet {
    links: Arc<RwLock<Links>>,
}

impl SimNet {
    pub fn new() -> Self {
        SimNet::default()
    }

    /// Makes `handler` reachable at `addr` as node `id`.
    pub fn register(
        &self,
        addr: &str,
        id: NodeId,
        identity: Arc<PeerIdentity>,
        handler: Arc<dyn PeerHandler>,
    ) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        links.endpoints.insert(
            addr.to_string(),
            (id, Arc::new(Endpoint { identity, handler })),
        );
    }

    /// Removes whatever listens at `addr` (a crashed process).
    pub fn unregister(&self, addr: &str) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        links.endpoints.remove(addr);
    }

    /// Drops every message between `node` and everyone else, both ways.
    pub fn isolate(&self, node: NodeId, all: &[NodeId]) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        for other in all.iter().filter(|o| **o != node) {
            links.cut.insert((node, *other));
            links.cut.insert((*other, node));
        }
    }

    /// Drops messages from `from` to `to` only.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        links.cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        let mut links = self.links.write().unwrap_or_else(|e| e.into_inner());
        links.cut.clear();
    }

    fn route(&self, from: NodeId, addr: &str) -> Result<(NodeId, Arc<Endpoint>), TransportError> {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        let (to, ep) =
            links.endpoints.get(addr).cloned().ok_or_else(|| {
                TransportError::Unreachable(format!("{addr}: connection refused"))
            })?;
        if links.cut.contains(&(from, to)) {
            return Err(TransportError::Unreachable(format!("{addr}: link cut")));
        }
        Ok((to, ep))
    }

    fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        !links.cut.contains(&(from, to))
    }
}

impl Transport for SimNet {
    fn call(
        &self,
        _target: NodeId,
        addr: &str,
        creds: Credentials,
        rpc: PeerRpc,
        timeout: Duration,
    ) -> BoxFuture<Result<PeerResponse, TransportError>> {
        let net = self.clone();
        let addr = addr.to_string();
        Box::pin(async move {
            let (to, ep) = net.route(creds.from, &addr)?;
            ep.identity.check(&creds).map_err(TransportError::Refused)?;
            let bytes = serde_json::to_vec(&rpc)
                .map_err(|e| TransportError::Unreachable(format!("encode: {e}")))?;
            let rpc: PeerRpc = serde_json::from_slice(&bytes)
                .map_err(|e| TransportError::Failed(format!("decode: {e}")))?;
            let reply = tokio::time::timeout(timeout, ep.handler.handle(creds.from, rpc))
                .await
                .map_err(|_| TransportError::Failed(format!("{addr}: timed out")))?;
            // The answer travels back over the reverse link.
            if !net.link_up(to, creds.from) {
                return Err(TransportError::Failed(format!("{addr}: answer lost")));
            }
            let bytes = serde_json::to_vec(&reply)
                .map_err(|e| TransportError::Failed(format!("encode answer: {e}")))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| TransportError::Failed(format!("decode answer: {e}")))
        })
    }
}
