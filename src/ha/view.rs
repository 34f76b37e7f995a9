//! What the core is told: the cluster as the store shows it, the local
//! PostgreSQL as the last probe saw it, and the dynamic config.
//!
//! Everything here is plain data that the driver parses from the store and
//! from PostgreSQL. Anything read from the store is untrusted: names may hold
//! any characters, members may vanish between two views, numbers may be
//! absurd. The core never indexes or unwraps on it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::consensus::types::LeaseId;

/// A WAL position. PostgreSQL prints it as `X/Y` (high/low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A PostgreSQL timeline id.
pub type Timeline = u32;

/// The store, as one consistent snapshot (one watch revision).
///
/// The driver rebuilds it after every batch of watch events and passes it
/// whole, so the core never sees half of a change.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterView {
    /// The store revision this snapshot is at. Lets the core tell a view
    /// that predates its own successful write (stale) from one after it.
    pub revision: u64,
    /// The `initialize` key: who bootstrapped the cluster. `None` on an empty
    /// cluster, which is what makes nodes race to bootstrap it.
    pub initialize: Option<InitializeKey>,
    /// The `leader` key: the only authority on who may run a writable primary.
    pub leader: Option<LeaderKey>,
    /// The `members/<name>` keys, by name (data nodes only; a witness has none).
    pub members: BTreeMap<String, MemberInfo>,
    /// The `status` key: the last primary's WAL position, kept after it is
    /// gone so failover lag still has a reference.
    pub status: Option<StatusKey>,
    /// The `config` key (or the bootstrap defaults while it is absent).
    pub config: HaConfig,
    /// The `failover` key, while the request in it is still pending.
    pub failover: Option<FailoverRequest>,
    /// The `sync` key: who holds every acknowledged commit. Read only in
    /// synchronous mode.
    pub sync: Option<Box<SyncKey>>,
    /// The operation an operator asked of this node (`operations/<name>`),
    /// only while it is unfinished and due: the driver holds a scheduled
    /// one back until this node's wall clock reaches its time (the core
    /// reads no clocks), then builds a new view.
    pub operation: Option<Operation>,
}

/// The `sync` key ([`crate::store::keys::SyncRecord`]): every commit the
/// primary acknowledged is on `leader` and on at least `quorum` members of
/// `members`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncKey {
    /// The primary that wrote it.
    pub leader: String,
    /// The synchronous set.
    pub members: std::collections::BTreeSet<String>,
    /// How many of `members` hold each acknowledged commit (0: none is
    /// sure to).
    pub quorum: u32,
    /// The key's `mod_revision`: the primary changes it with a
    /// compare-and-set on it.
    pub mod_revision: u64,
}

impl SyncKey {
    /// Whether `name` is in the synchronous set.
    pub fn contains(&self, name: &str) -> bool {
        self.members.contains(name)
    }
}

/// The synchronous replication settings of the dynamic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncSettings {
    /// off, on or quorum.
    pub mode: crate::config::SynchronousMode,
    /// Block writes rather than run without a synchronous standby.
    pub strict: bool,
    /// `synchronous_node_count`.
    pub node_count: u32,
    /// `maximum_lag_on_syncnode`; `None`: never swapped for lag.
    pub max_lag: Option<u64>,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            mode: crate::config::SynchronousMode::Off,
            strict: false,
            node_count: 1,
            max_lag: None,
        }
    }
}

impl SyncSettings {
    /// Whether synchronous replication is on (in either form).
    pub fn enabled(&self) -> bool {
        self.mode != crate::config::SynchronousMode::Off
    }
}

/// An operator's pending switchover or failover (the `failover` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverRequest {
    /// The operation id, written back with the outcome.
    pub id: String,
    /// Switchover or failover.
    pub kind: FailoverKind,
    /// Switchover: the member that must hold the leader key for it to
    /// happen.
    pub leader: Option<String>,
    /// The member to promote; `None`: the best healthy replica.
    pub candidate: Option<String>,
    /// Whether its scheduled time has come (always, when it has none). The
    /// driver compares wall clocks, the one place a wall clock matters:
    /// an operator's "at 03:00".
    pub due: bool,
}

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverKind {
    /// The named (or current) leader hands over cleanly.
    Switchover,
    /// Promote the named candidate: through the holder if there is one,
    /// otherwise once the key is vacant (a live lease is never cut short).
    Failover,
}

