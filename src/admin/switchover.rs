//! Switchover, failover, pause and resume: validated here, stored as a
//! request in the `failover` key (or the config's `pause` flag), and
//! carried out by the HA loops (`crate::ha`'s switchover rules). Nothing
//! here touches the leader key: the holder hands over itself, or a dead
//! holder's lease runs out first (DESIGN.md).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::consensus::types::{Expect, KeyValue};
use crate::ha::records::{cluster_view, dynamic_config, ha_config};
use crate::ha::{candidate_problem, ClusterView, HaConfig, Lsn};
use crate::pb::admin as pb;
use crate::store::keys::{self, op_state, FailoverRecord};

use super::operations::{check_schedule, unavailable, OpsKv};
use super::AdminService;

/// How long a call waits for its outcome when the client set no deadline.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// How long the client is willing to wait (its `grpc-timeout`), less a
/// margin to answer in; [`DEFAULT_WAIT`] when it set none.
pub fn client_deadline(metadata: &MetadataMap) -> Duration {
    let Some(value) = metadata.get("grpc-timeout").and_then(|v| v.to_str().ok()) else {
        return DEFAULT_WAIT;
    };
    let (digits, unit) = value.split_at(value.len().saturating_sub(1));
    let Ok(n) = digits.parse::<u64>() else {
        return DEFAULT_WAIT;
    };
    let total = match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return DEFAULT_WAIT,
    };
    total.saturating_sub(Duration::from_millis(200))
}

/// The store as the HA loops see it, from one linearizable read.
struct Snapshot {
    kv: BTreeMap<String, KeyValue>,
    view: ClusterView,
}

impl Snapshot {
    fn config(&self) -> HaConfig {
        self.view.config.clone()
    }

    /// The leader key's holder.
    fn holder(&self) -> Option<&str> {
        self.view.leader.as_ref().map(|l| l.holder.as_str())
    }

    /// The reference position for a candidate's lag: the holder's
    /// published WAL position, else the `status` key's.
    fn primary_position(&self) -> Lsn {
        self.holder()
            .and_then(|h| self.view.members.get(h))
            .and_then(|m| m.wal_lsn)
            .or(self.view.status.map(|s| s.lsn))
            .unwrap_or_default()
    }

    /// The candidate, checked as the holder will check it.
    fn check_candidate(&self, name: &str) -> Result<(), Status> {
        if !self.view.members.contains_key(name) {
            return Err(Status::not_found(format!(
                "no data member is named {name}: see pgkeelctl list"
            )));
        }
        if self.holder() == Some(name) {
            return Err(Status::failed_precondition(format!(
                "{name} is already the primary"
            )));
        }
        candidate_problem(&self.view, name, self.primary_position())
            .map(|_| ())
            .map_err(Status::failed_precondition)
    }

    /// The pending request in the `failover` key, if any.
    fn pending(&self) -> Option<(FailoverRecord, u64)> {
        let kv = self.kv.get(keys::FAILOVER)?;
        let r: FailoverRecord = keys::decode(&kv.key, &kv.value).ok()?;
        r.is_pending().then_some((r, kv.mod_revision))
    }
}

/// One line on a pending request, for `list`.
pub fn describe(r: &FailoverRecord) -> String {
    let to = r.candidate.as_deref().unwrap_or("the best standby");
    let from = r
        .leader
        .as_deref()
        .map(|l| format!(" from {l}"))
        .unwrap_or_default();
    let when = r
        .scheduled_at
        .as_deref()
        .map(|t| format!(" at {t}"))
        .unwrap_or_default();
    format!("{} {}{from} to {to}{when}", r.kind, r.id)
}

/// The pending request in `kvs`, described for `list`; empty when none.
pub fn pending_line(kvs: &[KeyValue]) -> String {
    kvs.iter()
        .find(|kv| kv.key == keys::FAILOVER)
        .and_then(|kv| keys::decode::<FailoverRecord>(&kv.key, &kv.value).ok())
        .filter(FailoverRecord::is_pending)
        .map(|r| describe(&r))
        .unwrap_or_default()
}

/// How often a waiting call reads the store again.
const POLL: Duration = Duration::from_millis(100);

/// The store as the HA loops see it, from one read through the leader.
async fn snapshot(kv: &dyn OpsKv) -> Result<Snapshot, Status> {
    let kvs = kv.range("").await.map_err(unavailable)?;
    let kv: BTreeMap<String, KeyValue> = kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
    let config = dynamic_config(&kv)
        .map(|dcs| ha_config(&dcs, &HaConfig::default()))
        .unwrap_or_default();
    let view = cluster_view(&kv, 0, &config, SystemTime::now());
    Ok(Snapshot { kv, view })
}

