//! The dynamic parameters reach a running server, and the restart order
//! for settings a standby must match.

use super::*;

/// `v` with the dynamic parameters identified by `fingerprint`.
fn params(v: V, fingerprint: u64) -> ClusterView {
    let mut v: ClusterView = v.into();
    v.config.parameters_fingerprint = fingerprint;
    v
}

fn apply(fingerprint: u64) -> Action {
    Action::ApplyParameters { fingerprint }
}

#[test]
fn changed_parameters_are_written_and_reloaded_on_a_running_server() {
    let leader = || view().leader("a", L).primary("a");
    let follower = || view().leader("b", 3).primary("b");
    // (case, state, first view, probe, next view, actions on it)
    type Case = (
        &'static str,
        State,
        ClusterView,
        PgState,
        ClusterView,
        Vec<Action>,
    );
    let cases: Vec<Case> = vec![
        (
            "primary: new parameters are applied",
            State::Primary(PrimaryState::default()),
            params(leader(), 1),
            pg_primary(),
            params(leader(), 2),
            vec![apply(2)],
        ),
        (
            "streaming standby: the same",
            State::Replica,
            params(follower(), 1),
            pg_standby(Some("b")),
            params(follower(), 2),
            vec![apply(2)],
        ),
        (
            "unchanged parameters (another key changed): nothing",
            State::Replica,
            params(follower(), 1),
            pg_standby(Some("b")),
            params(follower().revision(11), 1),
            vec![],
        ),
        (
            "busy with another PostgreSQL action: waits its turn",
            State::Replica,
            params(view().replica("b"), 1),
            pg_standby(None),
            params(follower(), 2),
            vec![Action::ConfigureStandby {
                upstream: upstream("b"),
                slot: "a".into(),
            }],
        ),
        (
            "stopped standby: its start writes them, no reload",
            State::Replica,
            params(follower(), 1),
            pg_stopped(),
            params(follower(), 2),
            vec![],
        ),
        (
            "shutting down: left alone",
            State::Stopping(StoppingState::StoppingPostgres),
            params(follower(), 1),
            pg_standby(Some("b")),
            params(follower(), 2),
            vec![],
        ),
    ];
    for (case, state, first, pg, next, want) in cases {
        let leads = first.leader.as_ref().is_some_and(|l| l.holder == "a");
        let mut fx = Fx::new(state.clone(), first, pg).lease();
        if leads {
            fx = fx.leader();
        }
        fx.tick(0);
        fx.quiet_at(10);
        let got: Vec<Action> = fx
            .view(next)
            .into_iter()
            .filter(|a| !matches!(a, Action::StopPostgres { .. }))
            .collect();
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn an_applied_change_is_not_repeated_and_a_failed_one_is_retried() {
    let follower = || view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, params(follower(), 1), pg_standby(Some("b"))).lease();
    assert_eq!(fx.tick(0), vec![]);
    assert_eq!(fx.view(params(follower(), 2)), vec![apply(2)]);
    // Still in flight: not asked twice.
    assert_eq!(fx.view(params(follower().revision(12), 2)), vec![]);
    assert_eq!(fx.fail(ActionKind::ApplyParameters), vec![Action::Probe]);
    fx.probed(pg_standby(Some("b")));
    fx.quiet_at(500);
    assert_eq!(fx.tick(500), vec![], "backing off for loop_wait");
    fx.quiet_at(1_000);
    assert_eq!(fx.tick(1_000), vec![apply(2)]);
    assert_eq!(
        fx.done(ActionKind::ApplyParameters, Reply::Done),
        vec![Action::Probe]
    );
    // The reload left a setting that needs a restart: the member key says so.
    let pending = PgState {
        pending_restart: true,
        ..pg_standby(Some("b"))
    };
    let got = fx.probed(pending);
    assert!(fx.me().pending_restart);
    assert_eq!(got, vec![publish(fx.me())]);
    fx.quiet_at(2_000);
    assert_eq!(fx.tick(2_000), vec![], "applied once");
}

/// Asserts a verdict: `Ok`, or a refusal whose reason holds `word`.
fn judged(case: &str, got: Result<(), String>, want: Result<(), &str>) {
    match want {
        Ok(()) => assert_eq!(got, Ok(()), "{case}"),
        Err(word) => {
            let reason = got.err().unwrap_or_default();
            assert!(reason.contains(word), "{case}: {reason}");
        }
    }
}

fn values(pairs: &[(&str, i64)]) -> SettingValues {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn restart_order_for_settings_a_standby_must_match() {
    let mc = |v| values(&[("max_connections", v)]);
    // (case, member, Ok or a word the reason holds)
    let standbys = |pairs: &[(&str, Option<i64>)]| -> BTreeMap<String, Option<SettingValues>> {
        pairs
            .iter()
            .map(|(m, v)| (m.to_string(), v.map(mc)))
            .collect()
    };
    let two_at_200 = standbys(&[("b", Some(200)), ("c", Some(200))]);
    let one_behind = standbys(&[("b", Some(200)), ("c", Some(100))]);
    let one_unknown = standbys(&[("b", Some(200)), ("c", None)]);
    let none = standbys(&[]);
    let (r100, r200, r50) = (mc(100), mc(200), mc(50));
    let cases: Vec<(&str, PendingRestart, Result<(), &str>)> = vec![
        (
            "standby raises past the primary: first, fine",
            PendingRestart::Standby {
                running: &r100,
                pending: &r200,
                primary: Some(&r100),
            },
            Ok(()),
        ),
        (
            "standby lowers below what the primary still runs: waits",
            PendingRestart::Standby {
                running: &r200,
                pending: &r100,
                primary: Some(&r200),
            },
            Err("the primary restarts first"),
        ),
        (
            "standby lowers to what the primary already runs: fine",
            PendingRestart::Standby {
                running: &r200,
                pending: &r100,
                primary: Some(&r100),
            },
            Ok(()),
        ),
        (
            "standby lowers, primary unknown: waits",
            PendingRestart::Standby {
                running: &r200,
                pending: &r100,
                primary: None,
            },
            Err("primary's value is unknown"),
        ),
        (
            "standby raises, primary unknown: fine (never below what ran before)",
            PendingRestart::Standby {
                running: &r100,
                pending: &r200,
                primary: None,
            },
            Ok(()),
        ),
        (
            "primary raises while a standby still runs less: waits",
            PendingRestart::Primary {
                running: &r100,
                pending: &r200,
                standbys: &one_behind,
            },
            Err("c restarts first"),
        ),
        (
            "primary raises after every standby did: fine",
            PendingRestart::Primary {
                running: &r100,
                pending: &r200,
                standbys: &two_at_200,
            },
            Ok(()),
        ),
        (
            "primary raises past a standby whose value is unknown: waits",
            PendingRestart::Primary {
                running: &r100,
                pending: &r200,
                standbys: &one_unknown,
            },
            Err("standby c's value is unknown"),
        ),
        (
            "primary lowers: first, fine, whatever the standbys run",
            PendingRestart::Primary {
                running: &r100,
                pending: &r50,
                standbys: &one_unknown,
            },
            Ok(()),
        ),
        (
            "primary without standbys raises: fine",
            PendingRestart::Primary {
                running: &r100,
                pending: &r200,
                standbys: &none,
            },
            Ok(()),
        ),
    ];
    for (case, member, want) in cases {
        let got = may_restart_for_pending(member);
        if let Err(reason) = &got {
            assert!(reason.starts_with("max_connections: "), "{case}: {reason}");
        }
        judged(case, got, want);
    }
}

#[test]
fn this_member_is_judged_from_its_probe_and_the_published_values() {
    let mc = |v| values(&[("max_connections", v)]);
    let with_mc = |v: V, name: &str, value: Option<i64>| {
        v.with(name, |m| m.must_match = value.map(mc).unwrap_or_default())
    };
    let pending = |running_pg: PgState, running: i64, next: i64| PgState {
        must_match: mc(running),
        must_match_pending: mc(next),
        pending_restart: running != next,
        ..running_pg
    };
    let as_standby = |p: Option<i64>| with_mc(view().leader("b", 3).primary("b"), "b", p);
    let as_primary =
        |c: Option<i64>| with_mc(view().leader("a", L).primary("a").replica("c"), "c", c);
    // (case, state, view, probe, Ok or a word of the reason)
    type Case = (&'static str, State, V, PgState, Result<(), &'static str>);
    let cases: Vec<Case> = vec![
        (
            "standby lowering below its primary: waits",
            State::Replica,
            as_standby(Some(200)),
            pending(pg_standby(Some("b")), 200, 100),
            Err("the primary restarts first"),
        ),
        (
            "standby lowering to what the primary runs: may",
            State::Replica,
            as_standby(Some(100)),
            pending(pg_standby(Some("b")), 200, 100),
            Ok(()),
        ),
        (
            "standby lowering, primary publishes nothing: waits",
            State::Replica,
            as_standby(None),
            pending(pg_standby(Some("b")), 200, 100),
            Err("unknown"),
        ),
        (
            "primary raising above a streaming standby: waits",
            State::Primary(PrimaryState::default()),
            as_primary(Some(100)),
            pending(pg_primary(), 100, 200),
            Err("c restarts first"),
        ),
        (
            "primary raising after the standby did: may",
            State::Primary(PrimaryState::default()),
            as_primary(Some(200)),
            pending(pg_primary(), 100, 200),
            Ok(()),
        ),
        (
            "primary raising past a stopped standby: may (its start takes the new value)",
            State::Primary(PrimaryState::default()),
            as_primary(Some(100)).with("c", |m| m.state = MemberState::Stopped),
            pending(pg_primary(), 100, 200),
            Ok(()),
        ),
        (
            "stopped server: a start is no restart",
            State::Replica,
            as_standby(Some(200)),
            pg_stopped(),
            Ok(()),
        ),
    ];
    for (case, state, v, pg, want) in cases {
        let fx = Fx::new(state, v, pg);
        judged(case, fx.ha.may_restart_for_pending_settings(), want);
    }
}

#[test]
fn the_member_key_carries_the_running_values() {
    let pg = PgState {
        must_match: values(&[("max_connections", 100)]),
        must_match_pending: values(&[("max_connections", 150)]),
        pending_restart: true,
        ..pg_standby(Some("b"))
    };
    let fx = Fx::new(State::Replica, view().leader("b", 3).primary("b"), pg).lease();
    let me = fx.me();
    assert!(me.pending_restart);
    assert_eq!(me.must_match, values(&[("max_connections", 100)]));
    let stopped = Fx::new(State::Replica, view(), pg_stopped()).lease();
    assert!(stopped.me().must_match.is_empty());
}

#[test]
fn a_keepalive_interval_longer_than_the_lease_held_renews_by_half_its_validity() {
    // The lease from a grant sent at 0 is valid until VALID_MS (4 s).
    for (interval_ms, due_ms) in [(1_000, 1_000), (10_000, VALID_MS / 2)] {
        let mut v: ClusterView = view().leader("b", 3).primary("b").into();
        v.config.keepalive_interval = Duration::from_millis(interval_ms);
        let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b")));
        let ttl = fx.ha.cfg().ttl;
        assert!(fx.tick(0).contains(&Action::GrantLease { ttl }));
        fx.done(ActionKind::GrantLease, lease_reply(VALID_MS));
        assert_eq!(fx.ha.next_keepalive(), Some(at(due_ms)), "{interval_ms}");
        let keepalive = Action::Keepalive { lease: L };
        assert!(!fx.tick(due_ms - 1).contains(&keepalive), "{interval_ms}");
        assert!(fx.tick(due_ms).contains(&keepalive), "{interval_ms}");
    }
}
