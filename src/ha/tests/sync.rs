//! Synchronous replication: the setting's text, the guarantee arithmetic,
//! every step of the primary's ordering (mode `on` and `quorum`), and the
//! candidate rules.

use std::collections::BTreeSet;

use super::*;
use crate::config::SynchronousMode;
use crate::ha::sync::{
    holders, next_step, quorum_short, sync_allows, SyncBlock, SyncInputs, SyncNames, SyncStep,
    NO_STANDBY,
};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn first(num: u32, names: &[&str]) -> SyncNames {
    SyncNames {
        any: false,
        num,
        names: set(names),
    }
}

fn any(num: u32, names: &[&str]) -> SyncNames {
    SyncNames {
        any: true,
        num,
        names: set(names),
    }
}

fn key(leader: &str, members: &[&str], quorum: u32) -> SyncKey {
    SyncKey {
        leader: leader.into(),
        members: set(members),
        quorum,
        mod_revision: 9,
    }
}

fn write(members: &[&str], quorum: u32) -> Option<SyncStep> {
    Some(SyncStep::WriteKey {
        members: set(members),
        quorum,
    })
}

fn names(n: SyncNames) -> Option<SyncStep> {
    Some(SyncStep::SetNames(n))
}

/// The primary's position in these tables.
const PRIMARY: u64 = 1_000;

/// A `pg_stat_replication` row: `name` streaming with `sync_state`,
/// flushed up to `flush`.
fn row(name: &str, sync_state: &str, flush: u64) -> ReplicationRow {
    ReplicationRow {
        application_name: name.into(),
        state: "streaming".into(),
        sync_state: sync_state.into(),
        flush_lsn: Some(Lsn(flush)),
        replay_lsn: Some(Lsn(flush)),
    }
}

/// One table row's world: primary `a`, members `b`, `c` (and `d` when a
/// row names it), the setting in force, the standbys' rows.
struct World {
    settings: SyncSettings,
    key: Option<SyncKey>,
    ssn: SyncNames,
    rows: Vec<ReplicationRow>,
    mark: Option<u64>,
    nosync: &'static [&'static str],
}

fn on() -> SyncSettings {
    SyncSettings {
        mode: SynchronousMode::On,
        ..SyncSettings::default()
    }
}

fn strict(mut s: SyncSettings) -> SyncSettings {
    s.strict = true;
    s
}

fn quorum(n: u32) -> SyncSettings {
    SyncSettings {
        mode: SynchronousMode::Quorum,
        node_count: n,
        ..SyncSettings::default()
    }
}

fn world(settings: SyncSettings, key: Option<SyncKey>, ssn: SyncNames) -> World {
    World {
        settings,
        key,
        ssn,
        rows: vec![],
        mark: None,
        nosync: &[],
    }
}

impl World {
    fn rows(mut self, rows: Vec<ReplicationRow>) -> World {
        self.rows = rows;
        self
    }
    fn mark(mut self, lsn: u64) -> World {
        self.mark = Some(lsn);
        self
    }
    fn nosync(mut self, names: &'static [&'static str]) -> World {
        self.nosync = names;
        self
    }
    fn step(&self) -> Option<SyncStep> {
        let mut members: BTreeMap<String, MemberInfo> = BTreeMap::new();
        for name in ["a", "b", "c"] {
            let mut m = member(name, MemberRole::Replica, MemberState::Streaming);
            m.tags.nosync = self.nosync.contains(&name);
            members.insert(name.into(), m);
        }
        let pg = PgState {
            wal_lsn: Some(Lsn(PRIMARY)),
            replication: self.rows.clone(),
            sync_standby_names: Some(self.ssn.render()),
            ..pg_primary()
        };
        next_step(&SyncInputs {
            me: "a",
            settings: self.settings,
            key: self.key.as_ref(),
            members: &members,
            pg: &pg,
            mark: self.mark.map(Lsn),
        })
    }
}

