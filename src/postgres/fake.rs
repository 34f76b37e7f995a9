//! [`FakePostgres`]: an in-memory PostgreSQL for deterministic HA tests.
//!
//! It keeps what the HA rules look at — running or not, in recovery or
//! not, timeline and its history, WAL positions, slots — and moves only
//! when the test says so: [`FakePostgres::write`] advances a primary's WAL,
//! [`FakeNet::replicate`] streams one round to every running standby.
//! Streaming follows PostgreSQL's rule: a standby follows a newer timeline
//! only if it has not gone past the point where that timeline forked
//! (otherwise it is `diverged` and needs pg_rewind). A promotion opens a new
//! timeline; starting a former standby without `standby.signal` does not.
//! [`Postgres::rewind`] puts a diverged data directory back on its
//! source's timeline; [`Postgres::move_data_dir_aside`] empties it.
//! Any operation can be made to fail once with [`FakePostgres::fail_next`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Authentication, InitdbOption, Scalar};

use super::conf::parse_conninfo;
use super::fake_net::{can_follow, FakeNet};
use super::real::lock;
use super::types::{
    ControlData, PgState, ReplicationRow, RewindOutcome, Running, ServerRole, SlotInfo, StartSpec,
    StopMode, WantedRole,
};
use super::{check_slot_name, PgError, Postgres};

/// The WAL position of a fresh cluster, as initdb leaves it.
const INITIAL_LSN: u64 = 0x0100_0000;
static NEXT_PID: AtomicU32 = AtomicU32::new(10_000);
/// System identifiers: unique per `initdb`, like PostgreSQL's (time-based).
static NEXT_SYSID: AtomicU64 = AtomicU64::new(7_000_000_000_000_000_001);

/// `Database cluster state` values the fake goes through.
const SHUT_DOWN: &str = "shut down";
const SHUT_DOWN_IN_RECOVERY: &str = "shut down in recovery";
const IN_PRODUCTION: &str = "in production";
const IN_ARCHIVE_RECOVERY: &str = "in archive recovery";

pub(super) type Shared = Arc<Mutex<FakeState>>;

/// Everything a fake server is; a test reads it with [`FakePostgres::state`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FakeState {
    /// A data directory exists.
    pub initialized: bool,
    /// The postmaster PID while running.
    pub pid: Option<u32>,
    /// What `configure_as_*` last said (`standby.signal` on disk or not).
    pub configured: Option<WantedRole>,
    /// Running in recovery (a standby).
    pub in_recovery: bool,
    /// The upstream the running standby streams from: (`host:port`,
    /// application name, slot), taken from the config at start and reload.
    pub upstream: Option<(String, String, Option<String>)>,
    /// The current timeline.
    pub timeline: u32,
    /// Earlier timelines and where each ended, as `.history` files hold.
    pub history: Vec<(u32, u64)>,
    /// End of WAL: written on a primary, received on a standby.
    pub lsn: u64,
    /// Replayed WAL (equal to `lsn` on a primary).
    pub replayed: u64,
    /// Replication slots and their restart positions.
    pub slots: BTreeMap<String, Option<u64>>,
    /// A standby that can no longer follow its upstream.
    pub diverged: bool,
    /// A standby's WAL receiver streams: a [`FakeNet::replicate`] round
    /// reached it since it last started or was pointed elsewhere.
    pub streaming: bool,
    /// `Database system identifier`: set by initdb, copied by basebackup.
    pub sysid: u64,
    /// `Latest checkpoint location`: moved by CHECKPOINT and a fast stop.
    pub checkpoint_lsn: u64,
    /// `Latest checkpoint's TimeLineID`.
    pub checkpoint_timeline: u32,
    /// `Database cluster state` as pg_control has it.
    pub cluster_state: &'static str,
    /// A pg_basebackup copy not started yet (`backup_label`).
    pub backup_label: bool,
    /// `create_roles` ran.
    pub roles_created: bool,
    /// CHECKPOINTs run.
    pub checkpoints: u32,
    /// The cluster-wide parameters last given.
    pub cluster_parameters: BTreeMap<String, Scalar>,
    /// Operations that fail on their next call.
    pub fail: BTreeSet<&'static str>,
    /// pg_rewind runs that changed the data directory.
    pub rewinds: u32,
    /// Times the data directory was moved aside.
    pub moved_aside: u32,
    /// `synchronous_standby_names` (the fake does not wait for standbys).
    pub sync_standby_names: String,
}

