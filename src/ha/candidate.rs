//! Candidate: a standby takes the vacant leader key and promotes under it
//! (DESIGN.md, "Choosing the new primary").
//!
//! A replica that sees the `leader` key vacant in a store view (a clean
//! handover revoked it, or the holder's lease expired) stops streaming from
//! the old primary, and if it may take the key it becomes a candidate on
//! that same event: the race costs no tick. The candidate asks every other
//! member its position over gRPC at that moment (published member keys may
//! be a `loop_wait` old), and takes the key only if no member that answered
//! as a running standby outranks it. The key is a compare-and-set, so of
//! several candidates exactly one wins; a loser goes back to following, and
//! does not race again on a view that predates the winner's write.
//!
//! The states are in the diagram in [`super`].
//!
//! Fence rule: `Promote` is asked for only in `Promoting`, which is
//! entered only on a `Won` answer to our `AcquireLeader` on the lease we
//! hold (or our own write on that lease seen in a view), and only while
//! [`Ha::holds_leader`] is true at that instant. A failed promotion is
//! fenced before the key is given back, since the server may still turn
//! writable.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::clock::BootInstant;

use super::actions::{Action, ActionKind};
use super::state::{CandidateStep, PrimaryState, State};
use super::sync::{quorum_short, sync_allows, SyncBlock};
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
    /// Synchronous mode does not allow it (see [`super::sync`]).
    NotSynchronous(SyncBlock),
    /// Quorum mode: too few members of the synchronous set answered to be
    /// sure this one holds every acknowledged commit.
    QuorumShort {
        /// How many more answers were needed.
        missing: usize,
    },
    /// Another eligible member is further ahead, or as far with a higher
    /// priority, or as far with the same priority and a lower name.
    Outranked {
        /// The better member.
        by: String,
    },
}

