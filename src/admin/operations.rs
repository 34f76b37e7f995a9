//! Member operations as the admin service (and the REST API) accept them:
//! restart, reload, reinitialize, cancelling a scheduled one, and watching
//! any long operation by id.
//!
//! A request is written to `operations/<member>` with a compare-and-set,
//! so any node can take it and at most one operation per member is
//! unfinished; the member's HA loop carries it out and reports `running`,
//! then `done` or `failed`, under the same id (`crate::ha` operations
//! rules). The calls here wait for that outcome by reading the record
//! again, bounded by the caller's deadline.
//!
//! Errors are [`Status`] values, which the REST API maps to HTTP codes:
//! unknown member NOT_FOUND, refused FAILED_PRECONDITION, failed while
//! carried out ABORTED, bad argument INVALID_ARGUMENT.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tonic::Status;

use crate::consensus::types::{Expect, KeyValue};
use crate::store::keys::{self, op_kind, op_state, OperationRecord, ProgressFields};
use crate::store::{Consistency, Store};

/// How often a waiting call reads the record again.
const POLL: Duration = Duration::from_millis(200);

/// What the calls need of the store: reads through the Raft leader and
/// compare-and-set writes. `Err` is a sentence about the store.
pub trait OpsKv: Send + Sync {
    /// Every key under `prefix`.
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, String>>;
    /// Writes `key` if `expect` holds; `Ok(Err(_))` is a lost compare.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>>;
    /// Deletes `key` if `expect` holds; `Ok(Err(_))` is a lost compare.
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>>;
}

