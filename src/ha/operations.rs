//! Operations an operator asks of this node: restart, reload,
//! reinitialize (`pgkeelctl restart|reload|reinit`, the REST calls of the
//! same names). The admin service writes the request to
//! `operations/<name>`; the driver passes it into the view once it is due;
//! these rules carry it out and report on it.
//!
//! ```text
//!  admitted? ──no: wait (a candidacy, no fresh probe yet), refuse, or skip (filters)──▶ Reporting
//!     │yes
//!  Announcing (ReportOperation Running; nothing is touched before it is recorded)
//!     ├─ reload ─────▶ Reloading ─Reload─────────────────────────────────────────────────▶ Reporting
//!     ├─ restart ────▶ Stopping ─StopPostgres{Fast}─▶ Starting ─StartPostgres(same role)─▶ Confirming ─running─▶ Reporting
//!     └─ reinitialize ▶ Stopping ─StopPostgres{Immediate}─▶ MovingAside ─MoveDataDirAside─▶ Cloning
//!                                  (the replica rules clone and start it) ─running standby─▶ Reporting
//!  Reporting (ReportOperation Done/Failed/Refused) ─recorded─▶ forgotten
//! ```
//!
//! Why it is shaped so:
//! - **Recorded before acted on.** The `running` mark lands before the
//!   first step, so an agent that restarts mid-operation finds `running`
//!   on an operation it does not know and reports it interrupted instead
//!   of repeating a step (a second move-aside of a fresh clone) blindly.
//! - **A primary keeps its lease through a restart.** The restart's own
//!   start runs from here, before the state rules, so the primary's
//!   crashed-server timer (`primary_start_timeout`, which gives the key
//!   away) never sees the planned stop. `StartPostgres(Primary)` is asked
//!   only while the lease is valid; a lease lost meanwhile fails the
//!   operation and the fence rule applies as always. A start that fails is
//!   reported, and from then on the server is a crashed primary like any
//!   other.
//! - **Failures are reported, recovery stays automatic.** A failed clone or
//!   start fails the operation with PostgreSQL's words; the state rules
//!   keep retrying as they would anyway.
//! - **A replaced or cancelled request is dropped** at once: the view no
//!   longer carries its id (and the report's compare-and-set would fail).

use crate::clock::BootInstant;

use super::actions::{Action, ActionDone, ActionKind, OpOutcome, Reply, StartAs, StopMode};
use super::state::{RejoinStep, State};
use super::view::{DataDir, MemberRole, Operation, OperationKind};
use super::Ha;

/// What the core keeps about operations.
#[derive(Debug, Clone, Default)]
pub(super) struct OpTracker {
    /// The one being carried out.
    run: Option<OpRun>,
    /// The id of the last operation whose end was recorded, so a view that
    /// still shows it unfinished does not start it again.
    finished: Option<String>,
    /// The id of the last operation that made the last probe stale: a
    /// decision on it (`pending_restart`, running or not) rests on a probe
    /// sent after it arrived, not one up to `loop_wait` old.
    probed_for: Option<String>,
}

/// An operation this core is carrying out.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpRun {
    id: String,
    kind: OperationKind,
    step: OpStep,
    /// Admitted as the leader key's holder: a restart then starts the
    /// server as a primary, and only while the lease stays valid.
    primary: bool,
}

/// Where an operation stands (diagram in the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
enum OpStep {
    /// Recording `running` before anything is touched.
    Announcing,
    /// Reload sent (or to send).
    Reloading,
    /// Stopping PostgreSQL.
    Stopping,
    /// Restart: stopped, starting it again in the same role.
    Starting,
    /// Restart: the start answered; a fresh probe must show it running.
    Confirming,
    /// Reinitialize: stopped, moving the data directory aside.
    MovingAside,
    /// Reinitialize: the replica rules clone and start it.
    Cloning,
    /// Finished: recording the outcome.
    Reporting { outcome: OpOutcome, message: String },
}

