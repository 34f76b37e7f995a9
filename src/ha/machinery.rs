//! Bookkeeping shared by every state: sending actions (one per kind, one
//! PostgreSQL action at a time, back-off after failures) and taking their
//! answers back.

use crate::clock::BootInstant;

use super::actions::{Action, ActionDone, ActionKind, Reply, StartAs};
use super::state::{BootstrapStep, CandidateStep, PrimaryState, RejoinStep, State, StoppingState};
use super::view::{DataDir, PgState};
use super::{Ha, InFlight, Lease, Published, FENCE_RETRY, KEEPALIVE_RETRY, RACE_RETRY};

impl Ha {
    /// Sends `action` unless one of its kind is in flight, it is backing
    /// off after a failure, or (for PostgreSQL actions) another PostgreSQL
    /// action or a fence is running. Returns whether it was sent.
    pub(super) fn emit(&mut self, now: BootInstant, out: &mut Vec<Action>, action: Action) -> bool {
        let kind = action.kind();
        if self.inflight.contains_key(&kind)
            || self.retry_at.get(&kind).is_some_and(|t| now < *t)
            || (kind.is_postgres() && self.postgres_busy())
        {
            return false;
        }
        if kind != ActionKind::Exit {
            let flight = InFlight {
                action: action.clone(),
                sent_at: now,
                epoch: self.pg_epoch,
            };
            self.inflight.insert(kind, flight);
        }
        out.push(action);
        true
    }

    /// Whether PostgreSQL is being worked on (by the lane or a fence).
    pub(super) fn postgres_busy(&self) -> bool {
        self.inflight
            .keys()
            .any(|k| k.is_postgres() || *k == ActionKind::Fence)
    }

    /// The last probe, if nothing has changed PostgreSQL since it was sent
    /// and nothing is changing it now: what rules about PostgreSQL act on.
    pub(super) fn fresh_pg(&self) -> Option<&PgState> {
        if self.pg_seen_epoch == Some(self.pg_epoch) && !self.postgres_busy() {
            self.pg.as_ref()
        } else {
            None
        }
    }

    /// A probe result. Solicited ones count if nothing changed PostgreSQL
    /// while they ran; an unsolicited one only while PostgreSQL is idle.
    pub(super) fn on_probe(&mut self, now: BootInstant, pg: PgState) {
        let epoch = match self.inflight.remove(&ActionKind::Probe) {
            Some(flight) => flight.epoch,
            None if !self.postgres_busy() => self.pg_epoch,
            None => return,
        };
        if epoch == self.pg_epoch {
            self.pg = Some(pg);
            self.pg_seen_epoch = Some(epoch);
            self.last_probe = Some(now);
        }
    }

    /// An action's answer. Unknown or duplicate answers are ignored: the
    /// core only trusts answers to what it has in flight.
    pub(super) fn on_done(&mut self, now: BootInstant, done: ActionDone) {
        let Some(flight) = self.inflight.remove(&done.kind) else {
            return;
        };
        if done.kind.changes_postgres() {
            self.pg_epoch += 1;
        }
        match done.result {
            Ok(reply) if reply_fits(done.kind, reply) => {
                self.retry_at.remove(&done.kind);
                self.on_success(now, flight, reply);
            }
            // A reply of the wrong shape is a driver bug: treat it as a
            // failure rather than guess.
            Ok(_) | Err(_) => self.on_failure(now, flight),
        }
    }

    fn on_failure(&mut self, now: BootInstant, flight: InFlight) {
        let kind = flight.action.kind();
        let delay = match kind {
            // Keepalives keep their own cadence from the send time, and a
            // failed one is tried again soon (`maintain_lease`).
            ActionKind::Keepalive => {
                self.keepalive_retry = Some(now + KEEPALIVE_RETRY);
                None
            }
            ActionKind::Fence => Some(FENCE_RETRY),
            ActionKind::AcquireLeader => Some(RACE_RETRY),
            ActionKind::QueryPositions => None,
            _ => Some(self.cfg().loop_wait),
        };
        if let Some(delay) = delay {
            self.retry_at.insert(kind, now + delay);
        }
        match (kind, &self.state) {
            (ActionKind::Basebackup, State::Bootstrapping(BootstrapStep::Cloning)) => {
                self.state = State::Bootstrapping(BootstrapStep::AwaitingLeader);
            }
            (ActionKind::StopPostgres, State::Stopping(_)) => self.must_fence = true,
            // A CHECKPOINT only shortens the shutdown: stop anyway.
            (ActionKind::Checkpoint, State::Demoting { .. }) => self.demote_progress(now, None),
            (ActionKind::StopPostgres, State::Demoting { .. }) => {
                self.handover_failure = Some(format!(
                    "{} could not stop PostgreSQL; it stays the primary",
                    self.node.name
                ));
            }
            // Nobody could be asked: no member is known to be ahead.
            (ActionKind::QueryPositions, State::Candidate(CandidateStep::Polling)) => {
                self.polled = Some(Default::default());
            }
            (ActionKind::Rewind, State::Rejoining(RejoinStep::Rewinding)) => {
                self.state = self.on_rewind_failure();
            }
            // The promote may have been requested and still complete: the
            // server may turn writable at any moment. Stop it by PID before
            // the key is given back (a key is released only once writes
            // have stopped), then release.
            (ActionKind::Promote, State::Candidate(CandidateStep::Promoting)) => {
                self.must_fence = true;
                self.state = State::Candidate(CandidateStep::Abandoning);
            }
            _ => {}
        }
    }

