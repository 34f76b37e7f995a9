//! The lease rules every state obeys (DESIGN.md, "The leader key and time").
//!
//! The node keeps one lease. Its member key always hangs on it; while it
//! is primary the leader key does too, so one revoke on shutdown removes
//! both and one expiry ends both.

use crate::clock::BootInstant;

use super::actions::{Action, ActionKind, StartAs};
use super::state::{BootstrapStep, State, StoppingState};
use super::Ha;

impl Ha {
    /// Notices a lost lease: `valid_until` reached without a renewal, or a
    /// store view newer than our leader write that no longer shows us
    /// holding the key on our lease (only an `Expire` can do that).
    pub(super) fn check_leadership(&mut self, now: BootInstant) {
        if let Some(valid_until) = self.lease.and_then(|l| l.valid_until) {
            if now >= valid_until {
                self.lease_lost();
                return;
            }
        }
        let (Some(revision), Some(view)) = (self.leader_revision, self.view.as_ref()) else {
            return;
        };
        if view.revision < revision {
            return; // stale: it predates our own write
        }
        let ours = view.leader.as_ref().is_some_and(|k| {
            k.holder == self.node.name && self.lease.is_some_and(|l| l.id == k.lease)
        });
        if ours {
            return;
        }
        if self.inflight.contains_key(&ActionKind::ReleaseLeader) {
            // Most likely our own release, seen before its answer. Either
            // way the key is no longer ours; the lease, which valid_until
            // and keepalives judge, is not in question.
            self.released();
        } else {
            self.lease_lost();
        }
    }

    /// Forgets the lease for good (it is never renewed again after this)
    /// and leaves the states that need the leader key. Fencing follows from
    /// [`Ha::guard`] on the same call.
    pub(super) fn lease_lost(&mut self) {
        self.lease = None;
        self.last_keepalive = None;
        self.renewed_at = None;
        self.published = None;
        if self.leader_revision.take().is_none() {
            return;
        }
        self.status_published = None;
        match self.state {
            // Issue 4: Fenced instead, which also decides how to rejoin.
            State::Primary(_)
            | State::Demoting { .. }
            | State::Candidate(_)
            | State::Bootstrapping(BootstrapStep::StartingPrimary)
            | State::Bootstrapping(BootstrapStep::CreatingRoles) => self.state = State::Replica,
            State::Stopping(StoppingState::AwaitingReplica { .. }) => {
                self.state = State::Stopping(StoppingState::Releasing);
            }
            _ => {}
        }
    }

    /// The fencing rule: a PostgreSQL that may accept writes (or is being
    /// started as a primary or promoted) while this node does not hold a
    /// valid leader lease is stopped now, by PID, without waiting for the
    /// PostgreSQL lane. Uses the cached probe, patched with completed stops
    /// and starts, because a lease deadline cannot wait for a new probe.
    pub(super) fn guard(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        let writable = self.pg.as_ref().is_some_and(|pg| pg.may_be_writable())
            || self.inflight.contains_key(&ActionKind::Promote)
            || self
                .inflight
                .get(&ActionKind::StartPostgres)
                .is_some_and(|f| matches!(f.action, Action::StartPostgres(StartAs::Primary)));
        if self.must_fence || (writable && !self.holds_leader(now)) {
            self.emit(now, out, Action::Fence);
        }
    }

    /// When the next keepalive is due: `keepalive_interval` after the last
    /// one was sent, but no later than halfway to `valid_until`. A lease
    /// keeps the TTL it was granted with, so after an edit that raised
    /// `keepalive_interval` (checked against the new ttl) the interval may
    /// be too long for the lease actually held; renewing by half its
    /// validity keeps it, with time for a retry. `None` before the first.
    pub(super) fn next_keepalive(&self) -> Option<BootInstant> {
        let last = self.last_keepalive?;
        let by_interval = last + self.cfg().keepalive_interval;
        let halfway = match (self.renewed_at, self.lease.and_then(|l| l.valid_until)) {
            (Some(sent), Some(until)) if until > sent => {
                Some(sent + until.saturating_since(sent) / 2)
            }
            _ => None,
        };
        Some(halfway.map_or(by_interval, |h| h.min(by_interval)))
    }

    /// Keeps the lease alive: a grant when there is none (not while
    /// starting, where a lease on the leader key may be adopted instead,
    /// nor while shutting down), a keepalive when [`Ha::next_keepalive`]
    /// says.
    pub(super) fn maintain_lease(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        let cfg = self.cfg();
        match self.lease {
            None => {
                if matches!(
                    self.state,
                    State::Bootstrapping(_)
                        | State::Replica
                        | State::Rejoining(_)
                        | State::Candidate(_)
                        | State::Primary(_)
                ) {
                    self.emit(now, out, Action::GrantLease { ttl: cfg.ttl });
                }
            }
            Some(lease) => {
                if matches!(
                    self.state,
                    State::Stopping(StoppingState::Releasing) | State::Exited
                ) {
                    return;
                }
                let due = self.next_keepalive().is_none_or(|t| now >= t)
                    || self.keepalive_retry.is_some_and(|t| now >= t);
                if due && self.emit(now, out, Action::Keepalive { lease: lease.id }) {
                    self.last_keepalive = Some(now);
                    self.keepalive_retry = None;
                }
            }
        }
    }
}
