//! Switchover, manual failover and pause: an operator's request in the
//! `failover` key is carried out by the holder of the leader key, or by
//! the race once the key is vacant; pause holds the HA loop's hands.

use super::*;

const CKPT: u64 = 0x300_0028;

fn request(kind: FailoverKind, leader: Option<&str>, candidate: Option<&str>) -> FailoverRequest {
    FailoverRequest {
        id: "op1".into(),
        kind,
        leader: leader.map(Into::into),
        candidate: candidate.map(Into::into),
        due: true,
    }
}

fn switchover_to(candidate: Option<&str>) -> FailoverRequest {
    request(FailoverKind::Switchover, Some("a"), candidate)
}

fn with_request(v: V, r: FailoverRequest) -> ClusterView {
    let mut v: ClusterView = v.into();
    v.failover = Some(r);
    v
}

fn paused(v: V) -> ClusterView {
    let mut v: ClusterView = v.into();
    v.config.pause = true;
    v
}

fn demoting(to: &str, step: DemotingStep) -> State {
    State::Demoting {
        to: to.into(),
        step,
    }
}

fn stop_fast() -> Action {
    Action::StopPostgres {
        mode: StopMode::Fast,
    }
}

fn failed(message: &str) -> Action {
    Action::FinishFailover {
        id: "op1".into(),
        ok: false,
        message: message.into(),
    }
}

/// `a` leads; `b` and `c` stream from it, `b` at a's position, `c` 1 MB
/// behind.
fn leading() -> V {
    view()
        .leader("a", L)
        .primary("a")
        .replica("b")
        .received("b", 0x300_0000)
        .replica("c")
        .received("c", 0x300_0000 - 0x10_0000)
}

/// a's primary, with the slots of b and c in place.
fn pg_leading() -> PgState {
    PgState {
        slots: vec![slot("b", true), slot("c", true)],
        ..pg_primary()
    }
}

fn primary_fx(v: V) -> Fx {
    Fx::new(State::Primary(PrimaryState::default()), v, pg_leading())
        .lease()
        .leader()
}

/// `a` leads and has just seen `r`; only the request's rule speaks.
fn asked(r: FailoverRequest) -> (Fx, Vec<Action>) {
    let mut fx = primary_fx(leading());
    fx.quiet_at(100);
    let actions = fx.view(with_request(leading().revision(11), r));
    (fx, actions)
}

#[test]
fn a_switchover_checkpoints_stops_waits_for_the_candidate_then_releases() {
    let (mut fx, actions) = asked(switchover_to(Some("b")));
    assert_eq!(fx.state(), &demoting("b", DemotingStep::Checkpointing));
    // Still writable: the member key says stopping from here on.
    assert_eq!(actions, vec![Action::Checkpoint, publish(fx.me())]);
    assert_eq!(fx.me().state, MemberState::Stopping);
    assert_eq!(fx.me().role, MemberRole::Primary);
    fx.done(ActionKind::PublishMember, Reply::Done);

    assert_eq!(
        fx.done(ActionKind::Checkpoint, Reply::Done),
        vec![stop_fast()]
    );
    assert_eq!(fx.state(), &demoting("b", DemotingStep::Stopping));
    fx.now = at(300);
    let actions = fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: Some(Lsn(CKPT)),
        },
    );
    let deadline = at(300) + HaConfig::default().handover_timeout;
    assert_eq!(
        fx.state(),
        &demoting(
            "b",
            DemotingStep::AwaitingCandidate {
                checkpoint: Lsn(CKPT),
                deadline
            }
        )
    );
    assert!(actions.contains(&Action::Probe), "{actions:?}");
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.probed(pg_stopped_primary());

    // c (not the candidate) past the checkpoint is not enough.
    let v = |b: u64, c: u64| {
        with_request(
            leading().revision(12).received("b", b).received("c", c),
            switchover_to(Some("b")),
        )
    };
    assert_eq!(fx.view(v(CKPT, CKPT + 0x60)), vec![]);
    assert_eq!(
        fx.view(v(CKPT + 0x60, CKPT)),
        vec![Action::ReleaseLeader {
            lease: L,
            revision: 5
        }]
    );
    assert_eq!(fx.state(), &demoting("b", DemotingStep::Releasing));
    // Released: a replica, keeping its lease and member key.
    fx.done(ActionKind::ReleaseLeader, Reply::Done);
    assert_eq!(fx.state(), &State::Replica);
    assert!(fx.ha.lease().is_some());
    assert!(!fx.ha.holds_leader_key());

    // The key is vacant and the request still pending: the old primary
    // neither starts its server nor races; it waits for b.
    let vacant = with_request(
        view().revision(13).replica("b").received("b", CKPT + 0x60),
        switchover_to(Some("b")),
    );
    let actions = fx.view(vacant);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::StartPostgres(_) | Action::AcquireLeader { .. } | Action::QueryPositions { .. }
        )),
        "{actions:?}"
    );
}

