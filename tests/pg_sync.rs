//! Synchronous replication against real PostgreSQL under real pgkeel
//! processes (issue 7): the synchronous standby is lost with and without
//! `synchronous_mode_strict`, and the sync set decides who may be promoted
//! (a switchover to a member outside it is refused; an empty set promotes
//! nobody).
//!
//! No timing is asserted except generous bounds on liveness. Needs root
//! (PostgreSQL then runs as `postgres`); skips loudly otherwise.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use procs::{http, refusal, ProcCluster};
use realpg::{exclusive, runtime, sql, wait_rows, writable_hosts};

/// The examples' `bootstrap.dcs.ttl`.
const TTL: Duration = Duration::from_secs(5);

const DATA: [&str; 2] = ["node1", "node2"];

/// The two-data-node + witness example with `synchronous_mode: on` (and
/// whatever `tune` sets on both data nodes), started and streaming.
fn sync_cluster(
    tune: &[(&str, &str)],
) -> (
    ProcCluster,
    String,
    std::collections::BTreeMap<String, String>,
) {
    let mut c = ProcCluster::from_example("two-plus-witness");
    for file in DATA {
        c.set_config_line(file, "synchronous_mode", "true");
        for (k, v) in tune {
            c.set_config_line(file, k, v);
        }
    }
    c.start_all();
    let (leader, hosts) = c.wait_streaming(2, Duration::from_secs(90));
    (c, leader, hosts)
}

