//! Primary: run the writable server under the leader lease, record the
//! cluster's system id, publish `status`, manage the members' slots.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::BootInstant;

use super::actions::{Action, StartAs};
use super::names::sanitize_slot_name;
use super::state::PrimaryState;
use super::view::{DataDir, PgState, StatusKey};
use super::Ha;

impl Ha {
    pub(super) fn primary(&mut self, now: BootInstant, p: PrimaryState, out: &mut Vec<Action>) {
        // Until a keepalive confirms the lease (adoption after a restart)
        // nothing may be started or promoted; the fence rule covers a
        // server that is already writable.
        if !self.holds_leader(now) {
            return;
        }
        let Some(pg) = self.fresh_pg().cloned() else {
            return;
        };
        if !pg.running {
            // Restart in place while the lease holds. Issue 4 bounds this
            // by primary_start_timeout, then releases the key.
            self.emit(now, out, Action::StartPostgres(StartAs::Primary));
            return;
        }
        match pg.in_recovery {
            Some(true) => {
                self.emit(now, out, Action::Promote);
                return;
            }
            Some(false) => {}
            None => return, // cannot tell yet; the next probe will
        }
        self.record_sysid(now, &pg, out);
        self.publish_status(now, &pg, out);
        if p.checkpoint_pending {
            self.emit(now, out, Action::Checkpoint);
        } else if let Some(action) = self.slot_action(now, &pg) {
            self.emit(now, out, action);
        }
    }

    /// Fills in the `initialize` key's sysid once this cluster's first
    /// primary runs, so a node with a foreign data directory is refused.
    fn record_sysid(&mut self, now: BootInstant, pg: &PgState, out: &mut Vec<Action>) {
        let DataDir::Initialized { sysid } = pg.data_dir else {
            return;
        };
        let unrecorded = self.view.as_ref().is_some_and(|v| {
            v.initialize
                .as_ref()
                .is_some_and(|i| i.owner == self.node.name && i.sysid.is_none())
        });
        if unrecorded && self.sysid_recorded != Some(sysid) {
            self.emit(now, out, Action::SetInitializeSysid { sysid });
        }
    }

    /// The `status` key: on a timeline change at once, otherwise at most
    /// once per `loop_wait` and only when the position moved.
    fn publish_status(&mut self, now: BootInstant, pg: &PgState, out: &mut Vec<Action>) {
        let (Some(lsn), Some(timeline)) = (pg.wal_lsn, pg.timeline) else {
            return;
        };
        let status = StatusKey { lsn, timeline };
        let due = match self.status_published {
            None => true,
            Some((last, at)) => {
                last != status && (last.timeline != timeline || now >= at + self.cfg().loop_wait)
            }
        };
        if due {
            self.emit(now, out, Action::PublishStatus(status));
        }
    }

    /// The next slot change, one at a time: a slot for every other member
    /// that lacks one; a physical slot with no member is dropped once it
    /// has been memberless for `member_slots_ttl` (timed from when this
    /// primary first saw it so) and is not in use. Logical slots are never
    /// touched.
    fn slot_action(&mut self, now: BootInstant, pg: &PgState) -> Option<Action> {
        let wanted: BTreeSet<String> = self
            .view
            .as_ref()?
            .members
            .keys()
            .filter(|name| **name != self.node.name)
            .map(|name| sanitize_slot_name(name))
            .filter(|slot| *slot != self.slot)
            .collect();
        let existing: BTreeMap<&str, bool> = pg
            .slots
            .iter()
            .filter(|s| s.physical)
            .map(|s| (s.name.as_str(), s.active))
            .collect();
        self.slot_absent_since
            .retain(|name, _| existing.contains_key(name.as_str()) && !wanted.contains(name));
        if let Some(missing) = wanted.iter().find(|s| !existing.contains_key(s.as_str())) {
            return Some(Action::CreateSlot {
                name: missing.clone(),
            });
        }
        let ttl = self.cfg().member_slots_ttl;
        let mut drop = None;
        for (&name, &active) in &existing {
            if wanted.contains(name) {
                continue;
            }
            let since = *self
                .slot_absent_since
                .entry(name.to_string())
                .or_insert(now);
            if drop.is_none() && !active && now >= since + ttl {
                drop = Some(name.to_string());
            }
        }
        drop.map(|name| Action::DropSlot { name })
    }
}
