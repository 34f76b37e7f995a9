//! Table tests of every rule: put the core in a state with an observation,
//! feed one event, assert the exact list of actions.
//!
//! This node is always `a`; `b` and `c` are the others. Time is in
//! milliseconds after [`T0`]. A fixture starts "settled": a fresh probe,
//! a lease renewed just now, the member (and, for a leader, status) key
//! already published, so a case shows only what its rule asks for.

mod blockers;
mod bootstrap;
mod callbacks;
mod candidate;
mod core;
mod eligibility;
mod operations;
mod primary;
mod rejoin;
mod replica;
mod settings;
mod stopping;
mod switchover;
mod sync;

use std::collections::BTreeMap;

use crate::clock::BootInstant;
use crate::consensus::types::LeaseId;

use super::*;

/// Our lease in fixtures.
pub const L: LeaseId = 7;
/// The cluster's system identifier.
pub const SYSID: u64 = 7_000_000_001;
/// Fixture start, in ms on the boot clock (far from zero on purpose).
pub const T0: u64 = 1_000_000;
/// `valid_until` of a lease renewed at T0 with the default config.
pub const VALID_MS: u64 = 4_000;

/// The instant `ms` after T0.
pub fn at(ms: u64) -> BootInstant {
    BootInstant::from_nanos((T0 + ms) * 1_000_000)
}

pub fn node(name: &str) -> NodeInfo {
    NodeInfo {
        name: name.to_string(),
        api_url: format!("http://{name}:8008"),
        pg_address: format!("{name}:5432"),
        tags: MemberTags::default(),
        rejoin: RejoinPolicy::default(),
        callbacks: CallbackSet::default(),
    }
}

pub fn upstream(name: &str) -> Upstream {
    Upstream {
        member: name.to_string(),
        pg_address: format!("{name}:5432"),
    }
}

pub fn member(name: &str, role: MemberRole, state: MemberState) -> MemberInfo {
    MemberInfo {
        role,
        state,
        api_url: format!("http://{name}:8008"),
        pg_address: format!("{name}:5432"),
        wal_lsn: None,
        received_lsn: None,
        replayed_lsn: None,
        timeline: Some(1),
        tags: MemberTags::default(),
        paused: false,
        pending_restart: false,
        must_match: Default::default(),
    }
}

/// A cluster view under construction.
#[derive(Clone)]
pub struct V(pub ClusterView);

/// An initialized cluster (bootstrapped by `b`) with no leader and no
/// members.
pub fn view() -> V {
    V(ClusterView {
        revision: 10,
        initialize: Some(InitializeKey {
            owner: "b".into(),
            sysid: Some(SYSID),
        }),
        config: table_config(),
        ..ClusterView::default()
    })
}

/// The timings the tables are written in (whole seconds, easy to read):
/// keepalive every 1 s, safety margin 1 s, whatever the shipped defaults.
pub fn table_config() -> HaConfig {
    HaConfig {
        keepalive_interval: std::time::Duration::from_secs(1),
        safety_margin: std::time::Duration::from_secs(1),
        ..HaConfig::default()
    }
}

impl V {
    pub fn empty_cluster(mut self) -> V {
        self.0.initialize = None;
        self
    }
    pub fn init(mut self, owner: &str, sysid: Option<u64>) -> V {
        self.0.initialize = Some(InitializeKey {
            owner: owner.into(),
            sysid,
        });
        self
    }
    pub fn revision(mut self, revision: u64) -> V {
        self.0.revision = revision;
        self
    }
    /// `holder` holds the leader key on `lease`, written at revision 5.
    pub fn leader(mut self, holder: &str, lease: LeaseId) -> V {
        self.0.leader = Some(LeaderKey {
            holder: holder.into(),
            lease,
            mod_revision: 5,
        });
        self
    }
    pub fn member(mut self, name: &str, info: MemberInfo) -> V {
        self.0.members.insert(name.into(), info);
        self
    }
    /// A running primary member.
    pub fn primary(self, name: &str) -> V {
        let m = member(name, MemberRole::Primary, MemberState::Running);
        self.member(name, m)
    }
    /// A streaming replica member.
    pub fn replica(self, name: &str) -> V {
        let m = member(name, MemberRole::Replica, MemberState::Streaming);
        self.member(name, m)
    }
    /// Sets a member's received LSN.
    pub fn received(mut self, name: &str, lsn: u64) -> V {
        if let Some(m) = self.0.members.get_mut(name) {
            m.received_lsn = Some(Lsn(lsn));
        }
        self
    }
    /// The `status` key at `lsn`, timeline 1.
    pub fn status(mut self, lsn: u64) -> V {
        self.0.status = Some(StatusKey {
            lsn: Lsn(lsn),
            timeline: 1,
        });
        self
    }
    /// Changes a member in place.
    pub fn with(mut self, name: &str, f: impl FnOnce(&mut MemberInfo)) -> V {
        if let Some(m) = self.0.members.get_mut(name) {
            f(m);
        }
        self
    }
}

