//! Callbacks and `pre_promote` under real pgkeel processes and real
//! PostgreSQL (issue 7): `on_role_change` runs with the new role on both
//! sides of a failover, and a failing `pre_promote` hands the race to
//! another member.
//!
//! Every node's scripts append a line to a file of their own, so a test
//! reads what each node ran, with which arguments. No timing is asserted
//! except generous bounds on liveness. Needs root; skips loudly otherwise.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use procs::ProcCluster;
use realpg::{exclusive, runtime, writable_hosts};

/// Writes an executable `/bin/sh` script `name` into the cluster's
/// directory; returns its path.
fn script(c: &ProcCluster, name: &str, body: &str) -> PathBuf {
    let path = c.dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Gives node `file` a callback script for every kind that appends
/// `$1 $2 $3` (action, role, scope) to `<file>.callbacks`; returns that
/// file's path.
fn record_callbacks(c: &ProcCluster, file: &str) -> PathBuf {
    let out = c.dir.path().join(format!("{file}.callbacks"));
    let exe = script(
        c,
        &format!("{file}-callback.sh"),
        &format!("echo \"$1 $2 $3\" >> {}", out.display()),
    );
    let exe = exe.display();
    c.add_postgresql_line(
        file,
        &format!(
            "callbacks: {{ on_start: {exe}, on_stop: {exe}, on_restart: {exe}, on_reload: {exe}, on_role_change: {exe} }}"
        ),
    );
    out
}

/// Waits until `path` holds the line `line`.
fn wait_line(c: &ProcCluster, path: &Path, line: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} has no line {line:?} within {within:?}; it holds:\n{text}\n{}",
            path.display(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The primary's machine is lost (pgkeel and postmaster SIGKILLed): the
/// promoted replica runs `on_role_change primary demo`; the old primary,
/// restarted, rejoins as a standby and runs `on_role_change replica demo`.
#[test]
fn on_role_change_runs_with_the_new_role_after_a_failover() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let mut c = ProcCluster::from_example("two-plus-witness");
    let data: Vec<String> = c
        .names()
        .into_iter()
        .filter(|n| !c.nodes[n].witness)
        .collect();
    let files: std::collections::BTreeMap<String, PathBuf> = data
        .iter()
        .map(|f| (f.clone(), record_callbacks(&c, f)))
        .collect();
    c.start_all();
    let (leader, _) = c.wait_streaming(2, Duration::from_secs(90));
    let old = c.file_of(&leader);
    let replica = data.iter().find(|f| **f != old).expect("a replica").clone();
    // Each ran on_start in the role it started in.
    wait_line(
        &c,
        &files[&old],
        "on_start primary demo",
        Duration::from_secs(30),
    );
    wait_line(
        &c,
        &files[&replica],
        "on_start replica demo",
        Duration::from_secs(30),
    );
    tracing::info!(leader, "phase: the primary's machine is lost");
    c.kill_machine(&old).expect("the primary's postmaster ran");
    let new_leader = c.wait_new_leader(&leader, &[old.as_str()], Duration::from_secs(60));
    assert_eq!(c.file_of(&new_leader), replica);
    wait_line(
        &c,
        &files[&replica],
        "on_role_change primary demo",
        Duration::from_secs(30),
    );
    tracing::info!(
        new_leader,
        "phase: promoted and told so; restart the old primary"
    );
    c.start(&old);
    c.wait_streaming(2, Duration::from_secs(90));
    wait_line(
        &c,
        &files[&old],
        "on_role_change replica demo",
        Duration::from_secs(30),
    );
    let old_lines = std::fs::read_to_string(&files[&old]).unwrap_or_default();
    assert!(
        !old_lines.contains("on_role_change primary"),
        "the old primary was never promoted again:\n{old_lines}"
    );
    tracing::info!("phase: the old primary rejoined as a replica and was told so");
}

/// Three data nodes; the replica that would win the race (the higher
/// `failover_priority`) has a `pre_promote` that exits 1. The primary's
/// machine is lost: that replica takes the key, runs the script, gives
/// the key back unpromoted and stands aside, and the other replica is
/// promoted. The cluster moves on by exactly one timeline.
#[test]
fn a_failing_pre_promote_hands_the_race_to_another_member() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let mut c = ProcCluster::from_example("three-node");
    c.start_all();
    let (leader, hosts) = c.wait_streaming(3, Duration::from_secs(90));
    let old = c.file_of(&leader);
    let before = c.timelines(&old)[&leader].expect("the leader's timeline");
    let mut replicas: Vec<String> = c
        .names()
        .into_iter()
        .filter(|n| *n != old && !c.nodes[n].witness)
        .collect();
    replicas.sort();
    let (refuser, other) = (replicas[0].clone(), replicas[1].clone());
    // The refuser gets the higher priority and a failing pre_promote; a
    // clean restart makes them effective.
    let ran = c.dir.path().join("pre_promote.ran");
    let pre = script(
        &c,
        "pre-promote-fails.sh",
        &format!("echo \"pre_promote $*\" >> {}\nexit 1", ran.display()),
    );
    tracing::info!(
        refuser,
        other,
        "phase: give the refuser priority 3 and a failing pre_promote"
    );
    c.sigterm(&refuser);
    c.set_config_line(&refuser, "failover_priority", "3");
    c.add_postgresql_line(&refuser, &format!("pre_promote: {}", pre.display()));
    c.start(&refuser);
    c.wait_streaming(3, Duration::from_secs(90));
    tracing::info!(leader, "phase: the primary's machine is lost");
    c.kill_machine(&old).expect("the primary's postmaster ran");
    // The refuser holds the key for a moment while a standby: wait for the
    // other member to run writable.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let leading = c
            .running_leader(&[old.as_str()])
            .map(|(n, _)| c.file_of(&n));
        if leading.as_deref() == Some(other.as_str())
            && writable_hosts(&rt, &hosts) == [member_of(&c, &other)]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{other} was not promoted within 90 s (leader: {leading:?})\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let ran_lines = std::fs::read_to_string(&ran).unwrap_or_default();
    assert!(
        ran_lines.lines().next() == Some("pre_promote "),
        "the refuser never ran its pre_promote (it did not win the key first): {ran_lines:?}\n{}",
        c.logs()
    );
    let refuser_log = std::fs::read_to_string(&c.nodes[&refuser].log).unwrap_or_default();
    assert!(
        refuser_log.contains("not promoting: pre_promote exited with status 1"),
        "{}",
        c.logs()
    );
    tracing::info!("phase: the other member leads; the refuser follows it");
    let refuser_member = member_of(&c, &refuser);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = c.list(&other).unwrap_or_default();
        let members = list["members"].as_array().cloned().unwrap_or_default();
        let streaming = members.iter().any(|m| {
            m["name"] == refuser_member.as_str()
                && m["role"] == "replica"
                && m["state"] == "streaming"
        });
        if streaming {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refuser} does not stream from {other} within 90 s: {list}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let timelines = c.timelines(&other);
    let new_member = member_of(&c, &other);
    assert_eq!(
        timelines[&new_member],
        Some(before + 1),
        "promoted more than once (the refuser was promoted?): {timelines:?}"
    );
    assert_eq!(
        timelines[&refuser_member],
        Some(before + 1),
        "{timelines:?}"
    );
    assert_eq!(writable_hosts(&rt, &hosts), [new_member]);
}

/// The member name of node file `file`.
fn member_of(c: &ProcCluster, file: &str) -> String {
    let text = std::fs::read_to_string(&c.nodes[file].config).expect("config");
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("config parses");
    yaml["name"].as_str().expect("name").to_string()
}
