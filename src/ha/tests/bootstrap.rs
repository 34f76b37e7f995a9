//! Bootstrapping: the initialize race, the winner's path to primary, and
//! the losers' clone.

use super::*;

fn boot(step: BootstrapStep) -> State {
    State::Bootstrapping(step)
}

#[test]
fn a_member_that_may_never_be_promoted_does_not_race_to_bootstrap() {
    let ttl = HaConfig::default().ttl;
    let never = [
        MemberTags {
            nofailover: true,
            ..MemberTags::default()
        },
        MemberTags {
            failover_priority: 0,
            ..MemberTags::default()
        },
    ];
    for tags in never {
        let mut fx = Fx::new(State::Starting, view().empty_cluster(), pg_empty()).tags(tags);
        assert_eq!(fx.tick(0), vec![Action::GrantLease { ttl }], "{tags:?}");
        assert_eq!(fx.state(), &boot(BootstrapStep::Racing));
        // Someone else bootstrapped: wait for its leader, then clone.
        fx.view(view());
        assert_eq!(fx.state(), &boot(BootstrapStep::AwaitingLeader), "{tags:?}");
    }
}

#[test]
fn winner_path_from_empty_cluster_to_primary() {
    let mut fx = Fx::new(State::Starting, view().empty_cluster(), pg_empty());
    let ttl = HaConfig::default().ttl;
    assert_eq!(
        fx.tick(0),
        vec![Action::AcquireInitialize, Action::GrantLease { ttl }]
    );
    assert_eq!(
        fx.done(ActionKind::GrantLease, lease_reply(VALID_MS)),
        vec![publish(fx.me())]
    );
    fx.done(ActionKind::PublishMember, Reply::Done);

    // Won: initdb, and say so.
    let actions = fx.done(ActionKind::AcquireInitialize, Reply::Won { revision: 11 });
    assert_eq!(fx.state(), &boot(BootstrapStep::Initdb));
    assert_eq!(actions, vec![Action::Initdb, publish(fx.me())]);
    assert_eq!(fx.me().state, MemberState::Initializing);
    fx.done(ActionKind::PublishMember, Reply::Done);

    // The leader key comes before the server may run writable.
    let actions = fx.done(ActionKind::Initdb, Reply::Initialized { sysid: SYSID });
    assert_eq!(fx.state(), &boot(BootstrapStep::TakingLeader));
    assert_eq!(
        actions,
        vec![Action::AcquireLeader { lease: L }, Action::Probe]
    );
    let actions = fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    assert_eq!(fx.state(), &boot(BootstrapStep::StartingPrimary));
    assert_eq!(actions, vec![publish(fx.me())]);
    assert_eq!(fx.me().role, MemberRole::Primary);
    fx.done(ActionKind::PublishMember, Reply::Done);

    // The probe also brings the timeline: a member key change.
    assert_eq!(
        fx.probed(pg_stopped()),
        vec![Action::StartPostgres(StartAs::Primary), publish(fx.me())]
    );
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(
        fx.done(ActionKind::StartPostgres, Reply::Done),
        vec![Action::CreateRoles]
    );
    let actions = fx.done(ActionKind::CreateRoles, Reply::Done);
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    assert_eq!(actions, vec![publish(fx.me()), Action::Probe]);
    assert_eq!(fx.me().state, MemberState::Running);
    fx.done(ActionKind::PublishMember, Reply::Done);

    // The store catches up; b has come up to clone.
    let v = view()
        .revision(13)
        .init("a", None)
        .leader("a", L)
        .primary("a")
        .member(
            "b",
            member("b", MemberRole::Uninitialized, MemberState::Stopped),
        );
    let mut v = ClusterView::from(v);
    if let Some(l) = v.leader.as_mut() {
        l.mod_revision = 12;
    }
    assert_eq!(fx.view(v), vec![]);
    assert_eq!(
        fx.probed(pg_primary()),
        vec![
            Action::SetInitializeSysid { sysid: SYSID },
            Action::PublishStatus(StatusKey {
                lsn: Lsn(0x300_0000),
                timeline: 1
            }),
            Action::CreateSlot { name: "b".into() },
        ]
    );
    assert!(fx.ha.holds_leader(fx.now));
}