#[test]
fn the_setting_is_written_and_read_back_in_every_form_postgres_accepts() {
    let cases: Vec<(&str, Option<SyncNames>)> = vec![
        ("", Some(SyncNames::none())),
        ("FIRST 2 (\"b\", \"c\")", Some(first(2, &["b", "c"]))),
        ("ANY 1 (b,c)", Some(any(1, &["b", "c"]))),
        ("any 1 (B)", Some(any(1, &["b"]))),
        ("2 (b, c)", Some(first(2, &["b", "c"]))),
        ("b, c", Some(first(1, &["b", "c"]))),
        ("*", Some(first(1, &["*"]))),
        ("\"we\"\"ird\"", Some(first(1, &["we\"ird"]))),
        ("ANY x (b)", None),
        ("ANY 1 (b", None),
        ("SOME 1 (b)", None),
        ("ANY 1 (b,)", None),
    ];
    for (text, want) in cases {
        assert_eq!(SyncNames::parse(text), want, "{text:?}");
    }
    for n in [
        first(1, &["b"]),
        any(2, &["b", "c", "d"]),
        SyncNames::none(),
    ] {
        assert_eq!(SyncNames::parse(&n.render()), Some(n.clone()), "{n:?}");
    }
    assert_eq!(first(1, &["b"]).render(), "FIRST 1 (\"b\")");
}

#[test]
fn holders_counts_the_set_members_every_acknowledged_commit_is_on() {
    // (setting, set, holders at least)
    let cases = [
        (SyncNames::none(), set(&["b"]), 0),
        (first(1, &["b"]), set(&["b"]), 1),
        (first(1, &["b"]), set(&[]), 0),
        (first(2, &["b", "c"]), set(&["c"]), 1),
        (any(1, &["b", "c"]), set(&["b"]), 0),
        (any(1, &["b", "c"]), set(&["b", "c"]), 1),
        (any(2, &["b", "c", "d"]), set(&["b", "c"]), 1),
        (first(1, &["*"]), set(&["b"]), 0),
    ];
    for (n, s, want) in cases {
        assert_eq!(holders(&n, &s), want, "{n:?} {s:?}");
    }
}

#[test]
fn mode_on_adds_a_standby_to_postgres_first_and_to_the_key_once_it_holds_the_mark() {
    let b_only = first(1, &["b"]);
    let mine = |m: &[&str], k| Some(key("a", m, k));
    // (case, world, step)
    let cases: Vec<(&str, World, Option<SyncStep>)> = vec![
        (
            "no key yet: promise nothing, as us",
            world(on(), None, SyncNames::none()),
            write(&[], 0),
        ),
        (
            "the old primary's key: ours first",
            world(on(), Some(key("x", &["a"], 1)), SyncNames::none()),
            write(&[], 0),
        ),
        (
            "a streaming standby: PostgreSQL first",
            world(on(), mine(&[], 0), SyncNames::none()).rows(vec![row("b", "async", PRIMARY)]),
            names(b_only.clone()),
        ),
        (
            "listed, no mark yet (the setting may not be in force)",
            world(on(), mine(&[], 0), b_only.clone()).rows(vec![row("b", "sync", PRIMARY)]),
            None,
        ),
        (
            "sync but behind the mark",
            world(on(), mine(&[], 0), b_only.clone())
                .rows(vec![row("b", "sync", 900)])
                .mark(950),
            None,
        ),
        (
            "past the mark but not yet reported sync",
            world(on(), mine(&[], 0), b_only.clone())
                .rows(vec![row("b", "potential", PRIMARY)])
                .mark(950),
            None,
        ),
        (
            "sync and past the mark: into the key",
            world(on(), mine(&[], 0), b_only.clone())
                .rows(vec![row("b", "sync", 960)])
                .mark(950),
            write(&["b"], 1),
        ),
        (
            "settled",
            world(on(), mine(&["b"], 1), b_only.clone())
                .rows(vec![row("b", "sync", PRIMARY)])
                .mark(950),
            None,
        ),
        (
            "a nosync member is never chosen",
            world(on(), mine(&[], 0), SyncNames::none())
                .rows(vec![row("b", "async", PRIMARY), row("c", "async", 500)])
                .nosync(&["b"]),
            names(first(1, &["c"])),
        ),
        (
            "the least lagging one when none is in the key",
            world(on(), mine(&[], 0), SyncNames::none())
                .rows(vec![row("b", "async", 500), row("c", "async", 900)]),
            names(first(1, &["c"])),
        ),
        (
            "the one in the key stays, however the others lag",
            world(on(), mine(&["b"], 1), b_only.clone())
                .rows(vec![row("b", "sync", 500), row("c", "async", 990)])
                .mark(400),
            None,
        ),
    ];
    for (case, w, want) in cases {
        assert_eq!(w.step(), want, "{case}");
    }
}

