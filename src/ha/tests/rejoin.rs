//! Rejoining: a node behind the leader's timeline rewinds (or re-clones).

use super::*;

fn rewind_from(name: &str) -> Action {
    Action::Rewind {
        from: upstream(name),
    }
}

/// `b` leads on timeline 2.
fn tl2_leader() -> V {
    view()
        .leader("b", 3)
        .primary("b")
        .with("b", |m| m.timeline = Some(2))
}

/// A stopped former primary on timeline 1.
fn pg_old_primary() -> PgState {
    PgState {
        was_primary: true,
        ..pg_stopped()
    }
}

/// A running standby on timeline 1 that does not stream.
fn pg_stuck() -> PgState {
    PgState {
        streaming: false,
        ..pg_standby(Some("b"))
    }
}

#[test]
fn rejoin_rules() {
    // (case, view, probe, state after, actions)
    let cases: Vec<(&str, V, PgState, State, Vec<Action>)> = vec![
        (
            "stopped former primary behind the leader's timeline: rewind before starting",
            tl2_leader(),
            pg_old_primary(),
            State::Rejoining(RejoinStep::Rewinding),
            vec![rewind_from("b")],
        ),
        (
            "stopped former primary, the leader has not promoted past it yet: stay stopped",
            view().leader("b", 3).primary("b"),
            pg_old_primary(),
            State::Replica,
            vec![],
        ),
        (
            "stopped former standby behind the leader's timeline: start, it follows",
            tl2_leader(),
            pg_stopped(),
            State::Replica,
            vec![standby_of(Some("b"))],
        ),
        (
            "former primary, leader's timeline unknown: stay stopped",
            view()
                .leader("b", 3)
                .primary("b")
                .with("b", |m| m.timeline = None),
            pg_old_primary(),
            State::Replica,
            vec![],
        ),
        (
            "former primary, leader down (timeline unknown): stay stopped",
            tl2_leader().with("b", |m| m.state = MemberState::Stopped),
            pg_old_primary(),
            State::Replica,
            vec![],
        ),
        (
            "former primary, the key still names it (a stale view): stay stopped",
            view().leader("a", 99).primary("a"),
            pg_old_primary(),
            State::Replica,
            vec![],
        ),
        (
            "former primary, key vacant, lease valid: start with no upstream, then race",
            view().replica("b"),
            pg_old_primary(),
            State::Replica,
            vec![standby_of(None)],
        ),
        (
            "running standby not streaming, behind, first probe: wait",
            tl2_leader(),
            pg_stuck(),
            State::Replica,
            vec![],
        ),
    ];
    for (case, v, pg, state, mut actions) in cases {
        let mut fx = Fx::new(State::Replica, v, pg).lease();
        let got = fx.tick(0);
        if fx.me().state == MemberState::Starting {
            actions.push(publish(fx.me()));
        }
        assert_eq!(got, actions, "{case}");
        assert_eq!(fx.state(), &state, "{case}");
    }
}

#[test]
fn a_former_primary_cut_off_from_the_store_stays_stopped_until_it_knows() {
    // Fenced after its lease ran out; the key vanished at the store, but
    // with no valid lease of its own the view may be stale: wait.
    let mut fx = Fx::new(State::Replica, view().replica("b"), pg_old_primary());
    let got = fx.tick(0);
    assert!(
        !got.iter().any(|a| matches!(a, Action::StartPostgres(_))),
        "started without knowing who leads: {got:?}"
    );
    // Once the store answers again (a lease) and shows b on timeline 2:
    // rewind first.
    fx.ha.lease = Some(Lease {
        id: L,
        valid_until: Some(at(VALID_MS)),
    });
    let got = fx.view(tl2_leader().revision(12));
    assert_eq!(got.first(), Some(&rewind_from("b")), "{got:?}");
}

#[test]
fn a_standby_that_stops_streaming_is_never_stopped_by_the_core() {
    // This is also what a healthy standby looks like right after its
    // primary died (no receiver, restartpoint timeline, the dead leader's
    // key still "running"): stopping and rewinding it would throw away the
    // copy the failover needs.
    let mut fx = Fx::new(State::Replica, tl2_leader(), pg_standby(Some("b"))).lease();
    for t in 1..=5u64 {
        fx.quiet_at(t * 1_000);
        let got = fx.probed(pg_stuck());
        assert!(
            got.iter()
                .all(|a| matches!(a, Action::PublishMember { .. })),
            "probe {t}: {got:?}"
        );
        assert_eq!(fx.state(), &State::Replica);
    }
}

#[test]
fn a_streaming_probe_resets_the_divergence_count() {
    let mut fx = Fx::new(State::Replica, tl2_leader(), pg_standby(Some("b"))).lease();
    fx.quiet_at(1_000);
    // The member key follows what the probes say; never a stop.
    let got = fx.probed(pg_stuck());
    assert_eq!(got, vec![publish(fx.me())]);
    fx.quiet_at(2_000);
    let got = fx.probed(pg_standby(Some("b")));
    assert_eq!(got, vec![]);
    fx.quiet_at(3_000);
    let got = fx.probed(pg_stuck());
    assert_eq!(got, vec![]);
    assert_eq!(fx.state(), &State::Replica);
}

