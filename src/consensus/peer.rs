//! The peer protocol: what one voter asks another, independent of how the
//! bytes travel (gRPC in production, an in-process router in tests).
//!
//! Every call carries [`Credentials`]; [`PeerIdentity::check`] refuses a
//! caller from another cluster or with the wrong secret before anything
//! else looks at the request (DESIGN.md, "Peer traffic").

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::throttle::Throttle;
use super::types::{Command, CommandResponse, KeyValue, LeaseId, NodeId, TypeConfig};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who is calling, sent with every peer request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub scope: String,
    /// Empty while the sender has not learnt the cluster id.
    pub cluster_id: String,
    pub from: NodeId,
    pub secret: String,
}

/// One peer call.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Who are you and have you ever been part of a cluster (bootstrap,
    /// `raft status`)?
    Hello,
    /// A store request forwarded to the node believed to be Raft leader.
    Store(StoreRequest),
    /// A candidate asks a data node for its WAL position at race time
    /// (DESIGN.md, "Choosing the new primary": published keys are stale).
    Position,
}

impl PeerRpc {
    pub fn kind(&self) -> &'static str {
        match self {
            PeerRpc::AppendEntries(_) => "append-entries",
            PeerRpc::Vote(_) => "vote",
            PeerRpc::InstallSnapshot(_) => "install-snapshot",
            PeerRpc::Hello => "hello",
            PeerRpc::Store(_) => "store",
            PeerRpc::Position => "position",
        }
    }
}

/// The answer to a [`PeerRpc`], same variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Hello(HelloInfo),
    Store(Result<StoreReply, StoreError>),
    /// `Err` with a sentence when the node runs no PostgreSQL (a witness)
    /// or could not look.
    Position(Result<MemberPosition, String>),
}

/// A data node's PostgreSQL as it is at the moment of the question.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPosition {
    /// The member name.
    pub name: String,
    /// A postmaster is alive.
    pub running: bool,
    /// `pg_is_in_recovery()`; `None` when it could not be asked.
    pub in_recovery: Option<bool>,
    pub timeline: Option<u32>,
    /// `pg_last_wal_receive_lsn()`.
    pub received_lsn: Option<u64>,
    /// `pg_last_wal_replay_lsn()`.
    pub replayed_lsn: Option<u64>,
    /// `pg_current_wal_lsn()` on a primary.
    pub wal_lsn: Option<u64>,
}

/// Answers [`PeerRpc::Position`]: the data node's agent installs one.
pub trait PositionSource: Send + Sync + 'static {
    fn position(&self) -> BoxFuture<Result<MemberPosition, String>>;
}

/// A voter's answer to [`PeerRpc::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloInfo {
    pub node_id: NodeId,
    pub name: String,
    pub cluster_id: String,
    /// Whether this voter has ever voted or held a log entry. A voter that
    /// has must never take part in forming a new cluster.
    pub initialized: bool,
    pub state: String,
    pub term: u64,
    pub last_log_index: u64,
    pub current_leader: Option<NodeId>,
}

/// A store request, executed only by the Raft leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreRequest {
    Write(Command),
    /// Renew a lease (not written to the log; see `store::lessor`).
    Keepalive(LeaseId),
    /// A linearizable read of every key under the prefix.
    Read {
        prefix: String,
    },
}

/// The leader's answer to a [`StoreRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreReply {
    Written(CommandResponse),
    /// The lease was renewed with this TTL.
    KeptAlive {
        lease: LeaseId,
        ttl_ms: u64,
    },
    Read {
        revision: u64,
        kvs: Vec<KeyValue>,
    },
}

/// Why a store request failed. Each says what happened in words an
/// operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StoreError {
    #[error("this node is not the Raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("no quorum: {reachable} of {voters} voters reachable")]
    NoQuorum { reachable: usize, voters: usize },
    #[error("lease {lease} has expired")]
    LeaseExpired { lease: LeaseId },
    #[error("lease {lease} does not exist (expired or revoked)")]
    LeaseNotFound { lease: LeaseId },
    #[error("the request timed out after {0:?} and may or may not have been applied")]
    Unknown(Duration),
    #[error("raft: {0}")]
    Raft(String),
    #[error("peer refused the call: {0}")]
    Refused(String),
    #[error("{0}")]
    Unreachable(String),
}

/// A transport failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// Nothing was delivered (connection refused, no route, no channel).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Sent, but no answer in time: the peer may have acted on it.
    #[error("no answer: {0}")]
    Failed(String),
    /// The peer refused our credentials.
    #[error("refused: {0}")]
    Refused(String),
}