/// A restart, reload or reinitialize asked of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Its id: progress is reported under it, and a new id is a new request.
    pub id: String,
    /// What to do.
    pub kind: OperationKind,
    /// The record says `running`: this node's agent started it before (and
    /// has since restarted, if this core did not start it).
    pub running: bool,
}

/// What an [`Operation`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    /// Stop PostgreSQL (fast) and start it again in the same role.
    Restart {
        /// Only if PostgreSQL reports `pending_restart`.
        pending_only: bool,
        /// Only if this member has this role (`Primary`: holds the leader
        /// key; `Replica`: does not).
        role: Option<MemberRole>,
    },
    /// Rewrite pgkeel's settings file from the dynamic config and reload.
    Reload,
    /// Stop (immediate), move the data directory aside, clone it again
    /// from the leader. Never on the leader key's holder.
    Reinitialize,
}

/// Value of the `initialize` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitializeKey {
    /// The member that won the bootstrap race.
    pub owner: String,
    /// `Database system identifier` of the cluster's data directories, once
    /// the owner's initdb has produced one. A node whose data directory has
    /// another one belongs to another cluster and must not join this one.
    pub sysid: Option<u64>,
}

/// The `leader` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderKey {
    /// The member that holds it.
    pub holder: String,
    /// The lease it hangs on; the holder renews that lease, and a restarted
    /// holder adopts it by renewing it.
    pub lease: LeaseId,
    /// Revision of the write that set it, to tell stale views from new ones.
    pub mod_revision: u64,
}

/// Value of the `status` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusKey {
    /// The primary's last known WAL write position.
    pub lsn: Lsn,
    /// The primary's timeline at that position.
    pub timeline: Timeline,
}

/// What a member publishes about itself in `members/<name>`; the core both
/// reads it (for other members) and produces it (for itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The role the member's HA loop wants (not necessarily what its
    /// PostgreSQL is right now; `state` says that).
    pub role: MemberRole,
    /// What its PostgreSQL is doing, for `pgkeelctl list` and for peers.
    pub state: MemberState,
    /// Its REST API base URL (`http://host:port`).
    pub api_url: String,
    /// `host:port` where its PostgreSQL accepts connections: what a standby
    /// puts in `primary_conninfo` and `pg_basebackup -h/-p` use.
    pub pg_address: String,
    /// `pg_current_wal_lsn()` when it runs as a primary.
    pub wal_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()`: WAL received and flushed on a standby.
    /// A stopping primary hands over once a standby is past its shutdown
    /// checkpoint.
    pub received_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` on a standby.
    pub replayed_lsn: Option<Lsn>,
    /// Its current timeline.
    pub timeline: Option<Timeline>,
    /// Its Patroni tags.
    pub tags: MemberTags,
    /// Whether its HA loop runs in maintenance mode (`pause --wait` waits
    /// for every member to say so).
    pub paused: bool,
    /// Its PostgreSQL runs with a setting that changed and needs a
    /// restart (`pg_settings.pending_restart`).
    pub pending_restart: bool,
    /// The settings a standby must hold at least as high as its primary,
    /// as its server runs them; empty when not known. Members read each
    /// other's to order restarts ([`super::may_restart_for_pending`]).
    pub must_match: super::SettingValues,
}

/// The role a member's HA loop wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberRole {
    /// Holds (or is taking) the leader key.
    Primary,
    /// Follows the leader.
    Replica,
    /// Has no usable data directory yet (bootstrapping or cloning).
    Uninitialized,
}

/// What a member's PostgreSQL is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Running (as a primary, or as a standby that is not streaming).
    Running,
    /// A standby receiving WAL from its upstream.
    Streaming,
    /// Being started.
    Starting,
    /// Being stopped by a clean shutdown (a primary handing over).
    Stopping,
    /// Not running.
    Stopped,
    /// The bootstrap winner's initdb / first start / role creation.
    Initializing,
    /// pg_basebackup from another member.
    CreatingReplica,
    /// A rejoin's pg_rewind failed and the data directory may not be
    /// re-cloned: stopped until an operator steps in.
    RewindFailed,
}

impl MemberState {
    /// The word `pgkeelctl list` shows (Patroni's wording).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Running => "running",
            MemberState::Streaming => "streaming",
            MemberState::Starting => "starting",
            MemberState::Stopping => "stopping",
            MemberState::Stopped => "stopped",
            MemberState::Initializing => "initializing new cluster",
            MemberState::CreatingReplica => "creating replica",
            MemberState::RewindFailed => "rewind failed",
        }
    }

    /// Whether its PostgreSQL is up and serving (a usable clone source).
    pub fn is_up(self) -> bool {
        matches!(self, MemberState::Running | MemberState::Streaming)
    }
}

