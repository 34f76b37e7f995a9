//! Operations an operator asks of this node: restart, reload,
//! reinitialize. Each case walks the whole sequence, answer by answer.

use super::*;

fn primary_state() -> State {
    State::Primary(PrimaryState::default())
}

fn op(id: &str, kind: OperationKind) -> Operation {
    Operation {
        id: id.into(),
        kind,
        running: false,
    }
}

fn restart() -> OperationKind {
    OperationKind::Restart {
        pending_only: false,
        role: None,
    }
}

fn with_op(v: V, o: Operation) -> ClusterView {
    let mut v: ClusterView = v.into();
    v.operation = Some(o);
    v
}

fn report(id: &str, outcome: OpOutcome, message: &str) -> Action {
    Action::ReportOperation {
        id: id.into(),
        outcome,
        message: message.into(),
    }
}

/// Drops (and answers) member key writes: they follow every change of
/// the server and are not what these tables are about.
fn quiet(fx: &mut Fx, mut actions: Vec<Action>) -> Vec<Action> {
    while let Some(i) = actions
        .iter()
        .position(|a| matches!(a, Action::PublishMember { .. }))
    {
        actions.remove(i);
        actions.extend(fx.done(ActionKind::PublishMember, Reply::Done));
    }
    actions
}

/// Shows the core `v` with a new operation: it first asks for a probe
/// (a decision rests on PostgreSQL as it is now, not up to `loop_wait`
/// ago), which answers with the server unchanged.
fn arrive(fx: &mut Fx, v: ClusterView) -> Vec<Action> {
    let out = fx.view(v);
    let out = quiet(fx, out);
    assert_eq!(out, vec![Action::Probe], "a fresh probe first");
    let pg = fx.ha.pg.clone().expect("a probe");
    probed(fx, pg)
}

fn stopped(fx: &mut Fx) -> Vec<Action> {
    let out = fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: Some(Lsn(0x300_0000)),
        },
    );
    quiet(fx, out)
}

fn probed(fx: &mut Fx, pg: PgState) -> Vec<Action> {
    let out = fx.probed(pg);
    quiet(fx, out)
}

fn done(fx: &mut Fx, kind: ActionKind) -> Vec<Action> {
    let out = fx.done(kind, Reply::Done);
    quiet(fx, out)
}

fn replica_with_leader_b() -> V {
    view().leader("b", 3).primary("b")
}

#[test]
fn a_replica_restarts_as_a_standby_of_the_leader() {
    let v = replica_with_leader_b();
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    let running = report("r1", OpOutcome::Running, "restarting PostgreSQL");
    let out = arrive(
        &mut fx,
        with_op(replica_with_leader_b(), op("r1", restart())),
    );
    assert_eq!(out, vec![running], "recorded before anything is touched");
    let stop = Action::StopPostgres {
        mode: StopMode::Fast,
    };
    assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![stop]);
    assert_eq!(stopped(&mut fx), vec![Action::Probe]);
    assert_eq!(probed(&mut fx, pg_stopped()), vec![standby_of(Some("b"))]);
    assert_eq!(
        done(&mut fx, ActionKind::StartPostgres),
        vec![Action::Probe]
    );
    let ended = report("r1", OpOutcome::Done, "PostgreSQL restarted");
    assert_eq!(probed(&mut fx, pg_standby(Some("b"))), vec![ended]);
    assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![]);
    // The view still shows it unfinished for a moment: not started again.
    let again = fx.view(with_op(replica_with_leader_b(), op("r1", restart())));
    assert_eq!(again, vec![]);
    assert_eq!(fx.state(), &State::Replica);
}

/// `a` leads with lease L and `b` follows.
fn leading() -> V {
    view()
        .init("a", Some(SYSID))
        .leader("a", L)
        .primary("a")
        .replica("b")
}

fn leader_fx(config: impl FnOnce(&mut HaConfig)) -> Fx {
    let mut v: ClusterView = leading().into();
    config(&mut v.config);
    let pg = PgState {
        slots: vec![slot("b", true)],
        ..pg_primary()
    };
    Fx::new(primary_state(), v, pg).lease().leader()
}

