//! Online Raft membership change: `AddMember` and `RemoveMember`.
//!
//! Both run on the Raft leader; a follower forwards the call to it over the
//! admin service (with the cluster's token and a marker that stops a second
//! hop). One change at a time per leader; openraft itself refuses a change
//! while the previous one is uncommitted.
//!
//! ```text
//!  add:    checks ─▶ Hello to the new node ─▶ add_learner ─▶ caught up? ─yes─▶ promote to voter
//!                                                                  └─no (timeout)─▶ remove the learner again
//!  remove: checks ─▶ voter → learner (it learns it no longer votes) ─▶ drop the learner
//!                    (a leader that removes itself leads on as a learner, then steps down when dropped)
//! ```
//!
//! The checks themselves are pure, in [`rules`].

pub mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::consensus::grpc::GrpcTransport;
use crate::consensus::types::{Member, NodeId};
use crate::pb::admin as pb;
use crate::pb::admin::admin_client::AdminClient;
use crate::store::{keys, Consistency, Store};
use rules::{Refusal, Roster};

/// How long a new node may take to catch up when the call names no bound.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(60);
/// The longest catch-up bound a call may ask for.
const MAX_CATCH_UP: Duration = Duration::from_secs(3600);
/// Bound on asking the new node who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a voter turned learner gets to receive the membership that
/// says so, before it is dropped (it then learns nothing more; it only
/// matters for its log and its elections, not for safety).
const LEARN_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on a forwarded removal (two membership changes and the wait for
/// the removed voter), and what a forwarded add may take on top of its
/// catch-up bound (the checks and the promotion).
const CHANGE_BOUND: Duration = Duration::from_secs(60);
/// Marks a call forwarded by a follower, so it is never forwarded again.
const FORWARDED: &str = "x-pgkeel-forwarded";

/// The membership half of the admin service of one node.
pub struct Membership {
    store: Store,
    /// The bearer token sent with a forwarded call (the admin token).
    token: String,
    /// Dials the Raft leader's gRPC port as peers do (TLS when set).
    transport: Arc<GrpcTransport>,
    /// The change this node runs as Raft leader, if any.
    busy: Mutex<Option<String>>,
}

/// Clears [`Membership::busy`] when the change ends, however it ends.
struct Busy<'a>(&'a Mutex<Option<String>>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Where a call runs.
enum Route {
    Here,
    Leader(String),
}

fn refusal(r: Refusal) -> Status {
    match r {
        Refusal::Invalid(s) => Status::invalid_argument(s),
        Refusal::Precondition(s) => Status::failed_precondition(s),
        Refusal::NotFound(s) => Status::not_found(s),
    }
}

/// Maps openraft's answer to a membership change to what the operator sees.
fn change_status(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Status::unavailable(
            "the Raft leadership moved during the change; check pgkeelctl raft status and retry",
        ),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::failed_precondition(format!("openraft refused the change: {c}"))
        }
        RaftError::Fatal(f) => Status::unavailable(format!("Raft stopped on this node: {f}")),
    }
}

impl Membership {
    pub fn new(store: Store, token: &str, transport: Arc<GrpcTransport>) -> Self {
        Membership {
            store,
            token: token.to_string(),
            transport,
            busy: Mutex::new(None),
        }
    }

    /// Adds a node: on the leader, or forwarded to it.
    pub async fn add(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<pb::MembershipReply, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let req = req.into_inner();
        let catch_up = match req.catch_up_timeout_ms {
            0 => DEFAULT_CATCH_UP,
            ms => Duration::from_millis(ms),
        };
        if catch_up > MAX_CATCH_UP {
            return Err(Status::invalid_argument(format!(
                "a catch-up timeout of {} is over the limit of {} — lower it",
                humantime::format_duration(catch_up),
                humantime::format_duration(MAX_CATCH_UP)
            )));
        }
        match self.route(forwarded).await? {
            Route::Here => self.add_here(req, catch_up).await,
            Route::Leader(addr) => {
                let timeout = catch_up + CHANGE_BOUND;
                let mut client = client(&self.transport, &addr, timeout).await?;
                Ok(client.add_member(self.forward(req)?).await?.into_inner())
            }
        }
    }

