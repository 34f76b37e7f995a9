//! Primary: the lease, the server, the status key, the slots.

use super::*;

fn primary_state() -> State {
    State::Primary(PrimaryState::default())
}

/// `a` leads with lease L; `b` (and whatever `more` adds) are members.
fn leading(more: impl FnOnce(V) -> V, pg: PgState) -> Fx {
    let v = more(view().init("a", Some(SYSID)).leader("a", L).primary("a"));
    Fx::new(primary_state(), v, pg).lease().leader()
}

fn with_slots(names: &[&str]) -> PgState {
    PgState {
        slots: names.iter().map(|n| slot(n, false)).collect(),
        ..pg_primary()
    }
}

#[test]
fn keepalive_cadence_and_renewal() {
    let mut fx = leading(|v| v, pg_primary());
    assert_eq!(fx.tick(999), vec![]);
    assert_eq!(
        fx.tick(1_000),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    fx.probed(pg_primary());
    // Outstanding: never a second one.
    assert_eq!(fx.tick(1_500), vec![]);
    // The answer moves valid_until.
    assert_eq!(fx.done(ActionKind::Keepalive, lease_reply(5_000)), vec![]);
    assert_eq!(fx.ha.lease().and_then(|l| l.valid_until), Some(at(5_000)));
    // Due one interval after the last was sent (at 1000).
    assert_eq!(fx.tick(1_999), vec![]);
    assert_eq!(
        fx.tick(2_000),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    fx.probed(pg_primary());
    // The old deadline passes harmlessly (only the routine probe is due).
    assert_eq!(fx.tick(VALID_MS), vec![Action::Probe]);
    assert!(fx.ha.holds_leader(fx.now));
    assert_eq!(fx.state(), &primary_state());
    // A slow answer: the next one is due at once.
    fx.now = at(3_500);
    assert_eq!(
        fx.done(ActionKind::Keepalive, lease_reply(6_500)),
        vec![Action::Keepalive { lease: L }]
    );
}

#[test]
fn a_failed_keepalive_changes_nothing_until_the_deadline() {
    let mut fx = leading(|v| v, pg_primary());
    fx.tick(1_000);
    assert_eq!(fx.fail(ActionKind::Keepalive), vec![]);
    assert!(fx.ha.holds_leader(fx.now));
    assert_eq!(fx.tick(2_000), vec![Action::Keepalive { lease: L }]);
}

#[test]
fn losing_the_lease_fences_at_once() {
    let ttl = HaConfig::default().ttl;
    // (case, how the loss shows)
    type Loss = Box<dyn Fn(&mut Fx) -> Vec<Action>>;
    let cases: Vec<(&str, Loss)> = vec![
        (
            "valid_until reached without a renewal",
            Box::new(|fx: &mut Fx| {
                fx.tick(1_000);
                fx.tick(VALID_MS)
            }),
        ),
        (
            "the store says the lease is gone",
            Box::new(|fx: &mut Fx| {
                fx.tick(1_000);
                fx.done(ActionKind::Keepalive, Reply::LeaseGone)
            }),
        ),
        (
            "a newer view shows the key vacant (expired)",
            Box::new(|fx: &mut Fx| fx.view(view().revision(11).primary("a"))),
        ),
        (
            "a newer view shows another holder",
            Box::new(|fx: &mut Fx| fx.view(view().revision(11).leader("b", 3).primary("b"))),
        ),
    ];
    for (case, lose) in cases {
        let mut fx = leading(|v| v, pg_primary());
        let actions = lose(&mut fx);
        // The fence, and a new lease for the member key; nothing may start
        // or promote.
        assert_eq!(
            actions,
            vec![Action::Fence, Action::GrantLease { ttl }],
            "{case}"
        );
        assert_eq!(fx.state(), &State::Replica, "{case}");
        assert!(!fx.ha.holds_leader(fx.now), "{case}");
        // A late renewal of the lost lease does not revive it.
        fx.done(ActionKind::Keepalive, lease_reply(60_000));
        assert_eq!(fx.ha.lease(), None, "{case}");
    }
}

#[test]
fn a_lease_lost_while_starting_the_primary_fences_the_start() {
    let mut fx = leading(|v| v, pg_stopped());
    let start = Action::StartPostgres(StartAs::Primary);
    assert_eq!(fx.tick(0), vec![start, publish(fx.me())]);
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx.quiet_at(VALID_MS - 1);
    assert_eq!(fx.tick(VALID_MS - 1), vec![]);
    // The start is still running at the deadline: fence, do not wait for it.
    let actions = fx.tick(2 * VALID_MS);
    assert_eq!(
        actions,
        vec![
            Action::Fence,
            Action::GrantLease {
                ttl: HaConfig::default().ttl
            }
        ]
    );
}

#[test]
fn a_view_older_than_our_leader_write_is_not_a_loss() {
    let mut fx = leading(|v| v, pg_primary());
    fx.ha.leader_revision = Some(20);
    assert_eq!(fx.view(view().revision(19).primary("a")), vec![]);
    assert!(fx.ha.holds_leader(fx.now));
}

#[test]
fn primary_server_rules() {
    // (case, probe, actions)
    let cases: Vec<(&str, PgState, Vec<Action>)> = vec![
        (
            "crashed: restart in place within the lease",
            pg_stopped(),
            vec![Action::StartPostgres(StartAs::Primary)],
        ),
        (
            "running as a standby: promote",
            pg_standby(None),
            vec![Action::Promote],
        ),
        (
            "running, recovery state unknown: wait for the next probe",
            PgState {
                in_recovery: None,
                ..pg_primary()
            },
            vec![],
        ),
        ("running as primary: nothing", pg_primary(), vec![]),
    ];
    for (case, pg, mut actions) in cases {
        let mut fx = leading(|v| v, pg);
        let got = fx.tick(0);
        if fx.me().state == MemberState::Starting {
            actions.push(publish(fx.me()));
        }
        assert_eq!(got, actions, "{case}");
    }
}

#[test]
fn promotion_is_followed_by_a_checkpoint() {
    let mut fx = leading(|v| v, pg_standby(None));
    assert_eq!(fx.tick(0), vec![Action::Promote]);
    fx.done(ActionKind::Promote, Reply::Done);
    fx.done(ActionKind::PublishMember, Reply::Done);
    let probe = pg_primary();
    // A new primary: its first status key, and a CHECKPOINT.
    let status = Action::PublishStatus(StatusKey {
        lsn: Lsn(0x300_0000),
        timeline: 1,
    });
    assert_eq!(fx.probed(probe.clone()), vec![status, Action::Checkpoint]);
    fx.done(ActionKind::PublishStatus, Reply::Done);
    assert_eq!(
        fx.done(ActionKind::Checkpoint, Reply::Done),
        vec![Action::Probe]
    );
    assert_eq!(fx.probed(probe), vec![]);
}

#[test]
fn status_key_cadence() {
    let mut fx = leading(|v| v, pg_primary());
    let at_lsn = |lsn| PgState {
        wal_lsn: Some(Lsn(lsn)),
        ..pg_primary()
    };
    let status = |lsn, timeline| {
        Action::PublishStatus(StatusKey {
            lsn: Lsn(lsn),
            timeline,
        })
    };
    // Moved, but not a loop_wait since the last write.
    fx.now = at(500);
    assert_eq!(fx.probed(at_lsn(0x300_1000)), vec![]);
    fx.quiet_at(999);
    fx.ha.status_published = Some((
        StatusKey {
            lsn: Lsn(0x300_0000),
            timeline: 1,
        },
        at(0),
    ));
    assert_eq!(fx.probed(at_lsn(0x300_1000)), vec![]);
    fx.quiet_at(1_000);
    fx.ha.status_published = Some((
        StatusKey {
            lsn: Lsn(0x300_0000),
            timeline: 1,
        },
        at(0),
    ));
    assert_eq!(fx.probed(at_lsn(0x300_1000)), vec![status(0x300_1000, 1)]);
    fx.done(ActionKind::PublishStatus, Reply::Done);
    // Unchanged: not rewritten, however long.
    fx.quiet_at(5_000);
    fx.ha.status_published = Some((
        StatusKey {
            lsn: Lsn(0x300_1000),
            timeline: 1,
        },
        at(0),
    ));
    assert_eq!(fx.probed(at_lsn(0x300_1000)), vec![]);
    // A new timeline: at once.
    fx.quiet_at(5_001);
    let promoted = PgState {
        timeline: Some(2),
        ..at_lsn(0x300_1000)
    };
    let actions = fx.probed(promoted);
    assert_eq!(actions, vec![status(0x300_1000, 2), publish(fx.me())]);
}

#[test]
fn slots_are_created_for_every_other_member() {
    let mut fx = leading(
        |v| {
            v.replica("c")
                .replica("B-2")
                // sanitizes to our own slot name
                .replica("A")
                .member("a", member("a", MemberRole::Primary, MemberState::Running))
        },
        with_slots(&[]),
    );
    // One at a time, in name order; never one for ourselves.
    assert_eq!(fx.tick(0), vec![Action::CreateSlot { name: "b_2".into() }]);
    assert_eq!(
        fx.done(ActionKind::CreateSlot, Reply::Done),
        vec![Action::Probe]
    );
    assert_eq!(
        fx.probed(with_slots(&["b_2"])),
        vec![Action::CreateSlot { name: "c".into() }]
    );
    fx.done(ActionKind::CreateSlot, Reply::Done);
    assert_eq!(fx.probed(with_slots(&["b_2", "c"])), vec![]);
}

#[test]
fn vanished_members_keep_their_slot_for_member_slots_ttl() {
    let ttl = u64::try_from(MEMBER_SLOTS_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut pg = with_slots(&["b", "gone", "busy"]);
    pg.slots.push(SlotInfo {
        name: "logical_x".into(),
        physical: false,
        active: false,
    });
    if let Some(s) = pg.slots.iter_mut().find(|s| s.name == "busy") {
        s.active = true;
    }
    let mut fx = leading(|v| v.replica("b"), pg.clone());
    // First seen memberless now: kept, and the drop time is a wakeup.
    assert_eq!(fx.tick(0), vec![]);
    fx.quiet_at(ttl - 1);
    assert_eq!(fx.ha.next_wakeup(fx.now), Some(at(ttl)));
    assert_eq!(fx.probed(pg.clone()), vec![]);
    // At the TTL the inactive one goes; an active slot and a logical slot
    // are never dropped.
    fx.quiet_at(ttl);
    assert_eq!(
        fx.probed(pg.clone()),
        vec![Action::DropSlot {
            name: "gone".into()
        }]
    );
    fx.done(ActionKind::DropSlot, Reply::Done);
    let mut after = pg.clone();
    after.slots.retain(|s| s.name != "gone");
    assert_eq!(fx.probed(after), vec![]);
}

#[test]
fn a_member_back_within_member_slots_ttl_restarts_the_clock() {
    let ttl = u64::try_from(MEMBER_SLOTS_TTL.as_millis()).unwrap_or(u64::MAX);
    let pg = with_slots(&["b"]);
    let without = || view().init("a", Some(SYSID)).leader("a", L).primary("a");
    let mut fx = leading(|v| v, pg.clone());
    assert_eq!(fx.tick(0), vec![]);
    fx.quiet_at(ttl - 1);
    fx.view(without().revision(11).replica("b"));
    assert_eq!(fx.probed(pg.clone()), vec![]);
    fx.quiet_at(ttl);
    fx.view(without().revision(12));
    assert_eq!(fx.probed(pg.clone()), vec![]);
    fx.quiet_at(2 * ttl - 1);
    assert_eq!(fx.probed(pg.clone()), vec![]);
    fx.quiet_at(2 * ttl);
    assert_eq!(fx.probed(pg), vec![Action::DropSlot { name: "b".into() }]);
}

#[test]
fn the_cluster_sysid_is_recorded_once_known() {
    let v = view().init("a", None).leader("a", L).primary("a");
    let mut fx = Fx::new(primary_state(), v, pg_primary()).lease().leader();
    assert_eq!(
        fx.tick(0),
        vec![Action::SetInitializeSysid { sysid: SYSID }]
    );
    // Written: not again while the view catches up.
    assert_eq!(fx.done(ActionKind::SetInitializeSysid, Reply::Done), vec![]);
    fx.quiet_at(1_000);
    assert_eq!(fx.probed(pg_primary()), vec![]);
    // Failed: retried after loop_wait.
    let v = view().init("a", None).leader("a", L).primary("a");
    let mut fx = Fx::new(primary_state(), v, pg_primary()).lease().leader();
    fx.tick(0);
    assert_eq!(fx.fail(ActionKind::SetInitializeSysid), vec![]);
    fx.quiet_at(999);
    assert_eq!(fx.probed(pg_primary()), vec![]);
    fx.quiet_at(1_000);
    assert_eq!(
        fx.probed(pg_primary()),
        vec![Action::SetInitializeSysid { sysid: SYSID }]
    );
    // Someone else's initialize key is not ours to fill in.
    let v = view().init("b", None).leader("a", L).primary("a");
    let mut fx = Fx::new(primary_state(), v, pg_primary()).lease().leader();
    assert_eq!(fx.tick(0), vec![]);
}
