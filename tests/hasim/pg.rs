//! A node's PostgreSQL, modelled: a data directory (system id, timeline and
//! its history, WAL end) and a server process (stopped, standby, primary).
//!
//! A primary writes all the time: its WAL end grows with true time while it
//! is writable. A standby streams when its upstream runs and both links are
//! up, following PostgreSQL's timeline rule: it may move to a newer timeline
//! only if it has not gone past the point where that timeline forked
//! (otherwise it is diverged and needs pg_rewind). Promotion opens a new
//! timeline. Every change is applied by the simulator when the modelled
//! action finishes; `Fence` and a host crash stop the server at once.

use std::collections::BTreeSet;

use pgkeel::ha::sync::SyncNames;
use pgkeel::ha::{sanitize_slot_name, DataDir, Lsn, PgState, ReplicationRow, SlotInfo, Upstream};

use super::clock::{MS, T};

/// WAL bytes a primary writes per millisecond of true time.
pub const WAL_PER_MS: u64 = 64;
/// Where initdb leaves the WAL.
pub const INITIAL_LSN: u64 = 0x0100_0000;

/// The data directory's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub sysid: u64,
    pub timeline: u32,
    /// End of WAL on `timeline`.
    pub lsn: u64,
    /// Earlier timelines and where each ended (`.history`).
    pub history: Vec<(u32, u64)>,
    /// pg_control says it last ran as a primary.
    pub was_primary: bool,
    /// The shutdown checkpoint after a clean stop.
    pub clean_checkpoint: Option<u64>,
}

impl Data {
    /// Where timeline `tl` ends in this history, if it is an ancestor.
    fn fork_of(&self, tl: u32) -> Option<u64> {
        self.history.iter().find(|(h, _)| *h == tl).map(|(_, l)| *l)
    }

    /// Whether a standby at `self` can stream from a server at `up`.
    pub fn can_follow(&self, up: &Data) -> bool {
        if self.sysid != up.sysid {
            return false;
        }
        if self.timeline == up.timeline {
            return self.lsn <= up.lsn;
        }
        if self.timeline > up.timeline {
            return false;
        }
        up.fork_of(self.timeline)
            .is_some_and(|fork| self.lsn <= fork)
    }
}

/// The server process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    Stopped,
    /// Running; `standby` while in recovery.
    Running {
        standby: bool,
    },
}

/// One node's PostgreSQL.
#[derive(Debug, Clone)]
pub struct FakePg {
    pub data: Option<Data>,
    pub proc: Proc,
    /// The upstream in the standby settings.
    pub upstream: Option<Upstream>,
    /// The WAL receiver streams right now.
    pub streaming: bool,
    /// Physical slots on this server.
    pub slots: BTreeSet<String>,
    /// `synchronous_standby_names` in pgkeel's settings file (kept across
    /// restarts; a standby's is emptied when it is configured).
    pub sync_names: String,
    /// When `data.lsn` was last brought up to date.
    lsn_at: T,
}

impl FakePg {
    pub fn new() -> FakePg {
        FakePg {
            data: None,
            proc: Proc::Stopped,
            upstream: None,
            streaming: false,
            slots: BTreeSet::new(),
            sync_names: String::new(),
            lsn_at: 0,
        }
    }

    /// Accepts writes: running and not in recovery.
    pub fn writable(&self) -> bool {
        self.proc == (Proc::Running { standby: false })
    }

    pub fn running(&self) -> bool {
        matches!(self.proc, Proc::Running { .. })
    }

    pub fn standby(&self) -> bool {
        self.proc == (Proc::Running { standby: true })
    }

    /// Brings a primary's WAL end up to `t`.
    pub fn advance(&mut self, t: T) {
        if self.writable() {
            if let Some(d) = self.data.as_mut() {
                d.lsn += (t.saturating_sub(self.lsn_at) / MS) * WAL_PER_MS;
            }
        }
        self.lsn_at = t;
    }

    /// Stops the server now. `clean` is a fast shutdown with a checkpoint.
    pub fn stop(&mut self, t: T, clean: bool) -> Option<u64> {
        self.advance(t);
        let was = self.proc;
        self.proc = Proc::Stopped;
        self.streaming = false;
        let d = self.data.as_mut()?;
        if let Proc::Running { standby } = was {
            d.was_primary = !standby;
            d.clean_checkpoint = clean.then_some(d.lsn);
        }
        d.clean_checkpoint
    }

