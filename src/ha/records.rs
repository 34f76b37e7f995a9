//! Translations between the store's JSON records ([`crate::store::keys`])
//! and the HA core's plain data ([`crate::ha::view`]). Everything read from
//! the store is untrusted: unreadable records are skipped with a warning.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::{
    ClusterView, FailoverKind, FailoverRequest, HaConfig, InitializeKey, LeaderKey, Lsn,
    MemberInfo, MemberRole, MemberState, MemberTags, Operation, OperationKind, StatusKey, SyncKey,
    SyncSettings,
};
use crate::config::DcsConfig;
use crate::consensus::types::KeyValue;
use crate::store::keys::{
    self, op_kind, op_state, FailoverRecord, InitializeRecord, MemberRecord, StatusRecord,
    SyncRecord,
};

pub(super) fn role_name(r: MemberRole) -> &'static str {
    match r {
        MemberRole::Primary => "primary",
        MemberRole::Replica => "replica",
        MemberRole::Uninitialized => "uninitialized",
    }
}

fn role_from(s: &str) -> MemberRole {
    match s {
        "primary" | "leader" | "master" => MemberRole::Primary,
        "replica" => MemberRole::Replica,
        _ => MemberRole::Uninitialized,
    }
}

fn state_from(s: &str) -> MemberState {
    [
        MemberState::Running,
        MemberState::Streaming,
        MemberState::Starting,
        MemberState::Stopping,
        MemberState::Stopped,
        MemberState::Initializing,
        MemberState::CreatingReplica,
        MemberState::RewindFailed,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .unwrap_or(MemberState::Stopped)
}

/// The record this node publishes for `info`. Its tags are `labels` (the
/// tags the core does not read, as the config file has them) plus the
/// core's own, which win: other members read those.
pub fn member_record(
    name: &str,
    info: &MemberInfo,
    labels: &BTreeMap<String, crate::config::Scalar>,
) -> MemberRecord {
    let mut tags: BTreeMap<String, serde_json::Value> = labels
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
        .collect();
    let t = info.tags;
    if t.nofailover {
        tags.insert("nofailover".into(), serde_json::Value::Bool(true));
    }
    if t.clonefrom {
        tags.insert("clonefrom".into(), serde_json::Value::Bool(true));
    }
    if t.nosync {
        tags.insert("nosync".into(), serde_json::Value::Bool(true));
    }
    if t.failover_priority != crate::config::defaults::FAILOVER_PRIORITY {
        tags.insert("failover_priority".into(), t.failover_priority.into());
    }
    MemberRecord {
        name: name.to_string(),
        role: role_name(info.role).to_string(),
        state: info.state.as_str().to_string(),
        conn_url: format!("postgres://{}", info.pg_address),
        api_url: (!info.api_url.is_empty()).then(|| info.api_url.clone()),
        xlog_location: info.wal_lsn.map(|l| l.0),
        received_location: info.received_lsn.map(|l| l.0),
        replayed_location: info.replayed_lsn.map(|l| l.0),
        timeline: info.timeline,
        server_version: None,
        pending_restart: info.pending_restart,
        must_match: info.must_match.clone(),
        tags,
        pause: info.paused,
    }
}

fn member_info(r: &MemberRecord) -> MemberInfo {
    let flag = |k: &str| r.tags.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    MemberInfo {
        role: role_from(&r.role),
        state: state_from(&r.state),
        api_url: r.api_url.clone().unwrap_or_default(),
        pg_address: r.pg_address().to_string(),
        wal_lsn: r.xlog_location.map(Lsn),
        received_lsn: r.received_location.map(Lsn),
        replayed_lsn: r.replayed_location.map(Lsn),
        timeline: r.timeline,
        tags: MemberTags {
            nofailover: flag("nofailover"),
            clonefrom: flag("clonefrom"),
            nosync: flag("nosync"),
            failover_priority: r
                .tags
                .get("failover_priority")
                .and_then(|v| v.as_i64())
                .unwrap_or(crate::config::defaults::FAILOVER_PRIORITY),
        },
        paused: r.pause,
        pending_restart: r.pending_restart,
        must_match: r.must_match.clone(),
    }
}

fn decoded<T: for<'de> serde::Deserialize<'de>>(kv: &KeyValue) -> Option<T> {
    keys::decode(&kv.key, &kv.value)
        .map_err(|e| tracing::warn!("{e}"))
        .ok()
}

/// The cluster's dynamic config from the `config` key, if readable.
pub fn dynamic_config(kv: &BTreeMap<String, KeyValue>) -> Option<DcsConfig> {
    let v = kv.get(keys::CONFIG)?;
    serde_json::from_str(&v.value)
        .map_err(|e| {
            tracing::warn!(
                "the store's config key is not readable, keeping the previous settings: {e}"
            )
        })
        .ok()
}

/// The core's timing settings from the dynamic config; what the core has
/// that the config does not name stays as it was.
pub fn ha_config(dcs: &DcsConfig, current: &HaConfig) -> HaConfig {
    HaConfig {
        ttl: dcs.ttl,
        loop_wait: dcs.loop_wait,
        keepalive_interval: dcs.keepalive_interval,
        keepalive_timeout: dcs.keepalive_timeout,
        safety_margin: dcs.safety_margin,
        maximum_lag_on_failover: dcs.maximum_lag_on_failover,
        primary_start_timeout: dcs.primary_start_timeout,
        pause: dcs.pause,
        parameters_fingerprint: parameters_fingerprint(&dcs.postgresql.parameters),
        sync: SyncSettings {
            mode: dcs.synchronous_mode,
            strict: dcs.synchronous_mode_strict,
            node_count: dcs.synchronous_node_count.max(1),
            max_lag: u64::try_from(dcs.maximum_lag_on_syncnode)
                .ok()
                .filter(|lag| *lag > 0),
        },
        ..current.clone()
    }
}

/// The pending request in the `failover` key, and when it is scheduled
/// (`None`: at once). A request the HA loops cannot act on (a switchover
/// naming no leader, a failover naming no candidate, an unreadable time)
/// is logged and left out: the admin service never writes one.
pub fn failover_request(
    kv: &BTreeMap<String, KeyValue>,
) -> Option<(FailoverRecord, Option<SystemTime>)> {
    let r = kv.get(keys::FAILOVER).and_then(decoded::<FailoverRecord>)?;
    if !r.is_pending() {
        return None;
    }
    let at = match r.scheduled_at.as_deref().map(keys::parse_time) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            tracing::warn!(id = %r.id, "ignoring the failover request: its scheduled_at is unreadable: {e}");
            return None;
        }
    };
    let usable = match r.kind.as_str() {
        "switchover" => r.leader.is_some(),
        "failover" => r.candidate.is_some(),
        _ => false,
    };
    if !usable {
        tracing::warn!(id = %r.id, kind = %r.kind, "ignoring a failover request that names no leader or candidate");
        return None;
    }
    Some((r, at))
}

