//! The checks a membership change must pass before anything is proposed.
//! Pure: the caller gathers the membership, the leader key's holder and
//! the probe answers, and these functions decide.
//!
//! Decisions (see docs/consensus.md, "Membership changes"):
//! - A node is added under an id, a name and an address no other node of
//!   the membership uses. Re-adding a leftover learner with the very same
//!   identity resumes an add that was cut short.
//! - The node at the address must answer with that id and name, and must
//!   not belong to another cluster: two clusters are never merged.
//! - A removal leaves at least [`MIN_VOTERS`] voters, at least one of them
//!   a data node, and a majority of them reachable; so a change never
//!   leaves a cluster that loses its quorum with the next failure.
//! - The holder of the `leader` key is never removed: its lease is never
//!   cut short (DESIGN.md); switch over first.

use std::collections::BTreeSet;

use crate::config::{host_port_problem, name_problem, same_address};
use crate::consensus::peer::HelloInfo;
use crate::consensus::types::{Member, NodeId};

/// The fewest voters a removal may leave: three voters survive the loss
/// of any one, two do not.
pub const MIN_VOTERS: usize = 3;

/// One node of the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: NodeId,
    pub member: Member,
    /// A voter; otherwise a learner.
    pub voter: bool,
}

/// The membership as the Raft leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    pub entries: Vec<Entry>,
    /// A joint configuration: a change of voters is still being committed.
    pub joint: bool,
}

impl Roster {
    /// The roster of an openraft membership.
    pub fn of(m: &openraft::Membership<NodeId, Member>) -> Roster {
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        Roster {
            entries: m
                .nodes()
                .map(|(id, member)| Entry {
                    id: *id,
                    member: member.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
            joint: m.get_joint_config().len() > 1,
        }
    }

    /// The names of the voters (`voter`) or of the learners.
    pub fn names(&self, voter: bool) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.voter == voter)
            .map(|e| e.member.name.clone())
            .collect()
    }

    fn by_name(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.member.name == name)
    }
}

/// Why a change is refused, by the gRPC code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// INVALID_ARGUMENT: the request itself is malformed.
    Invalid(String),
    /// FAILED_PRECONDITION: the cluster is not in a state that allows it.
    Precondition(String),
    /// NOT_FOUND: no such member.
    NotFound(String),
}

/// How an accepted add proceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPlan {
    /// A node the membership does not know yet.
    New,
    /// The node is already a learner with this identity (an earlier add
    /// was cut short): wait for it to catch up and promote it.
    Resume,
}

const IN_PROGRESS: &str =
    "a membership change is still being committed (joint configuration); wait a moment and retry";

/// Checks an add of node `id` as `new` against the membership.
pub fn check_add(roster: &Roster, id: NodeId, new: &Member) -> Result<AddPlan, Refusal> {
    if id == 0 {
        return Err(Refusal::Invalid(
            "node id 0 is not a Raft node id — pass the new node's raft.node_id, a whole number above 0".into(),
        ));
    }
    if let Some(p) = name_problem(&new.name) {
        return Err(Refusal::Invalid(format!("the name {p}")));
    }
    if let Some(p) = host_port_problem(&new.addr, "10.0.0.4:7001") {
        return Err(Refusal::Invalid(format!("the address {p}")));
    }
    if roster.joint {
        return Err(Refusal::Precondition(IN_PROGRESS.into()));
    }
    if let Some(e) = roster.entries.iter().find(|e| e.id == id) {
        return match (e.member == *new, e.voter) {
            (true, false) => Ok(AddPlan::Resume),
            (true, true) => Err(Refusal::Precondition(format!(
                "{} (id {id}) is already a voter; nothing to do",
                new.name
            ))),
            (false, _) => Err(Refusal::Precondition(format!(
                "node id {id} is already {} — give the new node its own raft.node_id",
                e.member
            ))),
        };
    }
    if let Some(e) = roster.by_name(&new.name) {
        return Err(Refusal::Precondition(format!(
            "the name {} is already taken by node {} ({}) — give the new node its own name, or remove the old one first",
            new.name, e.id, e.member.addr
        )));
    }
    if let Some(e) = roster
        .entries
        .iter()
        .find(|e| same_address(&e.member.addr, &new.addr))
    {
        return Err(Refusal::Precondition(format!(
            "the address {} is already node {} ({}) — check the new node's raft.listen / raft.advertise",
            new.addr, e.id, e.member.name
        )));
    }
    Ok(AddPlan::New)
}