/// Stores `record` unless another request is pending.
async fn store_request(
    kv: &dyn OpsKv,
    snap: &Snapshot,
    record: &FailoverRecord,
) -> Result<(), Status> {
    if let Some((pending, _)) = snap.pending() {
        return Err(Status::failed_precondition(format!(
            "{} is already pending: cancel it first (pgkeelctl cancel switchover) or wait for it",
            describe(&pending)
        )));
    }
    let expect = match snap.kv.get(keys::FAILOVER) {
        Some(kv) => Expect::ModRevision(kv.mod_revision),
        None => Expect::Absent,
    };
    kv.put(keys::FAILOVER, keys::encode(record), expect)
        .await
        .map_err(unavailable)?
        .map_err(|_| {
            Status::aborted(
                "another switchover or failover was asked for at the same moment: see pgkeelctl list and retry",
            )
        })?;
    tracing::info!(id = %record.id, "{} stored", describe(record));
    Ok(())
}

/// Waits until request `id` is done or failed, `wait` passes, or the
/// request is cancelled or replaced.
async fn outcome(kv: &dyn OpsKv, id: &str, wait: Duration) -> Result<pb::SwitchoverReply, Status> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let kvs = kv.range("").await.map_err(unavailable)?;
        let value = |key: &str| {
            kvs.iter()
                .find(|kv| kv.key == key)
                .map(|kv| kv.value.clone())
        };
        let record = value(keys::FAILOVER)
            .and_then(|v| keys::decode::<FailoverRecord>(keys::FAILOVER, &v).ok())
            .filter(|r| r.id == id);
        match record {
            None => {
                return Err(Status::aborted(format!(
                    "request {id} was cancelled or replaced before it happened"
                )))
            }
            Some(r) if r.state == op_state::DONE => {
                return Ok(pb::SwitchoverReply {
                    operation_id: id.to_string(),
                    scheduled: false,
                    message: r.message,
                    new_primary: value(keys::LEADER).unwrap_or_default(),
                });
            }
            Some(r) if r.state == op_state::FAILED => {
                return Err(Status::failed_precondition(r.message));
            }
            Some(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "request {id} has not finished yet; it goes on: follow it with pgkeelctl watch {id}"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn refuse_paused(snap: &Snapshot) -> Result<(), Status> {
    if snap.config().pause {
        return Err(Status::failed_precondition(
            "the cluster is paused (maintenance mode): run pgkeelctl resume first",
        ));
    }
    Ok(())
}

/// A switchover as asked (`leader`, `candidate`, `scheduled_at` may be
/// empty): validated, stored, and (unless scheduled) waited for, at most
/// `wait`. The admin service and the REST API both call this.
pub async fn switchover(
    kv: &dyn OpsKv,
    req: pb::SwitchoverRequest,
    wait: Duration,
) -> Result<pb::SwitchoverReply, Status> {
    let scheduled_at = check_schedule(&req.scheduled_at, SystemTime::now())?;
    let snap = snapshot(kv).await?;
    refuse_paused(&snap)?;
    let holder = snap.holder().map(str::to_string).ok_or_else(|| {
        Status::failed_precondition(
            "no member holds the leader key, so there is no one to switch over from: use pgkeelctl failover --candidate NAME",
        )
    })?;
    if !req.leader.is_empty() && req.leader != holder {
        return Err(Status::failed_precondition(format!(
            "{} is not the leader; {holder} is",
            req.leader
        )));
    }
    let candidate = (!req.candidate.is_empty()).then_some(req.candidate);
    match candidate.as_deref() {
        Some(c) => snap.check_candidate(c)?,
        None => {
            let any = snap
                .view
                .members
                .keys()
                .any(|m| *m != holder && snap.check_candidate(m).is_ok());
            if !any {
                return Err(Status::failed_precondition(crate::ha::no_candidate(
                    &snap.view,
                    &holder,
                    snap.primary_position(),
                )));
            }
        }
    }
    let record = FailoverRecord {
        id: keys::new_operation_id("switchover"),
        kind: "switchover".into(),
        leader: Some(holder),
        candidate,
        scheduled_at,
        requested_at: keys::format_time(SystemTime::now()),
        state: op_state::PENDING.into(),
        message: String::new(),
    };
    store_request(kv, &snap, &record).await?;
    if record.scheduled_at.is_some() {
        return Ok(pb::SwitchoverReply {
            operation_id: record.id.clone(),
            scheduled: true,
            message: format!("{} is scheduled", describe(&record)),
            new_primary: String::new(),
        });
    }
    outcome(kv, &record.id, wait).await
}

/// A failover to `candidate`, validated, stored and waited for.
pub async fn failover(
    kv: &dyn OpsKv,
    candidate: String,
    wait: Duration,
) -> Result<pb::SwitchoverReply, Status> {
    if candidate.is_empty() {
        return Err(Status::invalid_argument(
            "a failover needs a candidate: pass --candidate NAME (or use switchover)",
        ));
    }
    let snap = snapshot(kv).await?;
    refuse_paused(&snap)?;
    snap.check_candidate(&candidate)?;
    let record = FailoverRecord {
        id: keys::new_operation_id("failover"),
        kind: "failover".into(),
        leader: None,
        candidate: Some(candidate),
        scheduled_at: None,
        requested_at: keys::format_time(SystemTime::now()),
        state: op_state::PENDING.into(),
        message: String::new(),
    };
    store_request(kv, &snap, &record).await?;
    outcome(kv, &record.id, wait).await
}

/// Sets the config's `pause` flag (compare-and-set on the config key);
/// with `wait_members`, waits (at most `wait`) for every data member to
/// report it.
pub async fn set_pause(
    kv: &dyn OpsKv,
    on: bool,
    wait_members: bool,
    wait: Duration,
) -> Result<pb::PauseReply, Status> {
    let kvs = kv.range(keys::CONFIG).await.map_err(unavailable)?;
    let current = kvs
        .into_iter()
        .find(|kv| kv.key == keys::CONFIG)
        .ok_or_else(|| {
            Status::failed_precondition("no dynamic config yet: the cluster has not bootstrapped")
        })?;
    let mut doc: serde_json::Value = serde_json::from_str(&current.value)
        .map_err(|e| Status::data_loss(format!("the stored config is not JSON: {e}")))?;
    let Some(map) = doc.as_object_mut() else {
        return Err(Status::data_loss("the stored config is not a JSON object"));
    };
    let already = map.get("pause").and_then(|v| v.as_bool()).unwrap_or(false) == on;
    if !already {
        if on {
            map.insert("pause".into(), serde_json::Value::Bool(true));
        } else {
            map.remove("pause");
        }
        kv.put(
            keys::CONFIG,
            doc.to_string(),
            Expect::ModRevision(current.mod_revision),
        )
        .await
        .map_err(unavailable)?
        .map_err(|_| Status::aborted("the config changed meanwhile; retry"))?;
        tracing::info!("maintenance mode {}", if on { "on" } else { "off" });
    }
    if wait_members {
        await_members_paused(kv, on, wait).await?;
    }
    Ok(pb::PauseReply { paused: on })
}

/// Polls the member keys until every one reports `pause == on`.
async fn await_members_paused(kv: &dyn OpsKv, on: bool, wait: Duration) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let kvs = kv.range(keys::MEMBERS).await.map_err(unavailable)?;
        let lagging: Vec<String> = super::member_records(&kvs)
            .into_iter()
            .filter(|r| r.pause != on)
            .map(|r| r.name)
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Status::deadline_exceeded(format!(
                "the flag is stored, but {} do not report it yet",
                lagging.join(", ")
            )));
        }
        tokio::time::sleep(POLL * 2).await;
    }
}

