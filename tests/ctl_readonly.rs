//! The read-only operator commands through `pgkeelctl`, as a user runs
//! them, against real processes of the two-plus-witness example:
//! `show-config`, `history`, `dsn` and `list --format yaml`. Store keys
//! the cluster would only write after a failover (history) or from another
//! host (an IPv6 member) are written with `pgkeelctl store put`.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;

use std::time::{Duration, Instant};

use procs::{stderr, stdout, ProcCluster};
use serde_json::Value;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
}

/// Runs `args` through `via` until it exits 0 and `done` accepts its
/// stdout, or `within` passes.
fn ctl_until(
    c: &ProcCluster,
    via: &str,
    args: &[&str],
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = c.ctl(via, args);
        if out.status.success() && done(&stdout(&out)) {
            return stdout(&out);
        }
        assert!(
            Instant::now() < deadline,
            "pgkeelctl {args:?} never gave the expected answer; last: {:?} {} {}\n{}",
            out.status.code(),
            stdout(&out),
            stderr(&out),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The PostgreSQL address a data node's config file publishes.
fn pg_address(c: &ProcCluster, node: &str) -> String {
    let text = std::fs::read_to_string(&c.nodes[node].config).expect("read config");
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("config parses");
    yaml["postgresql"]["connect_address"]
        .as_str()
        .expect("postgresql.connect_address")
        .to_string()
}

#[test]
fn show_config_history_dsn_and_yaml_list_through_pgkeelctl() {
    init_tracing();
    let mut c = ProcCluster::from_example("two-plus-witness");
    c.start_all();
    c.wait_healthy(Duration::from_secs(30));

    tracing::info!("phase: show-config prints the seeded bootstrap.dcs as YAML, or JSON");
    let yaml = ctl_until(
        &c,
        "witness",
        &["show-config"],
        Duration::from_secs(30),
        |_| true,
    );
    let from_yaml: Value = serde_norway::from_str(&yaml).expect("show-config prints YAML");
    // The example's bootstrap.dcs, as the first data node seeded it.
    assert!(from_yaml["ttl"].is_string(), "{yaml}");
    assert_eq!(
        from_yaml["postgresql"]["parameters"]["wal_level"],
        "replica"
    );
    let out = c.ctl("node2", &["--format", "json", "show-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let from_json: Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(from_json, from_yaml);

    tracing::info!("phase: without a config key, show-config refuses with exit 1");
    let out = c.ctl("node1", &["store", "delete", "config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = c.ctl("node1", &["show-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no dynamic config yet"),
        "{}",
        stderr(&out)
    );

    tracing::info!("phase: history is empty until a timeline switch, then lists each");
    let out = c.ctl("node1", &["--format", "json", "history"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "[]");
    let history = r#"[{"timeline":1,"lsn":50331744,"reason":"failover","time":"2026-11-22T07:00:00Z","new_leader":"node2"},
                      {"timeline":2,"lsn":4294967464,"reason":"switchover","time":"2026-11-22T07:05:00Z","new_leader":"node1"}]"#;
    c.put_eventually("node1", "history", history, Duration::from_secs(15));
    let table = ctl_until(&c, "node2", &["history"], Duration::from_secs(10), |t| {
        t.lines().count() == 3
    });
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TL  LSN"), "{table}");
    assert!(
        lines[1].contains("0/3000060")
            && lines[1].contains("failover")
            && lines[1].ends_with("node2"),
        "{table}"
    );
    assert!(
        lines[2].contains("1/A8") && lines[2].contains("2026-11-22T07:05:00Z"),
        "{table}"
    );
    let out = c.ctl("witness", &["--format", "json", "history"]);
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("history JSON");
    assert_eq!(doc[1]["lsn"], "1/A8");
    assert_eq!(doc[1]["new_leader"], "node1");
    c.put_eventually("node1", "history", "not json", Duration::from_secs(15));
    let out = c.ctl("node1", &["history"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("history"), "{}", stderr(&out));

    tracing::info!("phase: dsn lists every data member's published address");
    let (a1, a2) = (pg_address(&c, "node1"), pg_address(&c, "node2"));
    let dsn = ctl_until(&c, "witness", &["dsn"], Duration::from_secs(60), |d| {
        d.contains(&a1) && d.contains(&a2)
    });
    assert!(dsn.starts_with("postgresql://"), "{dsn}");
    assert!(
        dsn.ends_with("/postgres?target_session_attrs=read-write"),
        "{dsn}"
    );
    let member =
        r#"{"name":"node9","role":"replica","state":"running","conn_url":"postgres://[::1]:5439"}"#;
    c.put_eventually("node1", "members/node9", member, Duration::from_secs(15));
    let dsn = ctl_until(
        &c,
        "node2",
        &["dsn", "--role", "any"],
        Duration::from_secs(10),
        |d| d.contains("[::1]:5439"),
    );
    assert!(dsn.ends_with("?target_session_attrs=any"), "{dsn}");
    let out = c.ctl("node1", &["--format", "json", "dsn", "--role", "replica"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).expect("dsn JSON");
    assert!(
        doc["dsn"]
            .as_str()
            .unwrap()
            .ends_with("?target_session_attrs=standby"),
        "{doc}"
    );
    let members: Vec<&str> = doc["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in ["node1", "node2", "node9"] {
        assert!(members.contains(&name), "{doc}");
    }
    assert!(
        !members.contains(&"witness1"),
        "the witness has no PostgreSQL: {doc}"
    );
    if let Ok(Some(leader)) = c.get("node1", "leader", true) {
        let out = c.ctl("node1", &["--format", "json", "dsn"]);
        let doc: Value = serde_json::from_str(&stdout(&out)).expect("dsn JSON");
        assert_eq!(doc["members"][0], leader.as_str(), "leader first: {doc}");
    }

    tracing::info!("phase: a role libpq has no word for is a usage error");
    let out = c.ctl("node1", &["dsn", "--role", "master"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("master"), "{}", stderr(&out));

    tracing::info!("phase: list --format yaml holds the members");
    let out = c.ctl("node1", &["--format", "yaml", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_norway::from_str(&stdout(&out)).expect("list YAML");
    assert_eq!(list["scope"], "demo");
    let names: Vec<&str> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    for name in ["node1", "node2", "node9", "witness1"] {
        assert!(names.contains(&name), "{list}");
    }
}
