//! A deterministic simulator for the HA core (DESIGN.md, tests tier 2).
//!
//! Several data nodes (and optionally a witness) live in one process. Each
//! data node runs the real [`Ha`] core, fed the way `src/agent` feeds it;
//! everything around the core is modelled:
//!
//! ```text
//!            true time (one clock, a priority queue of events)
//!   node i: local clock = offset_i + true * (1 + ppm_i)   (skew, drift)
//!           agent  = Ha core + a driver (timer, store lane, PostgreSQL lane)
//!           pg     = FakePg (stopped / standby / writable primary)
//!           voter  = one Raft voter of the store (same process as the agent)
//!   store:  the real KvState (replicated state machine) and, on the Raft
//!           leader, the real Lessor on that leader's own clock
//!   network: a directed link matrix (asymmetric cuts)
//! ```
//!
//! Actions take modelled time drawn from the seeded RNG. A paused node is a
//! frozen pgkeel process: its agent processes nothing and its voter neither
//! votes nor leads, but its PostgreSQL keeps running and its clock keeps
//! counting. After every event the checker (see `check`) asserts that at
//! most one fake PostgreSQL accepts writes; a failure names the seed and
//! prints the last events.

mod check;
pub mod clock;
pub mod pg;
mod store;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use pgkeel::consensus::kv::KvState;
use pgkeel::ha::{
    Action, ActionDone, ActionKind, ClusterView, Event, Ha, HaConfig, MemberTags, NodeInfo,
    RejoinPolicy, StartAs, StopMode, SyncSettings, Upstream,
};
use pgkeel::store::lessor::Lessor;

use clock::{NodeClock, Rng, MS, S, T};
use pg::{Data, FakePg, INITIAL_LSN};

pub use check::Checks;

/// How long the watchdog's own reset takes: each kick sets the timeout to
/// what is left of `valid_until` minus this.
pub const WATCHDOG_RESET: T = 200 * MS;
/// `raft.request_timeout`.
pub const REQUEST_TIMEOUT: T = 2 * S;
/// How often a store request retries while there is no reachable leader.
const REQUEST_RETRY: T = 50 * MS;

/// The dynamic config every node sees (the defaults: ttl 5 s, loop_wait
/// 1 s, keepalive 1 s, safety_margin 1 s).
pub fn ha_config() -> HaConfig {
    HaConfig::default()
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub data_nodes: usize,
    /// A third voter without PostgreSQL.
    pub witness: bool,
    /// A watchdog on every data node (see [`WATCHDOG_RESET`]).
    pub watchdog: bool,
    /// Scenario name for failure messages.
    pub label: String,
    /// The dynamic config's synchronous replication settings.
    pub sync: SyncSettings,
}

/// One host: a voter, and for data nodes an agent and a PostgreSQL.
pub struct Node {
    pub name: String,
    pub witness: bool,
    pub clock: NodeClock,
    /// The host runs (a crash or a watchdog reset takes it down).
    pub up: bool,
    /// The pgkeel process is frozen until this instant.
    pub paused_until: Option<T>,
    /// Bumped on every crash and restart: answers to an earlier
    /// incarnation are dropped.
    inc: u64,
    pub ha: Option<Ha>,
    /// Events that arrived while frozen, delivered in order on resume.
    inbox: Vec<Event>,
    pub pg: FakePg,
    /// WAL bytes this node's stream stays behind its upstream.
    pub stream_lag: u64,
    /// The PostgreSQL-lane action running: (op id, kind).
    pg_task: Option<(u64, ActionKind)>,
    tick_gen: u64,
    wd_gen: u64,
    /// When the armed watchdog fires.
    pub wd_fires_at: Option<T>,
    /// The leader key holder in the last view the agent got (for the
    /// trace).
    last_seen_leader: Option<Option<String>>,
    /// This voter's lessor (used while it is the Raft leader).
    lessor: Lessor,
    /// The store state this voter has applied, as the agent's view.
    applied: ClusterView,
}

