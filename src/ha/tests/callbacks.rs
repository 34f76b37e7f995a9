//! Callbacks and `pre_promote`: which script the core asks for after
//! which completed action, and what a failed `pre_promote` does to the
//! race.

use super::*;

fn all() -> CallbackSet {
    CallbackSet {
        on_start: true,
        on_stop: true,
        on_restart: true,
        on_reload: true,
        on_role_change: true,
        pre_promote: false,
    }
}

fn cb(kind: CallbackKind, role: CallbackRole) -> Action {
    Action::RunCallback { kind, role }
}

/// Only the callback actions of `actions`.
fn callbacks(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| matches!(a, Action::RunCallback { .. }))
        .collect()
}

/// Puts `action` in flight, as if the core had asked for it at T0.
fn in_flight(fx: &mut Fx, action: Action) {
    let flight = InFlight {
        action: action.clone(),
        sent_at: fx.now,
        epoch: fx.ha.pg_epoch,
    };
    fx.ha.inflight.insert(action.kind(), flight);
}

use CallbackKind::{OnReload, OnRoleChange, OnStart, OnStop};
use CallbackRole::{Primary, Replica};

#[test]
fn each_completed_action_asks_for_its_callbacks() {
    let stopped = Reply::Stopped {
        checkpoint_lsn: None,
    };
    let start_primary = Action::StartPostgres(StartAs::Primary);
    let stop = Action::StopPostgres {
        mode: StopMode::Fast,
    };
    // (case, configured, the role last seen, PostgreSQL, action, its
    // answer, callbacks asked for)
    type Case = (
        &'static str,
        CallbackSet,
        Option<CallbackRole>,
        PgState,
        Action,
        Result<Reply, String>,
        Vec<Action>,
    );
    let only_role_change = CallbackSet {
        on_role_change: true,
        ..CallbackSet::default()
    };
    let cases: Vec<Case> = vec![
        (
            "first start as a standby",
            all(),
            None,
            pg_stopped(),
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![cb(OnStart, Replica)],
        ),
        (
            "a former primary starts as a standby",
            all(),
            Some(Primary),
            pg_stopped(),
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![cb(OnStart, Replica), cb(OnRoleChange, Replica)],
        ),
        (
            "a primary starts again as primary",
            all(),
            Some(Primary),
            pg_stopped(),
            start_primary.clone(),
            Ok(Reply::Done),
            vec![cb(OnStart, Primary)],
        ),
        (
            "a failed start",
            all(),
            Some(Primary),
            pg_stopped(),
            standby_of(Some("b")),
            Err("boom".into()),
            vec![],
        ),
        (
            "stopped: the role it ran in",
            all(),
            Some(Primary),
            pg_primary(),
            stop.clone(),
            Ok(stopped),
            vec![cb(OnStop, Primary)],
        ),
        (
            "stopped, role from the probe",
            all(),
            None,
            pg_standby(Some("b")),
            stop,
            Ok(stopped),
            vec![cb(OnStop, Replica)],
        ),
        (
            "a fence of a running primary",
            all(),
            Some(Primary),
            pg_primary(),
            Action::Fence,
            Ok(Reply::Done),
            vec![cb(OnStop, Primary)],
        ),
        (
            "a fence of a stopped server",
            all(),
            Some(Primary),
            pg_stopped(),
            Action::Fence,
            Ok(Reply::Done),
            vec![],
        ),
        (
            "promoted",
            all(),
            Some(Replica),
            pg_standby(None),
            Action::Promote,
            Ok(Reply::Done),
            vec![cb(OnRoleChange, Primary)],
        ),
        (
            "a reload",
            all(),
            Some(Replica),
            pg_standby(Some("b")),
            Action::Reload,
            Ok(Reply::Done),
            vec![cb(OnReload, Replica)],
        ),
        (
            "parameters reloaded",
            all(),
            Some(Primary),
            pg_primary(),
            Action::ApplyParameters { fingerprint: 1 },
            Ok(Reply::Done),
            vec![cb(OnReload, Primary)],
        ),
        (
            "no scripts configured",
            CallbackSet::default(),
            Some(Primary),
            pg_stopped(),
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![],
        ),
        (
            "only on_role_change configured",
            only_role_change,
            Some(Primary),
            pg_stopped(),
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![cb(OnRoleChange, Replica)],
        ),
        (
            "a crashed primary found stopped by a new agent starts as a standby",
            all(),
            None,
            PgState {
                was_primary: true,
                ..pg_stopped()
            },
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![cb(OnStart, Replica), cb(OnRoleChange, Replica)],
        ),
        (
            "a stopped standby found by a new agent starts as a standby",
            all(),
            None,
            pg_stopped(),
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![cb(OnStart, Replica)],
        ),
        (
            "an empty data directory cloned and started",
            all(),
            None,
            pg_empty(),
            standby_of(Some("b")),
            Ok(Reply::Done),
            vec![cb(OnStart, Replica)],
        ),
    ];
    let mut failures = Vec::new();
    for (case, set, last, pg, action, result, want) in cases {
        let mut fx = Fx::new(State::Replica, view().leader("b", 3).primary("b"), pg).lease();
        fx.ha.node.callbacks = set;
        // What the agent's first probe showed.
        let first = fx.ha.pg.clone().expect("a probe");
        fx.ha.callbacks_on_probe(&first);
        if let Some(role) = last {
            fx.ha.cb = Default::default();
            // The role a probe of a running server would have shown.
            let seen = match role {
                Primary => pg_primary(),
                Replica => pg_standby(Some("b")),
            };
            fx.ha.callbacks_on_probe(&seen);
        }
        let kind = action.kind();
        in_flight(&mut fx, action);
        let got = callbacks(fx.on(Event::ActionDone(ActionDone { kind, result })));
        if got != want {
            failures.push(format!("{case}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_restart_operation_calls_on_restart_only() {
    let v = || view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v(), pg_standby(Some("b"))).lease();
    fx.ha.node.callbacks = all();
    let mut with_op: ClusterView = v().into();
    with_op.operation = Some(Operation {
        id: "r1".into(),
        kind: OperationKind::Restart {
            pending_only: false,
            role: None,
        },
        running: false,
    });
    let mut seen = Vec::new();
    seen.extend(fx.view(with_op));
    seen.extend(fx.probed(pg_standby(Some("b"))));
    seen.extend(fx.done(ActionKind::ReportOperation, Reply::Done));
    seen.extend(fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: None,
        },
    ));
    seen.extend(fx.probed(pg_stopped()));
    assert!(fx.ha.in_flight(ActionKind::StartPostgres), "{seen:?}");
    assert_eq!(callbacks(seen), vec![], "no on_stop within a restart");
    let started = fx.done(ActionKind::StartPostgres, Reply::Done);
    assert_eq!(
        callbacks(started),
        vec![cb(CallbackKind::OnRestart, Replica)]
    );
}

#[test]
fn a_promotion_after_a_failover_calls_on_role_change_primary() {
    let mut fx = won_with_pre_promote(CallbackSet {
        on_role_change: true,
        ..CallbackSet::default()
    });
    fx.done(ActionKind::PrePromote, Reply::Done);
    assert_eq!(
        callbacks(fx.done(ActionKind::Promote, Reply::Done)),
        vec![cb(OnRoleChange, Primary)]
    );
}

// ---- pre_promote ---------------------------------------------------------

fn pre_promoting() -> State {
    State::Candidate(CandidateStep::PrePromoting)
}

/// `a` streams from `b`; `b`'s key vanished; `c` is behind `a`; `a` has
/// a pre_promote script (and `scripts`), won the key at revision 12, and
/// its PrePromote is out.
fn won_with_pre_promote(scripts: CallbackSet) -> Fx {
    let v = view()
        .leader("b", 3)
        .primary("b")
        .replica("c")
        .received("c", 0x1FF_0000);
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    fx.ha.node.callbacks = CallbackSet {
        pre_promote: true,
        ..scripts
    };
    let vacant = view().revision(11).replica("c").received("c", 0x1FF_0000);
    assert_eq!(
        through_vacancy(&mut fx, vacant, None),
        vec![Action::AcquireLeader { lease: L }]
    );
    let actions = fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    // The script first; the member key already says primary (the key is
    // ours), as for a promotion.
    assert_eq!(actions, vec![Action::PrePromote, publish(fx.me())]);
    assert_eq!(fx.state(), &pre_promoting());
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx
}

#[test]
fn pre_promote_decides_whether_the_winner_promotes() {
    let release = Action::ReleaseLeader {
        lease: L,
        revision: 12,
    };
    // (case, the script's answer, actions, state, stands aside)
    type Case = (
        &'static str,
        Result<Reply, String>,
        Vec<Action>,
        State,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            "zero exit: promote",
            Ok(Reply::Done),
            vec![Action::Promote],
            State::Candidate(CandidateStep::Promoting),
            false,
        ),
        (
            "non-zero exit: give the key back, unfenced",
            Err("pre_promote exited with status 1".into()),
            vec![release.clone()],
            State::Candidate(CandidateStep::Abandoning),
            true,
        ),
        (
            "timeout: the same",
            Err("pre_promote ran longer than callback_timeout 30s".into()),
            vec![release.clone()],
            State::Candidate(CandidateStep::Abandoning),
            true,
        ),
        (
            "an answer of the wrong shape counts as a failure",
            Ok(Reply::Lost),
            vec![release],
            State::Candidate(CandidateStep::Abandoning),
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (case, result, want, state, aside) in cases {
        let mut fx = won_with_pre_promote(CallbackSet::default());
        let got = fx.on(Event::ActionDone(ActionDone {
            kind: ActionKind::PrePromote,
            result,
        }));
        let stands_aside = fx.ha.stands_aside_until(fx.now).is_some();
        if got != want || fx.state() != &state || stands_aside != aside {
            failures.push(format!(
                "{case}: wanted {want:?} in {state:?} (aside {aside}), got {got:?} in {:?} (aside {stands_aside})",
                fx.state()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn while_pre_promote_runs_the_lease_is_kept_and_nothing_promotes() {
    let mut fx = won_with_pre_promote(CallbackSet::default());
    // Keepalives go on (the store lane), and a probe too (the script is on
    // neither lane); no second PrePromote, no Promote.
    for ms in [1_000, 2_000, 3_000] {
        let actions = fx.tick(ms);
        assert!(
            actions.contains(&Action::Keepalive { lease: L }),
            "{actions:?}"
        );
        assert!(
            !actions.contains(&Action::PrePromote) && !actions.contains(&Action::Promote),
            "{actions:?}"
        );
        fx.done(ActionKind::Keepalive, lease_reply(ms + VALID_MS));
        if actions.contains(&Action::Probe) {
            fx.probed(pg_standby(None));
        }
        assert_eq!(fx.state(), &pre_promoting());
        assert!(fx.ha.holds_leader(fx.now));
    }
}

#[test]
fn a_lease_lost_during_pre_promote_ends_the_candidacy_and_ignores_the_script() {
    let mut fx = won_with_pre_promote(CallbackSet::default());
    fx.now = at(VALID_MS);
    fx.on(Event::Tick);
    assert_eq!(fx.state(), &State::Replica);
    assert!(!fx.ha.holds_leader_key());
    // The script's late success promotes nothing.
    let late = fx.done(ActionKind::PrePromote, Reply::Done);
    assert!(!late.contains(&Action::Promote), "{late:?}");
    assert_eq!(fx.state(), &State::Replica);
}

#[test]
fn after_a_failed_pre_promote_the_node_stands_aside_for_one_ttl() {
    let ttl_ms = HaConfig::default().ttl.as_millis() as u64;
    let mut fx = won_with_pre_promote(CallbackSet::default());
    fx.fail(ActionKind::PrePromote);
    assert_eq!(fx.ha.stands_aside_until(fx.now), Some(at(ttl_ms)));
    // Released: the member key says replica again, nothing else.
    let actions = fx.done(ActionKind::ReleaseLeader, Reply::Done);
    assert_eq!(actions, vec![publish(fx.me())]);
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(fx.state(), &State::Replica);
    assert!(!fx.ha.holds_leader_key());
    // The key is vacant in a newer view: not raced for within the ttl, and
    // the core wakes when the stand-aside ends.
    fx.quiet_at(100);
    let vacant = || view().revision(13).replica("c").received("c", 0x1FF_0000);
    assert_eq!(fx.view(vacant()), vec![]);
    assert_eq!(fx.state(), &State::Replica);
    assert!(fx.ha.next_wakeup(fx.now).is_some_and(|t| t <= at(ttl_ms)));
    fx.quiet_at(ttl_ms - 1);
    let actions = fx.tick(ttl_ms - 1);
    assert!(
        actions
            .iter()
            .all(|a| matches!(a, Action::PublishMember { .. })),
        "only routine member key upkeep: {actions:?}"
    );
    assert_eq!(fx.state(), &State::Replica);
    fx.done(ActionKind::PublishMember, Reply::Done);
    // One ttl later it may race again (the script runs again if it wins).
    fx.quiet_at(ttl_ms);
    assert_eq!(
        through_vacancy(&mut fx, vacant().revision(14), None),
        vec![Action::AcquireLeader { lease: L }]
    );
}

#[test]
fn without_pre_promote_a_won_race_promotes_at_once() {
    let v = view()
        .leader("b", 3)
        .primary("b")
        .replica("c")
        .received("c", 0x1FF_0000);
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    fx.ha.node.callbacks = all();
    let vacant = view().revision(11).replica("c").received("c", 0x1FF_0000);
    through_vacancy(&mut fx, vacant, None);
    let actions = fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    assert_eq!(actions, vec![Action::Promote, publish(fx.me())]);
}