impl OpsKv for Store {
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, String>> {
        Box::pin(async move {
            Store::range(self, prefix, Consistency::Linearizable)
                .await
                .map(|(_, kvs)| kvs)
                .map_err(|e| e.to_string())
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>> {
        Box::pin(async move {
            Store::put(self, key, &value, None, expect)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>> {
        Box::pin(async move {
            Store::delete(self, key, expect)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

pub(crate) fn unavailable(e: String) -> Status {
    Status::unavailable(format!("the cluster store cannot be reached: {e}"))
}

/// One operation to ask of a member.
#[derive(Debug, Clone, Default)]
pub struct OpRequest {
    /// [`op_kind`].
    pub kind: &'static str,
    pub pending_only: bool,
    /// `primary`, `replica`, or empty.
    pub role: String,
    pub force: bool,
    /// RFC 3339, already checked by [`check_schedule`].
    pub scheduled_at: Option<String>,
}

/// Checks a requested time: readable and not in the past. Returns it in
/// canonical form (UTC), or `None` for "now" (empty).
pub fn check_schedule(text: &str, now: SystemTime) -> Result<Option<String>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let at = keys::parse_time(text).map_err(Status::invalid_argument)?;
    if at < now {
        return Err(Status::invalid_argument(format!(
            "{text} is in the past; give a future time, or leave the schedule out to act now"
        )));
    }
    Ok(Some(keys::format_time(at)))
}

/// Checks a role filter: `primary`, `replica` or empty (`any`).
pub fn check_role(role: &str) -> Result<String, Status> {
    match role.trim() {
        "" | "any" => Ok(String::new()),
        "primary" | "leader" | "master" => Ok("primary".into()),
        "replica" => Ok("replica".into()),
        other => Err(Status::invalid_argument(format!(
            "{other:?} is not a role; use primary, replica or any"
        ))),
    }
}

/// The data members and the leader key's holder, as one read shows them.
pub struct Members {
    /// Member names, sorted.
    pub names: Vec<String>,
    pub leader: Option<String>,
    kvs: Vec<KeyValue>,
}

impl Members {
    pub async fn read(kv: &dyn OpsKv) -> Result<Members, Status> {
        let kvs = kv.range("").await.map_err(unavailable)?;
        let names = kvs
            .iter()
            .filter_map(|k| k.key.strip_prefix(keys::MEMBERS))
            .map(str::to_string)
            .collect();
        let leader = kvs
            .iter()
            .find(|k| k.key == keys::LEADER)
            .map(|k| k.value.clone());
        Ok(Members { names, leader, kvs })
    }

    /// `member`, or NOT_FOUND naming it.
    pub fn check(&self, member: &str) -> Result<(), Status> {
        if self.names.iter().any(|n| n == member) {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "no data member is named {member:?}; `pgkeelctl list` shows the members"
            )))
        }
    }

    /// Every member `role` selects, replicas first, the leader last.
    pub fn in_restart_order(&self, role: &str) -> Vec<String> {
        let is_leader = |n: &String| self.leader.as_ref() == Some(n);
        let mut out: Vec<String> = self
            .names
            .iter()
            .filter(|n| !is_leader(n) && role != "primary")
            .cloned()
            .collect();
        if role != "replica" {
            out.extend(self.names.iter().filter(|n| is_leader(n)).cloned());
        }
        out
    }

    fn operation(&self, member: &str) -> Option<&KeyValue> {
        let key = keys::operation_key(member);
        self.kvs.iter().find(|k| k.key == key)
    }
}

/// Writes `req` for `member` (known to exist) unless an unfinished
/// operation is there and `force` is off. Returns the record written.
pub async fn submit(
    kv: &dyn OpsKv,
    members: &Members,
    member: &str,
    req: &OpRequest,
    now: SystemTime,
) -> Result<OperationRecord, Status> {
    if req.kind == op_kind::REINITIALIZE && members.leader.as_deref() == Some(member) {
        return Err(Status::failed_precondition(format!(
            "{member} holds the leader key: cannot reinitialize the primary; switch over first"
        )));
    }
    let current = members.operation(member);
    let expect = match current {
        None => Expect::Absent,
        Some(c) => {
            // An unreadable record blocks nothing: it is replaced.
            let old: Option<ProgressFields> = keys::decode(&c.key, &c.value).ok();
            let unfinished = old.filter(|o| !op_state::is_terminal(&o.state));
            if let (Some(old), false) = (unfinished, req.force) {
                return Err(Status::failed_precondition(format!(
                    "{member} already has a {} {} (operation {}); wait for it, cancel it, or pass --force to replace it",
                    old.kind, old.state, old.id
                )));
            }
            Expect::ModRevision(c.mod_revision)
        }
    };
    let rec = OperationRecord {
        id: keys::new_operation_id(member),
        member: member.to_string(),
        kind: req.kind.to_string(),
        pending_only: req.pending_only,
        role: req.role.clone(),
        force: req.force,
        scheduled_at: req.scheduled_at.clone(),
        requested_at: keys::format_time(now),
        state: op_state::PENDING.to_string(),
        message: match &req.scheduled_at {
            Some(at) => format!("scheduled for {at}"),
            None => "waiting for the member to start it".into(),
        },
        refused: false,
    };
    let key = keys::operation_key(member);
    match kv.put(&key, keys::encode(&rec), expect).await {
        Ok(Ok(_)) => Ok(rec),
        Ok(Err(_)) => Err(Status::aborted(format!(
            "another request for {member} arrived at the same moment; look at it and retry"
        ))),
        Err(e) => Err(unavailable(e)),
    }
}

/// Reads `operations/<member>` until operation `id` ends or `deadline`
/// passes.
pub async fn wait(
    kv: &dyn OpsKv,
    member: &str,
    id: &str,
    deadline: tokio::time::Instant,
) -> Result<OperationRecord, Status> {
    let key = keys::operation_key(member);
    loop {
        let kvs = kv.range(&key).await.map_err(unavailable)?;
        let rec = kvs
            .iter()
            .find(|k| k.key == key)
            .and_then(|k| keys::decode::<OperationRecord>(&k.key, &k.value).ok())
            .filter(|r| r.id == id)
            .ok_or_else(|| {
                Status::aborted(format!(
                    "operation {id} on {member} was cancelled or replaced by another request"
                ))
            })?;
        if op_state::is_terminal(&rec.state) {
            return Ok(rec);
        }
        if tokio::time::Instant::now() + POLL > deadline {
            return Err(Status::deadline_exceeded(format!(
                "operation {id} on {member} has not finished yet ({}: {}); follow it with `pgkeelctl watch {id}`",
                rec.state, rec.message
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Done is fine; a refusal is FAILED_PRECONDITION, a failure ABORTED,
/// each with the member's sentence.
pub fn outcome(rec: &OperationRecord) -> Result<(), Status> {
    if rec.state == op_state::DONE {
        return Ok(());
    }
    let sentence = format!("{} on {}: {}", rec.kind, rec.member, rec.message);
    Err(if rec.refused {
        Status::failed_precondition(sentence)
    } else {
        Status::aborted(sentence)
    })
}

/// Asks `req` of each of `targets` in turn, waiting for each to end (or,
/// when scheduled, only writing it). Stops at the first that does not end
/// well: a rolling restart must not go on to the primary after a replica
/// failed to come back.
pub async fn run_each(
    kv: &dyn OpsKv,
    members: &Members,
    targets: &[String],
    req: &OpRequest,
    timeout: Duration,
) -> Result<Vec<OperationRecord>, Status> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    for member in targets {
        let rec = submit(kv, members, member, req, SystemTime::now()).await?;
        if req.scheduled_at.is_some() {
            out.push(rec);
            continue;
        }
        let rec = wait(kv, member, &rec.id, deadline).await?;
        outcome(&rec)?;
        out.push(rec);
    }
    Ok(out)
}

/// Cancels the scheduled restart of `member`: a compare-and-set delete
/// of its record while it is still pending with a time set.
pub async fn cancel_restart(kv: &dyn OpsKv, member: &str) -> Result<String, Status> {
    let members = Members::read(kv).await?;
    members.check(member)?;
    let nothing = || {
        Status::failed_precondition(format!(
            "{member} has no scheduled restart to cancel; `pgkeelctl watch` or `list` shows what it is doing"
        ))
    };
    let current = members.operation(member).ok_or_else(nothing)?;
    let rec: ProgressFields = keys::decode(&current.key, &current.value).unwrap_or_default();
    if rec.state != op_state::PENDING || rec.scheduled_at.is_none() {
        return Err(nothing());
    }
    cas_delete(kv, current, &rec.id).await
}

/// Cancels the scheduled switchover: a compare-and-set delete of the
/// `failover` key while it is pending with a time set.
pub async fn cancel_switchover(kv: &dyn OpsKv) -> Result<String, Status> {
    let kvs = kv.range(keys::FAILOVER).await.map_err(unavailable)?;
    let nothing = || Status::failed_precondition("no scheduled switchover to cancel");
    let current = kvs
        .iter()
        .find(|k| k.key == keys::FAILOVER)
        .ok_or_else(nothing)?;
    let rec: ProgressFields = keys::decode(&current.key, &current.value).unwrap_or_default();
    if rec.state != op_state::PENDING || rec.scheduled_at.is_none() {
        return Err(nothing());
    }
    cas_delete(kv, current, &rec.id).await
}

async fn cas_delete(kv: &dyn OpsKv, current: &KeyValue, id: &str) -> Result<String, Status> {
    match kv
        .delete(&current.key, Expect::ModRevision(current.mod_revision))
        .await
    {
        Ok(Ok(_)) => Ok(id.to_string()),
        Ok(Err(_)) => Err(Status::aborted(format!(
            "operation {id} changed while it was being cancelled (it may have started); look again"
        ))),
        Err(e) => Err(unavailable(e)),
    }
}

/// The progress of `id`, looked up among `operations/*` and `failover`.
/// `None`: no record holds that id.
pub async fn find(kv: &dyn OpsKv, id: &str) -> Result<Option<Progress>, Status> {
    let mut kvs = kv.range(keys::OPERATIONS).await.map_err(unavailable)?;
    kvs.extend(
        kv.range(keys::FAILOVER)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|k| k.key == keys::FAILOVER),
    );
    Ok(kvs.iter().find_map(|k| {
        let p: ProgressFields = keys::decode(&k.key, &k.value).ok()?;
        (p.id == id).then(|| Progress {
            member: k
                .key
                .strip_prefix(keys::OPERATIONS)
                .unwrap_or_default()
                .to_string(),
            fields: p,
        })
    }))
}

/// One look at an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Empty for a switchover.
    pub member: String,
    pub fields: ProgressFields,
}

impl Progress {
    pub fn is_terminal(&self) -> bool {
        op_state::is_terminal(&self.fields.state)
    }
}

/// Sends each change of `id`'s progress to `send` until it ends, its
/// record goes away, or `deadline` passes. `send` returning false (the
/// caller went away) stops it.
pub async fn follow(
    kv: &dyn OpsKv,
    id: &str,
    deadline: tokio::time::Instant,
    mut send: impl FnMut(Result<Progress, Status>) -> bool,
) {
    let mut last: Option<Progress> = None;
    loop {
        let now = match find(kv, id).await {
            Ok(p) => p,
            Err(e) => {
                send(Err(e));
                return;
            }
        };
        let Some(p) = now else {
            let status = if last.is_none() {
                Status::not_found(format!(
                    "no operation has id {id}; a member keeps only its latest operation"
                ))
            } else {
                Status::aborted(format!(
                    "the record of operation {id} is gone: it was cancelled or replaced"
                ))
            };
            send(Err(status));
            return;
        };
        if last.as_ref() != Some(&p) {
            if !send(Ok(p.clone())) {
                return;
            }
            if p.is_terminal() {
                return;
            }
            last = Some(p);
        }
        if tokio::time::Instant::now() + POLL > deadline {
            send(Err(Status::deadline_exceeded(format!(
                "operation {id} has not finished yet; watch it again"
            ))));
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