impl Node {
    pub fn paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// Up and not frozen: the process runs.
    pub fn alive(&self) -> bool {
        self.up && !self.paused()
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name.clone(),
            api_url: format!("http://{}:8008", self.name),
            pg_address: format!("{}:5432", self.name),
            tags: MemberTags::default(),
            rejoin: RejoinPolicy::default(),
            callbacks: Default::default(),
        }
    }
}

/// Something that happens at a true instant.
#[derive(Debug, Clone)]
enum Ev {
    Tick {
        node: usize,
        inc: u64,
        gen: u64,
    },
    /// An event for the agent (buffered while it is frozen).
    Input {
        node: usize,
        inc: u64,
        event: Box<Event>,
    },
    PgDone {
        node: usize,
        inc: u64,
        op: u64,
        action: Action,
    },
    FenceDone {
        node: usize,
        inc: u64,
    },
    Resume {
        node: usize,
        inc: u64,
    },
    WatchdogFire {
        node: usize,
        gen: u64,
    },
    /// The watchdog's reset lands: the host goes down, and reboots later.
    Reset {
        node: usize,
        inc: u64,
    },
    Restart {
        node: usize,
    },
    Store(store::StoreEv),
}

struct Item {
    at: T,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    /// Reversed: the heap pops the earliest (then the first queued).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulated world.
pub struct Sim {
    pub cfg: SimConfig,
    pub now: T,
    rng: Rng,
    queue: BinaryHeap<Item>,
    seq: u64,
    next_op: u64,
    pub nodes: Vec<Node>,
    pub n_data: usize,
    /// `links[a][b]`: a message from `a` reaches `b`.
    links: Vec<Vec<bool>>,
    store: store::Store,
    pub checks: Checks,
    /// Bound on processed events, so a runaway loop fails instead of
    /// hanging.
    events: u64,
}

const MAX_EVENTS: u64 = 3_000_000;

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let mut rng = Rng::new(cfg.seed);
        let voters = cfg.data_nodes + usize::from(cfg.witness);
        let mut nodes = Vec::new();
        for i in 0..voters {
            let witness = i >= cfg.data_nodes;
            let name = if witness {
                "witness".to_string()
            } else {
                format!("n{}", i + 1)
            };
            let ppm = rng.range(0, 2000) as i64 - 1000;
            // How far behind its upstream this node streams: 0 to 100 ms
            // of WAL (so standbys differ, and a primary's last WAL is on
            // no standby when it dies).
            let stream_lag = rng.range(0, 100) * pg::WAL_PER_MS;
            let clock = NodeClock {
                offset: rng.range(1, 10_000) * S + rng.range(0, S),
                ppm,
            };
            nodes.push(Node {
                name,
                witness,
                clock,
                up: true,
                paused_until: None,
                inc: 0,
                ha: None,
                inbox: Vec::new(),
                pg: FakePg::new(),
                stream_lag,
                pg_task: None,
                tick_gen: 0,
                wd_gen: 0,
                wd_fires_at: None,
                last_seen_leader: None,
                lessor: Lessor::default(),
                applied: ClusterView {
                    config: HaConfig {
                        sync: cfg.sync,
                        ..ha_config()
                    },
                    ..ClusterView::default()
                },
            });
        }
        let checks = Checks::new(&cfg);
        let mut sim = Sim {
            n_data: cfg.data_nodes,
            cfg,
            now: 0,
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            next_op: 0,
            nodes,
            links: vec![vec![true; voters]; voters],
            store: store::Store::new(KvState::default()),
            checks,
            events: 0,
        };
        sim.trace_msg("start: every host boots; no Raft leader yet".into());
        sim.topology_changed();
        for i in 0..sim.n_data {
            sim.start_agent(i);
        }
        sim
    }

    /// The dynamic config every node sees: [`ha_config`] with this run's
    /// synchronous settings.
    pub fn ha_cfg(&self) -> HaConfig {
        HaConfig {
            sync: self.cfg.sync,
            ..ha_config()
        }
    }

    /// Delivers `event` to node `i` (incarnation `inc`) at `at`.
    fn input_at(&mut self, at: T, i: usize, inc: u64, event: Event) {
        let event = Box::new(event);
        self.push(
            at,
            Ev::Input {
                node: i,
                inc,
                event,
            },
        );
    }

    fn push(&mut self, at: T, ev: Ev) {
        self.seq += 1;
        self.queue.push(Item {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// Processes events up to and including true time `t`.
    pub fn run_until(&mut self, t: T) {
        while self.queue.peek().is_some_and(|i| i.at <= t) {
            let Some(item) = self.queue.pop() else { break };
            self.now = item.at;
            self.events += 1;
            if self.events > MAX_EVENTS {
                self.fail("the simulation ran away (too many events)".into());
            }
            self.handle(item.ev);
            self.check();
        }
        self.now = t;
    }

    pub fn run_for(&mut self, d: T) {
        self.run_until(self.now + d);
    }

    /// Runs until `pred` holds (checked after every event) or `limit` of
    /// true time passed. Returns whether it held.
    pub fn run_until_pred(&mut self, limit: T, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if pred(self) {
                return true;
            }
            let Some(next) = self.queue.peek().map(|i| i.at) else {
                self.now = end;
                return pred(self);
            };
            if next > end {
                self.now = end;
                return pred(self);
            }
            self.run_until(next);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, inc, gen } => {
                let n = &self.nodes[node];
                if n.inc == inc && n.tick_gen == gen && !n.paused() {
                    self.feed(node, Event::Tick);
                }
            }
            Ev::Input { node, inc, event } => {
                if self.nodes[node].inc == inc {
                    self.feed(node, *event);
                }
            }
            Ev::PgDone {
                node,
                inc,
                op,
                action,
            } => {
                let n = &self.nodes[node];
                if n.inc != inc || n.pg_task.map(|(o, _)| o) != Some(op) {
                    return;
                }
                self.nodes[node].pg_task = None;
                let event = self.apply_pg(node, action);
                self.feed(node, event);
            }
            Ev::FenceDone { node, inc } => {
                if self.nodes[node].inc != inc {
                    return;
                }
                self.replicate();
                self.nodes[node].pg.stop(self.now, false);
                self.trace(node, "fence: postmaster stopped by PID".into());
                self.feed(node, done(ActionKind::Fence, Ok(pgkeel::ha::Reply::Done)));
            }
            Ev::Resume { node, inc } => {
                if self.nodes[node].inc != inc || !self.nodes[node].paused() {
                    return;
                }
                self.nodes[node].paused_until = None;
                self.trace(node, "resumes".into());
                self.topology_changed();
                let inbox = std::mem::take(&mut self.nodes[node].inbox);
                for event in inbox {
                    self.feed(node, event);
                }
                self.feed(node, Event::Tick);
            }
            Ev::WatchdogFire { node, gen } => {
                if self.nodes[node].wd_gen != gen || !self.nodes[node].up {
                    return;
                }
                self.trace(node, "watchdog fires: hardware reset under way".into());
                let inc = self.nodes[node].inc;
                let at = self.now + self.rng.range(0, WATCHDOG_RESET);
                self.push(at, Ev::Reset { node, inc });
            }
            Ev::Reset { node, inc } => {
                if self.nodes[node].inc == inc && self.nodes[node].up {
                    self.crash(node);
                    let at = self.now + self.rng.ms(2000, 5000);
                    self.push(at, Ev::Restart { node });
                }
            }
            Ev::Restart { node } => {
                if !self.nodes[node].up {
                    self.restart(node);
                }
            }
            Ev::Store(ev) => self.store_event(ev),
        }
    }

    // ---- faults the scenarios inject ------------------------------------

    /// The host dies: PostgreSQL with it (no clean shutdown), the agent,
    /// the voter.
    pub fn crash(&mut self, i: usize) {
        // Everything streamed up to this instant arrived.
        self.replicate();
        let now = self.now;
        let n = &mut self.nodes[i];
        n.up = false;
        n.inc += 1;
        n.ha = None;
        n.inbox.clear();
        n.paused_until = None;
        n.pg_task = None;
        n.wd_gen += 1;
        n.wd_fires_at = None;
        n.pg.stop(now, false);
        self.trace(i, "host crashes (PostgreSQL and agent with it)".into());
        self.topology_changed();
    }

    /// The host boots again: its voter with its persisted state, a fresh
    /// agent, PostgreSQL stopped.
    pub fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.up = true;
        n.inc += 1;
        self.trace(i, "host boots".into());
        self.topology_changed();
        if !self.nodes[i].witness {
            self.start_agent(i);
        }
    }

    /// Freezes the pgkeel process (agent and voter) for `d` of true time.
    pub fn pause(&mut self, i: usize, d: T) {
        let inc = self.nodes[i].inc;
        self.nodes[i].paused_until = Some(self.now + d);
        self.trace(i, format!("pgkeel frozen for {}", fmt_t(d)));
        self.push(self.now + d, Ev::Resume { node: i, inc });
        self.topology_changed();
    }

    /// Cuts (or heals) every link into and out of `i`, per direction.
    pub fn isolate(&mut self, i: usize, inbound: bool, outbound: bool) {
        self.replicate();
        for j in 0..self.nodes.len() {
            if j != i {
                self.links[j][i] = !inbound;
                self.links[i][j] = !outbound;
            }
        }
        self.trace(
            i,
            format!("network: inbound cut {inbound}, outbound cut {outbound}"),
        );
        self.topology_changed();
    }

    /// Cuts the links between `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.replicate();
        self.links[a][b] = false;
        self.links[b][a] = false;
        let (na, nb) = (self.nodes[a].name.clone(), self.nodes[b].name.clone());
        self.trace_msg(format!("network: {na} and {nb} cut from each other"));
        self.topology_changed();
    }

    pub fn heal(&mut self) {
        self.replicate();
        for row in &mut self.links {
            row.iter_mut().for_each(|l| *l = true);
        }
        self.trace_msg("network healed".into());
        self.topology_changed();
    }

    fn link(&self, a: usize, b: usize) -> bool {
        a == b || self.links[a][b]
    }

    /// Network delay of one message, 0.2 to 2 ms (none within a host).
    fn net(&mut self, a: usize, b: usize) -> T {
        if a == b {
            0
        } else {
            self.rng.range(200, 2000) * 1000
        }
    }

    // ---- the agent (what src/agent does) ------------------------------

    fn start_agent(&mut self, i: usize) {
        let info = self.nodes[i].info();
        self.nodes[i].ha = Some(Ha::new(info));
        self.trace(i, "agent starts".into());
        let view = self.nodes[i].applied.clone();
        self.feed(i, Event::StoreChanged(view));
    }

    /// Hands one event to node `i`'s core and carries out what it asks.
    fn feed(&mut self, i: usize, event: Event) {
        let node = &mut self.nodes[i];
        if !node.up || node.ha.is_none() {
            return;
        }
        if node.paused() {
            if event != Event::Tick {
                node.inbox.push(event);
            }
            return;
        }
        let now_l = node.clock.local(self.now);
        let summary = summarize(&event);
        let Some(ha) = node.ha.as_mut() else { return };
        let before = ha.state().clone();
        let leader_before = view_leader(&event);
        let actions = ha.handle(now_l, event);
        let after = ha.state().clone();
        if let Some(s) = summary {
            self.trace(i, s);
        }
        if let Some(l) = leader_before {
            if self.nodes[i].last_seen_leader.as_ref() != Some(&l) {
                self.trace(i, format!("sees leader key {l:?}"));
                self.nodes[i].last_seen_leader = Some(l);
            }
        }
        if before != after {
            self.trace(i, format!("state {before:?} -> {after:?}"));
        }
        for action in actions {
            self.dispatch(i, action);
        }
        self.schedule_tick(i);
        self.kick_watchdog(i);
    }

    fn schedule_tick(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(ha) = node.ha.as_ref() else { return };
        let now_l = node.clock.local(self.now);
        let loop_wait = ha_config().loop_wait;
        let wake = ha
            .next_wakeup(now_l)
            .unwrap_or(now_l + loop_wait)
            .min(now_l + loop_wait);
        let at = node.clock.true_at(wake).max(self.now + 1);
        node.tick_gen += 1;
        let (inc, gen) = (node.inc, node.tick_gen);
        self.push(at, Ev::Tick { node: i, inc, gen });
    }

    /// The watchdog is armed while the node holds the leader lease; each
    /// kick sets it to fire at `valid_until - WATCHDOG_RESET` (measured as
    /// a duration from now, the way a device timeout is). A node that
    /// stops holding the lease disarms it.
    fn kick_watchdog(&mut self, i: usize) {
        if !self.cfg.watchdog {
            return;
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        let Some(ha) = node.ha.as_ref() else { return };
        let now_l = node.clock.local(now);
        let fire = if ha.holds_leader(now_l) {
            ha.lease()
                .and_then(|l| l.valid_until)
                .map(|vu| now + nanos(vu.saturating_since(now_l)).saturating_sub(WATCHDOG_RESET))
        } else {
            None
        };
        if fire == node.wd_fires_at {
            return;
        }
        node.wd_gen += 1;
        node.wd_fires_at = fire;
        let gen = node.wd_gen;
        if let Some(at) = fire {
            self.push(at, Ev::WatchdogFire { node: i, gen });
        }
    }

    fn dispatch(&mut self, i: usize, action: Action) {
        let inc = self.nodes[i].inc;
        match action {
            Action::Exit { error } => {
                self.trace(i, format!("agent exits: {error:?}"));
                self.nodes[i].ha = None;
                self.nodes[i].pg_task = None;
            }
            Action::Fence => {
                // Whatever PostgreSQL was doing must not finish.
                if let Some((_, kind)) = self.nodes[i].pg_task.take() {
                    let event = done(kind, Err("aborted: fencing".into()));
                    self.input_at(self.now, i, inc, event);
                }
                self.trace(i, "fence sent".into());
                let at = self.now + self.rng.ms(5, 50);
                self.push(at, Ev::FenceDone { node: i, inc });
            }
            Action::QueryPositions { members, .. } => {
                // Each member answers from its PostgreSQL if its process
                // runs and the question and answer both get through.
                self.replicate();
                let mut answers = std::collections::BTreeMap::new();
                for m in members {
                    let Some(j) = self.node_of(&m) else { continue };
                    if j == i || !self.nodes[j].alive() || !self.link(i, j) || !self.link(j, i) {
                        continue;
                    }
                    let pg = &self.nodes[j].pg;
                    let lsn = pg.data.as_ref().map(|d| pgkeel::ha::Lsn(d.lsn));
                    let answer = pgkeel::ha::PolledPosition {
                        running: pg.running(),
                        in_recovery: pg.running().then_some(pg.standby()),
                        received_lsn: lsn.filter(|_| pg.standby()),
                        replayed_lsn: lsn.filter(|_| pg.standby()),
                    };
                    answers.insert(m, answer);
                }
                self.trace(i, format!("asked positions: {answers:?}"));
                let at = self.now + self.rng.ms(2, 40);
                self.input_at(at, i, inc, Event::PositionsPolled(answers));
            }
            // The simulated nodes have no scripts; an answer keeps the
            // contract should one be asked for anyway.
            Action::RunCallback { .. } => {}
            Action::PrePromote => {
                let event = done(ActionKind::PrePromote, Ok(pgkeel::ha::Reply::Done));
                self.input_at(self.now, i, inc, event);
            }
            // Everything on neither lane is handled above: the rest of the
            // non-PostgreSQL actions are store requests.
            other if !other.kind().is_postgres() => self.store_send(i, other),
            other => {
                if !matches!(other, Action::Probe) {
                    self.trace(i, format!("pg action {other:?}"));
                }
                let d = self.pg_duration(&other);
                self.next_op += 1;
                let op = self.next_op;
                self.nodes[i].pg_task = Some((op, other.kind()));
                self.push(
                    self.now + d,
                    Ev::PgDone {
                        node: i,
                        inc,
                        op,
                        action: other,
                    },
                );
            }
        }
    }

    fn pg_duration(&mut self, a: &Action) -> T {
        let (lo, hi) = match a {
            Action::Probe => (2, 30),
            Action::Initdb => (500, 2000),
            Action::CreateRoles => (10, 100),
            Action::StartPostgres(_) => (100, 2000),
            Action::StopPostgres {
                mode: StopMode::Fast,
            } => (100, 1000),
            Action::StopPostgres {
                mode: StopMode::Immediate,
            } => (10, 100),
            Action::Promote => (50, 500),
            Action::Checkpoint => (10, 300),
            Action::Basebackup { .. } => (1000, 3000),
            Action::Rewind { .. } => (200, 2000),
            _ => (5, 100),
        };
        self.rng.ms(lo, hi)
    }

    // ---- PostgreSQL ---------------------------------------------------

    fn node_of(&self, member: &str) -> Option<usize> {
        self.nodes[..self.n_data]
            .iter()
            .position(|n| n.name == member)
    }

    /// Whether `a` and `b` reach each other's PostgreSQL.
    fn pg_path(&self, a: usize, b: usize) -> bool {
        self.nodes[a].up && self.nodes[b].up && self.link(a, b) && self.link(b, a)
    }

    /// Brings every primary's WAL and every standby's stream up to now.
    fn replicate(&mut self) {
        let now = self.now;
        for n in &mut self.nodes {
            n.pg.advance(now);
        }
        for i in 0..self.n_data {
            if !self.nodes[i].pg.standby() {
                continue;
            }
            let up = self.nodes[i]
                .pg
                .upstream
                .as_ref()
                .and_then(|u| self.node_of(&u.member));
            let source = up
                .filter(|u| *u != i && self.pg_path(i, *u) && self.nodes[*u].pg.running())
                .and_then(|u| self.nodes[u].pg.data.clone());
            let lag = self.nodes[i].stream_lag;
            let pg = &mut self.nodes[i].pg;
            match (source, pg.data.as_mut()) {
                (Some(src), Some(d)) if d.can_follow(&src) => {
                    d.lsn = d.lsn.max(src.lsn.saturating_sub(lag));
                    d.timeline = src.timeline;
                    d.history = src.history;
                    pg.streaming = true;
                }
                _ => pg.streaming = false,
            }
        }
        self.record_acks();
    }

    /// Carries out a finished PostgreSQL action on the model; returns the
    /// answer for the core.
    fn apply_pg(&mut self, i: usize, action: Action) -> Event {
        use pgkeel::ha::Reply;
        self.replicate();
        let now = self.now;
        let kind = action.kind();
        let result: Result<Reply, String> = match action {
            Action::Probe => {
                let name = self.nodes[i].name.clone();
                let replicas: Vec<(String, u64)> = (0..self.n_data)
                    .filter(|j| {
                        let p = &self.nodes[*j].pg;
                        p.streaming && p.upstream.as_ref().is_some_and(|u| u.member == name)
                    })
                    .filter_map(|j| {
                        let lsn = self.nodes[j].pg.data.as_ref()?.lsn;
                        Some((self.nodes[j].name.clone(), lsn))
                    })
                    .collect();
                return Event::PgProbed(self.nodes[i].pg.probe(&replicas));
            }
            Action::Initdb => {
                let sysid = 7_000_000_000_000_000_000 + self.rng.range(0, 1 << 40);
                let pg = &mut self.nodes[i].pg;
                if pg.data.is_some() {
                    Err("initdb: the data directory is not empty".into())
                } else {
                    pg.data = Some(Data {
                        sysid,
                        timeline: 1,
                        lsn: INITIAL_LSN,
                        history: Vec::new(),
                        was_primary: true,
                        clean_checkpoint: Some(INITIAL_LSN),
                    });
                    Ok(Reply::Initialized { sysid })
                }
            }
            Action::CreateRoles | Action::Checkpoint => {
                if self.nodes[i].pg.writable() {
                    Ok(Reply::Done)
                } else {
                    Err("the server is not a running primary".into())
                }
            }
            Action::StartPostgres(StartAs::Primary) => {
                let r = self.nodes[i].pg.start(now, false, None);
                self.trace(i, format!("postgres started as primary: {r:?}"));
                r.map(|_| Reply::Done)
            }
            Action::StartPostgres(StartAs::Standby { upstream, .. }) => {
                let r = self.nodes[i].pg.start(now, true, upstream);
                r.map(|_| Reply::Done)
            }
            Action::StopPostgres { mode } => {
                let clean = mode == StopMode::Fast;
                let checkpoint = self.nodes[i].pg.stop(now, clean);
                Ok(Reply::Stopped {
                    checkpoint_lsn: checkpoint.map(pgkeel::ha::Lsn),
                })
            }
            Action::Promote => {
                let r = self.nodes[i].pg.promote(now);
                self.trace(i, format!("promote finished: {r:?}"));
                if r.is_ok() {
                    self.check_promotion(i);
                }
                r.map(|_| Reply::Done)
            }
            Action::Basebackup { from, slot } => self.basebackup(i, &from, &slot),
            Action::Rewind { from } => self.rewind(i, &from),
            Action::ConfigureStandby { upstream, .. } => {
                let pg = &mut self.nodes[i].pg;
                if pg.standby() {
                    pg.upstream = Some(upstream);
                    pg.streaming = false;
                    pg.sync_names.clear();
                    Ok(Reply::Done)
                } else {
                    Err("not a running standby".into())
                }
            }
            Action::StopReceiving { .. } => {
                let pg = &mut self.nodes[i].pg;
                if pg.standby() {
                    pg.upstream = None;
                    pg.streaming = false;
                    pg.sync_names.clear();
                    Ok(Reply::Done)
                } else {
                    Err("not a running standby".into())
                }
            }
            Action::CreateSlot { name } => {
                let pg = &mut self.nodes[i].pg;
                if pg.writable() {
                    pg.slots.insert(name);
                    Ok(Reply::Done)
                } else {
                    Err("slots are created on the primary".into())
                }
            }
            Action::DropSlot { name } => {
                self.nodes[i].pg.slots.remove(&name);
                Ok(Reply::Done)
            }
            Action::MoveDataDirAside => {
                let pg = &mut self.nodes[i].pg;
                if pg.running() {
                    Err("the server runs".into())
                } else {
                    pg.data = None;
                    pg.slots.clear();
                    pg.sync_names.clear();
                    Ok(Reply::Done)
                }
            }
            Action::SetSyncStandbyNames { value } => {
                let pg = &mut self.nodes[i].pg;
                if pg.data.is_some() {
                    pg.sync_names = value.clone();
                    self.trace(i, format!("synchronous_standby_names = '{value}'"));
                    Ok(Reply::Done)
                } else {
                    Err("the data directory is not initialized".into())
                }
            }
            other => Err(format!("{other:?} is not a PostgreSQL action")),
        };
        self.replicate();
        done(kind, result)
    }

    /// The running server of `from`, if this node can reach it.
    fn source(&self, i: usize, from: &Upstream) -> Result<usize, String> {
        let j = self
            .node_of(&from.member)
            .ok_or_else(|| format!("no member {}", from.member))?;
        if j == i || !self.pg_path(i, j) || !self.nodes[j].pg.running() {
            return Err(format!("cannot connect to {}", from.member));
        }
        Ok(j)
    }

    fn basebackup(
        &mut self,
        i: usize,
        from: &Upstream,
        slot: &str,
    ) -> Result<pgkeel::ha::Reply, String> {
        let j = self.source(i, from)?;
        if self.nodes[i].pg.data.is_some() {
            return Err("pg_basebackup: the data directory is not empty".into());
        }
        let Some(mut data) = self.nodes[j].pg.data.clone() else {
            return Err("the source has no data".into());
        };
        if self.nodes[j].pg.writable() {
            self.nodes[j].pg.slots.insert(slot.to_string());
        }
        data.was_primary = false;
        data.clean_checkpoint = None;
        self.nodes[i].pg.data = Some(data);
        Ok(pgkeel::ha::Reply::Done)
    }

    fn rewind(&mut self, i: usize, from: &Upstream) -> Result<pgkeel::ha::Reply, String> {
        let j = self.source(i, from)?;
        if self.nodes[i].pg.running() {
            return Err("pg_rewind: the target server runs".into());
        }
        let Some(src) = self.nodes[j].pg.data.clone() else {
            return Err("the source has no data".into());
        };
        let Some(d) = self.nodes[i].pg.data.as_mut() else {
            return Err("pg_rewind: no data directory".into());
        };
        if d.sysid != src.sysid {
            return Err("pg_rewind: different database systems".into());
        }
        if !d.can_follow(&src) {
            let fork = src
                .history
                .iter()
                .find(|(tl, _)| *tl == d.timeline)
                .map_or(src.lsn, |(_, l)| *l);
            d.lsn = d.lsn.min(fork);
            d.timeline = src.timeline;
            d.history = src.history;
        }
        d.was_primary = false;
        d.clean_checkpoint = None;
        Ok(pgkeel::ha::Reply::Done)
    }

    /// The one node whose PostgreSQL accepts writes, if exactly one does.
    pub fn writable(&self) -> Vec<usize> {
        (0..self.n_data)
            .filter(|i| self.nodes[*i].pg.writable())
            .collect()
    }

    /// Settled: one writable primary whose agent is Primary and holds the
    /// store's leader key; every other data node up with a running standby
    /// streaming from it.
    pub fn converged(&self) -> Option<usize> {
        let [p] = self.writable()[..] else {
            return None;
        };
        let holder = self.store.leader_holder()?;
        if holder != self.nodes[p].name {
            return None;
        }
        let primary_state = self.nodes[p].ha.as_ref()?.state().name();
        if primary_state != "primary" {
            return None;
        }
        let p_tl = self.nodes[p].pg.data.as_ref()?.timeline;
        let ok = (0..self.n_data).filter(|j| *j != p).all(|j| {
            let n = &self.nodes[j];
            n.alive()
                && n.pg.standby()
                && n.pg.streaming
                && n.pg
                    .upstream
                    .as_ref()
                    .is_some_and(|u| u.member == self.nodes[p].name)
                && n.pg.data.as_ref().is_some_and(|d| d.timeline == p_tl)
                && n.ha.as_ref().is_some_and(|h| h.state().name() == "replica")
        });
        ok.then_some(p)
    }

    /// A running standby that does not stream because its data went past
    /// the point where `p`'s timeline forked: it needs pg_rewind.
    pub fn diverged_from(&self, i: usize, p: usize) -> bool {
        let n = &self.nodes[i].pg;
        match (&n.data, &self.nodes[p].pg.data) {
            (Some(d), Some(src)) => n.standby() && !n.streaming && !d.can_follow(src),
            _ => false,
        }
    }

    /// The store's `sync` key, if any.
    pub fn sync_key(&self) -> Option<pgkeel::store::keys::SyncRecord> {
        self.store.sync_key()
    }

    /// The store's leader key holder, if any.
    pub fn leader_key(&self) -> Option<String> {
        self.store.leader_holder()
    }

    /// Index of the node that is the Raft leader, if there is one.
    pub fn raft_leader(&self) -> Option<usize> {
        self.raft_leader_index()
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }
}

fn done(kind: ActionKind, result: Result<pgkeel::ha::Reply, String>) -> Event {
    Event::ActionDone(ActionDone { kind, result })
}

pub fn nanos(d: Duration) -> T {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub fn fmt_t(t: T) -> String {
    format!("{}.{:03}s", t / S, (t % S) / MS)
}

fn view_leader(e: &Event) -> Option<Option<String>> {
    match e {
        Event::StoreChanged(v) => Some(v.leader.as_ref().map(|l| l.holder.clone())),
        _ => None,
    }
}

/// A one-line trace of an event worth keeping (ticks and routine probes
/// are left out).
fn summarize(e: &Event) -> Option<String> {
    match e {
        Event::Tick | Event::PgProbed(_) => None,
        Event::PositionsPolled(p) => Some(format!("positions {p:?}")),
        Event::StoreChanged(_) => None,
        Event::ActionDone(d) => match (&d.kind, &d.result) {
            (
                ActionKind::Probe
                | ActionKind::PublishMember
                | ActionKind::PublishStatus
                | ActionKind::Keepalive,
                Ok(_),
            ) => None,
            (k, r) => Some(format!("done {k:?}: {r:?}")),
        },
        Event::Shutdown => Some("shutdown".into()),
    }
}
