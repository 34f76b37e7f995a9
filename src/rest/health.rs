//! Health checks with Patroni's paths and status codes: 200 when the
//! condition holds, 503 otherwise. GET answers with the node status JSON;
//! HEAD and OPTIONS (what HAProxy sends) carry no body.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::node_json;
use super::query::CheckQuery;
use super::{RestInfo, RestState};
use crate::clock::BootInstant;
use crate::config::SynchronousMode;
use crate::ha::Lsn;
use crate::status::NodeStatus;

/// Which condition a path checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Runs the writable primary under a valid leader lease.
    Primary,
    /// Holds the leader key under a valid lease (whatever PostgreSQL is).
    Leader,
    /// A running standby, not tagged `noloadbalance`, within `?lag=`.
    Replica,
    /// The primary, or a healthy replica.
    ReadOnly,
    /// A healthy replica that is not a synchronous standby.
    Asynchronous,
    /// A healthy replica in the `sync` set, synchronous_mode `on`.
    Synchronous,
    /// A healthy replica in the `sync` set, synchronous_mode `quorum`.
    Quorum,
    /// The primary, or a synchronous (or quorum) standby.
    ReadOnlySync,
    /// PostgreSQL runs and answers.
    Health,
    /// The HA loop ran recently.
    Liveness,
    /// The leader, or a streaming standby within `?lag=`.
    Readiness,
}

/// Every health-check path. `/master` and `/leader`'s old meaning are kept
/// for configs written for older Patroni releases.
pub const PATHS: &[(&str, Check)] = &[
    ("/", Check::Primary),
    ("/primary", Check::Primary),
    ("/read-write", Check::Primary),
    ("/master", Check::Primary),
    ("/leader", Check::Leader),
    ("/replica", Check::Replica),
    ("/read-only", Check::ReadOnly),
    ("/asynchronous", Check::Asynchronous),
    ("/async", Check::Asynchronous),
    ("/synchronous", Check::Synchronous),
    ("/sync", Check::Synchronous),
    ("/quorum", Check::Quorum),
    ("/read-only-sync", Check::ReadOnlySync),
    ("/health", Check::Health),
    ("/liveness", Check::Liveness),
    ("/readiness", Check::Readiness),
];

impl Check {
    /// Patroni ignores tag filters on the leader paths.
    fn applies_tags(self) -> bool {
        !matches!(self, Check::Primary | Check::Leader)
    }

    /// Patroni's liveness and readiness probes answer with the code only.
    fn has_body(self) -> bool {
        !matches!(self, Check::Liveness | Check::Readiness)
    }

    /// Whether `status` passes this check at `now`.
    pub fn passes(
        self,
        status: &NodeStatus,
        info: &RestInfo,
        q: &CheckQuery,
        now: BootInstant,
    ) -> bool {
        let ok = match self {
            Check::Primary => status.is_writable_primary(now),
            Check::Leader => status.holds_valid_lease(now) && !status.stepping_down,
            Check::Replica => replica_ok(status, info, q),
            Check::Asynchronous => {
                replica_ok(status, info, q) && sync_member(status, info).is_none()
            }
            Check::Synchronous => {
                replica_ok(status, info, q)
                    && sync_member(status, info) == Some(SynchronousMode::On)
            }
            Check::Quorum => {
                replica_ok(status, info, q)
                    && sync_member(status, info) == Some(SynchronousMode::Quorum)
            }
            Check::ReadOnly => status.is_writable_primary(now) || replica_ok(status, info, q),
            Check::ReadOnlySync => {
                status.is_writable_primary(now)
                    || (replica_ok(status, info, q) && sync_member(status, info).is_some())
            }
            Check::Health => status.pg_answers(),
            Check::Liveness => alive(status, now),
            Check::Readiness => ready(status, q, now),
        };
        ok && (!self.applies_tags() || tags_match(info, q))
    }
}

/// The axum handler for `which`.
pub fn handler(
    which: Check,
) -> impl Fn(State<Arc<RestState>>, Method, RawQuery) -> std::future::Ready<Response>
       + Clone
       + Send
       + Sync
       + 'static {
    move |State(s), method, RawQuery(raw)| {
        std::future::ready(answer(&s, &method, raw.as_deref(), which))
    }
}

