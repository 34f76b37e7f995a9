//! What the core asks for, and how the driver reports back.
//!
//! Every action except [`Action::Exit`] and [`Action::RunCallback`] is answered by exactly one
//! [`Event::ActionDone`](super::Event::ActionDone) carrying its
//! [`ActionKind`] (or, for [`Action::Probe`], by
//! [`Event::PgProbed`](super::Event::PgProbed) or a failed `ActionDone`).
//! The core keeps at most one action of each kind in flight, so the kind
//! alone identifies the answer; it remembers the action itself.
//!
//! Two lanes:
//! - **store** actions (initialize, lease, leader, member and status keys)
//!   run concurrently with each other and with PostgreSQL work, so a slow
//!   pg_basebackup can never hold up a keepalive;
//! - **PostgreSQL** actions (probe, initdb, start, stop, promote, ...) run
//!   one at a time, so a probe always describes the server after the last
//!   completed change and nothing starts a server twice.
//!
//! [`Action::Fence`] belongs to neither: it may be sent while a PostgreSQL
//! action runs, and it must not wait for it.

use std::time::Duration;

use crate::clock::BootInstant;
use crate::consensus::types::LeaseId;

use super::callbacks::{CallbackKind, CallbackRole};
use super::view::{Lsn, MemberInfo, StatusKey, Upstream};

