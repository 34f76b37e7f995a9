//! Layer 2: the cluster store, the etcd replacement the HA loop talks to.
//!
//! ```text
//!   caller ──request──▶ Store ──(leader here?)──▶ execute_local ──▶ openraft ──▶ log ──▶ StateMachine
//!                         │                           ▲                                   │
//!                         └──(forward over Peer)──────┘ on the Raft leader                ▼
//!   watchers ◀─────────────────────────────────────────────────────────── changes, in apply order
//! ```
//!
//! Writes and linearizable reads from any node end up on the Raft leader;
//! a request that cannot get there and through a quorum fails within
//! `request_timeout` with an error that says how many voters answered.
//! Leases follow the rules written in [`lessor`].

pub mod config_edit;
pub mod keys;
pub mod leader;
pub mod lessor;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::{BootInstant, Clock};
use crate::consensus::handler::{hello, non_member_refusal};
use crate::consensus::kv::WatchEvent;
use crate::consensus::peer::{
    HelloInfo, MemberPosition, PeerIdentity, PeerResponse, PeerRpc, StoreError, StoreReply,
    StoreRequest, Transport, TransportError,
};
use crate::consensus::state_machine::SmHandle;
use crate::consensus::types::{
    Command, CommandResponse, Expect, KeyValue, LeaseId, Member, NodeId, Op, Outcome, Raft,
};
use lessor::Lessor;

/// How long a voter probe (for error messages and status) may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

/// How to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Through the Raft leader's read index: sees every write acknowledged
    /// before the read started. For decisions.
    Linearizable,
    /// This node's applied state, possibly behind. For status output.
    Local,
}

/// A lease as its holder knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseGrant {
    pub lease: LeaseId,
    /// The TTL the Raft leader applied (it may clamp what was asked).
    pub ttl: Duration,
    /// When the request that produced this grant was first sent, on the
    /// holder's boot-time clock.
    pub sent_at: BootInstant,
}

impl LeaseGrant {
    /// The last instant the holder may believe it holds the lease:
    /// `sent_at + ttl - safety_margin` (DESIGN.md).
    pub fn valid_until(&self, safety_margin: Duration) -> BootInstant {
        self.sent_at + self.ttl - safety_margin
    }
}

/// A prefix watch: the keys as of `revision`, then every later change.
pub struct Watch {
    pub revision: u64,
    pub initial: Vec<KeyValue>,
    pub events: mpsc::UnboundedReceiver<WatchEvent>,
}

/// One voter as a probe saw it.
#[derive(Debug, Clone)]
pub struct VoterProbe {
    pub id: NodeId,
    pub member: Member,
    pub answer: Result<HelloInfo, String>,
}

/// Handle to the cluster store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    name: String,
    sm: SmHandle,
    transport: Arc<dyn Transport>,
    identity: Arc<PeerIdentity>,
    lessor: Mutex<Lessor>,
    clock: Arc<dyn Clock>,
    request_timeout: Duration,
}

impl Store {
    pub fn new(
        raft: Raft,
        name: &str,
        sm: SmHandle,
        transport: Arc<dyn Transport>,
        identity: Arc<PeerIdentity>,
        clock: Arc<dyn Clock>,
        request_timeout: Duration,
    ) -> Self {
        Store {
            inner: Arc::new(Inner {
                raft,
                name: name.to_string(),
                sm,
                transport,
                identity,
                lessor: Mutex::new(Lessor::default()),
                clock,
                request_timeout,
            }),
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id
    }

    pub fn identity(&self) -> &Arc<PeerIdentity> {
        &self.inner.identity
    }

    pub fn state_machine(&self) -> &SmHandle {
        &self.inner.sm
    }

    pub fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    // ---- writes ----------------------------------------------------------

    /// Writes `key` if `expect` holds. `Ok(Err(current))` is a failed
    /// compare-and-set with the key as it is now.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        lease: Option<LeaseId>,
        expect: Expect,
    ) -> Result<Result<u64, Option<KeyValue>>, StoreError> {
        let resp = self
            .write(Op::Put {
                key: key.to_string(),
                value: value.to_string(),
                lease,
                expect,
            })
            .await?;
        cas_result(resp)
    }

