//! Rejoining: a node whose timeline diverged from the leader's gets back
//! as its standby by itself (DESIGN.md, "Failing nodes come back on their
//! own"). States and arrows are in the diagram in [`super`].
//!
//! # Detecting divergence
//! PostgreSQL says so only in its log ("new timeline N forked off current
//! database system timeline N-1 before current recovery point") and keeps
//! retrying; `pg_stat_wal_receiver` just shows no streaming receiver. The
//! core therefore infers it from what it already has, two ways:
//! - **before the first start**: the stopped server last ran as a primary
//!   (pg_control's state, [`PgState::was_primary`]) on a timeline lower
//!   than the one the leader publishes (`MemberInfo::timeline` of the
//!   leader key's holder). It may have written past the fork point; a
//!   rewind when it had not ("no rewind required") costs one pg_rewind
//!   run and avoids starting a diverged server at all.
//!
//! A *running* standby is never judged diverged by these signals. The
//! obvious test ("not streaming, on a lower timeline than the leader
//! publishes") also describes a healthy standby whose primary has just
//! died: its WAL receiver is gone, so its reported timeline falls back to
//! its last restartpoint's, and the dead leader's member key still says
//! "running" until its lease expires. Acting on it stopped and moved aside
//! the only good copy in a test here. A reliable signal (the leader's
//! timeline history, asked for directly) must come first.
//!
//! pg_rewind is retried while it fails (the source may be a leader that has
//! just died and still holds the key); only after [`REWIND_ATTEMPTS`]
//! consecutive failures against the same leader (or with `use_pg_rewind:
//! false`) is the data directory moved aside and re-cloned, when
//! `remove_data_directory_on_rewind_failure` is on; else the server stays
//! stopped, published as "rewind failed".

use crate::clock::BootInstant;

use super::actions::{Action, StartAs, StopMode};
use super::state::{BootstrapStep, RejoinStep, State};
use super::view::{DataDir, PgState, Timeline};
use super::Ha;

/// Consecutive failed pg_rewind runs against one leader before the data
/// directory is moved aside. Retried every `loop_wait`, so with the
/// defaults this outlasts the TTL of a leader that died holding the key.
pub const REWIND_ATTEMPTS: u32 = 10;

impl Ha {
    /// The timeline the leader key's holder publishes, when the holder is
    /// another member whose PostgreSQL is up.
    pub(super) fn leader_timeline(&self) -> Option<Timeline> {
        let view = self.view.as_ref()?;
        let leader = view.leader.as_ref()?;
        if leader.holder == self.node.name {
            return None;
        }
        let member = view.members.get(&leader.holder)?;
        member.state.is_up().then_some(member.timeline).flatten()
    }

    /// Where a replica must go to rejoin, if it must: a stopped former
    /// primary behind the leader's timeline is rewound before it starts.
    pub(super) fn rejoin_needed(&self, pg: &PgState) -> Option<RejoinStep> {
        self.leader_upstream()?;
        if pg.running {
            return None;
        }
        let behind = match (pg.timeline, self.leader_timeline()) {
            (Some(mine), Some(leader)) => mine < leader,
            _ => false,
        };
        (pg.was_primary && behind).then(|| self.rewind_or_fallback())
    }

    /// After a failed pg_rewind: try again later (as a replica, which comes
    /// back here) until [`REWIND_ATTEMPTS`] runs against the same leader have
    /// failed, then fall back.
    pub(super) fn on_rewind_failure(&mut self) -> State {
        let leader = self
            .view
            .as_ref()
            .and_then(|v| v.leader.as_ref())
            .map(|l| l.holder.clone());
        if self.rewind_failures.0 != leader {
            self.rewind_failures = (leader, 0);
        }
        self.rewind_failures.1 += 1;
        if self.rewind_failures.1 >= REWIND_ATTEMPTS {
            State::Rejoining(self.after_rewind_failure())
        } else {
            State::Replica
        }
    }

    /// The step after a stopped server: rewind, or what a failed rewind
    /// leads to when rewinding is off.
    fn rewind_or_fallback(&self) -> RejoinStep {
        if self.node.rejoin.use_pg_rewind {
            RejoinStep::Rewinding
        } else {
            self.after_rewind_failure()
        }
    }

    /// Re-clone, or stop and wait for an operator.
    pub(super) fn after_rewind_failure(&self) -> RejoinStep {
        if self.node.rejoin.remove_data_directory_on_rewind_failure {
            RejoinStep::MovingAside
        } else {
            RejoinStep::Failed
        }
    }

    pub(super) fn rejoining(&mut self, now: BootInstant, step: RejoinStep, out: &mut Vec<Action>) {
        let Some(pg) = self.fresh_pg().cloned() else {
            return;
        };
        if pg.data_dir == DataDir::Empty {
            self.state = State::Bootstrapping(BootstrapStep::AwaitingLeader);
            return;
        }
        if pg.may_be_writable() {
            return; // the fence rule stops it first
        }
        let leader = self.leader_upstream();
        match step {
            RejoinStep::Stopping => {
                if pg.running {
                    let stop = Action::StopPostgres {
                        mode: StopMode::Fast,
                    };
                    self.emit(now, out, stop);
                } else {
                    self.state = State::Rejoining(self.rewind_or_fallback());
                }
            }
            RejoinStep::Rewinding => match leader {
                _ if pg.running => self.state = State::Rejoining(RejoinStep::Stopping),
                // No leader to rewind from (it left meanwhile): a replica
                // again; the rules look once more when one is there.
                None => self.state = State::Replica,
                Some(from) => {
                    self.emit(now, out, Action::Rewind { from });
                }
            },
            RejoinStep::StartingStandby => match leader {
                _ if pg.running => self.state = State::Replica,
                None => self.state = State::Replica,
                Some(upstream) => {
                    let how = StartAs::Standby {
                        upstream: Some(upstream),
                        slot: self.slot.clone(),
                    };
                    self.emit(now, out, Action::StartPostgres(how));
                }
            },
            RejoinStep::MovingAside => {
                if pg.running {
                    self.state = State::Rejoining(RejoinStep::Stopping);
                } else {
                    self.emit(now, out, Action::MoveDataDirAside);
                }
            }
            // Left only when the data directory is emptied (above).
            RejoinStep::Failed => {}
        }
    }
}