#[test]
fn a_primary_restarts_under_its_lease_and_keeps_the_key() {
    // primary_start_timeout 0: a crashed server would be given up at once;
    // a requested restart must not be.
    let mut fx = leader_fx(|c| c.primary_start_timeout = std::time::Duration::ZERO);
    let mut v: ClusterView = leading().into();
    v.config.primary_start_timeout = std::time::Duration::ZERO;
    v.operation = Some(op("p1", restart()));
    let out = arrive(&mut fx, v);
    assert_eq!(
        out,
        vec![report("p1", OpOutcome::Running, "restarting PostgreSQL")]
    );
    let stop = Action::StopPostgres {
        mode: StopMode::Fast,
    };
    assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![stop]);
    assert_eq!(stopped(&mut fx), vec![Action::Probe]);
    let start = Action::StartPostgres(StartAs::Primary);
    assert_eq!(probed(&mut fx, pg_stopped()), vec![start]);
    assert!(
        fx.ha.holds_leader_key(),
        "the key is kept through the restart"
    );
    assert_eq!(
        done(&mut fx, ActionKind::StartPostgres),
        vec![Action::Probe]
    );
    let back = PgState {
        slots: vec![slot("b", true)],
        ..pg_primary()
    };
    let ended = report("p1", OpOutcome::Done, "PostgreSQL restarted");
    assert_eq!(probed(&mut fx, back), vec![ended]);
    assert_eq!(fx.state(), &primary_state());
    assert!(fx.ha.holds_leader(fx.now));
}

#[test]
fn a_primary_that_loses_its_lease_mid_restart_is_not_started_as_primary() {
    let mut fx = leader_fx(|_| {});
    let mut v: ClusterView = leading().into();
    v.operation = Some(op("p2", restart()));
    arrive(&mut fx, v);
    done(&mut fx, ActionKind::ReportOperation);
    stopped(&mut fx);
    // The lease runs out before the probe answers.
    fx.now = at(VALID_MS);
    let out = probed(&mut fx, pg_stopped());
    let failed = report(
        "p2",
        OpOutcome::Failed,
        "lost the leader lease during the restart; another member takes over",
    );
    assert!(out.contains(&failed), "{out:?}");
    assert!(
        !out.contains(&Action::StartPostgres(StartAs::Primary)),
        "{out:?}"
    );
    assert!(!fx.ha.holds_leader_key());
}

#[test]
fn a_failed_restart_start_is_reported_and_the_primary_rules_take_over() {
    let mut fx = leader_fx(|_| {});
    let mut v: ClusterView = leading().into();
    v.operation = Some(op("p3", restart()));
    arrive(&mut fx, v);
    done(&mut fx, ActionKind::ReportOperation);
    stopped(&mut fx);
    probed(&mut fx, pg_stopped());
    let out = fx.fail(ActionKind::StartPostgres);
    let failed = report(
        "p3",
        OpOutcome::Failed,
        "PostgreSQL did not start again (pgkeel keeps trying): boom",
    );
    assert_eq!(quiet(&mut fx, out), vec![failed, Action::Probe]);
    assert!(fx.ha.holds_leader_key());
}

#[test]
fn filters_and_refusals_end_an_operation_before_anything_is_touched() {
    let pending = |pending_only, role| OperationKind::Restart { pending_only, role };
    let lead = || leading();
    let follow = replica_with_leader_b;
    // (case, state of a, view, probe, operation, outcome, message)
    let cases: Vec<(&str, State, V, PgState, OperationKind, OpOutcome, &str)> = vec![
        (
            "restart --pending with nothing pending",
            State::Replica,
            follow(),
            pg_standby(Some("b")),
            pending(true, None),
            OpOutcome::Done,
            "nothing to do: no restart pending",
        ),
        (
            "restart --role primary on a replica",
            State::Replica,
            follow(),
            pg_standby(Some("b")),
            pending(false, Some(MemberRole::Primary)),
            OpOutcome::Done,
            "nothing to do: the restart was asked for the primary, and this member is a replica",
        ),
        (
            "restart --role replica on the primary",
            primary_state(),
            lead(),
            pg_primary(),
            pending(false, Some(MemberRole::Replica)),
            OpOutcome::Done,
            "nothing to do: the restart was asked for a replica, and this member is the primary",
        ),
        (
            "restart of a stopped server",
            State::Replica,
            follow(),
            pg_stopped(),
            restart(),
            OpOutcome::Refused,
            "PostgreSQL is not running on this member; pgkeel starts it as soon as the cluster allows",
        ),
        (
            "restart while rejoining",
            State::Rejoining(RejoinStep::Rewinding),
            follow(),
            pg_stopped(),
            restart(),
            OpOutcome::Refused,
            "this member is rejoining, not running as a primary or replica; restart it once it is",
        ),
        (
            "reinitialize the primary",
            primary_state(),
            lead(),
            pg_primary(),
            OperationKind::Reinitialize,
            OpOutcome::Refused,
            "cannot reinitialize the primary; switch over first",
        ),
        (
            "reinitialize with no leader to clone from",
            State::Replica,
            view().replica("b"),
            pg_standby(None),
            OperationKind::Reinitialize,
            OpOutcome::Refused,
            "no running leader to clone from; reinitialize once the cluster has a running primary",
        ),
        (
            "reload of a stopped server",
            State::Replica,
            follow(),
            pg_stopped(),
            OperationKind::Reload,
            OpOutcome::Done,
            "PostgreSQL is not running; its settings are rewritten before its next start",
        ),
    ];
    for (case, state, v, pg, kind, outcome, message) in cases {
        let primary = matches!(state, State::Primary(_));
        let v: ClusterView = v.into();
        let mut fx = Fx::new(state.clone(), v.clone(), pg.clone()).lease();
        if primary {
            fx = fx.leader();
        }
        let mut with = v;
        with.operation = Some(op("x", kind));
        fx.view(with);
        let out = probed(&mut fx, pg);
        // Only the report: a stopped replica's own start is the state rules'.
        let reports: Vec<&Action> = out
            .iter()
            .filter(|a| matches!(a, Action::ReportOperation { .. }))
            .collect();
        assert_eq!(reports, vec![&report("x", outcome, message)], "{case}");
        assert!(
            !out.iter().any(|a| matches!(
                a,
                Action::StopPostgres { .. } | Action::MoveDataDirAside | Action::Reload
            )),
            "{case}: {out:?}"
        );
        assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![], "{case}");
    }
}

