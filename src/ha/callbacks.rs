//! The operator's scripts (Patroni's `postgresql.callbacks` and
//! `pre_promote`): which one to run after which completed action, and the
//! back-off after a failed `pre_promote`.
//!
//! Callbacks are decided here, on the answer to an action, because one of
//! them needs memory: `on_role_change` fires when PostgreSQL runs in a role
//! other than the one it last ran in (known from the last start or
//! promotion this node completed, or from the first probe: a running
//! server's role, or the role a stopped data directory last ran in, so a
//! crashed primary whose agent restarts and rejoins it as a standby calls
//! `on_role_change replica`, as Patroni does). The driver runs them without answering
//! ([`Action::RunCallback`]): a script's exit status changes no decision.
//!
//! | completed action                   | callback                    |
//! |------------------------------------|-----------------------------|
//! | `StartPostgres(as)`                | `on_start <as>` (`on_restart` within a restart operation), plus `on_role_change <as>` when `as` differs from the last role |
//! | `StopPostgres`, `Fence` of a running server | `on_stop <last role>` (nothing within a restart operation) |
//! | `Promote`                          | `on_role_change primary`    |
//! | `Reload`, `ApplyParameters`        | `on_reload <role>`          |
//!
//! `pre_promote` is different: the candidate that won the leader key runs
//! it and waits (`CandidateStep::PrePromoting`, [`Action::PrePromote`]),
//! under its lease (keepalives go on, on the store lane). A zero exit
//! promotes. Anything else gives the key back unpromoted (the server is
//! still a standby, so nothing needs fencing) and this node stays out of
//! races for one ttl: it does not race, and it tells candidates that ask
//! its position that it stands aside ([`Ha::stands_aside_until`]), so the
//! race goes to another member instead of waiting on this one.

use crate::clock::BootInstant;

use super::actions::{Action, ActionDone, ActionKind, Reply, StartAs};
use super::state::{CandidateStep, State};
use super::view::{DataDir, PgState};
use super::Ha;

/// Which of the operator's asynchronous scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallbackKind {
    /// PostgreSQL was started.
    OnStart,
    /// PostgreSQL was stopped.
    OnStop,
    /// A restart operation finished starting PostgreSQL again.
    OnRestart,
    /// PostgreSQL reloaded its settings.
    OnReload,
    /// PostgreSQL runs in a new role.
    OnRoleChange,
}

impl CallbackKind {
    /// The config key and the script's first argument (`on_start`, …).
    pub fn name(self) -> &'static str {
        match self {
            CallbackKind::OnStart => "on_start",
            CallbackKind::OnStop => "on_stop",
            CallbackKind::OnRestart => "on_restart",
            CallbackKind::OnReload => "on_reload",
            CallbackKind::OnRoleChange => "on_role_change",
        }
    }
}

/// The role a script is told, in Patroni 3's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRole {
    /// A writable primary.
    Primary,
    /// A standby.
    Replica,
}

impl CallbackRole {
    /// The script's second argument.
    pub fn name(self) -> &'static str {
        match self {
            CallbackRole::Primary => "primary",
            CallbackRole::Replica => "replica",
        }
    }

    fn of(start: &StartAs) -> CallbackRole {
        match start {
            StartAs::Primary => CallbackRole::Primary,
            StartAs::Standby { .. } => CallbackRole::Replica,
        }
    }

    /// The role `pg` shows: a running server's, or the one a stopped
    /// data directory last ran in (pg_controldata's state).
    fn observed(pg: &PgState) -> Option<CallbackRole> {
        match (pg.running, pg.in_recovery, pg.data_dir) {
            (true, Some(false), _) => Some(CallbackRole::Primary),
            (true, Some(true), _) => Some(CallbackRole::Replica),
            (false, _, DataDir::Initialized { .. }) if pg.was_primary => {
                Some(CallbackRole::Primary)
            }
            (false, _, DataDir::Initialized { .. }) => Some(CallbackRole::Replica),
            _ => None,
        }
    }
}

/// Which scripts this node's config file names: the core asks only for
/// those (so a node without scripts sees no callback actions at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallbackSet {
    pub on_start: bool,
    pub on_stop: bool,
    pub on_restart: bool,
    pub on_reload: bool,
    pub on_role_change: bool,
    /// `postgresql.pre_promote`: a won race waits for it before promoting.
    pub pre_promote: bool,
}

impl CallbackSet {
    fn has(&self, kind: CallbackKind) -> bool {
        match kind {
            CallbackKind::OnStart => self.on_start,
            CallbackKind::OnStop => self.on_stop,
            CallbackKind::OnRestart => self.on_restart,
            CallbackKind::OnReload => self.on_reload,
            CallbackKind::OnRoleChange => self.on_role_change,
        }
    }
}

