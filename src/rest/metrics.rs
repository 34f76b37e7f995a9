//! `/metrics` in the Prometheus/OpenMetrics text format (prometheus-client).
//!
//! Two groups, both labelled `scope` and `name` like Patroni's:
//! - `patroni_*`: the names Patroni exports, with the same meaning, so
//!   existing dashboards and alerts keep working;
//! - `pgkeel_*`: what only pgkeel has: the lease, the HA state, Raft, each
//!   member's WAL positions and lag, failover counts and phase durations.
//!
//! Every scrape builds a fresh registry from the latest [`NodeStatus`] and
//! the store, so no value is ever stale by more than the scrape itself.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::health::lag_bytes;
use super::RestState;
use crate::admin::RaftFacts;
use crate::clock::BootInstant;
use crate::status::NodeStatus;

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The OpenMetrics content type prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format (what `promtool check metrics` and
/// `curl` users get).
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: OpenMetrics when the scraper asks for it (Prometheus
/// does), the classic text format otherwise.
pub async fn handler(State(s): State<Arc<RestState>>, headers: HeaderMap) -> Response {
    let raft = s.cluster.raft().await;
    let now = s.clock.now();
    let status = s.status.borrow().clone();
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match render(&s.info.scope, &s.info.name, &status, &raft, now) {
        Ok(text) if openmetrics => ([(CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Ok(text) => ([(CONTENT_TYPE, TEXT)], classic_text(&text)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

/// OpenMetrics → the classic text format: a counter family is named with
/// its `_total` suffix there, and `# EOF` / `# UNIT` lines do not exist.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn fgauge(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g = FloatGauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

fn wide(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The whole exposition text.
pub fn render(
    scope: &str,
    name: &str,
    st: &NodeStatus,
    raft: &RaftFacts,
    now: BootInstant,
) -> Result<String, std::fmt::Error> {
    let labels = [
        (Cow::Borrowed("scope"), Cow::Owned(scope.to_string())),
        (Cow::Borrowed("name"), Cow::Owned(name.to_string())),
    ];
    let mut reg = Registry::with_labels(labels.into_iter());
    patroni_compatible(&mut reg, name, st, now);
    pgkeel_node(&mut reg, st, now);
    pgkeel_members(&mut reg, st);
    pgkeel_raft(&mut reg, raft);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}

fn patroni_compatible(reg: &mut Registry, name: &str, st: &NodeStatus, now: BootInstant) {
    let pg = st.pg.as_ref();
    let answers = st.pg_answers();
    let primary = st.is_writable_primary(now);
    let standby = answers && pg.is_some_and(|p| p.in_recovery == Some(true));
    let at = |f: fn(&crate::ha::PgState) -> Option<crate::ha::Lsn>| {
        pg.filter(|_| answers).and_then(f).map_or(0, |l| wide(l.0))
    };
    let sync_role = st
        .view
        .as_ref()
        .and_then(|v| crate::ha::sync::standby_role(v, name));
    let rows: [(&str, &str, i64); 19] = [
        (
            "patroni_postgres_running",
            "Value is 1 if Postgres is running, 0 otherwise.",
            flag(answers),
        ),
        (
            "patroni_primary",
            "Value is 1 if this node is the leader (valid lease, read-write), 0 otherwise.",
            flag(primary),
        ),
        (
            "patroni_replica",
            "Value is 1 if this node is a replica, 0 otherwise.",
            flag(standby),
        ),
        (
            "patroni_standby_leader",
            "Always 0: pgkeel has no standby clusters yet.",
            0,
        ),
        (
            "patroni_sync_standby",
            "Value is 1 if this node is a synchronous standby (synchronous_mode on), 0 otherwise.",
            flag(standby && sync_role == Some("sync_standby")),
        ),
        (
            "patroni_quorum_standby",
            "Value is 1 if this node is a quorum standby (synchronous_mode quorum), 0 otherwise.",
            flag(standby && sync_role == Some("quorum_standby")),
        ),
        (
            "pgkeel_synchronous_unprotected",
            "Value is 1 on the primary while synchronous mode is on but no synchronous standby holds its commits (writes run unprotected), 0 otherwise.",
            flag(
                primary
                    && st
                        .view
                        .as_ref()
                        .is_some_and(|v| crate::ha::sync::protection(v) == crate::ha::sync::Protection::Unprotected),
            ),
        ),
        (
            "patroni_xlog_location",
            "Current WAL write position of the primary, 0 if this node is not the leader.",
            if primary { at(|p| p.wal_lsn) } else { 0 },
        ),
        (
            "patroni_xlog_received_location",
            "WAL position received by this replica, 0 if not a replica.",
            if standby { at(|p| p.received_lsn) } else { 0 },
        ),
        (
            "patroni_xlog_replayed_location",
            "WAL position replayed by this replica, 0 if not a replica.",
            if standby { at(|p| p.replayed_lsn) } else { 0 },
        ),
        (
            "patroni_xlog_paused",
            "Always 0: pgkeel never pauses WAL replay.",
            0,
        ),
        (
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            flag(standby && pg.is_some_and(|p| p.streaming)),
        ),
        (
            "patroni_postgres_in_archive_recovery",
            "Always 0: pgkeel replicas stream, they do not restore from an archive.",
            0,
        ),
        (
            "patroni_postgres_server_version",
            "Version of Postgres (if running), 0 otherwise.",
            pg.filter(|_| answers)
                .and_then(|p| p.server_version)
                .map_or(0, i64::from),
        ),
        (
            "patroni_cluster_unlocked",
            "Value is 1 if the cluster is unlocked, 0 if locked.",
            flag(st.view.as_ref().is_some_and(|v| v.leader.is_none())),
        ),
        (
            "patroni_failsafe_mode_is_active",
            "Always 0: pgkeel has no failsafe mode.",
            0,
        ),
        (
            "patroni_postgres_timeline",
            "Postgres timeline of this node (if running), 0 otherwise.",
            pg.filter(|_| answers)
                .and_then(|p| p.timeline)
                .map_or(0, i64::from),
        ),
        (
            "patroni_pending_restart",
            "Value is 1 if the node needs a restart, 0 otherwise.",
            flag(answers && pg.is_some_and(|p| p.pending_restart)),
        ),
        (
            "patroni_is_paused",
            "Always 0: pgkeel has no maintenance mode yet.",
            0,
        ),
    ];
    for (name, help, value) in rows {
        gauge(reg, name, help, value);
    }
}

fn pgkeel_node(reg: &mut Registry, st: &NodeStatus, now: BootInstant) {
    let role = Family::<Labels, Gauge>::default();
    for state in [
        "starting",
        "bootstrapping",
        "replica",
        "candidate",
        "primary",
        "rejoining",
        "stopping",
        "exited",
    ] {
        role.get_or_create(&vec![("state", state.to_string())])
            .set(flag(st.ha_state == state));
    }
    reg.register(
        "pgkeel_ha_state",
        "1 for the HA loop's current state (the wanted role), 0 for the others.",
        role,
    );
    gauge(
        reg,
        "pgkeel_holds_leader_key",
        "1 while this node holds the leader key.",
        flag(st.holds_leader_key),
    );
    gauge(
        reg,
        "pgkeel_lease_valid",
        "1 while this node holds the leader key on a lease still valid by its own CLOCK_BOOTTIME.",
        flag(st.holds_valid_lease(now)),
    );
    fgauge(
        reg,
        "pgkeel_lease_remaining_seconds",
        "Seconds left of this node's leader lease by its own clock, 0 without one.",
        st.lease_remaining(now).as_secs_f64(),
    );
    gauge(
        reg,
        "pgkeel_stepping_down",
        "1 while the node is fencing, stopping or abandoning a promotion.",
        flag(st.stepping_down),
    );
    fgauge(
        reg,
        "pgkeel_ha_loop_age_seconds",
        "Seconds since the HA loop last ran (-1 before its first pass).",
        st.heartbeat
            .map_or(-1.0, |b| now.saturating_since(b).as_secs_f64()),
    );
    counter(
        reg,
        "pgkeel_failovers",
        "Failovers that promoted this node since its pgkeel started.",
        st.failovers,
    );
    counter(
        reg,
        "pgkeel_switchovers",
        "Switchovers that handed over to this node since its pgkeel started.",
        st.switchovers,
    );
    let phases = Family::<Labels, FloatGauge>::default();
    if let Some(f) = st.last_failover {
        for (phase, secs) in f.durations() {
            phases
                .get_or_create(&vec![("phase", phase.to_string())])
                .set(secs);
        }
    }
    reg.register("pgkeel_last_failover_phase_seconds", "Duration of each phase of the last failover that promoted this node: leader_vacant_to_acquired, acquired_to_promoted, promoted_to_writable, total", phases);
    gauge(reg, "pgkeel_replication_lag_bytes", "Bytes of WAL this node has replayed behind the last known primary position (0 on the primary)", if st.is_running_standby() { wide(lag_bytes(st, false)) } else { 0 });
}

fn pgkeel_members(reg: &mut Registry, st: &NodeStatus) {
    let wal = Family::<Labels, Gauge>::default();
    let lag = Family::<Labels, Gauge>::default();
    let timeline = Family::<Labels, Gauge>::default();
    if let Some(view) = st.view.as_ref() {
        let leader = view.leader.as_ref().map(|l| l.holder.as_str());
        let reference = leader
            .and_then(|l| view.members.get(l))
            .and_then(|m| m.wal_lsn)
            .or(view.status.map(|s| s.lsn));
        for (name, m) in &view.members {
            for (kind, lsn) in [
                ("write", m.wal_lsn),
                ("received", m.received_lsn),
                ("replayed", m.replayed_lsn),
            ] {
                if let Some(l) = lsn {
                    wal.get_or_create(&vec![("member", name.clone()), ("kind", kind.to_string())])
                        .set(wide(l.0));
                }
            }
            let position = m.received_lsn.or(m.replayed_lsn).or(m.wal_lsn);
            if leader == Some(name.as_str()) {
                lag.get_or_create(&vec![("member", name.clone())]).set(0);
            } else if let (Some(r), Some(p)) = (reference, position) {
                lag.get_or_create(&vec![("member", name.clone())])
                    .set(wide(r.0.saturating_sub(p.0)));
            }
            if let Some(t) = m.timeline {
                timeline
                    .get_or_create(&vec![("member", name.clone())])
                    .set(i64::from(t));
            }
        }
    }
    reg.register("pgkeel_member_wal_position_bytes", "WAL positions each member published (kind: write on a primary, received and replayed on a standby)", wal);
    reg.register("pgkeel_member_lag_bytes", "Bytes each member is behind the leader's published position (or the last known primary position)", lag);
    reg.register(
        "pgkeel_member_timeline",
        "Timeline each member published.",
        timeline,
    );
}

fn pgkeel_raft(reg: &mut Registry, raft: &RaftFacts) {
    gauge(
        reg,
        "pgkeel_raft_term",
        "This voter's current Raft term.",
        wide(raft.term),
    );
    gauge(
        reg,
        "pgkeel_raft_leader_id",
        "Raft node id of the leader this voter knows of, 0 when none.",
        wide(raft.leader_id.unwrap_or(0)),
    );
    gauge(
        reg,
        "pgkeel_raft_is_leader",
        "1 if this voter is the Raft leader.",
        flag(raft.state == "leader"),
    );
    gauge(
        reg,
        "pgkeel_raft_last_applied_index",
        "Last Raft log index applied to this voter's state machine (committed).",
        wide(raft.last_applied),
    );
    gauge(
        reg,
        "pgkeel_raft_last_log_index",
        "Last Raft log index in this voter's log.",
        wide(raft.last_log_index),
    );
    let reachable = Family::<Labels, Gauge>::default();
    for v in &raft.voters {
        reachable
            .get_or_create(&vec![
                ("voter", v.member.name.clone()),
                ("witness", v.member.witness.to_string()),
            ])
            .set(flag(v.answer.is_ok()));
    }
    reg.register(
        "pgkeel_raft_voter_reachable",
        "1 if the Raft voter answered this node's probe (the witness included).",
        reachable,
    );
}
