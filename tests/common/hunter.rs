//! The lost-write hunter: a client writes unique ids through the multi-host
//! DSN while a seeded random schedule injects faults into a real cluster
//! (kill -9 of a node's pgkeel and postmaster, of a postmaster alone, of a
//! pgkeel alone, SIGTERM of a pgkeel, restarts, switchovers). After every
//! fault, once the cluster settled, and at the end it checks that every
//! acknowledged id is on the current primary (or that its loss is one the
//! mode allows), that no two members were writable at once (REST samples
//! and the write log, see [`check`]), and that the cluster is one primary
//! with every other member streaming on its timeline.
//!
//! `PGKEEL_HUNTER_SEED=N` replays a schedule, `PGKEEL_HUNTER_FAULTS=N`
//! sets how many faults (the bench's long mode).

#[path = "hunter_check.rs"]
pub mod check;
#[path = "hunter_mode.rs"]
mod mode;
#[path = "hunter_sampler.rs"]
mod sampler;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::procs::ProcCluster;
use crate::realpg::{direct_dsn, SUPERUSER_PASSWORD as PASSWORD};
use crate::writeloop::{self, Ack, WriteLoop};
use check::{FaultOutcome, Sample};
use mode::query_text;
pub use mode::{set_mode, Mode};
use sampler::Sampler;

/// Bound on every wait for the cluster to settle after a fault.
const SETTLE: Duration = Duration::from_secs(120);
/// The examples' `bootstrap.dcs.ttl`.
const TTL: Duration = Duration::from_secs(5);

/// What one hunt saw.
#[derive(Debug, Clone)]
pub struct HuntReport {
    pub mode: String,
    pub seed: u64,
    pub faults: Vec<String>,
    pub acknowledged: usize,
    /// Acknowledged ids missing from the final primary (always within
    /// what the mode allows, or the hunt panicked).
    pub lost: Vec<i64>,
    pub rest_samples: usize,
    pub took: Duration,
}

impl HuntReport {
    /// One line of figures: mode, faults, writes acknowledged and lost.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} faults injected, {} writes acknowledged, {} lost, {} REST samples, {} (seed {})",
            self.mode,
            self.faults.len(),
            self.acknowledged,
            self.lost.len(),
            self.rest_samples,
            check::secs(self.took),
            self.seed
        )
    }
}

/// A seeded schedule (splitmix64: tiny, and the same on every machine).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, upto: Duration) -> Duration {
        Duration::from_millis(self.below(upto.as_millis() as u64))
    }
}

/// The faults the schedule draws from (a machine loss twice as often).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// kill -9 of the node's pgkeel and its postmaster, restart later.
    Machine,
    /// SIGKILL of the postmaster alone; pgkeel restarts it.
    Postmaster,
    /// kill -9 of pgkeel alone (its postmaster follows by its death
    /// signal), restart later.
    AgentKill,
    /// SIGTERM of pgkeel (a clean stop), restart later.
    AgentTerm,
    /// `pgkeelctl switchover --force`.
    Switchover,
}

const SCHEDULE: [Fault; 6] = [
    Fault::Machine,
    Fault::Machine,
    Fault::Postmaster,
    Fault::AgentKill,
    Fault::AgentTerm,
    Fault::Switchover,
];

/// One hunt: which cluster, which mode, how many faults, which seed.
pub struct Hunt {
    pub mode: Mode,
    /// `config/examples/<example>`: two-plus-witness or three-node.
    pub example: &'static str,
    pub data_nodes: usize,
    pub faults: usize,
    pub seed: u64,
}

