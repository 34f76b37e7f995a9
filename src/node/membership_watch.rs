//! What this node is in the Raft membership, said once in the log each time
//! it changes: waiting to be added (a `raft.join` node), learner, voter, or
//! removed.
//!
//! A node that `pgkeelctl member remove` took out of the membership keeps
//! running until its operator stops it. It cannot vote or start elections
//! any more (it is a learner in the last membership it received, or not in
//! it at all), and the Raft leader refuses its store requests (see
//! `consensus::handler`), so its lease-bound keys expire. This watcher is
//! what tells the operator so, instead of a stream of refused requests.
//!
//! ```text
//!   (join) ──waiting──▶ Learner ──promoted──▶ Voter ──member remove──▶ Removed
//!                          ▲                                            │
//!                          └─────────────── member add again ───────────┘
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::consensus::types::{NodeId, Raft};

/// How often a joining node repeats that it is still waiting to be added.
const REMIND_EVERY: Duration = Duration::from_secs(10);

/// This node's place in the membership it last saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// No membership yet: a pristine node that has not been added.
    Outside,
    /// Receives the log but does not vote.
    Learner,
    /// Votes and may lead.
    Voter,
    /// The membership has no entry for this node although it had one.
    Removed,
}

/// Where `me` stands in a membership with these voters and learners.
/// `had_place` tells a node that was never added from one that was removed.
pub fn place(me: NodeId, voters: &[NodeId], learners: &[NodeId], had_place: bool) -> Place {
    if voters.contains(&me) {
        Place::Voter
    } else if learners.contains(&me) {
        Place::Learner
    } else if had_place {
        Place::Removed
    } else {
        Place::Outside
    }
}

fn current(raft: &Raft, me: NodeId, had_place: bool) -> Place {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let learners: Vec<NodeId> = membership.learner_ids().collect();
    place(me, &voters, &learners, had_place)
}

/// What to log when this node moves from `before` (`None`: just started
/// with Raft state) to `now`: whether it is a warning, and the sentence.
fn describe(before: Option<Place>, now: Place) -> Option<(bool, &'static str)> {
    use Place::*;
    Some(match (before, now) {
        (Some(a), b) if a == b => return None,
        (_, Outside) | (None, Voter) => return None,
        (Some(Outside), Learner) => (false, "added to the cluster as a learner: receiving the Raft log; it becomes a voter once it has caught up"),
        (Some(Outside), Voter) => (false, "added to the cluster: this node is now a Raft voter"),
        (_, Voter) => (false, "this node is now a Raft voter"),
        (Some(Voter), Learner) => (true, "this node was removed from the Raft voters (pgkeelctl member remove): it no longer votes or starts elections"),
        (_, Learner) => (false, "this node is a Raft learner: it receives the log but does not vote"),
        (_, Removed) => (true, "this node is not in the cluster's membership any more (pgkeelctl member remove): it does not vote, and the Raft leader refuses its store requests — stop it, and wipe raft.data_dir before adding the host again"),
    })
}

/// Logs this node's place in the membership each time it changes. A
/// `raft.join` node that has not been added yet says every
/// [`REMIND_EVERY`] that it is waiting. Runs until `shutdown`.
pub async fn run(
    raft: Raft,
    me: NodeId,
    join: bool,
    pristine: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = raft.metrics();
    let mut last: Option<Place> = if pristine { Some(Place::Outside) } else { None };
    let mut reminded: Option<Instant> = None;
    loop {
        // A node with Raft state has been a member, so a membership without
        // it means it was removed.
        let had_place = last.is_none_or(|p| p != Place::Outside);
        let now = current(&raft, me, had_place);
        match describe(last, now) {
            Some((true, s)) => tracing::warn!(node = me, "{s}"),
            Some((false, s)) => tracing::info!(node = me, "{s}"),
            None => {}
        }
        last = Some(now);
        let waiting = now == Place::Outside && join;
        if waiting && reminded.is_none_or(|t| t.elapsed() >= REMIND_EVERY) {
            reminded = Some(Instant::now());
            tracing::info!(
                node = me,
                "raft.join is set: waiting to be added to the running cluster (pgkeelctl member add); this node never forms a cluster of its own"
            );
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(REMIND_EVERY), if waiting => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places() {
        // (me, voters, learners, had a place before, expected)
        for (me, voters, learners, had, want) in [
            (4, vec![1, 2, 3], vec![], false, Place::Outside),
            (4, vec![1, 2, 3], vec![4], false, Place::Learner),
            (4, vec![1, 2, 3, 4], vec![], true, Place::Voter),
            (4, vec![1, 2, 3], vec![4], true, Place::Learner),
            (4, vec![1, 2, 3], vec![], true, Place::Removed),
            (1, vec![], vec![], false, Place::Outside),
        ] {
            assert_eq!(
                place(me, &voters, &learners, had),
                want,
                "{me} in {voters:?}/{learners:?}"
            );
        }
    }

    #[test]
    fn transitions_say_what_happened() {
        use Place::*;
        let said = |before, now| describe(before, now).map(|(warn, s)| (warn, s.to_string()));
        assert_eq!(said(Some(Voter), Voter), None);
        assert_eq!(said(Some(Outside), Outside), None);
        assert_eq!(said(None, Voter), None, "a plain restart says nothing more");
        for (before, now, warn, words) in [
            (Some(Outside), Learner, false, "caught up"),
            (Some(Learner), Voter, false, "now a Raft voter"),
            (Some(Voter), Learner, true, "removed from the Raft voters"),
            (None, Learner, false, "does not vote"),
            (Some(Voter), Removed, true, "wipe raft.data_dir"),
            (Some(Learner), Removed, true, "refuses its store requests"),
            (None, Removed, true, "stop it"),
        ] {
            let (w, s) = said(before, now).expect("a change is logged");
            assert_eq!(w, warn, "{before:?} -> {now:?}");
            assert!(s.contains(words), "{before:?} -> {now:?}: {s}");
        }
    }
}