/// Checks the answer of the node at the new address (`Err` when it could
/// not be asked) against what is to be added to the cluster `ours`.
pub fn check_new_node(
    answer: &Result<HelloInfo, String>,
    id: NodeId,
    new: &Member,
    ours: &str,
) -> Result<(), Refusal> {
    let refuse = |s: String| Err(Refusal::Precondition(s));
    let h = match answer {
        Ok(h) => h,
        Err(e) => return refuse(format!(
            "cannot reach the new node {} at {}: {e} — start it first, with raft.join: true and this cluster's scope and secret",
            new.name, new.addr
        )),
    };
    if h.node_id != id || h.name != new.name {
        return refuse(format!(
            "the node at {} is {} (id {}), not {} (id {id}) — check the address, or the node's name and raft.node_id",
            new.addr, h.name, h.node_id, new.name
        ));
    }
    if !h.cluster_id.is_empty() && h.cluster_id != ours {
        return refuse(format!(
            "{} belongs to another cluster ({}); clusters are never merged — wipe its raft.data_dir to add it to this one",
            new.name, h.cluster_id
        ));
    }
    if h.initialized && h.cluster_id.is_empty() {
        return refuse(format!(
            "{} already holds Raft state of a cluster that never finished forming — stop it, wipe its raft.data_dir and start it with raft.join: true",
            new.name
        ));
    }
    Ok(())
}

/// Checks the removal of `name`: `holder` is the member holding the
/// `leader` key, `reachable` the voters that answered a probe. Returns the
/// membership entry to remove.
pub fn check_remove(
    roster: &Roster,
    name: &str,
    holder: Option<&str>,
    reachable: &BTreeSet<NodeId>,
) -> Result<Entry, Refusal> {
    let Some(entry) = roster.by_name(name) else {
        return Err(Refusal::NotFound(format!(
            "{name} is not a Raft member (voters: {}) — see pgkeelctl raft status",
            roster.names(true).join(", ")
        )));
    };
    if holder == Some(name) {
        return Err(Refusal::Precondition(format!(
            "member {name} is the primary: switch over first"
        )));
    }
    if roster.joint {
        return Err(Refusal::Precondition(IN_PROGRESS.into()));
    }
    if !entry.voter {
        return Ok(entry.clone());
    }
    let rest: Vec<&Entry> = roster
        .entries
        .iter()
        .filter(|e| e.voter && e.id != entry.id)
        .collect();
    let names = rest
        .iter()
        .map(|e| e.member.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if rest.len() < MIN_VOTERS {
        return Err(Refusal::Precondition(format!(
            "removing {name} would leave {} voters ({names}), which lose their quorum with the next failure — add its replacement first (pgkeelctl member add), then remove it",
            rest.len()
        )));
    }
    if rest.iter().all(|e| e.member.witness) {
        return Err(Refusal::Precondition(format!(
            "removing {name} would leave only witnesses ({names}), so no node could run PostgreSQL — add a data node first"
        )));
    }
    let up = rest.iter().filter(|e| reachable.contains(&e.id)).count();
    if up * 2 <= rest.len() {
        return Err(Refusal::Precondition(format!(
            "removing {name} would leave voters {names}, of which only {up} answer — that is no quorum; bring them back first"
        )));
    }
    Ok(entry.clone())
}