/// a's server after a clean shutdown as primary.
fn pg_stopped_primary() -> PgState {
    PgState {
        was_primary: true,
        checkpoint_lsn: Some(Lsn(CKPT)),
        ..pg_stopped()
    }
}

#[test]
fn a_switchover_is_refused_when_the_candidate_cannot_take_over() {
    let lagging = 0x300_0000 - 0x10_0000;
    let max = HaConfig::default().maximum_lag_on_failover;
    let rows: Vec<(&str, V, Option<&str>, String)> = vec![
        (
            "unknown member",
            leading(),
            Some("x"),
            "x is not a member of the cluster".into(),
        ),
        (
            "stopped",
            leading().with("b", |m| m.state = MemberState::Stopped),
            Some("b"),
            "b is not a running standby (it is stopped)".into(),
        ),
        (
            "nofailover",
            leading().with("b", |m| m.tags.nofailover = true),
            Some("b"),
            "b is tagged nofailover (or failover_priority 0)".into(),
        ),
        (
            "lagging",
            leading().received("b", lagging - max),
            Some("b"),
            format!(
                "b lags {} bytes behind the primary, more than maximum_lag_on_failover ({max})",
                0x300_0000 - (lagging - max)
            ),
        ),
        (
            "no healthy standby at all",
            leading()
                .with("b", |m| m.state = MemberState::Stopped)
                .with("c", |m| m.tags.failover_priority = 0),
            None,
            "no standby may take over: b is not a running standby (it is stopped); c is tagged nofailover (or failover_priority 0)".into(),
        ),
    ];
    for (what, v, candidate, why) in rows {
        let mut fx = primary_fx(v.clone());
        fx.quiet_at(100);
        let actions = fx.view(with_request(v.revision(11), switchover_to(candidate)));
        assert_eq!(actions, vec![failed(&why)], "{what}");
        assert_eq!(
            fx.state(),
            &State::Primary(PrimaryState::default()),
            "{what}"
        );
        // Written once: the outcome is not asked for again.
        fx.done(ActionKind::FinishFailover, Reply::Done);
        assert_eq!(fx.tick(200), vec![], "{what}");
    }
}

#[test]
fn a_switchover_without_a_candidate_picks_the_best_standby() {
    let (fx, _) = asked(switchover_to(None));
    assert_eq!(fx.state(), &demoting("b", DemotingStep::Checkpointing));
    // With b gone, c (1 MB behind, within the default lag) is next.
    let mut fx = primary_fx(leading());
    fx.quiet_at(100);
    let v = leading()
        .revision(11)
        .with("b", |m| m.state = MemberState::Stopped);
    fx.view(with_request(v, switchover_to(None)));
    assert_eq!(fx.state(), &demoting("c", DemotingStep::Checkpointing));
}

#[test]
fn a_failover_while_a_leader_holds_the_key_is_a_handover_by_the_holder() {
    let (fx, _) = asked(request(FailoverKind::Failover, None, Some("c")));
    assert_eq!(fx.state(), &demoting("c", DemotingStep::Checkpointing));
}

#[test]
fn a_request_for_another_leader_or_not_yet_due_changes_nothing() {
    let mut other = switchover_to(Some("b"));
    other.leader = Some("c".into());
    let (fx, actions) = asked(other);
    // c does not hold the key: the request is stale; a reports it.
    assert_eq!(
        actions,
        vec![failed(
            "a became the primary before the switchover from c happened"
        )]
    );
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    let mut later = switchover_to(Some("b"));
    later.due = false;
    let (fx, actions) = asked(later);
    assert_eq!(actions, vec![]);
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
}

/// `a` demoting to b, stopped cleanly at T+300ms, waiting.
fn awaiting() -> Fx {
    let (mut fx, _) = asked(switchover_to(Some("b")));
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.done(ActionKind::Checkpoint, Reply::Done);
    fx.now = at(300);
    fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: Some(Lsn(CKPT)),
        },
    );
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.probed(pg_stopped_primary());
    fx
}