#[test]
fn a_failed_rewind_moves_the_data_dir_aside_and_reclones() {
    let mut fx = Fx::new(State::Replica, tl2_leader(), pg_old_primary()).lease();
    assert_eq!(fx.tick(0), vec![rewind_from("b")]);
    fail_rewind_until_the_last_attempt(&mut fx);
    assert_eq!(fx.fail(ActionKind::Rewind), vec![Action::Probe]);
    assert_eq!(fx.state(), &State::Rejoining(RejoinStep::MovingAside));
    assert_eq!(fx.probed(pg_old_primary()), vec![Action::MoveDataDirAside]);
    // Once the directory is gone, the member key says so.
    let got = fx.done(ActionKind::MoveDataDirAside, Reply::Done);
    assert_eq!(fx.me().role, MemberRole::Uninitialized);
    assert_eq!(got, vec![publish(fx.me()), Action::Probe]);
    assert_eq!(
        fx.state(),
        &State::Bootstrapping(BootstrapStep::AwaitingLeader)
    );
    // (The member key was published a moment ago; the next publish
    // carries "creating replica".)
    let got = fx.probed(pg_empty());
    assert_eq!(
        got,
        vec![Action::Basebackup {
            from: upstream("b"),
            slot: "a".into()
        }]
    );
    assert_eq!(fx.state(), &State::Bootstrapping(BootstrapStep::Cloning));
}

#[test]
fn without_reclone_a_failed_rewind_stays_stopped_as_rewind_failed() {
    let mut fx = Fx::new(State::Replica, tl2_leader(), pg_old_primary()).lease();
    fx.ha.node.rejoin.remove_data_directory_on_rewind_failure = false;
    assert_eq!(fx.tick(0), vec![rewind_from("b")]);
    fail_rewind_until_the_last_attempt(&mut fx);
    let got = fx.fail(ActionKind::Rewind);
    assert_eq!(fx.state(), &State::Rejoining(RejoinStep::Failed));
    assert_eq!(fx.me().state, MemberState::RewindFailed);
    assert_eq!(got, vec![publish(fx.me()), Action::Probe]);
    assert_eq!(fx.probed(pg_old_primary()), vec![]);
    fx.quiet_at(60_000);
    assert_eq!(fx.probed(pg_old_primary()), vec![], "no retries, no start");
    // An operator empties the data directory: re-clone.
    fx.probed(pg_empty());
    assert_eq!(fx.state(), &State::Bootstrapping(BootstrapStep::Cloning));
}

#[test]
fn rewinding_off_goes_straight_to_the_reclone() {
    let mut fx = Fx::new(State::Replica, tl2_leader(), pg_old_primary()).lease();
    fx.ha.node.rejoin.use_pg_rewind = false;
    assert_eq!(fx.tick(0), vec![Action::MoveDataDirAside]);
    assert_eq!(fx.state(), &State::Rejoining(RejoinStep::MovingAside));
}

#[test]
fn the_leader_leaving_mid_rejoin_makes_it_a_replica_again() {
    let mut fx = Fx::new(
        State::Rejoining(RejoinStep::Rewinding),
        view().replica("b"),
        pg_old_primary(),
    )
    .lease();
    let got = fx.tick(0);
    assert_eq!(fx.me().state, MemberState::Starting);
    assert_eq!(got, vec![standby_of(None), publish(fx.me())]);
    assert_eq!(fx.state(), &State::Replica);
}

/// Fails pg_rewind REWIND_ATTEMPTS - 1 times: each time the node goes back
/// to being a replica and, a loop_wait later, tries again.
fn fail_rewind_until_the_last_attempt(fx: &mut Fx) {
    for attempt in 1..REWIND_ATTEMPTS {
        fx.fail(ActionKind::Rewind);
        assert_eq!(fx.state(), &State::Replica, "attempt {attempt}");
        fx.quiet_at(u64::from(attempt) * 1_000);
        let got = fx.probed(pg_old_primary());
        assert!(
            got.contains(&rewind_from("b")),
            "attempt {attempt}: {got:?}"
        );
        assert_eq!(fx.state(), &State::Rejoining(RejoinStep::Rewinding));
    }
}

#[test]
fn a_failing_rewind_against_a_dead_leader_never_moves_the_data_aside() {
    // The leader died holding the key: every rewind fails until its lease
    // expires and another node leads; the count starts again for it.
    let mut fx = Fx::new(State::Replica, tl2_leader(), pg_old_primary()).lease();
    assert_eq!(fx.tick(0), vec![rewind_from("b")]);
    for _ in 1..REWIND_ATTEMPTS {
        fx.fail(ActionKind::Rewind);
    }
    assert_eq!(fx.state(), &State::Replica);
    fx.view(
        view()
            .revision(40)
            .leader("c", 9)
            .primary("c")
            .with("c", |m| m.timeline = Some(2)),
    );
    fx.quiet_at(60_000);
    let got = fx.probed(pg_old_primary());
    assert!(got.contains(&rewind_from("c")), "{got:?}");
    fx.fail(ActionKind::Rewind);
    assert_eq!(fx.state(), &State::Replica, "a new leader, a new count");
}
