//! Telling the others (member key) and looking at PostgreSQL (probes).

use crate::clock::BootInstant;

use super::actions::{Action, ActionKind};
use super::state::{BootstrapStep, RejoinStep, State, StoppingState};
use super::view::{DataDir, MemberInfo, MemberRole, MemberState};
use super::{Ha, HANDOVER_PROBE_INTERVAL};

impl Ha {
    /// Writes `members/<name>` on our lease: at once when the role, state,
    /// timeline, addresses or tags change or the lease is new; when only
    /// WAL positions moved, once per `loop_wait`, or on every change while
    /// the leader is handing over (it waits for our received position).
    pub(super) fn publish_member(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        let Some(lease) = self.lease.filter(|l| l.is_valid(now)) else {
            return;
        };
        if matches!(
            self.state,
            State::Starting | State::Exited | State::Stopping(StoppingState::Releasing)
        ) {
            return;
        }
        let info = self.own_member_info();
        let due = match &self.published {
            None => true,
            Some(p) if p.lease != lease.id => true,
            Some(p) if p.info == info => false,
            Some(p) => {
                significant_change(&p.info, &info)
                    || now >= p.at + self.cfg().loop_wait
                    || self.leader_is_stopping()
            }
        };
        if due {
            self.emit(
                now,
                out,
                Action::PublishMember {
                    lease: lease.id,
                    info,
                },
            );
        }
    }

    /// What this node publishes about itself: the wanted role, and the
    /// observed PostgreSQL.
    pub(super) fn own_member_info(&self) -> MemberInfo {
        let pg = self.pg.clone().unwrap_or_default();
        let initialized = matches!(pg.data_dir, DataDir::Initialized { .. });
        let role = match self.state {
            _ if self.leader_revision.is_some() => MemberRole::Primary,
            State::Primary(_) => MemberRole::Primary,
            // Still a standby until it wins: other candidates compare
            // themselves with it.
            State::Replica | State::Candidate(_) => MemberRole::Replica,
            State::Rejoining(_) if initialized => MemberRole::Replica,
            State::Stopping(_) if initialized => MemberRole::Replica,
            _ => MemberRole::Uninitialized,
        };
        let starting = self.inflight.contains_key(&ActionKind::StartPostgres);
        let state = match self.state {
            State::Stopping(_) | State::Demoting { .. } if pg.running => MemberState::Stopping,
            State::Bootstrapping(
                BootstrapStep::Initdb
                | BootstrapStep::TakingLeader
                | BootstrapStep::StartingPrimary
                | BootstrapStep::CreatingRoles,
            ) => MemberState::Initializing,
            State::Bootstrapping(BootstrapStep::Cloning) => MemberState::CreatingReplica,
            State::Rejoining(RejoinStep::Failed) if !pg.running => MemberState::RewindFailed,
            _ if !pg.running && starting => MemberState::Starting,
            _ if !pg.running => MemberState::Stopped,
            _ if pg.in_recovery == Some(true) && pg.streaming => MemberState::Streaming,
            _ => MemberState::Running,
        };
        MemberInfo {
            role,
            state,
            api_url: self.node.api_url.clone(),
            pg_address: self.node.pg_address.clone(),
            wal_lsn: pg.wal_lsn,
            received_lsn: pg.received_lsn,
            replayed_lsn: pg.replayed_lsn,
            timeline: pg.timeline,
            tags: self.node.tags,
            paused: self.cfg().pause,
            pending_restart: pg.running && pg.pending_restart,
            must_match: if pg.running {
                pg.must_match.clone()
            } else {
                Default::default()
            },
        }
    }

    /// Whether the leader's member key says it is stopping (handing over).
    pub(super) fn leader_is_stopping(&self) -> bool {
        self.view.as_ref().is_some_and(|v| {
            v.leader.as_ref().is_some_and(|l| {
                l.holder != self.node.name
                    && v.members.get(&l.holder).is_some_and(|m| {
                        // Stopped while it holds the key: handing over
                        // (or crashed); either way our position matters.
                        matches!(m.state, MemberState::Stopping | MemberState::Stopped)
                    })
            })
        })
    }

    /// How often to probe when nothing else asks for it.
    pub(super) fn probe_interval(&self) -> std::time::Duration {
        if self.leader_is_stopping() {
            HANDOVER_PROBE_INTERVAL
        } else {
            self.cfg().loop_wait
        }
    }

    /// Probes when there is no fresh probe (first one, or PostgreSQL
    /// changed since), and every `loop_wait` (every
    /// [`HANDOVER_PROBE_INTERVAL`] while the leader hands over).
    pub(super) fn probe_if_due(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if matches!(
            self.state,
            State::Exited | State::Stopping(StoppingState::Releasing)
        ) {
            return;
        }
        let interval = self.probe_interval();
        let stale = self.pg_seen_epoch != Some(self.pg_epoch);
        let due = stale || self.last_probe.is_none_or(|t| now >= t + interval);
        if due {
            self.emit(now, out, Action::Probe);
        }
    }
}

/// Whether `new` differs from `old` in more than WAL positions.
fn significant_change(old: &MemberInfo, new: &MemberInfo) -> bool {
    let positions = |m: &MemberInfo| MemberInfo {
        wal_lsn: None,
        received_lsn: None,
        replayed_lsn: None,
        ..m.clone()
    };
    positions(old) != positions(new)
}
