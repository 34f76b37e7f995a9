//! The invariant checker and the failure report.
//!
//! Evaluated after every event, which is every instant anything changes:
//! - **one writer**: at most one fake PostgreSQL accepts writes;
//! - **lease-bound writes** (DESIGN.md's rule, stronger): a server accepts
//!   writes only while the store's `leader` key names its node;
//! - **no acknowledged commit lost** (synchronous mode, on or quorum,
//!   strict or not): a promoted node's fork point from the timeline it
//!   left is at least the highest position ever acknowledged on that
//!   timeline. A primary acknowledges WAL position p once, per the
//!   `synchronous_standby_names` in force, `n` listed standbys streaming
//!   from it have received p (FIRST n and ANY n alike; at once when the
//!   setting is empty). Commits acknowledged under an empty setting (not
//!   strict, no standby) are told apart in the message: DESIGN.md allows
//!   losing those, but pgkeel's order (a winner claims the key with an
//!   empty set, which promotes nobody) should lose none, so this checks
//!   the strong version.
//!
//! A violation fails the run at once (with the seed and the last events),
//! unless the scenario studies a known limitation and asked to record
//! violations instead.

use std::collections::{BTreeMap, VecDeque};

use pgkeel::ha::sanitize_slot_name;

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
    /// Per branch of WAL history, the highest position acknowledged.
    acked: BTreeMap<Branch, Acked>,
    /// Every promotion, in order.
    pub promotions: Vec<Promotion>,
}

/// One line of WAL history: system id, the timelines before it and where
/// each ended, the timeline. (Timeline numbers alone may repeat on
/// different branches.)
type Branch = (u64, Vec<(u32, u64)>, u32);

/// The highest positions a branch's primary acknowledged.
#[derive(Debug, Clone, Copy, Default)]
struct Acked {
    /// Under any setting.
    any: u64,
    /// While standbys were waited for (a non-empty setting).
    waited: u64,
}

/// A standby promoted, and what its old timeline had acknowledged.
#[derive(Debug, Clone)]
pub struct Promotion {
    pub node: usize,
    /// Where it left the old timeline.
    pub fork: u64,
    /// The highest position acknowledged there (0: none recorded).
    pub acked: u64,
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
            acked: BTreeMap::new(),
            promotions: Vec::new(),
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

    /// Records what each writable primary has acknowledged so far (called
    /// whenever WAL positions were brought up to date).
    pub(super) fn record_acks(&mut self) {
        for i in 0..self.n_data {
            let pg = &self.nodes[i].pg;
            let Some(d) = pg.data.as_ref().filter(|_| pg.writable()) else {
                continue;
            };
            let setting = pg.sync_setting();
            let waited = !setting.is_async();
            let acked = if waited {
                let name = &self.nodes[i].name;
                let mut lsns: Vec<u64> = (0..self.n_data)
                    .filter(|j| *j != i)
                    .filter_map(|j| {
                        let s = &self.nodes[j].pg;
                        let from_us = s.upstream.as_ref().is_some_and(|u| u.member == *name);
                        let slot = sanitize_slot_name(&self.nodes[j].name);
                        let listed = setting.names.contains(&slot) || setting.names.contains("*");
                        (s.standby() && s.streaming && from_us && listed)
                            .then(|| s.data.as_ref().map(|x| x.lsn))
                            .flatten()
                    })
                    .collect();
                lsns.sort_unstable_by(|a, b| b.cmp(a));
                let n = usize::try_from(setting.num).unwrap_or(usize::MAX);
                lsns.get(n.saturating_sub(1)).map(|l| (*l).min(d.lsn))
            } else {
                Some(d.lsn)
            };
            let Some(acked) = acked else { continue };
            let branch = (d.sysid, d.history.clone(), d.timeline);
            let e = self.checks.acked.entry(branch).or_default();
            e.any = e.any.max(acked);
            if waited {
                e.waited = e.waited.max(acked);
            }
        }
    }

    /// The highest position acknowledged on node `i`'s current branch.
    pub fn acked_on(&self, i: usize) -> u64 {
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return 0;
        };
        let branch = (d.sysid, d.history.clone(), d.timeline);
        self.checks.acked.get(&branch).map_or(0, |a| a.any)
    }

    /// Node `i` was just promoted: in synchronous mode its fork point must
    /// hold every commit acknowledged on the timeline it left.
    pub(super) fn check_promotion(&mut self, i: usize) {
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return;
        };
        let Some((&(old_tl, fork), before)) = d.history.split_last() else {
            return;
        };
        let branch = (d.sysid, before.to_vec(), old_tl);
        let acked = self.checks.acked.get(&branch).copied().unwrap_or_default();
        self.checks.promotions.push(Promotion {
            node: i,
            fork,
            acked: acked.any,
        });
        let name = self.nodes[i].name.clone();
        self.trace(
            i,
            format!(
                "promoted at {fork:X} on timeline {old_tl}; acknowledged there: {:X} ({:X} while standbys were waited for)",
                acked.any, acked.waited
            ),
        );
        if !self.cfg.sync.enabled() || fork >= acked.any {
            return;
        }
        let what = if fork < acked.waited {
            "commits acknowledged by synchronous standbys"
        } else {
            "commits acknowledged while synchronous_standby_names was empty (unprotected)"
        };
        self.violation(
            vec![i],
            format!(
                "{name} was promoted at {fork:X} on timeline {old_tl}, but {:X} was acknowledged there: {what} are lost",
                acked.any
            ),
        );
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
            "{label}, seed {seed}{sync}, at {at}: {what}\n\
             replay: PGKEEL_SIM_SEED={seed} cargo test --test ha_sim {label}\n\
             nodes:\n  {nodes}\n\
             last events:\n  {trace}",
            label = self.checks.label,
            seed = self.checks.seed,
            sync = if self.cfg.sync.enabled() {
                format!(" ({:?})", self.cfg.sync)
            } else {
                String::new()
            },
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
                    "{}: up {} paused {} core {:?} pg {:?} upstream {:?} streaming {} data {:?} sync names {:?}",
                    n.name,
                    n.up,
                    n.paused(),
                    state,
                    n.pg.proc,
                    n.pg.upstream.as_ref().map(|u| u.member.as_str()),
                    n.pg.streaming,
                    data,
                    n.pg.sync_names,
                )
            })
            .collect();
        out.push(format!(
            "store: leader key {:?}, sync key {:?}, Raft leader {:?}",
            self.store.leader_holder(),
            self.store.sync_key(),
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
