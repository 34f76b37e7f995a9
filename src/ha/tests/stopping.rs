//! Stopping: the clean handover on SIGTERM.

use super::*;

const CKPT: u64 = 0x300_0028;

fn stopping(s: StoppingState) -> State {
    State::Stopping(s)
}

fn stop_fast() -> Action {
    Action::StopPostgres {
        mode: StopMode::Fast,
    }
}

fn stopped(lsn: Option<u64>) -> Reply {
    Reply::Stopped {
        checkpoint_lsn: lsn.map(Lsn),
    }
}

/// `a` leads, `b` streams from it.
fn leading() -> Fx {
    let v = view().leader("a", L).primary("a").replica("b");
    Fx::new(State::Primary(PrimaryState::default()), v, pg_primary())
        .lease()
        .leader()
}

/// The view once `b` has received up to `lsn`.
fn b_received(lsn: u64) -> ClusterView {
    view()
        .revision(11)
        .leader("a", L)
        .primary("a")
        .replica("b")
        .received("b", lsn)
        .into()
}

/// Shuts `a` down and answers the stop with the shutdown checkpoint.
fn stopped_primary() -> Fx {
    let mut fx = leading();
    let actions = fx.on(Event::Shutdown);
    assert_eq!(actions, vec![stop_fast(), publish(fx.me())]);
    assert_eq!(fx.me().state, MemberState::Stopping);
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.now = at(100);
    assert_eq!(
        fx.done(ActionKind::StopPostgres, stopped(Some(CKPT))),
        vec![publish(fx.me()), Action::Probe]
    );
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx
}

#[test]
fn primary_hands_over_once_a_standby_has_the_shutdown_checkpoint() {
    let mut fx = stopped_primary();
    let deadline = at(100) + HaConfig::default().handover_timeout;
    assert_eq!(
        fx.state(),
        &stopping(StoppingState::AwaitingReplica {
            checkpoint: Lsn(CKPT),
            deadline
        })
    );
    // Still holding the key: renewals go on while waiting.
    assert_eq!(fx.tick(1_000), vec![Action::Keepalive { lease: L }]);
    fx.done(ActionKind::Keepalive, lease_reply(5_000));
    // Up to the start of the checkpoint record is not enough.
    assert_eq!(fx.view(b_received(CKPT)), vec![]);
    // Past it: release (revoking the lease deletes leader and member keys).
    assert_eq!(
        fx.view(b_received(CKPT + 0x60)),
        vec![Action::RevokeLease { lease: L }]
    );
    assert_eq!(fx.state(), &stopping(StoppingState::Releasing));
    assert_eq!(
        fx.done(ActionKind::RevokeLease, Reply::Done),
        vec![Action::Exit { error: None }]
    );
    assert_eq!(fx.state(), &State::Exited);
    assert_eq!(fx.tick(2_000), vec![]);
}

#[test]
fn handover_gives_up_waiting_at_the_timeout() {
    let mut fx = stopped_primary();
    let timeout = u64::try_from(HaConfig::default().handover_timeout.as_millis()).unwrap_or(0);
    fx.ha.lease = Some(Lease {
        id: L,
        valid_until: Some(at(timeout + 5_000)),
    });
    fx.quiet_at(100 + timeout - 1);
    assert_eq!(fx.tick(100 + timeout - 1), vec![]);
    fx.quiet_at(100 + timeout);
    assert_eq!(
        fx.tick(100 + timeout),
        vec![Action::RevokeLease { lease: L }]
    );
}

#[test]
fn handover_ends_when_the_lease_is_lost_while_waiting() {
    let mut fx = stopped_primary();
    fx.tick(1_000);
    // The key is gone already: nothing to revoke, PostgreSQL is down.
    assert_eq!(
        fx.done(ActionKind::Keepalive, Reply::LeaseGone),
        vec![Action::Exit { error: None }]
    );
}