#[test]
fn a_candidate_that_never_receives_the_checkpoint_ends_the_handover() {
    let mut fx = awaiting();
    let timeout = u64::try_from(HaConfig::default().handover_timeout.as_millis()).unwrap_or(0);
    fx.ha.lease = Some(Lease {
        id: L,
        valid_until: Some(at(timeout + 5_000)),
    });
    fx.quiet_at(300 + timeout);
    let actions = fx.tick(300 + timeout);
    // Back to leading: restart in place (the lease is valid), and say why.
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    assert!(
        actions.contains(&Action::StartPostgres(StartAs::Primary)),
        "{actions:?}"
    );
    assert!(
        actions.contains(&failed(
            "b did not receive the shutdown checkpoint within handover_timeout; a runs as primary again"
        )),
        "{actions:?}"
    );
}

#[test]
fn an_unclean_or_failed_stop_ends_the_handover() {
    let (mut fx, _) = asked(switchover_to(Some("b")));
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.done(ActionKind::Checkpoint, Reply::Done);
    let actions = fx.done(
        ActionKind::StopPostgres,
        Reply::Stopped {
            checkpoint_lsn: None,
        },
    );
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    assert!(
        actions.contains(&failed(
            "a did not shut down cleanly; it runs as primary again"
        )),
        "{actions:?}"
    );

    let (mut fx, _) = asked(switchover_to(Some("b")));
    fx.done(ActionKind::PublishMember, Reply::Done);
    // A failed CHECKPOINT only costs a longer shutdown.
    assert_eq!(fx.fail(ActionKind::Checkpoint), vec![stop_fast()]);
    let actions = fx.fail(ActionKind::StopPostgres);
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    assert!(
        actions.contains(&failed("a could not stop PostgreSQL; it stays the primary")),
        "{actions:?}"
    );
}

#[test]
fn a_lost_lease_while_demoting_leaves_for_replica_and_fences() {
    let (mut fx, _) = asked(switchover_to(Some("b")));
    fx.done(ActionKind::PublishMember, Reply::Done);
    let actions = fx.tick(VALID_MS + 200);
    assert_eq!(fx.state(), &State::Replica);
    assert!(actions.contains(&Action::Fence), "{actions:?}");
}

/// `a` streams from b, the leader; c is another standby.
fn following_b() -> Fx {
    let v = view()
        .leader("b", 3)
        .primary("b")
        .replica("c")
        .received("c", 0x200_0000);
    Fx::new(State::Replica, v, pg_standby(Some("b"))).lease()
}

/// At `revision`: b's key is gone and its server stopped (it handed
/// over), c streams, request `r` is pending.
fn b_gone(revision: u64, r: FailoverRequest) -> ClusterView {
    let v = view()
        .revision(revision)
        .member("b", member("b", MemberRole::Replica, MemberState::Stopped))
        .replica("c")
        .received("c", 0x200_0000);
    with_request(v, r)
}

/// `a` streams from b; the view shows b's key gone with request `r`.
fn replica_sees_vacancy(r: FailoverRequest) -> (Fx, Vec<Action>) {
    let mut fx = following_b();
    let vacant = b_gone(11, r);
    let mut polled = answers(&vacant);
    polled.insert(
        "b".into(),
        PolledPosition {
            running: false,
            ..Default::default()
        },
    );
    let actions = through_vacancy(&mut fx, V(vacant), Some(polled));
    (fx, actions)
}

#[test]
fn the_named_candidate_races_without_asking_the_others() {
    let r = request(FailoverKind::Switchover, Some("b"), Some("a"));
    let (fx, actions) = replica_sees_vacancy(r);
    assert_eq!(actions, vec![Action::AcquireLeader { lease: L }]);
    assert_eq!(fx.state(), &State::Candidate(CandidateStep::Acquiring));
}

#[test]
fn others_leave_the_race_to_a_named_candidate_that_answers() {
    // c is named and answers as a running standby: a does not race,
    // though it is as far ahead.
    let r = request(FailoverKind::Switchover, Some("b"), Some("c"));
    let (fx, actions) = replica_sees_vacancy(r);
    assert!(
        !actions.contains(&Action::AcquireLeader { lease: L }),
        "{actions:?}"
    );
    assert_eq!(fx.state(), &State::Replica);

    // Without a named candidate the old leader, stopped on purpose, holds
    // nobody back: a (ahead of c) races at once.
    let r = request(FailoverKind::Switchover, Some("b"), None);
    let (_, actions) = replica_sees_vacancy(r);
    assert_eq!(actions, vec![Action::AcquireLeader { lease: L }]);
}

#[test]
fn a_named_candidate_that_does_not_answer_binds_nobody() {
    let mut fx = following_b();
    let mut vacant: ClusterView = view()
        .revision(11)
        .replica("c")
        .received("c", 0x200_0000)
        .into();
    vacant.failover = Some(request(FailoverKind::Failover, None, Some("c")));
    // c's agent did not answer at all.
    let actions = through_vacancy(&mut fx, V(vacant), Some(BTreeMap::new()));
    assert_eq!(actions, vec![Action::AcquireLeader { lease: L }]);
}