#[test]
fn mode_on_removes_a_standby_from_the_key_first_and_from_postgres_second() {
    let b_only = first(1, &["b"]);
    let mine = |m: &[&str], k| Some(key("a", m, k));
    let lagging = SyncSettings {
        max_lag: Some(100),
        ..on()
    };
    let cases: Vec<(&str, World, Option<SyncStep>)> = vec![
        (
            "b gone, not strict: the key drops it first",
            world(on(), mine(&["b"], 1), b_only.clone()),
            write(&[], 0),
        ),
        (
            "then PostgreSQL stops waiting (unprotected)",
            world(on(), mine(&[], 0), b_only.clone()),
            names(SyncNames::none()),
        ),
        (
            "b gone, strict: keep waiting for b, the key keeps it",
            world(strict(on()), mine(&["b"], 1), b_only.clone()),
            None,
        ),
        (
            "strict, nobody trusted: wait for any member that may be synchronous",
            world(strict(on()), mine(&[], 0), SyncNames::none()).nosync(&["c"]),
            names(any(1, &["b"])),
        ),
        (
            "strict, every other member nosync: wait for nobody that exists",
            world(strict(on()), mine(&[], 0), SyncNames::none()).nosync(&["b", "c"]),
            names(any(1, &[NO_STANDBY])),
        ),
        (
            "b lags past maximum_lag_on_syncnode, c is healthy: b leaves the key first",
            world(lagging, mine(&["b"], 1), b_only.clone())
                .rows(vec![row("b", "sync", 500), row("c", "async", 990)])
                .mark(400),
            write(&[], 0),
        ),
        (
            "then PostgreSQL waits for c",
            world(lagging, mine(&[], 0), b_only.clone())
                .rows(vec![row("b", "sync", 500), row("c", "async", 990)]),
            names(first(1, &["c"])),
        ),
        (
            "b lags but nobody is healthier: it stays",
            world(lagging, mine(&["b"], 1), b_only.clone())
                .rows(vec![row("b", "sync", 500)])
                .mark(400),
            None,
        ),
        (
            "two synchronous, b gone: c alone, still trusted",
            world(
                SyncSettings {
                    node_count: 2,
                    ..on()
                },
                mine(&["b", "c"], 2),
                first(2, &["b", "c"]),
            )
            .rows(vec![row("c", "sync", PRIMARY)]),
            write(&["c"], 1),
        ),
        (
            "mode off: PostgreSQL stops waiting",
            world(SyncSettings::default(), mine(&["b"], 1), b_only.clone()),
            names(SyncNames::none()),
        ),
        (
            "mode off: then the key promises nothing",
            world(SyncSettings::default(), mine(&["b"], 1), SyncNames::none()),
            write(&[], 0),
        ),
        (
            "mode off, settled",
            world(SyncSettings::default(), None, SyncNames::none()),
            None,
        ),
    ];
    for (case, w, want) in cases {
        assert_eq!(w.step(), want, "{case}");
    }
}

