//! The values the controller hands to and gets from the HA driver.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::config::Scalar;

/// How to stop the postmaster. Fencing uses `Immediate`; a planned
/// handover uses `Fast` so the shutdown checkpoint reaches the replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: roll back sessions, write a shutdown checkpoint, exit.
    Fast,
    /// SIGQUIT: exit at once; the next start runs crash recovery.
    Immediate,
}

/// How to start: how long to wait for readiness, and the cluster-wide
/// parameters (the store's dynamic config) the server must run with.
#[derive(Clone, Debug)]
pub struct StartSpec {
    /// Readiness deadline; a server not ready by then is killed.
    pub timeout: Duration,
    /// Replaces the parameters last given to `set_cluster_parameters`, so a
    /// start always runs with the dynamic config the driver has now.
    pub cluster_parameters: BTreeMap<String, Scalar>,
}

impl Default for StartSpec {
    fn default() -> Self {
        StartSpec {
            timeout: Duration::from_secs(60),
            cluster_parameters: BTreeMap::new(),
        }
    }
}

/// The role pgkeel last told the controller to start in; kept apart from
/// what the server reports ([`ServerRole`]) so the driver can reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WantedRole {
    /// No `standby.signal`, no upstream.
    Primary,
    /// `standby.signal`, streaming from `primary_conninfo`.
    Standby {
        /// libpq connection string of the upstream, password included.
        primary_conninfo: String,
        /// The physical slot on the upstream, when one is used.
        primary_slot_name: Option<String>,
    },
}

/// What a probe saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PgState {
    /// No postmaster runs for this data directory.
    Stopped,
    /// A postmaster runs but refuses connections (starting up, crash
    /// recovery, a standby not yet consistent, shutting down).
    Starting {
        /// The postmaster's PID, for fencing by PID.
        pid: u32,
    },
    /// Accepting connections.
    Running(Running),
}

impl PgState {
    /// The postmaster PID if one is alive.
    pub fn pid(&self) -> Option<u32> {
        match self {
            PgState::Stopped => None,
            PgState::Starting { pid } => Some(*pid),
            PgState::Running(r) => Some(r.pid),
        }
    }

    /// The details when the server accepts connections.
    pub fn running(&self) -> Option<&Running> {
        match self {
            PgState::Running(r) => Some(r),
            _ => None,
        }
    }

    /// True only for a server that answers and is not in recovery: the one
    /// state in which this node's PostgreSQL accepts writes.
    pub fn is_writable_primary(&self) -> bool {
        self.running()
            .is_some_and(|r| matches!(r.role, ServerRole::Primary { .. }))
    }
}

/// A server that accepts connections.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Running {
    /// The postmaster's PID.
    pub pid: u32,
    /// `server_version_num`, e.g. 150004.
    pub server_version_num: u32,
    /// The timeline the server writes (primary) or last received/checkpointed
    /// (standby). On a primary it comes from the current WAL file name, which
    /// changes at promotion; `pg_control_checkpoint()` would lag until the
    /// next checkpoint. On a standby it is `pg_stat_wal_receiver.received_tli`
    /// while streaming, else the last restartpoint's timeline.
    pub timeline: u32,
    /// Role and WAL positions.
    pub role: ServerRole,
    /// `pg_stat_replication`, one row per connected WAL sender.
    pub replication: Vec<ReplicationRow>,
    /// Some setting changed that needs a restart (`pg_settings.pending_restart`).
    pub pending_restart: bool,
    /// The settings a standby must hold at least as high as its primary
    /// ([`conf::MUST_MATCH`](super::conf::MUST_MATCH)) as the server runs
    /// them, by name.
    pub must_match_running: BTreeMap<String, i64>,
    /// The same settings as the configuration files say now: what a
    /// restart would run (PostgreSQL's built-in default where no file
    /// sets one). Differs from the running value while a change is
    /// pending a restart.
    pub must_match_pending: BTreeMap<String, i64>,
    /// `synchronous_standby_names` as the server has it.
    pub sync_standby_names: String,
}

impl Running {
    /// The furthest WAL position this server has: written on a primary,
    /// the larger of received and replayed on a standby. What failover
    /// compares between candidates.
    pub fn wal_position(&self) -> u64 {
        match self.role {
            ServerRole::Primary { current_lsn } => current_lsn,
            ServerRole::Standby {
                received_lsn,
                replayed_lsn,
                ..
            } => received_lsn.unwrap_or(0).max(replayed_lsn.unwrap_or(0)),
        }
    }
}

/// `pg_is_in_recovery()` and the positions that go with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum ServerRole {
    /// Not in recovery: writable.
    Primary {
        /// `pg_current_wal_lsn()`.
        current_lsn: u64,
    },
    /// In recovery.
    Standby {
        /// `pg_last_wal_receive_lsn()`; none before anything was streamed.
        received_lsn: Option<u64>,
        /// `pg_last_wal_replay_lsn()`.
        replayed_lsn: Option<u64>,
        /// The WAL receiver is connected and streaming
        /// (`pg_stat_wal_receiver.status = 'streaming'`).
        streaming: bool,
        /// `sender_host:sender_port` of the WAL receiver's connection (an
        /// IPv6 host in brackets); none while no receiver is connected.
        upstream: Option<String>,
    },
}