/// One thing for the driver to do. The driver contract for each variant is
/// in its doc comment; every store write is a single request whose answer
/// is matched to its own send time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    // ---- store lane ----------------------------------------------------
    /// Create the `initialize` key with this node as owner (sysid unknown)
    /// if it is absent. Answer: `Won`, or `Lost` when it already existed.
    AcquireInitialize,
    /// Set the `initialize` key's sysid (compare-and-set on owner = this
    /// node). Answer: `Done`.
    SetInitializeSysid {
        /// The new cluster's system identifier.
        sysid: u64,
    },
    /// Grant a new lease for this node's keys. Answer: `Lease` with
    /// `valid_until = sent_at + ttl_applied - safety_margin`.
    GrantLease {
        /// TTL to ask for (the store may clamp it; the reply says).
        ttl: Duration,
    },
    /// Renew `lease` once (unary, no hidden retries pairing an answer with a
    /// later send). Answer: `Lease` with the new `valid_until` computed from
    /// this call's own send time, or `LeaseGone` when the store says it is
    /// expired or unknown.
    Keepalive {
        /// The lease to renew.
        lease: LeaseId,
    },
    /// Put `leader` = this node, attached to `lease`, only if `leader` is
    /// absent. Attaching never extends the lease. Answer: `Won{revision}`,
    /// `Lost`, or `LeaseGone`.
    AcquireLeader {
        /// This node's lease.
        lease: LeaseId,
    },
    /// Revoke `lease`, deleting every key on it (leader and member) at
    /// once. Answer: `Done` (or `LeaseGone`: already gone).
    RevokeLease {
        /// This node's lease.
        lease: LeaseId,
    },
    /// Delete `leader` only if it is still this node's write: a delete
    /// with compare-and-set on `mod_revision == revision`. The lease (and
    /// with it the member key) stays. Asked after a failed promotion, once
    /// the server is fenced. Answer: `Done`, also when the compare failed
    /// (the key is already gone or no longer ours: nothing to release);
    /// `Err` only when the store could not be asked.
    ReleaseLeader {
        /// This node's lease, the one the key hangs on.
        lease: LeaseId,
        /// The `mod_revision` of our leader write (`Won{revision}`).
        revision: u64,
    },
    /// Put `members/<own name>` = `info`, attached to `lease`. Answer:
    /// `Done`, or `LeaseGone`.
    PublishMember {
        /// This node's lease.
        lease: LeaseId,
        /// What to publish.
        info: MemberInfo,
    },
    /// Put the `status` key (not lease-bound). Answer: `Done`.
    PublishStatus(StatusKey),
    /// Append the switch onto `timeline` (from this node's timeline history
    /// file) to the `history` key unless it is there, with a
    /// compare-and-set on the key. Answer: `Done` once the key holds it;
    /// `Err` when the switch cannot be read yet or the write lost a race.
    RecordHistory {
        /// The timeline this node was promoted onto.
        timeline: u32,
    },
    /// Write the outcome of the operator's request `id` into the `failover`
    /// key: `state` done (`ok`) or failed, with `message`; compare-and-set
    /// on the key's revision, and only if it still holds request `id` and
    /// that is still pending. Answer: `Done` once the key holds an outcome
    /// for `id` (or holds another request, or none: nothing to write).
    FinishFailover {
        /// The request's operation id.
        id: String,
        /// Whether it happened.
        ok: bool,
        /// One sentence for the operator.
        message: String,
    },
    /// Write the `sync` key: `{leader: this node, sync_standby: members,
    /// quorum}` with a compare-and-set on its `mod_revision == base` (absent
    /// when `None`), applied only while the `leader` key still names this
    /// node on `lease` (a guarded put, so a write sent while leading cannot
    /// land after the lease ended). Answer: `Done`; a failed compare is an
    /// `Err`.
    WriteSync {
        /// This node's lease, the one the leader key hangs on.
        lease: LeaseId,
        /// The synchronous set.
        members: Vec<String>,
        /// How many of them hold each acknowledged commit.
        quorum: u32,
        /// The key's `mod_revision` the change is based on.
        base: Option<u64>,
    },
    /// Ask each of `members` over gRPC for its PostgreSQL position now,
    /// concurrently, each within `timeout`. Answer:
    /// [`Event::PositionsPolled`](super::Event::PositionsPolled) with the
    /// members that answered (one that did not is simply absent).
    QueryPositions {
        /// Member names, this node excluded.
        members: Vec<String>,
        /// Bound on each question.
        timeout: Duration,
    },

    /// Record the progress of operation `id` in `operations/<own name>`:
    /// a compare-and-set on the record's revision after checking it still
    /// holds `id` (a cancelled or replaced request is never reported on).
    /// Answer: `Done`, or `Lost` when the record no longer holds `id`.
    ReportOperation {
        /// The operation's id.
        id: String,
        /// Where it stands.
        outcome: OpOutcome,
        /// One sentence for the operator.
        message: String,
    },

    // ---- PostgreSQL lane -----------------------------------------------
    /// Probe the local PostgreSQL (process, data directory, SQL state,
    /// pg_controldata when stopped). Answer: `Event::PgProbed`, or a
    /// failed `ActionDone` when the probe itself broke.
    Probe,
    /// initdb into the empty data directory with data checksums. On
    /// failure the driver removes what it created. Answer: `Initialized`.
    Initdb,
    /// Create or update the superuser, replication and rewind roles with
    /// the configured passwords on the running primary. Idempotent.
    /// Answer: `Done`.
    CreateRoles,
    /// Rewrite pgkeel's settings file, `standby.signal` and
    /// `primary_conninfo` for this role, then start PostgreSQL and wait
    /// until it is ready (or exited early, or timed out: then stop it and
    /// fail). Answer: `Done`.
    StartPostgres(StartAs),
    /// Stop PostgreSQL; in fast mode escalate to immediate after a timeout.
    /// Answer: `Stopped` with pg_controldata's latest checkpoint when the
    /// shutdown was clean.
    StopPostgres {
        /// How.
        mode: StopMode,
    },
    /// Promote the standby, then verify it is no longer read-only.
    /// Answer: `Done`. Any failure (including a timeout after the promote
    /// was requested) is an `Err`: a candidate then takes the server for
    /// half-promoted, fences it and releases the key.
    Promote,
    /// Run CHECKPOINT (after a promotion, so a pg_rewind against this node
    /// sees the new timeline). Answer: `Done`.
    Checkpoint,
    /// pg_basebackup from `from` into the empty data directory, streaming
    /// WAL through `slot` on the source (creating it there if missing). On
    /// failure the driver removes the partial copy. Answer: `Done`.
    Basebackup {
        /// The source member.
        from: Upstream,
        /// This node's slot name.
        slot: String,
    },
    /// Point the running standby at `upstream` through `slot`: rewrite
    /// `primary_conninfo` / `primary_slot_name` in pgkeel's settings file,
    /// then reload (restart on PostgreSQL < 13, where they are not
    /// reloadable). Answer: `Done`.
    ConfigureStandby {
        /// The member to stream from.
        upstream: Upstream,
        /// This node's slot name.
        slot: String,
    },
    /// Stop streaming from the old primary: empty `primary_conninfo` (the
    /// slot setting stays) and reload, so the WAL position this standby
    /// reports stops moving while candidates compare. Answer: `Done`.
    StopReceiving {
        /// This node's slot name.
        slot: String,
    },
    /// Rewrite pgkeel's settings file with the dynamic config in force,
    /// then reload the running server. Answer: `Done`.
    Reload,
    /// `pg_create_physical_replication_slot(name, true)`. Answer: `Done`.
    CreateSlot {
        /// A sanitized slot name.
        name: String,
    },
    /// `pg_drop_replication_slot(name)` (fails harmlessly if active).
    /// Answer: `Done`.
    DropSlot {
        /// A sanitized slot name.
        name: String,
    },
    /// pg_rewind the stopped data directory onto `from`'s timeline (as the
    /// rewind role, else the superuser, `dbname=postgres`), after crash
    /// recovery in single-user mode if it was not shut down cleanly.
    /// Answer: `Done` (also when no rewind was required).
    Rewind {
        /// The member to rewind from: the leader.
        from: Upstream,
    },
    /// Rename the stopped data directory to `<dir>.failed-<unix time>`
    /// (never delete it), leaving it empty for a pg_basebackup. Answer:
    /// `Done`.
    MoveDataDirAside,
    /// Set `synchronous_standby_names` to `value` in pgkeel's settings file
    /// (kept for every later rewrite of it), then reload the running
    /// server. Answer: `Done`.
    SetSyncStandbyNames {
        /// The setting's text (empty: asynchronous).
        value: String,
    },
    /// Rewrite pgkeel's settings file with the dynamic config's PostgreSQL
    /// parameters as they are now, then reload the running server (a
    /// setting that needs a restart shows up as `pending_restart` in the
    /// next probe). Answer: `Done`.
    ApplyParameters {
        /// [`HaConfig::parameters_fingerprint`](super::HaConfig) of the
        /// parameters being applied.
        fingerprint: u64,
    },

    // ---- neither lane --------------------------------------------------
    /// Run the operator's `kind` script with `<kind> <role> <scope>`, in
    /// the background, bounded by `callback_timeout`; a running one of the
    /// same kind is killed first. Not answered: its exit status changes no
    /// decision (the driver logs it).
    RunCallback {
        /// Which script.
        kind: CallbackKind,
        /// The role it is told.
        role: CallbackRole,
    },
    /// Run `postgresql.pre_promote` and wait for it, bounded by
    /// `callback_timeout` (killed with its process group when it runs
    /// over). Runs beside both lanes, so keepalives and probes go on.
    /// Answer: `Done` on a zero exit; `Err` otherwise.
    PrePromote,
    /// Stop every postmaster of this data directory now, by PID, in
    /// immediate mode, aborting any PostgreSQL action in flight: this node
    /// may not hold the leader lease and its server may accept writes.
    /// Issue 4 adds the Fenced state around it. Answer: `Done`.
    Fence,
    /// The HA loop is finished; the driver exits the process (with an error
    /// status when `error` is set). Not answered.
    Exit {
        /// Why the node cannot go on, in one sentence naming the fix.
        error: Option<String>,
    },
}