#[test]
fn quorum_mode_changes_k_and_the_set_one_safe_step_at_a_time() {
    let both = any(1, &["b", "c"]);
    let mine = |m: &[&str], k| Some(key("a", m, k));
    let streaming = |s: &str| vec![row("b", s, PRIMARY), row("c", s, PRIMARY)];
    let cases: Vec<(&str, World, Option<SyncStep>)> = vec![
        (
            "two streaming standbys: ANY 1 of both",
            world(quorum(1), mine(&[], 0), SyncNames::none()).rows(streaming("async")),
            names(both.clone()),
        ),
        (
            "both past the mark: the set is both, k 1",
            world(quorum(1), mine(&[], 0), both.clone())
                .rows(streaming("quorum"))
                .mark(990),
            write(&["b", "c"], 1),
        ),
        (
            "c gone: c leaves the set and k drops (b alone may lack commits only c has)",
            world(quorum(1), mine(&["b", "c"], 1), both.clone())
                .rows(vec![row("b", "quorum", PRIMARY)]),
            write(&["b"], 0),
        ),
        (
            "then PostgreSQL waits for b alone",
            world(quorum(1), mine(&["b"], 0), both.clone()).rows(vec![row("b", "quorum", PRIMARY)]),
            names(any(1, &["b"])),
        ),
        (
            "then b, past the new mark, holds everything: k 1",
            world(quorum(1), mine(&["b"], 0), any(1, &["b"]))
                .rows(vec![row("b", "quorum", PRIMARY)])
                .mark(990),
            write(&["b"], 1),
        ),
        (
            "raising synchronous_node_count: PostgreSQL first (k stays)",
            world(quorum(2), mine(&["b", "c"], 1), both.clone())
                .rows(streaming("quorum"))
                .mark(990),
            names(any(2, &["b", "c"])),
        ),
        (
            "then the key's k",
            world(quorum(2), mine(&["b", "c"], 1), any(2, &["b", "c"]))
                .rows(streaming("quorum"))
                .mark(990),
            write(&["b", "c"], 2),
        ),
        (
            "lowering it: the key's k first",
            world(quorum(1), mine(&["b", "c"], 2), any(2, &["b", "c"])).rows(streaming("quorum")),
            write(&["b", "c"], 1),
        ),
        (
            "then PostgreSQL",
            world(quorum(1), mine(&["b", "c"], 1), any(2, &["b", "c"])).rows(streaming("quorum")),
            names(both.clone()),
        ),
        (
            "a standby joins ANY 1: once c can confirm alone, b may lack a commit — k drops first",
            world(quorum(1), mine(&["b"], 1), any(1, &["b"])).rows(streaming("quorum")),
            write(&["b"], 0),
        ),
        (
            "then PostgreSQL",
            world(quorum(1), mine(&["b"], 0), any(1, &["b"])).rows(streaming("quorum")),
            names(both.clone()),
        ),
        (
            "strict, both gone: keep waiting for the set",
            world(strict(quorum(1)), mine(&["b", "c"], 1), both.clone()),
            None,
        ),
    ];
    for (case, w, want) in cases {
        assert_eq!(w.step(), want, "{case}");
    }
}

#[test]
fn in_synchronous_mode_only_the_set_may_be_promoted() {
    let sync = |mode, k: Option<SyncKey>| {
        let mut v: ClusterView = view().replica("b").replica("c").into();
        v.config.sync.mode = mode;
        v.sync = k.map(Box::new);
        v
    };
    // (case, view, member, verdict)
    let cases: Vec<(&str, ClusterView, &str, Result<(), SyncBlock>)> = vec![
        (
            "asynchronous: anyone",
            sync(SynchronousMode::Off, None),
            "c",
            Ok(()),
        ),
        (
            "no key",
            sync(SynchronousMode::On, None),
            "b",
            Err(SyncBlock::NoKey),
        ),
        (
            "in the set",
            sync(SynchronousMode::On, Some(key("x", &["b"], 1))),
            "b",
            Ok(()),
        ),
        (
            "not in the set",
            sync(SynchronousMode::On, Some(key("x", &["b"], 1))),
            "c",
            Err(SyncBlock::NotInSet),
        ),
        (
            "an empty set: nobody",
            sync(SynchronousMode::On, Some(key("x", &[], 0))),
            "b",
            Err(SyncBlock::NotInSet),
        ),
        (
            "a set that promises nothing yet",
            sync(SynchronousMode::Quorum, Some(key("x", &["b"], 0))),
            "b",
            Err(SyncBlock::NothingPromised),
        ),
        (
            "the key's own leader holds what it acknowledged",
            sync(SynchronousMode::On, Some(key("c", &[], 0))),
            "c",
            Ok(()),
        ),
    ];
    for (case, v, name, want) in cases {
        assert_eq!(sync_allows(&v, name), want, "{case}");
    }
}

#[test]
fn a_quorum_candidate_needs_the_positions_of_set_size_minus_k_plus_one_members() {
    let with = |k: SyncKey| {
        let mut v: ClusterView = view().into();
        v.config.sync.mode = SynchronousMode::Quorum;
        v.sync = Some(Box::new(k));
        v
    };
    // (case, key, me, answered, missing)
    let cases = [
        (
            "ANY 1 of 2, nobody else answered",
            key("x", &["b", "c"], 1),
            "b",
            set(&[]),
            1,
        ),
        (
            "ANY 1 of 2, the other answered",
            key("x", &["b", "c"], 1),
            "b",
            set(&["c"]),
            0,
        ),
        (
            "ANY 2 of 2: each holds all",
            key("x", &["b", "c"], 2),
            "b",
            set(&[]),
            0,
        ),
        (
            "ANY 1 of 3, one answered",
            key("x", &["b", "c", "d"], 1),
            "b",
            set(&["c"]),
            1,
        ),
        (
            "answers from outside the set do not count",
            key("x", &["b", "c"], 1),
            "b",
            set(&["e"]),
            1,
        ),
        (
            "the key's leader needs nobody",
            key("b", &["c", "d"], 1),
            "b",
            set(&[]),
            0,
        ),
    ];
    for (case, k, me, answered, missing) in cases {
        assert_eq!(quorum_short(&with(k), me, &answered), missing, "{case}");
    }
}

