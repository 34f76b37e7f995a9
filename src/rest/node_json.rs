//! The node status JSON of `/patroni` and of every health check's GET:
//! Patroni's field names for what both have, pgkeel's own under `pgkeel`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::{RestInfo, RestState};
use crate::clock::BootInstant;
use crate::config::Scalar;
use crate::ha::DataDir;
use crate::status::NodeStatus;

/// `/patroni`: always 200 with the JSON (HEAD/OPTIONS without it).
pub async fn handler(State(s): State<Arc<RestState>>, method: Method) -> Response {
    if method != Method::GET {
        return axum::http::StatusCode::OK.into_response();
    }
    let now = s.clock.now();
    json(&s.status.borrow(), &s.info, now).into_response()
}

/// Patroni's value of `replication_state`.
pub fn replication_state(streaming: bool) -> &'static str {
    if streaming {
        "streaming"
    } else {
        "not streaming"
    }
}

/// The document.
pub fn json(status: &NodeStatus, info: &RestInfo, now: BootInstant) -> Json<NodeJson> {
    let pg = status.pg.as_ref();
    let answers = status.pg_answers();
    let standby = pg.is_some_and(|p| p.in_recovery == Some(true));
    let role = match pg {
        Some(p) if p.running && p.in_recovery == Some(false) => "primary",
        Some(p) if p.running && p.in_recovery == Some(true) => "replica",
        Some(p) if p.data_dir == DataDir::Empty => "uninitialized",
        _ if status.ha_state == "primary" => "primary",
        _ => "replica",
    };
    let state = match pg {
        Some(p) if p.running && p.in_recovery.is_some() => "running",
        Some(p) if p.running => "starting",
        _ if status.ha_state == "stopping" => "stopping",
        _ => "stopped",
    };
    let xlog = pg.filter(|_| answers).map(|p| {
        if standby {
            Xlog::Replica {
                received_location: p.received_lsn.map(|l| l.0),
                replayed_location: p.replayed_lsn.map(|l| l.0),
            }
        } else {
            Xlog::Primary {
                location: p.wal_lsn.map(|l| l.0),
            }
        }
    });
    Json(NodeJson {
        state,
        role,
        server_version: pg.filter(|_| answers).and_then(|p| p.server_version),
        xlog,
        timeline: pg.and_then(|p| p.timeline),
        replication_state: (answers && standby)
            .then(|| replication_state(pg.is_some_and(|p| p.streaming))),
        replication: pg
            .map(|p| {
                p.replication
                    .iter()
                    .map(|r| Replication {
                        application_name: r.application_name.clone(),
                        state: r.state.clone(),
                        sync_state: "async",
                        flush_lsn: r.flush_lsn.map(|l| l.to_string()),
                        replay_lsn: r.replay_lsn.map(|l| l.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        cluster_unlocked: status.view.as_ref().is_some_and(|v| v.leader.is_none()),
        pause: false,
        pending_restart: answers && pg.is_some_and(|p| p.pending_restart),
        tags: info.tags.clone(),
        database_system_identifier: match pg.map(|p| p.data_dir) {
            Some(DataDir::Initialized { sysid }) => Some(sysid.to_string()),
            _ => None,
        },
        patroni: PatroniJson {
            version: env!("CARGO_PKG_VERSION"),
            scope: info.scope.clone(),
            name: info.name.clone(),
        },
        pgkeel: PgkeelJson {
            ha_state: status.ha_state,
            holds_leader_key: status.holds_leader_key,
            lease_valid: status.holds_valid_lease(now),
            lease_valid_for_ms: millis(status.lease_remaining(now)),
            stepping_down: status.stepping_down,
            writable_primary: status.is_writable_primary(now),
            heartbeat_age_ms: status.heartbeat.map(|b| millis(now.saturating_since(b))),
            failovers: status.failovers,
        },
    })
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The document's shape (see [`json`]).
#[derive(Debug, Serialize)]
pub struct NodeJson {
    state: &'static str,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    xlog: Option<Xlog>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    replication: Vec<Replication>,
    /// Patroni writes it only when true.
    #[serde(skip_serializing_if = "is_false")]
    cluster_unlocked: bool,
    #[serde(skip_serializing_if = "is_false")]
    pause: bool,
    #[serde(skip_serializing_if = "is_false")]
    pending_restart: bool,
    tags: BTreeMap<String, Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_system_identifier: Option<String>,
    patroni: PatroniJson,
    pgkeel: PgkeelJson,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Xlog {
    Primary {
        location: Option<u64>,
    },
    Replica {
        received_location: Option<u64>,
        replayed_location: Option<u64>,
    },
}

#[derive(Debug, Serialize)]
struct Replication {
    application_name: String,
    state: String,
    sync_state: &'static str,
    flush_lsn: Option<String>,
    replay_lsn: Option<String>,
}

#[derive(Debug, Serialize)]
struct PatroniJson {
    /// pgkeel's version: the field exists so Patroni tooling finds one.
    version: &'static str,
    scope: String,
    name: String,
}

/// What Patroni has no name for.
#[derive(Debug, Serialize)]
struct PgkeelJson {
    ha_state: &'static str,
    holds_leader_key: bool,
    /// Judged at the instant of the request by CLOCK_BOOTTIME.
    lease_valid: bool,
    lease_valid_for_ms: u64,
    stepping_down: bool,
    writable_primary: bool,
    heartbeat_age_ms: Option<u64>,
    failovers: u64,
}