#[test]
fn restart_pending_restarts_a_member_that_needs_it() {
    let pg = PgState {
        pending_restart: true,
        ..pg_standby(Some("b"))
    };
    let mut fx = Fx::new(State::Replica, replica_with_leader_b(), pg).lease();
    let kind = OperationKind::Restart {
        pending_only: true,
        role: Some(MemberRole::Replica),
    };
    arrive(&mut fx, with_op(replica_with_leader_b(), op("p", kind)));
    let stop = Action::StopPostgres {
        mode: StopMode::Fast,
    };
    assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![stop]);
}

#[test]
fn a_standby_is_not_restarted_below_what_its_primary_runs() {
    // max_connections is being lowered: 100 pending here while the
    // primary b still runs 200. The primary must restart first.
    let settings = |n: i64| [("max_connections".to_string(), n)].into();
    let v = || replica_with_leader_b().with("b", |m| m.must_match = settings(200));
    let pg = PgState {
        pending_restart: true,
        must_match: settings(200),
        must_match_pending: settings(100),
        ..pg_standby(Some("b"))
    };
    let mut fx = Fx::new(State::Replica, v(), pg).lease();
    let out = arrive(&mut fx, with_op(v(), op("p", restart())));
    assert!(
        matches!(out.as_slice(), [Action::ReportOperation { .. }]),
        "{out:?}"
    );
    let Some(Action::ReportOperation { message, .. }) = out.first() else {
        unreachable!()
    };
    assert!(message.contains("max_connections"), "{message}");
    // Nothing was stopped.
    assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![]);
}

#[test]
fn a_replica_is_reinitialized_from_the_leader() {
    let v = || replica_with_leader_b();
    let mut fx = Fx::new(State::Replica, v(), pg_standby(Some("b"))).lease();
    let out = arrive(&mut fx, with_op(v(), op("i1", OperationKind::Reinitialize)));
    let running = report(
        "i1",
        OpOutcome::Running,
        "moving the data directory aside to clone it again",
    );
    assert_eq!(out, vec![running]);
    let stop = Action::StopPostgres {
        mode: StopMode::Immediate,
    };
    assert_eq!(done(&mut fx, ActionKind::ReportOperation), vec![stop]);
    let out = fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: None,
        },
    );
    assert_eq!(quiet(&mut fx, out), vec![Action::Probe]);
    assert_eq!(
        probed(&mut fx, pg_stopped()),
        vec![Action::MoveDataDirAside],
        "moved aside, never restarted from the old copy"
    );
    assert_eq!(
        done(&mut fx, ActionKind::MoveDataDirAside),
        vec![Action::Probe]
    );
    let clone = Action::Basebackup {
        from: upstream("b"),
        slot: "a".into(),
    };
    assert_eq!(probed(&mut fx, pg_empty()), vec![clone]);
    assert_eq!(done(&mut fx, ActionKind::Basebackup), vec![Action::Probe]);
    assert_eq!(probed(&mut fx, pg_stopped()), vec![standby_of(Some("b"))]);
    assert_eq!(
        done(&mut fx, ActionKind::StartPostgres),
        vec![Action::Probe]
    );
    let ended = report(
        "i1",
        OpOutcome::Done,
        "cloned again; PostgreSQL runs as a standby",
    );
    assert_eq!(probed(&mut fx, pg_standby(Some("b"))), vec![ended]);
    assert_eq!(fx.state(), &State::Replica);
}