/// `a` in synchronous mode `mode` races for b's vacant key; `c` is the
/// other standby, as far as `a`.
fn sync_vacancy(mode: SynchronousMode, strict: bool, k: SyncKey) -> (Fx, V) {
    let lead = view()
        .leader("b", 3)
        .primary("b")
        .replica("c")
        .received("c", 0x200_0000);
    let mut fx = Fx::new(State::Replica, lead, pg_standby(Some("b"))).lease();
    let mut vacant = view().revision(11).replica("c").received("c", 0x200_0000);
    vacant.0.config.sync.mode = mode;
    vacant.0.config.sync.strict = strict;
    vacant.0.sync = Some(Box::new(k));
    fx.ha.view.as_mut().unwrap().config.sync = vacant.0.config.sync;
    (fx, vacant)
}

#[test]
fn a_standby_outside_the_set_does_not_race_and_one_inside_does() {
    let (mut fx, v) = sync_vacancy(SynchronousMode::On, false, key("b", &["c"], 1));
    let out = through_vacancy(&mut fx, v, None);
    assert!(
        !out.contains(&Action::AcquireLeader { lease: L }),
        "{out:?}"
    );
    let (mut fx, v) = sync_vacancy(SynchronousMode::On, false, key("b", &["a"], 1));
    let out = through_vacancy(&mut fx, v, None);
    assert!(out.contains(&Action::AcquireLeader { lease: L }), "{out:?}");
}

#[test]
fn a_quorum_candidate_whose_peer_does_not_answer_waits() {
    let (mut fx, v) = sync_vacancy(SynchronousMode::Quorum, false, key("b", &["a", "c"], 1));
    // c does not answer: a cannot know it holds c's acknowledged commits.
    let out = through_vacancy(&mut fx, v.clone(), Some(BTreeMap::new()));
    assert!(
        !out.contains(&Action::AcquireLeader { lease: L }),
        "{out:?}"
    );
    assert_eq!(fx.state(), &State::Replica);
    // c answers as far as a (a ranks first by name): a races.
    let (mut fx, v) = sync_vacancy(SynchronousMode::Quorum, false, key("b", &["a", "c"], 1));
    let out = through_vacancy(&mut fx, v, None);
    assert!(out.contains(&Action::AcquireLeader { lease: L }), "{out:?}");
}

/// Found by the simulator (tests/ha_sim.rs `sync_quorum_peer_unreachable`):
/// a quorum candidate short of its peer's answer gives up "until a newer
/// view", but the peer becoming reachable again changes nothing in the
/// store (every member key stays as it is once the standbys stopped
/// receiving), so no one ever races again and the cluster stays without
/// a primary although both standbys are up and reachable.
#[test]
fn a_quorum_candidate_short_of_answers_asks_again_without_a_store_change() {
    let (mut fx, v) = sync_vacancy(SynchronousMode::Quorum, false, key("b", &["a", "c"], 1));
    let out = through_vacancy(&mut fx, v, Some(BTreeMap::new()));
    assert!(
        !out.contains(&Action::AcquireLeader { lease: L }),
        "{out:?}"
    );
    assert_eq!(fx.state(), &State::Replica);
    // The store stays as it is; time passes (c may answer now).
    let asked = (1..=5).any(|s| {
        fx.quiet_at(s * 1000);
        fx.tick(s * 1000)
            .iter()
            .any(|x| matches!(x, Action::QueryPositions { .. }))
            || fx.state() == &State::Candidate(CandidateStep::Polling)
    });
    assert!(
        asked,
        "a quorum candidate short of answers never asks again while the store stays the same"
    );
}

