//! Layer 3: the HA decision core. Pure: no async, no I/O, no clock reads.
//!
//! [`Ha::handle`] takes `now` (CLOCK_BOOTTIME, read by the driver) and one
//! [`Event`] and returns the [`Action`]s to carry out. The driver runs each
//! action (store lane concurrently, PostgreSQL lane one at a time, as the
//! core already guarantees) and feeds every outcome back as an event; it
//! sends [`Event::Tick`] no later than [`Ha::next_wakeup`]. Every rule is a
//! table test in `tests/`.
//!
//! The state is the *wanted* role; the last probe is the *observed*
//! PostgreSQL. Rules are level-triggered: each call compares the two (and
//! the store) and asks for what closes the gap, with at most one action of
//! each kind in flight.
//!
//! ```text
//!  Starting ── waits for the first store view and a fresh probe, then:
//!   ├─ data dir's sysid ≠ the initialize key's ─────────────────────────▶ Exited (Exit{error})
//!   ├─ no initialize key ──────────────────▶ Bootstrapping::Racing
//!   ├─ initialized cluster, empty data dir ▶ Bootstrapping::AwaitingLeader
//!   ├─ leader key names us ────────────────▶ Primary (lease adopted: keepalive before use)
//!   └─ otherwise ──────────────────────────▶ Replica
//!
//!  Bootstrapping:
//!   Racing ─won, empty dir─▶ Initdb ─▶ TakingLeader ─CAS won─▶ StartingPrimary ─▶ CreatingRoles ─▶ Primary
//!     │  └─won, existing dir───────────▲       │CAS lost
//!     │lost                                    ▼
//!     ▼                                     Replica
//!   AwaitingLeader ─leader (or clonefrom member) up─▶ Cloning ─done─▶ Replica
//!     ▲                                                 │failed
//!     └─────────────────────────────────────────────────┘
//!
//!  Primary ─lease lost─▶ (fenced: Fence in flight, by PID, immediate; the
//!     fencing thread does the same at valid_until) ─▶ Replica, where a
//!     stopped former primary is held stopped until the leader key names a
//!     member on a newer timeline (─▶ Rejoining) or the key is vacant while
//!     our lease is valid (start with no upstream, then race)
//!  Replica ─data dir empty─▶ Bootstrapping::AwaitingLeader
//!
//!  Rejoining (leader up on a newer timeline than ours, see `rejoin`):
//!  Replica ─running standby, not streaming, timeline < leader's, 2 probes─▶ Stopping
//!  Replica ─stopped, last ran as primary, timeline < leader's────────────▶ Rewinding
//!   Stopping ─StopPostgres{Fast}─▶ Rewinding ─Rewind{leader}─▶ StartingStandby ─StartPostgres(Standby)─▶ Replica
//!                                     │failed (or use_pg_rewind off)
//!                                     ├─ remove_data_directory_on_rewind_failure ─▶ MovingAside
//!                                     │     ─MoveDataDirAside─▶ Bootstrapping::AwaitingLeader (re-clone)
//!                                     └─ otherwise ─▶ Failed (stopped, "rewind failed")
//!   Rewinding / StartingStandby ─no leader to follow─▶ Replica
//!
//!  Candidate (on the view that shows the leader key vacant; every standby
//!  first stops receiving from the old primary, StopReceiving):
//!  Replica ─may race─▶ Polling ─QueryPositions answered─▶ Acquiring ─Won─▶ Promoting ─Promote done─▶ Primary (CHECKPOINT first)
//!     ▲                  │leader seen        │Lost, key taken,  │Promote failed
//!     │                  │                   │or outranked      │(or server down)
//!     │                  │                   │                  ▼
//!     ├──────────────────┴───────────────────┘              Abandoning: Fence, then ReleaseLeader
//!     └───────────── released ──────────────────────────────────┘
//!  With `pre_promote` (see `callbacks`): Acquiring ─Won─▶ PrePromoting ─exit 0─▶ Promoting;
//!     PrePromoting ─non-zero exit or timeout─▶ Abandoning (no fence: still a
//!     standby), and no race for one ttl
//!  Candidate::Promoting / Abandoning ── lease lost (Fence if needed) ──▶ Replica
//!
//!  Demoting (SIGTERM; a switchover's demote arrives with the admin calls):
//!  any state ─Shutdown─▶ Stopping::StoppingPostgres (fast; Fence if that fails)
//!     ├─ held the leader key and stopped cleanly ─▶ AwaitingReplica
//!     │      (until a standby is past the shutdown checkpoint, the lease is
//!     │       lost, or handover_timeout) ─┐
//!     └───────────────────────────────────┴─▶ Releasing (RevokeLease) ─▶ Exited (Exit)
//! ```
//!
//! Rules that hold in every state, checked first on every call:
//! - the lease is lost when `now` reaches `valid_until` without a renewal,
//!   when the store answers `LeaseGone`, or when a view newer than our
//!   leader write shows another holder; a lost leader lease leaves Primary;
//! - **fence**: a PostgreSQL that may accept writes (running and not a
//!   confirmed standby, or a promotion / primary start in flight) while this
//!   node does not hold a valid leader lease is stopped at once
//!   ([`Action::Fence`]). The only path to a writable server is
//!   `StartPostgres(Primary)` or `Promote`, and both are asked for only
//!   while the leader lease is valid.
//!
//! A replica races for a vacant leader key only when it is eligible
//! ([`failover_eligibility`]); `Promote` is asked for only after our
//! `AcquireLeader` won, while the lease is valid.
//!
//! Fencing does not rest on this core alone: the driver mirrors the
//! leader lease into a dedicated thread ([`crate::fence`]) that stops the
//! postmaster at `valid_until` even when the runtime that runs this core
//! is stalled, and owns the watchdog.

