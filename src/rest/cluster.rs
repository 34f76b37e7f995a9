//! `/cluster`, `/history` and `GET /config`: the cluster as the store
//! shows it, plus each Raft voter's reachability (the witness has no
//! member key, so it appears from Raft alone).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::RestState;
use crate::admin::RaftFacts;
use crate::consensus::types::KeyValue;
use crate::ha::Lsn;
use crate::store::keys::{self, HistoryRecord, MemberRecord, StatusRecord};

fn unavailable(e: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the cluster store: {e}\n"),
    )
        .into_response()
}

/// `GET /cluster`.
pub async fn cluster(State(s): State<Arc<RestState>>) -> Response {
    let (kvs, raft) = futures::join!(s.cluster.range(""), s.cluster.raft());
    match kvs {
        Ok(kvs) => Json(cluster_json(&s.info.scope, &kvs, &raft)).into_response(),
        Err(e) => unavailable(e),
    }
}

/// `GET /history`: Patroni's rows, `[timeline, lsn, reason, time, new_leader]`.
pub async fn history(State(s): State<Arc<RestState>>) -> Response {
    let kvs = match s.cluster.range(keys::HISTORY).await {
        Ok(kvs) => kvs,
        Err(e) => return unavailable(e),
    };
    let records: Vec<HistoryRecord> = kvs
        .iter()
        .find(|kv| kv.key == keys::HISTORY)
        .and_then(|kv| {
            keys::decode(&kv.key, &kv.value)
                .map_err(|e| tracing::warn!("{e}"))
                .ok()
        })
        .unwrap_or_default();
    let rows: Vec<serde_json::Value> = records
        .into_iter()
        .map(|r| serde_json::json!([r.timeline, r.lsn, r.reason, r.time, r.new_leader]))
        .collect();
    Json(rows).into_response()
}

/// `GET /config`: the dynamic config as stored, its revision as the
/// `ETag` (for `If-Match` on PATCH/PUT); 502 (as in Patroni) when no
/// member has written one yet.
pub async fn config(State(s): State<Arc<RestState>>) -> Response {
    match s.cluster.range(keys::CONFIG).await {
        Ok(kvs) => match kvs.into_iter().find(|kv| kv.key == keys::CONFIG) {
            Some(kv) => match serde_json::from_str::<serde_json::Value>(&kv.value) {
                Ok(v) => {
                    let mut r = Json(v).into_response();
                    if let Ok(tag) =
                        axum::http::HeaderValue::from_str(&format!("\"{}\"", kv.mod_revision))
                    {
                        r.headers_mut().insert(axum::http::header::ETAG, tag);
                    }
                    r
                }
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the store's config key is not JSON ({e}); rewrite it with PUT /config\n"),
                )
                    .into_response(),
            },
            None => (
                StatusCode::BAD_GATEWAY,
                "the cluster has no dynamic config yet: it is written when the first node bootstraps\n",
            )
                .into_response(),
        },
        Err(e) => unavailable(e),
    }
}

#[derive(Debug, Serialize)]
struct ClusterJson {
    members: Vec<MemberJson>,
    scope: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pause: bool,
    /// Synchronous replication, while it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    synchronous: Option<SyncJson>,
    /// Why the leader key stays vacant, when no member may be promoted.
    #[serde(skip_serializing_if = "Option::is_none")]
    no_leader_reason: Option<String>,
    /// Each member that may not be promoted and why; only with
    /// `no_leader_reason`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    promotion_blockers: BTreeMap<String, String>,
    raft: RaftJson,
}

#[derive(Debug, Serialize)]
struct SyncJson {
    mode: &'static str,
    strict: bool,
    /// `protected`, `unprotected` (writes continue without a synchronous
    /// standby) or `blocking` (strict: commits wait for one).
    protection: &'static str,
    /// The `sync` key's set: who may be promoted.
    members: Vec<String>,
    /// How many of them hold each acknowledged commit.
    quorum: u32,
    /// Why nobody can be promoted automatically, when that is so.
    #[serde(skip_serializing_if = "Option::is_none")]
    no_failover: Option<String>,
}

#[derive(Debug, Serialize)]
struct RaftJson {
    term: u64,
    leader: Option<String>,
    leader_id: Option<u64>,
    last_applied: u64,
    last_log_index: u64,
    /// This node's Raft state.
    state: &'static str,
}

#[derive(Debug, Serialize, Default)]
struct MemberJson {
    name: String,
    role: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<u32>,
    /// Bytes behind the leader (or the last known primary position).
    #[serde(skip_serializing_if = "Option::is_none")]
    lag: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    receive_lsn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replay_lsn: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: BTreeMap<String, serde_json::Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pending_restart: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    raft: Option<VoterJson>,
}

#[derive(Debug, Serialize)]
struct VoterJson {
    id: u64,
    witness: bool,
    reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_log_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `host:port` (brackets around IPv6 dropped) → host and port.
fn split_host_port(addr: &str) -> (Option<String>, Option<u16>) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (
            Some(h.trim_start_matches('[').trim_end_matches(']').to_string()),
            p.parse().ok(),
        ),
        None if addr.is_empty() => (None, None),
        None => (Some(addr.to_string()), None),
    }
}