#[test]
fn initialize_race_outcomes() {
    // (case, data dir, answer, state after, actions)
    let cases: Vec<(&str, PgState, Reply, State, Vec<Action>)> = vec![
        (
            "won with an empty data dir: initdb",
            pg_empty(),
            Reply::Won { revision: 11 },
            boot(BootstrapStep::Initdb),
            vec![Action::Initdb],
        ),
        (
            "won with an existing data dir: no initdb, take the leader key",
            pg_stopped(),
            Reply::Won { revision: 11 },
            boot(BootstrapStep::TakingLeader),
            vec![Action::AcquireLeader { lease: L }],
        ),
        (
            "lost: wait for a leader to clone from",
            pg_empty(),
            Reply::Lost,
            boot(BootstrapStep::AwaitingLeader),
            vec![],
        ),
    ];
    for (case, pg, reply, state, mut actions) in cases {
        let mut fx = Fx::new(boot(BootstrapStep::Racing), view().empty_cluster(), pg).lease();
        assert_eq!(fx.tick(0), vec![Action::AcquireInitialize], "{case}");
        let got = fx.done(ActionKind::AcquireInitialize, reply);
        assert_eq!(fx.state(), &state, "{case}");
        if fx.me().state == MemberState::Initializing {
            actions.push(publish(fx.me()));
        }
        assert_eq!(got, actions, "{case}");
    }
}

#[test]
fn an_initialize_key_of_our_own_means_we_won_before_a_restart() {
    let v = view().empty_cluster().init("a", None);
    let mut fx = Fx::new(boot(BootstrapStep::Racing), v, pg_empty()).lease();
    let actions = fx.tick(0);
    assert_eq!(fx.state(), &boot(BootstrapStep::Initdb));
    assert_eq!(actions, vec![Action::Initdb, publish(fx.me())]);
}

#[test]
fn taking_the_leader_key() {
    // No valid lease yet: wait for the grant.
    let mut fx = Fx::new(
        boot(BootstrapStep::TakingLeader),
        view().init("a", None),
        pg_stopped(),
    );
    assert_eq!(
        fx.tick(0),
        vec![Action::GrantLease {
            ttl: HaConfig::default().ttl
        }]
    );
    // Lost the leader key to another node: not a primary.
    let mut fx = Fx::new(
        boot(BootstrapStep::TakingLeader),
        view().init("a", None),
        pg_stopped(),
    )
    .lease();
    assert_eq!(fx.tick(0), vec![Action::AcquireLeader { lease: L }]);
    fx.done(ActionKind::AcquireLeader, Reply::Lost);
    assert_eq!(fx.state(), &State::Replica);
    assert!(!fx.ha.holds_leader(fx.now));
    // The view shows our write before its answer: taken.
    let v = view().init("a", None).leader("a", L);
    let mut fx = Fx::new(boot(BootstrapStep::TakingLeader), v, pg_stopped()).lease();
    let actions = fx.tick(0);
    assert_eq!(fx.state(), &boot(BootstrapStep::StartingPrimary));
    assert_eq!(
        actions,
        vec![Action::StartPostgres(StartAs::Primary), publish(fx.me())]
    );
}

#[test]
fn a_new_primary_is_never_started_without_a_valid_leader_lease() {
    let v = view().init("a", None).leader("a", L);
    let mut fx = Fx::new(boot(BootstrapStep::StartingPrimary), v, pg_stopped()).lease();
    // Leader write seen but not ours by this process's reckoning.
    assert_eq!(fx.tick(0), vec![]);
    fx.ha.leader_revision = Some(5);
    // Past valid_until: the lease is lost, not used.
    let actions = fx.tick(VALID_MS);
    assert_eq!(fx.state(), &State::Replica);
    assert!(!actions.contains(&Action::StartPostgres(StartAs::Primary)));
}

