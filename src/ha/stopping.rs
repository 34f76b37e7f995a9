//! Stopping: the clean handover on SIGTERM.
//!
//! A primary stops PostgreSQL in fast mode (its walsenders send the
//! shutdown checkpoint to the standbys before they exit), keeps the leader
//! key until a standby reports WAL past that checkpoint (or
//! `handover_timeout`), then revokes its lease, which deletes the leader
//! and member keys at once: the key is released only after writes have
//! stopped, and the new primary has every acknowledged write. A replica
//! stops PostgreSQL and revokes its lease (so `list` drops it at once).

use crate::clock::BootInstant;

use super::actions::{Action, ActionKind, StopMode};
use super::state::{State, StoppingState};
use super::Ha;

impl Ha {
    pub(super) fn stopping(&mut self, now: BootInstant, s: StoppingState, out: &mut Vec<Action>) {
        match s {
            StoppingState::StoppingPostgres => {
                if self.must_fence || self.postgres_busy() {
                    return; // a fence or the lane's current action first
                }
                let Some(pg) = self.pg.as_ref() else {
                    // Never probed: nothing of ours was started.
                    self.state = State::Stopping(StoppingState::Releasing);
                    return;
                };
                if pg.running {
                    self.emit(
                        now,
                        out,
                        Action::StopPostgres {
                            mode: StopMode::Fast,
                        },
                    );
                } else {
                    // Already down (crashed, or never started): no shutdown
                    // checkpoint of ours for a standby to wait for.
                    self.after_stop(now, None);
                }
            }
            StoppingState::AwaitingReplica {
                checkpoint,
                deadline,
            } => {
                // Strictly past the start of the checkpoint record: the
                // standby has the record itself, so this node can later
                // rejoin it without pg_rewind.
                let received = self.view.as_ref().is_some_and(|v| {
                    v.members.iter().any(|(name, m)| {
                        *name != self.node.name && m.received_lsn.is_some_and(|l| l > checkpoint)
                    })
                });
                if received || now >= deadline || !self.holds_leader(now) || !self.has_peers() {
                    self.state = State::Stopping(StoppingState::Releasing);
                }
            }
            StoppingState::Releasing => match self.lease {
                // A lease adopted after a restart and never confirmed gets
                // one try: if the store cannot be reached it expires anyway.
                Some(lease)
                    if lease.valid_until.is_some()
                        || !self.retry_at.contains_key(&ActionKind::RevokeLease) =>
                {
                    self.emit(now, out, Action::RevokeLease { lease: lease.id });
                }
                _ => {
                    self.state = State::Exited;
                    out.push(Action::Exit { error: None });
                }
            },
        }
    }
}