fn lsn(v: Option<u64>) -> Option<String> {
    v.map(|l| Lsn(l).to_string())
}

fn sync_json(view: &crate::ha::ClusterView) -> Option<SyncJson> {
    use crate::ha::sync;
    let settings = view.config.sync;
    if !settings.enabled() {
        return None;
    }
    let key = view.sync.as_deref();
    let members: Vec<String> = key
        .map(|k| k.members.iter().cloned().collect())
        .unwrap_or_default();
    let quorum = key.map_or(0, |k| k.quorum);
    let no_failover = match key {
        None => Some(sync::SyncBlock::NoKey.to_string()),
        Some(k) if k.members.is_empty() || k.quorum == 0 => Some(
            "no synchronous standby holds every acknowledged commit: nobody is promoted automatically"
                .to_string(),
        ),
        Some(_) => None,
    };
    Some(SyncJson {
        mode: settings.mode.as_str(),
        strict: settings.strict,
        protection: sync::protection(view).as_str(),
        members,
        quorum,
        no_failover,
    })
}

fn cluster_json(scope: &str, kvs: &[KeyValue], raft: &RaftFacts) -> ClusterJson {
    let view = crate::ha::records::observed_view(kvs, std::time::SystemTime::now());
    let leader = kvs
        .iter()
        .find(|kv| kv.key == keys::LEADER)
        .map(|kv| kv.value.as_str());
    let records: Vec<MemberRecord> = kvs
        .iter()
        .filter(|kv| kv.key.starts_with(keys::MEMBERS))
        .filter_map(|kv| {
            keys::decode::<MemberRecord>(&kv.key, &kv.value)
                .map_err(|e| tracing::warn!("{e}"))
                .ok()
        })
        .collect();
    let status = kvs
        .iter()
        .find(|kv| kv.key == keys::STATUS)
        .and_then(|kv| keys::decode::<StatusRecord>(&kv.key, &kv.value).ok());
    let reference = leader
        .and_then(|l| records.iter().find(|r| r.name == l))
        .and_then(|r| r.xlog_location)
        .or(status.map(|s| s.optime));
    let voter_json = |name: &str| {
        raft.voters
            .iter()
            .find(|v| v.member.name == name)
            .map(|v| VoterJson {
                id: v.id,
                witness: v.member.witness,
                reachable: v.answer.is_ok(),
                state: v.answer.as_ref().ok().map(|h| h.state.clone()),
                last_log_index: v.answer.as_ref().ok().map(|h| h.last_log_index),
                error: v.answer.as_ref().err().cloned(),
            })
    };
    let mut members: Vec<MemberJson> = records
        .iter()
        .map(|r| {
            let is_leader = leader == Some(r.name.as_str());
            let (host, port) = split_host_port(r.pg_address());
            MemberJson {
                name: r.name.clone(),
                role: if is_leader {
                    "leader".into()
                } else {
                    crate::ha::sync::standby_role(&view, &r.name)
                        .map_or_else(|| r.role.clone(), str::to_string)
                },
                state: r.state.clone(),
                api_url: r.api_url.clone(),
                host,
                port,
                timeline: r.timeline,
                lag: if is_leader {
                    Some(0)
                } else {
                    reference
                        .zip(r.position())
                        .map(|(l, p)| l.saturating_sub(p))
                },
                lsn: lsn(r.xlog_location),
                receive_lsn: lsn(r.received_location),
                replay_lsn: lsn(r.replayed_location),
                tags: r.tags.clone(),
                pending_restart: r.pending_restart,
                raft: voter_json(&r.name),
            }
        })
        .collect();
    for v in &raft.voters {
        if members.iter().any(|m| m.name == v.member.name) {
            continue;
        }
        let reachable = v.answer.is_ok();
        let (role, state) = match (v.member.witness, reachable) {
            (true, true) => ("witness", "running"),
            (true, false) => ("witness", "unreachable"),
            (false, true) => ("replica", "no status"),
            (false, false) => ("replica", "unreachable"),
        };
        members.push(MemberJson {
            name: v.member.name.clone(),
            role: role.into(),
            state: state.into(),
            raft: voter_json(&v.member.name),
            ..Default::default()
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let no_leader = crate::ha::no_leader(&view);
    ClusterJson {
        members,
        scope: scope.to_string(),
        pause: view.config.pause,
        synchronous: sync_json(&view),
        promotion_blockers: no_leader
            .as_ref()
            .map(|n| n.blockers.iter().cloned().collect())
            .unwrap_or_default(),
        no_leader_reason: no_leader.map(|n| n.reason),
        raft: RaftJson {
            term: raft.term,
            leader: raft.leader_id.map(|_| raft.leader_name.clone()),
            leader_id: raft.leader_id,
            last_applied: raft.last_applied,
            last_log_index: raft.last_log_index,
            state: raft.state,
        },
    }
}