/// The role to start PostgreSQL in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAs {
    /// No `standby.signal`: a writable primary. Only ever asked while this
    /// node holds a valid leader lease.
    Primary,
    /// With `standby.signal` and `primary_slot_name = slot`;
    /// `primary_conninfo` points at `upstream`, or is empty when there is
    /// no leader to follow yet.
    Standby {
        /// The member to stream from.
        upstream: Option<Upstream>,
        /// This node's slot name.
        slot: String,
    },
}

/// Where an operation stands, as [`Action::ReportOperation`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpOutcome {
    /// Started.
    Running,
    /// Finished, or nothing to do (the message says which).
    Done,
    /// Failed while carrying it out.
    Failed,
    /// Refused before anything was done (a precondition).
    Refused,
}

/// How to stop PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `-m fast`: a shutdown checkpoint, streamed to standbys before the
    /// walsenders exit.
    Fast,
    /// `-m immediate`: no checkpoint (crash recovery on the next start).
    Immediate,
}

/// An [`Action`] without its data: the key for "one in flight per kind".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    AcquireInitialize,
    SetInitializeSysid,
    GrantLease,
    Keepalive,
    AcquireLeader,
    RevokeLease,
    ReleaseLeader,
    PublishMember,
    PublishStatus,
    RecordHistory,
    FinishFailover,
    WriteSync,
    ReportOperation,
    QueryPositions,
    Probe,
    Initdb,
    CreateRoles,
    StartPostgres,
    StopPostgres,
    Promote,
    Checkpoint,
    Basebackup,
    ConfigureStandby,
    StopReceiving,
    Reload,
    CreateSlot,
    DropSlot,
    Rewind,
    MoveDataDirAside,
    ApplyParameters,
    SetSyncStandbyNames,
    Fence,
    Exit,
    RunCallback,
    PrePromote,
}

