//! Candidate: a standby takes the vacant leader key and promotes under it
//! (DESIGN.md, "Choosing the new primary").
//!
//! A replica that sees the `leader` key vacant in a store view (a clean
//! handover revoked it, or the holder's lease expired) and is the best
//! eligible standby becomes a candidate on that same event: the race costs
//! no tick. The key is a compare-and-set, so of several candidates exactly
//! one wins; a loser goes back to following, and does not race again on a
//! view that predates the winner's write.
//!
//! The states are in the diagram in [`super`].
//!
//! Fence rule: `Promote` is asked for only in `Promoting`, which is
//! entered only on a `Won` answer to our `AcquireLeader` on the lease we
//! hold (or our own write on that lease seen in a view), and only while
//! [`Ha::holds_leader`] is true at that instant. A failed promotion is
//! fenced before the key is given back, since the server may still turn
//! writable.

use crate::clock::BootInstant;

use super::actions::{Action, ActionKind};
use super::state::{CandidateStep, PrimaryState, State};
use super::view::{ClusterView, Lsn, MemberRole, MemberTags, PgState};
use super::Ha;

/// Why this node may not take the vacant leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// PostgreSQL is not a running, confirmed standby.
    NotAStandby,
    /// Tagged `nofailover`, or `failover_priority` 0.
    NoFailover,
    /// Our lease is not valid: the leader key could not hang on it.
    NoLease,
    /// The standby reports no WAL position to compare.
    NoPosition,
    /// Further than `maximum_lag_on_failover` behind the `status` key.
    Lagging {
        /// Bytes of WAL behind the last known primary position.
        lag: u64,
    },
    /// Another eligible member is further ahead, or as far with a higher
    /// priority, or as far with the same priority and a lower name.
    Outranked {
        /// The better member.
        by: String,
    },
}

/// A standby's WAL position: the further of received and replayed (the
/// received one, normally; the replayed one when nothing was received
/// since the server started, or a restarted receiver reports less).
pub fn standby_position(received: Option<Lsn>, replayed: Option<Lsn>) -> Option<Lsn> {
    received.max(replayed)
}

/// Whether this node (`me`, with `tags`, its PostgreSQL as `pg`) may take
/// the vacant leader key now. Pure; the caller checks that the key is
/// vacant.
///
/// Eligible when: `pg` is a running standby (`in_recovery == Some(true)`);
/// the tags allow failover (not `nofailover`, `failover_priority` > 0); our
/// lease is valid (the key must hang on it); our position is within
/// `maximum_lag_on_failover` of the `status` key's lsn (when there is a
/// `status` key); and no other member outranks us. Contenders are members
/// whose key shows them up (`Running`/`Streaming`) as `Replica`, with tags
/// that allow failover and a published position; a member that could
/// never be promoted never holds the others back. Rank: further ahead,
/// then higher `failover_priority`, then lower name.
///
/// The others' positions come from their published member keys, which may
/// be up to a `loop_wait` old (fresh during a handover, when standbys
/// publish every new position). DESIGN.md asks to query each member over
/// gRPC at this moment instead (issue 4); until then two nodes may both
/// believe they are ahead, and the compare-and-set on the key still lets
/// only one of them win. Synchronous mode (the `sync` set) is not
/// implemented yet and so not checked.
pub fn failover_eligibility(
    me: &str,
    tags: MemberTags,
    pg: &PgState,
    lease_valid: bool,
    view: &ClusterView,
) -> Result<(), Ineligible> {
    if !(pg.running && pg.in_recovery == Some(true)) {
        return Err(Ineligible::NotAStandby);
    }
    if !tags.may_fail_over() {
        return Err(Ineligible::NoFailover);
    }
    if !lease_valid {
        return Err(Ineligible::NoLease);
    }
    let position =
        standby_position(pg.received_lsn, pg.replayed_lsn).ok_or(Ineligible::NoPosition)?;
    if let Some(status) = view.status {
        let lag = status.lsn.0.saturating_sub(position.0);
        if lag > view.config.maximum_lag_on_failover {
            return Err(Ineligible::Lagging { lag });
        }
    }
    let mine = (position, tags.failover_priority, me);
    let better = view
        .members
        .iter()
        .filter(|(name, m)| {
            name.as_str() != me
                && m.state.is_up()
                && m.role == MemberRole::Replica
                && m.tags.may_fail_over()
        })
        .filter_map(|(name, m)| {
            let theirs = standby_position(m.received_lsn, m.replayed_lsn)?;
            Some((theirs, m.tags.failover_priority, name.as_str()))
        })
        .find(|theirs| outranks(*theirs, mine));
    match better {
        Some((_, _, name)) => Err(Ineligible::Outranked {
            by: name.to_string(),
        }),
        None => Ok(()),
    }
}