    /// Applies a compare-and-set `op` (e.g. [`keys::sync_write`]).
    /// `Ok(Err(current))` is a failed compare with the key as it is now.
    pub async fn write_cas(&self, op: Op) -> Result<Result<u64, Option<KeyValue>>, StoreError> {
        cas_result(self.write(op).await?)
    }

    /// Deletes `key` if `expect` holds.
    pub async fn delete(
        &self,
        key: &str,
        expect: Expect,
    ) -> Result<Result<u64, Option<KeyValue>>, StoreError> {
        let resp = self
            .write(Op::Delete {
                key: key.to_string(),
                expect,
            })
            .await?;
        cas_result(resp)
    }

    /// Grants a lease. The holder's clock starts before the request is sent.
    pub async fn grant(&self, ttl: Duration) -> Result<LeaseGrant, StoreError> {
        let sent_at = self.inner.clock.now();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let resp = self.write(Op::Grant { ttl_ms }).await?;
        match resp.outcome {
            Outcome::Granted { lease, ttl_ms } => Ok(LeaseGrant {
                lease,
                ttl: Duration::from_millis(ttl_ms),
                sent_at,
            }),
            other => Err(StoreError::Raft(format!(
                "unexpected answer to a grant: {other:?}"
            ))),
        }
    }

    /// Renews a lease. Unary: the answer is paired with this call's own
    /// send time (retries inside keep the first send time, which is earlier
    /// and therefore the safe side).
    pub async fn keepalive(&self, lease: LeaseId) -> Result<LeaseGrant, StoreError> {
        self.keepalive_within(lease, self.inner.request_timeout)
            .await
    }

    /// [`Store::keepalive`] bounded by `bound` instead of the request
    /// timeout: a renewal that hangs behind a stall is abandoned and sent
    /// again rather than waited for (each answer is matched to its own
    /// send time, so a late one is never mistaken for a new one).
    pub async fn keepalive_within(
        &self,
        lease: LeaseId,
        bound: Duration,
    ) -> Result<LeaseGrant, StoreError> {
        let sent_at = self.inner.clock.now();
        match self
            .request_within(StoreRequest::Keepalive(lease), bound)
            .await?
        {
            StoreReply::KeptAlive { lease, ttl_ms } => Ok(LeaseGrant {
                lease,
                ttl: Duration::from_millis(ttl_ms),
                sent_at,
            }),
            other => Err(StoreError::Raft(format!(
                "unexpected answer to a keepalive: {other:?}"
            ))),
        }
    }