impl From<V> for ClusterView {
    fn from(v: V) -> ClusterView {
        v.0
    }
}

pub fn pg_empty() -> PgState {
    PgState::default()
}

pub fn pg_stopped() -> PgState {
    PgState {
        data_dir: DataDir::Initialized { sysid: SYSID },
        timeline: Some(1),
        ..PgState::default()
    }
}

pub fn pg_primary() -> PgState {
    PgState {
        running: true,
        in_recovery: Some(false),
        wal_lsn: Some(Lsn(0x300_0000)),
        ..pg_stopped()
    }
}

pub fn pg_standby(following: Option<&str>) -> PgState {
    PgState {
        running: true,
        in_recovery: Some(true),
        streaming: following.is_some(),
        received_lsn: Some(Lsn(0x200_0000)),
        replayed_lsn: Some(Lsn(0x200_0000)),
        following: following.map(upstream),
        ..pg_stopped()
    }
}

pub fn slot(name: &str, active: bool) -> SlotInfo {
    SlotInfo {
        name: name.into(),
        physical: true,
        active,
    }
}

/// A core for node `a` with a clock.
pub struct Fx {
    pub ha: Ha,
    pub now: BootInstant,
}

impl Fx {
    /// `a` in `state`, having seen `view` and a fresh probe `pg` at T0;
    /// no lease.
    pub fn new(state: State, view: impl Into<ClusterView>, pg: PgState) -> Fx {
        Fx::named("a", state, view, pg)
    }

    /// As [`Fx::new`], for node `name` (for scenarios with two cores).
    pub fn named(name: &str, state: State, view: impl Into<ClusterView>, pg: PgState) -> Fx {
        let mut ha = Ha::new(node(name));
        ha.state = state;
        ha.view = Some(view.into());
        ha.pg = Some(pg);
        ha.pg_seen_epoch = Some(ha.pg_epoch);
        ha.last_probe = Some(at(0));
        let mut fx = Fx { ha, now: at(0) };
        fx.settle();
        fx
    }

    /// `a` holds lease `L`, renewed at T0.
    pub fn lease(mut self) -> Fx {
        self.ha.lease = Some(Lease {
            id: L,
            valid_until: Some(at(VALID_MS)),
        });
        self.ha.last_keepalive = Some(at(0));
        self.settle();
        self
    }

    /// `a` has these tags (in its config file and its member key).
    pub fn tags(mut self, tags: MemberTags) -> Fx {
        self.ha.node.tags = tags;
        self.settle();
        self
    }

    /// `a` holds the leader key (the view must say so too).
    pub fn leader(mut self) -> Fx {
        self.ha.leader_revision = Some(5);
        self.settle();
        self
    }

    /// Marks the member and status keys as already published.
    fn settle(&mut self) {
        if let Some(lease) = self.ha.lease {
            self.ha.published = Some(Published {
                info: self.ha.own_member_info(),
                lease: lease.id,
                at: self.now,
            });
        }
        let pg = self.ha.pg.clone().unwrap_or_default();
        if let (true, Some(lsn), Some(timeline)) =
            (self.ha.leader_revision.is_some(), pg.wal_lsn, pg.timeline)
        {
            self.ha.status_published = Some((StatusKey { lsn, timeline }, self.now));
        }
    }

    /// Feeds `event` at `ms` after T0.
    pub fn at(&mut self, ms: u64, event: Event) -> Vec<Action> {
        self.now = at(ms);
        self.ha.handle(self.now, event)
    }

