//! Switchover and manual failover: an operator's request in the `failover`
//! key, carried out by the HA loops (DESIGN.md: nothing but the holder's
//! own release or an `Expire` ends a live lease, so a request is always
//! carried out *by the holder*, or waits for the key to fall vacant).
//!
//! The holder of the leader key acts on a due request that names it (a
//! switchover's `leader`) or names another member as candidate (a
//! failover while it leads):
//!
//! ```text
//!  Primary ─request, target healthy─▶ Demoting{Checkpointing} ─▶ Stopping (fast)
//!     │                                   ─stopped cleanly─▶ AwaitingCandidate
//!     │ target not healthy:                 ─target received the shutdown checkpoint─▶ Releasing
//!     │ FinishFailover(failed)              ─ReleaseLeader done─▶ Replica (held stopped until
//!     ▼                                      the new primary shows its timeline, then rejoins)
//!  Primary            AwaitingCandidate past handover_timeout, or an unclean stop:
//!                     FinishFailover(failed), back to Primary (restarted in place)
//! ```
//!
//! While the key is vacant and the request is due, for at most one ttl
//! after the vacancy was first seen: the request's old `leader` does not
//! race; a named candidate races without asking the others (the operator
//! chose it; it still must be a running standby within
//! `maximum_lag_on_failover`); every other member races only if the named
//! candidate did not answer its position question as a running standby.
//! The member that wins the key for the request writes `done` once it runs
//! read-write.
//!
//! Pause mode holds requests back (the admin service refuses them while
//! paused; one written before the pause waits).

use crate::clock::BootInstant;

use super::actions::{Action, StopMode};
use super::candidate::standby_position;
use super::state::{DemotingStep, PrimaryState, State};
use super::view::{ClusterView, FailoverKind, FailoverRequest, Lsn, MemberRole, PgState};
use super::Ha;

/// What a request asks of the member that holds the leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ForHolder {
    /// Hand the key over (to the named candidate, or the best replica).
    HandOver,
    /// Leadership already moved as asked: report it done.
    Done,
    /// Leadership moved otherwise: report it failed with this sentence.
    Failed(String),
}

/// Why `name` cannot be handed the leader key by a primary at `primary`:
/// it must be a member whose key shows a running standby, with tags that
/// allow failover, that synchronous mode allows (in the `sync` set),
/// within `maximum_lag_on_failover` of `primary`. `Ok`
/// gives its position and priority (for ranking). The admin service asks
/// the same before it stores a request, so a refusal comes at once.
pub fn candidate_problem(
    view: &ClusterView,
    name: &str,
    primary: Lsn,
) -> Result<(Lsn, i64), String> {
    let m = view
        .members
        .get(name)
        .ok_or_else(|| format!("{name} is not a member of the cluster"))?;
    if m.role != MemberRole::Replica || !m.state.is_up() {
        return Err(format!(
            "{name} is not a running standby (it is {})",
            m.state.as_str()
        ));
    }
    if !m.tags.may_fail_over() {
        return Err(format!(
            "{name} is tagged nofailover (or failover_priority 0)"
        ));
    }
    if let Err(why) = super::sync::sync_allows(view, name) {
        return Err(format!(
            "candidate is not a synchronous standby: {name} — {why}"
        ));
    }
    let theirs = standby_position(m.received_lsn, m.replayed_lsn)
        .ok_or_else(|| format!("{name} reports no WAL position"))?;
    let lag = primary.0.saturating_sub(theirs.0);
    let max_lag = view.config.maximum_lag_on_failover;
    if lag > max_lag {
        return Err(format!(
            "{name} lags {lag} bytes behind the primary, more than maximum_lag_on_failover ({max_lag})"
        ));
    }
    Ok((theirs, m.tags.failover_priority))
}

/// Why no member but `holder` may be handed the key by a primary at
/// `primary`: each member's reason, so an operator sees what to fix.
pub fn no_candidate(view: &ClusterView, holder: &str, primary: Lsn) -> String {
    let reasons: Vec<String> = view
        .members
        .keys()
        .filter(|n| n.as_str() != holder)
        .filter_map(|n| candidate_problem(view, n, primary).err())
        .collect();
    if reasons.is_empty() {
        "no standby to switch over to: the cluster has no other member".to_string()
    } else {
        format!("no standby may take over: {}", reasons.join("; "))
    }
}