/// A fake server reachable as `address` (`host:port`) on a [`FakeNet`].
pub struct FakePostgres {
    address: String,
    net: FakeNet,
    state: Shared,
}

impl FakePostgres {
    /// A fake with an empty data directory, reachable at `address`.
    pub fn new(net: &FakeNet, address: &str) -> FakePostgres {
        let state = Shared::default();
        lock(&net.0).insert(address.to_owned(), state.clone());
        FakePostgres {
            address: address.to_owned(),
            net: net.clone(),
            state,
        }
    }

    /// Its `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A copy of its state.
    pub fn state(&self) -> FakeState {
        lock(&self.state).clone()
    }

    /// True while it runs as a primary: what the split-brain checker counts.
    pub fn is_writable(&self) -> bool {
        let st = lock(&self.state);
        st.pid.is_some() && !st.in_recovery
    }

    /// A client writes `bytes` of WAL; fails unless it is a running primary.
    /// Returns the new end of WAL (what a commit is acknowledged at).
    pub fn write(&self, bytes: u64) -> Result<u64, PgError> {
        let mut st = lock(&self.state);
        if st.pid.is_none() {
            return Err(PgError::NotRunning);
        }
        if st.in_recovery {
            return Err(sql_error(
                "cannot execute INSERT in a read-only transaction",
            ));
        }
        st.lsn += bytes;
        st.replayed = st.lsn;
        Ok(st.lsn)
    }

    /// The postmaster dies (kill -9, OOM): no clean shutdown.
    pub fn crash(&self) {
        lock(&self.state).pid = None;
    }

    /// Makes the next call of `op` (a method name: `"start"`, `"promote"`…) fail.
    pub fn fail_next(&self, op: &'static str) {
        lock(&self.state).fail.insert(op);
    }