/// Identifies a set of dynamic PostgreSQL parameters for the core, which
/// reloads them when it changes. Never 0 (the core's "none known").
pub fn parameters_fingerprint(parameters: &BTreeMap<String, crate::config::Scalar>) -> u64 {
    use std::hash::{Hash, Hasher};
    // DefaultHasher::new() has fixed keys: the same map hashes the same.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    keys::encode(parameters).hash(&mut h);
    h.finish().max(1)
}

/// The core's view of the store contents `kv` at `revision`; `wall_now`
/// decides only whether a scheduled request is due.
pub fn cluster_view(
    kv: &BTreeMap<String, KeyValue>,
    revision: u64,
    config: &HaConfig,
    wall_now: SystemTime,
) -> ClusterView {
    let initialize = kv
        .get(keys::INITIALIZE)
        .and_then(decoded::<InitializeRecord>)
        .map(|r| InitializeKey {
            owner: r.owner,
            sysid: r.sysid.and_then(|s| s.parse().ok()),
        });
    let leader = kv.get(keys::LEADER).map(|l| LeaderKey {
        holder: l.value.clone(),
        lease: l.lease.unwrap_or(0),
        mod_revision: l.mod_revision,
    });
    let members = kv
        .range(keys::MEMBERS.to_string()..)
        .take_while(|(k, _)| k.starts_with(keys::MEMBERS))
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(keys::MEMBERS)?.to_string();
            decoded::<MemberRecord>(v).map(|r| (name, member_info(&r)))
        })
        .collect();
    let status = kv
        .get(keys::STATUS)
        .and_then(decoded::<StatusRecord>)
        .map(|s| StatusKey {
            lsn: Lsn(s.optime),
            timeline: s.timeline,
        });
    let failover = failover_request(kv).map(|(r, at)| FailoverRequest {
        id: r.id,
        kind: if r.kind == "failover" {
            FailoverKind::Failover
        } else {
            FailoverKind::Switchover
        },
        leader: r.leader,
        candidate: r.candidate,
        due: at.is_none_or(|t| t <= wall_now),
    });
    let sync = kv.get(keys::SYNC).and_then(|v| {
        decoded::<SyncRecord>(v).map(|r| {
            Box::new(SyncKey {
                leader: r.leader,
                members: r.sync_standby.into_iter().collect(),
                quorum: r.quorum,
                mod_revision: v.mod_revision,
            })
        })
    });
    ClusterView {
        revision,
        initialize,
        leader,
        members,
        status,
        config: config.clone(),
        failover,
        sync,
        operation: None,
    }
}

