//! Elections only by voters that can reach a majority: a pre-vote check
//! outside openraft.
//!
//! openraft 0.9 has no Pre-Vote (it arrives in 0.10). Without it a voter
//! cut off from the others for longer than its election timeout keeps
//! starting elections, raising its term each time; when the link comes
//! back, that higher term makes the healthy leader step down and forces a
//! second election. Measured in the stall soak (`pg_bench -- soak`): a 2 s
//! stall of the Raft leader's host cost a second election right after it
//! healed, and together they outlasted the primary's lease — a false
//! failover.
//!
//! So every voter that is not the leader asks each other voter a cheap
//! `Hello` every [`PROBE_EVERY`], and lets openraft start elections
//! (`runtime_config().elect`) only while it reached a majority of voters
//! (itself included) in the last round. A voter that cannot reach a
//! majority could not win anyway; now it also does not inflate its term.
//! Followers of a dead leader still reach each other, so failover is not
//! delayed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::watch;

use super::bootstrap::hello_all;
use crate::consensus::peer::{PeerIdentity, PeerResponse, Transport};
use crate::consensus::types::{Member, NodeId, Raft};

/// How often a non-leader checks whom it can reach.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Bound on one probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Whether `reached` voters (this one included) out of `voters` are a
/// majority.
pub fn majority(reached: usize, voters: usize) -> bool {
    reached * 2 > voters
}

/// The voters of the current membership, with their addresses.
fn voters(raft: &Raft, fallback: &BTreeMap<NodeId, Member>) -> BTreeMap<NodeId, Member> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let ids: Vec<NodeId> = membership.voter_ids().collect();
    let found: BTreeMap<NodeId, Member> = membership
        .nodes()
        .filter(|(id, _)| ids.contains(id))
        .map(|(id, n)| (*id, n.clone()))
        .collect();
    if found.is_empty() {
        fallback.clone()
    } else {
        found
    }
}

/// Runs until `shutdown`.
pub async fn run(
    raft: Raft,
    me: NodeId,
    initial: BTreeMap<NodeId, Member>,
    transport: Arc<dyn Transport>,
    identity: Arc<PeerIdentity>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut enabled = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        if raft.metrics().borrow().state == ServerState::Leader {
            if !enabled {
                raft.runtime_config().elect(true);
                enabled = true;
            }
            continue;
        }
        let voters = voters(&raft, &initial);
        let reached = 1 + hello_all(me, &voters, &transport, &identity, PROBE_TIMEOUT)
            .await
            .into_iter()
            .filter(|(_, _, answer)| matches!(answer, Ok(PeerResponse::Hello(_))))
            .count();
        let want = majority(reached, voters.len().max(1));
        if want != enabled {
            raft.runtime_config().elect(want);
            enabled = want;
            if want {
                tracing::info!(
                    reached,
                    voters = voters.len(),
                    "a majority of voters is reachable again: elections allowed"
                );
            } else {
                tracing::warn!(reached, voters = voters.len(), "cannot reach a majority of voters: not starting Raft elections (they could not be won, and would disturb the leader when the link heals)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::majority;

    #[test]
    fn majorities() {
        // (reached including itself, voters, majority)
        for (reached, voters, want) in [
            (1, 1, true),
            (1, 3, false),
            (2, 3, true),
            (3, 3, true),
            (2, 4, false),
            (3, 4, true),
            (2, 5, false),
            (3, 5, true),
        ] {
            assert_eq!(majority(reached, voters), want, "{reached} of {voters}");
        }
    }
}
