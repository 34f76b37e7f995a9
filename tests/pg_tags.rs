//! Patroni tags on real pgkeel processes with real PostgreSQL (issue 7):
//! a `nofailover` member never bootstraps the cluster and is never
//! promoted, even when it is the only one
//! left, and the cluster says why; `failover_priority` decides between
//! equally advanced replicas; a `noloadbalance` replica leaves the
//! `/replica` pool; free-form tags show in `list` and `/cluster`.
//!
//! No timing is asserted except generous bounds on liveness; the phases are
//! logged so a failure reads like a story, with every node's log tail.
//! Needs root (PostgreSQL then runs as `postgres`); skips loudly otherwise.

#[path = "common/haproxy.rs"]
#[allow(dead_code)]
mod haproxy;
#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;

use std::time::{Duration, Instant};

use procs::{http, ProcCluster};
use realpg::{exclusive, runtime, sql, writable};

/// The examples' `bootstrap.dcs.ttl`.
const TTL: Duration = Duration::from_secs(5);

/// The `tags` object of `member` in a `list -f json` or `/cluster` document.
fn tags_of(doc: &serde_json::Value, member: &str) -> serde_json::Value {
    doc["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == member))
        .map(|m| m["tags"].clone())
        .unwrap_or_default()
}

/// GET `path` on a node's REST API: the status code (0: no answer).
fn rest_code(c: &ProcCluster, file: &str, path: &str) -> u16 {
    http(&c.rest_address(file), "GET", path, &[], "").map_or(0, |(code, _)| code)
}

/// `/cluster` of a node's REST API, parsed.
fn cluster_doc(c: &ProcCluster, file: &str) -> Option<serde_json::Value> {
    let (code, body) = http(&c.rest_address(file), "GET", "/cluster", &[], "")?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// A member's WAL position in bytes: where the primary writes, or the
/// further of what a standby received and replayed.
fn position(rt: &tokio::runtime::Runtime, host: &str) -> Option<i64> {
    let q = "select pg_wal_lsn_diff(case when pg_is_in_recovery() \
             then greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
             else pg_current_wal_lsn() end, '0/0')::bigint";
    sql(rt, host, q).ok()?.first().copied()
}

/// node2 tagged `nofailover`, node1 the primary: with node1's agent and
/// postmaster killed, node2 is the only data member left and still never
/// takes the leader key or turns writable; `list`, `/cluster` and its log
/// say why. Free-form tags on node1 show in `list` and `/cluster`. Once
/// node1's agent is back, node1 leads again and node2 streams from it.
#[test]
fn a_nofailover_member_is_never_promoted_and_the_cluster_says_why() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let mut c = ProcCluster::from_example("two-plus-witness");
    c.set_tag("node2", "nofailover", "true");
    c.set_tag("node1", "zone", "eu-1");
    c.set_tag("node1", "weight", "3");
    tracing::info!("phase: start; node2 may never be promoted, so node1 bootstraps");
    c.start_all();
    let (leader, hosts) = c.wait_streaming(2, Duration::from_secs(90));
    assert_eq!(leader, "node1");

    tracing::info!("phase: tags as published");
    let list = c.list("node2").expect("list");
    assert_eq!(
        tags_of(&list, "node1"),
        serde_json::json!({"zone": "eu-1", "weight": 3}),
        "{list}"
    );
    assert_eq!(
        tags_of(&list, "node2"),
        serde_json::json!({"nofailover": true}),
        "{list}"
    );
    assert!(list["no_leader_reason"].is_null(), "{list}");
    let cluster = cluster_doc(&c, "node2").expect("/cluster");
    assert_eq!(
        tags_of(&cluster, "node1"),
        serde_json::json!({"zone": "eu-1", "weight": 3}),
        "{cluster}"
    );
    let table = c.ctl_ok("node2", &["list"]);
    assert!(
        table.contains("Tags") && table.contains(r#"{"weight":3,"zone":"eu-1"}"#),
        "{table}"
    );
    let (code, patroni) = http(&c.rest_address("node2"), "GET", "/patroni", &[], "").unwrap();
    assert_eq!(code, 200);
    let patroni: serde_json::Value = serde_json::from_str(&patroni).unwrap();
    assert_eq!(patroni["tags"]["nofailover"], true, "{patroni}");

    tracing::info!("phase: kill -9 node1's pgkeel and postmaster");
    assert!(
        c.postmaster_pid("node1").is_some(),
        "node1's postmaster runs"
    );
    c.kill_machine("node1");
    let killed = Instant::now();
    // node1's lease runs out within one TTL; then nobody may take the key
    // for three more.
    let mut said_list = None;
    let mut said_cluster = None;
    while killed.elapsed() < 4 * TTL {
        if let Ok(Some(holder)) = c.get("node2", "leader", false) {
            assert_eq!(
                holder,
                "node1",
                "node2 took the leader key although tagged nofailover\n{}",
                c.logs()
            );
        }
        assert!(
            !writable(&rt, &hosts["node2"]),
            "node2 accepts writes although tagged nofailover\n{}",
            c.logs()
        );
        let read_write = rest_code(&c, "node2", "/read-write");
        assert_ne!(read_write, 200, "node2 answers /read-write 200");
        if said_list.is_none() {
            said_list = c
                .list("node2")
                .and_then(|l| l["no_leader_reason"].as_str().map(str::to_string));
        }
        if said_cluster.is_none() {
            said_cluster = cluster_doc(&c, "node2")
                .and_then(|d| d["no_leader_reason"].as_str().map(str::to_string));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let want = "no member may be promoted — node2: tagged nofailover";
    assert_eq!(said_list.as_deref(), Some(want), "list\n{}", c.logs());
    assert_eq!(
        said_cluster.as_deref(),
        Some(want),
        "/cluster\n{}",
        c.logs()
    );
    let table = c.ctl_ok("node2", &["list"]);
    assert!(table.contains(&format!(" No leader: {want}")), "{table}");
    c.wait_log(
        "node2",
        &[
            "may not take it (tagged nofailover)",
            "node2: tagged nofailover",
        ],
        Duration::from_secs(1),
    );
    assert_eq!(
        sql(&rt, &hosts["node2"], "select pg_is_in_recovery()::int").ok(),
        Some(vec![1]),
        "node2 is no longer a standby"
    );

    tracing::info!("phase: node1's agent back: it leads again, node2 streams");
    c.start("node1");
    let (leader, _) = c.wait_streaming(2, Duration::from_secs(120));
    assert_eq!(leader, "node1");
    let list = c.list("node2").expect("list");
    assert!(list["no_leader_reason"].is_null(), "{list}");
}

/// Three data nodes, no writes: both replicas at the primary's position.
/// The replica whose name sorts later gets `failover_priority: 2` (the
/// name tie-break alone would pick the other) and `noloadbalance`: it
/// leaves the `/replica` pool while staying healthy, and when the primary
/// is killed it is the one promoted.
#[test]
fn failover_priority_decides_between_equal_replicas_and_noloadbalance_leaves_the_pool() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let mut c = ProcCluster::from_example("three-node");
    c.start_all();
    let (leader, hosts) = c.wait_streaming(3, Duration::from_secs(120));
    let mut replicas: Vec<String> = hosts.keys().filter(|n| **n != leader).cloned().collect();
    replicas.sort();
    let (first, later) = (replicas[0].clone(), replicas[1].clone());
    tracing::info!(
        leader,
        first,
        later,
        "phase: restart {later} with failover_priority 2 and noloadbalance"
    );
    c.sigterm(&later);
    c.set_tag(&later, "failover_priority", "2");
    c.set_tag(&later, "noloadbalance", "true");
    c.start(&later);
    let (still, _) = c.wait_streaming(3, Duration::from_secs(120));
    assert_eq!(still, leader);
    let list = c.list(&first).expect("list");
    assert_eq!(
        tags_of(&list, &later),
        serde_json::json!({"failover_priority": 2, "noloadbalance": true}),
        "{list}"
    );

    tracing::info!("phase: noloadbalance leaves /replica, not /health");
    assert_eq!(rest_code(&c, &later, "/replica"), 503);
    assert_eq!(rest_code(&c, &later, "/health"), 200);
    assert_eq!(rest_code(&c, &first, "/replica"), 200);

    tracing::info!("phase: both replicas at the primary's position");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let at: Vec<Option<i64>> = [&leader, &first, &later]
            .iter()
            .map(|n| position(&rt, &hosts[*n]))
            .collect();
        if at[0].is_some() && at.iter().all(|p| *p == at[0]) {
            tracing::info!(?at, "equal");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replicas never caught up: {at:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    tracing::info!(leader, "phase: kill -9 the primary's pgkeel and postmaster");
    assert!(
        c.postmaster_pid(&leader).is_some(),
        "the primary's postmaster runs"
    );
    c.kill_machine(&leader);
    let new = c.wait_new_leader(&leader, &[leader.as_str()], Duration::from_secs(60));
    assert_eq!(
        new,
        later,
        "{first} won although {later} has the higher failover_priority\n{}",
        c.logs()
    );
    // The other replica follows it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let follows = |list: serde_json::Value| {
        list["leader"] == later.as_str()
            && list["members"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["name"] == first.as_str() && m["state"] == "streaming")
            })
    };
    while !c.list(&first).is_some_and(follows) {
        assert!(
            Instant::now() < deadline,
            "{first} never streams from {later}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Both data nodes tagged `noloadbalance`: whichever is the replica fails
/// `/replica`, so HAProxy's read-only listener routes to nobody, while the
/// read-write one routes to the primary as always.
#[test]
fn haproxy_keeps_a_noloadbalance_replica_out_of_the_read_pool() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let Some(bin) = haproxy::binary() else {
        eprintln!("SKIP SKIP SKIP: haproxy is not installed (scripts/setup.sh installs it); the HAProxy test did not run");
        return;
    };
    let mut c = ProcCluster::from_example("two-plus-witness");
    for node in ["node1", "node2"] {
        c.set_tag(node, "noloadbalance", "true");
    }
    c.start_all();
    let (leader, hosts) = c.wait_streaming(2, Duration::from_secs(90));
    let replica = hosts
        .keys()
        .find(|n| **n != leader)
        .expect("a replica")
        .clone();
    assert_eq!(rest_code(&c, &replica, "/replica"), 503);
    assert_eq!(rest_code(&c, &replica, "/health"), 200);
    let h = haproxy::Haproxy::start(&c, "two-plus-witness", &bin);
    tracing::info!(
        leader,
        replica,
        "phase: HAProxy routes writes to the primary, reads nowhere"
    );
    h.wait_routes(&leader, &[], Duration::from_secs(20));
    let states = h.states();
    assert_eq!(
        states
            .get(&("replicas".to_string(), replica.clone()))
            .map(String::as_str),
        Some("DOWN"),
        "{states:?}"
    );
}
