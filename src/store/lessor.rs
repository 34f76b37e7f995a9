//! The lessor: lease deadlines on the Raft leader's clock.
//!
//! Deadlines are never replicated. Only the Raft leader keeps them, in
//! memory, measured on its own monotonic clock; followers never expire a
//! lease on their own. This is safe because of four rules, each enforced here
//! or in `store::leader`:
//!
//! 1. **Leadership change restarts every deadline at a full TTL.** A new
//!    leader cannot know how long the old one had counted, so deadlines are
//!    keyed by the leader term they were set in and are rebuilt lazily, at
//!    `now + ttl`, the first time the new term looks at a lease. Every such
//!    `now` is after the election, which is after any keepalive the old leader
//!    confirmed, so a new deadline is never earlier than an old promise.
//! 2. **A lease is first seen after it was granted.** The leader starts a
//!    new lease's deadline when it first observes the applied `Grant`, which
//!    is after the holder sent it: `deadline >= sent_at + ttl`.
//! 3. **A keepalive is acknowledged only if it is confirmed.** The leader
//!    takes the request, runs `ensure_linearizable()` (a read index: a
//!    quorum confirms this leader's term after the request arrived, and every
//!    committed entry up to that point is applied), and then requires that
//!    the term is unchanged, the lease still exists in the state machine (no
//!    `Expire` or `Revoke` committed by any earlier leader is pending) and its
//!    deadline has not passed. Only then does the deadline move to
//!    `now + ttl`, with `now` taken after the confirmation; the holder's own
//!    `valid_until = sent_at + ttl - safety_margin` is earlier.
//! 4. **Dead is dead.** Once a deadline passes the lease is marked expired
//!    in this term: keepalives and puts that name it are refused from then on,
//!    even before the `Expire` entry commits, and the leader keeps proposing
//!    `Expire` until it does. No lease is ever revived.
//!
//! Keepalives are not written to the Raft log (etcd does not either): rule 1
//! makes that safe, since any leader that did not see a renewal restarts the
//! deadline at a full TTL from a point after that renewal was confirmed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use crate::consensus::types::{LeaseId, LeaseRecord};

/// How often the leader re-proposes an `Expire` that has not committed yet.
pub const EXPIRE_RETRY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    /// Set once the deadline has passed: the lease is dead in this term.
    /// Holds when `Expire` was last proposed.
    expired: Option<Instant>,
}

/// Lease deadlines of one Raft leader term.
#[derive(Debug, Default)]
pub struct Lessor {
    /// The leader term these deadlines belong to; `None` when not leader.
    term: Option<u64>,
    deadlines: HashMap<LeaseId, Deadline>,
}

/// The answer to "may this lease be used now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseCheck {
    Alive,
    Expired,
    NotLeader,
}

impl Lessor {
    /// Tells the lessor whether this node leads, and in which term. A change
    /// drops every deadline; they restart at a full TTL when next looked at.
    pub fn sync_term(&mut self, leader_term: Option<u64>) {
        if self.term != leader_term {
            self.term = leader_term;
            self.deadlines.clear();
        }
    }

    pub fn term(&self) -> Option<u64> {
        self.term
    }

    fn entry(&mut self, lease: LeaseId, ttl: Duration, now: Instant) -> &mut Deadline {
        self.deadlines.entry(lease).or_insert(Deadline {
            at: now + ttl,
            expired: None,
        })
    }

    /// Whether `lease` (with this TTL) is alive at `now`. Marks it dead the
    /// first time its deadline is found passed.
    pub fn check(&mut self, lease: LeaseId, ttl: Duration, now: Instant) -> LeaseCheck {
        if self.term.is_none() {
            return LeaseCheck::NotLeader;
        }
        let d = self.entry(lease, ttl, now);
        if d.expired.is_none() && now > d.at {
            // Mark dead; `due` will propose the Expire. The instant recorded
            // is "never proposed" (one retry period in the past).
            d.expired = Some(now.checked_sub(EXPIRE_RETRY).unwrap_or(now));
        }
        if d.expired.is_some() {
            LeaseCheck::Expired
        } else {
            LeaseCheck::Alive
        }
    }

    /// Renews a confirmed keepalive: the deadline becomes `now + ttl`. Only
    /// call after `check` said `Alive` in the same term, after confirmation.
    pub fn renew(&mut self, lease: LeaseId, ttl: Duration, now: Instant) -> LeaseCheck {
        match self.check(lease, ttl, now) {
            LeaseCheck::Alive => {
                let d = self.entry(lease, ttl, now);
                d.at = d.at.max(now + ttl);
                LeaseCheck::Alive
            }
            other => other,
        }
    }

