//! Who may take the vacant leader key: `failover_eligibility` as a table.

use super::*;

/// Our position in these cases (received = replayed).
const POS: u64 = 0x200_0000;
/// The default `maximum_lag_on_failover`.
const MAX_LAG: u64 = 1_048_576;

fn tagged(nofailover: bool, failover_priority: i64) -> MemberTags {
    MemberTags {
        nofailover,
        failover_priority,
        ..MemberTags::default()
    }
}

fn at_pos(received: Option<u64>, replayed: Option<u64>) -> PgState {
    PgState {
        received_lsn: received.map(Lsn),
        replayed_lsn: replayed.map(Lsn),
        ..pg_standby(None)
    }
}

fn outranked(by: &str) -> Result<(), Ineligible> {
    Err(Ineligible::Outranked { by: by.into() })
}

#[test]
fn eligibility_table() {
    let us = MemberTags::default();
    let standby = pg_standby(None);
    // (case, our name, our tags, our server, lease valid, view, verdict)
    type Case = (
        &'static str,
        &'static str,
        MemberTags,
        PgState,
        bool,
        V,
        Result<(), Ineligible>,
    );
    let cases: Vec<Case> = vec![
        // ---- the others ---------------------------------------------------
        (
            "alone, no status key",
            "a",
            us,
            standby.clone(),
            true,
            view(),
            Ok(()),
        ),
        (
            "the others are behind",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .received("b", POS - 1)
                .replica("c")
                .received("c", 1),
            Ok(()),
        ),
        (
            "another standby is ahead",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .received("b", POS - 1)
                .replica("c")
                .received("c", POS + 1),
            outranked("c"),
        ),
        (
            "further ahead beats a higher priority",
            "a",
            tagged(false, 9),
            standby.clone(),
            true,
            view().replica("b").received("b", POS + 1),
            outranked("b"),
        ),
        (
            "tie: the higher failover_priority wins (theirs)",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .received("b", POS)
                .with("b", |m| m.tags.failover_priority = 2),
            outranked("b"),
        ),
        (
            "tie: the higher failover_priority wins (ours)",
            "c",
            tagged(false, 2),
            standby.clone(),
            true,
            view().replica("b").received("b", POS),
            Ok(()),
        ),
        (
            "tie, same priority: the lower name wins (ours)",
            "a",
            us,
            standby.clone(),
            true,
            view().replica("b").received("b", POS),
            Ok(()),
        ),
        (
            "tie, same priority: the lower name wins (theirs)",
            "c",
            us,
            standby.clone(),
            true,
            view().replica("b").received("b", POS),
            outranked("b"),
        ),
        (
            "ahead but nofailover: never holds us back",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .received("b", POS + 1)
                .with("b", |m| m.tags.nofailover = true),
            Ok(()),
        ),
        (
            "ahead but failover_priority 0: never holds us back",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .received("b", POS + 1)
                .with("b", |m| m.tags.failover_priority = 0),
            Ok(()),
        ),
        (
            "ahead but not up",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .received("b", POS + 1)
                .with("b", |m| m.state = MemberState::Stopped),
            Ok(()),
        ),
        (
            "ahead but a primary (the old leader's key, still there)",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .primary("b")
                .with("b", |m| m.wal_lsn = Some(Lsn(POS + 1)))
                .received("b", POS + 1),
            Ok(()),
        ),
        (
            "up, but no published position",
            "a",
            us,
            standby.clone(),
            true,
            view().replica("b"),
            Ok(()),
        ),
        (
            "their replayed position counts when nothing was received",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .replica("b")
                .with("b", |m| m.replayed_lsn = Some(Lsn(POS + 1))),
            outranked("b"),
        ),
        (
            "our own (stale) member key is not a rival",
            "a",
            us,
            standby.clone(),
            true,
            view().replica("a").received("a", POS + 1),
            Ok(()),
        ),
        (
            "untrusted member name: compared, never a panic",
            "a",
            us,
            standby.clone(),
            true,
            view()
                .member(
                    "☃ \"x\"",
                    member("☃", MemberRole::Replica, MemberState::Running),
                )
                .received("☃ \"x\"", POS + 1),
            outranked("☃ \"x\""),
        ),
        // ---- ourselves ----------------------------------------------------
        (
            "tagged nofailover",
            "a",
            tagged(true, 1),
            standby.clone(),
            true,
            view(),
            Err(Ineligible::NoFailover),
        ),
        (
            "failover_priority 0",
            "a",
            tagged(false, 0),
            standby.clone(),
            true,
            view(),
            Err(Ineligible::NoFailover),
        ),
        (
            "our lease is not valid",
            "a",
            us,
            standby.clone(),
            false,
            view(),
            Err(Ineligible::NoLease),
        ),
        (
            "not running",
            "a",
            us,
            pg_stopped(),
            true,
            view(),
            Err(Ineligible::NotAStandby),
        ),
        (
            "running as a primary",
            "a",
            us,
            pg_primary(),
            true,
            view(),
            Err(Ineligible::NotAStandby),
        ),
        (
            "running, recovery state unknown",
            "a",
            us,
            PgState {
                in_recovery: None,
                ..pg_standby(None)
            },
            true,
            view(),
            Err(Ineligible::NotAStandby),
        ),
        (
            "no position at all",
            "a",
            us,
            at_pos(None, None),
            true,
            view(),
            Err(Ineligible::NoPosition),
        ),
        // ---- the status key ------------------------------------------------
        (
            "exactly maximum_lag behind status: eligible",
            "a",
            us,
            standby.clone(),
            true,
            view().status(POS + MAX_LAG),
            Ok(()),
        ),
        (
            "beyond maximum_lag behind status: never",
            "a",
            us,
            standby.clone(),
            true,
            view().status(POS + MAX_LAG + 1),
            Err(Ineligible::Lagging { lag: MAX_LAG + 1 }),
        ),
        (
            "ahead of a stale status key",
            "a",
            us,
            standby.clone(),
            true,
            view().status(POS - 5),
            Ok(()),
        ),
        (
            "our replayed position counts when nothing was received",
            "a",
            us,
            at_pos(None, Some(POS)),
            true,
            view().status(POS + MAX_LAG),
            Ok(()),
        ),
        (
            "the further of received and replayed counts",
            "a",
            us,
            at_pos(Some(POS - MAX_LAG), Some(POS)),
            true,
            view().status(POS + MAX_LAG),
            Ok(()),
        ),
        (
            "lagging, even when no one else is there to take over",
            "a",
            us,
            at_pos(Some(1), Some(1)),
            true,
            view().status(POS),
            Err(Ineligible::Lagging { lag: POS - 1 }),
        ),
    ];
    for (case, me, tags, pg, lease_valid, v, want) in cases {
        let got = failover_eligibility(me, tags, &pg, lease_valid, &v.0, None);
        assert_eq!(got, want, "{case}");
    }
}

