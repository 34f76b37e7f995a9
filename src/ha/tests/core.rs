//! The first decision, the action bookkeeping, and names.

use super::*;

fn fresh() -> Fx {
    Fx {
        ha: Ha::new(node("a")),
        now: at(0),
    }
}

#[test]
fn nothing_is_decided_before_the_first_view_and_probe() {
    let mut fx = fresh();
    assert_eq!(fx.tick(0), vec![Action::Probe]);
    assert_eq!(fx.view(view().leader("b", 3).primary("b")), vec![]);
    assert_eq!(fx.state(), &State::Starting);
    // Decided on the probe's answer: a replica of b, and a lease for the
    // member key.
    assert_eq!(
        fx.probed(pg_stopped()),
        vec![
            standby_of(Some("b")),
            Action::GrantLease {
                ttl: HaConfig::default().ttl
            }
        ]
    );
    assert_eq!(fx.state(), &State::Replica);
}

#[test]
fn starting_decisions() {
    let ttl = HaConfig::default().ttl;
    // (case, view, probe, state after, actions)
    let cases: Vec<(&str, V, PgState, State, Vec<Action>)> = vec![
        (
            "empty cluster, empty data dir: race for initialize",
            view().empty_cluster(),
            pg_empty(),
            State::Bootstrapping(BootstrapStep::Racing),
            vec![Action::AcquireInitialize, Action::GrantLease { ttl }],
        ),
        (
            "empty cluster, existing data dir: race too (no initdb if won)",
            view().empty_cluster(),
            pg_stopped(),
            State::Bootstrapping(BootstrapStep::Racing),
            vec![Action::AcquireInitialize, Action::GrantLease { ttl }],
        ),
        (
            "initialized cluster, empty data dir: wait for a leader to clone",
            view(),
            pg_empty(),
            State::Bootstrapping(BootstrapStep::AwaitingLeader),
            vec![Action::GrantLease { ttl }],
        ),
        (
            "data dir ready, someone else leads: follow it",
            view().leader("b", 3).primary("b"),
            pg_stopped(),
            State::Replica,
            vec![standby_of(Some("b")), Action::GrantLease { ttl }],
        ),
        (
            "data dir ready, running standby of the leader: keep it",
            view().leader("b", 3).primary("b"),
            pg_standby(Some("b")),
            State::Replica,
            vec![Action::GrantLease { ttl }],
        ),
        (
            "data dir ready, we hold the leader key: adopt its lease first",
            view().leader("a", L).primary("a"),
            pg_stopped(),
            State::Primary(PrimaryState::default()),
            vec![Action::Keepalive { lease: L }],
        ),
        (
            "we hold the key but our writable server outlived the agent: fence, then decide",
            view().leader("a", L).primary("a"),
            pg_primary(),
            State::Starting,
            vec![Action::Fence],
        ),
        (
            "a writable server and someone else leads: fence, then decide",
            view().leader("b", 3).primary("b"),
            pg_primary(),
            State::Starting,
            vec![Action::Fence],
        ),
    ];
    for (case, v, pg, state, actions) in cases {
        let mut fx = fresh();
        fx.tick(0);
        fx.view(v);
        assert_eq!(fx.probed(pg), actions, "{case}");
        assert_eq!(fx.state(), &state, "{case}");
    }
}

#[test]
fn a_writable_server_found_at_start_is_fenced_before_anything_else() {
    let mut fx = fresh();
    fx.tick(0);
    fx.view(view().leader("a", L).primary("a"));
    assert_eq!(fx.probed(pg_primary()), vec![Action::Fence]);
    assert_eq!(fx.done(ActionKind::Fence, Reply::Done), vec![Action::Probe]);
    // Only with the server down does it adopt its lease and restart as a
    // primary once the keepalive confirms it.
    assert_eq!(
        fx.probed(pg_stopped()),
        vec![Action::Keepalive { lease: L }]
    );
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    let actions = fx.done(ActionKind::Keepalive, lease_reply(VALID_MS));
    assert_eq!(
        actions,
        vec![Action::StartPostgres(StartAs::Primary), publish(fx.me())]
    );
}

