//! A snapshot of this data node for the REST API and `/metrics`.
//!
//! The HA agent publishes a [`NodeStatus`] into a `tokio::sync::watch`
//! channel after every call of the core ([`StatusPublisher::publish`]); the
//! REST handlers read the latest one without waiting on the HA loop.
//!
//! ```text
//!  agent loop: ha.handle(now, event) ─▶ StatusPublisher::publish ─▶ watch<NodeStatus>
//!                                                                        │ borrow()
//!  REST request ─▶ NodeStatus + BootClock::now() ─▶ 200 / 503 ◀──────────┘
//! ```
//!
//! The snapshot keeps the lease's `valid_until`, never a "lease valid"
//! boolean: a handler judges the lease at request time, so a primary whose
//! lease runs out answers 503 at that instant even if the HA loop is stuck.

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::BootInstant;
use crate::ha::{ActionKind, CandidateStep, ClusterView, Ha, PgState, State};

/// This node as the HA loop last saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStatus {
    /// When the agent last ran the core: the HA loop's heartbeat. `None`
    /// before its first pass. `/liveness` fails when it grows old.
    pub heartbeat: Option<BootInstant>,
    /// [`State::name`] of the wanted role (`starting`, `replica`,
    /// `candidate`, `primary`, `rejoining`, `stopping`, ...).
    pub ha_state: &'static str,
    /// The core believes it holds the leader key.
    pub holds_leader_key: bool,
    /// The last instant this node may trust its lease (`Lease::valid_until`
    /// by its own CLOCK_BOOTTIME). `None` without a lease or while an
    /// adopted lease is unconfirmed.
    pub lease_valid_until: Option<BootInstant>,
    /// The core is taking this node's PostgreSQL out of service: a fence or
    /// a stop is in flight, a failed promotion is being abandoned, or the
    /// node is shutting down. A primary answers 503 from this moment on.
    pub stepping_down: bool,
    /// The observed PostgreSQL (the core's last probe); `None` before it.
    pub pg: Option<PgState>,
    /// The last store view the core acted on; `None` before it.
    pub view: Option<ClusterView>,
    /// Promotions of this node that completed (candidate → primary).
    pub failovers: u64,
    /// Planned handovers to this node. Stays 0 until the agent performs
    /// switchovers (a later issue); exported so dashboards can rely on it.
    pub switchovers: u64,
    /// The phases of the last failover that made this node primary.
    pub last_failover: Option<FailoverPhases>,
    /// After a failed `pre_promote`, this node takes no part in failover
    /// races until this instant (judged when asked, like the lease).
    pub stands_aside_until: Option<BootInstant>,
}

impl NodeStatus {
    /// Whether this node holds the leader key with a lease still valid at
    /// `now`.
    pub fn holds_valid_lease(&self, now: BootInstant) -> bool {
        self.holds_leader_key && self.lease_valid_until.is_some_and(|v| now < v)
    }

    /// What is left of the lease at `now` (zero when none).
    pub fn lease_remaining(&self, now: BootInstant) -> Duration {
        match self.lease_valid_until {
            Some(v) if self.holds_leader_key => v.saturating_since(now),
            _ => Duration::ZERO,
        }
    }

    /// The one condition under which this node may take writes: the core
    /// wants it primary, holds the leader key on a lease valid at `now`, is
    /// not stepping down, and PostgreSQL runs read-write.
    pub fn is_writable_primary(&self, now: BootInstant) -> bool {
        self.ha_state == "primary"
            && self.holds_valid_lease(now)
            && !self.stepping_down
            && self.pg.as_ref().is_some_and(PgState::is_primary)
    }

    /// PostgreSQL runs and answers queries (its role is known).
    pub fn pg_answers(&self) -> bool {
        self.pg
            .as_ref()
            .is_some_and(|p| p.running && p.in_recovery.is_some())
    }

    /// PostgreSQL runs as a standby and the node is not on its way out.
    pub fn is_running_standby(&self) -> bool {
        !self.stepping_down
            && !matches!(self.ha_state, "stopping" | "exited")
            && self
                .pg
                .as_ref()
                .is_some_and(|p| p.running && p.in_recovery == Some(true))
    }
}

/// When each phase of a failover ended, on the node that was promoted.
/// The lease expiry itself happens on the Raft leader; this node sees it
/// as the leader key going vacant, which is where the first phase starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverPhases {
    /// The first view that showed the leader key vacant.
    pub vacant_at: BootInstant,
    /// This node's `AcquireLeader` won (the candidate was chosen).
    pub acquired_at: Option<BootInstant>,
    /// The promotion finished (the core entered `Primary`).
    pub promoted_at: Option<BootInstant>,
    /// A probe saw the server read-write under a valid lease.
    pub writable_at: Option<BootInstant>,
}