/// Sends peer calls. Implemented by the gRPC client and by the in-process
/// test network.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        creds: Credentials,
        rpc: PeerRpc,
        timeout: Duration,
    ) -> BoxFuture<Result<PeerResponse, TransportError>>;
}

/// Receives peer calls that passed the credential check; `from` is the
/// caller's node id as its credentials name it.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, from: NodeId, rpc: PeerRpc) -> BoxFuture<PeerResponse>;
}

/// This node's identity as peers must present it.
pub struct PeerIdentity {
    pub scope: String,
    pub node_id: NodeId,
    secret: String,
    cluster_id: RwLock<String>,
    /// When each kind of refusal was last logged, so a peer retrying ten
    /// times a second does not flood the log.
    last_logged: Throttle<(NodeId, &'static str)>,
}

impl PeerIdentity {
    pub fn new(scope: &str, node_id: NodeId, secret: &str) -> Arc<Self> {
        Arc::new(PeerIdentity {
            scope: scope.to_string(),
            node_id,
            secret: secret.to_string(),
            cluster_id: RwLock::new(String::new()),
            last_logged: Throttle::default(),
        })
    }

    /// Learns the cluster id (once the state machine has applied it).
    pub fn set_cluster_id(&self, id: &str) {
        let mut guard = self.cluster_id.write().unwrap_or_else(|e| e.into_inner());
        if guard.as_str() != id {
            *guard = id.to_string();
        }
    }

    pub fn cluster_id(&self) -> String {
        self.cluster_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The credentials this node sends.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            scope: self.scope.clone(),
            cluster_id: self.cluster_id(),
            from: self.node_id,
            secret: self.secret.clone(),
        }
    }

    /// Checks a caller's credentials; the error is the sentence to send back.
    /// Refusals are logged here, at most once every 10 s per peer and reason.
    pub fn check(&self, creds: &Credentials) -> Result<(), String> {
        let ours = self.cluster_id();
        let (reason, msg) = if !constant_time_eq(creds.secret.as_bytes(), self.secret.as_bytes()) {
            (
                "secret",
                format!(
                    "node {} sent the wrong raft.secret; give every node of scope {:?} the same secret",
                    creds.from, self.scope
                ),
            )
        } else if creds.scope != self.scope {
            (
                "scope",
                format!(
                    "node {} belongs to scope {:?}, this node to {:?}; check its raft.peers",
                    creds.from, creds.scope, self.scope
                ),
            )
        } else if !ours.is_empty() && !creds.cluster_id.is_empty() && creds.cluster_id != ours {
            (
                "cluster-id",
                format!(
                    "node {} belongs to cluster {} and this node to cluster {}; two clusters are never merged — wipe the node's raft.data_dir only if it should join this one",
                    creds.from, creds.cluster_id, ours
                ),
            )
        } else {
            return Ok(());
        };
        if self.last_logged.ready((creds.from, reason)) {
            tracing::warn!(peer = creds.from, "refused peer call: {msg}");
        }
        Err(msg)
    }
}

/// Compares two secrets in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(scope: &str, cluster: &str, secret: &str) -> Credentials {
        Credentials {
            scope: scope.into(),
            cluster_id: cluster.into(),
            from: 9,
            secret: secret.into(),
        }
    }

    #[test]
    fn credentials_are_checked() {
        let id = PeerIdentity::new("demo", 1, "0123456789abcdef");
        assert!(id.check(&creds("demo", "", "0123456789abcdef")).is_ok());
        let wrong_secret = id
            .check(&creds("demo", "", "0123456789abcdeX"))
            .unwrap_err();
        assert!(wrong_secret.contains("raft.secret"), "{wrong_secret}");
        let wrong_scope = id
            .check(&creds("other", "", "0123456789abcdef"))
            .unwrap_err();
        assert!(wrong_scope.contains("scope"), "{wrong_scope}");
        // Until this node knows its cluster id, any id is accepted...
        assert!(id.check(&creds("demo", "c-2", "0123456789abcdef")).is_ok());
        id.set_cluster_id("c-1");
        // ...afterwards only its own (or a sender that has none yet).
        let other = id
            .check(&creds("demo", "c-2", "0123456789abcdef"))
            .unwrap_err();
        assert!(other.contains("never merged"), "{other}");
        assert!(id.check(&creds("demo", "c-1", "0123456789abcdef")).is_ok());
        assert!(id.check(&creds("demo", "", "0123456789abcdef")).is_ok());
    }
}
