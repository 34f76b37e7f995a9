//! Member operations through `pgkeelctl` and the REST API, as an operator
//! runs them, against real PostgreSQL under real pgkeel processes (the 2
//! data nodes + witness example): restart of a replica and of the primary
//! (which keeps its lease: no failover, writes resume), `restart
//! --pending`, a scheduled restart that fires and one that is cancelled,
//! reload, reinit of a replica, and the refusals (the primary cannot be
//! reinitialized, an unknown member, no credentials). One cluster serves
//! every phase, to keep the suite's time modest.
//!
//! Needs root (PostgreSQL runs as `postgres`); skips loudly without it.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use procs::{http, stderr, stdout, ProcCluster};
use realpg::{exclusive, runtime, sql, two_plus_witness_streaming, wait_rows};

/// The examples' REST credentials.
const REST_AUTH: &str = "admin:demo-rest-password-change-me";

/// `pgkeelctl ARGS` through `via`, which must exit 1; its sentence.
fn refused(c: &ProcCluster, via: &str, args: &[&str]) -> String {
    procs::refusal(&c.ctl(via, args), "")
}

/// The postmaster PID of member `m`.
fn pm(c: &ProcCluster, m: &str) -> i32 {
    c.postmaster_pid(&c.file_of(m))
        .unwrap_or_else(|| panic!("{m} has no running postmaster\n{}", c.logs()))
}

/// Waits until `m`'s postmaster PID is another than `old`; returns it.
fn new_pm(c: &ProcCluster, m: &str, old: i32, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(p) = c.postmaster_pid(&c.file_of(m)).filter(|p| *p != old) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "{m}'s postmaster was not restarted within {within:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The operation ids in a `--format json` answer.
fn ids(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).expect("json answer");
    v["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

fn basic() -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(REST_AUTH);
    format!("Basic {b64}")
}

/// The value of `name` as `member` shows it.
fn setting(rt: &tokio::runtime::Runtime, host: &str, name: &str) -> String {
    let (h, p) = host.rsplit_once(':').expect("host:port");
    let conn = format!(
        "host={h} port={p} user=postgres password={} dbname=postgres connect_timeout=3",
        realpg::SUPERUSER_PASSWORD
    );
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(connection);
        let row = client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .expect("show");
        row.get::<_, String>(0)
    })
}