/// `GET /cluster` through `file`'s REST API.
fn cluster(c: &ProcCluster, file: &str) -> Option<serde_json::Value> {
    let (code, body) = http(&c.rest_address(file), "GET", "/cluster", &[], "")?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Waits until `/cluster` (through `via`) satisfies `ok`; panics with the
/// last answer and the logs after `within`.
fn wait_cluster(
    c: &ProcCluster,
    via: &str,
    what: &str,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some(v) = cluster(c, via) {
            if ok(&v) {
                return v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}; /cluster said {last:#?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn role_of(v: &serde_json::Value, name: &str) -> String {
    v["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .and_then(|m| m["role"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn protection(v: &serde_json::Value) -> String {
    v["synchronous"]["protection"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The HTTP status of `path` on `file`'s REST API.
fn code(c: &ProcCluster, file: &str, path: &str) -> u16 {
    http(&c.rest_address(file), "GET", path, &[], "").map_or(0, |(code, _)| code)
}

/// Runs `insert` against `host` on its own thread; the receiver gets the
/// outcome when the commit returns.
fn insert_in_background(host: String, value: i64) -> mpsc::Receiver<Result<Vec<i64>, String>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = runtime();
        let _ = tx.send(sql(&rt, &host, &format!("insert into t values ({value})")));
    });
    rx
}

/// The synchronous standby dies. Not strict: writes continue, and the
/// cluster says they are unprotected (list, `/cluster`, the metric). Back,
/// it is synchronous again. Then strict: a commit waits while the standby
/// is gone and completes once it is back.
#[test]
fn a_lost_sync_standby_leaves_writes_unprotected_or_blocked_as_configured() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (mut c, leader, hosts) = sync_cluster(&[]);
    let lfile = c.file_of(&leader);
    let replica = hosts.keys().find(|n| **n != leader).unwrap().clone();
    let rfile = c.file_of(&replica);
    let rt = runtime();
    tracing::info!(
        leader,
        replica,
        "phase: wait for the replica to be synchronous"
    );
    let v = wait_cluster(
        &c,
        &lfile,
        "the replica as sync_standby",
        Duration::from_secs(30),
        |v| role_of(v, &replica) == "sync_standby" && protection(v) == "protected",
    );
    assert_eq!(v["synchronous"]["members"], serde_json::json!([replica]));
    assert_eq!(code(&c, &rfile, "/sync"), 200);
    assert_eq!(code(&c, &rfile, "/synchronous"), 200);
    assert_eq!(code(&c, &rfile, "/read-only-sync"), 200);
    assert_eq!(code(&c, &rfile, "/async"), 503);
    assert_eq!(code(&c, &rfile, "/quorum"), 503);
    assert_eq!(code(&c, &lfile, "/read-only-sync"), 200);
    assert_eq!(code(&c, &lfile, "/sync"), 503);
    let ssn = sql(
        &rt,
        &hosts[&leader],
        "select 1 from pg_stat_replication where sync_state = 'sync'",
    )
    .expect("pg_stat_replication");
    assert_eq!(ssn, vec![1], "PostgreSQL does not wait for the standby");
    sql(
        &rt,
        &hosts[&leader],
        "create table t (id bigint primary key)",
    )
    .unwrap();
    sql(&rt, &hosts[&leader], "insert into t values (1)").unwrap();

    tracing::info!("phase: not strict — kill the synchronous standby");
    c.kill_machine(&rfile);
    let done = insert_in_background(hosts[&leader].clone(), 2);
    let answer = done.recv_timeout(Duration::from_secs(60));
    assert!(
        matches!(answer, Ok(Ok(_))),
        "a write did not complete without the synchronous standby (not strict): {answer:?}\n{}",
        c.logs()
    );
    let v = wait_cluster(&c, &lfile, "unprotected", Duration::from_secs(30), |v| {
        protection(v) == "unprotected"
    });
    assert!(v["synchronous"]["no_failover"].is_string(), "{v:#}");
    let list = c.ctl_ok(&lfile, &["list"]);
    assert!(list.contains("writes are NOT protected"), "{list}");
    let (_, metrics) = http(&c.rest_address(&lfile), "GET", "/metrics", &[], "").unwrap();
    assert!(
        metrics.contains("pgkeel_synchronous_unprotected{")
            && metrics
                .lines()
                .any(|l| l.starts_with("pgkeel_synchronous_unprotected{") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert_eq!(writable_hosts(&rt, &hosts), vec![leader.clone()]);

    tracing::info!("phase: the standby returns and is synchronous again");
    c.start(&rfile);
    wait_cluster(
        &c,
        &lfile,
        "the replica synchronous again",
        Duration::from_secs(60),
        |v| role_of(v, &replica) == "sync_standby" && protection(v) == "protected",
    );
    wait_rows(&rt, &hosts[&replica], 2, &c);

    tracing::info!("phase: strict — kill the synchronous standby again");
    c.ctl_ok(
        &lfile,
        &[
            "edit-config",
            "-s",
            "synchronous_mode_strict=true",
            "--force",
        ],
    );
    wait_cluster(
        &c,
        &lfile,
        "strict in /cluster",
        Duration::from_secs(15),
        |v| v["synchronous"]["strict"] == true,
    );
    c.kill_machine(&rfile);
    let done = insert_in_background(hosts[&leader].clone(), 3);
    // The commit must still be waiting a while later (strict: no write
    // runs unprotected).
    let early = done.recv_timeout(Duration::from_secs(8));
    assert!(
        early.is_err(),
        "a commit returned without a synchronous standby in strict mode: {early:?}\n{}",
        c.logs()
    );
    let v = cluster(&c, &lfile).expect("/cluster");
    assert_ne!(protection(&v), "unprotected", "{v:#}");
    tracing::info!("phase: the standby returns; the waiting commit completes");
    c.start(&rfile);
    let late = done.recv_timeout(Duration::from_secs(90));
    assert!(
        matches!(late, Ok(Ok(_))),
        "the waiting commit did not complete once the standby was back: {late:?}\n{}",
        c.logs()
    );
    wait_rows(&rt, &hosts[&replica], 3, &c);
    let (now_leader, _) = c.wait_streaming(2, Duration::from_secs(60));
    assert_eq!(now_leader, leader, "a failover happened\n{}", c.logs());
}

/// Both data nodes tagged `nosync`: the sync set stays empty. A switchover
/// to the replica is refused ("candidate is not a synchronous standby"),
/// and when the primary dies nobody is promoted — the cluster says why —
/// until it comes back.
#[test]
fn only_the_sync_set_may_be_promoted_and_an_empty_one_promotes_nobody() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (mut c, leader, hosts) = sync_cluster(&[("nosync", "true")]);
    let lfile = c.file_of(&leader);
    let replica = hosts.keys().find(|n| **n != leader).unwrap().clone();
    let rfile = c.file_of(&replica);
    let rt = runtime();
    let v = wait_cluster(
        &c,
        &lfile,
        "an empty sync set",
        Duration::from_secs(30),
        |v| protection(v) == "unprotected",
    );
    assert_eq!(role_of(&v, &replica), "replica", "{v:#}");
    assert_eq!(code(&c, &rfile, "/async"), 200);
    assert_eq!(code(&c, &rfile, "/sync"), 503);

    tracing::info!("phase: a switchover to the async member is refused");
    let out = c.ctl(&lfile, &["switchover", "--candidate", &replica, "--force"]);
    let why = refusal(&out, "candidate is not a synchronous standby");
    assert!(why.contains(&replica), "{why}");
    let out = c.ctl(&lfile, &["failover", "--candidate", &replica, "--force"]);
    refusal(&out, "candidate is not a synchronous standby");
    assert_eq!(c.running_leader(&[]).map(|(l, _)| l), Some(leader.clone()));

    tracing::info!("phase: the primary dies; nobody may be promoted");
    c.kill_machine(&lfile);
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        assert!(
            writable_hosts(&rt, &hosts).is_empty(),
            "a member outside the sync set was promoted\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let v = cluster(&c, &rfile).expect("/cluster from the replica");
    assert!(
        v["synchronous"]["no_failover"]
            .as_str()
            .is_some_and(|s| s.contains("nobody is promoted")),
        "{v:#}"
    );
    let list = c.ctl_ok(&rfile, &["list"]);
    assert!(list.contains("nobody is promoted automatically"), "{list}");

    tracing::info!("phase: the old primary returns and leads again");
    c.start(&lfile);
    let (now_leader, _) = c.wait_streaming(2, Duration::from_secs(90));
    assert_eq!(now_leader, leader, "{}", c.logs());
}

/// Quorum mode on three data nodes: both replicas are quorum standbys
/// (`ANY 1` of the two), `/quorum` says so, and when the primary dies one
/// of them is promoted — having asked the other where it is — with every
/// acknowledged row.
#[test]
fn quorum_mode_promotes_a_standby_that_holds_every_acknowledged_commit() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let mut c = ProcCluster::from_example("three-node");
    for file in ["node1", "node2", "node3"] {
        c.set_config_line(file, "synchronous_mode", "quorum");
    }
    c.start_all();
    let (leader, hosts) = c.wait_streaming(3, Duration::from_secs(120));
    let lfile = c.file_of(&leader);
    let replicas: Vec<String> = hosts.keys().filter(|n| **n != leader).cloned().collect();
    let v = wait_cluster(
        &c,
        &lfile,
        "two quorum standbys",
        Duration::from_secs(45),
        |v| {
            replicas.iter().all(|r| role_of(v, r) == "quorum_standby")
                && protection(v) == "protected"
        },
    );
    assert_eq!(v["synchronous"]["quorum"], 1, "{v:#}");
    for r in &replicas {
        let file = c.file_of(r);
        assert_eq!(code(&c, &file, "/quorum"), 200, "{r}");
        assert_eq!(code(&c, &file, "/sync"), 503, "{r}");
        assert_eq!(code(&c, &file, "/read-only-sync"), 200, "{r}");
    }
    let list = c.ctl_ok(&lfile, &["list"]);
    assert!(
        list.contains("Synchronous mode: quorum — each commit on 1 of"),
        "{list}"
    );
    let rt = runtime();
    let ssn = sql(
        &rt,
        &hosts[&leader],
        "select count(*) from pg_stat_replication where sync_state = 'quorum'",
    )
    .unwrap();
    assert_eq!(ssn, vec![2], "PostgreSQL does not wait for ANY 1 of both");
    sql(
        &rt,
        &hosts[&leader],
        "create table t (id bigint primary key)",
    )
    .unwrap();
    for i in 1..=50 {
        sql(&rt, &hosts[&leader], &format!("insert into t values ({i})")).unwrap();
    }

    tracing::info!(leader, "phase: the primary's machine dies");
    c.kill_machine(&lfile);
    let new = c.wait_new_leader(&leader, &[&leader], Duration::from_secs(60));
    assert!(replicas.contains(&new), "{new}");
    wait_rows(&rt, &hosts[&new], 50, &c);
    let rest: std::collections::BTreeMap<String, String> = hosts
        .iter()
        .filter(|(n, _)| **n != leader)
        .map(|(n, h)| (n.clone(), h.clone()))
        .collect();
    assert_eq!(writable_hosts(&rt, &rest), vec![new.clone()]);
}