    fn op(&self, name: &'static str) -> Result<std::sync::MutexGuard<'_, FakeState>, PgError> {
        let mut st = lock(&self.state);
        if st.fail.remove(name) {
            return Err(sql_error(&format!("injected failure of {name}")));
        }
        Ok(st)
    }

    fn running(&self, name: &'static str) -> Result<std::sync::MutexGuard<'_, FakeState>, PgError> {
        let st = self.op(name)?;
        if st.pid.is_none() {
            return Err(PgError::NotRunning);
        }
        Ok(st)
    }

    /// Another fake on the net is running at `address`.
    fn is_up(&self, address: &str) -> bool {
        let other = lock(&self.net.0).get(address).cloned();
        other.is_some_and(|s| !Arc::ptr_eq(&s, &self.state) && lock(&s).pid.is_some())
    }

    fn replication_rows(&self) -> Vec<ReplicationRow> {
        let others: Vec<Shared> = lock(&self.net.0).values().cloned().collect();
        let mut rows: Vec<ReplicationRow> = others
            .iter()
            .filter(|s| !Arc::ptr_eq(s, &self.state))
            .filter_map(|s| {
                let st = lock(s);
                let (to, app, _) = st.upstream.as_ref()?;
                (st.pid.is_some() && !st.diverged && *to == self.address).then(|| ReplicationRow {
                    application_name: app.clone(),
                    state: "streaming".into(),
                    sent_lsn: Some(st.lsn),
                    write_lsn: Some(st.lsn),
                    flush_lsn: Some(st.lsn),
                    replay_lsn: Some(st.replayed),
                    sync_state: "async".into(),
                })
            })
            .collect();
        rows.sort_by(|a, b| a.application_name.cmp(&b.application_name));
        rows
    }
}

fn sql_error(message: &str) -> PgError {
    PgError::Sql {
        context: "fake PostgreSQL",
        message: format!("ERROR: {message}"),
    }
}

/// `host:port` and `application_name` from a connection string.
fn target(conninfo: &str) -> Result<(String, String), PgError> {
    let pairs = parse_conninfo(conninfo)?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let host = get("host").unwrap_or_else(|| "localhost".into());
    let port = get("port").unwrap_or_else(|| "5432".into());
    let address = format!("{host}:{port}");
    Ok((address.clone(), get("application_name").unwrap_or(address)))
}

fn upstream_of(
    role: &Option<WantedRole>,
) -> Result<Option<(String, String, Option<String>)>, PgError> {
    match role {
        Some(WantedRole::Standby {
            primary_conninfo,
            primary_slot_name,
        }) => {
            let (address, app) = target(primary_conninfo)?;
            Ok(Some((address, app, primary_slot_name.clone())))
        }
        _ => Ok(None),
    }
}

impl Postgres for FakePostgres {
    async fn is_initialized(&self) -> Result<bool, PgError> {
        Ok(self.op("is_initialized")?.initialized)
    }

    async fn initdb(&self, _options: &[InitdbOption]) -> Result<(), PgError> {
        let mut st = self.op("initdb")?;
        if st.initialized {
            return Err(PgError::Setup(
                "the fake data directory already holds a cluster".into(),
            ));
        }
        *st = FakeState {
            initialized: true,
            timeline: 1,
            lsn: INITIAL_LSN,
            replayed: INITIAL_LSN,
            sysid: NEXT_SYSID.fetch_add(1, Ordering::Relaxed),
            checkpoint_lsn: INITIAL_LSN,
            checkpoint_timeline: 1,
            cluster_state: SHUT_DOWN,
            ..FakeState::default()
        };
        Ok(())
    }

    async fn basebackup(&self, from_conninfo: &str, slot: Option<&str>) -> Result<(), PgError> {
        let (address, _) = target(from_conninfo)?;
        if lock(&self.state).initialized {
            return Err(PgError::Setup(
                "the fake data directory already holds a cluster".into(),
            ));
        }
        let source = lock(&self.net.0).get(&address).cloned();
        let source = source.map(|s| lock(&s).clone()).filter(|s| s.pid.is_some());
        let Some(source) = source else {
            return Err(PgError::Command {
                program: "pg_basebackup".into(),
                status: "exit status: 1".into(),
                detail: format!("could not connect to server at {address}: Connection refused"),
            });
        };
        if let Some(slot) = slot.filter(|s| !source.slots.contains_key(*s)) {
            return Err(PgError::Command {
                program: "pg_basebackup".into(),
                status: "exit status: 1".into(),
                detail: format!("replication slot \"{slot}\" does not exist"),
            });
        }
        let mut st = self.op("basebackup")?;
        // The backup starts with a checkpoint; the copied pg_control says
        // what the running source's did.
        *st = FakeState {
            initialized: true,
            timeline: source.timeline,
            history: source.history,
            lsn: source.lsn,
            replayed: source.lsn,
            sysid: source.sysid,
            checkpoint_lsn: source.lsn,
            checkpoint_timeline: source.timeline,
            cluster_state: if source.in_recovery {
                IN_ARCHIVE_RECOVERY
            } else {
                IN_PRODUCTION
            },
            backup_label: true,
            ..FakeState::default()
        };
        Ok(())
    }

    async fn configure_as_primary(&self) -> Result<(), PgError> {
        let mut st = self.op("configure_as_primary")?;
        st.configured = Some(WantedRole::Primary);
        if !st.initialized {
            return Err(PgError::NotInitialized(self.address.clone()));
        }
        Ok(())
    }

    async fn configure_as_standby(
        &self,
        primary_conninfo: &str,
        primary_slot_name: Option<&str>,
    ) -> Result<(), PgError> {
        if let Some(slot) = primary_slot_name {
            check_slot_name(slot)?;
        }
        target(primary_conninfo)?;
        let mut st = self.op("configure_as_standby")?;
        st.sync_standby_names.clear();
        st.configured = Some(WantedRole::Standby {
            primary_conninfo: primary_conninfo.to_owned(),
            primary_slot_name: primary_slot_name.map(str::to_owned),
        });
        if !st.initialized {
            return Err(PgError::NotInitialized(self.address.clone()));
        }
        Ok(())
    }

    async fn set_sync_standby_names(&self, value: &str) -> Result<(), PgError> {
        self.op("set_sync_standby_names")?.sync_standby_names = value.to_string();
        Ok(())
    }

    async fn set_cluster_parameters(
        &self,
        parameters: BTreeMap<String, Scalar>,
    ) -> Result<(), PgError> {
        self.op("set_cluster_parameters")?.cluster_parameters = parameters;
        Ok(())
    }

    async fn start(&self, spec: &StartSpec) -> Result<u32, PgError> {
        let mut st = self.op("start")?;
        if let Some(pid) = st.pid {
            return Err(PgError::AlreadyRunning(pid));
        }
        if !st.initialized {
            return Err(PgError::NotInitialized(self.address.clone()));
        }
        let role = st.configured.clone().ok_or(PgError::NoRole)?;
        st.upstream = upstream_of(&st.configured)?;
        st.streaming = false;
        st.in_recovery = matches!(role, WantedRole::Standby { .. });
        st.cluster_state = if st.in_recovery {
            IN_ARCHIVE_RECOVERY
        } else {
            IN_PRODUCTION
        };
        st.cluster_parameters = spec.cluster_parameters.clone();
        if !st.in_recovery {
            // Crash recovery replays everything received; no new timeline.
            st.replayed = st.lsn;
        }
        let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
        st.pid = Some(pid);
        st.backup_label = false;
        Ok(pid)
    }

    async fn stop(&self, mode: StopMode, _timeout: Duration) -> Result<(), PgError> {
        let mut st = self.op("stop")?;
        if st.pid.is_some() && mode == StopMode::Fast {
            // The shutdown checkpoint (a restartpoint on a standby) at the
            // end of what it has; an immediate stop leaves pg_control as a
            // crash does.
            st.checkpoint_lsn = if st.in_recovery { st.replayed } else { st.lsn };
            st.checkpoint_timeline = st.timeline;
            st.cluster_state = if st.in_recovery {
                SHUT_DOWN_IN_RECOVERY
            } else {
                SHUT_DOWN
            };
        }
        st.pid = None;
        st.upstream = None;
        st.streaming = false;
        Ok(())
    }

    async fn restart(&self, spec: &StartSpec) -> Result<u32, PgError> {
        self.stop(StopMode::Fast, spec.timeout).await?;
        self.start(spec).await
    }

    async fn reload(&self) -> Result<(), PgError> {
        let mut st = self.running("reload")?;
        if st.in_recovery {
            let upstream = upstream_of(&st.configured)?;
            if upstream != st.upstream {
                st.streaming = false;
            }
            st.upstream = upstream;
        }
        Ok(())
    }

    async fn promote(&self, _timeout: Duration) -> Result<(), PgError> {
        let mut st = self.running("promote")?;
        if !st.in_recovery {
            return Ok(());
        }
        let (tli, end) = (st.timeline, st.lsn);
        st.history.push((tli, end));
        st.timeline += 1;
        st.in_recovery = false;
        st.upstream = None;
        st.streaming = false;
        st.cluster_state = IN_PRODUCTION;
        st.replayed = st.lsn;
        st.configured = Some(WantedRole::Primary);
        Ok(())
    }

    async fn probe(&self) -> Result<PgState, PgError> {
        let st = self.op("probe")?.clone();
        let Some(pid) = st.pid else {
            return Ok(PgState::Stopped);
        };
        let role = if st.in_recovery {
            // The WAL receiver is connected while its upstream runs and
            // streams once a replication round has reached it.
            let connected = st
                .upstream
                .as_ref()
                .filter(|_| !st.diverged)
                .filter(|(to, _, _)| self.is_up(to))
                .map(|(to, _, _)| to.clone());
            ServerRole::Standby {
                received_lsn: Some(st.lsn),
                replayed_lsn: Some(st.replayed),
                streaming: st.streaming && connected.is_some(),
                upstream: connected,
            }
        } else {
            ServerRole::Primary {
                current_lsn: st.lsn,
            }
        };
        Ok(PgState::Running(Running {
            pid,
            server_version_num: 150_000,
            timeline: st.timeline,
            role,
            replication: self.replication_rows(),
            pending_restart: false,
            must_match_running: Default::default(),
            must_match_pending: Default::default(),
            sync_standby_names: st.sync_standby_names.clone(),
        }))
    }

    async fn timeline_switch(
        &self,
        timeline: u32,
    ) -> Result<Option<super::TimelineSwitch>, PgError> {
        let st = self.op("timeline_switch")?;
        // `history` holds (ended timeline, where it ended), oldest first.
        Ok(st
            .history
            .iter()
            .find(|(tli, _)| tli + 1 == timeline)
            .map(|(tli, end)| super::TimelineSwitch {
                parent: *tli,
                lsn: *end,
                reason: "no recovery target specified".into(),
            }))
    }

    fn fence_fn(&self) -> crate::fence::FenceFn {
        let state = self.state.clone();
        Box::new(move || {
            let mut st = lock(&state);
            st.pid = None;
            st.upstream = None;
            st.streaming = false;
            Ok(())
        })
    }

    async fn postmaster_pid(&self) -> Result<Option<u32>, PgError> {
        Ok(self.op("postmaster_pid")?.pid)
    }

    async fn checkpoint(&self) -> Result<(), PgError> {
        let mut st = self.running("checkpoint")?;
        st.checkpoints += 1;
        st.checkpoint_lsn = if st.in_recovery { st.replayed } else { st.lsn };
        st.checkpoint_timeline = st.timeline;
        Ok(())
    }

    async fn control_data(&self) -> Result<Option<ControlData>, PgError> {
        let st = self.op("control_data")?;
        Ok(st.initialized.then(|| ControlData {
            sysid: st.sysid,
            checkpoint_lsn: st.checkpoint_lsn,
            timeline: st.checkpoint_timeline,
            state: st.cluster_state.to_owned(),
            from_backup: st.backup_label,
        }))
    }

    async fn create_roles(&self, _auth: &Authentication) -> Result<(), PgError> {
        let mut st = self.running("create_roles")?;
        if st.in_recovery {
            return Err(sql_error(
                "cannot execute CREATE ROLE in a read-only transaction",
            ));
        }
        st.roles_created = true;
        Ok(())
    }

    async fn create_slot(&self, name: &str) -> Result<bool, PgError> {
        check_slot_name(name)?;
        let mut st = self.running("create_slot")?;
        if st.slots.contains_key(name) {
            return Ok(false);
        }
        let lsn = st.lsn;
        st.slots.insert(name.to_owned(), Some(lsn));
        Ok(true)
    }

    async fn drop_slot(&self, name: &str) -> Result<bool, PgError> {
        check_slot_name(name)?;
        Ok(self.running("drop_slot")?.slots.remove(name).is_some())
    }

    async fn list_slots(&self) -> Result<Vec<SlotInfo>, PgError> {
        // Read the others before taking this one's lock: never hold two.
        let others: Vec<Shared> = lock(&self.net.0).values().cloned().collect();
        let active: BTreeSet<String> = others
            .iter()
            .filter(|s| !Arc::ptr_eq(s, &self.state))
            .filter_map(|s| {
                let o = lock(s);
                let (to, _, slot) = o.upstream.as_ref()?;
                (o.pid.is_some() && *to == self.address)
                    .then(|| slot.clone())
                    .flatten()
            })
            .collect();
        let st = self.running("list_slots")?;
        Ok(st
            .slots
            .iter()
            .map(|(name, pos)| SlotInfo {
                name: name.clone(),
                slot_type: "physical".into(),
                active: active.contains(name),
                restart_lsn: *pos,
            })
            .collect())
    }

    async fn rewind(&self, source_conninfo: &str) -> Result<RewindOutcome, PgError> {
        let (address, _) = target(source_conninfo)?;
        let source = lock(&self.net.0).get(&address).cloned();
        let source = source.map(|s| lock(&s).clone()).filter(|s| s.pid.is_some());
        let mut st = self.op("rewind")?;
        if let Some(pid) = st.pid {
            return Err(PgError::AlreadyRunning(pid));
        }
        if !st.initialized {
            return Err(PgError::NotInitialized(self.address.clone()));
        }
        let fail = |detail: String| PgError::Command {
            program: "pg_rewind".into(),
            status: "exit status: 1".into(),
            detail,
        };
        let Some(source) = source else {
            return Err(fail(format!(
                "could not connect to server at {address}: Connection refused"
            )));
        };
        if source.sysid != st.sysid {
            return Err(fail(
                "source and target clusters are from different systems".into(),
            ));
        }
        if can_follow(&st, &source) {
            st.diverged = false;
            return Ok(RewindOutcome::NotNeeded);
        }
        // Back to the fork point, then the source's WAL up to its end: the
        // next start as a standby follows it.
        st.timeline = source.timeline;
        st.history = source.history;
        st.lsn = source.lsn;
        st.replayed = source.lsn;
        st.checkpoint_lsn = source.checkpoint_lsn;
        st.checkpoint_timeline = source.checkpoint_timeline;
        st.cluster_state = IN_ARCHIVE_RECOVERY;
        st.diverged = false;
        st.rewinds += 1;
        Ok(RewindOutcome::Rewound)
    }

    async fn move_data_dir_aside(&self) -> Result<std::path::PathBuf, PgError> {
        let mut st = self.op("move_data_dir_aside")?;
        if let Some(pid) = st.pid {
            return Err(PgError::AlreadyRunning(pid));
        }
        if !st.initialized {
            return Err(PgError::NotInitialized(self.address.clone()));
        }
        let moved = st.moved_aside + 1;
        let fail = std::mem::take(&mut st.fail);
        *st = FakeState {
            moved_aside: moved,
            fail,
            ..FakeState::default()
        };
        Ok(std::path::PathBuf::from(format!(
            "/fake/{}.failed-{moved}",
            self.address
        )))
    }
}
