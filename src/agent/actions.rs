//! Carrying out the HA core's actions: one `run_*` per lane, each turning
//! the outcome into exactly one event for the core.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consensus::peer::{MemberPosition, StoreError};
use crate::consensus::types::Expect;
use crate::ha::Event;
use crate::ha::{self as hv, DataDir, Lsn, Upstream};
use crate::ha::{Action, ActionDone, ActionKind, Reply, StartAs, StopMode};
use crate::postgres::conf::conninfo;
use crate::postgres::{self as pg, Postgres};
use crate::store::keys::{self, InitializeRecord, StatusRecord};
use crate::store::Store;

use super::AgentSpec;
use crate::ha::records::member_record;

fn done(kind: ActionKind, result: Result<Reply, String>) -> Event {
    Event::ActionDone(ActionDone { kind, result })
}

fn lease_reply(e: StoreError) -> Result<Reply, String> {
    match e {
        StoreError::LeaseExpired { .. } | StoreError::LeaseNotFound { .. } => Ok(Reply::LeaseGone),
        other => Err(other.to_string()),
    }
}

/// Runs a store-lane action.
pub async fn run_store(store: &Store, spec: &AgentSpec, action: Action) -> Event {
    let kind = action.kind();
    let result = match action {
        Action::AcquireInitialize => {
            let rec = InitializeRecord {
                owner: spec.name.clone(),
                sysid: None,
            };
            match store
                .put(keys::INITIALIZE, &keys::encode(&rec), None, Expect::Absent)
                .await
            {
                Ok(Ok(revision)) => Ok(Reply::Won { revision }),
                Ok(Err(_)) => Ok(Reply::Lost),
                Err(e) => Err(e.to_string()),
            }
        }
        Action::SetInitializeSysid { sysid } => set_sysid(store, spec, sysid).await,
        Action::GrantLease { ttl } => match store.grant(ttl).await {
            Ok(g) => Ok(Reply::Lease {
                lease: g.lease,
                valid_until: g.valid_until(spec.ha.safety_margin),
            }),
            Err(e) => Err(e.to_string()),
        },
        Action::Keepalive { lease } => match store
            .keepalive_within(lease, spec.ha.keepalive_timeout)
            .await
        {
            Ok(g) => Ok(Reply::Lease {
                lease: g.lease,
                valid_until: g.valid_until(spec.ha.safety_margin),
            }),
            Err(e) => lease_reply(e),
        },
        Action::AcquireLeader { lease } => {
            match store
                .put(keys::LEADER, &spec.name, Some(lease), Expect::Absent)
                .await
            {
                Ok(Ok(revision)) => Ok(Reply::Won { revision }),
                Ok(Err(_)) => Ok(Reply::Lost),
                Err(e) => lease_reply(e),
            }
        }
        Action::RevokeLease { lease } => store
            .revoke(lease)
            .await
            .map(|_| Reply::Done)
            .or_else(lease_reply),
        Action::PublishMember { lease, info } => {
            let rec = keys::encode(&member_record(&spec.name, &info, &spec.labels));
            match store
                .put(
                    &keys::member_key(&spec.name),
                    &rec,
                    Some(lease),
                    Expect::Any,
                )
                .await
            {
                Ok(_) => Ok(Reply::Done),
                Err(e) => lease_reply(e),
            }
        }
        Action::ReleaseLeader { revision, .. } => {
            // Only our own key, exactly as we wrote it: a failed compare
            // means it is already gone or someone else's.
            match store
                .delete(keys::LEADER, Expect::ModRevision(revision))
                .await
            {
                Ok(_) => Ok(Reply::Done),
                Err(e) => Err(e.to_string()),
            }
        }
        Action::PublishStatus(s) => {
            let rec = StatusRecord {
                optime: s.lsn.0,
                timeline: s.timeline,
            };
            store
                .put(keys::STATUS, &keys::encode(&rec), None, Expect::Any)
                .await
                .map(|_| Reply::Done)
                .map_err(|e| e.to_string())
        }
        Action::ReportOperation {
            id,
            outcome,
            message,
        } => report_operation(store, &spec.name, &id, outcome, message).await,
        Action::WriteSync {
            lease,
            members,
            quorum,
            base,
        } => {
            let op = keys::sync_write(&spec.name, members.clone(), quorum, base, lease);
            match store.write_cas(op).await {
                Ok(Ok(_)) => {
                    if quorum == 0 && spec.ha.sync.enabled() {
                        tracing::warn!(
                            "no synchronous standby holds every acknowledged commit: nobody is promoted automatically{}",
                            if spec.ha.sync.strict {
                                "; commits wait for a standby (strict)"
                            } else {
                                "; writes run UNPROTECTED until a standby is synchronous again"
                            }
                        );
                    } else {
                        tracing::info!(
                            sync_standby = ?members,
                            quorum,
                            "sync key written"
                        );
                    }
                    Ok(Reply::Done)
                }
                Ok(Err(_)) => {
                    Err("the sync key changed, or we no longer hold the leader key".into())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        other => Err(format!("{other:?} is not a store action")),
    };
    done(kind, result)
}

/// Records an operation's progress in `operations/<me>`, only while the
/// record still holds `id` (compare-and-set on its revision). `Lost` when
/// it does not: cancelled or replaced.
async fn report_operation(
    store: &Store,
    me: &str,
    id: &str,
    outcome: hv::OpOutcome,
    message: String,
) -> Result<Reply, String> {
    let key = keys::operation_key(me);
    let Some(current) = store
        .get(&key, crate::store::Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Reply::Lost);
    };
    let mut rec: keys::OperationRecord = keys::decode(&current.key, &current.value)?;
    if rec.id != id {
        return Ok(Reply::Lost);
    }
    rec.state = match outcome {
        hv::OpOutcome::Running => keys::op_state::RUNNING,
        hv::OpOutcome::Done => keys::op_state::DONE,
        hv::OpOutcome::Failed | hv::OpOutcome::Refused => keys::op_state::FAILED,
    }
    .to_string();
    rec.refused = outcome == hv::OpOutcome::Refused;
    match outcome {
        hv::OpOutcome::Running => {
            tracing::info!(id, kind = %rec.kind, "operation started: {message}")
        }
        _ => tracing::info!(id, kind = %rec.kind, state = %rec.state, "operation ended: {message}"),
    }
    rec.message = message;
    match store
        .put(
            &key,
            &keys::encode(&rec),
            None,
            Expect::ModRevision(current.mod_revision),
        )
        .await
    {
        Ok(Ok(_)) => Ok(Reply::Done),
        Ok(Err(_)) => Err("the operation's record changed meanwhile; reporting again".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn set_sysid(store: &Store, spec: &AgentSpec, sysid: u64) -> Result<Reply, String> {
    let current = store
        .get(keys::INITIALIZE, crate::store::Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the initialize key is gone")?;
    let mut rec: InitializeRecord = keys::decode(&current.key, &current.value)?;
    if rec.owner != spec.name {
        return Err(format!(
            "{} owns the initialize key, not this node",
            rec.owner
        ));
    }
    rec.sysid = Some(sysid.to_string());
    match store
        .put(
            keys::INITIALIZE,
            &keys::encode(&rec),
            None,
            Expect::ModRevision(current.mod_revision),
        )
        .await
    {
        Ok(Ok(_)) => Ok(Reply::Done),
        Ok(Err(_)) => Err("the initialize key changed underneath; retrying".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The replication connection string to `upstream`.
pub fn upstream_conninfo(spec: &AgentSpec, upstream: &Upstream) -> String {
    conninfo_as(spec, upstream, &spec.auth.replication)
}

/// The connection string pg_rewind uses to read `upstream`: the rewind
/// role when configured, else the superuser, to database `postgres` (not
/// a replication connection).
pub fn rewind_conninfo(spec: &AgentSpec, upstream: &Upstream) -> String {
    let user = spec.auth.rewind.as_ref().unwrap_or(&spec.auth.superuser);
    conninfo_as(spec, upstream, user)
}

fn conninfo_as(spec: &AgentSpec, upstream: &Upstream, user: &crate::config::PgUser) -> String {
    let (host, port) = upstream
        .pg_address
        .rsplit_once(':')
        .unwrap_or((upstream.pg_address.as_str(), "5432"));
    let password = user
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    let mut pairs = vec![
        ("host", host),
        ("port", port),
        ("user", user.username.as_str()),
        ("application_name", spec.slot.as_str()),
        ("dbname", "postgres"),
    ];
    if !password.is_empty() {
        pairs.push(("password", password.as_str()));
    }
    conninfo(&pairs)
}

fn pg_err(e: pg::PgError) -> String {
    e.to_string()
}

fn mode(m: StopMode) -> pg::StopMode {
    match m {
        StopMode::Fast => pg::StopMode::Fast,
        StopMode::Immediate => pg::StopMode::Immediate,
    }
}

/// The role this node last configured its PostgreSQL for: the probe cannot
/// ask a server that is still starting, and the WAL receiver does not say
/// which member it follows.
#[derive(Debug, Clone, Default)]
pub struct Configured {
    pub standby: bool,
    pub upstream: Option<Upstream>,
}

/// Runs a PostgreSQL-lane action (or a fence). `following` is updated with
/// the upstream this node was last configured to follow.
pub async fn run_pg<P: Postgres>(
    pg: &Arc<P>,
    spec: &AgentSpec,
    following: &Mutex<Configured>,
    action: Action,
) -> Event {
    let kind = action.kind();
    let set_following = |standby: bool, upstream: Option<Upstream>| {
        *following.lock().unwrap_or_else(|e| e.into_inner()) = Configured { standby, upstream };
    };
    let result: Result<Reply, String> = match action {
        Action::Probe => {
            return match probe(pg.as_ref(), following).await {
                Ok(state) => Event::PgProbed(state),
                Err(e) => done(kind, Err(e)),
            }
        }
        Action::Initdb => {
            async {
                pg.initdb(&spec.initdb).await.map_err(pg_err)?;
                match pg.control_data().await.map_err(pg_err)? {
                    Some(cd) => Ok(Reply::Initialized { sysid: cd.sysid }),
                    None => Err("initdb finished but the data directory holds no cluster".into()),
                }
            }
            .await
        }
        Action::CreateRoles => pg
            .create_roles(&spec.auth)
            .await
            .map(|_| Reply::Done)
            .map_err(pg_err),
        Action::StartPostgres(StartAs::Primary) => {
            async {
                pg.configure_as_primary().await.map_err(pg_err)?;
                set_following(false, None);
                pg.start(&spec.start).await.map_err(pg_err)?;
                Ok(Reply::Done)
            }
            .await
        }
        Action::StartPostgres(StartAs::Standby { upstream, slot }) => {
            async {
                match &upstream {
                    Some(u) => {
                        pg.configure_as_standby(&upstream_conninfo(spec, u), Some(&slot))
                            .await
                    }
                    None => pg.configure_as_standby("", None).await,
                }
                .map_err(pg_err)?;
                set_following(true, upstream);
                pg.start(&spec.start).await.map_err(pg_err)?;
                Ok(Reply::Done)
            }
            .await
        }
        Action::StopPostgres { mode: m } => {
            async {
                pg.stop(mode(m), spec.stop_timeout).await.map_err(pg_err)?;
                let cd = pg.control_data().await.map_err(pg_err)?;
                let clean = cd
                    .as_ref()
                    .filter(|c| c.state == "shut down" || c.state == "shut down in recovery");
                Ok(Reply::Stopped {
                    checkpoint_lsn: clean.map(|c| Lsn(c.checkpoint_lsn)),
                })
            }
            .await
        }
        Action::Promote => pg
            .promote(spec.start.timeout)
            .await
            .map(|_| Reply::Done)
            .map_err(pg_err),
        Action::Checkpoint => pg.checkpoint().await.map(|_| Reply::Done).map_err(pg_err),
        Action::Basebackup { from, slot } => pg
            .basebackup(&upstream_conninfo(spec, &from), Some(&slot))
            .await
            .map(|_| Reply::Done)
            .map_err(pg_err),
        Action::ConfigureStandby { upstream, slot } => {
            async {
                pg.configure_as_standby(&upstream_conninfo(spec, &upstream), Some(&slot))
                    .await
                    .map_err(pg_err)?;
                set_following(true, Some(upstream));
                pg.reload().await.map_err(pg_err)?;
                Ok(Reply::Done)
            }
            .await
        }
        Action::StopReceiving { slot } => {
            async {
                pg.configure_as_standby("", Some(&slot))
                    .await
                    .map_err(pg_err)?;
                set_following(true, None);
                pg.reload().await.map_err(pg_err)?;
                Ok(Reply::Done)
            }
            .await
        }
        Action::Reload => {
            async {
                pg.set_cluster_parameters(spec.start.cluster_parameters.clone())
                    .await
                    .map_err(pg_err)?;
                pg.reload().await.map_err(pg_err)?;
                Ok(Reply::Done)
            }
            .await
        }
        Action::SetSyncStandbyNames { value } => {
            async {
                pg.set_sync_standby_names(&value).await.map_err(pg_err)?;
                if pg.postmaster_pid().await.map_err(pg_err)?.is_some() {
                    pg.reload().await.map_err(pg_err)?;
                }
                tracing::info!(synchronous_standby_names = %value, "synchronous standbys set");
                Ok(Reply::Done)
            }
            .await
        }
        Action::CreateSlot { name } => pg
            .create_slot(&name)
            .await
            .map(|_| Reply::Done)
            .map_err(pg_err),
        Action::DropSlot { name } => pg
            .drop_slot(&name)
            .await
            .map(|_| Reply::Done)
            .map_err(pg_err),
        Action::Rewind { from } => pg
            .rewind(&rewind_conninfo(spec, &from))
            .await
            .map(|outcome| {
                tracing::info!(?outcome, from = %from.member, "rewind finished");
                Reply::Done
            })
            .map_err(pg_err),
        Action::MoveDataDirAside => pg
            .move_data_dir_aside()
            .await
            .map(|to| {
                tracing::warn!(to = %to.display(), "old data directory kept here");
                Reply::Done
            })
            .map_err(pg_err),
        Action::ApplyParameters { fingerprint } => {
            async {
                pg.set_cluster_parameters(spec.start.cluster_parameters.clone())
                    .await
                    .map_err(pg_err)?;
                pg.reload().await.map_err(pg_err)?;
                tracing::info!(
                    fingerprint,
                    "dynamic PostgreSQL parameters written and reloaded"
                );
                Ok(Reply::Done)
            }
            .await
        }
        Action::Fence => pg
            .stop(pg::StopMode::Immediate, Duration::from_secs(5))
            .await
            .map(|_| Reply::Done)
            .map_err(pg_err),
        other => Err(format!("{other:?} is not a PostgreSQL action")),
    };
    done(kind, result)
}

/// Carries out [`Action::RecordHistory`]: appends the switch onto
/// `timeline` to the `history` key unless it is there, read from this
/// node's `.history` file and written with a compare-and-set on the key's
/// revision. `Err` when the switch cannot be read yet or the race was lost
/// (the core asks again after loop_wait).
pub async fn record_history<P: Postgres>(
    store: &Store,
    pg: &P,
    me: &str,
    timeline: u32,
) -> Result<(), String> {
    use crate::store::Consistency;
    let current = store
        .get(keys::HISTORY, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?;
    let (mut records, expect) = match &current {
        Some(kv) => (
            keys::decode::<Vec<keys::HistoryRecord>>(keys::HISTORY, &kv.value)?,
            Expect::ModRevision(kv.mod_revision),
        ),
        None => (Vec::new(), Expect::Absent),
    };
    if records.iter().any(|r| r.timeline + 1 >= timeline) {
        return Ok(());
    }
    let Some(switch) = pg.timeline_switch(timeline).await.map_err(pg_err)? else {
        return Err(format!("no history file for timeline {timeline} yet"));
    };
    records.push(keys::HistoryRecord {
        timeline: switch.parent,
        lsn: switch.lsn,
        reason: switch.reason,
        // RFC 3339 UTC, for people reading `history` (never compared).
        time: keys::format_time(std::time::SystemTime::now()),
        new_leader: me.to_string(),
    });
    let value = serde_json::to_string(&records).map_err(|e| e.to_string())?;
    match store.put(keys::HISTORY, &value, None, expect).await {
        Ok(Ok(_)) => {
            tracing::info!(timeline, "recorded the timeline switch in history");
            Ok(())
        }
        Ok(Err(_)) => Err("the history key changed meanwhile".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// [`Action::FinishFailover`]: writes the outcome into the `failover` key
/// if it still holds request `id`, pending.
pub async fn finish_failover(
    store: &Store,
    id: &str,
    ok: bool,
    message: &str,
) -> Result<(), String> {
    use crate::store::Consistency;
    let Some(kv) = store
        .get(keys::FAILOVER, Consistency::Linearizable)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let mut record: keys::FailoverRecord = keys::decode(keys::FAILOVER, &kv.value)?;
    if record.id != id || !record.is_pending() {
        return Ok(());
    }
    record.state = if ok {
        keys::op_state::DONE
    } else {
        keys::op_state::FAILED
    }
    .to_string();
    record.message = message.to_string();
    let value = keys::encode(&record);
    match store
        .put(
            keys::FAILOVER,
            &value,
            None,
            Expect::ModRevision(kv.mod_revision),
        )
        .await
    {
        Ok(Ok(_)) => {
            if ok {
                tracing::info!(id, "{message}");
            } else {
                tracing::warn!(id, "request failed: {message}");
            }
            Ok(())
        }
        Ok(Err(_)) => Err("the failover key changed meanwhile".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Asks every member in `members` its position at once; the event lists
/// those that answered.
pub async fn query_positions(store: &Store, members: Vec<String>, timeout: Duration) -> Event {
    let asks = members.into_iter().map(|name| async move {
        let answer = store.ask_position(&name, timeout).await;
        (name, answer)
    });
    let mut answers = std::collections::BTreeMap::new();
    for (name, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(p) => {
                answers.insert(
                    name,
                    hv::PolledPosition {
                        running: p.running,
                        in_recovery: p.in_recovery,
                        received_lsn: p.received_lsn.map(Lsn),
                        replayed_lsn: p.replayed_lsn.map(Lsn),
                    },
                );
            }
            Err(e) => tracing::info!("not counting {name} as a failover contender: {e}"),
        }
    }
    tracing::info!(?answers, "members' positions at the vacancy");
    Event::PositionsPolled(answers)
}

/// This node's PostgreSQL position, looked up now for a candidate's
/// question ([`crate::consensus::peer::PeerRpc::Position`]).
pub async fn own_position<P: Postgres>(name: &str, pg: &P) -> Result<MemberPosition, String> {
    let state = pg.probe().await.map_err(pg_err)?;
    let mut out = MemberPosition {
        name: name.to_string(),
        running: state.pid().is_some(),
        ..Default::default()
    };
    if let Some(r) = state.running() {
        out.timeline = Some(r.timeline);
        match r.role {
            pg::ServerRole::Primary { current_lsn } => {
                out.in_recovery = Some(false);
                out.wal_lsn = Some(current_lsn);
            }
            pg::ServerRole::Standby {
                received_lsn,
                replayed_lsn,
                ..
            } => {
                out.in_recovery = Some(true);
                out.received_lsn = received_lsn;
                out.replayed_lsn = replayed_lsn;
            }
        }
    }
    Ok(out)
}

/// What the core needs to know about the local server.
async fn probe<P: Postgres>(pg: &P, following: &Mutex<Configured>) -> Result<hv::PgState, String> {
    let control = pg.control_data().await.map_err(pg_err)?;
    let state = pg.probe().await.map_err(pg_err)?;
    let mut out = hv::PgState {
        data_dir: match &control {
            Some(cd) => DataDir::Initialized { sysid: cd.sysid },
            None => DataDir::Empty,
        },
        ..Default::default()
    };
    let configured = following.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match &state {
        pg::PgState::Stopped => {
            out.timeline = control.as_ref().map(|c| c.timeline);
            // A fresh clone carries its source's state ("in production"
            // from a primary) until its first start: not a former primary.
            out.was_primary = control.as_ref().is_some_and(|c| {
                !c.from_backup
                    && matches!(
                        c.state.as_str(),
                        "in production" | "shut down" | "shutting down" | "in crash recovery"
                    )
            });
            out.checkpoint_lsn = control
                .as_ref()
                .filter(|c| c.state.starts_with("shut down"))
                .map(|c| Lsn(c.checkpoint_lsn));
        }
        pg::PgState::Starting { .. } => {
            out.running = true;
            // A standby that cannot answer yet is still a standby.
            out.in_recovery = configured.standby.then_some(true);
        }
        pg::PgState::Running(r) => {
            out.running = true;
            out.timeline = Some(r.timeline);
            out.server_version = Some(r.server_version_num);
            out.pending_restart = r.pending_restart;
            out.must_match = r.must_match_running.clone();
            out.must_match_pending = r.must_match_pending.clone();
            out.sync_standby_names = Some(r.sync_standby_names.clone());
            out.replication = r
                .replication
                .iter()
                .map(|row| hv::ReplicationRow {
                    application_name: row.application_name.clone(),
                    state: row.state.clone(),
                    sync_state: row.sync_state.clone(),
                    flush_lsn: row.flush_lsn.map(Lsn),
                    replay_lsn: row.replay_lsn.map(Lsn),
                })
                .collect();
            match r.role {
                pg::ServerRole::Primary { current_lsn } => {
                    out.in_recovery = Some(false);
                    out.wal_lsn = Some(Lsn(current_lsn));
                    out.slots = pg
                        .list_slots()
                        .await
                        .map_err(pg_err)?
                        .into_iter()
                        .map(|s| hv::SlotInfo {
                            physical: s.slot_type == "physical",
                            active: s.active,
                            name: s.name,
                        })
                        .collect();
                }
                pg::ServerRole::Standby {
                    received_lsn,
                    replayed_lsn,
                    streaming,
                    ..
                } => {
                    out.in_recovery = Some(true);
                    out.received_lsn = received_lsn.map(Lsn);
                    out.replayed_lsn = replayed_lsn.map(Lsn);
                    out.streaming = streaming;
                    out.following = configured.upstream;
                }
            }
        }
    }
    Ok(out)
}
