//! Candidate: a replica takes the vacant leader key and promotes, or
//! stays a replica and follows whoever took it.

use super::*;

fn acquiring() -> State {
    State::Candidate(CandidateStep::Acquiring)
}

fn promoting() -> State {
    State::Candidate(CandidateStep::Promoting)
}

fn acquire() -> Action {
    Action::AcquireLeader { lease: L }
}

fn configure(name: &str) -> Action {
    Action::ConfigureStandby {
        upstream: upstream(name),
        slot: "a".into(),
    }
}

fn grant() -> Action {
    Action::GrantLease {
        ttl: HaConfig::default().ttl,
    }
}

/// `a` streams from `b`, the leader; `c` is another standby.
fn following_b() -> Fx {
    let v = view()
        .leader("b", 3)
        .primary("b")
        .replica("c")
        .received("c", 0x1FF_0000);
    Fx::new(State::Replica, v, pg_standby(Some("b"))).lease()
}

/// The view after b's key vanished (handover or expiry): c at `c_lsn`.
fn vacant(c_lsn: u64) -> V {
    view().revision(11).replica("c").received("c", c_lsn)
}

/// `a` raced on a vacant key and its AcquireLeader is out.
fn racing() -> Fx {
    let mut fx = following_b();
    assert_eq!(
        through_vacancy(&mut fx, vacant(0x1FF_0000), None),
        vec![acquire()]
    );
    assert_eq!(fx.state(), &acquiring());
    fx
}

/// `a` won the key (revision 12) and its Promote is out.
fn won() -> Fx {
    let mut fx = racing();
    let actions = fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    // Promote, and the member key says primary at once.
    assert_eq!(actions, vec![Action::Promote, publish(fx.me())]);
    assert_eq!(fx.state(), &promoting());
    assert_eq!(fx.me().role, MemberRole::Primary);
    fx.done(ActionKind::PublishMember, Reply::Done);
    fx
}

