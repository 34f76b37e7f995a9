//! Primary: run the writable server under the leader lease, record the
//! cluster's system id, publish `status`, manage the members' slots.
//!
//! A crashed server (DESIGN.md, "Reacting fast without false failovers")
//! is restarted in place while the lease holds, failed starts included,
//! for at most `primary_start_timeout` from the first fresh probe that
//! found it down. Only a fresh probe showing it running read-write ends
//! the outage. Past the deadline the primary gives up: it fences the
//! server (by PID: a start may be in flight), gives the leader key back
//! once nothing can write (so a replica takes over at once instead of
//! after the TTL), and becomes a replica. A lost lease overrides all of
//! this: `lease_lost` leaves Primary and the fence rule stops the server.

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::BootInstant;

use super::actions::{Action, StartAs};
use super::names::sanitize_slot_name;
use super::state::{PrimaryState, State};
use super::view::{DataDir, PgState, StatusKey};
use super::Ha;

/// The primary's server found down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ServerDown {
    /// Our leader write when it went down: a timer left from an earlier
    /// tenure of the key is void.
    pub(super) revision: u64,
    /// The first fresh probe that found it not running.
    pub(super) since: BootInstant,
    /// Past `primary_start_timeout`: the fence was asked for, the key is
    /// released once it is done.
    pub(super) giving_up: bool,
}

impl Ha {
    pub(super) fn primary(&mut self, now: BootInstant, p: PrimaryState, out: &mut Vec<Action>) {
        let Some(revision) = self.leader_revision else {
            // The key was given back (a server that did not come back in
            // time, fenced): follow whoever takes it.
            self.primary_down = None;
            self.state = State::Replica;
            return;
        };
        // Until a keepalive confirms the lease (adoption after a restart)
        // nothing may be started or promoted; the fence rule covers a
        // server that is already writable.
        if !self.holds_leader(now) {
            return;
        }
        self.primary_down = self.primary_down.filter(|d| d.revision == revision);
        let deadline = self.cfg().primary_start_timeout;
        let timed_out = |d: &ServerDown| d.giving_up || now >= d.since + deadline;
        // Checked before waiting for a fresh probe: a start still in flight
        // at the deadline is fenced, not waited for.
        if self.primary_down.as_ref().is_some_and(timed_out) {
            self.give_up(now, revision, out);
            return;
        }
        let Some(pg) = self.fresh_pg().cloned() else {
            return;
        };
        if !pg.running && self.cfg().pause {
            // Maintenance mode: the operator stopped it, or will start it;
            // the key and lease stay, nothing is started.
            return;
        }
        if !pg.running {
            let down = self.primary_down.get_or_insert(ServerDown {
                revision,
                since: now,
                giving_up: false,
            });
            if timed_out(down) {
                self.give_up(now, revision, out); // primary_start_timeout 0
            } else {
                // Restart in place; a failed start is retried after
                // loop_wait, on the same clock.
                self.emit(now, out, Action::StartPostgres(StartAs::Primary));
            }
            return;
        }
        match pg.in_recovery {
            Some(true) => {
                self.emit(now, out, Action::Promote);
                return;
            }
            // Back (or never gone): the outage, if any, is over.
            Some(false) => self.primary_down = None,
            None => return, // cannot tell yet; the next probe will
        }
        self.record_sysid(now, &pg, out);
        self.publish_status(now, &pg, out);
        if !p.checkpoint_pending && self.primary_request(now, &pg, out) {
            return;
        }
        if p.checkpoint_pending {
            self.emit(now, out, Action::Checkpoint);
        }
        self.manage_sync(now, &pg, out);
        if p.checkpoint_pending {
            return;
        }
        if let Some(action) = self.slot_action(now, &pg) {
            self.emit(now, out, action);
        }
    }

    /// The server did not come back within `primary_start_timeout`: fence
    /// it, then, once nothing on the PostgreSQL lane can still bring it up
    /// and it is known stopped, give the key back (compare-and-set on our
    /// write, so a key that is no longer ours is left alone). The lease
    /// and the member key on it stay; the release's answer (or a view
    /// showing the key gone while it is out) clears `leader_revision`,
    /// and the next pass makes this node a replica.
    fn give_up(&mut self, now: BootInstant, revision: u64, out: &mut Vec<Action>) {
        let Some(down) = self.primary_down.as_mut() else {
            return;
        };
        if !down.giving_up {
            down.giving_up = true;
            self.must_fence = true;
        }
        if self.must_fence {
            self.emit(now, out, Action::Fence); // unless running or backing off
            return;
        }
        // The fence is running, or a start it did not abort has yet to
        // answer.
        if self.inflight.keys().any(|k| k.changes_postgres()) {
            return;
        }
        // A start that completed after the fence: fence again first.
        if self.pg.as_ref().is_some_and(|pg| pg.may_be_writable()) {
            self.must_fence = true;
            self.emit(now, out, Action::Fence);
            return;
        }
        if let Some(lease) = self.lease {
            let release = Action::ReleaseLeader {
                lease: lease.id,
                revision,
            };
            self.emit(now, out, release);
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
        // A promotion is recorded in `history` once `status` shows the new
        // timeline (a failed attempt is retried after loop_wait).
        let published = self
            .status_published
            .is_some_and(|(s, _)| s.timeline == timeline);
        if published && timeline > self.history_recorded {
            self.emit(now, out, Action::RecordHistory { timeline });
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