    /// Removes a member: on the leader, or forwarded to it.
    pub async fn remove(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<pb::MembershipReply, Status> {
        let forwarded = req.metadata().contains_key(FORWARDED);
        let req = req.into_inner();
        match self.route(forwarded).await? {
            Route::Here => self.remove_here(req).await,
            Route::Leader(addr) => self.forward_remove(&addr, req).await,
        }
    }

    async fn forward_remove(
        &self,
        addr: &str,
        req: pb::RemoveMemberRequest,
    ) -> Result<pb::MembershipReply, Status> {
        let mut client = client(&self.transport, addr, CHANGE_BOUND).await?;
        Ok(client.remove_member(self.forward(req)?).await?.into_inner())
    }

    /// This node when it is the Raft leader, else the leader's address.
    /// Waits up to the request timeout for a leader to be known.
    async fn route(&self, forwarded: bool) -> Result<Route, Status> {
        let deadline = tokio::time::Instant::now() + self.store.request_timeout();
        let mut metrics = self.store.raft().metrics();
        loop {
            if self.store.leader_term().is_some() {
                return Ok(Route::Here);
            }
            let leader = {
                let m = metrics.borrow();
                m.current_leader
                    .filter(|id| *id != m.id)
                    .and_then(|id| m.membership_config.membership().get_node(&id).cloned())
            };
            match leader {
                Some(_) if forwarded => {
                    return Err(Status::unavailable(
                        "the Raft leader changed while the call was forwarded; retry",
                    ))
                }
                Some(member) => return Ok(Route::Leader(member.addr)),
                None => {}
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(Status::unavailable(
                    "no Raft leader is known, so the membership cannot change now; check pgkeelctl raft status",
                ));
            }
        }
    }

    /// `msg` as a call to the leader: this cluster's token and the marker.
    fn forward<T>(&self, msg: T) -> Result<Request<T>, Status> {
        let mut req = Request::new(msg);
        let token = MetadataValue::try_from(format!("Bearer {}", self.token))
            .map_err(|_| Status::internal("raft.secret cannot be sent as a token"))?;
        req.metadata_mut().insert("authorization", token);
        req.metadata_mut()
            .insert(FORWARDED, MetadataValue::from(self.store.node_id()));
        Ok(req)
    }

    /// Claims the one change slot of this leader.
    fn begin(&self, what: String) -> Result<Busy<'_>, Status> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = busy.as_ref() {
            return Err(Status::failed_precondition(format!(
                "another membership change is in progress ({running}); one change at a time — retry when it is done"
            )));
        }
        *busy = Some(what);
        Ok(Busy(&self.busy))
    }

    fn roster(&self) -> Roster {
        let m = self.store.raft().metrics().borrow().clone();
        Roster::of(m.membership_config.membership())
    }

    fn reply(&self, message: String) -> pb::MembershipReply {
        let roster = self.roster();
        pb::MembershipReply {
            message,
            voters: roster.names(true),
            learners: roster.names(false),
        }
    }

    async fn add_here(
        &self,
        req: pb::AddMemberRequest,
        catch_up: Duration,
    ) -> Result<pb::MembershipReply, Status> {
        let id = req.node_id;
        let new = Member {
            name: req.name,
            addr: req.address,
            witness: req.witness,
        };
        let _busy = self.begin(format!("adding {}", new.name))?;
        let plan = rules::check_add(&self.roster(), id, &new).map_err(refusal)?;
        let answer = self.store.hello_at(id, &new.addr, HELLO_TIMEOUT).await;
        let ours = self.store.identity().cluster_id();
        rules::check_new_node(&answer, id, &new, &ours).map_err(refusal)?;
        let raft = self.store.raft();
        tracing::info!(node = id, member = %new, ?plan, "membership: adding as a learner");
        let target = raft
            .add_learner(id, new.clone(), false)
            .await
            .map_err(change_status)?
            .log_id
            .index;
        if let Err(reached) = self.caught_up(id, target, catch_up).await {
            tracing::warn!(
                node = id,
                reached,
                target,
                "membership: the new node did not catch up; removing the learner again"
            );
            let rollback = self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await;
            let after = match rollback {
                Ok(()) => "it was removed again".to_string(),
                Err(e) => format!(
                    "removing the learner again failed too ({}) — remove it with pgkeelctl member remove {}",
                    e.message(),
                    new.name
                ),
            };
            return Err(Status::failed_precondition(format!(
                "{} did not catch up with the Raft log within {}: it reached index {reached} of {target}; {after} — check its log, then retry (with a longer --catch-up-timeout for a large store)",
                new.name,
                humantime::format_duration(catch_up)
            )));
        }
        tracing::info!(node = id, member = %new, "membership: caught up; promoting to voter");
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await?;
        tracing::info!(node = id, member = %new, "membership: voter added");
        Ok(self.reply(format!("{new} is a voter (id {id})")))
    }

    /// Waits until this leader has replicated up to `index` to node `id`.
    /// `Err` with the index it reached when `within` passes first or this
    /// node stops leading.
    async fn caught_up(&self, id: NodeId, index: u64, within: Duration) -> Result<(), u64> {
        let deadline = tokio::time::Instant::now() + within;
        let mut metrics = self.store.raft().metrics();
        loop {
            let reached = {
                let m = metrics.borrow();
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index)
            };
            match reached {
                Some(r) if r >= index => return Ok(()),
                _ if self.store.leader_term().is_none() => return Err(reached.unwrap_or(0)),
                _ => {}
            }
            if tokio::time::timeout_at(deadline, metrics.changed())
                .await
                .is_err()
            {
                return Err(reached.unwrap_or(0));
            }
        }
    }

    /// Proposes one membership change, bounded so a change that cannot
    /// commit (no quorum) is reported rather than waited for forever.
    async fn change(
        &self,
        changes: ChangeMembers<NodeId, Member>,
        retain: bool,
    ) -> Result<(), Status> {
        let bound = self.store.request_timeout() * 4;
        match tokio::time::timeout(bound, self.store.raft().change_membership(changes, retain)).await {
            Ok(r) => r.map(|_| ()).map_err(change_status),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the membership change was proposed but not committed within {} — check pgkeelctl raft status",
                humantime::format_duration(bound)
            ))),
        }
    }

    async fn remove_here(
        &self,
        req: pb::RemoveMemberRequest,
    ) -> Result<pb::MembershipReply, Status> {
        let name = req.name;
        let _busy = self.begin(format!("removing {name}"))?;
        let holder = self
            .store
            .get(keys::LEADER, Consistency::Linearizable)
            .await
            .map_err(super::store_status)?
            .map(|kv| kv.value);
        let reachable: BTreeSet<NodeId> = self
            .store
            .probe_voters()
            .await
            .into_iter()
            .filter(|p| p.answer.is_ok())
            .map(|p| p.id)
            .collect();
        let entry = rules::check_remove(&self.roster(), &name, holder.as_deref(), &reachable)
            .map_err(refusal)?;
        let id = entry.id;
        let raft = self.store.raft();
        if entry.voter {
            tracing::info!(node = id, member = %entry.member, "membership: turning the voter into a learner");
            self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
                .await?;
            let index = raft
                .metrics()
                .borrow()
                .membership_config
                .log_id()
                .map(|l| l.index)
                .unwrap_or(0);
            // A leader that removes itself leads on as a learner (openraft
            // 0.9) and steps down once it is dropped below.
            if id != self.store.node_id() && self.caught_up(id, index, LEARN_TIMEOUT).await.is_err()
            {
                tracing::info!(node = id, "membership: the removed voter did not confirm it is a learner now (down?); dropping it anyway");
            }
        }
        tracing::info!(node = id, member = %entry.member, "membership: dropping the learner");
        self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await?;
        let kind = if entry.member.witness {
            "witness"
        } else {
            "data node"
        };
        Ok(self.reply(format!(
            "{} ({kind}, id {id}) is no longer a member; stop its process (its status key expires with its lease)",
            entry.member.name
        )))
    }
}

/// An admin client of the node at `addr`.
async fn client(
    transport: &GrpcTransport,
    addr: &str,
    timeout: Duration,
) -> Result<AdminClient<tonic::transport::Channel>, Status> {
    let channel = transport
        .endpoint(addr)
        .map_err(|e| {
            Status::internal(format!(
                "the Raft leader's address {addr:?} is unusable: {e}"
            ))
        })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "cannot reach the Raft leader at {addr} to forward the call: {e}"
            ))
        })?;
    Ok(AdminClient::new(channel))
}
