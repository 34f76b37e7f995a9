//! Table-driven tests of the membership change rules.

use std::collections::BTreeSet;

use super::rules::{check_add, check_new_node, check_remove, AddPlan, Entry, Refusal, Roster};
use crate::consensus::peer::HelloInfo;
use crate::consensus::types::Member;

fn member(name: &str, port: u16, witness: bool) -> Member {
    Member {
        name: name.into(),
        addr: format!("127.0.0.1:{port}"),
        witness,
    }
}

/// node1, node2 (data) and witness1 as voters, plus `extra`.
fn roster(extra: &[(u64, &str, bool, bool)]) -> Roster {
    let mut entries = vec![
        Entry {
            id: 1,
            member: member("node1", 7001, false),
            voter: true,
        },
        Entry {
            id: 2,
            member: member("node2", 7002, false),
            voter: true,
        },
        Entry {
            id: 3,
            member: member("witness1", 7003, true),
            voter: true,
        },
    ];
    for (id, name, witness, voter) in extra {
        entries.push(Entry {
            id: *id,
            member: member(name, 7000 + *id as u16, *witness),
            voter: *voter,
        });
    }
    Roster {
        entries,
        joint: false,
    }
}

/// Which kind of answer, and words its sentence must hold.
#[derive(Debug)]
enum Want {
    Ok,
    Invalid(&'static str),
    Precondition(&'static str),
    NotFound(&'static str),
}

fn matches<T: std::fmt::Debug>(got: &Result<T, Refusal>, want: &Want) -> bool {
    match (got, want) {
        (Ok(_), Want::Ok) => true,
        (Err(Refusal::Invalid(s)), Want::Invalid(w))
        | (Err(Refusal::Precondition(s)), Want::Precondition(w))
        | (Err(Refusal::NotFound(s)), Want::NotFound(w)) => s.contains(w),
        _ => false,
    }
}

#[test]
fn adds() {
    let joint = Roster {
        joint: true,
        ..roster(&[])
    };
    let learner = roster(&[(4, "node3", false, false)]);
    // (case, roster, id, new member, expected)
    let cases: Vec<(&str, Roster, u64, Member, Want)> = vec![
        (
            "a new data node",
            roster(&[]),
            4,
            member("node3", 7004, false),
            Want::Ok,
        ),
        (
            "a new witness",
            roster(&[]),
            4,
            member("witness2", 7004, true),
            Want::Ok,
        ),
        (
            "id 0",
            roster(&[]),
            0,
            member("node3", 7004, false),
            Want::Invalid("above 0"),
        ),
        (
            "bad name",
            roster(&[]),
            4,
            member("node 3", 7004, false),
            Want::Invalid("may only contain"),
        ),
        (
            "empty name",
            roster(&[]),
            4,
            member("", 7004, false),
            Want::Invalid("is empty"),
        ),
        (
            "address without port",
            roster(&[]),
            4,
            Member {
                addr: "node3".into(),
                ..member("node3", 1, false)
            },
            Want::Invalid("not host:port"),
        ),
        (
            "duplicate id",
            roster(&[]),
            2,
            member("node3", 7004, false),
            Want::Precondition("node id 2 is already node2"),
        ),
        (
            "duplicate name",
            roster(&[]),
            4,
            member("node2", 7004, false),
            Want::Precondition("name node2 is already taken"),
        ),
        (
            "duplicate address",
            roster(&[]),
            4,
            member("node3", 7002, false),
            Want::Precondition("address 127.0.0.1:7002 is already node 2"),
        ),
        (
            "already a voter",
            roster(&[]),
            3,
            member("witness1", 7003, true),
            Want::Precondition("already a voter"),
        ),
        (
            "a change is being committed",
            joint,
            4,
            member("node3", 7004, false),
            Want::Precondition("still being committed"),
        ),
        (
            "a learner with another identity",
            learner.clone(),
            4,
            member("node9", 7004, false),
            Want::Precondition("node id 4 is already node3"),
        ),
    ];
    for (case, roster, id, new, want) in cases {
        let got = check_add(&roster, id, &new);
        assert!(matches(&got, &want), "{case}: got {got:?}, want {want:?}");
    }
    assert_eq!(
        check_add(&roster(&[]), 4, &member("node3", 7004, false)),
        Ok(AddPlan::New)
    );
    assert_eq!(
        check_add(&learner, 4, &member("node3", 7004, false)),
        Ok(AddPlan::Resume),
        "the same learner again resumes a cut-short add"
    );
}

fn hello(id: u64, name: &str, cluster: &str, initialized: bool) -> Result<HelloInfo, String> {
    Ok(HelloInfo {
        node_id: id,
        name: name.into(),
        cluster_id: cluster.into(),
        initialized,
        state: "learner".into(),
        term: 0,
        last_log_index: 0,
        current_leader: None,
    })
}

#[test]
fn the_new_node_must_be_the_one_named_and_not_of_another_cluster() {
    let new = member("node3", 7004, false);
    let cases: Vec<(&str, Result<HelloInfo, String>, Want)> = vec![
        ("pristine", hello(4, "node3", "", false), Want::Ok),
        (
            "ours already (a rolled-back add)",
            hello(4, "node3", "c-1", true),
            Want::Ok,
        ),
        (
            "unreachable",
            Err("unreachable: connection refused".into()),
            Want::Precondition("cannot reach the new node node3"),
        ),
        (
            "another id",
            hello(5, "node3", "", false),
            Want::Precondition("is node3 (id 5), not node3 (id 4)"),
        ),
        (
            "another name",
            hello(4, "node9", "", false),
            Want::Precondition("check the address"),
        ),
        (
            "another cluster",
            hello(4, "node3", "c-2", true),
            Want::Precondition("never merged"),
        ),
        (
            "half-formed state",
            hello(4, "node3", "", true),
            Want::Precondition("wipe its raft.data_dir"),
        ),
    ];
    for (case, answer, want) in cases {
        let got = check_new_node(&answer, 4, &new, "c-1");
        assert!(matches(&got, &want), "{case}: got {got:?}, want {want:?}");
    }
}

/// (case, roster, name, leader key holder, reachable voters, expected)
type RemoveCase = (
    &'static str,
    Roster,
    &'static str,
    Option<&'static str>,
    BTreeSet<u64>,
    Want,
);

#[test]
fn removals() {
    let all: BTreeSet<u64> = (1..=6).collect();
    let four = roster(&[(4, "node3", false, true)]);
    let with_learner = roster(&[(4, "node3", false, false)]);
    let witnesses = Roster {
        entries: vec![
            Entry {
                id: 1,
                member: member("node1", 7001, false),
                voter: true,
            },
            Entry {
                id: 3,
                member: member("witness1", 7003, true),
                voter: true,
            },
            Entry {
                id: 4,
                member: member("witness2", 7004, true),
                voter: true,
            },
            Entry {
                id: 5,
                member: member("witness3", 7005, true),
                voter: true,
            },
        ],
        joint: false,
    };
    let cases: Vec<RemoveCase> = vec![
        (
            "a fourth voter",
            four.clone(),
            "node3",
            Some("node1"),
            all.clone(),
            Want::Ok,
        ),
        (
            "the old witness after a new one",
            roster(&[(4, "witness2", true, true)]),
            "witness1",
            Some("node1"),
            all.clone(),
            Want::Ok,
        ),
        (
            "a leftover learner",
            with_learner.clone(),
            "node3",
            None,
            all.clone(),
            Want::Ok,
        ),
        (
            "the primary",
            four.clone(),
            "node1",
            Some("node1"),
            all.clone(),
            Want::Precondition("member node1 is the primary: switch over first"),
        ),
        (
            "the primary as a learner",
            with_learner,
            "node3",
            Some("node3"),
            all.clone(),
            Want::Precondition("switch over first"),
        ),
        (
            "one of three voters",
            roster(&[]),
            "witness1",
            Some("node1"),
            all.clone(),
            Want::Precondition("would leave 2 voters (node1, node2)"),
        ),
        (
            "the last data node",
            witnesses,
            "node1",
            None,
            all.clone(),
            Want::Precondition("only witnesses"),
        ),
        (
            "the rest has no quorum",
            four.clone(),
            "node3",
            None,
            BTreeSet::from([1]),
            Want::Precondition("only 1 answer"),
        ),
        (
            "the rest barely has one",
            four.clone(),
            "node3",
            None,
            BTreeSet::from([1, 2]),
            Want::Ok,
        ),
        (
            "unknown",
            four.clone(),
            "node9",
            None,
            all.clone(),
            Want::NotFound("node9 is not a Raft member"),
        ),
        (
            "during a change",
            Roster {
                joint: true,
                ..four
            },
            "node3",
            None,
            all,
            Want::Precondition("still being committed"),
        ),
    ];
    for (case, roster, name, holder, reachable, want) in cases {
        let got = check_remove(&roster, name, holder, &reachable);
        assert!(matches(&got, &want), "{case}: got {got:?}, want {want:?}");
    }
}
