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

// ---- a crashed server on the primary ----------------------------------

/// `primary_start_timeout` in the crash scripts: shorter than one lease
/// period, so the scripts need no keepalive answers.
const START_TIMEOUT_MS: u64 = 3_000;

/// What happens at one step of a crash script.
enum Ev {
    Probe(PgState),
    Done(ActionKind, Reply),
    Fail(ActionKind),
    Tick,
    View(ClusterView),
    /// `valid_until` is reached without a renewal.
    LeaseRunsOut,
}

/// A crash script: steps of (ms after T0, the event, the exact actions).
type Script = Vec<(u64, Ev, Vec<Action>)>;

/// The member key, whatever `a` says about itself at that moment (the
/// runner checks it is exactly that).
fn member_key() -> Action {
    publish(member("a", MemberRole::Primary, MemberState::Running))
}

/// `a` leads a running primary; `b` follows it (its slot is there).
fn leading_with_timeout() -> Fx {
    leading(
        |mut v| {
            v.0.config.primary_start_timeout = Duration::from_millis(START_TIMEOUT_MS);
            v.replica("b")
        },
        with_slots(&["b"]),
    )
}

/// Runs `steps` (at ms after T0, the event, the exact actions) on
/// `leading_with_timeout`. Before each step the routine chores are done
/// (keepalive, probe cadence, member key), so a list holds only what the
/// step caused; a member key in it stands as [`member_key`].
fn run_crash_script(case: &str, steps: Script) -> Fx {
    let mut fx = leading_with_timeout();
    for (i, (ms, ev, want)) in steps.into_iter().enumerate() {
        fx.quiet_at(ms);
        fx.ha.inflight.remove(&ActionKind::PublishMember);
        let me = fx.me();
        if let Some(p) = fx.ha.published.as_mut() {
            p.info = me;
        }
        let got = match ev {
            Ev::Probe(pg) => fx.probed(pg),
            Ev::Done(kind, reply) => fx.done(kind, reply),
            Ev::Fail(kind) => fx.fail(kind),
            Ev::Tick => fx.tick(ms),
            Ev::View(v) => fx.view(v),
            Ev::LeaseRunsOut => {
                if let Some(lease) = fx.ha.lease.as_mut() {
                    lease.valid_until = Some(at(ms));
                }
                fx.tick(ms)
            }
        };
        let me = fx.me();
        let got: Vec<Action> = got
            .into_iter()
            .map(|a| match a {
                Action::PublishMember { info, .. } => {
                    assert_eq!(info, me, "{case}, step {i}: member key");
                    member_key()
                }
                a => a,
            })
            .collect();
        assert_eq!(got, want, "{case}, step {i} at {ms} ms");
    }
    fx
}

fn start_primary() -> Action {
    Action::StartPostgres(StartAs::Primary)
}

fn release() -> Action {
    Action::ReleaseLeader {
        lease: L,
        revision: 5,
    }
}

fn ok(kind: ActionKind) -> Ev {
    Ev::Done(kind, Reply::Done)
}

