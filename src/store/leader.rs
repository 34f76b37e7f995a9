//! What the Raft leader does for the store: executes requests (its own and
//! forwarded ones), confirms keepalives, and expires leases on its clock.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use tokio::sync::watch;
use tokio::time::Instant;

use super::lessor::LeaseCheck;
use super::Store;
use crate::consensus::handler::StoreExecutor;
use crate::consensus::peer::{BoxFuture, StoreError, StoreReply, StoreRequest};
use crate::consensus::types::{Command, LeaseId, NodeId, Op};

impl StoreExecutor for Store {
    fn execute(&self, req: StoreRequest) -> BoxFuture<Result<StoreReply, StoreError>> {
        let store = self.clone();
        Box::pin(async move {
            let timeout = store.inner.request_timeout;
            match tokio::time::timeout(timeout, store.execute_local(req)).await {
                Ok(r) => r,
                Err(_) => Err(store.quorum_error().await),
            }
        })
    }
}

fn write_err(
    e: RaftError<NodeId, ClientWriteError<NodeId, crate::consensus::Member>>,
) -> StoreError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader: f.leader_id,
        },
        other => StoreError::Raft(other.to_string()),
    }
}

fn read_err(
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, crate::consensus::Member>>,
) -> StoreError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => StoreError::NotLeader {
            leader: f.leader_id,
        },
        // The leader could not hear from a quorum: it may be deposed.
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => {
            StoreError::Raft(format!("leadership not confirmed by a quorum: {q}"))
        }
        other => StoreError::Raft(other.to_string()),
    }
}

impl Store {
    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.inner.raft.metrics().borrow().current_leader,
        }
    }

    fn lease_ttl(&self, lease: LeaseId) -> Option<Duration> {
        self.inner.sm.read(|s| {
            s.leases
                .get(&lease)
                .map(|r| Duration::from_millis(r.ttl_ms))
        })
    }

    /// Checks `lease` on the lessor in `term`. Never holds the lessor lock
    /// across an await.
    fn lease_check(&self, lease: LeaseId, term: u64, renew: bool) -> Result<u64, StoreError> {
        let Some(ttl) = self.lease_ttl(lease) else {
            return Err(StoreError::LeaseNotFound { lease });
        };
        let mut lessor = self.inner.lessor.lock().unwrap_or_else(|e| e.into_inner());
        lessor.sync_term(Some(term));
        let now = Instant::now();
        let check = if renew {
            lessor.renew(lease, ttl, now)
        } else {
            lessor.check(lease, ttl, now)
        };
        match check {
            LeaseCheck::Alive => Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            LeaseCheck::Expired => Err(StoreError::LeaseExpired { lease }),
            LeaseCheck::NotLeader => Err(self.not_leader()),
        }
    }

    /// Executes a store request on this node, which must be the Raft leader.
    /// Never forwards (a forwarded request is never forwarded again).
    pub(crate) async fn execute_local(&self, req: StoreRequest) -> Result<StoreReply, StoreError> {
        let term = self.leader_term().ok_or_else(|| self.not_leader())?;
        match req {
            StoreRequest::Write(cmd) => {
                // A dead lease must not get new keys, even before its Expire
                // has committed.
                if let Op::Put {
                    lease: Some(lease), ..
                } = &cmd.op
                {
                    self.lease_check(*lease, term, false)?;
                }
                let resp = self.inner.raft.client_write(cmd).await.map_err(write_err)?;
                Ok(StoreReply::Written(resp.data))
            }
            StoreRequest::Keepalive(lease) => self.keepalive_local(lease, term).await,
            StoreRequest::Read { prefix } => {
                self.inner
                    .raft
                    .ensure_linearizable()
                    .await
                    .map_err(read_err)?;
                let (revision, kvs) = self.inner.sm.read(|s| (s.revision, s.range(&prefix)));
                Ok(StoreReply::Read { revision, kvs })
            }
        }
    }

    /// Confirms and renews a keepalive (rule 3 in `lessor`).
    async fn keepalive_local(&self, lease: LeaseId, term: u64) -> Result<StoreReply, StoreError> {
        // Refuse at once what is already dead.
        self.lease_check(lease, term, false)?;
        // A quorum confirms this term after the request arrived, and every
        // committed entry (an earlier leader's Expire included) is applied.
        self.inner
            .raft
            .ensure_linearizable()
            .await
            .map_err(read_err)?;
        if self.leader_term() != Some(term) {
            return Err(self.not_leader());
        }
        let ttl_ms = self.lease_check(lease, term, true)?;
        Ok(StoreReply::KeptAlive { lease, ttl_ms })
    }

    /// Runs the store's background duties until `shutdown` turns true: on
    /// the Raft leader, expiring leases whose deadline passed and recording
    /// the cluster id; on every node, learning the cluster id.
    pub async fn run_background(self, mut shutdown: watch::Receiver<bool>) {
        let mut metrics = self.inner.raft.metrics();
        let mut cluster_id_proposed_in: Option<u64> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let changed = self.inner.sm.changed().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let term = self.leader_term();
            let cluster_id = self.inner.sm.read(|s| s.cluster_id.clone());
            if let Some(id) = &cluster_id {
                self.inner.identity.set_cluster_id(id);
            } else if term.is_some() && cluster_id_proposed_in != term {
                cluster_id_proposed_in = term;
                self.spawn_write(Op::InitCluster {
                    cluster_id: new_cluster_id(),
                });
            }

            let (due, wake) = {
                let mut lessor = self.inner.lessor.lock().unwrap_or_else(|e| e.into_inner());
                lessor.sync_term(term);
                let now = Instant::now();
                let due = self.inner.sm.read(|s| lessor.due(&s.leases, now));
                (due, lessor.next_wakeup())
            };
            for lease in due {
                tracing::info!(
                    lease,
                    "lease deadline passed on the Raft leader; expiring it"
                );
                self.spawn_write(Op::Expire { lease });
            }

            let wake = wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                _ = &mut changed => {}
                r = metrics.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn spawn_write(&self, op: Op) {
        let raft = self.inner.raft.clone();
        tokio::spawn(async move {
            let what = format!("{op:?}");
            if let Err(e) = raft.client_write(Command::new(op)).await {
                tracing::debug!("could not commit {what}: {e}");
            }
        });
    }
}

/// A fresh random cluster id (128 bits, hex).
fn new_cluster_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