impl AdminService {
    pub(super) async fn do_switchover(
        &self,
        req: Request<pb::SwitchoverRequest>,
    ) -> Result<Response<pb::SwitchoverReply>, Status> {
        self.authorize(&req)?;
        let wait = client_deadline(req.metadata());
        switchover(&self.store, req.into_inner(), wait)
            .await
            .map(Response::new)
    }

    pub(super) async fn do_failover(
        &self,
        req: Request<pb::FailoverRequest>,
    ) -> Result<Response<pb::SwitchoverReply>, Status> {
        self.authorize(&req)?;
        let wait = client_deadline(req.metadata());
        failover(&self.store, req.into_inner().candidate, wait)
            .await
            .map(Response::new)
    }

    pub(super) async fn do_pause(
        &self,
        req: Request<pb::PauseRequest>,
        on: bool,
    ) -> Result<Response<pb::PauseReply>, Status> {
        self.authorize(&req)?;
        let wait = client_deadline(req.metadata());
        set_pause(&self.store, on, req.into_inner().wait, wait)
            .await
            .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_with_a_margin() {
        let mut m = MetadataMap::new();
        assert_eq!(client_deadline(&m), DEFAULT_WAIT);
        m.insert("grpc-timeout", "30S".parse().unwrap());
        assert_eq!(client_deadline(&m), Duration::from_millis(29_800));
        m.insert("grpc-timeout", "1500m".parse().unwrap());
        assert_eq!(client_deadline(&m), Duration::from_millis(1_300));
        m.insert("grpc-timeout", "soon".parse().unwrap());
        assert_eq!(client_deadline(&m), DEFAULT_WAIT);
    }

    #[test]
    fn a_pending_request_reads_as_one_line() {
        let r = FailoverRecord {
            id: "switchover-1".into(),
            kind: "switchover".into(),
            leader: Some("node1".into()),
            candidate: None,
            scheduled_at: Some("2026-11-22T03:00:00Z".into()),
            state: op_state::PENDING.into(),
            ..Default::default()
        };
        assert_eq!(
            describe(&r),
            "switchover switchover-1 from node1 to the best standby at 2026-11-22T03:00:00Z"
        );
    }
}