mod actions;
mod blockers;
mod bootstrap;
mod callbacks;
mod candidate;
mod lease;
mod machinery;
mod names;
mod operations;
mod primary;
mod publish;
pub mod records;
mod rejoin;
mod replica;
mod settings;
mod state;
mod stopping;
mod switchover;
pub mod sync;
mod view;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::BootInstant;
use crate::consensus::types::LeaseId;

pub use actions::{Action, ActionDone, ActionKind, OpOutcome, Reply, StartAs, StopMode};
pub use blockers::{no_leader, promotion_blockers, NoLeader};
pub use callbacks::{CallbackKind, CallbackRole, CallbackSet};
pub use candidate::{
    failover_eligibility, standby_position, Ineligible, PolledPosition, POSITION_QUERY_TIMEOUT,
};
pub use names::sanitize_slot_name;
pub use rejoin::REWIND_ATTEMPTS;
pub use settings::{may_restart_for_pending, PendingRestart, SettingValues};
pub use state::{
    BootstrapStep, CandidateStep, DemotingStep, PrimaryState, RejoinStep, State, StoppingState,
};
pub use switchover::{candidate_problem, no_candidate};
pub use view::{
    ClusterView, DataDir, FailoverKind, FailoverRequest, HaConfig, InitializeKey, LeaderKey, Lsn,
    MemberInfo, MemberRole, MemberState, MemberTags, Operation, OperationKind, PgState,
    ReplicationRow, SlotInfo, StatusKey, SyncKey, SyncSettings, Timeline, Upstream,
    HANDOVER_TIMEOUT, MEMBER_SLOTS_TTL,
};

/// How often a standby probes while its primary is handing over, so it
/// publishes the received shutdown checkpoint within a fraction of a
/// second instead of a `loop_wait`.
pub const HANDOVER_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// How soon a failed race for the vacant leader key is retried. The store
/// call already waited up to its own bound (`raft.request_timeout`), so
/// this is no hot loop; waiting a whole `loop_wait` would add that much to
/// every failover whose first attempt met a Raft election (the Raft leader
/// often stops together with the old primary).
pub const RACE_RETRY: Duration = Duration::from_millis(100);

/// How soon a failed lease renewal is retried: a renewal that met a stall
/// or a Raft election must not wait a whole `keepalive_interval` more, or
/// a stall shorter than the lease would still cost it.
pub const KEEPALIVE_RETRY: Duration = Duration::from_millis(200);

