//! Forming the cluster from the static peer list.
//!
//! openraft allows every initial voter to call `initialize` with the same
//! membership: they all write the identical membership entry at index 0 and
//! then elect a leader as usual. The danger is a node that has *lost* its
//! data (an empty `raft.data_dir`) initializing again next to an existing
//! cluster: with another wiped node it could elect a second cluster. So a
//! pristine node initializes only when it has heard from **every** initial
//! voter and none of them has ever been part of a cluster. If any peer has
//! state, this node waits to be replicated to (it is still a voter in that
//! cluster's membership). If some peer cannot be reached, it keeps waiting:
//! forming a cluster for the first time needs every initial voter up once.
//! A node with Raft state never comes here, so restarts are idempotent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::consensus::peer::{PeerIdentity, PeerResponse, PeerRpc, Transport, TransportError};
use crate::consensus::types::{Member, NodeId, Raft};

const PROBE_EVERY: Duration = Duration::from_millis(300);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// What the peers said about forming a new cluster.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Every peer answered and none has ever been in a cluster.
    Form,
    /// Some peer already belongs to a cluster; wait to be replicated to.
    Join { via: NodeId },
    /// Not everybody answered yet.
    Wait { missing: Vec<String> },
}

/// Sends `Hello` to every voter in `peers` but `me` at once, each bounded
/// by `timeout`; the answers come back in `peers` order.
pub(crate) async fn hello_all<'p>(
    me: NodeId,
    peers: &'p BTreeMap<NodeId, Member>,
    transport: &Arc<dyn Transport>,
    identity: &PeerIdentity,
    timeout: Duration,
) -> Vec<(NodeId, &'p Member, Result<PeerResponse, TransportError>)> {
    let calls = peers.iter().filter(|(id, _)| **id != me).map(|(id, m)| {
        let call = transport.call(
            *id,
            &m.addr,
            identity.credentials(),
            PeerRpc::Hello,
            timeout,
        );
        async move { (*id, m, call.await) }
    });
    futures::future::join_all(calls).await
}

async fn ask_peers(
    me: NodeId,
    peers: &BTreeMap<NodeId, Member>,
    transport: &Arc<dyn Transport>,
    identity: &PeerIdentity,
) -> Verdict {
    let mut missing = Vec::new();
    for (id, member, answer) in hello_all(me, peers, transport, identity, PROBE_TIMEOUT).await {
        match answer {
            Ok(PeerResponse::Hello(h)) if h.initialized || !h.cluster_id.is_empty() => {
                return Verdict::Join { via: id };
            }
            Ok(PeerResponse::Hello(_)) => {}
            Ok(_) => missing.push(format!("{} (answered oddly)", member.name)),
            Err(e) => missing.push(format!("{} ({e})", member.name)),
        }
    }
    if missing.is_empty() {
        Verdict::Form
    } else {
        Verdict::Wait { missing }
    }
}

/// Runs until this node is part of a cluster or `shutdown` turns true.
pub async fn run(
    raft: Raft,
    me: NodeId,
    peers: BTreeMap<NodeId, Member>,
    transport: Arc<dyn Transport>,
    identity: Arc<PeerIdentity>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_log: Option<Instant> = None;
    loop {
        if *shutdown.borrow() || raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        match ask_peers(me, &peers, &transport, &identity).await {
            Verdict::Form => {
                tracing::info!(
                    voters = peers.len(),
                    "every initial voter is pristine; forming the cluster"
                );
                match raft.initialize(peers.clone()).await {
                    Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => return,
                    Err(e) => tracing::warn!("initializing the cluster failed, will retry: {e}"),
                }
            }
            Verdict::Join { via } => {
                tracing::info!(
                    via,
                    "an initial voter already belongs to a cluster; waiting to be replicated to instead of forming a new one"
                );
                return;
            }
            Verdict::Wait { missing } => {
                if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    last_log = Some(Instant::now());
                    tracing::info!(
                        "waiting for every initial voter before forming the cluster; not yet answering: {}",
                        missing.join(", ")
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}
