//! Online Raft membership change through `pgkeelctl member add|remove`, as
//! an operator runs it, against real processes of the two-plus-witness
//! example: a third data node joins (cloning and streaming from the
//! primary) and leaves again; the witness is replaced; every refusal
//! (unauthenticated, bad or duplicate arguments, unreachable node, the
//! primary, too few voters left) exits 1 with its reason.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;

use std::time::{Duration, Instant};

use procs::{stderr, stdout, ProcCluster};
use realpg::{exclusive, sql, two_plus_witness_streaming, wait_rows};
use serde_json::Value;

/// The example's voters, `(name, kind)`.
const ORIGINAL: [(&str, &str); 3] = [
    ("node1", "data"),
    ("node2", "data"),
    ("witness1", "witness"),
];

/// Asserts that `raft status` through `via` shows exactly these voters
/// `(name, kind)`, in order, and no learner.
fn assert_voters(c: &ProcCluster, via: &str, want: &[(&str, &str)]) {
    let status = c.status(via).expect("raft status answers");
    let voters: Vec<(&str, &str)> = status["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default(),
                v["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(voters, want, "{status}");
    assert_eq!(status["learners"], serde_json::json!([]), "{status}");
}

/// A running node that is not the Raft leader, so the call is forwarded.
fn follower(c: &ProcCluster, among: &[&str]) -> String {
    let status = c.status(among[0]).expect("raft status");
    let leader = status["leader"]["name"].as_str().unwrap_or_default();
    among
        .iter()
        .map(|n| n.to_string())
        .find(|n| c.file_of(leader) != *n)
        .expect("a follower")
}

/// Waits until `file`'s log holds `words`.
fn wait_log(c: &ProcCluster, file: &str, words: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !std::fs::read_to_string(&c.nodes[file].log)
        .unwrap_or_default()
        .contains(words)
    {
        assert!(
            Instant::now() < deadline,
            "{file}'s log never said {words:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pgkeelctl ARGS` through `via` must be refused with `words`.
fn refused(c: &ProcCluster, via: &str, args: &[&str], words: &str) {
    procs::refusal(&c.ctl(via, args), words);
}

#[test]
fn a_third_data_node_joins_streams_and_leaves_again() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut c, leader, hosts) = two_plus_witness_streaming();
    c.wait_healthy(Duration::from_secs(30));
    sql(
        &rt,
        &hosts[&leader],
        "create table t(x int); insert into t select generate_series(1, 50)",
    )
    .expect("rows on the primary");

    tracing::info!("phase: a call without the secret is refused");
    let out = c.ctl_anonymous("node1", &["member", "remove", "witness1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("needs the cluster's raft.secret"),
        "{}",
        stderr(&out)
    );
    let out = c.ctl(
        "node1",
        &[
            "--secret",
            "not-the-secret-at-all",
            "member",
            "remove",
            "witness1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("wrong token"), "{}", stderr(&out));

    let addr3 = c.add_joining_node("node3", "node2", 4);
    let add3 = [
        "member",
        "add",
        "node3",
        "--id",
        "4",
        "--address",
        addr3.as_str(),
    ];

    tracing::info!("phase: refusals while node3 is not running yet");
    let ep1 = c.nodes["node1"].endpoint.clone();
    let replica = hosts
        .keys()
        .find(|n| **n != leader)
        .expect("a replica")
        .clone();
    let primary_words = format!("member {leader} is the primary: switch over first");
    let add = |name: &'static str, id: &'static str, address: &str| {
        ["member", "add", name, "--id", id, "--address"]
            .into_iter()
            .map(str::to_string)
            .chain([address.to_string()])
            .collect::<Vec<String>>()
    };
    let remove = |name: &str| vec!["member".to_string(), "remove".into(), name.to_string()];
    // (through, arguments, words of the refusal)
    let refusals: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "node1",
            add("node3", "4", &addr3),
            "cannot reach the new node node3",
        ),
        ("node1", add("node3", "0", &addr3), "above 0"),
        (
            "node1",
            add("node3", "2", &addr3),
            "node id 2 is already node2",
        ),
        (
            "node2",
            add("node2", "4", &addr3),
            "name node2 is already taken",
        ),
        ("witness", add("node3", "4", &ep1), "is already node 1"),
        ("node1", add("node3", "4", "node3"), "not host:port"),
        ("node1", remove("node9"), "node9 is not a Raft member"),
        ("node2", remove(&leader), &primary_words),
        ("node1", remove("witness1"), "would leave 2 voters"),
        ("node1", remove(&replica), "add its replacement first"),
    ];
    for (via, args, words) in &refusals {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&c, via, &args, words);
    }

    tracing::info!("phase: node3 starts with raft.join and waits, forming nothing");
    c.start("node3");
    wait_log(&c, "node3", "waiting to be added", Duration::from_secs(30));
    let alone = c.status("node3").expect("node3 answers raft status");
    assert_eq!(
        alone["cluster_id"], "",
        "a joining node never forms a cluster: {alone}"
    );
    assert!(
        alone["voters"].as_array().is_some_and(|v| v.is_empty()),
        "{alone}"
    );
    // The node at the address must be the one named.
    refused(
        &c,
        "node1",
        &["member", "add", "node4", "--id", "5", "--address", &addr3],
        "is node3 (id 4), not node4 (id 5)",
    );

    tracing::info!("phase: member add through a follower (forwarded to the Raft leader)");
    let via = follower(&c, &["node1", "node2", "witness"]);
    let said = c.ctl_ok(&via, &add3);
    assert!(
        said.contains("node3@") && said.contains("is a voter"),
        "{said}"
    );
    assert!(
        said.contains("voters: ") && said.contains("node3"),
        "{said}"
    );
    refused(&c, "node1", &add3, "already a voter");
    assert_voters(&c, "node1", &[&ORIGINAL[..], &[("node3", "data")]].concat());
    wait_log(&c, "node3", "now a Raft voter", Duration::from_secs(10));

    tracing::info!("phase: node3 clones from the primary and streams");
    let (still, hosts3) = c.wait_streaming(3, Duration::from_secs(90));
    assert_eq!(still, leader, "adding a member does not move the primary");
    wait_rows(&rt, &hosts3["node3"], 50, &c);
    let table = c.ctl_ok("node3", &["raft", "status"]);
    assert_eq!(
        table.lines().count(),
        6,
        "a head line, the header and four voters:\n{table}"
    );

    tracing::info!("phase: member remove node3");
    let said = c.ctl_ok("node1", &["member", "remove", "node3"]);
    assert!(
        said.contains("node3 (data node, id 4) is no longer a member"),
        "{said}"
    );
    assert_voters(&c, "node1", &ORIGINAL);
    wait_log(
        &c,
        "node3",
        "(pgkeelctl member remove)",
        Duration::from_secs(10),
    );
    refused(
        &c,
        "node1",
        &["member", "remove", "node3"],
        "node3 is not a Raft member",
    );

    tracing::info!("phase: node3 stops; the cluster keeps its primary and commits writes");
    c.sigterm("node3");
    let (after, _) = c.wait_streaming(2, Duration::from_secs(60));
    assert_eq!(after, leader);
    c.put_eventually(
        "witness",
        "probe/after-remove",
        "ok",
        Duration::from_secs(10),
    );
    assert_eq!(
        c.get("node2", "probe/after-remove", true).expect("read"),
        Some("ok".to_string())
    );
    c.wait_healthy_among(&["node1", "node2", "witness"], Duration::from_secs(30));
}

#[test]
fn the_witness_is_replaced_online() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (mut c, leader, _hosts) = two_plus_witness_streaming();
    c.wait_healthy(Duration::from_secs(30));

    tracing::info!("phase: witness2 joins and is added as a witness");
    let addr = c.add_joining_node("witness2", "witness", 4);
    c.start("witness2");
    wait_log(
        &c,
        "witness2",
        "waiting to be added",
        Duration::from_secs(30),
    );
    let json = c.ctl_ok(
        "node1",
        &[
            "--format",
            "json",
            "member",
            "add",
            "witness2",
            "--id",
            "4",
            "--address",
            &addr,
            "--witness",
        ],
    );
    let doc: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(doc["voters"].as_array().map(Vec::len), Some(4), "{doc}");

    tracing::info!("phase: witness1 is removed, then its process killed");
    let via = follower(&c, &["node1", "node2", "witness2"]);
    let said = c.ctl_ok(&via, &["member", "remove", "witness1"]);
    assert!(
        said.contains("witness1 (witness, id 3) is no longer a member"),
        "{said}"
    );
    c.kill9("witness");
    assert_voters(
        &c,
        "node2",
        &[
            ("node1", "data"),
            ("node2", "data"),
            ("witness2", "witness"),
        ],
    );
    c.wait_healthy_among(&["node1", "node2", "witness2"], Duration::from_secs(30));

    tracing::info!(
        "phase: with the replica's pgkeel stopped too, the primary and witness2 are a quorum"
    );
    let replica = ["node1", "node2"]
        .into_iter()
        .find(|n| c.file_of(&leader) != *n)
        .expect("a replica");
    c.sigterm(replica);
    let primary = c.file_of(&leader);
    c.put_eventually(
        &primary,
        "probe/after-replace",
        "ok",
        Duration::from_secs(20),
    );
    assert_eq!(
        c.get("witness2", "probe/after-replace", true)
            .expect("linearizable read through witness2"),
        Some("ok".to_string())
    );
    assert_eq!(
        c.running_leader(&[]).map(|(name, _)| name),
        Some(leader),
        "the primary keeps its lease with the new witness"
    );
}