#[test]
fn the_member_that_won_for_the_request_reports_it_done() {
    let r = request(FailoverKind::Switchover, Some("b"), Some("a"));
    let (mut fx, _) = replica_sees_vacancy(r.clone());
    fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.done(ActionKind::Promote, Reply::Done);
    fx.probed(pg_primary());
    let mut v: ClusterView = view()
        .revision(12)
        .leader("a", L)
        .primary("a")
        .replica("c")
        .into();
    v.failover = Some(r);
    fx.view(v);
    assert_eq!(
        fx.done(ActionKind::Checkpoint, Reply::Done),
        vec![Action::Probe]
    );
    let actions = fx.probed(pg_leading());
    let done = Action::FinishFailover {
        id: "op1".into(),
        ok: true,
        message: "a is the new primary".into(),
    };
    assert!(actions.contains(&done), "{actions:?}");
    fx.done(ActionKind::FinishFailover, Reply::Done);
    assert!(!fx.tick(200).contains(&done));
}

#[test]
fn a_request_binds_the_race_for_one_ttl_only() {
    // c is named, answers, and never takes the key: after one ttl of
    // vacancy a fails over as if there were no request.
    let r = request(FailoverKind::Switchover, Some("b"), Some("c"));
    let (mut fx, _) = replica_sees_vacancy(r.clone());
    assert_eq!(fx.state(), &State::Replica);
    let ttl = u64::try_from(HaConfig::default().ttl.as_millis()).unwrap_or(0);
    fx.quiet_at(ttl + 1);
    let actions = through_vacancy(&mut fx, V(b_gone(14, r)), None);
    assert_eq!(actions, vec![Action::AcquireLeader { lease: L }]);
}

#[test]
fn paused_replicas_do_not_race_start_or_rejoin() {
    // A vacant key: no race, no StopReceiving.
    let mut fx = following_b();
    let actions = fx.view(paused(
        view().revision(11).replica("c").received("c", 0x200_0000),
    ));
    assert_eq!(actions, vec![publish(fx.me())]);
    assert!(fx.me().paused);
    assert_eq!(fx.state(), &State::Replica);

    // A stopped standby is not started.
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, paused(v.clone()), pg_stopped()).lease();
    fx.quiet_at(100);
    assert_eq!(fx.view(paused(v.revision(11))), vec![]);

    // A request is held back while paused.
    let mut fx = primary_fx(leading());
    fx.quiet_at(100);
    let mut v = paused(leading().revision(11));
    v.failover = Some(switchover_to(Some("b")));
    let actions = fx.view(v);
    assert_eq!(actions, vec![publish(fx.me())]);
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
}

#[test]
fn a_paused_primary_keeps_its_key_without_restarting_and_still_fences() {
    let v = paused(leading());
    let mut fx = Fx::new(
        State::Primary(PrimaryState::default()),
        v.clone(),
        pg_stopped(),
    )
    .lease()
    .leader();
    fx.quiet_at(100);
    assert_eq!(fx.view(V(v.clone())), vec![]);
    assert_eq!(
        fx.tick(1_100),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    fx.done(ActionKind::Keepalive, lease_reply(5_000));
    assert_eq!(fx.probed(pg_stopped()), vec![]);
    assert!(fx.ha.holds_leader(fx.now));

    // Running writable and the lease runs out: fenced, paused or not.
    let mut fx = primary_fx(leading());
    fx.view(v);
    let actions = fx.tick(VALID_MS + 1);
    assert!(actions.contains(&Action::Fence), "{actions:?}");
}

#[test]
fn the_old_primary_stays_barred_whatever_vacancy_it_once_won() {
    // a won the key at T0 after a vacancy; a ttl later it hands over.
    let mut fx = primary_fx(leading());
    fx.ha.vacant_since = Some(at(0));
    let ttl = u64::try_from(HaConfig::default().ttl.as_millis()).unwrap_or(0);
    fx.quiet_at(ttl + 1_000);
    fx.view(with_request(
        leading().revision(11),
        switchover_to(Some("b")),
    ));
    assert_eq!(fx.state(), &demoting("b", DemotingStep::Checkpointing));
    // Released (the steps in between are tested above).
    fx.ha.leader_revision = None;
    fx.ha.state = State::Replica;
    fx.view(with_request(
        view().revision(13).replica("b"),
        switchover_to(Some("b")),
    ));
    assert!(
        fx.ha.request_bars_me(fx.now),
        "the new vacancy is timed afresh"
    );
}