/// The Patroni tags the core gives a meaning to. The default is an
/// untagged member: `failover_priority` 1, as in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberTags {
    /// Never promote this member.
    pub nofailover: bool,
    /// Prefer this member as the pg_basebackup source for new replicas, to
    /// keep the copy load off the primary.
    pub clonefrom: bool,
    /// Never make this member a synchronous standby (later issue).
    pub nosync: bool,
    /// Tie-breaker between equally advanced candidates: higher wins; 0 (or
    /// less) means never promote, like `nofailover`.
    pub failover_priority: i64,
}

impl MemberTags {
    /// Whether these tags allow promoting the member at all.
    pub fn may_fail_over(&self) -> bool {
        !self.nofailover && self.failover_priority > 0
    }
}

impl Default for MemberTags {
    fn default() -> Self {
        MemberTags {
            nofailover: false,
            clonefrom: false,
            nosync: false,
            failover_priority: crate::config::defaults::FAILOVER_PRIORITY,
        }
    }
}

/// The dynamic settings the core uses. The driver builds it from the
/// `config` key; fields the key lacks take [`HaConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// TTL asked for when granting this node's lease.
    pub ttl: Duration,
    /// Period of routine refreshes: probes, member key, `status` key, and
    /// the back-off before retrying a failed action.
    pub loop_wait: Duration,
    /// How often the lease is renewed.
    pub keepalive_interval: Duration,
    /// Bound on one renewal round trip; a renewal that fails is retried
    /// after [`KEEPALIVE_RETRY`](super::KEEPALIVE_RETRY), not a whole
    /// interval later.
    pub keepalive_timeout: Duration,
    /// How much earlier than the Raft leader the holder stops trusting its
    /// lease. The driver uses it to compute `valid_until`; the core keeps it
    /// for issue 4 (watchdog timeouts).
    pub safety_margin: Duration,
    /// How far (in bytes of WAL) a standby may be behind the `status` key
    /// and still take the vacant leader key.
    pub maximum_lag_on_failover: u64,
    /// How long a vanished member's replication slot is kept, so a short
    /// outage never forces a full re-clone.
    pub member_slots_ttl: Duration,
    /// How long a stopping primary waits for a standby to receive its
    /// shutdown checkpoint before it releases the leader key anyway.
    pub handover_timeout: Duration,
    /// How long a primary restarts its crashed server in place before it
    /// fences it and gives the leader key back.
    pub primary_start_timeout: Duration,
    /// Maintenance mode: no automatic failover, no PostgreSQL started,
    /// stopped, rewound or re-cloned by the HA loop; the lease and fencing
    /// rules still hold.
    pub pause: bool,
    /// Identifies the dynamic config's PostgreSQL parameters (the driver
    /// hashes them; 0 stands for none known). When it changes, a running
    /// server gets them written and reloaded ([`Action::ApplyParameters`](super::Action)).
    pub parameters_fingerprint: u64,
    /// Synchronous replication.
    pub sync: SyncSettings,
}

impl Default for HaConfig {
    fn default() -> Self {
        use crate::config::defaults;
        HaConfig {
            ttl: defaults::TTL,
            loop_wait: defaults::LOOP_WAIT,
            keepalive_interval: defaults::KEEPALIVE_INTERVAL,
            keepalive_timeout: defaults::KEEPALIVE_TIMEOUT,
            safety_margin: defaults::SAFETY_MARGIN,
            maximum_lag_on_failover: defaults::MAXIMUM_LAG_ON_FAILOVER,
            member_slots_ttl: MEMBER_SLOTS_TTL,
            handover_timeout: HANDOVER_TIMEOUT,
            primary_start_timeout: defaults::PRIMARY_START_TIMEOUT,
            pause: false,
            parameters_fingerprint: 0,
            sync: SyncSettings::default(),
        }
    }
}

