//! Why nobody takes the vacant leader key: "the cluster waits and says
//! why".
//!
//! When the leader key is vacant and no member may be promoted (every one
//! is tagged `nofailover`, stopped, too far behind, or the cluster is in
//! maintenance mode), the cluster rightly waits; an operator must be told
//! why rather than left guessing. [`promotion_blockers`] gives one reason
//! per member from the published member keys, by the same rule a candidate
//! applies to itself ([`failover_eligibility`]); [`no_leader`] turns
//! them into the line `pgkeelctl list`, `/cluster` and the replicas' logs
//! show. A new rule (the synchronous set) is a new [`Ineligible`] variant
//! with its sentence below.

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::BootInstant;

use super::candidate::{failover_eligibility, Ineligible};
use super::records::role_name;
use super::state::State;
use super::view::{ClusterView, MemberInfo, MemberRole, MemberTags, PgState};
use super::Ha;

/// What an operator reads for each reason a member may not be promoted.
impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::NotAStandby => f.write_str("not a running standby"),
            Ineligible::NoFailover => f.write_str("tagged nofailover (or failover_priority 0)"),
            Ineligible::NoLease => f.write_str("holds no valid lease"),
            Ineligible::NoPosition => f.write_str("reports no WAL position"),
            Ineligible::Lagging { lag } => write!(
                f,
                "{lag} bytes behind the last primary position, more than maximum_lag_on_failover"
            ),
            Ineligible::Outranked { by } => write!(f, "{by} is further ahead"),
            Ineligible::NotSynchronous(why) => write!(f, "{why}"),
            Ineligible::QuorumShort { missing } => write!(
                f,
                "{missing} more member(s) of the synchronous set must answer to be sure no acknowledged commit is missing"
            ),
        }
    }
}

/// Which tag forbids promoting a member.
fn tags_reason(tags: MemberTags) -> String {
    if tags.nofailover {
        "tagged nofailover".into()
    } else {
        format!("tagged failover_priority {}", tags.failover_priority)
    }
}

/// The member's PostgreSQL as its key describes it, in the shape
/// [`failover_eligibility`] judges: a running standby when its key says
/// replica and up, at its published positions.
fn published_pg(m: &MemberInfo) -> PgState {
    let up = m.state.is_up();
    PgState {
        running: up,
        in_recovery: up.then_some(m.role == MemberRole::Replica),
        received_lsn: m.received_lsn,
        replayed_lsn: m.replayed_lsn,
        timeline: m.timeline,
        ..PgState::default()
    }
}

/// Why a member may not be promoted now, for every member that may not,
/// by name; a member not listed may be. Judged from the published member
/// keys (a member's own check, with its live position, is the one that
/// decides): a running standby, tags that allow failover, within
/// `maximum_lag_on_failover` of the `status` key, and the cluster not in
/// maintenance mode. Whether the leader key is held does not matter here.
pub fn promotion_blockers(view: &ClusterView) -> Vec<(String, String)> {
    view.members
        .iter()
        .filter_map(|(name, m)| {
            let nobody_ahead = BTreeMap::new();
            let verdict = failover_eligibility(
                name,
                m.tags,
                &published_pg(m),
                true,
                view,
                Some(&nobody_ahead),
            );
            let reason = match verdict {
                Err(Ineligible::NotAStandby) if !m.state.is_up() => {
                    format!("not running ({})", m.state.as_str())
                }
                Err(Ineligible::NotAStandby) => {
                    format!("not a standby (its key says {})", role_name(m.role))
                }
                Err(Ineligible::NoFailover) => tags_reason(m.tags),
                Err(e) => e.to_string(),
                Ok(()) if view.config.pause => "maintenance mode is on".into(),
                Ok(()) => return None,
            };
            Some((name.clone(), reason))
        })
        .collect()
}

/// Why the leader key stays vacant: the line to show, and each member's
/// reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoLeader {
    /// One line ("no member may be promoted — node2: tagged nofailover").
    pub reason: String,
    /// [`promotion_blockers`]: every member, since none may be promoted.
    pub blockers: Vec<(String, String)>,
}

/// Why the leader key stays vacant, when it does for a reason: the key is
/// vacant in an initialized cluster and no member may be promoted. `None`
/// while a leader holds the key, before bootstrap, and while some member
/// may take it (a failover is under way).
pub fn no_leader(view: &ClusterView) -> Option<NoLeader> {
    if view.leader.is_some() || view.initialize.is_none() {
        return None;
    }
    if view.members.is_empty() {
        return Some(NoLeader {
            reason: "no data member is running pgkeel".into(),
            blockers: Vec::new(),
        });
    }
    let blockers = promotion_blockers(view);
    if blockers.len() < view.members.len() {
        return None;
    }
    let each: Vec<String> = blockers
        .iter()
        .map(|(name, why)| format!("{name}: {why}"))
        .collect();
    Some(NoLeader {
        reason: format!("no member may be promoted — {}", each.join("; ")),
        blockers,
    })
}

impl Ha {
    /// Why this replica does not race for the vacant leader key, while the
    /// key is vacant in an initialized cluster and it stays a follower; for
    /// the driver to log once per vacancy. `None` while a leader holds the
    /// key, while this member races or may race (an outranked member waits
    /// for a better one, which is no reason to log), and before the first
    /// view and probe.
    pub fn vacancy_blocker(&self, now: BootInstant) -> Option<String> {
        let view = self.view.as_ref()?;
        if self.state != State::Replica || view.leader.is_some() || view.initialize.is_none() {
            return None;
        }
        let pg = self.pg.as_ref()?;
        if self.cfg().pause {
            return Some("maintenance mode is on".into());
        }
        match self.eligibility(now, pg, Some(&BTreeMap::new())) {
            Ok(()) | Err(Ineligible::Outranked { .. } | Ineligible::NoLease) => None,
            Err(Ineligible::NoFailover) => Some(tags_reason(self.node.tags)),
            Err(e) => Some(e.to_string()),
        }
    }
}