/// How soon a failed [`Action::Fence`] is retried.
pub const FENCE_RETRY: Duration = Duration::from_millis(100);

/// An input to the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed; the driver sends one no later than [`Ha::next_wakeup`].
    Tick,
    /// The store changed (or this is the first view).
    StoreChanged(ClusterView),
    /// The answer to [`Action::Probe`].
    PgProbed(PgState),
    /// The answer to [`Action::QueryPositions`]: the members that answered.
    PositionsPolled(BTreeMap<String, PolledPosition>),
    /// The answer to any other action.
    ActionDone(ActionDone),
    /// SIGTERM: hand over cleanly and exit.
    Shutdown,
}

/// This node, as fixed by its config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Member name: the `members/<name>` key and the leader key's value.
    pub name: String,
    /// REST API base URL, published for peers and `pgkeelctl list`.
    pub api_url: String,
    /// PostgreSQL `host:port` other members connect to.
    pub pg_address: String,
    /// Tags from the config file.
    pub tags: MemberTags,
    /// How a diverged node rejoins (`postgresql.use_pg_rewind`,
    /// `postgresql.remove_data_directory_on_rewind_failure`).
    pub rejoin: RejoinPolicy,
    /// Which of `postgresql.callbacks` and `pre_promote` are configured.
    pub callbacks: CallbackSet,
}

/// How a node whose timeline diverged from the leader's gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejoinPolicy {
    /// Try pg_rewind first.
    pub use_pg_rewind: bool,
    /// When pg_rewind fails (or is off), move the data directory aside and
    /// re-clone; otherwise stay stopped as "rewind failed".
    pub remove_data_directory_on_rewind_failure: bool,
}

impl Default for RejoinPolicy {
    /// Both on: no human step.
    fn default() -> Self {
        RejoinPolicy {
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: true,
        }
    }
}

/// This node's lease, as its holder knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The store's id for it.
    pub id: LeaseId,
    /// The last instant this node may believe it holds the lease. `None`
    /// while adopting a lease found on the leader key after a restart:
    /// never valid until a keepalive confirms it.
    pub valid_until: Option<BootInstant>,
}

impl Lease {
    /// Whether the lease may be relied on at `now`.
    pub fn is_valid(&self, now: BootInstant) -> bool {
        self.valid_until.is_some_and(|v| now < v)
    }
}

/// An action the driver is carrying out.
#[derive(Debug, Clone)]
struct InFlight {
    action: Action,
    sent_at: BootInstant,
    /// `Ha::pg_epoch` when it was sent: a probe sent before the last change
    /// to PostgreSQL completed describes the old server.
    epoch: u64,
}

/// A member key this node wrote.
#[derive(Debug, Clone)]
struct Published {
    info: MemberInfo,
    lease: LeaseId,
    at: BootInstant,
}

