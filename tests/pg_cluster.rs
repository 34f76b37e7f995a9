//! Real PostgreSQL under real pgkeel processes, from the example configs:
//! bootstrap to one primary + streaming replicas, rows replicate, a replica
//! stopped and restarted resumes from its slot without a re-clone, and a
//! SIGTERM'd primary hands over to a replica within about a second.
//!
//! Needs root (PostgreSQL then runs as `postgres`) or a PostgreSQL that the
//! current user can run; skips loudly otherwise.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;
#[path = "common/writeloop.rs"]
#[allow(dead_code)]
mod writeloop;

use std::time::{Duration, Instant};

use procs::ProcCluster;
use realpg::{exclusive, sql, two_plus_witness_streaming, wait_rows, SUPERUSER_PASSWORD};

fn clones(c: &ProcCluster, file: &str) -> usize {
    std::fs::read_to_string(&c.nodes[file].log)
        .unwrap_or_default()
        .matches("running pg_basebackup")
        .count()
}

fn bootstrap_replicate_restart_handover(example: &str, data_members: usize, reverse_start: bool) {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut c = ProcCluster::from_example(example);
    tracing::info!(example, "phase: start every node on empty data dirs");
    let mut order = c.names();
    if reverse_start {
        order.reverse();
    }
    for n in &order {
        c.start(n);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (leader, hosts) = c.wait_streaming(data_members, Duration::from_secs(90));
    tracing::info!(leader, "phase: one primary, every replica streaming");
    sql(
        &rt,
        &hosts[&leader],
        "create table t(x int); insert into t select generate_series(1, 100)",
    )
    .unwrap();
    for (name, host) in &hosts {
        wait_rows(&rt, host, 100, &c);
        tracing::info!(name, "has the rows");
    }

    let replica = hosts.keys().find(|n| **n != leader).unwrap().clone();
    let replica_file = c.file_of(&replica);
    tracing::info!(
        replica,
        "phase: stop a replica, write, start it again: it resumes from its slot"
    );
    c.sigterm(&replica_file);
    sql(
        &rt,
        &hosts[&leader],
        "insert into t select generate_series(101, 200)",
    )
    .unwrap();
    c.start(&replica_file);
    c.wait_streaming(data_members, Duration::from_secs(60));
    wait_rows(&rt, &hosts[&replica], 200, &c);
    assert_eq!(
        clones(&c, &replica_file),
        1,
        "the restarted replica was cloned again\n{}",
        c.logs()
    );

    let leader_file = c.file_of(&leader);
    let all_hosts: Vec<String> = hosts.values().cloned().collect();
    let dsn = writeloop::dsn(&all_hosts, SUPERUSER_PASSWORD);
    let writes = writeloop::WriteLoop::start(
        dsn.clone(),
        Duration::from_millis(10),
        100_000,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(1));
    tracing::info!(
        leader,
        "phase: SIGTERM the primary's pgkeel while a client writes; a replica takes over"
    );
    let stopped = Instant::now();
    c.sigterm(&leader_file);
    let new_leader = c.wait_new_leader(&leader, &[], Duration::from_secs(30));
    assert!(
        writes.wait_for_more(50, Duration::from_secs(30)),
        "writes did not resume on {new_leader}\n{}",
        c.logs()
    );
    let stats = writes.finish();
    tracing::info!(
        new_leader,
        took = ?stopped.elapsed(),
        acked = stats.acked.len(),
        failures = stats.failures,
        longest_gap = ?stats.longest_gap,
        "phase: new primary accepts writes; checking every acknowledged write"
    );
    let new_host = &hosts[&new_leader];
    let (h, p) = new_host.rsplit_once(':').unwrap();
    let direct =
        format!("host={h} port={p} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres");
    let lost = writeloop::missing(&direct, &stats.acked).unwrap();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost in the handover: {lost:?}"
    );
    sql(&rt, new_host, "insert into t values (201)").unwrap();
    wait_rows(&rt, new_host, 201, &c);

    tracing::info!("phase: the old primary comes back as a replica of the new one");
    c.start(&leader_file);
    c.wait_streaming(data_members, Duration::from_secs(90));
    wait_rows(&rt, &hosts[&leader], 201, &c);
}

#[test]
fn two_data_nodes_and_a_witness_with_postgresql() {
    bootstrap_replicate_restart_handover("two-plus-witness", 2, false);
}

#[test]
fn three_data_nodes_with_postgresql() {
    bootstrap_replicate_restart_handover("three-node", 3, true);
}