#[test]
fn a_winner_claims_the_sync_key_and_lists_whom_commits_wait_for_before_it_promotes() {
    let (mut fx, v) = sync_vacancy(SynchronousMode::On, true, key("b", &["a"], 1));
    let mut standby = pg_standby(Some("b"));
    standby.sync_standby_names = Some(String::new());
    fx.ha.pg = Some(standby);
    let out = through_vacancy(&mut fx, v.clone(), None);
    assert!(out.contains(&Action::AcquireLeader { lease: L }), "{out:?}");
    // Won: first the key becomes ours, promising nothing yet, so what we
    // acknowledge before a standby is synchronous is never lost to c.
    let out = fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    let claim = Action::WriteSync {
        lease: L,
        members: vec![],
        quorum: 0,
        base: Some(9),
    };
    assert!(out.contains(&claim), "{out:?}");
    assert!(!out.contains(&Action::Promote), "{out:?}");
    assert!(!fx
        .done(ActionKind::WriteSync, Reply::Done)
        .contains(&Action::Promote));
    // Seen in a view: then (strict) whom commits wait for.
    let mut mine = v.revision(13).leader("a", L);
    mine.0.sync = Some(Box::new(key("a", &[], 0)));
    let out = fx.view(mine);
    let set_names = Action::SetSyncStandbyNames {
        value: any(1, &["c"]).render(),
    };
    assert!(out.contains(&set_names), "{out:?}");
    assert!(!out.contains(&Action::Promote), "{out:?}");
    // Once a probe shows it, the promotion goes ahead.
    fx.done(ActionKind::SetSyncStandbyNames, Reply::Done);
    let mut listed = pg_standby(None);
    listed.sync_standby_names = Some(any(1, &["c"]).render());
    let out = fx.probed(listed);
    assert!(out.contains(&Action::Promote), "{out:?}");
}

#[test]
fn a_quorum_candidate_behind_a_set_member_that_may_not_be_promoted_waits() {
    let (mut fx, v) = sync_vacancy(SynchronousMode::Quorum, false, key("b", &["a", "c"], 1));
    // c answers further ahead than a but is tagged nofailover: it cannot
    // take the key, and a may lack a commit only c acknowledged.
    let v = v.with("c", |m| m.tags.nofailover = true);
    let mut polled = answers(&v.0);
    if let Some(c) = polled.get_mut("c") {
        c.received_lsn = Some(Lsn(0x300_0000));
    }
    let out = through_vacancy(&mut fx, v, Some(polled));
    assert!(
        !out.contains(&Action::AcquireLeader { lease: L }),
        "{out:?}"
    );
}

#[test]
fn the_primary_writes_its_key_then_waits_to_see_it_before_the_next_step() {
    let mut v = view()
        .init("a", Some(SYSID))
        .leader("a", L)
        .primary("a")
        .replica("b");
    v.0.config.sync.mode = SynchronousMode::On;
    let mut pg = pg_primary();
    pg.sync_standby_names = Some(String::new());
    pg.replication = vec![row("b", "async", 0x300_0000)];
    pg.slots = vec![slot("b", true)];
    let mut fx = Fx::new(
        State::Primary(PrimaryState::default()),
        v.clone(),
        pg.clone(),
    )
    .lease()
    .leader();
    let write = Action::WriteSync {
        lease: L,
        members: vec![],
        quorum: 0,
        base: None,
    };
    assert_eq!(fx.probed(pg.clone()), vec![write]);
    // Written: nothing more until a view shows the key.
    assert_eq!(fx.done(ActionKind::WriteSync, Reply::Done), vec![]);
    let out = fx.probed(pg.clone());
    assert!(
        !out.iter().any(|a| matches!(
            a,
            Action::WriteSync { .. } | Action::SetSyncStandbyNames { .. }
        )),
        "{out:?}"
    );
    v.0.sync = Some(Box::new(key("a", &[], 0)));
    let out = fx.view(v.revision(11));
    let listed = Action::SetSyncStandbyNames {
        value: first(1, &["b"]).render(),
    };
    assert!(out.contains(&listed), "{out:?}");
}

#[test]
fn the_mark_of_one_tenure_is_not_carried_into_the_next() {
    let mut v = view()
        .init("a", Some(SYSID))
        .leader("a", L)
        .primary("a")
        .replica("b");
    v.0.config.sync.mode = SynchronousMode::On;
    let mut pg = pg_primary();
    pg.sync_standby_names = Some(first(1, &["b"]).render());
    pg.slots = vec![slot("b", true)];
    let mut fx = Fx::new(State::Primary(PrimaryState::default()), v, pg.clone())
        .lease()
        .leader();
    fx.quiet_at(1_000);
    fx.probed(pg.clone());
    assert!(fx.ha.sync_mark.is_some());
    // Demoted (the key went elsewhere): the mark is forgotten.
    fx.ha.state = State::Replica;
    fx.tick(1_001);
    assert_eq!(fx.ha.sync_mark, None);
}