/// The decision core of one data node. See the module docs.
#[derive(Debug, Clone)]
pub struct Ha {
    /// Who we are.
    node: NodeInfo,
    /// Our replication slot name on whichever node is primary.
    slot: String,
    /// The wanted role.
    state: State,
    /// The last store view; `None` until the first one.
    view: Option<ClusterView>,
    /// The observed PostgreSQL: the last probe, patched with the known
    /// effect of later stops, fences and starts so the fencing rule never
    /// reasons from a server that is already gone.
    pg: Option<PgState>,
    /// Bumped whenever an action that changes PostgreSQL completes.
    pg_epoch: u64,
    /// The epoch of the probe behind `pg`; `pg` is fresh when it equals
    /// `pg_epoch`. Rules that act on PostgreSQL wait for a fresh probe.
    pg_seen_epoch: Option<u64>,
    /// When the last probe arrived.
    last_probe: Option<BootInstant>,
    /// This node's lease (member key, and the leader key while primary).
    lease: Option<Lease>,
    /// `Some(revision of our leader write)` while we hold the leader key.
    leader_revision: Option<u64>,
    /// Actions out with the driver, at most one per kind.
    inflight: BTreeMap<ActionKind, InFlight>,
    /// Failed kinds are not asked for again before these instants.
    retry_at: BTreeMap<ActionKind, BootInstant>,
    /// When the last keepalive (or grant) was sent.
    last_keepalive: Option<BootInstant>,
    /// When the keepalive (or grant) that set the lease's `valid_until`
    /// was sent: the lease's validity runs from here (see
    /// `next_keepalive`).
    renewed_at: Option<BootInstant>,
    /// A failed keepalive is retried at this instant.
    keepalive_retry: Option<BootInstant>,
    /// The member key as last written.
    published: Option<Published>,
    /// The `status` key as last written, and when.
    status_published: Option<(StatusKey, BootInstant)>,
    /// The highest timeline whose switch the `history` key is known to
    /// hold (1: nothing to record).
    history_recorded: u32,
    /// Physical slots with no member, and since when we have seen them so.
    slot_absent_since: BTreeMap<String, BootInstant>,
    /// Set when PostgreSQL must be stopped by PID whatever it says (a
    /// failed stop during shutdown); cleared by a completed fence.
    must_fence: bool,
    /// SIGTERM arrived.
    shutdown: bool,
    /// The sysid this node wrote into the `initialize` key, so it is not
    /// rewritten while the view catches up.
    sysid_recorded: Option<u64>,
    /// The view revision when our last race ended without the key (our
    /// `AcquireLeader` came back `Lost`: views up to it predate the
    /// winner's write; or the others' answers showed a better member): a
    /// vacant key in views up to it is no reason to race again.
    race_lost_at: Option<u64>,
    /// Quorum mode: our last race stopped short of the set's answers
    /// (a member did not answer); they may answer later without anything
    /// changing in the store, so ask again from this instant on.
    race_retry_at: Option<BootInstant>,
    /// Consecutive failed pg_rewind runs, and the leader they ran against.
    rewind_failures: (Option<String>, u32),
    /// The primary's server found down (see `primary`).
    primary_down: Option<primary::ServerDown>,
    /// What the other members answered when this candidate asked their
    /// positions for the current vacancy; cleared once a leader is seen.
    polled: Option<BTreeMap<String, PolledPosition>>,
    /// When this node first saw the current vacancy of the leader key.
    vacant_since: Option<BootInstant>,
    /// The operator request (`failover` key) whose outcome this node
    /// wrote, or that it handed over for: it is not acted on again.
    finished_request: Option<String>,
    /// The request that was due when this node won the leader key: the
    /// new primary reports that one done.
    promoted_for: Option<String>,
    /// The request this node released the leader key for: should the key
    /// come back to it, that request is not carried out again.
    handed_over: Option<String>,
    /// Why the handover in progress cannot go on (an unclean or failed
    /// stop); the next pass reports it and leads again.
    handover_failure: Option<String>,
    /// The operator's operations: the one being carried out, and what is
    /// remembered about earlier ones (see `operations`).
    ops: operations::OpTracker,
    /// [`HaConfig::parameters_fingerprint`] of the dynamic PostgreSQL
    /// parameters last written and reloaded (see `settings`).
    parameters_applied: Option<u64>,
    /// The setting in force as our probes saw it (synchronous mode).
    sync_mark: Option<sync::SyncMark>,
    /// Our `sync` key write succeeded on this base revision: the next
    /// step waits for a view that shows it.
    sync_written: Option<Option<u64>>,
    /// The last role for `on_role_change`, and a stand-aside after a
    /// failed `pre_promote` (see `callbacks`).
    cb: callbacks::CallbackMemory,
}

impl Ha {
    /// A core for `node`, in [`State::Starting`].
    pub fn new(node: NodeInfo) -> Ha {
        let slot = sanitize_slot_name(&node.name);
        Ha {
            node,
            slot,
            state: State::Starting,
            view: None,
            pg: None,
            pg_epoch: 0,
            pg_seen_epoch: None,
            last_probe: None,
            lease: None,
            leader_revision: None,
            inflight: BTreeMap::new(),
            retry_at: BTreeMap::new(),
            last_keepalive: None,
            renewed_at: None,
            keepalive_retry: None,
            published: None,
            status_published: None,
            history_recorded: 1,
            slot_absent_since: BTreeMap::new(),
            must_fence: false,
            shutdown: false,
            sysid_recorded: None,
            race_lost_at: None,
            race_retry_at: None,
            rewind_failures: (None, 0),
            primary_down: None,
            polled: None,
            vacant_since: None,
            finished_request: None,
            promoted_for: None,
            handed_over: None,
            handover_failure: None,
            ops: operations::OpTracker::default(),
            parameters_applied: None,
            sync_mark: None,
            sync_written: None,
            cb: callbacks::CallbackMemory::default(),
        }
    }