impl Hunt {
    /// `faults` and a fresh seed unless `PGKEEL_HUNTER_FAULTS` /
    /// `PGKEEL_HUNTER_SEED` say otherwise.
    pub fn new(mode: Mode, example: &'static str, data_nodes: usize, faults: usize) -> Hunt {
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let seed = env("PGKEEL_HUNTER_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
        let faults = env("PGKEEL_HUNTER_FAULTS").map_or(faults, |n| n as usize);
        Hunt {
            mode,
            example,
            data_nodes,
            faults,
            seed,
        }
    }

    /// Runs the hunt; panics with the seed, the faults and the lost ids
    /// when a check fails.
    pub fn run(&self) -> HuntReport {
        let started = Instant::now();
        eprintln!(
            "lost-write hunter: {} on {}, {} faults, seed {} (replay: PGKEEL_HUNTER_SEED={})",
            self.mode.label(),
            self.example,
            self.faults,
            self.seed,
            self.seed
        );
        let mut c = ProcCluster::from_example(self.example);
        c.start_all();
        let (leader, hosts) = c.wait_streaming(self.data_nodes, SETTLE);
        let mut run = Run {
            started,
            hunt: self,
            rng: Rng(self.seed),
            members: hosts.keys().cloned().collect(),
            leader,
            hosts,
            faults: Vec::new(),
            lost: BTreeMap::new(),
            max_lag: maximum_lag_on_failover(&c),
            c,
        };
        run.configure();
        let all: Vec<String> = run.hosts.values().cloned().collect();
        let writes = WriteLoop::start(
            writeloop::dsn(&all, PASSWORD),
            Duration::from_millis(10),
            i64::MAX / 4,
            Duration::from_secs(24 * 3600),
        );
        if !writes.wait_for_more(20, SETTLE) {
            run.fail("the client never wrote", 0);
        }
        let rest: Vec<String> = run
            .members
            .iter()
            .map(|m| run.c.rest_address(&run.c.file_of(m)))
            .collect();
        let sampler = Sampler::start(rest);
        for n in 1..=self.faults {
            let old_port = run.port(&run.leader);
            let (fault, primary) = run.inject(n, &writes);
            run.settle(&writes);
            let outcome = run.outcome(fault, primary, old_port);
            let acks = writes.stats().acks;
            run.check_acknowledged(&acks, &outcome);
            run.check_one_writer(&acks, &sampler.snapshot());
            // Let the client write a little before the next fault.
            std::thread::sleep(Duration::from_millis(200) + run.rng.millis(TTL / 4));
        }
        let stats = writes.finish();
        let samples = sampler.finish();
        run.settle_without_writes();
        let final_outcome = FaultOutcome {
            primary_lost: false,
            old_port: 0,
            timeline: 0,
            switch_points: BTreeMap::new(),
        };
        run.check_acknowledged(&stats.acks, &final_outcome);
        run.check_one_writer(&stats.acks, &samples);
        HuntReport {
            mode: self.mode.label(),
            seed: self.seed,
            faults: run.faults.clone(),
            acknowledged: stats.acks.len(),
            lost: run.lost.keys().copied().collect(),
            rest_samples: samples.len(),
            took: started.elapsed(),
        }
    }
}

/// The state of a hunt in progress.
struct Run<'a> {
    hunt: &'a Hunt,
    /// The origin of the REST samples' times and of the fault lines'.
    started: Instant,
    c: ProcCluster,
    rng: Rng,
    /// Data members by name, in a fixed order.
    members: Vec<String>,
    leader: String,
    /// Member name → PostgreSQL host:port.
    hosts: BTreeMap<String, String>,
    faults: Vec<String>,
    /// Ids found missing so far, with the fault after which they were.
    lost: BTreeMap<i64, usize>,
    max_lag: i64,
}