#[test]
fn no_standby_to_wait_for_releases_at_once() {
    // (case, extra members, stop answer)
    let cases: Vec<(&str, V, Reply)> = vec![
        (
            "no other member",
            view().leader("a", L).primary("a"),
            stopped(Some(CKPT)),
        ),
        (
            "unclean stop: no checkpoint to wait for",
            view().leader("a", L).primary("a").replica("b"),
            stopped(None),
        ),
    ];
    for (case, v, reply) in cases {
        let mut fx = Fx::new(State::Primary(PrimaryState::default()), v, pg_primary())
            .lease()
            .leader();
        fx.on(Event::Shutdown);
        let actions = fx.done(ActionKind::StopPostgres, reply);
        assert_eq!(fx.state(), &stopping(StoppingState::Releasing), "{case}");
        assert_eq!(actions, vec![Action::RevokeLease { lease: L }], "{case}");
    }
}

#[test]
fn a_failed_stop_is_escalated_to_a_fence() {
    let mut fx = leading();
    fx.on(Event::Shutdown);
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(fx.fail(ActionKind::StopPostgres), vec![Action::Fence]);
    let actions = fx.done(ActionKind::Fence, Reply::Done);
    assert_eq!(fx.state(), &stopping(StoppingState::Releasing));
    assert_eq!(actions, vec![Action::RevokeLease { lease: L }]);
}

#[test]
fn replica_stops_and_leaves() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    assert_eq!(fx.on(Event::Shutdown), vec![stop_fast(), publish(fx.me())]);
    assert_eq!(fx.state(), &stopping(StoppingState::StoppingPostgres));
    fx.done(ActionKind::PublishMember, Reply::Done);
    // Not the leader: no handover, straight to releasing its member key.
    let actions = fx.done(ActionKind::StopPostgres, stopped(Some(CKPT)));
    assert_eq!(actions, vec![Action::RevokeLease { lease: L }]);
    assert_eq!(
        fx.done(ActionKind::RevokeLease, Reply::LeaseGone),
        vec![Action::Exit { error: None }]
    );
}

#[test]
fn shutdown_waits_for_the_running_postgres_action() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(
        State::Bootstrapping(BootstrapStep::AwaitingLeader),
        v,
        pg_empty(),
    )
    .lease();
    fx.tick(0);
    fx.done(ActionKind::PublishMember, Reply::Done);
    // pg_basebackup runs: the stop waits for it (the driver cancels it).
    assert_eq!(fx.on(Event::Shutdown), vec![publish(fx.me())]);
    assert_eq!(fx.state(), &stopping(StoppingState::StoppingPostgres));
    fx.done(ActionKind::PublishMember, Reply::Done);
    let actions = fx.fail(ActionKind::Basebackup);
    assert_eq!(actions, vec![Action::RevokeLease { lease: L }]);
}

#[test]
fn a_primary_whose_server_is_already_down_releases_at_once() {
    let v = view().leader("a", L).primary("a").replica("b");
    let pg = PgState {
        checkpoint_lsn: Some(Lsn(CKPT)),
        ..pg_stopped()
    };
    let mut fx = Fx::new(State::Primary(PrimaryState::default()), v, pg)
        .lease()
        .leader();
    assert_eq!(
        fx.on(Event::Shutdown),
        vec![Action::RevokeLease { lease: L }]
    );
}

#[test]
fn shutdown_before_anything_was_seen_exits() {
    let mut fx = Fx {
        ha: Ha::new(node("a")),
        now: at(0),
    };
    assert_eq!(fx.on(Event::Shutdown), vec![Action::Exit { error: None }]);
}

#[test]
fn a_failed_revoke_is_retried_until_the_lease_runs_out() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(stopping(StoppingState::Releasing), v, pg_stopped()).lease();
    assert_eq!(fx.tick(0), vec![Action::RevokeLease { lease: L }]);
    assert_eq!(fx.fail(ActionKind::RevokeLease), vec![]);
    assert_eq!(fx.tick(1_000), vec![Action::RevokeLease { lease: L }]);
    fx.fail(ActionKind::RevokeLease);
    assert_eq!(fx.tick(VALID_MS), vec![Action::Exit { error: None }]);
}