/// What the core remembers for callbacks.
#[derive(Debug, Clone, Default)]
pub(super) struct CallbackMemory {
    /// The role PostgreSQL last ran in: set by a completed start or
    /// promotion, or by the first probe of a running server.
    role: Option<CallbackRole>,
    /// After a failed `pre_promote`: no race before this instant.
    stand_aside_until: Option<BootInstant>,
}

impl Ha {
    /// Callbacks for the answer to an action in flight, and the outcome of
    /// `pre_promote`. Called before the general bookkeeping, which still
    /// sees the operation step and the server as they were.
    pub(super) fn callbacks_on_done(
        &mut self,
        now: BootInstant,
        done: &ActionDone,
        out: &mut Vec<Action>,
    ) {
        if done.kind == ActionKind::PrePromote {
            self.pre_promote_done(now, done);
            return;
        }
        let Ok(reply) = &done.result else { return };
        let action = self.inflight.get(&done.kind).map(|f| f.action.clone());
        let restarting = self.restart_in_progress();
        let last = self.cb.role;
        let current = last
            .or_else(|| self.pg.as_ref().and_then(CallbackRole::observed))
            .unwrap_or(CallbackRole::Replica);
        let configured = self.node.callbacks;
        let mut call = |kind: CallbackKind, role: CallbackRole| {
            if configured.has(kind) {
                out.push(Action::RunCallback { kind, role });
            }
        };
        match (action, reply) {
            (Some(Action::StartPostgres(how)), _) => {
                let role = CallbackRole::of(&how);
                let kind = if restarting {
                    CallbackKind::OnRestart
                } else {
                    CallbackKind::OnStart
                };
                call(kind, role);
                if last.is_some_and(|l| l != role) {
                    call(CallbackKind::OnRoleChange, role);
                }
                self.cb.role = Some(role);
            }
            (Some(Action::StopPostgres { .. }), Reply::Stopped { .. }) if !restarting => {
                call(CallbackKind::OnStop, current);
            }
            (Some(Action::Fence), _) if self.pg.as_ref().is_some_and(|p| p.running) => {
                call(CallbackKind::OnStop, current);
            }
            (Some(Action::Promote), _) => {
                call(CallbackKind::OnRoleChange, CallbackRole::Primary);
                self.cb.role = Some(CallbackRole::Primary);
            }
            (Some(Action::Reload | Action::ApplyParameters { .. }), _) => {
                call(CallbackKind::OnReload, current);
            }
            _ => {}
        }
    }

    /// A probe: the role of the server this node found (after a restart
    /// of pgkeel) is the one a later change is measured from.
    pub(super) fn callbacks_on_probe(&mut self, pg: &PgState) {
        if self.cb.role.is_none() {
            self.cb.role = CallbackRole::observed(pg);
        }
    }

    /// Until when this node stands aside from failover races after a
    /// failed `pre_promote`; `None` when it does not (any more) at `now`.
    pub fn stands_aside_until(&self, now: BootInstant) -> Option<BootInstant> {
        self.cb.stand_aside_until.filter(|t| now < *t)
    }

    /// The instant a stand-aside ends, for [`Ha::next_wakeup`].
    pub(super) fn stand_aside_end(&self) -> Option<BootInstant> {
        self.cb.stand_aside_until
    }

    /// The step after a won race: `pre_promote` first when there is one.
    pub(super) fn won_step(&self) -> CandidateStep {
        if self.node.callbacks.pre_promote {
            CandidateStep::PrePromoting
        } else {
            CandidateStep::Promoting
        }
    }

    /// Holding the key with a `pre_promote` script: run it, under a valid
    /// lease, while the server is a running standby. A server already
    /// promoted (by someone else's hand) goes straight to `Promoting`, which
    /// takes it as primary; a stopped one is no candidate.
    pub(super) fn pre_promoting(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if !self.holds_leader(now) {
            return; // `lease_lost` leaves; until then wait for a renewal
        }
        let Some(pg) = self.fresh_pg() else { return };
        if pg.is_primary() {
            self.state = State::Candidate(CandidateStep::Promoting);
        } else if !pg.running {
            self.state = State::Candidate(CandidateStep::Abandoning);
        } else if pg.in_recovery == Some(true) {
            self.emit(now, out, Action::PrePromote);
        }
    }

    /// `pre_promote` answered: promote on `Done`; otherwise give the key
    /// back unpromoted and stand aside for one ttl.
    fn pre_promote_done(&mut self, now: BootInstant, done: &ActionDone) {
        if self.state != State::Candidate(CandidateStep::PrePromoting) {
            return;
        }
        if done.result == Ok(Reply::Done) {
            self.state = State::Candidate(CandidateStep::Promoting);
        } else {
            self.cb.stand_aside_until = Some(now + self.cfg().ttl);
            self.state = State::Candidate(CandidateStep::Abandoning);
        }
    }
}