#[test]
fn standby_position_is_the_further_of_received_and_replayed() {
    let l = |n| Some(Lsn(n));
    assert_eq!(standby_position(None, None), None);
    assert_eq!(standby_position(l(5), None), l(5));
    assert_eq!(standby_position(None, l(5)), l(5));
    assert_eq!(standby_position(l(7), l(5)), l(7));
    assert_eq!(standby_position(l(5), l(7)), l(7));
}

#[test]
fn untagged_members_may_fail_over() {
    // The config file's default priority is 1, not 0 (never).
    assert!(MemberTags::default().may_fail_over());
    assert_eq!(MemberTags::default().failover_priority, 1);
}

/// With the members' answers to the position question, the answers decide
/// who outranks whom; a member that did not answer, or answered as
/// anything but a running standby, is no contender.
#[test]
fn polled_answers_replace_published_positions() {
    use std::collections::BTreeMap;
    let standby = at_pos(Some(POS), Some(POS));
    let answer = |running, in_recovery, lsn| PolledPosition {
        running,
        in_recovery,
        received_lsn: Some(Lsn(lsn)),
        replayed_lsn: Some(Lsn(lsn)),
    };
    // b's key says it is far behind; c's that it is far ahead.
    let v = view()
        .replica("b")
        .received("b", POS - 100)
        .replica("c")
        .received("c", POS + 100);
    type Case = (
        &'static str,
        Vec<(&'static str, PolledPosition)>,
        Result<(), Ineligible>,
    );
    let cases: Vec<Case> = vec![
        ("nobody answered: no contender", vec![], Ok(())),
        (
            "b answered ahead of us (its key is stale)",
            vec![("b", answer(true, Some(true), POS + 1))],
            Err(Ineligible::Outranked { by: "b".into() }),
        ),
        (
            "c answered behind us (its key is stale)",
            vec![("c", answer(true, Some(true), POS - 1))],
            Ok(()),
        ),
        (
            "c answered ahead but stopped",
            vec![("c", answer(false, None, POS + 1))],
            Ok(()),
        ),
        (
            "c answered ahead but as a primary",
            vec![("c", answer(true, Some(false), POS + 1))],
            Ok(()),
        ),
        (
            "c answered as far as us: the lower name wins, that is us",
            vec![("c", answer(true, Some(true), POS))],
            Ok(()),
        ),
        (
            "a stranger's answer (no member key) counts for nothing",
            vec![("zed", answer(true, Some(true), POS + 1))],
            Ok(()),
        ),
    ];
    for (case, answers, want) in cases {
        let polled: BTreeMap<String, PolledPosition> = answers
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect();
        let got = failover_eligibility(
            "a",
            MemberTags::default(),
            &standby,
            true,
            &v.0,
            Some(&polled),
        );
        assert_eq!(got, want, "{case}");
    }
}
