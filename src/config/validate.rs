//! Semantic checks across the whole file, run after it parsed.
//!
//! Every check adds to one list instead of returning early, so an operator
//! fixes a file in one pass rather than one error per restart.

use std::time::Duration;

use super::addr::same_address;
use super::error::Problem;
use super::{duration, Config, NodeKind};

/// Collects problems in the order they are found.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Problem>);

impl Problems {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem::new(path, message));
    }

    pub(crate) fn add_opt(&mut self, path: &str, message: Option<String>) {
        if let Some(message) = message {
            self.add(path, message);
        }
    }

    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.0
    }
}

/// Checks a cluster or member name: it ends up in store keys, URLs and
/// PostgreSQL's `application_name`, so it is kept to a safe character set.
pub(crate) fn check_name(p: &mut Problems, path: &str, name: &str) {
    p.add_opt(path, name_problem(name));
}

/// What is wrong with a cluster or member name, if anything.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("is empty — use letters, digits, '.', '_' and '-', e.g. node1".into())
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some(format!(
            "\"{name}\" may only contain letters, digits, '.', '_' and '-' — rename it, e.g. node1"
        ))
    } else {
        None
    }
}

/// DESIGN.md's lease timing invariant:
/// `ttl > safety_margin + keepalive_interval + election_timeout_max + keepalive_timeout`.
///
/// A holder must be able to miss one keepalive, wait out one Raft election
/// and complete one more round trip, and still stop `safety_margin` before
/// the Raft leader's deadline. Checked at load and on every `edit-config`;
/// the error is one sentence naming the smallest whole-second ttl that works.
pub fn check_timing(
    ttl: Duration,
    safety_margin: Duration,
    keepalive_interval: Duration,
    election_timeout_max: Duration,
    keepalive_timeout: Duration,
) -> Result<(), String> {
    let needed = safety_margin
        .saturating_add(keepalive_interval)
        .saturating_add(election_timeout_max)
        .saturating_add(keepalive_timeout);
    if ttl > needed {
        return Ok(());
    }
    let fmt = duration::format;
    let at_least = Duration::from_secs(needed.as_secs().saturating_add(1));
    Err(format!(
        "ttl {} must be longer than safety_margin {} + keepalive_interval {} + election_timeout_max {} + keepalive_timeout {} = {}, or the leader could lose its lease during one Raft election — raise ttl to at least {}",
        fmt(ttl),
        fmt(safety_margin),
        fmt(keepalive_interval),
        fmt(election_timeout_max),
        fmt(keepalive_timeout),
        fmt(needed),
        fmt(at_least),
    ))
}

impl Config {
    /// Every problem in this config for a node of `kind`, each with its key
    /// path and the fix; empty when the config is usable.
    pub fn validate(&self, kind: NodeKind) -> Vec<Problem> {
        let mut p = Problems::default();
        check_name(&mut p, "scope", &self.scope);
        check_name(&mut p, "name", &self.name);
        self.log.check(&mut p);
        self.raft.check(&mut p);
        self.check_own_entry(&mut p, kind);
        match kind {
            NodeKind::Witness => {
                let sections = [
                    ("postgresql", self.postgresql.is_some()),
                    ("restapi", self.restapi.is_some()),
                    ("bootstrap", self.bootstrap.is_some()),
                    ("tags", self.tags.is_some()),
                    ("watchdog", self.watchdog.is_some()),
                ];
                for (key, _) in sections.iter().filter(|(_, present)| *present) {
                    p.add(
                        *key,
                        format!("a witness runs no PostgreSQL: remove `{key}` from this file"),
                    );
                }
            }
            NodeKind::Data => {
                if let Some(restapi) = &self.restapi {
                    restapi.check(&mut p);
                }
                if let Some(postgresql) = &self.postgresql {
                    postgresql.check(&mut p);
                }
                let max = self.raft.election_timeout_max;
                match &self.bootstrap {
                    Some(bootstrap) => bootstrap.check(&mut p, max),
                    None => self.dcs().check(&mut p, "bootstrap.dcs.", max),
                }
                if let Some(tags) = &self.tags {
                    tags.check(&mut p);
                }
                if let Some(watchdog) = &self.watchdog {
                    watchdog.check(&mut p);
                }
            }
        }
        p.into_vec()
    }

    /// This node's entry in `raft.peers` must exist and agree with the rest
    /// of the file, or peers would dial or name it wrongly.
    fn check_own_entry(&self, p: &mut Problems, kind: NodeKind) {
        let raft = &self.raft;
        if raft.node_id == 0 || raft.peers.is_empty() {
            return; // already reported
        }
        let Some(i) = raft.peers.iter().position(|peer| peer.id == raft.node_id) else {
            p.add(
                "raft.node_id",
                format!(
                    "{} is not the id of any entry in raft.peers — add {{ id: {}, name: {}, address: {} }} to raft.peers or fix raft.node_id",
                    raft.node_id,
                    raft.node_id,
                    self.name,
                    raft.advertise_address()
                ),
            );
            return;
        };
        let me = &raft.peers[i];
        if me.name != self.name {
            p.add(
                format!("raft.peers[{i}].name"),
                format!(
                    "\"{}\" differs from this file's name \"{}\", yet raft.node_id {} says this entry is this node — write name: {} here or fix raft.node_id",
                    me.name, self.name, raft.node_id, self.name
                ),
            );
        }
        let mine = raft.advertise_address();
        let wildcard = raft.advertise.is_none() && raft.listen.ip().is_unspecified(); // reported by RaftConfig::check
        if !wildcard && !same_address(&me.address, &mine) {
            let (key, fix) = match raft.advertise {
                Some(_) => ("raft.advertise", "make the two equal"),
                None => (
                    "raft.listen",
                    "make the two equal, or set raft.advertise to the address peers dial",
                ),
            };
            p.add(
                format!("raft.peers[{i}].address"),
                format!("\"{}\" differs from {key} \"{mine}\", the address peers must dial to reach this node — {fix}", me.address),
            );
        }
        match (kind, me.witness) {
            (NodeKind::Witness, false) => p.add(
                format!("raft.peers[{i}].witness"),
                "this node runs as pgkeel-witness but its peer entry is not a witness — set witness: true on it, or run this file with pgkeel",
            ),
            (NodeKind::Data, true) => p.add(
                format!("raft.peers[{i}].witness"),
                "this file describes a witness; run it with pgkeel-witness, or remove witness: true from this node's peer entry",
            ),
            _ => {}
        }
    }
}
