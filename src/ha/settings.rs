//! The dynamic config's PostgreSQL parameters on this node, and the order
//! in which members may restart for settings a standby must match.
//!
//! **Applying.** When the `config` key's parameters change
//! ([`HaConfig::parameters_fingerprint`]), a running server gets them
//! written into pgkeel's settings file and reloaded
//! ([`Action::ApplyParameters`]), on every member, primary or standby,
//! in any state but starting and stopping. A stopped server needs
//! nothing: every start writes the settings file. Settings PostgreSQL
//! can only take at a restart stay as they run and the next probe shows
//! `pending_restart`, which the member key publishes (`pgkeelctl list`,
//! `/cluster`, `/patroni`).
//!
//! **Restart order.** A hot standby refuses to run (recovery pauses, then
//! aborts) with `max_connections`, `max_worker_processes`,
//! `max_wal_senders`, `max_prepared_transactions` or
//! `max_locks_per_transaction` below its primary's. So a raise reaches
//! the standbys first and a lowering the primary first.
//! [`may_restart_for_pending`] says whether one member may restart now;
//! whoever restarts members for pending settings asks it first, through
//! [`Ha::may_restart_for_pending_settings`], which feeds it this node's
//! probe and the values the other members publish in their member keys.
//!
//! ```text
//!   raise 100 → 200:  standbys restart (200 ≥ primary's 100) ─▶ primary restarts (standbys run 200)
//!   lower 200 → 100:  primary restarts (standbys run 200 ≥ 100) ─▶ standbys restart (100 ≥ primary's 100)
//! ```

use std::collections::BTreeMap;

use crate::clock::BootInstant;

use super::actions::Action;
use super::state::State;
use super::view::{MemberInfo, MemberRole};
use super::Ha;

/// Integer values of the settings a standby must hold at least as high
/// as its primary, by name (`max_connections` → 100).
pub type SettingValues = BTreeMap<String, i64>;

/// A member with pending settings, and what it must know of the others
/// to restart safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingRestart<'a> {
    /// The member runs a standby.
    Standby {
        /// What its server runs now.
        running: &'a SettingValues,
        /// What it would run after a restart (its settings file).
        pending: &'a SettingValues,
        /// What the primary runs now; `None` when not known (no leader,
        /// or it has not published them).
        primary: Option<&'a SettingValues>,
    },
    /// The member runs the primary.
    Primary {
        /// What its server runs now.
        running: &'a SettingValues,
        /// What it would run after a restart.
        pending: &'a SettingValues,
        /// What each running standby runs now, by member name; `None` for
        /// one whose values are not known.
        standbys: &'a BTreeMap<String, Option<SettingValues>>,
    },
}

/// Whether the member may restart now to take its pending settings
/// without leaving a standby below its primary: `Ok`, or the reason to
/// wait, one sentence naming the setting and who goes first.
///
/// - A standby never starts with a value below what its primary runs; a
///   lowering whose primary value is unknown waits.
/// - A primary never starts with a value above what a running standby
///   runs; a raise past a standby whose value is unknown waits.
pub fn may_restart_for_pending(p: PendingRestart<'_>) -> Result<(), String> {
    match p {
        PendingRestart::Standby {
            running,
            pending,
            primary,
        } => {
            for (name, &new) in pending {
                match primary.and_then(|v| v.get(name)) {
                    Some(&theirs) if new < theirs => {
                        return Err(format!(
                            "{name}: this standby would restart with {new}, below the {theirs} its primary runs — the primary restarts first"
                        ));
                    }
                    Some(_) => {}
                    None if running.get(name).is_some_and(|&now| new >= now) => {}
                    None => {
                        return Err(format!(
                            "{name}: this standby would restart with {new} while the primary's value is unknown — wait until the primary publishes it"
                        ));
                    }
                }
            }
            Ok(())
        }
        PendingRestart::Primary {
            running,
            pending,
            standbys,
        } => {
            for (name, &new) in pending {
                if running.get(name).is_some_and(|&now| new <= now) {
                    continue; // every standby already runs at least `now`
                }
                for (member, values) in standbys {
                    match values.as_ref().and_then(|v| v.get(name)) {
                        Some(&theirs) if theirs >= new => {}
                        Some(&theirs) => {
                            return Err(format!(
                                "{name}: the primary would restart with {new}, above the {theirs} standby {member} runs — {member} restarts first"
                            ));
                        }
                        None => {
                            return Err(format!(
                                "{name}: the primary would restart with {new} while standby {member}'s value is unknown — wait until {member} publishes it"
                            ));
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

impl Ha {
    /// [`may_restart_for_pending`] for this member, from its last probe
    /// (running and pending values) and the store view (the values the
    /// leader's member key, or each streaming standby's, publishes). `Ok`
    /// when the server is not running: a start writes the settings file
    /// anyway and is not a restart.
    pub fn may_restart_for_pending_settings(&self) -> Result<(), String> {
        let Some(pg) = self.pg.as_ref().filter(|p| p.running) else {
            return Ok(());
        };
        let members = self.view.as_ref().map(|v| &v.members);
        let known = |m: &MemberInfo| (!m.must_match.is_empty()).then(|| m.must_match.clone());
        if pg.in_recovery == Some(true) {
            let primary = self
                .view
                .as_ref()
                .and_then(|v| v.leader.as_ref())
                .filter(|l| l.holder != self.node.name)
                .and_then(|l| members?.get(&l.holder))
                .and_then(known);
            return may_restart_for_pending(PendingRestart::Standby {
                running: &pg.must_match,
                pending: &pg.must_match_pending,
                primary: primary.as_ref(),
            });
        }
        let standbys: BTreeMap<String, Option<SettingValues>> = members
            .into_iter()
            .flatten()
            .filter(|(name, m)| {
                **name != self.node.name && m.role == MemberRole::Replica && m.state.is_up()
            })
            .map(|(name, m)| (name.clone(), known(m)))
            .collect();
        may_restart_for_pending(PendingRestart::Primary {
            running: &pg.must_match,
            pending: &pg.must_match_pending,
            standbys: &standbys,
        })
    }

    /// Writes and reloads the dynamic parameters when they changed since
    /// they were last applied. The first view's parameters count as
    /// applied: the server is started with them.
    pub(super) fn apply_parameters(&mut self, now: BootInstant, out: &mut Vec<Action>) {
        if self.view.is_none() {
            return;
        }
        let want = self.cfg().parameters_fingerprint;
        let applied = *self.parameters_applied.get_or_insert(want);
        if applied == want
            || matches!(
                self.state,
                State::Starting | State::Stopping(_) | State::Exited
            )
        {
            return;
        }
        if self.fresh_pg().is_some_and(|pg| pg.running) {
            self.emit(now, out, Action::ApplyParameters { fingerprint: want });
        }
    }
}