/// Whether an operation may start now.
enum Admission {
    /// Not yet (no fresh probe, a candidacy running, a lease being adopted).
    Wait,
    /// Start it.
    Go,
    /// End it at once with this outcome.
    End(OpOutcome, String),
}

impl Ha {
    /// The operation rules; run on every pass, after the fence rule and
    /// before the state's own rules.
    pub(super) fn operation(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        let wanted = self.view.as_ref().and_then(|v| v.operation.clone());
        if self
            .ops
            .run
            .as_ref()
            .is_some_and(|run| wanted.as_ref().map(|w| &w.id) != Some(&run.id))
        {
            // Cancelled, replaced, or recorded as ended: nothing to report on.
            self.ops.run = None;
        }
        let Some(op) = wanted else { return };
        if self.ops.finished.as_deref() == Some(op.id.as_str()) {
            return; // ended; the view has not caught up yet
        }
        if self.ops.run.is_none() && !op.running && self.ops.probed_for.as_ref() != Some(&op.id) {
            // Decide on a probe sent from now on: an answer in flight is
            // discarded as stale, and the next probe is due at once.
            self.ops.probed_for = Some(op.id.clone());
            self.pg_epoch += 1;
        }
        if self.ops.run.is_none() {
            let step = if op.running {
                OpStep::Reporting {
                    outcome: OpOutcome::Failed,
                    message: "pgkeel on this member restarted while the operation ran; \
                              check the member and ask again if it is still needed"
                        .into(),
                }
            } else {
                match self.admit(now, &op) {
                    Admission::Wait => return,
                    Admission::Go => OpStep::Announcing,
                    Admission::End(outcome, message) => OpStep::Reporting { outcome, message },
                }
            };
            self.ops.run = Some(OpRun {
                id: op.id.clone(),
                kind: op.kind,
                step,
                primary: matches!(self.state, State::Primary(_)),
            });
        }
        // Each step moves forward; the bound only guards against a bounce.
        for _ in 0..4 {
            let Some(run) = self.ops.run.clone() else {
                return;
            };
            let next = self.op_step(now, &run, out);
            match next {
                Some(step) if step != run.step => {
                    if let Some(r) = self.ops.run.as_mut() {
                        r.step = step;
                    }
                }
                _ => return,
            }
        }
    }

    /// Whether `op` may start now, and if not, why.
    fn admit(&self, now: BootInstant, op: &Operation) -> Admission {
        use Admission::{End, Go, Wait};
        if self.shutdown {
            return End(
                OpOutcome::Refused,
                "pgkeel on this member is shutting down".into(),
            );
        }
        let Some(pg) = self.fresh_pg() else {
            return Wait;
        };
        let primary = self.leader_revision.is_some();
        let state = &self.state;
        match op.kind {
            OperationKind::Reload if !pg.running => End(
                OpOutcome::Done,
                "PostgreSQL is not running; its settings are rewritten before its next start"
                    .into(),
            ),
            OperationKind::Reload => Go,
            OperationKind::Restart { pending_only, role } => {
                let mine = if primary {
                    MemberRole::Primary
                } else {
                    MemberRole::Replica
                };
                if role.is_some_and(|r| r != mine) {
                    let word = |r: MemberRole| match r {
                        MemberRole::Primary => "the primary",
                        _ => "a replica",
                    };
                    let asked = role.map(word).unwrap_or_default();
                    let message = format!(
                        "nothing to do: the restart was asked for {asked}, and this member is {}",
                        word(mine)
                    );
                    return End(OpOutcome::Done, message);
                }
                match state {
                    State::Candidate(_) | State::Starting => return Wait,
                    // Adopting its lease after a restart: wait for the keepalive.
                    State::Primary(_) if !self.holds_leader(now) => return Wait,
                    State::Primary(_) | State::Replica => {}
                    other => return End(OpOutcome::Refused, busy(other.name(), "restart")),
                }
                if !pg.running {
                    return End(
                        OpOutcome::Refused,
                        "PostgreSQL is not running on this member; pgkeel starts it as soon as \
                         the cluster allows"
                            .into(),
                    );
                }
                if pending_only && !pg.pending_restart {
                    return End(OpOutcome::Done, "nothing to do: no restart pending".into());
                }
                // The settings a standby must match change in the order
                // PostgreSQL needs (`settings`): a restart that would take
                // one the wrong way first is held back, with the reason.
                if pg.pending_restart {
                    if let Err(why) = self.may_restart_for_pending_settings() {
                        return End(OpOutcome::Refused, why);
                    }
                }
                Go
            }
            OperationKind::Reinitialize => {
                if primary {
                    return End(
                        OpOutcome::Refused,
                        "cannot reinitialize the primary; switch over first".into(),
                    );
                }
                match state {
                    State::Candidate(_) | State::Starting => return Wait,
                    State::Replica | State::Rejoining(RejoinStep::Failed) => {}
                    other => return End(OpOutcome::Refused, busy(other.name(), "reinitialize")),
                }
                if self.clone_source().is_none() {
                    return End(
                        OpOutcome::Refused,
                        "no running leader to clone from; reinitialize once the cluster has a \
                         running primary"
                            .into(),
                    );
                }
                Go
            }
        }
    }

