//! Switchover, failover, pause and resume through `pgkeelctl`, as an
//! operator runs them, against the real two-plus-witness cluster with
//! PostgreSQL: every success path and each refusal, with a client writing
//! through the multi-host DSN all along (no acknowledged write may be lost
//! by a switchover).
//!
//! Needs root (PostgreSQL then runs as `postgres`); skips loudly otherwise.

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

use procs::{refusal, ProcCluster};
use realpg::{exclusive, runtime, two_plus_witness_streaming, writable_hosts, SUPERUSER_PASSWORD};

/// Waits until `list` through `via` shows `leader` running and every
/// other data member streaming on the same timeline as the leader.
fn wait_led_by(c: &ProcCluster, via: &str, leader: &str, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(list) = c.list(via) {
            let members = list["members"].as_array().cloned().unwrap_or_default();
            let data: Vec<_> = members.iter().filter(|m| m["role"] != "witness").collect();
            let tl = |m: &serde_json::Value| m["timeline"].as_u64();
            let lead = data
                .iter()
                .find(|m| m["name"] == leader && m["role"] == "leader" && m["state"] == "running");
            if let Some(lead) = lead {
                let all_follow = data.iter().filter(|m| m["name"] != leader).all(|m| {
                    m["role"] == "replica" && m["state"] == "streaming" && tl(m) == tl(lead)
                });
                if all_follow {
                    return list;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{leader} never led with every other member streaming on its timeline: {:?}\n{}",
            c.list(via),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The round trip an operator does in a maintenance window, and the
/// mistakes they make on the way.
#[test]
fn switchover_and_failover_round_trip_through_pgkeelctl() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (c, first, hosts) = two_plus_witness_streaming();
    let second = hosts
        .keys()
        .find(|n| **n != first)
        .expect("a second data member")
        .clone();
    let rt = runtime();
    let writes = writeloop::running(&c, &hosts, SUPERUSER_PASSWORD, Duration::from_secs(240));
    let timeline = c.timelines("witness")[&first].expect("a timeline");

    tracing::info!("phase: refusals change nothing");
    refusal(
        &c.ctl_anonymous("node1", &["switchover", "--force"]),
        "needs the cluster's raft.secret",
    );
    refusal(
        &c.ctl("node1", &["switchover"]),
        "no terminal is attached: pass --force",
    );
    refusal(
        &c.ctl("node1", &["switchover", "--candidate", "nosuch", "--force"]),
        "no data member is named nosuch",
    );
    refusal(
        &c.ctl("node2", &["switchover", "--leader", &second, "--force"]),
        &format!("{second} is not the leader; {first} is"),
    );
    refusal(
        &c.ctl("node1", &["failover", "--candidate", &first, "--force"]),
        &format!("{first} is already the primary"),
    );
    refusal(
        &c.ctl(
            "node1",
            &[
                "switchover",
                "--scheduled",
                "2020-01-01T00:00:00Z",
                "--force",
            ],
        ),
        "is in the past",
    );
    let out = c.ctl("node1", &["failover", "--force"]);
    assert_eq!(out.status.code(), Some(2), "a missing --candidate is usage");
    assert_eq!(
        c.running_leader(&[]).map(|(l, _)| l),
        Some(first.clone()),
        "a refusal moved the leader"
    );

    tracing::info!("phase: switchover {first} -> {second} through the witness");
    let said = c.ctl_ok(
        "witness",
        &["switchover", "--candidate", &second, "--force"],
    );
    assert!(
        said.contains(&format!("{second} is the new primary")),
        "{said}"
    );
    // It returned once the new primary accepts writes.
    assert_eq!(writable_hosts(&rt, &hosts), vec![second.clone()]);
    let list = wait_led_by(&c, "witness", &second, Duration::from_secs(60));
    assert!(list["pending_switchover"].is_null(), "{list}");
    let after = c.timelines("witness")[&second].expect("a timeline");
    assert!(after > timeline, "no new timeline: {timeline} -> {after}");

    tracing::info!("phase: a request with a stale leader is refused");
    refusal(
        &c.ctl("node1", &["switchover", "--leader", &first, "--force"]),
        &format!("{first} is not the leader; {second} is"),
    );

    tracing::info!("phase: failover back to {first} while {second} leads (a handover)");
    let said = c.ctl_ok(
        "node2",
        &[
            "--format",
            "json",
            "failover",
            "--candidate",
            &first,
            "--force",
        ],
    );
    let reply: serde_json::Value = serde_json::from_str(&said).expect("JSON");
    assert_eq!(reply["new_primary"], first.as_str(), "{reply}");
    assert!(
        reply["operation_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("failover-")),
        "{reply}"
    );
    wait_led_by(&c, "witness", &first, Duration::from_secs(60));

    tracing::info!("phase: a scheduled switchover waits for its time, then fires");
    let said = c.ctl_ok("node1", &["switchover", "--scheduled", "+4s", "--force"]);
    assert!(said.contains("is scheduled"), "{said}");
    let list = c.list("node2").expect("list");
    assert!(
        list["pending_switchover"]
            .as_str()
            .is_some_and(|p| p.contains(&format!("from {first}"))),
        "{list}"
    );
    assert_eq!(c.running_leader(&[]).map(|(l, _)| l), Some(first.clone()));
    refusal(
        &c.ctl("node1", &["switchover", "--force"]),
        "is already pending",
    );
    c.wait_new_leader(&first, &[], Duration::from_secs(30));
    wait_led_by(&c, "witness", &second, Duration::from_secs(60));

    let stats = writes.finish();
    tracing::info!(?stats, "writes through three switchovers");
    let all: Vec<String> = hosts.values().cloned().collect();
    let missing = writeloop::missing(&writeloop::dsn(&all, SUPERUSER_PASSWORD), &stats.acked)
        .expect("read the acknowledged ids back");
    assert!(
        missing.is_empty(),
        "acknowledged writes lost across switchovers: {missing:?}"
    );
}

/// Maintenance mode: a dead primary is not replaced while paused, and is
/// at once after resume.
#[test]
fn pause_stops_failover_and_resume_restores_it() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (mut c, leader, hosts) = two_plus_witness_streaming();
    let rt = runtime();
    let file = c.file_of(&leader);

    refusal(
        &c.ctl_anonymous("node1", &["pause"]),
        "needs the cluster's raft.secret",
    );
    let said = c.ctl_ok("node2", &["pause", "--wait"]);
    assert!(said.contains("Maintenance mode on"), "{said}");
    let list = c.list("witness").expect("list");
    assert_eq!(list["paused"], true, "{list}");
    let table = c.ctl_ok("witness", &["list"]);
    assert!(table.contains("Maintenance mode: on"), "{table}");
    refusal(
        &c.ctl("node1", &["switchover", "--force"]),
        "the cluster is paused",
    );

    tracing::info!("phase: the primary's host dies while paused: nobody is promoted");
    let postmaster = c.postmaster_pid(&file).expect("the primary's postmaster");
    c.kill9(&file);
    // SAFETY: kill(2) on the PID from the cluster's own postmaster.pid.
    unsafe {
        libc::kill(postmaster, libc::SIGKILL);
    }
    let quiet_until = Instant::now() + Duration::from_secs(15);
    while Instant::now() < quiet_until {
        assert_eq!(
            writable_hosts(&rt, &hosts),
            Vec::<String>::new(),
            "a member was promoted while paused\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    tracing::info!("phase: resume: the surviving standby is promoted");
    let said = c.ctl_ok("witness", &["resume", "--wait"]);
    assert!(said.contains("Maintenance mode off"), "{said}");
    let new = c.wait_new_leader(&leader, &[&file], Duration::from_secs(30));
    assert_ne!(new, leader);

    tracing::info!("phase: the old primary comes back as a standby by itself");
    c.start(&file);
    wait_led_by(&c, "witness", &new, Duration::from_secs(90));

    tracing::info!("phase: a standby tagged nofailover is refused as a candidate");
    c.sigterm(&file);
    c.set_config_line(&file, "nofailover", "true");
    c.start(&file);
    wait_led_by(&c, "witness", &new, Duration::from_secs(90));
    refusal(
        &c.ctl(
            "witness",
            &["switchover", "--candidate", &leader, "--force"],
        ),
        &format!("{leader} is tagged nofailover"),
    );
    refusal(
        &c.ctl("witness", &["switchover", "--force"]),
        &format!("no standby may take over: {leader} is tagged nofailover"),
    );
    assert_eq!(c.running_leader(&[]).map(|(l, _)| l), Some(new));
}