fn answer(s: &RestState, method: &Method, raw: Option<&str>, which: Check) -> Response {
    let q = match CheckQuery::parse(raw) {
        Ok(q) => q,
        Err(sentence) => return (StatusCode::BAD_REQUEST, sentence + "\n").into_response(),
    };
    let now = s.clock.now();
    let status = s.status.borrow();
    let code = if which.passes(&status, &s.info, &q, now) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if method == Method::GET && which.has_body() {
        (code, node_json::json(&status, &s.info, now)).into_response()
    } else {
        code.into_response()
    }
}

/// How far this standby's `replayed` (or `received`) WAL is behind the
/// cluster's last known primary position: the `status` key, or the leader's
/// published position when that is newer. Zero without a reference.
pub fn lag_bytes(status: &NodeStatus, received: bool) -> u64 {
    let Some(view) = status.view.as_ref() else {
        return 0;
    };
    let leader_lsn = view
        .leader
        .as_ref()
        .and_then(|l| view.members.get(&l.holder))
        .and_then(|m| m.wal_lsn);
    let reference = view.status.map(|s| s.lsn).max(leader_lsn);
    let Some(reference) = reference else { return 0 };
    let own = status.pg.as_ref().and_then(|p| {
        if received {
            p.received_lsn
        } else {
            p.replayed_lsn
        }
    });
    reference.0.saturating_sub(own.unwrap_or(Lsn(0)).0)
}

fn replica_ok(status: &NodeStatus, info: &RestInfo, q: &CheckQuery) -> bool {
    let streaming = status.pg.as_ref().is_some_and(|p| p.streaming);
    !info.noloadbalance()
        && status.is_running_standby()
        && q.lag.is_none_or(|max| lag_bytes(status, false) <= max)
        && q.replication_state
            .as_deref()
            .is_none_or(|want| want == node_json::replication_state(streaming))
}

/// The synchronous mode this node is a member of the `sync` set in, if it
/// is (the set of the current leader's key, in synchronous mode).
fn sync_member(status: &NodeStatus, info: &RestInfo) -> Option<SynchronousMode> {
    let view = status.view.as_ref()?;
    let key = view.sync.as_deref()?;
    let leader = view.leader.as_ref()?;
    (view.config.sync.enabled() && key.leader == leader.holder && key.contains(&info.name))
        .then_some(view.config.sync.mode)
}

/// Patroni's rule: the loop last ran within `ttl` on a primary, `2 × ttl`
/// on anything else.
fn alive(status: &NodeStatus, now: BootInstant) -> bool {
    let Some(beat) = status.heartbeat else {
        return false;
    };
    let ttl = status
        .view
        .as_ref()
        .map(|v| v.config.ttl)
        .unwrap_or(crate::config::defaults::TTL);
    let primary = status.pg.as_ref().is_some_and(|p| p.is_primary());
    now.saturating_since(beat) < if primary { ttl } else { ttl * 2 }
}

fn ready(status: &NodeStatus, q: &CheckQuery, now: BootInstant) -> bool {
    if status.holds_valid_lease(now) && !status.stepping_down {
        return true;
    }
    let streaming = status
        .pg
        .as_ref()
        .is_some_and(|p| p.running && p.in_recovery == Some(true) && p.streaming);
    let max = q.lag.unwrap_or_else(|| {
        status
            .view
            .as_ref()
            .map(|v| v.config.maximum_lag_on_failover)
            .unwrap_or(crate::config::defaults::MAXIMUM_LAG_ON_FAILOVER)
    });
    streaming && lag_bytes(status, q.mode_write) <= max
}

/// Every `tag_KEY=VALUE` must name a tag of this node with that value;
/// non-string values compare as YAML writes them (`true`, `3`).
fn tags_match(info: &RestInfo, q: &CheckQuery) -> bool {
    q.tags.iter().all(|(key, want)| match info.tags.get(key) {
        None => false,
        Some(crate::config::Scalar::Str(s)) => s == want,
        Some(other) => other.to_string().eq_ignore_ascii_case(want),
    })
}