/// One `pg_stat_replication` row: a standby streaming from this server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReplicationRow {
    /// The standby's `application_name` (pgkeel sets it to the member name).
    pub application_name: String,
    /// `startup`, `catchup`, `streaming`, `backup`, `stopping`.
    pub state: String,
    /// WAL sent to the standby.
    pub sent_lsn: Option<u64>,
    /// WAL the standby has written.
    pub write_lsn: Option<u64>,
    /// WAL the standby has flushed: what synchronous commit waits for.
    pub flush_lsn: Option<u64>,
    /// WAL the standby has replayed.
    pub replay_lsn: Option<u64>,
    /// `async`, `potential`, `sync`, `quorum`.
    pub sync_state: String,
}

/// One replication slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotInfo {
    /// The slot's name (pgkeel: the member name made slot-safe).
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// A WAL sender uses it now.
    pub active: bool,
    /// The oldest WAL the slot keeps; none before first use of a
    /// non-reserving slot, or once `max_slot_wal_keep_size` invalidated it.
    pub restart_lsn: Option<u64>,
}

/// What `pg_controldata` says about a data directory: readable whether or
/// not the server runs, so the driver can compare a stopped node's cluster
/// and position with the others'.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ControlData {
    /// `Database system identifier`: the same on every copy of one cluster
    /// (initdb picks it; pg_basebackup and pg_rewind keep it).
    pub sysid: u64,
    /// `Latest checkpoint location`. After a clean shutdown, the shutdown
    /// checkpoint: the end of the WAL the server wrote.
    pub checkpoint_lsn: u64,
    /// `Latest checkpoint's TimeLineID`: lags a promotion until the next
    /// checkpoint.
    pub timeline: u32,
    /// `Database cluster state`: `shut down`, `shut down in recovery`,
    /// `in production`, `in archive recovery`, `in crash recovery`,
    /// `shutting down`, `starting up`.
    pub state: String,
    /// A `backup_label` is in the data directory: a pg_basebackup (or
    /// pg_rewind) copy not started yet. Its state is the source's
    /// (`in production` when cloned from a primary), which says nothing
    /// about this node ever having been a primary.
    pub from_backup: bool,
}

impl ControlData {
    /// The last shutdown was clean (`shut down` or `shut down in
    /// recovery`): no crash recovery at the next start.
    pub fn is_clean_shutdown(&self) -> bool {
        self.state == "shut down" || self.state == "shut down in recovery"
    }
}

/// One line of a timeline `.history` file: where a timeline began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineSwitch {
    /// The timeline that ended.
    pub parent: u32,
    /// The WAL position where the new timeline forked off.
    pub lsn: u64,
    /// PostgreSQL's wording (`no recovery target specified`, ...).
    pub reason: String,
}

impl TimelineSwitch {
    /// The last well-formed line of a `.history` file's text. Comments and
    /// malformed lines are skipped, never a panic.
    pub fn parse_last(text: &str) -> Option<TimelineSwitch> {
        text.lines()
            .rev()
            .filter(|l| !l.trim_start().starts_with('#'))
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let parent = f.next()?.parse().ok()?;
                let lsn = super::lsn::parse_lsn(f.next()?).ok()?;
                let reason = f.collect::<Vec<_>>().join(" ");
                Some(TimelineSwitch {
                    parent,
                    lsn,
                    reason,
                })
            })
    }
}

#[cfg(test)]
mod history_tests {
    use super::TimelineSwitch;

    #[test]
    fn the_last_line_of_a_history_file() {
        let text = "1\t0/3000060\tno recovery target specified\n\n2\t0/5000A28\tno recovery target specified\n";
        assert_eq!(
            TimelineSwitch::parse_last(text),
            Some(TimelineSwitch {
                parent: 2,
                lsn: 0x500_0A28,
                reason: "no recovery target specified".into()
            })
        );
        assert_eq!(TimelineSwitch::parse_last("# comment\n"), None);
        assert_eq!(TimelineSwitch::parse_last("x y z\n"), None);
        assert_eq!(TimelineSwitch::parse_last(""), None);
        // A malformed last line falls back to the last good one.
        let torn = "1\t0/3000060\tfine\n2\tnot-an-lsn\n";
        assert_eq!(TimelineSwitch::parse_last(torn).map(|s| s.parent), Some(1));
    }
}

/// What a pg_rewind did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewindOutcome {
    /// The data directory was rewound onto the source's timeline.
    Rewound,
    /// pg_rewind found the target had not gone past the fork point: nothing
    /// was changed.
    NotNeeded,
}