#[test]
fn the_vacant_key_is_raced_for_on_the_view_that_shows_it() {
    let ours = 0x200_0000;
    let lag = HaConfig::default().maximum_lag_on_failover;
    // (case, our tags, our lease valid, the vacant view, actions, state)
    type Case = (&'static str, MemberTags, bool, V, Vec<Action>, State);
    let prio = |p| MemberTags {
        failover_priority: p,
        ..MemberTags::default()
    };
    let cases: Vec<Case> = vec![
        (
            "most advanced: acquire",
            MemberTags::default(),
            true,
            vacant(ours - 1),
            vec![acquire()],
            acquiring(),
        ),
        (
            "another member is ahead: nothing",
            MemberTags::default(),
            true,
            vacant(ours + 1),
            vec![],
            State::Replica,
        ),
        (
            "tie, c has the higher priority: nothing",
            MemberTags::default(),
            true,
            vacant(ours).with("c", |m| m.tags.failover_priority = 2),
            vec![],
            State::Replica,
        ),
        (
            "tie, we have the higher priority: acquire",
            prio(3),
            true,
            vacant(ours).with("c", |m| m.tags.failover_priority = 2),
            vec![acquire()],
            acquiring(),
        ),
        (
            "tie, same priority, a is before c: acquire",
            MemberTags::default(),
            true,
            vacant(ours),
            vec![acquire()],
            acquiring(),
        ),
        (
            "tagged nofailover: never",
            MemberTags {
                nofailover: true,
                ..MemberTags::default()
            },
            true,
            vacant(0),
            vec![],
            State::Replica,
        ),
        (
            "failover_priority 0: never",
            prio(0),
            true,
            vacant(0),
            vec![],
            State::Replica,
        ),
        (
            "lagging beyond maximum_lag behind status: never",
            MemberTags::default(),
            true,
            vacant(0).status(ours + lag + 1),
            vec![],
            State::Replica,
        ),
        (
            "within maximum_lag of status: acquire",
            MemberTags::default(),
            true,
            vacant(0).status(ours + lag),
            vec![acquire()],
            acquiring(),
        ),
        (
            "no valid lease: no acquire, a new lease first",
            MemberTags::default(),
            false,
            vacant(0),
            vec![grant()],
            State::Replica,
        ),
    ];
    for (case, tags, lease, v, actions, state) in cases {
        let fx = following_b().tags(tags);
        let mut fx = if lease {
            fx
        } else {
            // The lease ran out just now: the member key's lease is lost.
            let mut fx = fx;
            fx.ha.lease = fx.ha.lease.map(|l| Lease {
                valid_until: Some(at(0)),
                ..l
            });
            fx
        };
        assert_eq!(through_vacancy(&mut fx, v, None), actions, "{case}");
        assert_eq!(fx.state(), &state, "{case}");
    }
}

#[test]
fn won_promotes_then_checkpoints_and_leads() {
    let mut fx = won();
    // Our own write shows up: still ours.
    let mine = || {
        view()
            .revision(12)
            .leader("a", L)
            .primary("a")
            .replica("c")
            .received("c", 0x1FF_0000)
    };
    assert_eq!(fx.view(mine()), vec![]);
    assert!(fx.ha.holds_leader(fx.now));
    // Promoted: a primary with its CHECKPOINT pending, re-probed first.
    // (The member key already says primary, running.)
    let actions = fx.done(ActionKind::Promote, Reply::Done);
    assert_eq!(actions, vec![Action::Probe]);
    assert_eq!(
        fx.state(),
        &State::Primary(PrimaryState {
            checkpoint_pending: true
        })
    );
    fx.done(ActionKind::PublishMember, Reply::Done);
    // The probe shows the new timeline: status key at once, CHECKPOINT,
    // and the member key's new timeline.
    let promoted = PgState {
        timeline: Some(2),
        ..pg_primary()
    };
    let status = Action::PublishStatus(StatusKey {
        lsn: Lsn(0x300_0000),
        timeline: 2,
    });
    let actions = fx.probed(promoted.clone());
    assert_eq!(actions, vec![status, Action::Checkpoint, publish(fx.me())]);
    fx.done(ActionKind::PublishStatus, Reply::Done);
    fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(
        fx.done(ActionKind::Checkpoint, Reply::Done),
        vec![Action::Probe]
    );
    // The usual primary duties: a slot for c; and, since `status` shows
    // the new timeline, the switch is recorded in `history`, once.
    assert_eq!(
        fx.probed(promoted.clone()),
        vec![
            Action::RecordHistory { timeline: 2 },
            Action::CreateSlot { name: "c".into() }
        ]
    );
    assert_eq!(fx.done(ActionKind::RecordHistory, Reply::Done), vec![]);
    assert_eq!(fx.state(), &State::Primary(PrimaryState::default()));
    // Keepalives go on from the last one (at T0); the routine probe waits
    // for the slot creation on the PostgreSQL lane.
    assert_eq!(fx.tick(1_000), vec![Action::Keepalive { lease: L }]);
    assert_eq!(fx.done(ActionKind::Keepalive, lease_reply(5_000)), vec![]);
    assert!(fx.ha.holds_leader(at(4_999)));
}

#[test]
fn lost_goes_back_to_following_the_winner() {
    // The answer comes first; the view still shows the key vacant.
    let mut fx = racing();
    assert_eq!(fx.done(ActionKind::AcquireLeader, Reply::Lost), vec![]);
    assert_eq!(fx.state(), &State::Replica);
    // A view no newer than the one we lost on is no reason to race again.
    assert_eq!(fx.view(vacant(0x1FF_0000)), vec![]);
    // The winner's write arrives: follow it.
    let c_leads = view().revision(13).leader("c", 4).primary("c");
    assert_eq!(fx.view(c_leads), vec![configure("c")]);
    assert_eq!(fx.state(), &State::Replica);

    // The winner's key shows up first: wait for our answer, then follow.
    let mut fx = racing();
    let c_leads = view().revision(13).leader("c", 4).primary("c");
    assert_eq!(fx.view(c_leads), vec![]);
    assert_eq!(fx.state(), &acquiring());
    assert_eq!(
        fx.done(ActionKind::AcquireLeader, Reply::Lost),
        vec![configure("c")]
    );
    assert_eq!(fx.state(), &State::Replica);
}

#[test]
fn a_newer_vacant_view_after_a_lost_race_races_again() {
    let mut fx = racing();
    fx.done(ActionKind::AcquireLeader, Reply::Lost);
    // The winner's key came and went (its lease expired).
    assert_eq!(
        fx.view(view().revision(13).leader("c", 4).primary("c")),
        vec![configure("c")]
    );
    fx.done(ActionKind::ConfigureStandby, Reply::Done);
    fx.probed(pg_standby(Some("c")));
    assert_eq!(
        through_vacancy(&mut fx, vacant(0x1FF_0000).revision(14), None),
        vec![acquire()]
    );
}

#[test]
fn promote_failure_fences_then_releases_the_key() {
    let mut fx = won();
    // The server may be half-promoted: stop it by PID before the key goes.
    assert_eq!(fx.fail(ActionKind::Promote), vec![Action::Fence]);
    assert_eq!(fx.state(), &State::Candidate(CandidateStep::Abandoning));
    assert!(fx.ha.holds_leader(fx.now));
    // Fenced: release the key (only if still our write), keep the lease.
    let actions = fx.done(ActionKind::Fence, Reply::Done);
    let release = Action::ReleaseLeader {
        lease: L,
        revision: 12,
    };
    assert_eq!(actions, vec![release, publish(fx.me()), Action::Probe]);
    assert_eq!(fx.me().state, MemberState::Stopped);
    assert_eq!(fx.done(ActionKind::ReleaseLeader, Reply::Done), vec![]);
    assert_eq!(fx.state(), &State::Replica);
    assert!(!fx.ha.holds_leader(fx.now));
    assert_eq!(fx.ha.lease().map(|l| l.id), Some(L));
    // The member key says replica again; the server comes back a standby.
    let actions = fx.done(ActionKind::PublishMember, Reply::Done);
    assert_eq!(actions, vec![publish(fx.me())]);
    assert_eq!(fx.me().role, MemberRole::Replica);
    assert_eq!(fx.probed(pg_stopped()), vec![standby_of(None)]);
}

#[test]
fn the_release_seen_before_its_answer_keeps_the_lease() {
    let mut fx = won();
    fx.fail(ActionKind::Promote);
    fx.done(ActionKind::Fence, Reply::Done);
    // The vacant key arrives first: the key is no longer ours, the lease is.
    assert_eq!(fx.view(vacant(0x1FF_0000).revision(13)), vec![]);
    assert_eq!(fx.state(), &State::Replica);
    assert_eq!(fx.ha.lease().map(|l| l.id), Some(L));
    assert_eq!(fx.done(ActionKind::ReleaseLeader, Reply::Done), vec![]);
    assert_eq!(fx.ha.lease().map(|l| l.id), Some(L));
}

#[test]
fn never_promotes_without_a_valid_lease() {
    // Won arrives after the lease ran out: no Promote, a replica again.
    let mut fx = racing();
    fx.now = at(VALID_MS);
    let actions = fx.done(ActionKind::AcquireLeader, Reply::Won { revision: 12 });
    assert_eq!(actions, vec![grant(), Action::Probe]);
    assert_eq!(fx.state(), &State::Replica);

    // The lease runs out while the promotion runs: fence it at once.
    let mut fx = won();
    assert_eq!(fx.tick(VALID_MS), vec![Action::Fence, grant()]);
    assert_eq!(fx.state(), &State::Replica);

    // The store says the lease is gone instead of answering the race.
    let mut fx = racing();
    let actions = fx.done(ActionKind::AcquireLeader, Reply::LeaseGone);
    assert_eq!(actions, vec![grant()]);
    assert_eq!(fx.state(), &State::Replica);
}

#[test]
fn our_write_seen_after_a_failed_answer_is_ours() {
    let mut fx = racing();
    // The store timed out: back off, stay a candidate.
    assert_eq!(fx.fail(ActionKind::AcquireLeader), vec![]);
    assert_eq!(fx.state(), &acquiring());
    // ... but it had applied the write.
    let mine = view().revision(12).leader("a", L).replica("c");
    let actions = fx.view(mine);
    assert_eq!(actions, vec![Action::Promote, publish(fx.me())]);
    assert_eq!(fx.state(), &promoting());

    // Or it had not: retried soon (RACE_RETRY), not after a loop_wait.
    let mut fx = racing();
    fx.fail(ActionKind::AcquireLeader);
    assert_eq!(fx.tick(99), vec![]);
    assert_eq!(fx.tick(100), vec![acquire()]);
}

#[test]
fn a_candidate_keeps_its_member_key_fresh() {
    let mut fx = racing();
    assert_eq!(
        fx.tick(1_000),
        vec![Action::Keepalive { lease: L }, Action::Probe]
    );
    let moved = PgState {
        received_lsn: Some(Lsn(0x200_0100)),
        ..pg_standby(Some("b"))
    };
    let actions = fx.probed(moved);
    assert_eq!(actions, vec![publish(fx.me())]);
    assert_eq!(fx.me().role, MemberRole::Replica);
    assert_eq!(fx.me().received_lsn, Some(Lsn(0x200_0100)));
}

#[test]
fn clean_handover_end_to_end() {
    // b leads; a and c stream from it. status at b's last position.
    let checkpoint = 0x200_0100;
    let before = || {
        view()
            .leader("b", 3)
            .primary("b")
            .replica("a")
            .received("a", 0x200_0000)
            .replica("c")
            .received("c", 0x200_0000)
            .status(0x200_0000)
    };
    let mut a = Fx::new(State::Replica, before(), pg_standby(Some("b"))).lease();
    let got_checkpoint = PgState {
        received_lsn: Some(Lsn(checkpoint)),
        ..pg_standby(Some("b"))
    };
    let mut c = Fx::named("c", State::Replica, before(), got_checkpoint.clone()).lease();
    // SIGTERM on b: it stops, its member key says so; a probes fast.
    let stopping = || {
        before()
            .revision(11)
            .with("b", |m| m.state = MemberState::Stopping)
    };
    assert_eq!(a.view(stopping()), vec![]);
    assert_eq!(a.tick(100), vec![Action::Probe]);
    assert_eq!(a.probed(got_checkpoint), vec![publish(a.me())]);
    a.done(ActionKind::PublishMember, Reply::Done);
    // b saw a past its checkpoint and revoked its lease: key and member
    // key gone at once. Both standbys have the checkpoint.
    let released = || {
        view()
            .revision(13)
            .replica("a")
            .received("a", checkpoint)
            .replica("c")
            .received("c", checkpoint)
            .status(0x200_0000)
    };
    // c defers to a (same position, same priority, lower name) ...
    assert_eq!(through_vacancy(&mut c, released(), None), vec![]);
    assert_eq!(c.state(), &State::Replica);
    // ... a takes the key once the answers are in.
    assert_eq!(through_vacancy(&mut a, released(), None), vec![acquire()]);
    let actions = a.done(ActionKind::AcquireLeader, Reply::Won { revision: 14 });
    assert_eq!(actions, vec![Action::Promote, publish(a.me())]);
    a.done(ActionKind::PublishMember, Reply::Done);
    let a_leads = || {
        view()
            .revision(14)
            .leader("a", L)
            .primary("a")
            .replica("c")
            .received("c", checkpoint)
            .status(0x200_0000)
    };
    assert_eq!(a.view(a_leads()), vec![]);
    // (The member key already says primary, running.)
    assert_eq!(
        a.done(ActionKind::Promote, Reply::Done),
        vec![Action::Probe]
    );
    let new_primary = PgState {
        timeline: Some(2),
        wal_lsn: Some(Lsn(checkpoint + 0x100)),
        ..pg_primary()
    };
    let status = Action::PublishStatus(StatusKey {
        lsn: Lsn(checkpoint + 0x100),
        timeline: 2,
    });
    let actions = a.probed(new_primary);
    assert_eq!(actions, vec![status, Action::Checkpoint, publish(a.me())]);
    assert!(a.ha.holds_leader(a.now));
    // c follows the new primary as soon as its key shows up.
    assert_eq!(
        c.view(a_leads()),
        vec![Action::ConfigureStandby {
            upstream: upstream("a"),
            slot: "c".into()
        }]
    );
}

/// A member whose agent answers while its PostgreSQL still starts may be
/// further ahead: the candidate waits for it, but at most one ttl after it
/// first saw the vacancy.
#[test]
fn a_member_still_starting_holds_the_race_for_at_most_one_ttl() {
    let starting = PolledPosition {
        running: true,
        in_recovery: None,
        received_lsn: None,
        replayed_lsn: None,
    };
    let polled = |v: &V| {
        let mut p = answers(&v.0);
        p.insert("c".into(), starting);
        p
    };
    let mut fx = following_b();
    let v = vacant(0x100_0000);
    let p = polled(&v);
    assert_eq!(through_vacancy(&mut fx, v, Some(p)), vec![]);
    assert_eq!(fx.state(), &State::Replica);
    // The same view again: no new question.
    assert_eq!(fx.view(vacant(0x100_0000)), vec![]);
    // A newer view within the ttl, c still starting: still waiting.
    fx.quiet_at(2_000);
    let v = vacant(0x100_0000).revision(12);
    let p = polled(&v);
    assert_eq!(through_vacancy(&mut fx, v, Some(p)), vec![]);
    // One ttl after the vacancy was first seen: c no longer holds us back.
    fx.quiet_at(HaConfig::default().ttl.as_millis() as u64 + 1);
    let v = vacant(0x100_0000).revision(13);
    let p = polled(&v);
    assert_eq!(through_vacancy(&mut fx, v, Some(p)), vec![acquire()]);
}