#[test]
fn a_data_dir_owned_by_another_user_is_refused_with_one_sentence() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let mut c = ProcCluster::from_example("two-plus-witness");
    let pgdata = c.pg_data_dir("node1");
    // Root-owned, not postgres-owned: somebody else's directory.
    std::fs::create_dir_all(&pgdata).unwrap();
    c.start("node1");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(&c.nodes["node1"].log).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.starts_with("pgkeel: ")) {
            assert!(line.contains(&pgdata.display().to_string()), "{line}");
            assert!(line.contains("owned by"), "{line}");
            assert!(line.contains("chown"), "the sentence names the fix: {line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pgkeel did not refuse to start:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A hard loss of the primary's agent (kill -9): its postmaster dies with
/// it (parent-death signal), the lease expires on the Raft leader's clock,
/// a replica is promoted and writes through the multi-host DSN resume; the
/// old primary's address refuses writes, and the agent, restarted, brings
/// its node back as a standby on the new timeline. (The next test forces
/// the divergence that needs pg_rewind.)
#[test]
fn kill_9_of_the_primary_agent_fails_over_and_its_postgres_dies_with_it() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (mut c, leader, hosts) = two_plus_witness_streaming();
    let leader_file = c.file_of(&leader);
    let pid_file = c.pg_data_dir(&leader_file).join("postmaster.pid");
    let postmaster: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .expect("postmaster pid");
    let all: Vec<String> = hosts.values().cloned().collect();
    let writes = writeloop::WriteLoop::start(
        writeloop::dsn(&all, SUPERUSER_PASSWORD),
        Duration::from_millis(10),
        100_000,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_secs(1));
    tracing::info!(leader, postmaster, "phase: kill -9 the primary's pgkeel");
    let killed = Instant::now();
    c.kill9(&leader_file);
    let deadline = Instant::now() + Duration::from_secs(10);
    // SAFETY: kill(pid, 0) only checks for existence.
    while unsafe { libc::kill(postmaster, 0) } == 0 {
        assert!(
            Instant::now() < deadline,
            "the postmaster outlived its agent by 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(after = ?killed.elapsed(), "phase: the orphaned postmaster is gone");
    assert!(
        writes.wait_for_more(50, Duration::from_secs(30)),
        "writes did not resume after the failover\n{}",
        c.logs()
    );
    let stats = writes.finish();
    let survivor = hosts.keys().find(|n| **n != leader).unwrap().clone();
    let list = c.list(&c.file_of(&survivor)).expect("list");
    let now_leader = list["leader"].as_str().unwrap_or_default().to_string();
    assert_eq!(now_leader, survivor, "{list}");
    tracing::info!(
        longest_gap = ?stats.longest_gap,
        acked = stats.acked.len(),
        "phase: writes resumed on the promoted replica"
    );
    let rt = realpg::runtime();
    assert!(
        !realpg::writable(&rt, &hosts[&leader]),
        "the old primary's address still accepts writes"
    );
    tracing::info!("phase: restart the killed agent; it rejoins as a standby");
    c.start(&leader_file);
    let (now_leader, _) = c.wait_streaming(2, Duration::from_secs(90));
    assert_eq!(now_leader, survivor);
    let timelines = c.timelines(&c.file_of(&survivor));
    assert_eq!(timelines[&leader], timelines[&survivor], "{timelines:?}");
    assert_eq!(
        realpg::writable_hosts(&rt, &hosts),
        [survivor],
        "exactly the new primary accepts writes"
    );
}

/// A primary killed (agent and postmaster) while writing: the replica is
/// promoted, and the old primary, restarted, rejoins on the new timeline by
/// itself. If its WAL went past the fork point (pg_control says it last ran
/// as a primary on an older timeline), it runs crash recovery in
/// single-user mode and pg_rewind first. The replica's WAL receiver is ended
/// (SIGTERM) just before the primary writes, to make that divergence likely;
/// PostgreSQL may restart the receiver quickly enough to catch up, so which
/// path runs depends on timing — both must end with the node replaying the
/// new timeline. (Writes acknowledged by an asynchronous primary in that
/// window may be lost: that is what asynchronous replication means, so this
/// test does not count them.)
#[test]
fn a_killed_primary_rejoins_on_the_new_timeline_by_itself() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut c, leader, hosts) = two_plus_witness_streaming();
    let leader_file = c.file_of(&leader);
    let survivor = hosts.keys().find(|n| **n != leader).unwrap().clone();
    sql(&rt, &hosts[&leader], "create table t(x int)").unwrap();
    let receiver = sql(
        &rt,
        &hosts[&survivor],
        "select pid from pg_stat_wal_receiver",
    )
    .unwrap();
    let receiver =
        i32::try_from(*receiver.first().expect("a WAL receiver on the replica")).unwrap();
    tracing::info!(
        leader,
        receiver,
        "phase: end the replica's WAL receiver; the primary writes on"
    );
    // SAFETY: a signal to a process of the cluster this test started.
    unsafe { libc::kill(receiver, libc::SIGTERM) };
    sql(
        &rt,
        &hosts[&leader],
        "insert into t select generate_series(1, 5000)",
    )
    .unwrap();
    tracing::info!("phase: kill -9 the primary's pgkeel (its postmaster follows)");
    c.kill9(&leader_file);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = c.list(&c.file_of(&survivor));
        if list
            .as_ref()
            .is_some_and(|l| l["leader"] == survivor.as_str())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{survivor} was not promoted\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    sql(&rt, &hosts[&survivor], "insert into t values (-1)").unwrap();
    tracing::info!(
        survivor,
        "phase: promoted; the switch is recorded in history"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = c.ctl(&c.file_of(&survivor), &["store", "get", "history"]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains(&format!("\"new_leader\":\"{survivor}\""))
            && text.contains("\"timeline\":1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "history does not record the switch to {survivor}: {text}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::info!(
        survivor,
        "phase: promoted and writable; restart the killed node"
    );
    let restarted = Instant::now();
    c.start(&leader_file);
    let (now_leader, _) = c.wait_streaming(2, Duration::from_secs(60));
    assert_eq!(now_leader, survivor);
    tracing::info!(after = ?restarted.elapsed(), "phase: the old primary is listed as streaming");
    let list = c.list(&c.file_of(&survivor)).expect("list");
    let timeline_of = |name: &str| {
        list["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .map(|m| m["timeline"].clone())
    };
    assert_eq!(timeline_of(&leader), timeline_of(&survivor), "{list}");
    // The row written on the new timeline reaches the rejoined node.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sql(&rt, &hosts[&leader], "select count(*) from t where x = -1")
        .ok()
        .and_then(|v| v.first().copied())
        != Some(1)
    {
        assert!(
            Instant::now() < deadline,
            "the rejoined node never replayed the new timeline\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&c.nodes[&leader_file].log).unwrap_or_default();
    let rewound = log.contains("running pg_rewind");
    if rewound {
        assert!(
            log.contains("pg_rewind done"),
            "pg_rewind started but never finished\n{}",
            c.logs()
        );
    }
    tracing::info!(rewound, "phase: the old primary replays the new timeline");
}

/// Regression: a standby that had just rejoined after a SIGTERM handover
/// lost its primary to kill -9. Its missing WAL receiver made it look
/// "diverged", and it once stopped itself and moved its data aside instead
/// of being promoted. It must be promoted, and writes must resume.
#[test]
fn a_hard_kill_right_after_a_handover_still_fails_over() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (mut c, first, hosts) = two_plus_witness_streaming();
    tracing::info!(
        first,
        "phase: SIGTERM handover, then the old primary comes back"
    );
    let first_file = c.file_of(&first);
    c.sigterm(&first_file);
    c.start(&first_file);
    let (second, _) = c.wait_streaming(2, Duration::from_secs(60));
    assert_ne!(first, second);
    std::thread::sleep(Duration::from_millis(1500));
    let writes = writeloop::WriteLoop::start(
        writeloop::dsn(
            &hosts.values().cloned().collect::<Vec<_>>(),
            SUPERUSER_PASSWORD,
        ),
        Duration::from_millis(10),
        100_000,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(500));
    tracing::info!(second, "phase: kill -9 the new primary's pgkeel");
    c.kill9(&c.file_of(&second));
    assert!(
        writes.wait_for_more(50, Duration::from_secs(30)),
        "no failover after the kill\n{}",
        c.logs()
    );
    let stats = writes.finish();
    let list = c.list(&first_file).expect("list");
    assert_eq!(list["leader"], first.as_str(), "{list}");
    let log = std::fs::read_to_string(&c.nodes[&first_file].log).unwrap_or_default();
    assert!(
        !log.contains("data directory moved aside"),
        "the survivor moved its data aside\n{}",
        c.logs()
    );
    tracing::info!(longest_gap = ?stats.longest_gap, "phase: promoted; writes resumed");
}

/// The REST API of a real 2 + witness cluster: the leader answers /primary
/// and not /replica, the streaming replica the reverse; HEAD and OPTIONS
/// carry no body; /cluster shows the witness; unsafe calls need
/// credentials.
#[test]
fn rest_health_checks_follow_the_roles() {
    let Some(_guard) = exclusive() else { return };
    let (c, leader, _) = two_plus_witness_streaming();
    let leader_file = c.file_of(&leader);
    let replica_file = c
        .names()
        .into_iter()
        .find(|n| *n != leader_file && !c.nodes[n].witness)
        .expect("a replica");
    let (primary_api, replica_api) = (c.rest_address(&leader_file), c.rest_address(&replica_file));
    let code = |addr: &str, method: &str, path: &str| {
        procs::http(addr, method, path, &[], "").map(|r| r.0)
    };
    tracing::info!(%primary_api, %replica_api, "phase: wait for both health checks to settle");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(code(&primary_api, "GET", "/primary") == Some(200)
        && code(&replica_api, "GET", "/replica") == Some(200))
    {
        assert!(
            Instant::now() < deadline,
            "health checks never settled\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    tracing::info!("phase: every check on each role");
    for (addr, path, want) in [
        (&primary_api, "/primary", 200),
        (&primary_api, "/", 200),
        (&primary_api, "/leader", 200),
        (&primary_api, "/replica", 503),
        (&primary_api, "/read-only", 200),
        (&primary_api, "/health", 200),
        (&primary_api, "/liveness", 200),
        (&primary_api, "/readiness", 200),
        (&replica_api, "/primary", 503),
        (&replica_api, "/replica", 200),
        (&replica_api, "/replica?lag=1GB", 200),
        (&replica_api, "/replica?replication_state=streaming", 200),
        (&replica_api, "/replica?tag_nosuchtag=x", 503),
        (&replica_api, "/read-only", 200),
        (&replica_api, "/async", 200),
        (&replica_api, "/health", 200),
        (&replica_api, "/readiness", 200),
    ] {
        assert_eq!(code(addr, "GET", path), Some(want), "GET {path} on {addr}");
    }
    for (addr, path, want) in [
        (&primary_api, "/primary", 200),
        (&replica_api, "/primary", 503),
        (&replica_api, "/replica", 200),
    ] {
        for method in ["HEAD", "OPTIONS"] {
            let r = procs::http(addr, method, path, &[], "");
            assert_eq!(r, Some((want, String::new())), "{method} {path} on {addr}");
        }
    }
    let (_, body) = procs::http(&replica_api, "GET", "/cluster", &[], "").expect("/cluster");
    let cluster: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let roles: Vec<(String, String)> = cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(leader.clone(), "leader".to_string())),
        "{cluster}"
    );
    assert!(
        roles.contains(&("witness1".to_string(), "witness".to_string())),
        "{cluster}"
    );
    let (code_metrics, metrics) =
        procs::http(&primary_api, "GET", "/metrics", &[], "").expect("/metrics");
    assert_eq!(code_metrics, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("patroni_primary{") && l.ends_with(" 1")),
        "{metrics}"
    );
    tracing::info!("phase: unsafe calls without credentials change nothing");
    let before = c.get(&leader_file, "config", true).expect("config");
    let patch = r#"{"loop_wait":"2s"}"#;
    let r = procs::http(&primary_api, "PATCH", "/config", &[], patch);
    assert_eq!(r.map(|r| r.0), Some(401));
    let wrong = [("Authorization", "Basic YWRtaW46d3Jvbmc=")]; // admin:wrong
    let r = procs::http(&primary_api, "PATCH", "/config", &wrong, patch);
    assert_eq!(r.map(|r| r.0), Some(401));
    assert_eq!(c.get(&leader_file, "config", true).expect("config"), before);
    tracing::info!("phase: with the example's credentials the patch lands in the store");
    // admin:demo-rest-password-change-me
    let right = [(
        "Authorization",
        "Basic YWRtaW46ZGVtby1yZXN0LXBhc3N3b3JkLWNoYW5nZS1tZQ==",
    )];
    let r = procs::http(&replica_api, "PATCH", "/config", &right, patch);
    assert_eq!(r.as_ref().map(|r| r.0), Some(200), "{r:?}");
    let after = c
        .get(&leader_file, "config", true)
        .expect("config")
        .expect("a config");
    let after: serde_json::Value = serde_json::from_str(&after).expect("JSON");
    assert_eq!(after["loop_wait"], "2s", "{after}");
}
