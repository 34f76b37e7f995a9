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
//! - **while running**: a standby that is not streaming while the leader
//!   is up, on a timeline lower than the leader's, for
//!   [`DIVERGED_PROBES`] consecutive fresh probes. A standby that merely
//!   reconnects after a failover streams (and so reports the new timeline)
//!   within the first probe interval; if it was not diverged after all,
//!   pg_rewind says so and changes nothing.
//!
//! A failed pg_rewind (or `use_pg_rewind: false`) moves the data directory
//! aside and re-clones when `remove_data_directory_on_rewind_failure` is
//! on, else leaves the server stopped, published as "rewind failed".

use crate::clock::BootInstant;

use super::actions::{Action, StartAs, StopMode};
use super::state::{BootstrapStep, RejoinStep, State};
use super::view::{DataDir, PgState, Timeline};
use super::Ha;

/// Consecutive probes a running standby must look diverged before it is
/// stopped and rewound.
pub const DIVERGED_PROBES: u32 = 2;

impl Ha {
    /// The timeline the leader key's holder publishes, when the holder is
    /// another member whose PostgreSQL is up.
    fn leader_timeline(&self) -> Option<Timeline> {
        let view = self.view.as_ref()?;
        let leader = view.leader.as_ref()?;
        if leader.holder == self.node.name {
            return None;
        }
        let member = view.members.get(&leader.holder)?;
        member.state.is_up().then_some(member.timeline).flatten()
    }

    /// Whether `pg` is a running standby that cannot be streaming from the
    /// leader because it is on an older timeline.
    fn looks_diverged(&self, pg: &PgState) -> bool {
        let behind = match (pg.timeline, self.leader_timeline()) {
            (Some(mine), Some(leader)) => mine < leader,
            _ => false,
        };
        self.state == State::Replica
            && pg.running
            && pg.in_recovery == Some(true)
            && !pg.streaming
            && behind
    }

    /// Counts consecutive fresh probes that look diverged.
    pub(super) fn count_divergence(&mut self, pg: &PgState) {
        if self.looks_diverged(pg) {
            self.diverged_probes = self.diverged_probes.saturating_add(1);
        } else {
            self.diverged_probes = 0;
        }
    }

    /// Where a replica must go to rejoin, if it must: a stopped former
    /// primary behind the leader's timeline is rewound before it starts; a
    /// running standby seen diverged is stopped first.
    pub(super) fn rejoin_needed(&self, pg: &PgState) -> Option<RejoinStep> {
        self.leader_upstream()?;
        if !pg.running {
            let behind = match (pg.timeline, self.leader_timeline()) {
                (Some(mine), Some(leader)) => mine < leader,
                _ => false,
            };
            return (pg.was_primary && behind).then(|| self.rewind_or_fallback());
        }
        (self.diverged_probes >= DIVERGED_PROBES && self.looks_diverged(pg))
            .then_some(RejoinStep::Stopping)
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
        self.diverged_probes = 0;
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
