//! Replica: a standby of whoever holds the leader key; on a vacant key,
//! a candidate if it is the best one (see `candidate`).

use crate::clock::BootInstant;

use super::actions::{Action, StartAs};
use super::state::{BootstrapStep, CandidateStep, State};
use super::view::{DataDir, Upstream};
use super::Ha;

impl Ha {
    pub(super) fn replica(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if self.view.as_ref().is_some_and(|v| v.leader.is_some()) {
            self.polled = None;
        }
        let Some(pg) = self.fresh_pg() else { return };
        if pg.data_dir == DataDir::Empty {
            self.state = State::Bootstrapping(BootstrapStep::AwaitingLeader);
            return;
        }
        if pg.may_be_writable() {
            return; // the fence rule stops it; never reconfigure a writable server
        }
        if self.should_race(now, pg) {
            self.state = State::Candidate(CandidateStep::Polling);
            return;
        }
        if self.view.as_ref().is_some_and(|v| v.leader.is_none())
            && pg.running
            && pg.following.is_some()
        {
            // The old primary is gone: stop streaming from it, so the
            // position this standby reports to candidates stops moving.
            // The next leader is followed by the rule below.
            let slot = self.slot.clone();
            self.emit(now, out, Action::StopReceiving { slot });
            return;
        }
        if let Some(step) = self.rejoin_needed(pg) {
            self.state = State::Rejoining(step);
            return;
        }
        let want = self.leader_upstream();
        let slot = self.slot.clone();
        if !pg.running {
            // With no leader yet, a standby with no upstream: readable,
            // never writable, ready to follow the next leader by reload.
            let how = StartAs::Standby {
                upstream: want,
                slot,
            };
            self.emit(now, out, Action::StartPostgres(how));
        } else if let Some(upstream) = want {
            if pg.following.as_ref() != Some(&upstream) {
                self.emit(now, out, Action::ConfigureStandby { upstream, slot });
            }
        }
        // A vacant leader key we may not race for (or a holder whose member
        // key we cannot see) changes nothing here: the standby keeps what
        // it follows until someone takes the key.
    }

    /// The upstream the leader key designates: its holder, if that is not
    /// us and its member key says where its PostgreSQL listens.
    pub(super) fn leader_upstream(&self) -> Option<Upstream> {
        let view = self.view.as_ref()?;
        let leader = view.leader.as_ref()?;
        if leader.holder == self.node.name {
            return None; // our own key on a lease we no longer trust
        }
        let member = view.members.get(&leader.holder)?;
        if member.pg_address.trim().is_empty() {
            return None;
        }
        Some(Upstream {
            member: leader.holder.clone(),
            pg_address: member.pg_address.clone(),
        })
    }
}