#[test]
fn a_crashed_primary_is_restarted_in_place_within_primary_start_timeout() {
    use ActionKind as K;
    let down = || Ev::Probe(pg_stopped());
    let up = || Ev::Probe(with_slots(&["b"]));
    // (case, script, still the leader at the end)
    let cases: Vec<(&str, Script, bool)> = vec![
        (
            "crash: restart in place, nothing released",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (
                    1_500,
                    ok(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (1_600, up(), vec![]),
            ],
            true,
        ),
        (
            "a start reported done is not back until a probe shows it",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (
                    1_500,
                    ok(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                // It died again at once: the clock still runs from 1000.
                (1_600, down(), vec![start_primary(), member_key()]),
                (3_999, Ev::Tick, vec![]),
                (4_000, Ev::Tick, vec![Action::Fence]),
            ],
            true,
        ),
        (
            "back within the timeout: stays primary, the clock restarts",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (
                    3_000,
                    ok(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (3_100, up(), vec![]),
                // A second crash: timed from here, not from 1000.
                (3_500, down(), vec![start_primary(), member_key()]),
                (4_000, Ev::Tick, vec![]),
                (
                    6_000,
                    ok(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (6_100, up(), vec![]),
                (6_500, Ev::Tick, vec![]),
            ],
            true,
        ),
        (
            "still down at the timeout: fence the start in flight, release, replica",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (3_999, Ev::Tick, vec![]),
                (4_000, Ev::Tick, vec![Action::Fence]),
                // The fence aborted the start; the key waits for the fence.
                (4_010, Ev::Fail(K::StartPostgres), vec![member_key()]),
                (4_020, ok(K::Fence), vec![release(), Action::Probe]),
                (4_030, ok(K::ReleaseLeader), vec![member_key()]),
                // A replica now: a standby with no upstream until the new
                // leader's key shows, once the aborted start's back-off
                // (loop_wait from 4010) is over.
                (4_040, down(), vec![]),
                (5_010, Ev::Tick, vec![standby_of(None), member_key()]),
            ],
            false,
        ),
        (
            "start failures until the timeout: retried, then fence and release",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (
                    1_100,
                    Ev::Fail(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (1_200, down(), vec![]),
                // Retried after loop_wait.
                (2_100, Ev::Tick, vec![start_primary(), member_key()]),
                (
                    2_200,
                    Ev::Fail(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (2_300, down(), vec![]),
                (3_200, Ev::Tick, vec![start_primary(), member_key()]),
                (
                    3_300,
                    Ev::Fail(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (3_400, down(), vec![]),
                (4_000, Ev::Tick, vec![Action::Fence]),
                (4_010, ok(K::Fence), vec![release(), Action::Probe]),
                (4_020, ok(K::ReleaseLeader), vec![member_key()]),
            ],
            false,
        ),
        (
            "a start that completes after the fence is fenced again before the release",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (4_000, Ev::Tick, vec![Action::Fence]),
                // The start is still out: nothing, not even a probe.
                (4_010, ok(K::Fence), vec![]),
                (
                    4_020,
                    ok(K::StartPostgres),
                    vec![Action::Fence, member_key()],
                ),
                (
                    4_030,
                    ok(K::Fence),
                    vec![release(), member_key(), Action::Probe],
                ),
            ],
            true,
        ),
        (
            "a failed fence is retried; nothing is released meanwhile",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (
                    1_100,
                    Ev::Fail(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (1_200, down(), vec![]),
                (4_000, Ev::Tick, vec![Action::Fence]),
                (4_010, Ev::Fail(K::Fence), vec![Action::Probe]),
                (4_020, down(), vec![]),
                // FENCE_RETRY later.
                (4_110, Ev::Tick, vec![Action::Fence]),
                (4_120, ok(K::Fence), vec![release(), Action::Probe]),
                // The release's answer failed: asked again after loop_wait.
                (4_130, Ev::Fail(K::ReleaseLeader), vec![]),
                (5_129, Ev::Tick, vec![]),
                (5_130, Ev::Tick, vec![release()]),
                (5_140, ok(K::ReleaseLeader), vec![member_key()]),
            ],
            false,
        ),
        (
            "the key seen vacant while the release is out: released",
            vec![
                (1_000, down(), vec![start_primary(), member_key()]),
                (4_000, Ev::Tick, vec![Action::Fence]),
                (4_010, Ev::Fail(K::StartPostgres), vec![member_key()]),
                (4_020, ok(K::Fence), vec![release(), Action::Probe]),
                (
                    4_030,
                    Ev::View(
                        view()
                            .init("a", Some(SYSID))
                            .revision(11)
                            .primary("a")
                            .replica("b")
                            .into(),
                    ),
                    vec![member_key()],
                ),
            ],
            false,
        ),
    ];
    for (case, script, leader) in cases {
        let fx = run_crash_script(case, script);
        assert_eq!(fx.ha.holds_leader(fx.now), leader, "{case}");
        let want = if leader {
            primary_state()
        } else {
            State::Replica
        };
        assert_eq!(fx.state(), &want, "{case}");
        // Never the lease itself: the member key stays on it.
        assert!(fx.ha.lease().is_some(), "{case}");
    }
}

#[test]
fn a_lost_lease_overrides_the_crash_window() {
    use ActionKind as K;
    let ttl = HaConfig::default().ttl;
    let expired = || {
        Ev::View(
            view()
                .init("a", Some(SYSID))
                .revision(11)
                .primary("a")
                .replica("b")
                .into(),
        )
    };
    // (case, script): the crash is being restarted when the lease goes;
    // the lease rules fence at once and nothing is released (the key
    // went with the lease).
    let cases: Vec<(&str, Script)> = vec![
        (
            "valid_until reached during the restart",
            vec![
                (
                    1_000,
                    Ev::Probe(pg_stopped()),
                    vec![start_primary(), member_key()],
                ),
                (
                    2_000,
                    Ev::LeaseRunsOut,
                    vec![Action::Fence, Action::GrantLease { ttl }],
                ),
            ],
        ),
        (
            "the key seen expired during the restart",
            vec![
                (
                    1_000,
                    Ev::Probe(pg_stopped()),
                    vec![start_primary(), member_key()],
                ),
                (
                    2_000,
                    expired(),
                    vec![Action::Fence, Action::GrantLease { ttl }],
                ),
            ],
        ),
        (
            "the lease lost after the deadline's fence, before the release",
            vec![
                (
                    1_000,
                    Ev::Probe(pg_stopped()),
                    vec![start_primary(), member_key()],
                ),
                (
                    1_100,
                    Ev::Fail(K::StartPostgres),
                    vec![member_key(), Action::Probe],
                ),
                (1_200, Ev::Probe(pg_stopped()), vec![]),
                (4_000, Ev::Tick, vec![Action::Fence]),
                (4_010, Ev::LeaseRunsOut, vec![Action::GrantLease { ttl }]),
                (4_020, ok(K::Fence), vec![Action::Probe]),
            ],
        ),
    ];
    for (case, script) in cases {
        let fx = run_crash_script(case, script);
        assert_eq!(fx.state(), &State::Replica, "{case}");
        assert!(!fx.ha.holds_leader(fx.now), "{case}");
        assert_eq!(fx.ha.lease(), None, "{case}");
    }
}

#[test]
fn a_crash_timer_from_an_earlier_tenure_is_void() {
    let mut fx = leading_with_timeout();
    // Left over from a tenure under another leader write, long expired.
    fx.ha.primary_down = Some(super::super::primary::ServerDown {
        revision: 4,
        since: at(0),
        giving_up: true,
    });
    fx.quiet_at(10_000);
    let got = fx.probed(pg_stopped());
    assert_eq!(got, vec![start_primary(), publish(fx.me())]);
    assert_eq!(
        fx.ha.primary_down.map(|d| (d.revision, d.since)),
        Some((5, at(10_000)))
    );
}

/// Once `status` shows a new timeline, the switch onto it is recorded in
/// `history`; a failed attempt is retried after loop_wait; timeline 1 has
/// nothing to record.
#[test]
fn a_promotion_is_recorded_in_history_once() {
    let on = |timeline| PgState {
        timeline: Some(timeline),
        ..pg_primary()
    };
    let record = Action::RecordHistory { timeline: 2 };
    let first = leading(|v| v, on(1)).probed(on(1));
    assert!(!first
        .iter()
        .any(|a| matches!(a, Action::RecordHistory { .. })));

    let mut fx = leading(|v| v, on(2));
    fx.quiet_at(100);
    assert_eq!(fx.probed(on(2)), vec![record.clone()]);
    assert_eq!(fx.fail(ActionKind::RecordHistory), vec![]);
    fx.quiet_at(600);
    assert!(
        !fx.probed(on(2)).contains(&record),
        "retried before loop_wait"
    );
    fx.quiet_at(1_200);
    assert_eq!(fx.probed(on(2)), vec![record.clone()]);
    fx.done(ActionKind::RecordHistory, Reply::Done);
    fx.quiet_at(5_000);
    assert!(!fx.probed(on(2)).contains(&record), "recorded twice");
}
