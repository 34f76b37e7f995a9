//! Bootstrapping: making a data directory, either by winning the race for
//! the `initialize` key and running initdb, or by cloning a running member.
//!
//! The winner takes the leader key *before* it starts its new server, so
//! even the very first primary runs writable only under a valid lease.

use crate::clock::BootInstant;

use super::actions::{Action, ActionKind, StartAs};
use super::state::{BootstrapStep, State};
use super::view::{DataDir, Upstream};
use super::Ha;

impl Ha {
    pub(super) fn bootstrap(
        &mut self,
        now: BootInstant,
        step: BootstrapStep,
        out: &mut Vec<Action>,
    ) {
        let Some(view) = self.view.as_ref() else {
            return;
        };
        let me = self.node.name.as_str();
        match step {
            BootstrapStep::Racing => match view.initialize.as_ref() {
                // Our own key from before a restart: we won already.
                Some(init) if init.owner == me => {
                    let next = match self.pg.as_ref().map(|p| p.data_dir) {
                        Some(DataDir::Initialized { .. }) => BootstrapStep::TakingLeader,
                        _ => BootstrapStep::Initdb,
                    };
                    self.state = State::Bootstrapping(next);
                }
                Some(_) => self.state = State::Bootstrapping(BootstrapStep::AwaitingLeader),
                // A member that may never be promoted never becomes the
                // first primary either (as in Patroni): it waits for one
                // and clones it.
                None if !self.node.tags.may_fail_over() => {}
                None => {
                    self.emit(now, out, Action::AcquireInitialize);
                }
            },
            BootstrapStep::Initdb => {
                let Some(pg) = self.fresh_pg() else { return };
                match pg.data_dir {
                    // initdb finished before a restart.
                    DataDir::Initialized { .. } => {
                        self.state = State::Bootstrapping(BootstrapStep::TakingLeader);
                    }
                    DataDir::Empty => {
                        self.emit(now, out, Action::Initdb);
                    }
                }
            }
            BootstrapStep::TakingLeader => match view.leader.as_ref() {
                Some(l) if l.holder != me => self.state = State::Replica,
                // Our write, seen before (or instead of) its answer.
                Some(l) if self.lease.is_some_and(|x| x.id == l.lease) => {
                    if !self.inflight.contains_key(&ActionKind::AcquireLeader) {
                        self.leader_revision = Some(l.mod_revision);
                        self.state = State::Bootstrapping(BootstrapStep::StartingPrimary);
                    }
                }
                Some(_) => {} // ours on a lease from before a restart: let it expire
                None => {
                    if let Some(lease) = self.lease.filter(|l| l.is_valid(now)) {
                        self.emit(now, out, Action::AcquireLeader { lease: lease.id });
                    }
                }
            },
            BootstrapStep::StartingPrimary => {
                let Some(pg) = self.fresh_pg() else { return };
                if pg.is_primary() {
                    self.state = State::Bootstrapping(BootstrapStep::CreatingRoles);
                } else if self.holds_leader(now) {
                    let action = if !pg.running {
                        Action::StartPostgres(StartAs::Primary)
                    } else if pg.in_recovery == Some(true) {
                        // An existing standby data directory bootstrapping
                        // a new cluster.
                        Action::Promote
                    } else {
                        return;
                    };
                    self.emit(now, out, action);
                }
            }
            BootstrapStep::CreatingRoles => {
                self.emit(now, out, Action::CreateRoles);
            }
            BootstrapStep::AwaitingLeader => {
                let Some(pg) = self.fresh_pg() else { return };
                if pg.data_dir != DataDir::Empty {
                    self.state = State::Replica;
                    return;
                }
                if let Some(from) = self.clone_source() {
                    let slot = self.slot.clone();
                    if self.emit(now, out, Action::Basebackup { from, slot }) {
                        self.state = State::Bootstrapping(BootstrapStep::Cloning);
                    }
                }
            }
            BootstrapStep::Cloning => {} // the Basebackup answer moves on
        }
    }

    /// Where a new replica copies its data from: once a leader exists, a
    /// running member tagged `clonefrom` (first by name), else the leader
    /// itself once it runs. `None`: wait.
    pub(super) fn clone_source(&self) -> Option<Upstream> {
        let view = self.view.as_ref()?;
        let me = self.node.name.as_str();
        let leader = view.leader.as_ref().filter(|l| l.holder != me)?;
        let usable = |name: &String| {
            view.members
                .get(name)
                .filter(|m| *name != me && m.state.is_up() && !m.pg_address.trim().is_empty())
        };
        let tagged = view
            .members
            .iter()
            .filter(|(_, m)| m.tags.clonefrom)
            .find_map(|(name, _)| usable(name).map(|m| (name, m)));
        let (name, member) =
            tagged.or_else(|| usable(&leader.holder).map(|m| (&leader.holder, m)))?;
        Some(Upstream {
            member: name.clone(),
            pg_address: member.pg_address.clone(),
        })
    }
}
