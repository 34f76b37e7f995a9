//! The REST API against real PostgreSQL under real pgkeel processes (the 2
//! data nodes + witness example), beyond the per-role checks in
//! `pg_cluster.rs`: real HAProxy with the shipped `haproxy.cfg` across a
//! handover and a failover, `promtool check metrics` on a live `/metrics`,
//! and the health checks of a primary that loses its quorum and fences.
//!
//! Needs root (PostgreSQL runs as `postgres`); HAProxy and promtool come
//! from `scripts/setup.sh`. Each test skips loudly without what it needs.

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

use haproxy::Haproxy;
use procs::ProcCluster;
use realpg::{exclusive, runtime, sql, two_plus_witness_streaming, writable};
use tokio::runtime::Runtime;

/// The examples' `bootstrap.dcs.ttl`.
const TTL: Duration = Duration::from_secs(5);

fn port(host: &str) -> i64 {
    host.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("host:port")
}

/// Writes through `frontend` until one is acknowledged by the server at
/// `primary` (a write that fails, because HAProxy still routes to a server
/// that is stopping or read-only, is retried).
fn writes_reach(rt: &Runtime, frontend: &str, primary: &str, c: &ProcCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        let r = sql(
            rt,
            frontend,
            "insert into t values (1) returning inet_server_port()",
        );
        if r.as_deref() == Ok(&[port(primary)][..]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "writes through HAProxy {frontend} never reached the primary {primary}; last: {last:?}\n{}",
            c.logs()
        );
        last = Some(r);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Six fresh sessions through the read-only frontend: every one on a
/// server in recovery, at `replica`'s port.
fn reads_land_on(rt: &Runtime, frontend: &str, replica: &str) {
    for i in 0..6 {
        let r = sql(
            rt,
            frontend,
            "select pg_is_in_recovery()::int; select inet_server_port()",
        );
        assert_eq!(
            r,
            Ok(vec![1, port(replica)]),
            "read {i} through HAProxy {frontend} did not land on the replica {replica}"
        );
    }
}

/// HAProxy with `config/examples/haproxy.cfg`: writes through the
/// read-write frontend reach the primary before and after a SIGTERM
/// handover and after a kill -9 failover; reads through the read-only
/// frontend land on the replica.
#[test]
fn haproxy_follows_the_primary_through_handover_and_failover() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let Some(bin) = haproxy::binary() else {
        eprintln!("SKIP SKIP SKIP: haproxy is not installed (scripts/setup.sh installs it); the HAProxy test did not run");
        return;
    };
    let rt = runtime();
    let (mut c, first, hosts) = two_plus_witness_streaming();
    let second = hosts
        .keys()
        .find(|n| **n != first)
        .expect("a replica")
        .clone();
    let (first_file, second_file) = (c.file_of(&first), c.file_of(&second));
    let h = Haproxy::start(&c, "two-plus-witness", &bin);
    sql(&rt, &hosts[&first], "create table t(x int)").expect("create table");

    tracing::info!(first, primary = %h.primary, replicas = %h.replicas, "phase: HAProxy in front of the cluster");
    h.wait_routes(&first_file, &[&second_file], Duration::from_secs(20));
    writes_reach(&rt, &h.primary, &hosts[&first], &c);
    reads_land_on(&rt, &h.replicas, &hosts[&second]);

    tracing::info!(
        first,
        "phase: SIGTERM the primary's pgkeel; writes follow the handover"
    );
    c.sigterm(&first_file);
    let now = c.wait_new_leader(&first, &[], Duration::from_secs(30));
    assert_eq!(now, second);
    writes_reach(&rt, &h.primary, &hosts[&second], &c);

    tracing::info!(first, "phase: the old primary rejoins; reads go to it");
    c.start(&first_file);
    let (now, _) = c.wait_streaming(2, Duration::from_secs(90));
    assert_eq!(now, second);
    h.wait_routes(&second_file, &[&first_file], Duration::from_secs(20));
    reads_land_on(&rt, &h.replicas, &hosts[&first]);

    tracing::info!(
        second,
        "phase: kill -9 the primary's pgkeel; writes follow the failover"
    );
    c.kill9(&second_file);
    let now = c.wait_new_leader(&second, &[&second], Duration::from_secs(30));
    assert_eq!(now, first);
    writes_reach(&rt, &h.primary, &hosts[&first], &c);
    h.wait_routes(&first_file, &[], Duration::from_secs(20));
    tracing::info!("phase: HAProxy routes writes to the promoted node only");
}

