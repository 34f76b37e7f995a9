//! Replica: follow whoever holds the leader key.

use super::*;

fn configure(name: &str) -> Action {
    Action::ConfigureStandby {
        upstream: upstream(name),
        slot: "a".into(),
    }
}

#[test]
fn replica_rules() {
    let odd = "Ünï code/☃ \"x\"";
    // (case, view, probe, actions)
    let cases: Vec<(&str, V, PgState, Vec<Action>)> = vec![
        (
            "stopped: start as a standby of the leader",
            view().leader("b", 3).primary("b"),
            pg_stopped(),
            vec![standby_of(Some("b"))],
        ),
        (
            "stopped, no leader: start as a standby of nobody",
            view().replica("b"),
            pg_stopped(),
            vec![standby_of(None)],
        ),
        (
            "streaming from the leader: nothing to do",
            view().leader("b", 3).primary("b"),
            pg_standby(Some("b")),
            vec![],
        ),
        (
            "following the old leader: repoint and reload",
            view().leader("c", 4).primary("c").replica("b"),
            pg_standby(Some("b")),
            vec![configure("c")],
        ),
        (
            "following nobody, a leader appears: point at it",
            view().leader("b", 3).primary("b"),
            pg_standby(None),
            vec![configure("b")],
        ),
        (
            "the leader moved to another address: repoint",
            view()
                .leader("b", 3)
                .primary("b")
                .with("b", |m| m.pg_address = "10.0.0.9:5432".into()),
            pg_standby(Some("b")),
            vec![Action::ConfigureStandby {
                upstream: Upstream {
                    member: "b".into(),
                    pg_address: "10.0.0.9:5432".into(),
                },
                slot: "a".into(),
            }],
        ),
        (
            "leader key vacant, too far behind status to race: stop receiving, stay a replica",
            view()
                .replica("b")
                .received("b", 0x200_0001)
                .status(u64::MAX / 2),
            pg_standby(Some("b")),
            vec![Action::StopReceiving { slot: "a".into() }],
        ),
        (
            "leader's member key missing: wait for its address",
            view().leader("b", 3),
            pg_standby(None),
            vec![],
        ),
        (
            "leader's member key with an empty address: wait",
            view()
                .leader("b", 3)
                .primary("b")
                .with("b", |m| m.pg_address = " ".into()),
            pg_standby(None),
            vec![],
        ),
        (
            "a writable server without the leader lease: fence, nothing else",
            view().leader("b", 3).primary("b"),
            pg_primary(),
            vec![Action::Fence],
        ),
        (
            "running but recovery state unknown: treated as writable",
            view().leader("b", 3).primary("b"),
            PgState {
                in_recovery: None,
                ..pg_standby(Some("b"))
            },
            vec![Action::Fence],
        ),
        (
            "untrusted leader name: followed verbatim, never a panic",
            view()
                .leader(odd, 3)
                .member(odd, member(odd, MemberRole::Primary, MemberState::Running)),
            pg_standby(None),
            vec![configure(odd)],
        ),
    ];
    for (case, v, pg, mut actions) in cases {
        let mut fx = Fx::new(State::Replica, v, pg).lease();
        let got = fx.tick(0);
        if fx.me().state == MemberState::Starting {
            actions.push(publish(fx.me()));
        }
        assert_eq!(got, actions, "{case}");
        assert_eq!(fx.state(), &State::Replica, "{case}");
    }
}