    /// Feeds one event; returns what to do, in no particular dependency
    /// order (the core never asks for two actions that depend on each
    /// other in one batch).
    pub fn handle(&mut self, now: BootInstant, event: Event) -> Vec<Action> {
        if self.state == State::Exited {
            return Vec::new();
        }
        let mut out = Vec::new();
        match event {
            Event::Tick => {}
            Event::StoreChanged(view) => self.view = Some(view),
            Event::PgProbed(pg) => {
                self.callbacks_on_probe(&pg);
                self.on_probe(now, pg)
            }
            Event::PositionsPolled(answers) => self.on_polled(answers),
            Event::ActionDone(done) => {
                if self.inflight.contains_key(&done.kind) {
                    self.callbacks_on_done(now, &done, &mut out);
                    self.op_observe(&done);
                }
                self.on_done(now, done)
            }
            Event::Shutdown => self.shutdown = true,
        }
        self.step(now, &mut out);
        out
    }

    /// The wanted role.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// This node's lease, if it has one.
    pub fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// Whether this node holds the leader key with a lease valid at `now`:
    /// the one condition under which its PostgreSQL may accept writes.
    pub fn holds_leader(&self, now: BootInstant) -> bool {
        self.leader_revision.is_some() && self.lease.is_some_and(|l| l.is_valid(now))
    }

    /// Whether this node believes it holds the leader key (valid lease or
    /// not: [`Ha::holds_leader`] adds that).
    pub fn holds_leader_key(&self) -> bool {
        self.leader_revision.is_some()
    }

    /// Whether an action of `kind` is out with the driver.
    pub fn in_flight(&self, kind: ActionKind) -> bool {
        self.inflight.contains_key(&kind)
    }

    /// The observed PostgreSQL (the last probe, patched with later known
    /// effects); `None` before the first probe.
    pub fn pg(&self) -> Option<&PgState> {
        self.pg.as_ref()
    }

    /// The last store view; `None` before the first one.
    pub fn view(&self) -> Option<&ClusterView> {
        self.view.as_ref()
    }

    /// This node's replication slot name.
    pub fn slot_name(&self) -> &str {
        &self.slot
    }

    /// The instant after `now` by which the driver must send
    /// [`Event::Tick`]: the lease deadline (to fence on time), the next
    /// keepalive, probe, publish, retry, slot expiry or handover deadline.
    /// Deadlines already passed are left out: whatever they call for is
    /// waiting on an action in flight, whose answer is an event anyway. The
    /// driver also ticks at least every `loop_wait`.
    pub fn next_wakeup(&self, now: BootInstant) -> Option<BootInstant> {
        let cfg = self.cfg();
        let mut at: Vec<BootInstant> = Vec::new();
        if let Some(lease) = self.lease {
            at.extend(lease.valid_until);
            at.extend(self.next_keepalive());
            at.extend(self.keepalive_retry);
        }
        at.extend(self.last_probe.map(|t| t + self.probe_interval()));
        at.extend(self.published.as_ref().map(|p| p.at + cfg.loop_wait));
        at.extend(self.status_published.map(|(_, t)| t + cfg.loop_wait));
        at.extend(self.retry_at.values().copied());
        at.extend(self.stand_aside_end());
        at.extend(self.race_retry_at);
        at.extend(
            self.slot_absent_since
                .values()
                .map(|t| *t + cfg.member_slots_ttl),
        );
        if let State::Stopping(StoppingState::AwaitingReplica { deadline, .. })
        | State::Demoting {
            step: DemotingStep::AwaitingCandidate { deadline, .. },
            ..
        } = self.state
        {
            at.push(deadline);
        }
        // A crashed primary gives up on time, not at the next routine tick.
        at.extend(
            self.primary_down
                .as_ref()
                .filter(|d| !d.giving_up)
                .map(|d| d.since + cfg.primary_start_timeout),
        );
        at.into_iter().filter(|t| *t > now).min()
    }