impl ActionKind {
    /// Whether it runs on the one-at-a-time PostgreSQL lane.
    pub fn is_postgres(self) -> bool {
        matches!(
            self,
            ActionKind::Probe
                | ActionKind::Initdb
                | ActionKind::CreateRoles
                | ActionKind::StartPostgres
                | ActionKind::StopPostgres
                | ActionKind::Promote
                | ActionKind::Checkpoint
                | ActionKind::Basebackup
                | ActionKind::ConfigureStandby
                | ActionKind::StopReceiving
                | ActionKind::Reload
                | ActionKind::CreateSlot
                | ActionKind::DropSlot
                | ActionKind::Rewind
                | ActionKind::MoveDataDirAside
                | ActionKind::ApplyParameters
                | ActionKind::SetSyncStandbyNames
        )
    }

    /// Whether it changes PostgreSQL, so the last probe is stale once it
    /// completes.
    pub fn changes_postgres(self) -> bool {
        (self.is_postgres() && self != ActionKind::Probe) || self == ActionKind::Fence
    }
}

impl Action {
    /// Its kind.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::AcquireInitialize => ActionKind::AcquireInitialize,
            Action::SetInitializeSysid { .. } => ActionKind::SetInitializeSysid,
            Action::GrantLease { .. } => ActionKind::GrantLease,
            Action::Keepalive { .. } => ActionKind::Keepalive,
            Action::AcquireLeader { .. } => ActionKind::AcquireLeader,
            Action::RevokeLease { .. } => ActionKind::RevokeLease,
            Action::ReleaseLeader { .. } => ActionKind::ReleaseLeader,
            Action::PublishMember { .. } => ActionKind::PublishMember,
            Action::PublishStatus(_) => ActionKind::PublishStatus,
            Action::RecordHistory { .. } => ActionKind::RecordHistory,
            Action::FinishFailover { .. } => ActionKind::FinishFailover,
            Action::WriteSync { .. } => ActionKind::WriteSync,
            Action::SetSyncStandbyNames { .. } => ActionKind::SetSyncStandbyNames,
            Action::ReportOperation { .. } => ActionKind::ReportOperation,
            Action::QueryPositions { .. } => ActionKind::QueryPositions,
            Action::Probe => ActionKind::Probe,
            Action::Initdb => ActionKind::Initdb,
            Action::CreateRoles => ActionKind::CreateRoles,
            Action::StartPostgres(_) => ActionKind::StartPostgres,
            Action::StopPostgres { .. } => ActionKind::StopPostgres,
            Action::Promote => ActionKind::Promote,
            Action::Checkpoint => ActionKind::Checkpoint,
            Action::Basebackup { .. } => ActionKind::Basebackup,
            Action::ConfigureStandby { .. } => ActionKind::ConfigureStandby,
            Action::StopReceiving { .. } => ActionKind::StopReceiving,
            Action::Reload => ActionKind::Reload,
            Action::CreateSlot { .. } => ActionKind::CreateSlot,
            Action::DropSlot { .. } => ActionKind::DropSlot,
            Action::Rewind { .. } => ActionKind::Rewind,
            Action::MoveDataDirAside => ActionKind::MoveDataDirAside,
            Action::ApplyParameters { .. } => ActionKind::ApplyParameters,
            Action::Fence => ActionKind::Fence,
            Action::Exit { .. } => ActionKind::Exit,
            Action::RunCallback { .. } => ActionKind::RunCallback,
            Action::PrePromote => ActionKind::PrePromote,
        }
    }
}

/// The driver's report on one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionDone {
    /// Which in-flight action this answers.
    pub kind: ActionKind,
    /// `Err` when the action could not be carried out (store unreachable,
    /// pg_ctl failed, ...): the core retries after `loop_wait`. A definite
    /// negative answer (a lost race, a gone lease) is an `Ok` reply.
    pub result: Result<Reply, String>,
}

/// A successful answer. Each action documents which one it expects; any
/// other is treated as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Done, nothing to report.
    Done,
    /// A compare-and-set won; `revision` is the store revision it wrote.
    Won {
        /// Revision of the write.
        revision: u64,
    },
    /// A compare-and-set lost: the key already existed.
    Lost,
    /// A lease grant or renewal succeeded.
    Lease {
        /// The lease.
        lease: LeaseId,
        /// `sent_at + ttl_applied - safety_margin` on CLOCK_BOOTTIME.
        valid_until: BootInstant,
    },
    /// The store says the lease is expired or unknown.
    LeaseGone,
    /// initdb finished.
    Initialized {
        /// The new cluster's system identifier.
        sysid: u64,
    },
    /// PostgreSQL is stopped.
    Stopped {
        /// The shutdown checkpoint, when the shutdown was clean.
        checkpoint_lsn: Option<Lsn>,
    },
}