    /// Brings deadlines in line with the leases the state machine holds and
    /// returns the leases whose `Expire` should be proposed now.
    pub fn due(&mut self, leases: &BTreeMap<LeaseId, LeaseRecord>, now: Instant) -> Vec<LeaseId> {
        if self.term.is_none() {
            return Vec::new();
        }
        self.deadlines.retain(|id, _| leases.contains_key(id));
        let mut due = Vec::new();
        for (id, rec) in leases {
            let ttl = Duration::from_millis(rec.ttl_ms);
            if self.check(*id, ttl, now) == LeaseCheck::Expired {
                let d = self.entry(*id, ttl, now);
                if let Some(last) = d.expired {
                    if now.saturating_duration_since(last) >= EXPIRE_RETRY {
                        d.expired = Some(now);
                        due.push(*id);
                    }
                }
            }
        }
        due
    }

    /// When the lessor next has something to do: the earliest live
    /// deadline, or the next `Expire` retry.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.deadlines
            .values()
            .map(|d| match d.expired {
                None => d.at,
                Some(last) => last + EXPIRE_RETRY,
            })
            .min()
    }

    /// The deadline of `lease` in this term, if the lessor has seen it.
    pub fn deadline(&self, lease: LeaseId) -> Option<Instant> {
        self.deadlines.get(&lease).map(|d| d.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    fn leases(ids: &[LeaseId]) -> BTreeMap<LeaseId, LeaseRecord> {
        ids.iter()
            .map(|id| {
                (
                    *id,
                    LeaseRecord {
                        ttl_ms: TTL.as_millis() as u64,
                        keys: Default::default(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_lease_lives_exactly_its_ttl_from_first_sight() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync_term(Some(3));
        assert!(l.due(&leases(&[1]), t0).is_empty());
        assert_eq!(l.check(1, TTL, t0 + TTL), LeaseCheck::Alive);
        assert_eq!(
            l.due(&leases(&[1]), t0 + TTL + Duration::from_millis(1)),
            vec![1]
        );
        assert_eq!(
            l.check(1, TTL, t0 + TTL + Duration::from_millis(2)),
            LeaseCheck::Expired
        );
    }

    #[test]
    fn expired_is_never_revived_by_a_late_renewal() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync_term(Some(1));
        l.check(7, TTL, t0);
        let late = t0 + TTL + Duration::from_millis(10);
        assert_eq!(l.renew(7, TTL, late), LeaseCheck::Expired);
        assert_eq!(
            l.renew(7, TTL, late + Duration::from_secs(1)),
            LeaseCheck::Expired
        );
        assert_eq!(l.deadline(7), Some(t0 + TTL));
    }

    #[test]
    fn renewal_moves_the_deadline_to_now_plus_ttl() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync_term(Some(1));
        l.check(7, TTL, t0);
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(l.renew(7, TTL, t1), LeaseCheck::Alive);
        assert_eq!(l.deadline(7), Some(t1 + TTL));
        assert!(l
            .due(&leases(&[7]), t0 + TTL + Duration::from_secs(1))
            .is_empty());
    }

    #[test]
    fn a_leadership_change_restarts_a_nearly_expired_lease_at_full_ttl() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync_term(Some(1));
        l.check(7, TTL, t0);
        // Just before expiry, leadership moves away and back in a new term.
        let t1 = t0 + TTL - Duration::from_millis(1);
        l.sync_term(None);
        assert_eq!(l.check(7, TTL, t1), LeaseCheck::NotLeader);
        l.sync_term(Some(2));
        assert!(l.due(&leases(&[7]), t1).is_empty());
        assert_eq!(l.deadline(7), Some(t1 + TTL));
        assert_eq!(
            l.check(7, TTL, t0 + TTL + Duration::from_secs(1)),
            LeaseCheck::Alive
        );
    }

    #[test]
    fn expire_is_reproposed_until_the_lease_is_gone() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync_term(Some(1));
        l.due(&leases(&[1]), t0);
        let t1 = t0 + TTL + Duration::from_millis(1);
        assert_eq!(l.due(&leases(&[1]), t1), vec![1]);
        assert!(l
            .due(&leases(&[1]), t1 + Duration::from_millis(10))
            .is_empty());
        assert_eq!(l.due(&leases(&[1]), t1 + EXPIRE_RETRY), vec![1]);
        // Once the Expire is applied the lease leaves the state machine.
        assert!(l.due(&leases(&[]), t1 + EXPIRE_RETRY * 3).is_empty());
        assert_eq!(l.next_wakeup(), None);
    }

    #[test]
    fn a_follower_checks_nothing() {
        let mut l = Lessor::default();
        assert_eq!(l.check(1, TTL, Instant::now()), LeaseCheck::NotLeader);
        assert!(l.due(&leases(&[1]), Instant::now()).is_empty());
    }
}