    /// Starts the server in a role. The caller checked the data directory.
    pub fn start(&mut self, t: T, standby: bool, upstream: Option<Upstream>) -> Result<(), String> {
        if self.running() {
            return Err("a postmaster is already running".into());
        }
        let Some(d) = self.data.as_mut() else {
            return Err("the data directory is empty".into());
        };
        d.clean_checkpoint = None;
        self.proc = Proc::Running { standby };
        self.upstream = if standby { upstream } else { None };
        if standby {
            // configure_as_standby: a standby waits for nobody.
            self.sync_names.clear();
        }
        self.streaming = false;
        self.lsn_at = t;
        Ok(())
    }

    /// Ends recovery on a new timeline.
    pub fn promote(&mut self, t: T) -> Result<(), String> {
        if !self.standby() {
            return Err("the server is not a running standby".into());
        }
        let Some(d) = self.data.as_mut() else {
            return Err("no data directory".into());
        };
        d.history.push((d.timeline, d.lsn));
        d.timeline += 1;
        self.proc = Proc::Running { standby: false };
        self.upstream = None;
        self.streaming = false;
        self.lsn_at = t;
        Ok(())
    }

    /// The setting in force, read as PostgreSQL reads it (text it cannot
    /// read waits for nobody here; pgkeel writes only what it renders).
    pub fn sync_setting(&self) -> SyncNames {
        SyncNames::parse(&self.sync_names).unwrap_or_default()
    }

    /// `pg_stat_replication.sync_state` of a standby under `slot`: `sync`
    /// when listed under FIRST, `quorum` under ANY, else `async`.
    pub fn sync_state(&self, slot: &str) -> &'static str {
        let s = self.sync_setting();
        let listed = s.names.contains(slot) || s.names.contains("*");
        match (listed && !s.is_async(), s.any) {
            (false, _) => "async",
            (true, false) => "sync",
            (true, true) => "quorum",
        }
    }

    /// What the agent's probe would report. `replicas` are the standbys
    /// streaming from this server: (member name, received position).
    pub fn probe(&self, replicas: &[(String, u64)]) -> PgState {
        let mut out = PgState {
            data_dir: match &self.data {
                Some(d) => DataDir::Initialized { sysid: d.sysid },
                None => DataDir::Empty,
            },
            running: self.running(),
            ..Default::default()
        };
        let Some(d) = &self.data else {
            return out;
        };
        match self.proc {
            Proc::Stopped => {
                out.timeline = Some(d.timeline);
                out.was_primary = d.was_primary;
                out.checkpoint_lsn = d.clean_checkpoint.map(Lsn);
            }
            Proc::Running { standby: false } => {
                out.sync_standby_names = Some(self.sync_names.clone());
                out.in_recovery = Some(false);
                out.timeline = Some(d.timeline);
                out.wal_lsn = Some(Lsn(d.lsn));
                out.replication = replicas
                    .iter()
                    .map(|(name, lsn)| (sanitize_slot_name(name), lsn))
                    .map(|(slot, lsn)| ReplicationRow {
                        sync_state: self.sync_state(&slot).into(),
                        application_name: slot,
                        state: "streaming".into(),
                        flush_lsn: Some(Lsn(*lsn)),
                        replay_lsn: Some(Lsn(*lsn)),
                    })
                    .collect();
                out.slots = self
                    .slots
                    .iter()
                    .map(|s| SlotInfo {
                        name: s.clone(),
                        physical: true,
                        active: replicas.iter().any(|(n, _)| n == s),
                    })
                    .collect();
            }
            Proc::Running { standby: true } => {
                out.sync_standby_names = Some(self.sync_names.clone());
                out.in_recovery = Some(true);
                out.timeline = Some(d.timeline);
                out.received_lsn = Some(Lsn(d.lsn));
                out.replayed_lsn = Some(Lsn(d.lsn));
                out.streaming = self.streaming;
                out.following = self.upstream.clone();
            }
        }
        out
    }
}