#[test]
fn adopted_lease_confirmed_by_keepalive_continues_as_primary() {
    let mut fx = fresh();
    fx.tick(0);
    fx.view(view().leader("a", L).primary("a"));
    assert_eq!(
        fx.probed(pg_stopped()),
        vec![Action::Keepalive { lease: L }]
    );
    assert!(!fx.ha.holds_leader(fx.now));
    let actions = fx.done(ActionKind::Keepalive, lease_reply(VALID_MS));
    assert_eq!(
        actions,
        vec![Action::StartPostgres(StartAs::Primary), publish(fx.me())]
    );
    assert!(fx.ha.holds_leader(fx.now));
}

#[test]
fn adopted_lease_that_is_gone_is_not_used() {
    let mut fx = fresh();
    fx.tick(0);
    fx.view(view().leader("a", L).primary("a"));
    fx.probed(pg_stopped());
    let actions = fx.done(ActionKind::Keepalive, Reply::LeaseGone);
    assert_eq!(fx.state(), &State::Replica);
    // Our stale key still names us: nobody to follow yet, a standby that
    // can never write, and a new lease for the member key.
    assert_eq!(
        actions,
        vec![
            standby_of(None),
            Action::GrantLease {
                ttl: HaConfig::default().ttl
            }
        ]
    );
}

#[test]
fn foreign_data_directory_exits_with_the_fix() {
    let mut fx = fresh();
    fx.tick(0);
    fx.view(view().leader("b", 3).primary("b"));
    let pg = PgState {
        data_dir: DataDir::Initialized { sysid: 42 },
        ..pg_stopped()
    };
    let actions = fx.probed(pg);
    let [Action::Exit { error: Some(error) }] = actions.as_slice() else {
        panic!("expected one Exit with an error, got {actions:?}");
    };
    assert!(error.contains("42") && error.contains("move the data directory aside"));
    assert_eq!(fx.state(), &State::Exited);
    assert_eq!(fx.tick(5_000), vec![]);
    assert_eq!(fx.on(Event::Shutdown), vec![]);
}

#[test]
fn one_action_per_kind_and_one_postgres_action_at_a_time() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_stopped()).lease();
    assert_eq!(fx.tick(0), vec![standby_of(Some("b")), publish(fx.me())]);
    assert_eq!(fx.me().state, MemberState::Starting);
    // Not twice while it runs; the keepalive (store lane) still goes out,
    // the due probe (PostgreSQL lane) waits.
    assert_eq!(fx.tick(10), vec![]);
    assert_eq!(fx.tick(1_000), vec![Action::Keepalive { lease: L }]);
    assert_eq!(fx.tick(1_500), vec![]);
    fx.done(ActionKind::PublishMember, Reply::Done);
    // Done: the old probe is stale, so probe before any PostgreSQL rule.
    let actions = fx.done(ActionKind::StartPostgres, Reply::Done);
    assert_eq!(actions, vec![publish(fx.me()), Action::Probe]);
    assert_eq!(fx.me().state, MemberState::Running);
}

#[test]
fn answers_to_nothing_in_flight_and_misshapen_answers_are_not_trusted() {
    let v = view().leader("a", L).primary("a");
    let mut fx = Fx::new(State::Primary(PrimaryState::default()), v, pg_primary())
        .lease()
        .leader();
    // Nothing in flight: ignored.
    assert_eq!(fx.done(ActionKind::Keepalive, lease_reply(60_000)), vec![]);
    assert_eq!(
        fx.ha.lease().and_then(|l| l.valid_until),
        Some(at(VALID_MS))
    );
    assert_eq!(fx.tick(1_000)[0], Action::Keepalive { lease: L });
    // A keepalive answered with `Done` is a driver bug: not a renewal.
    assert_eq!(fx.done(ActionKind::Keepalive, Reply::Done), vec![]);
    assert_eq!(
        fx.ha.lease().and_then(|l| l.valid_until),
        Some(at(VALID_MS))
    );
}