/// Default `member_slots_ttl` (Patroni's).
pub const MEMBER_SLOTS_TTL: Duration = Duration::from_secs(30 * 60);
/// Default `handover_timeout`: a replica normally has the shutdown
/// checkpoint within a second; past this, waiting costs more write downtime
/// than the re-sync it would save.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The local PostgreSQL as one probe saw it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgState {
    /// Whether the data directory exists with a cluster in it.
    pub data_dir: DataDir,
    /// A postmaster of this data directory is alive (`postmaster.pid` names
    /// a live process).
    pub running: bool,
    /// Whether the server is a standby: `Some(true)` when
    /// `pg_is_in_recovery()` says so, or, while it cannot be asked yet
    /// (starting up, crash recovery), when `standby.signal` is present and
    /// no promotion was requested (such a server cannot open read-write).
    /// `Some(false)`: a primary. `None`: not running, or no way to tell;
    /// a running server with `None` is treated as possibly writable.
    pub in_recovery: Option<bool>,
    /// The server's timeline (from `pg_control_checkpoint()` or
    /// pg_controldata when stopped).
    pub timeline: Option<Timeline>,
    /// `pg_current_wal_lsn()` on a primary.
    pub wal_lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()` on a standby.
    pub received_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` on a standby.
    pub replayed_lsn: Option<Lsn>,
    /// The upstream pgkeel last wrote into the standby settings
    /// (`primary_conninfo`), read back from its own settings file. `None`
    /// when no upstream is configured.
    pub following: Option<Upstream>,
    /// The WAL receiver is streaming (`pg_stat_wal_receiver.status`).
    pub streaming: bool,
    /// `pg_stat_replication`, on a primary.
    pub replication: Vec<ReplicationRow>,
    /// `pg_replication_slots`, physical and logical.
    pub slots: Vec<SlotInfo>,
    /// pg_controldata's `Latest checkpoint location` while stopped: after a
    /// clean shutdown, the shutdown checkpoint a standby must receive before
    /// a primary hands over.
    pub checkpoint_lsn: Option<Lsn>,
    /// While stopped: pg_control says the server last ran as a primary
    /// (`in production`, `shut down`, `shutting down`, `in crash
    /// recovery`), not as a standby, and no `backup_label` marks a fresh
    /// clone whose pg_control is its source's. With `timeline` lower than the
    /// leader's, it may have written past the fork point: rewind before
    /// its first start.
    pub was_primary: bool,
    /// `server_version_num` while the server answers (shown by the REST API).
    pub server_version: Option<u32>,
    /// `pg_settings.pending_restart` while the server answers.
    pub pending_restart: bool,
    /// The settings a standby must hold at least as high as its primary,
    /// as the server runs them (see [`super::may_restart_for_pending`]).
    pub must_match: super::SettingValues,
    /// The same settings as a restart would make them.
    pub must_match_pending: super::SettingValues,
    /// `synchronous_standby_names` as the running server has it; `None`
    /// while it cannot be asked.
    pub sync_standby_names: Option<String>,
}

impl PgState {
    /// Whether this server might accept writes: running and not confirmed
    /// to be a standby. The lease rules stop such a server when this node
    /// does not hold the leader lease.
    pub fn may_be_writable(&self) -> bool {
        self.running && self.in_recovery != Some(true)
    }

    /// Running as a confirmed writable primary.
    pub fn is_primary(&self) -> bool {
        self.running && self.in_recovery == Some(false)
    }
}

/// The data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataDir {
    /// Missing or empty: initdb or pg_basebackup may write into it.
    #[default]
    Empty,
    /// Holds a cluster with this `Database system identifier`.
    Initialized {
        /// pg_controldata's system identifier.
        sysid: u64,
    },
}

/// A member to stream from or copy from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The member's name (untrusted; the driver quotes it wherever it goes).
    pub member: String,
    /// Its PostgreSQL `host:port` (untrusted, as above).
    pub pg_address: String,
}

/// One `pg_stat_replication` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationRow {
    /// The standby's `application_name` (pgkeel sets it to the member name).
    pub application_name: String,
    /// `state` (`streaming`, `catchup`, ...).
    pub state: String,
    /// `sync_state` (`async`, `potential`, `sync`, `quorum`).
    pub sync_state: String,
    /// `flush_lsn`: WAL the standby has made durable.
    pub flush_lsn: Option<Lsn>,
    /// `replay_lsn`.
    pub replay_lsn: Option<Lsn>,
}

/// One `pg_replication_slots` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// `slot_name`.
    pub name: String,
    /// `slot_type = 'physical'`. Only physical slots are pgkeel's business.
    pub physical: bool,
    /// `active`: a walsender uses it right now; never dropped while active.
    pub active: bool,
}