impl Run<'_> {
    fn port(&self, member: &str) -> i32 {
        self.hosts
            .get(member)
            .and_then(|h| h.rsplit_once(':'))
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }

    /// Sets the hunt's mode (see [`set_mode`]).
    fn configure(&mut self) {
        let via = self.c.file_of(&self.leader);
        if let Err(e) = set_mode(&self.c, &via, &self.hosts[&self.leader], self.hunt.mode) {
            self.fail(&e, 0);
        }
    }

    /// Draws and injects fault `n`; returns it and whether it hit the primary.
    fn inject(&mut self, n: usize, writes: &WriteLoop) -> (Fault, bool) {
        let fault = SCHEDULE[self.rng.below(SCHEDULE.len() as u64) as usize];
        let primary = fault == Fault::Switchover || self.rng.below(2) == 0;
        let target = if primary {
            self.leader.clone()
        } else {
            let replicas: Vec<&String> =
                self.members.iter().filter(|m| **m != self.leader).collect();
            replicas[self.rng.below(replicas.len() as u64) as usize].clone()
        };
        let role = if primary { "primary" } else { "replica" };
        let file = self.c.file_of(&target);
        // Half the time a quick restart (the agent may adopt its lease),
        // half the time long enough for the lease to expire.
        let quick = Duration::from_secs(2);
        let down = self.rng.millis(quick)
            + if self.rng.below(2) == 0 {
                Duration::ZERO
            } else {
                TTL
            };
        let acked = writes.stats().acks.len();
        let what = match fault {
            Fault::Machine => {
                self.c.kill_machine(&file);
                std::thread::sleep(down);
                self.c.start(&file);
                format!("kill -9 pgkeel + postmaster of {role} {target}, restarted after {down:?}")
            }
            Fault::Postmaster => {
                let postmaster = self.c.postmaster_pid(&file);
                if let Some(pid) = postmaster {
                    kill(pid, libc::SIGKILL);
                }
                format!("kill -9 the postmaster alone of {role} {target} (pid {postmaster:?})")
            }
            Fault::AgentKill => {
                self.c.kill9(&file);
                std::thread::sleep(down);
                self.c.start(&file);
                format!("kill -9 pgkeel alone of {role} {target}, restarted after {down:?}")
            }
            Fault::AgentTerm => {
                self.c.sigterm(&file);
                std::thread::sleep(down);
                self.c.start(&file);
                format!("SIGTERM pgkeel of {role} {target}, restarted after {down:?}")
            }
            Fault::Switchover => {
                let via = self
                    .c
                    .file_of(&self.members[self.rng.below(self.members.len() as u64) as usize]);
                let out = self.c.ctl(&via, &["switchover", "--force"]);
                if out.status.code() == Some(2) {
                    self.fail(
                        &format!(
                            "pgkeelctl switchover said usage: {}",
                            crate::procs::stderr(&out)
                        ),
                        acked,
                    );
                }
                let said = if out.status.success() {
                    crate::procs::stdout(&out)
                } else {
                    format!("refused: {}", crate::procs::stderr(&out))
                };
                format!("switchover from {target} through {via}: {said}")
            }
        };
        let line = format!(
            "{n}. {what} (at {}, write #{acked})",
            check::secs(self.started.elapsed())
        );
        tracing::info!("hunter fault {line}");
        self.faults.push(line);
        (fault, primary)
    }

    /// Waits, bounded, for one primary with every other member streaming
    /// on its timeline, and for the client to write again.
    fn settle(&mut self, writes: &WriteLoop) {
        self.settle_without_writes();
        if !writes.wait_for_more(5, SETTLE) {
            self.fail(
                "the client did not write again within the settle bound",
                writes.stats().acks.len(),
            );
        }
    }

    fn settle_without_writes(&mut self) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (leader, _) = match self.c.try_streaming(self.hunt.data_nodes, left) {
                Ok(x) => x,
                Err(e) => self.fail(&format!("the cluster did not settle: {e}"), 0),
            };
            let timelines = self.c.timelines(&self.c.file_of(&leader));
            let tl = timelines.get(&leader).copied().flatten();
            if tl.is_some() && timelines.values().all(|t| *t == tl) {
                self.leader = leader;
                return;
            }
            if Instant::now() > deadline {
                self.fail(
                    &format!("members stay on different timelines: {timelines:?}"),
                    0,
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What the fault did, read from the new primary.
    fn outcome(&self, fault: Fault, primary: bool, old_port: i32) -> FaultOutcome {
        let host = &self.hosts[&self.leader];
        let timeline: i64 = query_text(
            host,
            "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
        )
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
        let history = if timeline > 1 {
            query_text(
                host,
                &format!("select pg_read_file('pg_wal/{timeline:08X}.history')"),
            )
            .unwrap_or_default()
        } else {
            String::new()
        };
        FaultOutcome {
            primary_lost: primary && fault != Fault::Switchover,
            old_port,
            timeline,
            switch_points: check::parse_history(&history),
        }
    }

    /// Every acknowledged id must be on the current primary, unless the
    /// mode may lose it across `outcome` (see `tests/lost_writes.rs`).
    fn check_acknowledged(&mut self, acks: &[Ack], outcome: &FaultOutcome) {
        let ids: Vec<i64> = acks.iter().map(|a| a.id).collect();
        let dsn = direct_dsn(&self.hosts[&self.leader]);
        let missing = match writeloop::missing(&dsn, &ids) {
            Ok(m) => m,
            Err(e) => self.fail(
                &format!(
                    "cannot read the writes back from the primary {}: {e}",
                    self.leader
                ),
                acks.len(),
            ),
        };
        let new: BTreeSet<i64> = missing
            .iter()
            .copied()
            .filter(|id| !self.lost.contains_key(id))
            .collect();
        if new.is_empty() {
            return;
        }
        let lost: Vec<Ack> = acks
            .iter()
            .filter(|a| new.contains(&a.id))
            .copied()
            .collect();
        let mode = self.hunt.mode;
        let problems = if mode.lossless() {
            vec![format!(
                "{} acknowledged writes lost in a lossless mode",
                lost.len()
            )]
        } else {
            check::unallowed_losses(&lost, outcome, mode.synchronous_mode != "off", self.max_lag)
        };
        let after = self.faults.len();
        for id in &new {
            self.lost.insert(*id, after);
        }
        tracing::info!(lost = new.len(), after, "writes lost");
        if !problems.is_empty() {
            self.fail(&problems.join("\n"), acks.len());
        }
    }

    /// No two members writable at once, by the write log and by the REST
    /// samples so far.
    fn check_one_writer(&self, acks: &[Ack], samples: &[Sample]) {
        let mut problems = check::log_overlaps(acks);
        problems.extend(check::rest_overlaps(samples, &self.members, self.started));
        if !problems.is_empty() {
            self.fail(&problems.join("\n"), acks.len());
        }
    }

    /// Panics with everything needed to replay and read the failure.
    fn fail(&self, problem: &str, acked: usize) -> ! {
        panic!(
            "lost-write hunter failed ({}, seed {seed}; replay with PGKEEL_HUNTER_SEED={seed} PGKEEL_HUNTER_FAULTS={}):\n{problem}\nfaults:\n  {}\nacknowledged writes: {acked}; lost ids (after fault #): {:?}\n{}",
            self.hunt.mode.label(),
            self.hunt.faults,
            self.faults.join("\n  "),
            self.lost,
            self.c.logs(),
            seed = self.hunt.seed,
        )
    }
}

/// `bootstrap.dcs.maximum_lag_on_failover` of the first data node's file.
fn maximum_lag_on_failover(c: &ProcCluster) -> i64 {
    c.nodes
        .values()
        .filter(|n| !n.witness)
        .find_map(|n| {
            let text = std::fs::read_to_string(&n.config).ok()?;
            let v: serde_norway::Value = serde_norway::from_str(&text).ok()?;
            v["bootstrap"]["dcs"]["maximum_lag_on_failover"].as_i64()
        })
        .unwrap_or(1 << 20)
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a PID read from the cluster's own postmaster.pid.
    unsafe {
        libc::kill(pid, signal);
    }
}