#[test]
fn leader_change_is_followed() {
    let mut fx = Fx::new(
        State::Replica,
        view().leader("b", 3).primary("b").replica("c"),
        pg_standby(Some("b")),
    )
    .lease();
    assert_eq!(fx.tick(0), vec![]);
    // b's lease expired: vacant. c is further ahead: nothing yet.
    let vacant = view().revision(11).replica("c").received("c", 0x200_0001);
    assert_eq!(through_vacancy(&mut fx, vacant, None), vec![]);
    assert_eq!(fx.state(), &State::Replica);
    // c took over.
    let v = view().revision(12).leader("c", 4).primary("c");
    assert_eq!(fx.view(v), vec![configure("c")]);
    assert_eq!(
        fx.done(ActionKind::ConfigureStandby, Reply::Done),
        vec![Action::Probe]
    );
    let back = fx.probed(pg_standby(Some("c")));
    assert_eq!(
        back,
        vec![publish(fx.me())],
        "streaming again: the member key says so"
    );
}

#[test]
fn empty_data_directory_goes_back_to_cloning() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_empty()).lease();
    let actions = fx.tick(0);
    assert_eq!(fx.state(), &State::Bootstrapping(BootstrapStep::Cloning));
    assert_eq!(
        actions,
        vec![
            Action::Basebackup {
                from: upstream("b"),
                slot: "a".into()
            },
            publish(fx.me())
        ]
    );
}

#[test]
fn replica_lease_is_kept_alive_and_replaced_when_lost() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    assert_eq!(
        fx.tick(1_000),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    // A replica's lease only carries its member key: grant another, no fence.
    assert_eq!(
        fx.done(ActionKind::Keepalive, Reply::LeaseGone),
        vec![Action::GrantLease {
            ttl: HaConfig::default().ttl
        }]
    );
    assert_eq!(fx.ha.lease(), None);
    assert_eq!(fx.probed(pg_standby(Some("b"))), vec![]);
    let actions = fx.done(
        ActionKind::GrantLease,
        Reply::Lease {
            lease: 8,
            valid_until: at(5_000),
        },
    );
    assert_eq!(
        actions,
        vec![Action::PublishMember {
            lease: 8,
            info: fx.me()
        }]
    );
}

#[test]
fn standby_publishes_positions_fast_while_the_leader_hands_over() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    let moved = PgState {
        received_lsn: Some(Lsn(0x200_0100)),
        ..pg_standby(Some("b"))
    };
    // Normally a new position waits for loop_wait.
    fx.now = at(500);
    assert_eq!(fx.probed(moved.clone()), vec![]);
    // b is stopping: publish every new position at once, probe every 100 ms.
    let stopping = view()
        .revision(11)
        .leader("b", 3)
        .primary("b")
        .with("b", |m| m.state = MemberState::Stopping);
    assert_eq!(fx.view(stopping), vec![publish(fx.me())]);
    assert_eq!(fx.me().received_lsn, Some(Lsn(0x200_0100)));
    assert_eq!(fx.tick(599), vec![]);
    assert_eq!(fx.tick(600), vec![Action::Probe]);
}

/// A renewal that failed (a stall, a Raft election) is tried again after
/// KEEPALIVE_RETRY, not a whole keepalive_interval after it was sent.
#[test]
fn a_failed_keepalive_is_retried_soon() {
    let v = view().leader("b", 3).primary("b");
    let mut fx = Fx::new(State::Replica, v, pg_standby(Some("b"))).lease();
    assert_eq!(
        fx.tick(1_000),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    fx.probed(pg_standby(Some("b")));
    fx.now = at(1_500);
    assert_eq!(fx.fail(ActionKind::Keepalive), vec![]);
    let retry = 1_500 + KEEPALIVE_RETRY.as_millis() as u64;
    assert_eq!(fx.ha.next_wakeup(fx.now), Some(at(retry)));
    assert_eq!(fx.tick(retry - 1), vec![]);
    assert_eq!(fx.tick(retry), vec![Action::Keepalive { lease: L }]);
    // Answered: back to the usual cadence from that send.
    fx.done(ActionKind::Keepalive, lease_reply(retry + 4_000));
    let keepalive = |a: &Vec<Action>| a.contains(&Action::Keepalive { lease: L });
    assert!(!keepalive(&fx.tick(retry + 999)));
    assert!(keepalive(&fx.tick(retry + 1_000)));
}