/// Whether contender `a` ranks before `b`: further ahead, then higher
/// priority, then lower name.
fn outranks(a: (Lsn, i64, &str), b: (Lsn, i64, &str)) -> bool {
    let (a_lsn, a_prio, a_name) = a;
    let (b_lsn, b_prio, b_name) = b;
    a_lsn
        .cmp(&b_lsn)
        .then(a_prio.cmp(&b_prio))
        .then(b_name.cmp(a_name))
        .is_gt()
}

impl Ha {
    /// Whether a replica should race for the leader key now: it is vacant
    /// in a view newer than our last lost race, and we are eligible.
    pub(super) fn should_race(&self, now: BootInstant, pg: &PgState) -> bool {
        let Some(view) = self.view.as_ref() else {
            return false;
        };
        let newer = self.race_lost_at.is_none_or(|r| view.revision > r);
        view.leader.is_none() && newer && self.eligibility(now, pg).is_ok()
    }

    /// [`failover_eligibility`] for this node.
    pub(super) fn eligibility(&self, now: BootInstant, pg: &PgState) -> Result<(), Ineligible> {
        let view = self.view.as_ref().ok_or(Ineligible::NoPosition)?;
        let lease_valid = self.lease.is_some_and(|l| l.is_valid(now));
        failover_eligibility(&self.node.name, self.node.tags, pg, lease_valid, view)
    }

    pub(super) fn candidate(
        &mut self,
        now: BootInstant,
        step: CandidateStep,
        out: &mut Vec<Action>,
    ) {
        match step {
            CandidateStep::Acquiring => self.acquiring(now, out),
            CandidateStep::Promoting => self.promoting(now, out),
            CandidateStep::Abandoning => self.abandoning(now, out),
        }
    }

    /// Asks for the key while it is vacant and we are still eligible; the
    /// answer (`Won`, `Lost`) moves on. Re-checked whenever no
    /// `AcquireLeader` is out (after a failed one, while it backs off).
    fn acquiring(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if self.inflight.contains_key(&ActionKind::AcquireLeader) {
            return;
        }
        let Some(view) = self.view.as_ref() else {
            return;
        };
        let leader = view.leader.as_ref().map(|l| {
            let ours = l.holder == self.node.name && self.lease.is_some_and(|x| x.id == l.lease);
            (ours, l.mod_revision)
        });
        match leader {
            // Our write, seen although its answer failed (a timeout after
            // the store applied it): the key is ours on our lease.
            Some((true, revision)) => {
                self.leader_revision = Some(revision);
                self.state = State::Candidate(CandidateStep::Promoting);
            }
            // Someone else's, or ours on a lease we lost (it expires with
            // that lease): follow.
            Some((false, _)) => self.state = State::Replica,
            None => {
                let Some(pg) = self.fresh_pg().cloned() else {
                    return;
                };
                let lease = self.lease.map(|l| l.id);
                match (self.eligibility(now, &pg), lease) {
                    (Ok(()), Some(lease)) => {
                        self.emit(now, out, Action::AcquireLeader { lease });
                    }
                    _ => self.state = State::Replica,
                }
            }
        }
    }

    /// Holding the key: promote the standby. A standby that is no longer
    /// running is no candidate: give the key back.
    fn promoting(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        // Leaving on a lost lease is `lease_lost`'s job; until a keepalive
        // renews it, an invalid lease only means wait.
        if !self.holds_leader(now) {
            return;
        }
        let Some(pg) = self.fresh_pg() else { return };
        if pg.is_primary() {
            self.state = State::Primary(PrimaryState {
                checkpoint_pending: true,
            });
        } else if !pg.running {
            self.state = State::Candidate(CandidateStep::Abandoning);
        } else if pg.in_recovery == Some(true) {
            self.emit(now, out, Action::Promote);
        }
        // Running, recovery state unknown: the next probe tells.
    }

    /// After a failed promotion: the server was fenced (the guard sends
    /// the fence while `must_fence` is set), so it accepts no writes; now
    /// give the key back, keeping the lease and the member key on it.
    fn abandoning(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if self.must_fence || self.inflight.contains_key(&ActionKind::Fence) {
            return;
        }
        match (self.lease, self.leader_revision) {
            (Some(lease), Some(revision)) => {
                let release = Action::ReleaseLeader {
                    lease: lease.id,
                    revision,
                };
                self.emit(now, out, release);
            }
            _ => self.state = State::Replica,
        }
    }

    /// The key was given back (or a view shows it no longer ours while
    /// the release is out): not a leader any more, the lease stays.
    pub(super) fn released(&mut self) {
        self.leader_revision = None;
        self.status_published = None;
        if self.state == State::Candidate(CandidateStep::Abandoning) {
            self.state = State::Replica;
        }
    }
}
