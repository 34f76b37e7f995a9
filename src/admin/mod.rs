//! The gRPC admin service (`proto/admin.proto`), served on the Raft port.
//! Thin: it checks credentials, calls the store and converts to protobuf.

mod convert;
pub mod dsn;
pub mod membership;
pub mod operations;
mod operations_rpc;
pub mod switchover;
mod token;

pub use token::AdminToken;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::consensus::grpc::GrpcTransport;
use crate::consensus::handler::state_name;
use crate::consensus::peer::StoreError;
use crate::consensus::types::Expect;
use crate::consensus::types::{KeyValue, NodeId};
use crate::pb::admin as pb;
use crate::pb::admin::admin_server::{Admin, AdminServer};
use crate::store::config_edit::{self, Change, EditError};
use crate::store::keys::{self, HistoryRecord, MemberRecord};
use crate::store::{Consistency, Store, VoterProbe};

/// The admin service of one node.
pub struct AdminService {
    store: Store,
    /// The bearer token mutating calls must present.
    token: AdminToken,
    /// `AddMember` / `RemoveMember`.
    membership: membership::Membership,
}

impl AdminService {
    /// The service; `transport` dials the other voters' gRPC ports (with
    /// this node's TLS settings) when a call is forwarded to the leader.
    pub fn server(
        store: Store,
        token: AdminToken,
        transport: Arc<GrpcTransport>,
    ) -> AdminServer<Self> {
        AdminServer::new(AdminService {
            membership: membership::Membership::new(store.clone(), token.bearer(), transport),
            store,
            token,
        })
    }

    /// Every key under `prefix`, through the Raft leader so a node that has
    /// just restarted and is still catching up does not show the cluster as
    /// it was; this node's own copy only when no quorum answers.
    async fn read(&self, prefix: &str) -> Result<Vec<KeyValue>, Status> {
        match self.store.range(prefix, Consistency::Linearizable).await {
            Ok((_, kvs)) => Ok(kvs),
            Err(e) => {
                tracing::debug!("answering from this node's own copy of the store: {e}");
                self.store
                    .range(prefix, Consistency::Local)
                    .await
                    .map(|(_, kvs)| kvs)
                    .map_err(store_status)
            }
        }
    }

    /// The one key `key`, if set.
    async fn read_key(&self, key: &str) -> Result<Option<KeyValue>, Status> {
        Ok(self.read(key).await?.into_iter().find(|kv| kv.key == key))
    }

    pub(crate) fn authorize<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        self.token.check(presented)
    }
}

/// This voter's view of Raft, and every voter's answer to a probe: what
/// `pgkeelctl raft status`, the REST API's `/cluster` and `/metrics` show.
#[derive(Debug, Clone)]
pub struct RaftFacts {
    pub node_id: NodeId,
    pub node_name: String,
    /// The Raft leader this voter knows of.
    pub leader_id: Option<NodeId>,
    pub leader_name: String,
    pub term: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    /// Every voter, this one included, with its answer or why it gave none.
    pub voters: Vec<VoterProbe>,
    pub store_revision: u64,
}

/// Reads this voter's Raft metrics and probes every voter (each probe is
/// bounded by the store's probe timeout).
pub async fn raft_facts(store: &Store) -> RaftFacts {
    let voters = store.probe_voters().await;
    let m = store.raft().metrics().borrow().clone();
    let name_of = |id: NodeId| {
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    };
    RaftFacts {
        node_id: m.id,
        node_name: name_of(m.id),
        leader_id: m.current_leader,
        leader_name: m.current_leader.map(name_of).unwrap_or_default(),
        term: m.current_term,
        last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        last_log_index: m.last_log_index.unwrap_or(0),
        state: state_name(m.state),
        voters,
        store_revision: store.state_machine().read(|s| s.revision),
    }
}

/// The member records among `kvs`; an unreadable one is logged and skipped.
fn member_records(kvs: &[KeyValue]) -> Vec<MemberRecord> {
    kvs.iter()
        .filter(|kv| kv.key.starts_with(keys::MEMBERS))
        .filter_map(
            |kv| match keys::decode::<MemberRecord>(&kv.key, &kv.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            },
        )
        .collect()
}

/// The holder of the leader key among `kvs`.
fn leader_of(kvs: &[KeyValue]) -> Option<&str> {
    kvs.iter()
        .find(|kv| kv.key == keys::LEADER)
        .map(|kv| kv.value.as_str())
}