    fn on_success(&mut self, now: BootInstant, flight: InFlight, reply: Reply) {
        let sent_at = flight.sent_at;
        match (flight.action, reply) {
            (Action::AcquireInitialize, Reply::Won { .. }) => {
                let empty = self
                    .pg
                    .as_ref()
                    .is_none_or(|p| p.data_dir == DataDir::Empty);
                let next = if empty {
                    BootstrapStep::Initdb
                } else {
                    BootstrapStep::TakingLeader
                };
                self.advance(BootstrapStep::Racing, State::Bootstrapping(next));
            }
            (Action::AcquireInitialize, _) => self.advance(
                BootstrapStep::Racing,
                State::Bootstrapping(BootstrapStep::AwaitingLeader),
            ),
            (Action::GrantLease { .. }, Reply::Lease { lease, valid_until }) => {
                self.lease = Some(Lease {
                    id: lease,
                    valid_until: Some(valid_until),
                });
                self.last_keepalive = Some(sent_at);
                self.renewed_at = Some(sent_at);
            }
            (Action::Keepalive { lease }, Reply::Lease { valid_until, .. }) => {
                if let Some(current) = self.lease.as_mut().filter(|l| l.id == lease) {
                    current.valid_until = Some(valid_until);
                    self.renewed_at = Some(sent_at);
                }
            }
            (
                Action::Keepalive { lease }
                | Action::AcquireLeader { lease }
                | Action::PublishMember { lease, .. },
                Reply::LeaseGone,
            ) if self.owns(lease) => self.lease_lost(),
            (Action::AcquireLeader { lease }, Reply::Won { revision }) if self.owns(lease) => {
                self.leader_revision = Some(revision);
                self.advance(
                    BootstrapStep::TakingLeader,
                    State::Bootstrapping(BootstrapStep::StartingPrimary),
                );
                if self.state == State::Candidate(CandidateStep::Acquiring) {
                    self.state = State::Candidate(self.won_step());
                    self.promoted_for = self.due_request().map(|r| r.id.clone());
                }
            }
            // Someone else bootstrapped this cluster's leader. Our fresh
            // data directory cannot follow it; issue 4's Rejoining re-clones
            // it. Until then, a leaderless-looking replica.
            (Action::AcquireLeader { .. }, Reply::Lost) => {
                self.advance(BootstrapStep::TakingLeader, State::Replica);
                if self.state == State::Candidate(CandidateStep::Acquiring) {
                    self.state = State::Replica;
                    self.race_lost_at = self.view.as_ref().map(|v| v.revision);
                }
            }
            (Action::WriteSync { base, .. }, Reply::Done) => self.sync_written = Some(base),
            (Action::ReleaseLeader { revision, .. }, _)
                if self.leader_revision == Some(revision) =>
            {
                self.released();
            }
            (Action::RevokeLease { lease }, _) if self.owns(lease) => {
                self.lease = None;
                self.leader_revision = None;
                self.published = None;
            }
            (Action::PublishMember { lease, info }, _) => {
                self.published = Some(Published {
                    info,
                    lease,
                    at: sent_at,
                });
            }
            (Action::PublishStatus(status), _) => self.status_published = Some((status, sent_at)),
            (Action::FinishFailover { id, .. }, _) => self.finished_request = Some(id),
            (Action::RecordHistory { timeline }, _) => {
                self.history_recorded = self.history_recorded.max(timeline);
            }
            (Action::SetInitializeSysid { sysid }, _) => self.sysid_recorded = Some(sysid),
            (Action::Initdb, Reply::Initialized { sysid }) => {
                self.patch_pg(|pg| pg.data_dir = DataDir::Initialized { sysid });
                self.advance(
                    BootstrapStep::Initdb,
                    State::Bootstrapping(BootstrapStep::TakingLeader),
                );
            }
            (Action::StartPostgres(how), _) => {
                let standby = matches!(how, StartAs::Standby { .. });
                self.patch_pg(|pg| {
                    pg.running = true;
                    pg.in_recovery = Some(standby);
                    if let StartAs::Standby { upstream, .. } = &how {
                        pg.following = upstream.clone();
                    }
                });
                if self.state == State::Rejoining(RejoinStep::StartingStandby) {
                    self.state = State::Replica;
                }
                if !standby {
                    self.advance(
                        BootstrapStep::StartingPrimary,
                        State::Bootstrapping(BootstrapStep::CreatingRoles),
                    );
                }
            }
            (Action::CreateRoles, _) => self.advance(
                BootstrapStep::CreatingRoles,
                State::Primary(PrimaryState::default()),
            ),
            (Action::Promote, _) => {
                self.patch_pg(|pg| pg.in_recovery = Some(false));
                if let State::Primary(p) = &mut self.state {
                    p.checkpoint_pending = true;
                }
                if self.state == State::Candidate(CandidateStep::Promoting) {
                    self.state = State::Primary(PrimaryState {
                        checkpoint_pending: true,
                    });
                }
            }
            (Action::Checkpoint, _) => {
                if let State::Primary(p) = &mut self.state {
                    p.checkpoint_pending = false;
                }
                self.demote_progress(now, None);
            }
            (Action::Basebackup { .. }, _) => self.advance(BootstrapStep::Cloning, State::Replica),
            (Action::ConfigureStandby { upstream, .. }, _) => {
                self.patch_pg(|pg| pg.following = Some(upstream));
            }
            (Action::StopPostgres { .. }, Reply::Stopped { checkpoint_lsn }) => {
                self.patch_pg(|pg| {
                    pg.running = false;
                    pg.in_recovery = None;
                    pg.checkpoint_lsn = checkpoint_lsn;
                });
                self.after_stop(now, checkpoint_lsn);
                self.demote_progress(now, Some(checkpoint_lsn));
            }
            (Action::Rewind { .. }, _) if self.state == State::Rejoining(RejoinStep::Rewinding) => {
                self.rewind_failures = (None, 0);
                self.state = State::Rejoining(RejoinStep::StartingStandby);
            }
            (Action::MoveDataDirAside, _) => {
                self.patch_pg(|pg| *pg = PgState::default());
                if self.state == State::Rejoining(RejoinStep::MovingAside) {
                    self.state = State::Bootstrapping(BootstrapStep::AwaitingLeader);
                }
            }
            (Action::ApplyParameters { fingerprint }, _) => {
                self.parameters_applied = Some(fingerprint);
            }
            (Action::Fence, _) => {
                self.must_fence = false;
                self.patch_pg(|pg| {
                    pg.running = false;
                    pg.in_recovery = None;
                    pg.checkpoint_lsn = None;
                });
                self.after_stop(now, None);
            }
            _ => {}
        }
    }