    /// The dynamic config in force.
    fn cfg(&self) -> HaConfig {
        self.view
            .as_ref()
            .map(|v| v.config.clone())
            .unwrap_or_default()
    }

    /// One pass of every rule, in a fixed order so that action lists are
    /// deterministic: lease bookkeeping, fencing, the state's own rules
    /// (re-run after each transition), lease upkeep, member key, probe.
    fn step(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        self.check_leadership(now);
        if self.view.as_ref().is_some_and(|v| v.leader.is_some()) {
            // A vacancy ends when any state sees a leader: the next one
            // is timed afresh (`replica` starts the clock).
            self.vacant_since = None;
        }
        // The mark of the synchronous setting is the primary's, for one
        // tenure: a later one must not count standbys against an old
        // position (see `sync`).
        if !matches!(self.state, State::Primary(_)) {
            self.sync_mark = None;
        }
        if !matches!(self.state, State::Primary(_) | State::Candidate(_)) {
            self.sync_written = None;
        }
        if self.shutdown && !matches!(self.state, State::Stopping(_) | State::Exited) {
            self.state = State::Stopping(StoppingState::StoppingPostgres);
        }
        self.guard(now, out);
        // Before the state's rules: a restart's own start must not look
        // like a crashed server to them.
        self.operation(now, out);
        // Each transition moves forward through a finite diagram; the bound
        // only guards against a future rule that bounces between two states.
        for _ in 0..8 {
            let before = self.state.clone();
            match self.state.clone() {
                State::Starting => self.starting(out),
                State::Bootstrapping(step) => self.bootstrap(now, step, out),
                State::Replica => self.replica(now, out),
                State::Candidate(c) => self.candidate(now, c, out),
                State::Rejoining(r) => self.rejoining(now, r, out),
                State::Primary(p) => self.primary(now, p, out),
                State::Demoting { to, step } => self.demoting(now, to, step, out),
                State::Stopping(s) => self.stopping(now, s, out),
                State::Exited => {}
            }
            if self.state == before {
                break;
            }
        }
        self.apply_parameters(now, out);
        self.maintain_lease(now, out);
        self.publish_member(now, out);
        self.probe_if_due(now, out);
    }

    /// The first decision, once both the store and PostgreSQL were seen.
    fn starting(&mut self, out: &mut Vec<Action>) {
        let (Some(view), Some(pg)) = (self.view.as_ref(), self.fresh_pg()) else {
            return;
        };
        let me = self.node.name.as_str();
        let next = match (pg.data_dir, view.initialize.as_ref()) {
            (
                DataDir::Initialized { sysid },
                Some(InitializeKey {
                    sysid: Some(cluster),
                    ..
                }),
            ) if sysid != *cluster => {
                let error = format!(
                    "the data directory holds database system {sysid}, but cluster \
                     members run system {cluster}: move the data directory aside so \
                     this node can clone the cluster"
                );
                self.state = State::Exited;
                out.push(Action::Exit { error: Some(error) });
                return;
            }
            (DataDir::Initialized { .. }, _)
                if view.leader.as_ref().is_some_and(|l| l.holder == me) =>
            {
                // Our own key from before a restart: adopt its lease. Not
                // valid until a keepalive confirms it; until then the fence
                // rule stops a writable server.
                let leader = view.leader.as_ref().map(|l| (l.lease, l.mod_revision));
                if let Some((lease, revision)) = leader {
                    self.lease = Some(Lease {
                        id: lease,
                        valid_until: None,
                    });
                    self.leader_revision = Some(revision);
                }
                State::Primary(PrimaryState::default())
            }
            (DataDir::Initialized { .. }, Some(_)) => State::Replica,
            (_, None) => State::Bootstrapping(BootstrapStep::Racing),
            (DataDir::Empty, Some(_)) => State::Bootstrapping(BootstrapStep::AwaitingLeader),
        };
        self.state = next;
    }
}
