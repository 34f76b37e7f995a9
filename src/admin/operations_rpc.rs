//! The admin service's member-operation calls: protobuf in and out around
//! [`super::operations`].

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures::Stream;
use tonic::Status;

use super::operations::{self as ops, Members, OpRequest};
use super::AdminService;
use crate::pb::admin as pb;
use crate::store::keys::{op_kind, OperationRecord};

/// The stream `Watch` answers with.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::OperationProgress, Status>> + Send>>;

/// Default wait for a restart or reload to end.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Default wait for a reinitialize (a whole clone) or a watch.
const LONG_WAIT: Duration = Duration::from_secs(600);

fn wait_for(timeout_ms: u32, default: Duration) -> Duration {
    if timeout_ms == 0 {
        default
    } else {
        Duration::from_millis(u64::from(timeout_ms))
    }
}

fn progress(r: &OperationRecord) -> pb::OperationProgress {
    pb::OperationProgress {
        id: r.id.clone(),
        member: r.member.clone(),
        kind: r.kind.clone(),
        state: r.state.clone(),
        message: r.message.clone(),
        scheduled_at: r.scheduled_at.clone().unwrap_or_default(),
    }
}

fn reply(records: Vec<OperationRecord>) -> pb::OperationsReply {
    pb::OperationsReply {
        operations: records.iter().map(progress).collect(),
    }
}

impl AdminService {
    pub(super) async fn restart_members(
        &self,
        req: pb::RestartRequest,
    ) -> Result<pb::OperationsReply, Status> {
        let role = ops::check_role(&req.role)?;
        let scheduled_at = ops::check_schedule(&req.scheduled_at, SystemTime::now())?;
        if scheduled_at.is_some() && req.member.is_empty() {
            return Err(Status::invalid_argument(
                "a scheduled restart names one member; pass MEMBER",
            ));
        }
        let members = Members::read(&self.store).await?;
        let targets = if req.member.is_empty() {
            members.in_restart_order(&role)
        } else {
            members.check(&req.member)?;
            vec![req.member.clone()]
        };
        let op = OpRequest {
            kind: op_kind::RESTART,
            pending_only: req.pending_only,
            role,
            force: req.force,
            scheduled_at,
        };
        let wait = wait_for(req.timeout_ms, DEFAULT_WAIT);
        ops::run_each(&self.store, &members, &targets, &op, wait)
            .await
            .map(reply)
    }

    pub(super) async fn reload_members(
        &self,
        req: pb::ReloadRequest,
    ) -> Result<pb::OperationsReply, Status> {
        let members = Members::read(&self.store).await?;
        let targets = if req.member.is_empty() {
            members.in_restart_order("")
        } else {
            members.check(&req.member)?;
            vec![req.member.clone()]
        };
        let op = OpRequest {
            kind: op_kind::RELOAD,
            ..Default::default()
        };
        let wait = wait_for(req.timeout_ms, DEFAULT_WAIT);
        ops::run_each(&self.store, &members, &targets, &op, wait)
            .await
            .map(reply)
    }

    pub(super) async fn reinitialize_member(
        &self,
        req: pb::ReinitializeRequest,
    ) -> Result<pb::OperationsReply, Status> {
        if req.member.is_empty() {
            return Err(Status::invalid_argument(
                "name the member to reinitialize; it is never done cluster-wide",
            ));
        }
        let members = Members::read(&self.store).await?;
        members.check(&req.member)?;
        let op = OpRequest {
            kind: op_kind::REINITIALIZE,
            force: req.force,
            ..Default::default()
        };
        let wait = wait_for(req.timeout_ms, LONG_WAIT);
        ops::run_each(&self.store, &members, &[req.member], &op, wait)
            .await
            .map(reply)
    }

    pub(super) async fn cancel(
        &self,
        req: pb::CancelScheduledRequest,
    ) -> Result<pb::CancelScheduledReply, Status> {
        let id = match req.what.as_str() {
            "restart" if req.member.is_empty() => {
                return Err(Status::invalid_argument(
                    "name the member whose scheduled restart to cancel",
                ))
            }
            "restart" => ops::cancel_restart(&self.store, &req.member).await?,
            "switchover" => ops::cancel_switchover(&self.store).await?,
            other => {
                return Err(Status::invalid_argument(format!(
                    "{other:?} cannot be cancelled; cancel a restart or a switchover"
                )))
            }
        };
        Ok(pb::CancelScheduledReply { id })
    }

    pub(super) fn watch_operation(&self, req: pb::WatchRequest) -> WatchStream {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let store = self.store.clone();
        let deadline = tokio::time::Instant::now() + wait_for(req.timeout_ms, LONG_WAIT);
        tokio::spawn(async move {
            ops::follow(&store, &req.id, deadline, |p| {
                let item = p.map(|p| pb::OperationProgress {
                    id: p.fields.id,
                    member: p.member,
                    kind: p.fields.kind,
                    state: p.fields.state,
                    message: p.fields.message,
                    scheduled_at: p.fields.scheduled_at.unwrap_or_default(),
                });
                // Only changes are sent, so the queue stays short.
                tx.send(item).is_ok()
            })
            .await;
        });
        Box::pin(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
    }
}