    /// Ends a lease now; its keys vanish.
    pub async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        let resp = self.write(Op::Revoke { lease }).await?;
        match resp.outcome {
            Outcome::Done | Outcome::LeaseNotFound { .. } => Ok(()),
            other => Err(StoreError::Raft(format!(
                "unexpected answer to a revoke: {other:?}"
            ))),
        }
    }

    /// Writes one command through the Raft leader.
    pub async fn write(&self, op: Op) -> Result<CommandResponse, StoreError> {
        match self.request(StoreRequest::Write(Command::new(op))).await? {
            StoreReply::Written(resp) => match resp.outcome {
                Outcome::LeaseNotFound { lease } => Err(StoreError::LeaseNotFound { lease }),
                Outcome::UnsupportedFormat { format } => Err(StoreError::Raft(format!(
                    "the leader cannot read command format {format}; finish the upgrade first"
                ))),
                _ => Ok(resp),
            },
            other => Err(StoreError::Raft(format!(
                "unexpected answer to a write: {other:?}"
            ))),
        }
    }

    // ---- reads -----------------------------------------------------------

    /// Every key under `prefix` and the store revision they were read at.
    pub async fn range(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<(u64, Vec<KeyValue>), StoreError> {
        match consistency {
            Consistency::Local => Ok(self.inner.sm.read(|s| (s.revision, s.range(prefix)))),
            Consistency::Linearizable => match self
                .request(StoreRequest::Read {
                    prefix: prefix.to_string(),
                })
                .await?
            {
                StoreReply::Read { revision, kvs } => Ok((revision, kvs)),
                other => Err(StoreError::Raft(format!(
                    "unexpected answer to a read: {other:?}"
                ))),
            },
        }
    }

    /// One key.
    pub async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>, StoreError> {
        let (_, kvs) = self.range(key, consistency).await?;
        Ok(kvs.into_iter().find(|kv| kv.key == key))
    }

    /// Watches every key under `prefix` on this node's state machine. Changes
    /// are pushed as they are applied; none is skipped or repeated.
    pub fn watch(&self, prefix: &str) -> Watch {
        let (revision, initial, events) = self.inner.sm.watch(prefix);
        Watch {
            revision,
            initial,
            events,
        }
    }

    // ---- routing ---------------------------------------------------------

    /// The term this node leads in, if it is the Raft leader.
    pub fn leader_term(&self) -> Option<u64> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        (m.current_leader == Some(m.id) && m.state == openraft::ServerState::Leader)
            .then_some(m.current_term)
    }

    fn current_leader(&self) -> Option<(NodeId, Option<Member>)> {
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        m.current_leader.map(|id| {
            let node = m.membership_config.membership().get_node(&id).cloned();
            (id, node)
        })
    }

    /// Sends `req` to the Raft leader (this node or another) and retries
    /// while no leader is known, until `request_timeout` has passed.
    pub async fn request(&self, req: StoreRequest) -> Result<StoreReply, StoreError> {
        self.request_within(req, self.inner.request_timeout).await
    }

    /// [`Store::request`] with its own bound.
    pub async fn request_within(
        &self,
        req: StoreRequest,
        bound: Duration,
    ) -> Result<StoreReply, StoreError> {
        // A node removed from the membership hears from no leader any
        // more; say so instead of timing out.
        if let Some(why) = non_member_refusal(&self.inner.raft, self.node_id()) {
            return Err(StoreError::Refused(why));
        }
        let deadline = Instant::now() + bound;
        let mut metrics = self.inner.raft.metrics();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.quorum_error().await);
            }
            let result = match self.current_leader() {
                Some((id, _)) if id == self.node_id() => {
                    match tokio::time::timeout(remaining, self.execute_local(req.clone())).await {
                        Ok(r) => r,
                        Err(_) => return Err(self.quorum_error().await),
                    }
                }
                Some((id, Some(member))) => self.forward(id, &member, req.clone(), remaining).await,
                _ => Err(StoreError::NotLeader { leader: None }),
            };
            match result {
                Err(StoreError::NotLeader { .. }) | Err(StoreError::Unreachable(_)) => {
                    // Wait for news about the leader, but not for long: a
                    // leader we cannot reach may not change its mind soon.
                    let pause = remaining.min(Duration::from_millis(50));
                    let _ = tokio::time::timeout(pause, metrics.changed()).await;
                }
                other => return other,
            }
        }
    }

    /// Asks data member `name` for its PostgreSQL position right now
    /// ([`PeerRpc::Position`]), within `timeout`. `Err` with a sentence
    /// when the member is unknown, unreachable or runs no PostgreSQL.
    pub async fn ask_position(
        &self,
        name: &str,
        timeout: Duration,
    ) -> Result<MemberPosition, String> {
        let target = {
            let m = self.inner.raft.metrics().borrow().clone();
            let found = m
                .membership_config
                .membership()
                .nodes()
                .find(|(_, member)| member.name == name)
                .map(|(id, member)| (*id, member.clone()));
            found
        };
        let Some((id, member)) = target else {
            return Err(format!("{name} is not a Raft member"));
        };
        let creds = self.inner.identity.credentials();
        match self
            .inner
            .transport
            .call(id, &member.addr, creds, PeerRpc::Position, timeout)
            .await
        {
            Ok(PeerResponse::Position(r)) => r,
            Ok(_) => Err(format!(
                "{name} answered a position request with something else"
            )),
            Err(e) => Err(format!("cannot ask {name} its position: {e}")),
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        member: &Member,
        req: StoreRequest,
        timeout: Duration,
    ) -> Result<StoreReply, StoreError> {
        let creds = self.inner.identity.credentials();
        match self
            .inner
            .transport
            .call(leader, &member.addr, creds, PeerRpc::Store(req), timeout)
            .await
        {
            Ok(PeerResponse::Store(r)) => r,
            Ok(_) => Err(StoreError::Raft(format!(
                "node {leader} answered a store request with something else"
            ))),
            Err(TransportError::Unreachable(e)) => Err(StoreError::Unreachable(e)),
            Err(TransportError::Refused(e)) => Err(StoreError::Refused(e)),
            Err(TransportError::Failed(_)) => Err(StoreError::Unknown(timeout)),
        }
    }

    /// Explains why a request could not complete: how many voters answer.
    async fn quorum_error(&self) -> StoreError {
        let probes = self.probe_voters().await;
        let voters = probes.len();
        let reachable = probes.iter().filter(|p| p.answer.is_ok()).count();
        if reachable > voters / 2 {
            StoreError::Raft(format!(
                "no Raft leader could complete the request within {:?} although {reachable} of {voters} voters are reachable; retry",
                self.inner.request_timeout
            ))
        } else {
            StoreError::NoQuorum { reachable, voters }
        }
    }

    /// Asks every voter (this one included) who it is, in parallel.
    pub async fn probe_voters(&self) -> Vec<VoterProbe> {
        self.probe_members(true).await
    }

    /// Asks every learner (a node being added) who it is, in parallel.
    pub async fn probe_learners(&self) -> Vec<VoterProbe> {
        self.probe_members(false).await
    }

    async fn probe_members(&self, voters: bool) -> Vec<VoterProbe> {
        let members: Vec<(NodeId, Member)> = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let ids: Vec<NodeId> = if voters {
                membership.voter_ids().collect()
            } else {
                membership.learner_ids().collect()
            };
            ids.into_iter()
                .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
                .collect()
        };
        let calls = members.into_iter().map(|(id, member)| async move {
            let answer = if id == self.node_id() {
                Ok(hello(&self.inner.raft, &self.inner.name, &self.inner.identity).await)
            } else {
                self.hello_at(id, &member.addr, PROBE_TIMEOUT).await
            };
            VoterProbe { id, member, answer }
        });
        futures::future::join_all(calls).await
    }

    /// Asks the node at `addr` (meant to be node `id`) who it is, with
    /// this node's peer credentials; `Err` with a sentence when it cannot
    /// be reached or refuses them.
    pub async fn hello_at(
        &self,
        id: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<HelloInfo, String> {
        match self
            .inner
            .transport
            .call(
                id,
                addr,
                self.inner.identity.credentials(),
                PeerRpc::Hello,
                timeout,
            )
            .await
        {
            Ok(PeerResponse::Hello(h)) => Ok(h),
            Ok(_) => Err("answered a probe with something else".to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

fn cas_result(resp: CommandResponse) -> Result<Result<u64, Option<KeyValue>>, StoreError> {
    match resp.outcome {
        Outcome::Done => Ok(Ok(resp.revision)),
        Outcome::CasFailed { current } => Ok(Err(current)),
        other => Err(StoreError::Raft(format!(
            "unexpected answer to a write: {other:?}"
        ))),
    }
}