    /// One step of `run`; returns the next step, if it moves on.
    fn op_step(&mut self, now: BootInstant, run: &OpRun, out: &mut Vec<Action>) -> Option<OpStep> {
        let fail = |message: String| {
            Some(OpStep::Reporting {
                outcome: OpOutcome::Failed,
                message,
            })
        };
        if self.shutdown && !matches!(run.step, OpStep::Reporting { .. }) {
            return fail("pgkeel on this member is shutting down".into());
        }
        let restart = matches!(run.kind, OperationKind::Restart { .. });
        let as_primary = run.primary;
        let still_primary = matches!(self.state, State::Primary(_)) && self.holds_leader(now);
        if restart && as_primary && !still_primary && !self.op_reporting() {
            return fail(
                "lost the leader lease during the restart; another member takes over".into(),
            );
        }
        match &run.step {
            OpStep::Announcing => {
                let message = match run.kind {
                    OperationKind::Reload => "reloading PostgreSQL's settings",
                    OperationKind::Restart { .. } => "restarting PostgreSQL",
                    OperationKind::Reinitialize => {
                        "moving the data directory aside to clone it again"
                    }
                };
                self.report(now, out, run, OpOutcome::Running, message.into());
                None // the report's answer moves on
            }
            OpStep::Reloading => {
                self.emit(now, out, Action::Reload);
                None
            }
            OpStep::Stopping => {
                let pg = self.fresh_pg()?;
                if !pg.running {
                    return Some(if restart {
                        OpStep::Starting
                    } else {
                        OpStep::MovingAside
                    });
                }
                let mode = if restart {
                    StopMode::Fast
                } else {
                    StopMode::Immediate
                };
                self.emit(now, out, Action::StopPostgres { mode });
                None
            }
            OpStep::Starting => {
                let pg = self.fresh_pg()?;
                if pg.running {
                    return Some(OpStep::Confirming);
                }
                let how = if as_primary {
                    StartAs::Primary // only here while the lease is valid (above)
                } else {
                    StartAs::Standby {
                        upstream: self.leader_upstream(),
                        slot: self.slot.clone(),
                    }
                };
                self.emit(now, out, Action::StartPostgres(how));
                None
            }
            OpStep::Confirming => {
                let pg = self.fresh_pg()?;
                if pg.running {
                    self.op_done("PostgreSQL restarted".into())
                } else {
                    fail("PostgreSQL stopped again right after its restart".into())
                }
            }
            OpStep::MovingAside => {
                let pg = self.fresh_pg()?;
                if pg.data_dir == DataDir::Empty {
                    return Some(OpStep::Cloning);
                }
                if pg.running {
                    return Some(OpStep::Stopping);
                }
                self.emit(now, out, Action::MoveDataDirAside);
                None
            }
            OpStep::Cloning => {
                let pg = self.fresh_pg()?;
                let standby = pg.running && pg.in_recovery == Some(true);
                if self.state == State::Replica && standby {
                    self.op_done("cloned again; PostgreSQL runs as a standby".into())
                } else {
                    None
                }
            }
            OpStep::Reporting { outcome, message } => {
                self.report(now, out, run, *outcome, message.clone());
                None
            }
        }
    }