/// How long a candidate waits for each member's answer to its position
/// question. A member that does not answer in time is not a contender: a
/// node that cannot answer a question cannot be promoted either.
pub const POSITION_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// A member's PostgreSQL as it answered a candidate (see
/// [`Action::QueryPositions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolledPosition {
    /// A postmaster is alive.
    pub running: bool,
    /// `pg_is_in_recovery()`; `None` when it could not be asked.
    pub in_recovery: Option<bool>,
    /// `pg_last_wal_receive_lsn()`.
    pub received_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()`.
    pub replayed_lsn: Option<Lsn>,
}

impl PolledPosition {
    /// The member's agent answered, but its PostgreSQL is not (yet) a
    /// running standby that knows its position: stopped, or starting.
    fn unsettled(&self) -> bool {
        !self.running || self.in_recovery.is_none()
    }

    /// Its position, if it answered as a running standby.
    fn standby_position(&self) -> Option<Lsn> {
        (self.running && self.in_recovery == Some(true))
            .then(|| standby_position(self.received_lsn, self.replayed_lsn))
            .flatten()
    }
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
/// whose key shows them as `Replica` with tags that allow failover; a
/// member that could never be promoted never holds the others back. Rank:
/// further ahead, then higher `failover_priority`, then lower name.
///
/// `polled` holds what the other members answered when asked over gRPC at
/// this vacancy ([`Action::QueryPositions`]): when given, a contender's
/// position is its answer, and a member that did not answer, or answered
/// as anything but a running standby, is no contender. `None` (before the
/// question, and in table tests of the published-key rule) uses the
/// positions of members whose key shows them up. Synchronous mode (the
/// `sync` set) is not implemented yet and so not checked.
pub fn failover_eligibility(
    me: &str,
    tags: MemberTags,
    pg: &PgState,
    lease_valid: bool,
    view: &ClusterView,
    polled: Option<&BTreeMap<String, PolledPosition>>,
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
    sync_allows(view, me).map_err(Ineligible::NotSynchronous)?;
    let position =
        standby_position(pg.received_lsn, pg.replayed_lsn).ok_or(Ineligible::NoPosition)?;
    // A synchronous standby holds every acknowledged commit; WAL the
    // primary wrote past them (commits still waiting) is no reason to
    // refuse it.
    let status = view.status.filter(|_| !view.config.sync.enabled());
    if let Some(status) = status {
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
                && m.role == MemberRole::Replica
                && m.tags.may_fail_over()
                && sync_allows(view, name).is_ok()
        })
        .filter_map(|(name, m)| {
            let theirs = match polled {
                Some(answers) => answers.get(name)?.standby_position()?,
                None if m.state.is_up() => standby_position(m.received_lsn, m.replayed_lsn)?,
                None => return None,
            };
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
    /// Whether the leader key is vacant in a view newer than our last lost
    /// race.
    pub(super) fn vacant(&self) -> bool {
        self.view.as_ref().is_some_and(|view| {
            view.leader.is_none() && self.race_lost_at.is_none_or(|r| view.revision > r)
        })
    }

    /// Whether a replica should start a candidacy now: the key is vacant
    /// and we are eligible on what we know before asking anyone (our own
    /// state and tags, our lease, our lag behind the `status` key; a member
    /// is outranked only once the others have answered).
    pub(super) fn should_race(&self, now: BootInstant, pg: &PgState) -> bool {
        self.vacant()
            && !self.cfg().pause
            && !self.request_bars_me(now)
            && self.stands_aside_until(now).is_none()
            && self.eligibility(now, pg, Some(&BTreeMap::new())).is_ok()
    }

    /// [`failover_eligibility`] for this node, with the members' answers
    /// (`None`: their published keys).
    pub(super) fn eligibility(
        &self,
        now: BootInstant,
        pg: &PgState,
        polled: Option<&BTreeMap<String, PolledPosition>>,
    ) -> Result<(), Ineligible> {
        let view = self.view.as_ref().ok_or(Ineligible::NoPosition)?;
        let lease_valid = self.lease.is_some_and(|l| l.is_valid(now));
        failover_eligibility(
            &self.node.name,
            self.node.tags,
            pg,
            lease_valid,
            view,
            polled,
        )
    }

    /// Quorum mode: enough members of the synchronous set answered (a
    /// switchover's named candidate is past the old primary's shutdown
    /// checkpoint, which the old primary waited for: no count needed).
    fn quorum_answers(
        &self,
        now: BootInstant,
        polled: Option<&BTreeMap<String, PolledPosition>>,
    ) -> Result<(), Ineligible> {
        let Some(view) = self.view.as_ref() else {
            return Ok(());
        };
        if self.request_names_me(now) {
            return Ok(());
        }
        let answered = polled
            .map(|p| {
                p.iter()
                    .filter(|(_, a)| a.standby_position().is_some())
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        match quorum_short(view, &self.node.name, &answered) {
            0 => {}
            missing => return Err(Ineligible::QuorumShort { missing }),
        }
        // Each answer may hold a commit only it acknowledged: we must be
        // at least as far as every member of the set that answered, even
        // one that may not be promoted itself.
        let mine = self
            .pg
            .as_ref()
            .and_then(|pg| standby_position(pg.received_lsn, pg.replayed_lsn));
        let ahead = view.sync.as_deref().and_then(|key| {
            polled?
                .iter()
                .filter(|(name, _)| key.contains(name))
                .find(|(_, a)| a.standby_position() > mine)
                .map(|(name, _)| name.clone())
        });
        match ahead {
            Some(by) => Err(Ineligible::Outranked { by }),
            None => Ok(()),
        }
    }

    /// The other members' answers to [`Action::QueryPositions`].
    pub(super) fn on_polled(&mut self, answers: BTreeMap<String, PolledPosition>) {
        if self.inflight.remove(&ActionKind::QueryPositions).is_some()
            && self.state == State::Candidate(CandidateStep::Polling)
        {
            self.polled = Some(answers);
        }
    }

    /// A member that may fail over and answered, but not yet as a running
    /// standby, while the vacancy is younger than one ttl.
    fn unsettled_member(
        &self,
        now: BootInstant,
        polled: Option<&BTreeMap<String, PolledPosition>>,
    ) -> Option<String> {
        let view = self.view.as_ref()?;
        let since = self.vacant_since?;
        if now >= since + self.cfg().ttl {
            return None;
        }
        // A switchover's old primary is stopped on purpose.
        let old_leader = self.requested_leader(now);
        polled?
            .iter()
            .filter(|(name, p)| p.unsettled() && old_leader.as_ref() != Some(*name))
            .find(|(name, _)| {
                view.members
                    .get(*name)
                    .is_some_and(|m| m.tags.may_fail_over())
            })
            .map(|(name, _)| name.clone())
    }

    /// The members a candidate asks: every member key but ours.
    fn others(&self) -> Vec<String> {
        self.view
            .as_ref()
            .map(|v| {
                v.members
                    .keys()
                    .filter(|n| **n != self.node.name)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn candidate(
        &mut self,
        now: BootInstant,
        step: CandidateStep,
        out: &mut Vec<Action>,
    ) {
        match step {
            CandidateStep::Polling => self.polling(now, out),
            CandidateStep::Acquiring => self.acquiring(now, out),
            CandidateStep::PrePromoting => self.pre_promoting(now, out),
            CandidateStep::Promoting => self.promoting(now, out),
            CandidateStep::Abandoning => self.abandoning(now, out),
        }
    }

    /// Stops streaming from the old primary, then asks the others where
    /// they are; with their answers (or a failed question: no one answered)
    /// moves on to the race. A leader seen meanwhile ends the candidacy.
    fn polling(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if !self.vacant() || self.cfg().pause {
            self.polled = None;
            self.state = State::Replica;
            return;
        }
        if self.request_names_me(now) && self.polled.is_none() {
            // The operator chose this member: no one else's position is
            // asked (the lag check against `status` still applies).
            self.polled = Some(BTreeMap::new());
        }
        if self.polled.is_some() {
            self.state = State::Candidate(CandidateStep::Acquiring);
            return;
        }
        let Some(pg) = self.fresh_pg() else { return };
        if pg.following.is_some() {
            let slot = self.slot.clone();
            self.emit(now, out, Action::StopReceiving { slot });
            return;
        }
        let members = self.others();
        if members.is_empty() {
            self.polled = Some(BTreeMap::new());
            self.state = State::Candidate(CandidateStep::Acquiring);
            return;
        }
        let ask = Action::QueryPositions {
            members,
            timeout: POSITION_QUERY_TIMEOUT,
        };
        self.emit(now, out, ask);
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
                self.state = State::Candidate(self.won_step());
            }
            // Someone else's, or ours on a lease we lost (it expires with
            // that lease): follow.
            Some((false, _)) => {
                self.polled = None;
                self.state = State::Replica;
            }
            None => {
                let Some(pg) = self.fresh_pg().cloned() else {
                    return;
                };
                let lease = self.lease.map(|l| l.id);
                let polled = self.polled.take();
                let chosen_answered = self.requested_other(now).is_some_and(|c| {
                    polled
                        .as_ref()
                        .and_then(|p| p.get(&c))
                        .is_some_and(|p| p.standby_position().is_some())
                });
                if chosen_answered || self.cfg().pause {
                    // The operator's candidate is up and will take the key.
                    self.race_lost_at = self.view.as_ref().map(|v| v.revision);
                    self.state = State::Replica;
                    return;
                }
                if self.unsettled_member(now, polled.as_ref()).is_some() {
                    // A member whose agent answers but whose PostgreSQL is
                    // still starting may be further ahead than us: ask
                    // again on the next view (members publish every
                    // loop_wait), for at most one ttl after the vacancy.
                    self.race_lost_at = self.view.as_ref().map(|v| v.revision);
                    self.state = State::Replica;
                    return;
                }
                let eligible = self
                    .eligibility(now, &pg, polled.as_ref())
                    .and_then(|()| self.quorum_answers(now, polled.as_ref()));
                // Answers missing: they may come later without any change
                // in the store, so a newer view is not all we wait for.
                self.race_retry_at = matches!(eligible, Err(Ineligible::QuorumShort { .. }))
                    .then(|| now + self.cfg().loop_wait);
                match (eligible, lease) {
                    (Ok(()), Some(lease)) => {
                        self.polled = polled;
                        self.emit(now, out, Action::AcquireLeader { lease });
                    }
                    _ => {
                        // Outranked (or no longer eligible): not again on
                        // this view. The next change (members publish every
                        // loop_wait) asks again, in case the better member
                        // never takes the key.
                        self.race_lost_at = self.view.as_ref().map(|v| v.revision);
                        self.state = State::Replica;
                    }
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
        let Some(pg) = self.fresh_pg().cloned() else {
            return;
        };
        if pg.is_primary() {
            self.state = State::Primary(PrimaryState {
                checkpoint_pending: true,
            });
        } else if !pg.running {
            self.state = State::Candidate(CandidateStep::Abandoning);
        } else if pg.in_recovery == Some(true)
            && !self.claim_sync_before_promote(now, out)
            && !self.strict_before_promote(now, &pg, out)
        {
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
        if let State::Demoting { .. } = self.state {
            // Handed over: the new primary reports the request done.
            self.handed_over = self.due_request().map(|r| r.id.clone());
            self.state = State::Replica;
        }
        if self.state == State::Candidate(CandidateStep::Abandoning) {
            self.state = State::Replica;
        }
    }
}
