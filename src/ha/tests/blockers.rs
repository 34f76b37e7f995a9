//! Why nobody takes the vacant leader key: `promotion_blockers`,
//! `no_leader` and a replica's own `vacancy_blocker`, as tables.

use super::*;

/// A position within the default `maximum_lag_on_failover` of [`STATUS`].
const POS: u64 = 0x200_0000;
/// The `status` key's position in these cases.
const STATUS: u64 = 0x200_0100;

fn nofailover(m: &mut MemberInfo) {
    m.tags.nofailover = true;
}

fn never(m: &mut MemberInfo) {
    m.tags.failover_priority = 0;
}

fn reasons(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(m, r)| (m.to_string(), r.to_string()))
        .collect()
}

#[test]
fn promotion_blockers_table() {
    // (case, view, every member's reason, the line shown when nobody leads)
    type Case = (&'static str, V, Vec<(String, String)>, Option<&'static str>);
    let streaming = |v: V, name: &str| v.replica(name).received(name, POS);
    let cases: Vec<Case> = vec![
        (
            "a streaming standby within the lag: may be promoted",
            streaming(view().status(STATUS), "b"),
            vec![],
            None,
        ),
        (
            "the only standby is tagged nofailover",
            streaming(view().status(STATUS), "b").with("b", nofailover),
            reasons(&[("b", "tagged nofailover")]),
            Some("no member may be promoted — b: tagged nofailover"),
        ),
        (
            "failover_priority 0 is never",
            streaming(view(), "b").with("b", never),
            reasons(&[("b", "tagged failover_priority 0")]),
            Some("no member may be promoted — b: tagged failover_priority 0"),
        ),
        (
            "nofailover wins over a priority",
            streaming(view(), "b").with("b", |m| {
                m.tags.nofailover = true;
                m.tags.failover_priority = 5;
            }),
            reasons(&[("b", "tagged nofailover")]),
            Some("no member may be promoted — b: tagged nofailover"),
        ),
        (
            "one blocked, one free: the free one takes it, nothing to say",
            streaming(streaming(view().status(STATUS), "b"), "c").with("b", nofailover),
            reasons(&[("b", "tagged nofailover")]),
            None,
        ),
        (
            "stopped, and creating a replica",
            view()
                .member("b", member("b", MemberRole::Replica, MemberState::Stopped))
                .member(
                    "c",
                    member("c", MemberRole::Uninitialized, MemberState::CreatingReplica),
                ),
            reasons(&[
                ("b", "not running (stopped)"),
                ("c", "not running (creating replica)"),
            ]),
            Some(
                "no member may be promoted — b: not running (stopped); \
                 c: not running (creating replica)",
            ),
        ),
        (
            "a running server whose key says primary",
            view().primary("b"),
            reasons(&[("b", "not a standby (its key says primary)")]),
            Some("no member may be promoted — b: not a standby (its key says primary)"),
        ),
        (
            "too far behind the status key",
            streaming(view().status(POS + 2 * 1_048_576), "b"),
            reasons(&[(
                "b",
                "2097152 bytes behind the last primary position, more than \
                 maximum_lag_on_failover",
            )]),
            Some(
                "no member may be promoted — b: 2097152 bytes behind the last primary \
                 position, more than maximum_lag_on_failover",
            ),
        ),
        (
            "up but no position published",
            view().replica("b"),
            reasons(&[("b", "reports no WAL position")]),
            Some("no member may be promoted — b: reports no WAL position"),
        ),
        (
            "maintenance mode: every otherwise fit member says so",
            {
                let mut v = streaming(streaming(view(), "b"), "c").with("c", nofailover);
                v.0.config.pause = true;
                v
            },
            reasons(&[("b", "maintenance mode is on"), ("c", "tagged nofailover")]),
            Some("no member may be promoted — b: maintenance mode is on; c: tagged nofailover"),
        ),
        (
            "a leader holds the key: reasons, but no line",
            streaming(view().leader("a", 3).primary("a"), "b").with("b", nofailover),
            reasons(&[
                ("a", "not a standby (its key says primary)"),
                ("b", "tagged nofailover"),
            ]),
            None,
        ),
        (
            "no data member left",
            view(),
            vec![],
            Some("no data member is running pgkeel"),
        ),
        (
            "not bootstrapped yet: nothing to explain",
            streaming(view().empty_cluster(), "b").with("b", nofailover),
            reasons(&[("b", "tagged nofailover")]),
            None,
        ),
    ];
    for (case, v, want, line) in cases {
        let view: ClusterView = v.into();
        assert_eq!(promotion_blockers(&view), want, "{case}");
        let got = no_leader(&view);
        assert_eq!(got.as_ref().map(|n| n.reason.as_str()), line, "{case}");
        if let Some(n) = got {
            assert_eq!(n.blockers, want, "{case}: the blockers come along");
        }
    }
}

#[test]
fn a_replica_says_why_it_does_not_take_the_vacant_key() {
    let fit = MemberTags::default();
    let tagged = MemberTags {
        nofailover: true,
        ..fit
    };
    let zero = MemberTags {
        failover_priority: 0,
        ..fit
    };
    let vacant = || view().status(0x200_0000).replica("b").received("b", 1);
    // (case, our tags, view, our server, what we say)
    let cases: Vec<(&str, MemberTags, V, PgState, Option<&str>)> = vec![
        (
            "tagged nofailover",
            tagged,
            vacant(),
            pg_standby(None),
            Some("tagged nofailover"),
        ),
        (
            "failover_priority 0",
            zero,
            vacant(),
            pg_standby(None),
            Some("tagged failover_priority 0"),
        ),
        (
            "too far behind",
            fit,
            vacant().status(0x200_0000 + 4 * 1_048_576),
            pg_standby(None),
            Some(
                "4194304 bytes behind the last primary position, more than \
                 maximum_lag_on_failover",
            ),
        ),
        (
            "fit: it races, nothing to say",
            fit,
            vacant(),
            pg_standby(None),
            None,
        ),
        (
            "a leader holds the key",
            tagged,
            vacant().leader("b", 3),
            pg_standby(Some("b")),
            None,
        ),
    ];
    for (case, tags, v, pg, want) in cases {
        let fx = Fx::new(State::Replica, v, pg).lease().tags(tags);
        assert_eq!(fx.ha.vacancy_blocker(fx.now).as_deref(), want, "{case}");
    }
    // Maintenance mode, and not a follower.
    let mut paused = vacant();
    paused.0.config.pause = true;
    let fx = Fx::new(State::Replica, paused, pg_standby(None)).lease();
    assert_eq!(
        fx.ha.vacancy_blocker(fx.now).as_deref(),
        Some("maintenance mode is on")
    );
    let racing = Fx::new(
        State::Candidate(CandidateStep::Polling),
        vacant(),
        pg_standby(None),
    )
    .lease()
    .tags(tagged);
    assert_eq!(racing.ha.vacancy_blocker(racing.now), None);
}