/// `promtool check metrics` on the live `/metrics` of the primary and of
/// the replica.
#[test]
fn live_metrics_pass_promtool() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let Some(promtool) = haproxy::tool("promtool", &[]) else {
        eprintln!("SKIP SKIP SKIP: promtool is not installed (Debian package `prometheus`, installed by scripts/setup.sh); /metrics was not checked");
        return;
    };
    let (c, leader, _) = two_plus_witness_streaming();
    let leader_file = c.file_of(&leader);
    for file in c.names().into_iter().filter(|n| !c.nodes[n].witness) {
        let role = if file == leader_file {
            "primary"
        } else {
            "replica"
        };
        let api = c.rest_address(&file);
        let (code, body) = procs::http(&api, "GET", "/metrics", &[], "").expect("/metrics answers");
        assert_eq!(code, 200, "{body}");
        let name = member_name(&c, &file);
        let want = format!(" {}", u8::from(role == "primary"));
        assert!(
            body.lines().any(|l| l.starts_with("patroni_primary{")
                && l.contains(&format!("name=\"{name}\""))
                && l.ends_with(&want)),
            "the {role}'s /metrics lacks patroni_primary{{name=\"{name}\"}}{want}:\n{body}"
        );
        let mut child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run promtool");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("promtool stdin");
            stdin.write_all(body.as_bytes()).expect("feed promtool");
        }
        let out = child.wait_with_output().expect("promtool output");
        tracing::info!(role, lines = body.lines().count(), "promtool check metrics");
        assert!(
            out.status.success(),
            "promtool check metrics fails on the {role}'s /metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The member name in a node's config file.
fn member_name(c: &ProcCluster, file: &str) -> String {
    let text = std::fs::read_to_string(&c.nodes[file].config).expect("config");
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("config parses");
    yaml["name"].as_str().expect("name").to_string()
}

/// Waits until `GET path` on `api` answers `want`.
fn wait_code(c: &ProcCluster, api: &str, path: &str, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = procs::http(api, "GET", path, &[], "").map(|r| r.0);
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "GET {path} on {api} still {got:?}, not {want}, after {within:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The primary's health checks while it loses its quorum (both other
/// voters SIGSTOPped): `/primary` turns 503 no later than the moment its
/// PostgreSQL stops taking writes, and never answers 200 again while
/// isolated; `/health` follows PostgreSQL, which the fence stopped.
#[test]
fn a_primary_losing_its_quorum_answers_503_before_it_fences() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let (c, leader, hosts) = two_plus_witness_streaming();
    let file = c.file_of(&leader);
    let api = c.rest_address(&file);
    let code = |path: &str| procs::http(&api, "GET", path, &[], "").map(|r| r.0);
    wait_code(&c, &api, "/primary", 200, Duration::from_secs(30));
    assert_eq!(code("/health"), Some(200));
    let others: Vec<String> = c.names().into_iter().filter(|n| *n != file).collect();
    tracing::info!(leader, ?others, "phase: SIGSTOP both other voters");
    let resume = c.sigstop(&others);
    let stopped = Instant::now();
    let bound = TTL + Duration::from_secs(15);
    // Write probe first, REST second: once a write was refused, every
    // later /primary must be 503.
    let (mut answered_503, mut fenced) = (None, None);
    while answered_503.is_none() || fenced.is_none() {
        if fenced.is_none() && !writable(&rt, &hosts[&leader]) {
            fenced = Some(stopped.elapsed());
        }
        let primary = code("/primary");
        assert!(
            !(fenced.is_some() && primary == Some(200)),
            "/primary answered 200 after PostgreSQL stopped taking writes\n{}",
            c.logs()
        );
        if answered_503.is_none() && primary == Some(503) {
            answered_503 = Some(stopped.elapsed());
        }
        if answered_503.is_some() {
            assert_eq!(primary, Some(503), "/primary back to 200 while isolated");
        }
        assert!(
            stopped.elapsed() < bound,
            "no 503 and fence within {bound:?}: 503 at {answered_503:?}, fenced at {fenced:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tracing::info!(
        ?answered_503,
        ?fenced,
        "phase: /primary 503, PostgreSQL fenced"
    );
    for path in ["/", "/leader", "/read-write", "/replica", "/read-only"] {
        assert_eq!(code(path), Some(503), "{path} on the fenced primary");
    }
    // The agent notices the stopped postmaster on its next probe.
    wait_code(&c, &api, "/health", 503, Duration::from_secs(15));
    assert!(
        sql(&rt, &hosts[&leader], "select 1").is_err(),
        "/health 503 while PostgreSQL answers"
    );
    let patroni = procs::http(&api, "GET", "/patroni", &[], "").expect("/patroni");
    let doc: serde_json::Value = serde_json::from_str(&patroni.1).expect("JSON");
    assert_ne!(doc["state"], "running", "{doc}");
    tracing::info!(%doc, liveness = ?code("/liveness"), "phase: fenced node's status; SIGCONT");
    drop(resume);
    // The store's view right after SIGCONT is the stale one from before
    // the stop, so wait on the health checks themselves.
    let apis: Vec<(String, String)> = c
        .names()
        .into_iter()
        .filter(|n| !c.nodes[n].witness)
        .map(|n| (c.rest_address(&n), n))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let now_leader = loop {
        let primaries: Vec<&String> = apis
            .iter()
            .filter(|(api, _)| {
                procs::http(api, "GET", "/primary", &[], "").map(|r| r.0) == Some(200)
            })
            .map(|(_, n)| n)
            .collect();
        assert!(
            primaries.len() <= 1,
            "two nodes answer /primary 200: {primaries:?}"
        );
        if let Some(n) = primaries.first() {
            break (*n).clone();
        }
        assert!(
            Instant::now() < deadline,
            "no node answers /primary 200 after recovery\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    tracing::info!(now_leader, "phase: recovered; its /primary answers 200");
}