    fn op_done(&self, message: String) -> Option<OpStep> {
        Some(OpStep::Reporting {
            outcome: OpOutcome::Done,
            message,
        })
    }

    fn op_reporting(&self) -> bool {
        self.ops
            .run
            .as_ref()
            .is_some_and(|r| matches!(r.step, OpStep::Reporting { .. }))
    }

    fn report(
        &mut self,
        now: BootInstant,
        out: &mut Vec<Action>,
        run: &OpRun,
        outcome: OpOutcome,
        message: String,
    ) {
        let action = Action::ReportOperation {
            id: run.id.clone(),
            outcome,
            message,
        };
        self.emit(now, out, action);
    }

    /// Whether a restart operation is stopping or starting PostgreSQL: its
    /// stop and start are one restart, not a stop and a start.
    pub(super) fn restart_in_progress(&self) -> bool {
        self.ops.run.as_ref().is_some_and(|run| {
            matches!(run.kind, OperationKind::Restart { .. })
                && matches!(run.step, OpStep::Stopping | OpStep::Starting)
        })
    }

    /// Takes an action's answer into the operation, before the general
    /// bookkeeping does (called only for answers to actions in flight).
    pub(super) fn op_observe(&mut self, done: &ActionDone) {
        let Some(run) = self.ops.run.as_mut() else {
            return;
        };
        let failed = |what: &str, e: &str| OpStep::Reporting {
            outcome: OpOutcome::Failed,
            message: format!("{what}: {e}"),
        };
        let next = match (done.kind, &done.result, &run.step) {
            (ActionKind::ReportOperation, Ok(Reply::Done), OpStep::Announcing) => {
                Some(match run.kind {
                    OperationKind::Reload => OpStep::Reloading,
                    _ => OpStep::Stopping,
                })
            }
            (ActionKind::ReportOperation, Ok(Reply::Done), OpStep::Reporting { .. })
            | (ActionKind::ReportOperation, Ok(Reply::Lost), _) => {
                // Recorded, or the record is no longer this operation's.
                self.ops.finished = Some(run.id.clone());
                self.ops.run = None;
                return;
            }
            (ActionKind::Reload, Ok(_), OpStep::Reloading) => Some(OpStep::Reporting {
                outcome: OpOutcome::Done,
                message: "PostgreSQL reloaded its settings".into(),
            }),
            (ActionKind::Reload, Err(e), OpStep::Reloading) => Some(failed("the reload failed", e)),
            (ActionKind::StopPostgres, Err(e), OpStep::Stopping) => {
                Some(failed("PostgreSQL could not be stopped", e))
            }
            (ActionKind::StartPostgres, Err(e), OpStep::Starting) => Some(failed(
                "PostgreSQL did not start again (pgkeel keeps trying)",
                e,
            )),
            (ActionKind::StartPostgres, Ok(_), OpStep::Starting) => Some(OpStep::Confirming),
            (ActionKind::MoveDataDirAside, Err(e), OpStep::MovingAside) => {
                Some(failed("the data directory could not be moved aside", e))
            }
            (ActionKind::Basebackup, Err(e), OpStep::Cloning) => {
                Some(failed("pg_basebackup failed (pgkeel keeps trying)", e))
            }
            _ => None,
        };
        if let Some(step) = next {
            run.step = step;
        }
    }
}

/// Why an operation cannot run in state `state`.
fn busy(state: &str, what: &str) -> String {
    format!("this member is {state}, not running as a primary or replica; {what} it once it is")
}