/// Maps a store error to the gRPC status an operator's tool should show.
fn store_status(e: StoreError) -> Status {
    match &e {
        StoreError::NoQuorum { .. } | StoreError::Unreachable(_) | StoreError::NotLeader { .. } => {
            Status::unavailable(e.to_string())
        }
        StoreError::Unknown(_) => Status::deadline_exceeded(e.to_string()),
        StoreError::LeaseExpired { .. } | StoreError::LeaseNotFound { .. } => {
            Status::failed_precondition(e.to_string())
        }
        StoreError::Refused(_) => Status::permission_denied(e.to_string()),
        StoreError::Raft(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn raft_status(
        &self,
        _req: Request<pb::RaftStatusRequest>,
    ) -> Result<Response<pb::RaftStatusReply>, Status> {
        let f = raft_facts(&self.store).await;
        Ok(Response::new(pb::RaftStatusReply {
            scope: self.store.identity().scope.clone(),
            cluster_id: self.store.identity().cluster_id(),
            node_id: f.node_id,
            node_name: f.node_name,
            leader_id: f.leader_id.unwrap_or(0),
            leader_name: f.leader_name,
            term: f.term,
            last_applied: f.last_applied,
            last_log_index: f.last_log_index,
            state: f.state.to_string(),
            voters: f.voters.into_iter().map(convert::voter).collect(),
            store_revision: f.store_revision,
            learners: self
                .store
                .probe_learners()
                .await
                .into_iter()
                .map(convert::voter)
                .collect(),
        }))
    }

    async fn list_members(
        &self,
        _req: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersReply>, Status> {
        let kvs = self.read("").await?;
        let records = member_records(&kvs);
        let leader = leader_of(&kvs);
        let voters = self.store.probe_voters().await;
        let view = crate::ha::records::observed_view(&kvs, std::time::SystemTime::now());
        let mut members = convert::members(leader, &records, &voters);
        for m in &mut members {
            if let Some(role) = crate::ha::sync::standby_role(&view, &m.name) {
                m.role = role.to_string();
            }
        }
        let no_leader = crate::ha::no_leader(&view).unwrap_or_else(|| crate::ha::NoLeader {
            reason: String::new(),
            blockers: Vec::new(),
        });
        Ok(Response::new(pb::ListMembersReply {
            scope: self.store.identity().scope.clone(),
            cluster_id: self.store.identity().cluster_id(),
            leader: leader.unwrap_or_default().to_string(),
            members,
            paused: view.config.pause,
            pending_switchover: switchover::pending_line(&kvs),
            synchronous: crate::ha::sync::summary(&view).unwrap_or_default(),
            no_leader_reason: no_leader.reason,
            promotion_blockers: no_leader
                .blockers
                .into_iter()
                .map(|(member, reason)| pb::PromotionBlocker { member, reason })
                .collect(),
        }))
    }

    async fn store_get(
        &self,
        req: Request<pb::StoreGetRequest>,
    ) -> Result<Response<pb::StoreGetReply>, Status> {
        let req = req.into_inner();
        let consistency = if req.linearizable {
            Consistency::Linearizable
        } else {
            Consistency::Local
        };
        let (revision, kvs) = self
            .store
            .range(&req.key, consistency)
            .await
            .map_err(store_status)?;
        let kvs = kvs
            .into_iter()
            .filter(|kv| req.prefix || kv.key == req.key)
            .map(convert::key_value)
            .collect();
        Ok(Response::new(pb::StoreGetReply { revision, kvs }))
    }

    async fn store_put(
        &self,
        req: Request<pb::StorePutRequest>,
    ) -> Result<Response<pb::StoreWriteReply>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        if req.key.is_empty() {
            return Err(Status::invalid_argument(
                "the key is empty; name the key to write",
            ));
        }
        let revision = self
            .store
            .put(&req.key, &req.value, None, Expect::Any)
            .await
            .map_err(store_status)?
            .map_err(|_| Status::aborted("the write lost a race; retry"))?;
        Ok(Response::new(pb::StoreWriteReply { revision }))
    }

    async fn store_delete(
        &self,
        req: Request<pb::StoreDeleteRequest>,
    ) -> Result<Response<pb::StoreWriteReply>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        if req.key == "leader" {
            // DESIGN.md: nothing but the holder or an Expire ends a live lease.
            return Err(Status::failed_precondition(
                "the leader key is bound to the holder's lease and is never deleted by hand; use a switchover",
            ));
        }
        let revision = self
            .store
            .delete(&req.key, Expect::Any)
            .await
            .map_err(store_status)?
            .map_err(|_| Status::aborted("the delete lost a race; retry"))?;
        Ok(Response::new(pb::StoreWriteReply { revision }))
    }

    async fn show_config(
        &self,
        _req: Request<pb::ShowConfigRequest>,
    ) -> Result<Response<pb::ShowConfigReply>, Status> {
        let kv = self.read_key(keys::CONFIG).await?.ok_or_else(|| {
            Status::not_found(
                "no dynamic config yet: the first data node writes it when it bootstraps the cluster",
            )
        })?;
        Ok(Response::new(pb::ShowConfigReply {
            json: kv.value,
            mod_revision: kv.mod_revision,
        }))
    }

    async fn history(
        &self,
        _req: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let records: Vec<HistoryRecord> = match self.read_key(keys::HISTORY).await? {
            Some(kv) => keys::decode(&kv.key, &kv.value).map_err(Status::data_loss)?,
            None => Vec::new(),
        };
        Ok(Response::new(pb::HistoryReply {
            entries: records.into_iter().map(convert::history_entry).collect(),
        }))
    }

    async fn dsn(&self, req: Request<pb::DsnRequest>) -> Result<Response<pb::DsnReply>, Status> {
        let role: dsn::DsnRole = req
            .into_inner()
            .role
            .parse()
            .map_err(Status::invalid_argument)?;
        // One read, so the leader and the records are of the same moment.
        let kvs = self.read("").await?;
        let (dsn, members) = dsn::build(role, leader_of(&kvs), &member_records(&kvs))
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(pb::DsnReply { dsn, members }))
    }

    async fn switchover(
        &self,
        req: Request<pb::SwitchoverRequest>,
    ) -> Result<Response<pb::SwitchoverReply>, Status> {
        self.do_switchover(req).await
    }

    async fn failover(
        &self,
        req: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::SwitchoverReply>, Status> {
        self.do_failover(req).await
    }

    async fn pause(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseReply>, Status> {
        self.do_pause(req, true).await
    }

    async fn resume(
        &self,
        req: Request<pb::PauseRequest>,
    ) -> Result<Response<pb::PauseReply>, Status> {
        self.do_pause(req, false).await
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.authorize(&req)?;
        self.membership.add(req).await.map(Response::new)
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        self.authorize(&req)?;
        self.membership.remove(req).await.map(Response::new)
    }

    // ---- member operations (issue 6), in operations_rpc.rs ----

    async fn restart(
        &self,
        req: Request<pb::RestartRequest>,
    ) -> Result<Response<pb::OperationsReply>, Status> {
        self.authorize(&req)?;
        self.restart_members(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::OperationsReply>, Status> {
        self.authorize(&req)?;
        self.reload_members(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn reinitialize(
        &self,
        req: Request<pb::ReinitializeRequest>,
    ) -> Result<Response<pb::OperationsReply>, Status> {
        self.authorize(&req)?;
        self.reinitialize_member(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn cancel_scheduled(
        &self,
        req: Request<pb::CancelScheduledRequest>,
    ) -> Result<Response<pb::CancelScheduledReply>, Status> {
        self.authorize(&req)?;
        self.cancel(req.into_inner()).await.map(Response::new)
    }

    type WatchStream = operations_rpc::WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Ok(Response::new(self.watch_operation(req.into_inner())))
    }

    async fn edit_config(
        &self,
        req: Request<pb::EditConfigRequest>,
    ) -> Result<Response<pb::EditConfigReply>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        if req.expected_revision == 0 {
            return Err(Status::invalid_argument(
                "expected_revision is 0: pass the mod_revision ShowConfig returned for the config the patch was made against",
            ));
        }
        let patch: serde_json::Value = serde_json::from_str(&req.patch_json).map_err(|e| {
            Status::invalid_argument(format!(
                "the patch is not JSON ({e}); send a JSON merge patch object"
            ))
        })?;
        if !patch.is_object() {
            return Err(Status::invalid_argument(
                "the patch is not a JSON object; send the keys to change, e.g. {\"loop_wait\": 5}",
            ));
        }
        let election_timeout_max =
            std::time::Duration::from_millis(self.store.raft().config().election_timeout_max);
        let edited = config_edit::edit(
            &self.store,
            Change::Patch(patch),
            Some(req.expected_revision),
            election_timeout_max,
        )
        .await
        .map_err(|e| match e {
            EditError::Invalid(_) => Status::invalid_argument(e.to_string()),
            EditError::Stale { .. } | EditError::Raced | EditError::Missing => {
                Status::failed_precondition(e.to_string())
            }
            EditError::Store(_) => Status::unavailable(e.to_string()),
        })?;
        tracing::info!(revision = edited.revision, "dynamic config edited");
        Ok(Response::new(pb::EditConfigReply {
            mod_revision: edited.revision,
            json: edited.json,
        }))
    }
}