impl Ha {
    /// The due, pending request this node has not finished with, unless
    /// paused.
    pub(super) fn due_request(&self) -> Option<&FailoverRequest> {
        if self.cfg().pause {
            return None;
        }
        self.view
            .as_ref()?
            .failover
            .as_ref()
            .filter(|r| r.due && self.finished_request.as_deref() != Some(r.id.as_str()))
    }

    /// The due request while it binds the race for a vacant key: from
    /// the first view that shows the key vacant, for one ttl. After that
    /// the cluster fails over as if there were no request (a named
    /// candidate that never takes the key must not leave it leaderless).
    pub(super) fn binding_request(&self, now: BootInstant) -> Option<&FailoverRequest> {
        let ttl = self.cfg().ttl;
        if self.vacant_since.is_some_and(|since| now >= since + ttl) {
            return None;
        }
        self.due_request()
    }

    /// Whether the binding request keeps this node out of the race: it is
    /// the switchover's old leader, or another member is the named
    /// candidate (whether that one answered is checked once polled).
    pub(super) fn request_bars_me(&self, now: BootInstant) -> bool {
        let me = self.node.name.as_str();
        self.binding_request(now)
            .is_some_and(|r| r.leader.as_deref() == Some(me))
    }

    /// Whether the binding request names this node as the candidate.
    pub(super) fn request_names_me(&self, now: BootInstant) -> bool {
        let me = self.node.name.as_str();
        self.binding_request(now)
            .is_some_and(|r| r.candidate.as_deref() == Some(me))
    }

    /// The candidate the binding request names, if it is not this node.
    pub(super) fn requested_other(&self, now: BootInstant) -> Option<String> {
        let me = self.node.name.as_str();
        self.binding_request(now)
            .and_then(|r| r.candidate.clone())
            .filter(|c| c != me)
    }

    /// The old leader of the binding request: the others neither wait for
    /// it nor count it as a contender.
    pub(super) fn requested_leader(&self, now: BootInstant) -> Option<String> {
        self.binding_request(now).and_then(|r| r.leader.clone())
    }

    /// What the due request asks of this node, which holds the key.
    fn for_holder(&self, r: &FailoverRequest) -> ForHolder {
        let me = self.node.name.as_str();
        let won_for_it = self.promoted_for.as_deref() == Some(r.id.as_str());
        if self.handed_over.as_deref() == Some(r.id.as_str()) {
            return ForHolder::Failed(format!(
                "no member took the leader key from {me} within ttl; {me} leads again"
            ));
        }
        match r.kind {
            FailoverKind::Switchover if r.leader.as_deref() == Some(me) => ForHolder::HandOver,
            FailoverKind::Failover if r.candidate.as_deref() != Some(me) => ForHolder::HandOver,
            _ if won_for_it => ForHolder::Done,
            FailoverKind::Switchover => ForHolder::Failed(format!(
                "{me} became the primary before the switchover from {} happened",
                r.leader.as_deref().unwrap_or("?")
            )),
            FailoverKind::Failover => ForHolder::Done,
        }
    }

    /// Called by the primary rule with a running read-write server and a
    /// valid lease: acts on a due request. Returns whether it took over
    /// this pass (the state changed, or an outcome is being written).
    pub(super) fn primary_request(
        &mut self,
        now: BootInstant,
        pg: &PgState,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(r) = self.due_request().cloned() else {
            return false;
        };
        let me = self.node.name.clone();
        let (ok, message) = match self.for_holder(&r) {
            ForHolder::HandOver => match self.handover_target(pg, &r) {
                Ok(to) => {
                    self.state = State::Demoting {
                        to,
                        step: DemotingStep::Checkpointing,
                    };
                    return true;
                }
                Err(why) => (false, why),
            },
            ForHolder::Done => (true, format!("{me} is the new primary")),
            ForHolder::Failed(why) => (false, why),
        };
        let finish = Action::FinishFailover {
            id: r.id,
            ok,
            message,
        };
        self.emit(now, out, finish);
        false
    }

