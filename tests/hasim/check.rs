//! The invariant checker and the failure report.
//!
//! Evaluated after every event, which is every instant anything changes:
//! - **one writer**: at most one fake PostgreSQL accepts writes;
//! - **lease-bound writes** (DESIGN.md's rule, stronger): a server accepts
//!   writes only while the store's `leader` key names its node.
//!
//! A violation fails the run at once (with the seed and the last events),
//! unless the scenario studies a known limitation and asked to record
//! violations instead.

use std::collections::VecDeque;

use super::clock::T;
use super::{fmt_t, Sim, SimConfig};

const TRACE_LINES: usize = 60;

/// One recorded violation.
#[derive(Debug, Clone)]
pub struct Violation {
    pub at: T,
    /// The nodes whose servers accepted writes.
    pub writers: Vec<usize>,
    pub what: String,
}

/// The checker's state.
pub struct Checks {
    seed: u64,
    label: String,
    trace: VecDeque<String>,
    /// Fail at the first violation (the default).
    pub fail_fast: bool,
    pub violations: Vec<Violation>,
    last_writers: Vec<usize>,
    last_unbound: Vec<usize>,
    /// How often the set of writable servers changed.
    pub writer_changes: u64,
}

impl Checks {
    pub fn new(cfg: &SimConfig) -> Checks {
        Checks {
            seed: cfg.seed,
            label: cfg.label.clone(),
            trace: VecDeque::new(),
            fail_fast: true,
            violations: Vec::new(),
            last_writers: Vec::new(),
            last_unbound: Vec::new(),
            writer_changes: 0,
        }
    }
}

impl Sim {
    pub(super) fn check(&mut self) {
        let writers = self.writable();
        if writers != self.checks.last_writers {
            let names: Vec<String> = writers
                .iter()
                .map(|i| self.nodes[*i].name.clone())
                .collect();
            self.trace_msg(format!("writable now: {names:?}"));
            self.checks.writer_changes += 1;
            self.checks.last_writers = writers.clone();
            if writers.len() > 1 {
                self.violation(
                    writers.clone(),
                    format!("{} servers accept writes at once: {names:?}", writers.len()),
                );
            }
        }
        let holder = self.store.leader_holder();
        let unbound: Vec<usize> = writers
            .iter()
            .copied()
            .filter(|i| holder.as_deref() != Some(self.nodes[*i].name.as_str()))
            .collect();
        if unbound != self.checks.last_unbound {
            self.checks.last_unbound = unbound.clone();
            if !unbound.is_empty() {
                let names: Vec<String> = unbound
                    .iter()
                    .map(|i| self.nodes[*i].name.clone())
                    .collect();
                self.violation(
                    unbound,
                    format!("{names:?} accept writes while the leader key names {holder:?}"),
                );
            }
        }
    }

    fn violation(&mut self, writers: Vec<usize>, what: String) {
        self.trace_msg(format!("VIOLATION: {what}"));
        self.checks.violations.push(Violation {
            at: self.now,
            writers,
            what: what.clone(),
        });
        if self.checks.fail_fast {
            self.fail(what);
        }
    }

    /// Fails the run: the seed to replay and the last events.
    pub fn fail(&self, what: String) -> ! {
        let trace: Vec<&str> = self.checks.trace.iter().map(String::as_str).collect();
        panic!(
            "{label}, seed {seed}, at {at}: {what}\n\
             replay: PGKEEL_SIM_SEED={seed} cargo test --test ha_sim {label}\n\
             nodes:\n  {nodes}\n\
             last events:\n  {trace}",
            label = self.checks.label,
            seed = self.checks.seed,
            at = fmt_t(self.now),
            nodes = self.describe().join("\n  "),
            trace = trace.join("\n  "),
        )
    }

    /// One line per node: host, core state, PostgreSQL.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let state = n.ha.as_ref().map(|h| format!("{:?}", h.state()));
                let data = n.pg.data.as_ref().map(|d| {
                    format!(
                        "tl {} lsn {:X} was_primary {}",
                        d.timeline, d.lsn, d.was_primary
                    )
                });
                format!(
                    "{}: up {} paused {} core {:?} pg {:?} upstream {:?} streaming {} data {:?}",
                    n.name,
                    n.up,
                    n.paused(),
                    state,
                    n.pg.proc,
                    n.pg.upstream.as_ref().map(|u| u.member.as_str()),
                    n.pg.streaming,
                    data,
                )
            })
            .collect();
        out.push(format!(
            "store: leader key {:?}, Raft leader {:?}",
            self.store.leader_holder(),
            self.raft_leader_index()
                .map(|i| self.nodes[i].name.as_str())
        ));
        out
    }

    /// Fails the run unless `ok`.
    pub fn expect(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    pub(super) fn trace(&mut self, node: usize, msg: String) {
        let name = self.nodes[node].name.clone();
        self.trace_msg(format!("{name}: {msg}"));
    }

    pub(super) fn trace_msg(&mut self, msg: String) {
        let line = format!("{:>10} {msg}", fmt_t(self.now));
        if std::env::var_os("PGKEEL_SIM_VERBOSE").is_some() {
            eprintln!("{line}");
        }
        self.checks.trace.push_back(line);
        while self.checks.trace.len() > TRACE_LINES {
            self.checks.trace.pop_front();
        }
    }
}