/// The view an observer (the admin service, the REST API) builds from
/// one read of the whole store: the dynamic config from the `config` key
/// (the defaults while it is unreadable), no operation of its own.
pub fn observed_view(kvs: &[KeyValue], wall_now: SystemTime) -> ClusterView {
    let kv: BTreeMap<String, KeyValue> = kvs.iter().map(|v| (v.key.clone(), v.clone())).collect();
    let defaults = HaConfig::default();
    let config = dynamic_config(&kv).map_or(defaults.clone(), |dcs| ha_config(&dcs, &defaults));
    let revision = kvs.iter().map(|v| v.mod_revision).max().unwrap_or(0);
    cluster_view(&kv, revision, &config, wall_now)
}

/// Where `operations/<me>` stands for this node's HA loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationDue {
    /// No unfinished, readable operation for this node.
    None,
    /// One to carry out now.
    Now(Operation),
    /// One scheduled for this wall-clock time: build the view again then.
    At(std::time::SystemTime),
}

/// The operation asked of `me`, judged against this node's wall clock
/// `wall_now` (only this node's clock decides when its own scheduled
/// operation is due). Unreadable records are skipped with a warning.
pub fn operation_due(
    kv: &BTreeMap<String, KeyValue>,
    me: &str,
    wall_now: std::time::SystemTime,
) -> OperationDue {
    let Some(rec) = kv
        .get(&keys::operation_key(me))
        .and_then(decoded::<keys::OperationRecord>)
    else {
        return OperationDue::None;
    };
    let running = rec.state == op_state::RUNNING;
    if !running && rec.state != op_state::PENDING {
        return OperationDue::None;
    }
    let kind = match rec.kind.as_str() {
        op_kind::RESTART => OperationKind::Restart {
            pending_only: rec.pending_only,
            role: match rec.role.as_str() {
                "primary" | "leader" | "master" => Some(MemberRole::Primary),
                "replica" => Some(MemberRole::Replica),
                _ => None,
            },
        },
        op_kind::RELOAD => OperationKind::Reload,
        op_kind::REINITIALIZE => OperationKind::Reinitialize,
        other => {
            tracing::warn!("ignoring operation {} of unknown kind {other:?}", rec.id);
            return OperationDue::None;
        }
    };
    if let (false, Some(at)) = (running, rec.scheduled_at.as_deref()) {
        match keys::parse_time(at) {
            Ok(t) if t > wall_now => return OperationDue::At(t),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("ignoring operation {}: {e}", rec.id);
                return OperationDue::None;
            }
        }
    }
    OperationDue::Now(Operation {
        id: rec.id,
        kind,
        running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scalar;

    fn kv(key: &str, value: &str, lease: Option<u64>) -> (String, KeyValue) {
        (
            key.to_string(),
            KeyValue {
                key: key.into(),
                value: value.into(),
                create_revision: 1,
                mod_revision: 7,
                version: 1,
                lease,
            },
        )
    }

    #[test]
    fn a_member_round_trips_and_garbage_is_skipped() {
        let info = MemberInfo {
            role: MemberRole::Replica,
            state: MemberState::Streaming,
            api_url: String::new(),
            pg_address: "127.0.0.1:5434".into(),
            wal_lsn: None,
            received_lsn: Some(Lsn(99)),
            replayed_lsn: Some(Lsn(98)),
            timeline: Some(2),
            tags: MemberTags {
                nofailover: true,
                failover_priority: 3,
                ..Default::default()
            },
            paused: true,
            pending_restart: true,
            must_match: [("max_connections".to_string(), 150)].into(),
        };
        let labels = [
            ("zone".to_string(), Scalar::Str("eu-1".into())),
            ("weight".to_string(), Scalar::Int(3)),
            // The core's own tag wins over a label of the same name.
            ("nofailover".to_string(), Scalar::Bool(false)),
        ]
        .into();
        let record = member_record("n2", &info, &labels);
        assert_eq!(
            serde_json::to_value(&record.tags).unwrap(),
            serde_json::json!({
                "zone": "eu-1", "weight": 3, "nofailover": true, "failover_priority": 3
            })
        );
        let rec = keys::encode(&record);
        let store: BTreeMap<_, _> = [
            kv("members/n2", &rec, Some(4)),
            kv("members/bad", "{not json", Some(5)),
            kv("leader", "n1", Some(3)),
            kv("initialize", r#"{"owner":"n1","sysid":"7301"}"#, None),
            kv("status", r#"{"optime":120,"timeline":2}"#, None),
        ]
        .into_iter()
        .collect();
        let view = cluster_view(&store, 9, &HaConfig::default(), SystemTime::now());
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.members["n2"], info);
        assert_eq!(
            view.leader
                .as_ref()
                .map(|l| (l.holder.as_str(), l.lease, l.mod_revision)),
            Some(("n1", 3, 7))
        );
        assert_eq!(view.initialize.as_ref().and_then(|i| i.sysid), Some(7301));
        assert_eq!(
            view.status,
            Some(StatusKey {
                lsn: Lsn(120),
                timeline: 2
            })
        );
        assert_eq!(view.revision, 9);
    }

    #[test]
    fn an_operation_is_passed_in_only_when_due_and_unfinished() {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = |secs: u64| keys::format_time(now + Duration::from_secs(secs));
        let rec = |state: &str, scheduled: Option<String>| keys::OperationRecord {
            id: "op1".into(),
            member: "n1".into(),
            kind: "restart".into(),
            role: "replica".into(),
            pending_only: true,
            state: state.into(),
            scheduled_at: scheduled,
            ..Default::default()
        };
        let due = |r: keys::OperationRecord| {
            let store: BTreeMap<_, _> = [kv("operations/n1", &keys::encode(&r), None)]
                .into_iter()
                .collect();
            operation_due(&store, "n1", now)
        };
        let restart = Operation {
            id: "op1".into(),
            kind: OperationKind::Restart {
                pending_only: true,
                role: Some(MemberRole::Replica),
            },
            running: false,
        };
        assert_eq!(
            due(rec("pending", None)),
            OperationDue::Now(restart.clone())
        );
        assert_eq!(
            due(rec("pending", Some(at(0)))),
            OperationDue::Now(restart.clone())
        );
        assert_eq!(
            due(rec("pending", Some(at(60)))),
            OperationDue::At(now + Duration::from_secs(60))
        );
        let running = Operation {
            running: true,
            ..restart
        };
        assert_eq!(
            due(rec("running", Some(at(60)))),
            OperationDue::Now(running)
        );
        assert_eq!(due(rec("done", None)), OperationDue::None);
        assert_eq!(due(rec("pending", Some("soon".into()))), OperationDue::None);
        let other_kind = keys::OperationRecord {
            kind: "explode".into(),
            ..rec("pending", None)
        };
        assert_eq!(due(other_kind), OperationDue::None);
        let empty = BTreeMap::new();
        assert_eq!(operation_due(&empty, "n1", now), OperationDue::None);
    }
}