#[test]
fn a_failed_clone_is_reported_while_the_replica_keeps_trying() {
    let v = || replica_with_leader_b();
    let mut fx = Fx::new(State::Replica, v(), pg_standby(Some("b"))).lease();
    arrive(&mut fx, with_op(v(), op("i2", OperationKind::Reinitialize)));
    done(&mut fx, ActionKind::ReportOperation);
    fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: None,
        },
    );
    probed(&mut fx, pg_stopped());
    done(&mut fx, ActionKind::MoveDataDirAside);
    probed(&mut fx, pg_empty());
    let out = fx.fail(ActionKind::Basebackup);
    let failed = report(
        "i2",
        OpOutcome::Failed,
        "pg_basebackup failed (pgkeel keeps trying): boom",
    );
    assert_eq!(quiet(&mut fx, out), vec![failed, Action::Probe]);
    assert_eq!(
        fx.state(),
        &State::Bootstrapping(BootstrapStep::AwaitingLeader)
    );
}

#[test]
fn reload_rewrites_and_reloads() {
    let mut fx = Fx::new(
        State::Replica,
        replica_with_leader_b(),
        pg_standby(Some("b")),
    )
    .lease();
    let out = arrive(
        &mut fx,
        with_op(replica_with_leader_b(), op("l1", OperationKind::Reload)),
    );
    assert_eq!(
        out,
        vec![report(
            "l1",
            OpOutcome::Running,
            "reloading PostgreSQL's settings"
        )]
    );
    assert_eq!(
        done(&mut fx, ActionKind::ReportOperation),
        vec![Action::Reload]
    );
    let ended = report("l1", OpOutcome::Done, "PostgreSQL reloaded its settings");
    let out = done(&mut fx, ActionKind::Reload);
    assert!(out.contains(&ended), "{out:?}");
}

#[test]
fn an_operation_found_running_after_an_agent_restart_is_reported_interrupted() {
    let mut fx = Fx::new(
        State::Replica,
        replica_with_leader_b(),
        pg_standby(Some("b")),
    )
    .lease();
    let mut o = op("r9", OperationKind::Reinitialize);
    o.running = true;
    let out = fx.view(with_op(replica_with_leader_b(), o));
    let failed = report(
        "r9",
        OpOutcome::Failed,
        "pgkeel on this member restarted while the operation ran; check the member and ask \
         again if it is still needed",
    );
    assert_eq!(out, vec![failed], "never repeated blindly");
}

#[test]
fn a_cancelled_or_replaced_operation_is_dropped() {
    let v = replica_with_leader_b;
    let mut fx = Fx::new(State::Replica, v(), pg_standby(Some("b"))).lease();
    let o = op("s1", restart());
    arrive(&mut fx, with_op(v(), o));
    // Cancelled before the running mark landed: the report answer says
    // the record is someone else's now.
    assert_eq!(fx.view(v()), vec![]);
    assert_eq!(fx.done(ActionKind::ReportOperation, Reply::Lost), vec![]);
    // A new request (another id) starts on its own.
    let out = arrive(&mut fx, with_op(v(), op("s2", OperationKind::Reload)));
    assert_eq!(
        out,
        vec![report(
            "s2",
            OpOutcome::Running,
            "reloading PostgreSQL's settings"
        )]
    );
}

#[test]
fn a_candidate_waits_before_restarting() {
    let mut fx = Fx::new(
        State::Candidate(CandidateStep::Polling),
        view().replica("b"),
        pg_standby(None),
    )
    .lease();
    let mut v: ClusterView = view().replica("b").into();
    v.operation = Some(op("c1", restart()));
    let out = fx.view(v);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::ReportOperation { .. })),
        "{out:?}"
    );
}

#[test]
fn a_probe_sent_before_the_request_does_not_decide_it() {
    let mut fx = Fx::new(
        State::Replica,
        replica_with_leader_b(),
        pg_standby(Some("b")),
    )
    .lease();
    fx.quiet_at(1_000);
    fx.ha.last_probe = Some(at(0));
    let out = fx.tick(1_000);
    assert!(out.contains(&Action::Probe), "{out:?}");
    let kind = OperationKind::Restart {
        pending_only: true,
        role: None,
    };
    let out = fx.view(with_op(replica_with_leader_b(), op("q", kind)));
    assert_eq!(
        quiet(&mut fx, out),
        vec![],
        "the probe in flight is awaited"
    );
    // Its answer predates the request (and the setting changed since):
    // discarded, and a new probe is asked for.
    assert_eq!(probed(&mut fx, pg_standby(Some("b"))), vec![Action::Probe]);
    let pending = PgState {
        pending_restart: true,
        ..pg_standby(Some("b"))
    };
    assert_eq!(
        probed(&mut fx, pending),
        vec![report("q", OpOutcome::Running, "restarting PostgreSQL")]
    );
}