    /// The member to hand over to: the named candidate if it is a healthy
    /// standby within `maximum_lag_on_failover` of our position, else the
    /// best such member. `Err` says why there is none.
    fn handover_target(&self, pg: &PgState, r: &FailoverRequest) -> Result<String, String> {
        let view = self.view.as_ref().ok_or("no view of the store yet")?;
        let me = self.node.name.as_str();
        let ours = pg.wal_lsn.unwrap_or_default();
        let check = |name: &str| candidate_problem(view, name, ours).map(|(l, p)| (l.0, p));
        if let Some(c) = r.candidate.as_deref() {
            return check(c).map(|_| c.to_string());
        }
        view.members
            .keys()
            .filter(|n| n.as_str() != me)
            .filter_map(|n| check(n).ok().map(|(lsn, prio)| (lsn, prio, n)))
            // Furthest ahead, then highest priority, then lowest name.
            .max_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(a.2)))
            .map(|(_, _, n)| n.clone())
            .ok_or_else(|| no_candidate(view, me, ours))
    }

    /// The handover's own rules (see the module docs). A lost lease leaves
    /// this state through `lease_lost`; the fence rule covers the server.
    pub(super) fn demoting(
        &mut self,
        now: BootInstant,
        to: String,
        step: DemotingStep,
        out: &mut Vec<Action>,
    ) {
        let Some(revision) = self.leader_revision else {
            self.state = State::Replica;
            return;
        };
        if let Some(why) = self.handover_failure.take() {
            self.abort_handover(now, why, out);
            return;
        }
        match step {
            DemotingStep::Checkpointing => {
                self.emit(now, out, Action::Checkpoint);
            }
            DemotingStep::Stopping => {
                let stop = Action::StopPostgres {
                    mode: StopMode::Fast,
                };
                self.emit(now, out, stop);
            }
            DemotingStep::AwaitingCandidate {
                checkpoint,
                deadline,
            } => {
                let received = self.view.as_ref().is_some_and(|v| {
                    v.members
                        .get(&to)
                        .is_some_and(|m| m.received_lsn.is_some_and(|l| l > checkpoint))
                });
                if received {
                    self.state = State::Demoting {
                        to,
                        step: DemotingStep::Releasing,
                    };
                } else if now >= deadline {
                    let why = format!(
                        "{to} did not receive the shutdown checkpoint within handover_timeout; {} runs as primary again",
                        self.node.name
                    );
                    self.abort_handover(now, why, out);
                }
            }
            DemotingStep::Releasing => {
                if let Some(lease) = self.lease {
                    let release = Action::ReleaseLeader {
                        lease: lease.id,
                        revision,
                    };
                    self.emit(now, out, release);
                }
            }
        }
    }

    /// The handover cannot go on: report why and lead again (the server is
    /// restarted in place by the primary rule while the lease holds).
    pub(super) fn abort_handover(&mut self, now: BootInstant, why: String, out: &mut Vec<Action>) {
        self.state = State::Primary(PrimaryState::default());
        if let Some(r) = self.due_request().cloned() {
            let finish = Action::FinishFailover {
                id: r.id,
                ok: false,
                message: why,
            };
            self.emit(now, out, finish);
        }
    }

    /// A completed CHECKPOINT or stop while demoting moves the handover on.
    pub(super) fn demote_progress(
        &mut self,
        now: BootInstant,
        finished_stop: Option<Option<super::Lsn>>,
    ) {
        let State::Demoting { to, step } = self.state.clone() else {
            return;
        };
        let next = match (step, finished_stop) {
            (DemotingStep::Checkpointing, None) => DemotingStep::Stopping,
            (DemotingStep::Stopping, Some(Some(checkpoint))) => DemotingStep::AwaitingCandidate {
                checkpoint,
                deadline: now + self.cfg().handover_timeout,
            },
            // Stopped, but not cleanly: the candidate cannot be known to
            // have every write. The next pass restarts it as primary.
            (DemotingStep::Stopping, Some(None)) => {
                self.handover_failure = Some(format!(
                    "{} did not shut down cleanly; it runs as primary again",
                    self.node.name
                ));
                return;
            }
            _ => return,
        };
        self.state = State::Demoting { to, step: next };
    }
}