#[test]
fn a_probe_sent_before_a_fence_completed_is_discarded() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    assert_eq!(
        fx.tick(1_000),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    fx.ha.must_fence = true;
    assert_eq!(fx.tick(1_001), vec![Action::Fence]);
    // Stopped, as far as we know: the member key says so.
    assert_eq!(
        fx.done(ActionKind::Fence, Reply::Done),
        vec![publish(fx.me())]
    );
    assert_eq!(fx.me().state, MemberState::Stopped);
    // The probe's answer predates the fence: it must not resurrect a
    // writable server (which would fence again) nor count as fresh.
    assert_eq!(fx.probed(pg_primary()), vec![Action::Probe]);
    assert!(!fx.ha.pg.as_ref().is_some_and(|p| p.running));
}

#[test]
fn failed_actions_back_off_for_loop_wait() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_stopped()).lease();
    assert_eq!(fx.tick(0), vec![standby_of(Some("b")), publish(fx.me())]);
    fx.done(ActionKind::PublishMember, Reply::Done);
    let actions = fx.fail(ActionKind::StartPostgres);
    assert_eq!(actions, vec![publish(fx.me()), Action::Probe]);
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(fx.probed(pg_stopped()), vec![]);
    assert_eq!(fx.ha.next_wakeup(fx.now), Some(at(1_000)));
    assert_eq!(
        fx.tick(1_000),
        vec![
            standby_of(Some("b")),
            Action::Keepalive { lease: L },
            publish(fx.me())
        ]
    );
}

#[test]
fn next_wakeup_is_the_earliest_deadline() {
    let v = view().leader("a", L).primary("a");
    let mut fx = Fx::new(State::Primary(PrimaryState::default()), v, pg_primary())
        .lease()
        .leader();
    assert_eq!(fx.ha.next_wakeup(at(0)), Some(at(1_000)));
    // Only the lease deadline left ahead once everything else was done.
    fx.ha.last_keepalive = Some(at(3_500));
    fx.ha.last_probe = Some(at(3_500));
    fx.ha.published = None;
    fx.ha.status_published = None;
    assert_eq!(fx.ha.next_wakeup(at(3_500)), Some(at(VALID_MS)));
    // A chore already due but blocked behind an action in flight is not a
    // wakeup (the driver would spin); the answer will be an event.
    fx.ha.retry_at.insert(ActionKind::StartPostgres, at(3_000));
    assert_eq!(fx.ha.next_wakeup(at(3_500)), Some(at(VALID_MS)));
    assert_eq!(fx.ha.next_wakeup(at(VALID_MS)), Some(at(4_500)));
}

#[test]
fn a_crashed_primary_wakes_the_driver_at_its_start_timeout() {
    let mut v = view().leader("a", L).primary("a");
    v.0.config.primary_start_timeout = Duration::from_millis(2_000);
    let mut fx = Fx::new(State::Primary(PrimaryState::default()), v, pg_primary())
        .lease()
        .leader();
    fx.ha.last_keepalive = Some(at(3_500));
    fx.ha.last_probe = Some(at(3_500));
    fx.ha.published = None;
    fx.ha.status_published = None;
    let revision = fx.ha.leader_revision.unwrap_or(0);
    fx.ha.primary_down = Some(crate::ha::primary::ServerDown {
        revision,
        since: at(1_000),
        giving_up: false,
    });
    // Down since 1000 with a 2 s timeout: the driver must tick at 3000,
    // before the lease deadline (VALID_MS) and the next keepalive.
    assert_eq!(fx.ha.next_wakeup(at(1_500)), Some(at(3_000)));
    // Once it gives up, the fence's answer is the next event.
    if let Some(d) = fx.ha.primary_down.as_mut() {
        d.giving_up = true;
    }
    assert_eq!(fx.ha.next_wakeup(at(1_500)), Some(at(VALID_MS)));
}

#[test]
fn slot_names_are_sanitized() {
    let cases = [
        ("a", "a"),
        ("node_1", "node_1"),
        ("Node-1.Example", "node_1_example"),
        ("pg 2", "pg_2"),
        ("", "_"),
        ("☃é", "__"),
        ("'; DROP TABLE x; --", "___drop_table_x____"),
    ];
    for (member, slot) in cases {
        assert_eq!(sanitize_slot_name(member), slot, "{member:?}");
    }
    let long = "x".repeat(200);
    assert_eq!(sanitize_slot_name(&long), "x".repeat(63));
    let long_unicode = "é".repeat(100);
    assert_eq!(sanitize_slot_name(&long_unicode).len(), 63);
}