    /// Feeds `event` at the current time.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        self.ha.handle(self.now, event)
    }

    pub fn tick(&mut self, ms: u64) -> Vec<Action> {
        self.at(ms, Event::Tick)
    }

    pub fn done(&mut self, kind: ActionKind, reply: Reply) -> Vec<Action> {
        self.on(Event::ActionDone(ActionDone {
            kind,
            result: Ok(reply),
        }))
    }

    pub fn fail(&mut self, kind: ActionKind) -> Vec<Action> {
        self.on(Event::ActionDone(ActionDone {
            kind,
            result: Err("boom".into()),
        }))
    }

    pub fn probed(&mut self, pg: PgState) -> Vec<Action> {
        self.on(Event::PgProbed(pg))
    }

    pub fn view(&mut self, view: impl Into<ClusterView>) -> Vec<Action> {
        self.on(Event::StoreChanged(view.into()))
    }

    /// Moves to `ms` with every routine chore (keepalive, probe, member
    /// and status key) just done, so only the rule under test speaks.
    pub fn quiet_at(&mut self, ms: u64) {
        self.now = at(ms);
        if let Some(lease) = self.ha.lease.as_mut() {
            lease.valid_until = Some(at(ms + VALID_MS));
        }
        self.ha.last_keepalive = Some(self.now);
        self.ha.last_probe = Some(self.now);
        if let Some(p) = self.ha.published.as_mut() {
            p.at = self.now;
        }
        if let Some((_, t)) = self.ha.status_published.as_mut() {
            *t = self.now;
        }
    }

    pub fn state(&self) -> &State {
        self.ha.state()
    }

    /// What `a` would publish about itself right now.
    pub fn me(&self) -> MemberInfo {
        self.ha.own_member_info()
    }
}

/// The member key action for `info` on lease `L`.
pub fn publish(info: MemberInfo) -> Action {
    Action::PublishMember { lease: L, info }
}

pub fn standby_of(name: Option<&str>) -> Action {
    Action::StartPostgres(StartAs::Standby {
        upstream: name.map(upstream),
        slot: "a".into(),
    })
}

pub fn lease_reply(valid_ms: u64) -> Reply {
    Reply::Lease {
        lease: L,
        valid_until: at(valid_ms),
    }
}

/// What each member the view shows as a standby answers when asked: its
/// published position, as a running standby.
pub fn answers(v: &ClusterView) -> BTreeMap<String, PolledPosition> {
    v.members
        .iter()
        .filter(|(_, m)| m.role == MemberRole::Replica)
        .map(|(name, m)| {
            let answer = PolledPosition {
                running: true,
                in_recovery: Some(true),
                received_lsn: m.received_lsn,
                replayed_lsn: m.replayed_lsn,
            };
            (name.clone(), answer)
        })
        .collect()
}

/// Drives `fx` through a vacancy shown by `v`: the view, then (when asked
/// for) the StopReceiving and the probe that follows it, then (when asked
/// for) the position question, answered with `polled` (by default what
/// `answers` makes of the view). Returns every other action, in order.
pub fn through_vacancy(
    fx: &mut Fx,
    v: V,
    polled: Option<BTreeMap<String, PolledPosition>>,
) -> Vec<Action> {
    let v: ClusterView = v.into();
    let polled = polled.unwrap_or_else(|| answers(&v));
    let mut out = fx.view(v);
    if let Some(i) = out
        .iter()
        .position(|x| matches!(x, Action::StopReceiving { .. }))
    {
        out.remove(i);
        assert_eq!(
            fx.done(ActionKind::StopReceiving, Reply::Done),
            vec![Action::Probe]
        );
        let mut pg = fx.ha.pg.clone().expect("a probe");
        pg.following = None;
        pg.streaming = false;
        let mut after = fx.probed(pg);
        // No longer streaming: the member key says so (not the rule here).
        if let Some(i) = after
            .iter()
            .position(|x| matches!(x, Action::PublishMember { .. }))
        {
            after.remove(i);
            fx.done(ActionKind::PublishMember, Reply::Done);
        }
        out.extend(after);
    }
    if let Some(i) = out
        .iter()
        .position(|x| matches!(x, Action::QueryPositions { .. }))
    {
        let Action::QueryPositions { members, timeout } = out.remove(i) else {
            unreachable!()
        };
        assert!(!members.contains(&fx.ha.node.name), "asked itself");
        assert_eq!(timeout, POSITION_QUERY_TIMEOUT);
        out.extend(fx.on(Event::PositionsPolled(polled)));
    }
    out
}