#[test]
fn restart_reload_reinit_and_their_refusals_through_pgkeelctl() {
    let Some(_one_at_a_time) = exclusive() else {
        return;
    };
    let (c, leader, hosts) = two_plus_witness_streaming();
    let replica = hosts
        .keys()
        .find(|n| **n != leader)
        .expect("a replica")
        .clone();
    let via = c.file_of(&leader);
    let rt = runtime();
    sql(&rt, &hosts[&leader], "create table t (x int)").expect("create table");
    sql(&rt, &hosts[&leader], "insert into t values (1)").expect("insert");
    let timeline = c.timelines(&via)[&leader];

    tracing::info!("phase: no credentials, no restart; an unknown member is named");
    let before = pm(&c, &replica);
    let out = Command::new(env!("CARGO_BIN_EXE_pgkeelctl"))
        .args(["--endpoint", &c.nodes[&via].endpoint, "restart", &replica])
        .env_remove("PGKEEL_SECRET")
        .env_remove("PGKEEL_CONFIG")
        .output()
        .expect("run pgkeelctl");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("needs the cluster's raft.secret"),
        "{}",
        stderr(&out)
    );
    let e = refused(&c, &via, &["restart", "nosuch"]);
    assert!(e.contains("no data member is named \"nosuch\""), "{e}");
    assert_eq!(
        c.get(&via, &format!("operations/{replica}"), true),
        Ok(None)
    );
    assert_eq!(pm(&c, &replica), before, "nothing was restarted");

    tracing::info!("phase: restart the replica; it streams again");
    let said = c.ctl_ok(&via, &["restart", &replica]);
    assert!(said.contains("done — PostgreSQL restarted"), "{said}");
    new_pm(&c, &replica, before, Duration::from_secs(5));
    c.wait_streaming(2, Duration::from_secs(30));

    tracing::info!("phase: restart the primary; it keeps the key, writes resume");
    let before = pm(&c, &leader);
    let said = c.ctl_ok(&via, &["restart", &leader]);
    assert!(said.contains("done — PostgreSQL restarted"), "{said}");
    new_pm(&c, &leader, before, Duration::from_secs(5));
    let (still, _) = c.wait_streaming(2, Duration::from_secs(30));
    assert_eq!(still, leader, "no failover");
    assert_eq!(c.timelines(&via)[&leader], timeline, "no promotion");
    sql(&rt, &hosts[&leader], "insert into t values (2)").expect("writes resume");
    wait_rows(&rt, &hosts[&replica], 2, &c);

    tracing::info!("phase: restart --pending restarts only the member that needs it");
    sql(
        &rt,
        &hosts[&replica],
        "alter system set shared_buffers = '32MB'",
    )
    .expect("alter system on the replica");
    sql(&rt, &hosts[&replica], "select pg_reload_conf()::int").expect("reload");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sql(
        &rt,
        &hosts[&replica],
        "select count(*) from pg_settings where pending_restart",
    ) != Ok(vec![1])
    {
        assert!(Instant::now() < deadline, "shared_buffers never pending");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (lp, rp) = (pm(&c, &leader), pm(&c, &replica));
    let said = c.ctl_ok(&via, &["restart", "--pending"]);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "{said}");
    assert!(
        lines[0].starts_with(&format!(
            "restart of {replica}: done — PostgreSQL restarted"
        )),
        "replica first: {said}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "restart of {leader}: done — nothing to do: no restart pending"
        )),
        "{said}"
    );
    new_pm(&c, &replica, rp, Duration::from_secs(5));
    assert_eq!(pm(&c, &leader), lp, "the primary needed no restart");
    assert_eq!(setting(&rt, &hosts[&replica], "shared_buffers"), "32MB");
    c.wait_streaming(2, Duration::from_secs(30));

    tracing::info!("phase: reload applies a changed cluster parameter");
    let rest = c.rest_address(&via);
    let auth = basic();
    let patch = r#"{"postgresql":{"parameters":{"work_mem":"7MB"}}}"#;
    let (code, body) = http(
        &rest,
        "PATCH",
        "/config",
        &[("Authorization", &auth)],
        patch,
    )
    .expect("PATCH /config answers");
    assert_eq!(code, 200, "{body}");
    let said = c.ctl_ok(&via, &["reload", &leader]);
    assert!(
        said.contains("done — PostgreSQL reloaded its settings"),
        "{said}"
    );
    assert_eq!(setting(&rt, &hosts[&leader], "work_mem"), "7MB");

    tracing::info!("phase: a scheduled restart fires at its time");
    let when = |secs: u64| {
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(secs)).to_string()
    };
    let before = pm(&c, &replica);
    let at = when(4);
    let said = c.ctl_ok(
        &via,
        &["--format", "json", "restart", &replica, "--scheduled", &at],
    );
    let id = ids(&said).pop().expect("an id");
    assert_eq!(pm(&c, &replica), before, "not before its time");
    let watched = c.ctl_ok(&via, &["watch", &id]);
    assert!(
        watched.lines().last().is_some_and(|l| l.contains("done")),
        "{watched}"
    );
    new_pm(&c, &replica, before, Duration::from_secs(5));
    assert!(SystemTime::now() >= humantime::parse_rfc3339(&at).expect("time"));
    c.wait_streaming(2, Duration::from_secs(30));

    tracing::info!("phase: a scheduled restart is cancelled; a past time is refused");
    let before = pm(&c, &replica);
    c.ctl_ok(&via, &["restart", &replica, "--scheduled", &when(3600)]);
    let e = refused(&c, &via, &["restart", &replica]);
    assert!(e.contains("already has a restart pending"), "{e}");
    let said = c.ctl_ok(&via, &["cancel", "restart", &replica]);
    assert!(
        said.starts_with("cancelled the scheduled restart"),
        "{said}"
    );
    assert_eq!(
        c.get(&via, &format!("operations/{replica}"), true),
        Ok(None)
    );
    let e = refused(&c, &via, &["cancel", "restart", &replica]);
    assert!(e.contains("has no scheduled restart to cancel"), "{e}");
    let e = refused(
        &c,
        &via,
        &["restart", &replica, "--scheduled", "2001-01-01T00:00:00Z"],
    );
    assert!(e.contains("is in the past"), "{e}");
    assert_eq!(pm(&c, &replica), before);

    tracing::info!("phase: watch follows a switchover request; a scheduled one is cancelled");
    let switchover = format!(
        r#"{{"id":"sw-test","kind":"switchover","leader":"{leader}","state":"pending","message":"waiting","scheduled_at":"{}"}}"#,
        when(3600)
    );
    c.put_eventually(&via, "failover", &switchover, Duration::from_secs(10));
    let out = c.ctl(&via, &["watch", "sw-test", "--wait", "1s"]);
    assert_eq!(out.status.code(), Some(1), "not finished within 1 s");
    assert!(
        stdout(&out).starts_with("switchover: pending — waiting (operation sw-test)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("has not finished yet"),
        "{}",
        stderr(&out)
    );
    let said = c.ctl_ok(&via, &["cancel", "switchover"]);
    assert_eq!(
        said,
        "cancelled the scheduled switchover (operation sw-test)"
    );
    assert_eq!(c.get(&via, "failover", true), Ok(None));
    let e = refused(&c, &via, &["cancel", "switchover"]);
    assert!(e.contains("no scheduled switchover to cancel"), "{e}");

    tracing::info!("phase: REST /restart needs credentials, then restarts that node");
    let rest = c.rest_address(&c.file_of(&replica));
    let (code, _) = http(&rest, "POST", "/restart", &[], "{}").expect("REST answers");
    assert_eq!(code, 401);
    assert_eq!(pm(&c, &replica), before);
    let (code, body) =
        http(&rest, "POST", "/restart", &[("Authorization", &auth)], "{}").expect("REST answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("PostgreSQL restarted"), "{body}");
    new_pm(&c, &replica, before, Duration::from_secs(5));
    c.wait_streaming(2, Duration::from_secs(30));

    tracing::info!("phase: topology shows the replica under the leader");
    let topo = c.ctl_ok(&via, &["topology"]);
    assert!(topo.contains(&format!("\n{leader} ")), "{topo}");
    assert!(topo.contains(&format!("+ {replica} ")), "{topo}");

    tracing::info!("phase: list -w redraws until Ctrl-C");
    let child = Command::new(env!("CARGO_BIN_EXE_pgkeelctl"))
        .args(["--endpoint", &c.nodes[&via].endpoint, "list", "-w", "0.3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run pgkeelctl list -w");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on the PID of our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().expect("list -w exits");
    assert!(out.status.success(), "Ctrl-C ends list -w cleanly");
    let drawn = stdout(&out).matches("Cluster: ").count();
    assert!(drawn >= 2, "redrawn: {}", stdout(&out));

    tracing::info!("phase: the primary cannot be reinitialized; a replica is cloned again");
    let e = refused(&c, &via, &["reinit", &leader]);
    assert!(
        e.contains("cannot reinitialize the primary; switch over first"),
        "{e}"
    );
    let data = c.pg_data_dir(&c.file_of(&replica));
    let aside = |d: &std::path::Path| {
        let parent = d.parent().expect("parent");
        let stem = d.file_name().expect("name").to_string_lossy().to_string();
        std::fs::read_dir(parent)
            .expect("read parent")
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{stem}.failed-"))
            })
            .count()
    };
    assert_eq!(aside(&data), 0);
    let said = c.ctl_ok(&via, &["reinit", &replica]);
    assert!(
        said.contains("done — cloned again; PostgreSQL runs as a standby"),
        "{said}"
    );
    assert_eq!(aside(&data), 1, "the old data directory is kept aside");
    c.wait_streaming(2, Duration::from_secs(30));
    sql(&rt, &hosts[&leader], "insert into t values (3)").expect("insert");
    wait_rows(&rt, &hosts[&replica], 3, &c);
}