    /// Moves to `to` if still at bootstrap step `from`: an answer that
    /// arrives after the state moved on (shutdown, lost lease) changes
    /// nothing.
    fn advance(&mut self, from: BootstrapStep, to: State) {
        if self.state == State::Bootstrapping(from) {
            self.state = to;
        }
    }

    /// Whether `lease` is the lease this node holds now.
    fn owns(&self, lease: crate::consensus::types::LeaseId) -> bool {
        self.lease.is_some_and(|l| l.id == lease)
    }

    /// Applies the known effect of a completed action to the cached probe,
    /// so the fence rule does not act on a server that is already gone.
    /// Rules still wait for a fresh probe.
    fn patch_pg(&mut self, f: impl FnOnce(&mut PgState)) {
        if let Some(pg) = self.pg.as_mut() {
            f(pg);
        }
    }

    /// PostgreSQL is down during a shutdown: hand over or release.
    pub(super) fn after_stop(&mut self, stopped_at: BootInstant, checkpoint: Option<super::Lsn>) {
        if self.state != State::Stopping(StoppingState::StoppingPostgres) {
            return;
        }
        let deadline = stopped_at + self.cfg().handover_timeout;
        self.state = State::Stopping(match checkpoint {
            Some(checkpoint) if self.leader_revision.is_some() && self.has_peers() => {
                StoppingState::AwaitingReplica {
                    checkpoint,
                    deadline,
                }
            }
            _ => StoppingState::Releasing,
        });
    }

    /// Whether the store shows any other data member.
    pub(super) fn has_peers(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.members.keys().any(|n| *n != self.node.name))
    }
}

/// Whether `reply` is one of the answers `kind` documents.
fn reply_fits(kind: ActionKind, reply: Reply) -> bool {
    use ActionKind as K;
    match reply {
        Reply::Done => matches!(
            kind,
            K::SetInitializeSysid
                | K::RevokeLease
                | K::ReleaseLeader
                | K::PublishMember
                | K::PublishStatus
                | K::RecordHistory
                | K::FinishFailover
                | K::WriteSync
                | K::SetSyncStandbyNames
                | K::CreateRoles
                | K::StartPostgres
                | K::Promote
                | K::Checkpoint
                | K::Basebackup
                | K::ConfigureStandby
                | K::StopReceiving
                | K::Reload
                | K::ReportOperation
                | K::CreateSlot
                | K::DropSlot
                | K::Rewind
                | K::MoveDataDirAside
                | K::ApplyParameters
                | K::Fence
                | K::PrePromote
        ),
        Reply::Won { .. } => matches!(kind, K::AcquireInitialize | K::AcquireLeader),
        Reply::Lost => matches!(
            kind,
            K::AcquireInitialize | K::AcquireLeader | K::ReportOperation
        ),
        Reply::Lease { .. } => matches!(kind, K::GrantLease | K::Keepalive),
        Reply::LeaseGone => matches!(
            kind,
            K::Keepalive | K::AcquireLeader | K::PublishMember | K::RevokeLease
        ),
        Reply::Initialized { .. } => kind == K::Initdb,
        Reply::Stopped { .. } => kind == K::StopPostgres,
    }
}