#[test]
fn clone_source_and_basebackup() {
    let tagged = |v: V, name: &str| v.with(name, |m| m.tags.clonefrom = true);
    let starting_leader = view().leader("b", 3).member(
        "b",
        member("b", MemberRole::Primary, MemberState::Initializing),
    );
    // (case, view, source)
    let cases: Vec<(&str, V, Option<&str>)> = vec![
        ("no leader yet", view().primary("b"), None),
        ("leader not running yet", starting_leader, None),
        ("leader without a member key", view().leader("b", 3), None),
        (
            "the running leader",
            view().leader("b", 3).primary("b"),
            Some("b"),
        ),
        (
            "a running clonefrom member first",
            tagged(view().leader("b", 3).primary("b").replica("c"), "c"),
            Some("c"),
        ),
        (
            "a stopped clonefrom member is skipped",
            tagged(
                view()
                    .leader("b", 3)
                    .primary("b")
                    .member("c", member("c", MemberRole::Replica, MemberState::Stopped)),
                "c",
            ),
            Some("b"),
        ),
        (
            "our own clonefrom tag is not a source",
            tagged(view().leader("b", 3).primary("b").replica("a"), "a"),
            Some("b"),
        ),
    ];
    for (case, v, source) in cases {
        let mut fx = Fx::new(boot(BootstrapStep::AwaitingLeader), v, pg_empty()).lease();
        let actions = fx.tick(0);
        match source {
            None => {
                assert_eq!(actions, vec![], "{case}");
                assert_eq!(fx.state(), &boot(BootstrapStep::AwaitingLeader), "{case}");
            }
            Some(from) => {
                let backup = Action::Basebackup {
                    from: upstream(from),
                    slot: "a".into(),
                };
                assert_eq!(actions, vec![backup, publish(fx.me())], "{case}");
                assert_eq!(fx.state(), &boot(BootstrapStep::Cloning), "{case}");
                assert_eq!(fx.me().state, MemberState::CreatingReplica, "{case}");
            }
        }
    }
}

#[test]
fn cloned_replica_starts_as_standby_of_the_leader() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(boot(BootstrapStep::AwaitingLeader), v, pg_empty()).lease();
    fx.tick(0);
    fx.done(ActionKind::PublishMember, Reply::Done);
    let actions = fx.done(ActionKind::Basebackup, Reply::Done);
    assert_eq!(fx.state(), &State::Replica);
    assert_eq!(actions, vec![publish(fx.me()), Action::Probe]);
    assert_eq!(fx.me().role, MemberRole::Replica);
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(
        fx.probed(pg_stopped()),
        vec![standby_of(Some("b")), publish(fx.me())]
    );
    assert_eq!(fx.me().state, MemberState::Starting);
}

#[test]
fn failed_basebackup_is_retried_after_loop_wait() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(boot(BootstrapStep::AwaitingLeader), v, pg_empty()).lease();
    fx.tick(0);
    fx.done(ActionKind::PublishMember, Reply::Done);
    let actions = fx.fail(ActionKind::Basebackup);
    assert_eq!(fx.state(), &boot(BootstrapStep::AwaitingLeader));
    assert_eq!(actions, vec![publish(fx.me()), Action::Probe]);
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(fx.probed(pg_empty()), vec![]);
    assert_eq!(fx.tick(999), vec![]);
    let actions = fx.tick(1_000);
    assert_eq!(fx.state(), &boot(BootstrapStep::Cloning));
    assert_eq!(
        actions,
        vec![
            Action::Basebackup {
                from: upstream("b"),
                slot: "a".into()
            },
            Action::Keepalive { lease: L },
            publish(fx.me()),
        ]
    );
}
