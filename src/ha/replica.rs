//! Replica: a standby of whoever holds the leader key; on a vacant key,
//! a candidate if it is the best one (see `candidate`).

use crate::clock::BootInstant;

use super::actions::{Action, StartAs};
use super::state::{BootstrapStep, CandidateStep, State};
use super::view::{DataDir, PgState, Upstream};
use super::Ha;

impl Ha {
    pub(super) fn replica(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if self.race_retry_at.is_some_and(|t| now >= t) {
            // Quorum mode, short of answers last time: ask again on the
            // same view (a race on a stale view loses the key's
            // compare-and-set, nothing worse).
            self.race_retry_at = None;
            self.race_lost_at = None;
        }
        match self.view.as_ref().map(|v| v.leader.is_some()) {
            Some(true) => {
                self.polled = None;
                self.race_retry_at = None;
            }
            Some(false) => {
                self.vacant_since.get_or_insert(now);
            }
            None => {}
        }
        let Some(pg) = self.fresh_pg() else { return };
        if pg.data_dir == DataDir::Empty {
            self.state = State::Bootstrapping(BootstrapStep::AwaitingLeader);
            return;
        }
        if pg.may_be_writable() {
            return; // the fence rule stops it; never reconfigure a writable server
        }
        if self.cfg().pause {
            // Maintenance mode: no race, no start, stop or rewind; a
            // running standby still follows whoever holds the key.
            if let (true, Some(upstream)) = (pg.running, self.leader_upstream()) {
                if pg.following.as_ref() != Some(&upstream) {
                    let slot = self.slot.clone();
                    self.emit(now, out, Action::ConfigureStandby { upstream, slot });
                }
            }
            return;
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
        if !pg.running && pg.was_primary && self.hold_former_primary(now, pg) {
            return;
        }
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

    /// Whether a stopped former primary (fenced, crashed, or rebooted) must
    /// stay stopped for now. It may have written WAL that no other node
    /// has; if another node was promoted, starting it as a standby on its
    /// old timeline would leave a running standby past the fork point,
    /// which nothing rewinds. So it starts only when it knows:
    /// - the leader key names another member whose published timeline is
    ///   above ours: `rejoin_needed` rewinds first (this is not reached);
    /// - the leader key names another member whose timeline is not above
    ///   ours (it won the key but has not promoted or published yet): wait;
    /// - the key names us on a lease we no longer hold, or our lease is not
    ///   valid: the view may be stale (we were cut off): wait for the store;
    /// - the key is vacant and our lease is valid: nobody leads; start as a
    ///   standby with no upstream, and the race (with its lag check against
    ///   the `status` key) decides.
    fn hold_former_primary(&self, now: BootInstant, pg: &PgState) -> bool {
        let lease_valid = self.lease.is_some_and(|l| l.is_valid(now));
        let Some(view) = self.view.as_ref() else {
            return true;
        };
        match view.leader.as_ref() {
            // A switchover's old primary waits for its candidate.
            None => !lease_valid || self.request_bars_me(now),
            Some(l) if l.holder == self.node.name => true,
            Some(_) => match (pg.timeline, self.leader_timeline()) {
                (Some(mine), Some(theirs)) => theirs <= mine,
                _ => true,
            },
        }
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