impl FailoverPhases {
    /// `(phase, seconds)` for each finished phase, in order.
    pub fn durations(&self) -> Vec<(&'static str, f64)> {
        let steps = [
            (
                "leader_vacant_to_acquired",
                Some(self.vacant_at),
                self.acquired_at,
            ),
            ("acquired_to_promoted", self.acquired_at, self.promoted_at),
            ("promoted_to_writable", self.promoted_at, self.writable_at),
            ("total", Some(self.vacant_at), self.writable_at),
        ];
        steps
            .into_iter()
            .filter_map(|(name, from, to)| Some((name, to?.saturating_since(from?).as_secs_f64())))
            .collect()
    }
}

/// Builds a [`NodeStatus`] from the core after each call and sends it; it
/// also counts failovers and times their phases, which needs the previous
/// state.
#[derive(Debug)]
pub struct StatusPublisher {
    tx: watch::Sender<NodeStatus>,
    failovers: u64,
    vacant_since: Option<BootInstant>,
    current: Option<FailoverPhases>,
    last_failover: Option<FailoverPhases>,
}

impl StatusPublisher {
    pub fn new(tx: watch::Sender<NodeStatus>) -> Self {
        StatusPublisher {
            tx,
            failovers: 0,
            vacant_since: None,
            current: None,
            last_failover: None,
        }
    }

    /// Publishes the core's state at `now`, right after a `handle` call.
    pub fn publish(&mut self, ha: &Ha, now: BootInstant) {
        self.track_failover(ha, now);
        let state = ha.state();
        let stepping_down = ha.in_flight(ActionKind::Fence)
            || ha.in_flight(ActionKind::StopPostgres)
            || matches!(
                state,
                State::Stopping(_) | State::Exited | State::Candidate(CandidateStep::Abandoning)
            );
        let status = NodeStatus {
            heartbeat: Some(now),
            ha_state: state.name(),
            holds_leader_key: ha.holds_leader_key(),
            lease_valid_until: ha.lease().and_then(|l| l.valid_until),
            stepping_down,
            pg: ha.pg().cloned(),
            view: ha.view().cloned(),
            failovers: self.failovers,
            switchovers: 0,
            last_failover: self.last_failover,
            stands_aside_until: ha.stands_aside_until(now),
        };
        self.tx.send_replace(status);
    }

    fn track_failover(&mut self, ha: &Ha, now: BootInstant) {
        let vacant = ha.view().is_some_and(|v| v.leader.is_none());
        if vacant {
            self.vacant_since.get_or_insert(now);
        } else {
            self.vacant_since = None;
        }
        match ha.state() {
            State::Candidate(CandidateStep::Acquiring) => {
                if let Some(vacant_at) = self.vacant_since {
                    self.current.get_or_insert(FailoverPhases {
                        vacant_at,
                        acquired_at: None,
                        promoted_at: None,
                        writable_at: None,
                    });
                }
            }
            State::Candidate(CandidateStep::PrePromoting | CandidateStep::Promoting) => {
                if let Some(c) = self.current.as_mut() {
                    c.acquired_at.get_or_insert(now);
                }
            }
            State::Primary(_) => {
                if let Some(mut c) = self.current.take() {
                    c.acquired_at.get_or_insert(now);
                    c.promoted_at = Some(now);
                    self.failovers += 1;
                    self.last_failover = Some(c);
                }
                let writable = ha.holds_leader(now) && ha.pg().is_some_and(PgState::is_primary);
                if let Some(last) = self.last_failover.as_mut() {
                    if writable && last.writable_at.is_none() {
                        last.writable_at = Some(now);
                    }
                }
            }
            _ => self.current = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> BootInstant {
        BootInstant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn phases_report_only_finished_steps() {
        let p = FailoverPhases {
            vacant_at: at(1000),
            acquired_at: Some(at(1100)),
            promoted_at: Some(at(1400)),
            writable_at: None,
        };
        let d = p.durations();
        assert_eq!(
            d,
            vec![
                ("leader_vacant_to_acquired", 0.1),
                ("acquired_to_promoted", 0.3)
            ]
        );
    }

    #[test]
    fn the_lease_is_judged_at_the_instant_asked() {
        let s = NodeStatus {
            ha_state: "primary",
            holds_leader_key: true,
            lease_valid_until: Some(at(5000)),
            pg: Some(PgState {
                running: true,
                in_recovery: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(s.is_writable_primary(at(4999)));
        assert!(!s.is_writable_primary(at(5000)));
        assert_eq!(s.lease_remaining(at(4000)), Duration::from_secs(1));
        let fencing = NodeStatus {
            stepping_down: true,
            ..s.clone()
        };
        assert!(!fencing.is_writable_primary(at(1)));
        let no_key = NodeStatus {
            holds_leader_key: false,
            ..s
        };
        assert!(!no_key.is_writable_primary(at(1)));
        assert_eq!(no_key.lease_remaining(at(1)), Duration::ZERO);
    }
}
