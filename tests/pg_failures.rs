//! Failures of real PostgreSQL under real pgkeel processes (issue 4): the
//! primary's postmaster killed alone, the primary isolated from both other
//! voters, a rewind that fails, and the loss of the primary's machine in a
//! three-data-node cluster. (The primary's agent killed alone is in
//! `pg_cluster.rs`.)
//!
//! No timing is asserted except generous bounds on liveness; the phases are
//! logged so a failure reads like a story, with every node's log tail.
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

use std::path::Path;
use std::time::{Duration, Instant};

use procs::ProcCluster;
use realpg::{
    direct_dsn, exclusive, runtime, sql, two_plus_witness_streaming, wait_rows, writable,
    writable_hosts, SUPERUSER_PASSWORD,
};

/// The examples' `bootstrap.dcs.ttl`.
const TTL: Duration = Duration::from_secs(5);

/// A process of the cluster under test, by PID.
fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a PID read from the cluster's own postmaster.pid.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// SIGKILL of the primary's postmaster alone: its pgkeel restarts it in
/// place within the lease. No failover: the same leader on the same
/// timeline, writes resume, and every acknowledged write survives (crash
/// recovery replays what was committed).
#[test]
fn a_killed_primary_postmaster_is_restarted_in_place() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let (c, leader, hosts) = two_plus_witness_streaming();
    let file = c.file_of(&leader);
    let timeline = c.timelines(&file)[&leader];
    assert!(timeline.is_some(), "no timeline published for {leader}");
    let old = c
        .postmaster_pid(&file)
        .expect("the primary's postmaster runs");
    let writes = writeloop::running(&c, &hosts, SUPERUSER_PASSWORD, Duration::from_secs(180));
    tracing::info!(
        leader,
        postmaster = old,
        "phase: kill -9 the primary's postmaster"
    );
    kill(old, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        if let Some((now_leader, _)) = c.running_leader(&[]) {
            assert_eq!(now_leader, leader, "a failover happened\n{}", c.logs());
        }
        match c.postmaster_pid(&file) {
            Some(pid) if pid != old => break pid,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the postmaster was not restarted within 60 s\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    tracing::info!(postmaster = new, "phase: restarted in place; writes resume");
    assert!(
        writes.wait_for_more(50, Duration::from_secs(60)),
        "writes did not resume on the restarted primary\n{}",
        c.logs()
    );
    let stats = writes.finish();
    let (now_leader, _) = c.wait_streaming(2, Duration::from_secs(60));
    assert_eq!(now_leader, leader, "a failover happened\n{}", c.logs());
    assert_eq!(
        c.timelines(&file)[&leader],
        timeline,
        "the timeline changed: the server was promoted, not restarted\n{}",
        c.logs()
    );
    let lost = writeloop::missing(&direct_dsn(&hosts[&leader]), &stats.acked).unwrap();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    tracing::info!(
        longest_gap = ?stats.longest_gap,
        acked = stats.acked.len(),
        "phase: same leader, same timeline, nothing lost"
    );
}

/// The primary cut off from both other voters (their processes stopped
/// with SIGSTOP, so it has no Raft quorum): it cannot renew its lease and
/// fences its postmaster; no node is writable meanwhile. Resumed, the
/// cluster settles on exactly one writable primary.
#[test]
fn an_isolated_primary_stops_writing_and_the_cluster_recovers() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let (c, leader, hosts) = two_plus_witness_streaming();
    let file = c.file_of(&leader);
    let others: Vec<String> = c.names().into_iter().filter(|n| *n != file).collect();
    assert!(writable(&rt, &hosts[&leader]));
    tracing::info!(leader, ?others, "phase: SIGSTOP both other voters");
    let resume = c.sigstop(&others);
    let stopped = Instant::now();
    // Generous: the lease runs out within the TTL; fencing is immediate.
    let bound = TTL + Duration::from_secs(15);
    while writable(&rt, &hosts[&leader]) {
        assert!(
            stopped.elapsed() < bound,
            "the isolated primary still accepts writes {bound:?} after losing its quorum\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!(after = ?stopped.elapsed(), "phase: the isolated primary refuses writes");
    // Past every lease it could have held: still nobody writable.
    let hold = Instant::now();
    while hold.elapsed() < TTL {
        let w = writable_hosts(&rt, &hosts);
        assert!(
            w.is_empty(),
            "writable while the primary is isolated: {w:?}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    tracing::info!("phase: SIGCONT both voters; one primary again");
    drop(resume);
    // Right after SIGCONT, `list` may still show member keys written
    // before the stop (the old leader, a "streaming" replica): never two
    // writable servers, and settle on the one the leader key names, as
    // read at each step.
    let deadline = Instant::now() + Duration::from_secs(90);
    let now_leader = loop {
        let w = writable_hosts(&rt, &hosts);
        assert!(w.len() <= 1, "two writable primaries: {w:?}\n{}", c.logs());
        if let Some((leader, _)) = c.running_leader(&[]) {
            if w == [leader.clone()] {
                break leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single writable primary named by the leader key within 90 s (writable: {w:?})\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    c.wait_streaming(2, Duration::from_secs(90));
    tracing::info!(
        now_leader,
        "phase: recovered with exactly one writable primary"
    );
}

/// A directory of symlinks to the real PostgreSQL programs, except
/// `pg_rewind`, which fails.
fn bin_dir_with_failing_rewind(under: &Path) -> std::path::PathBuf {
    let real = pgkeel::postgres::find_bin_dir(None).expect("PostgreSQL binaries");
    let dir = under.join("bin-failing-rewind");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&real).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "pg_rewind" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let script = dir.join("pg_rewind");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'pg_rewind: error: made to fail by the test' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A former primary whose pg_rewind fails: after the retries, its data
/// directory is moved aside (kept, renamed `<dir>.failed-<time>`) and the
/// node re-clones with pg_basebackup and streams from the new leader.
#[test]
fn a_failed_rewind_moves_the_data_dir_aside_and_reclones() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let (mut c, leader, hosts) = two_plus_witness_streaming();
    let file = c.file_of(&leader);
    let pgdata = c.pg_data_dir(&file);
    let fake = bin_dir_with_failing_rewind(c.dir.path());
    tracing::info!(leader, "phase: kill -9 the primary's pgkeel");
    c.kill9(&file);
    let survivor = c.wait_new_leader(&leader, &[], Duration::from_secs(30));
    sql(
        &rt,
        &hosts[&survivor],
        "create table t(x int); insert into t values (1)",
    )
    .unwrap();
    tracing::info!(
        survivor,
        "phase: restart the old primary with a pg_rewind that fails"
    );
    c.set_config_line(&file, "bin_dir", &fake.display().to_string());
    let restarted = Instant::now();
    c.start(&file);
    let (now_leader, _) = c.wait_streaming(2, Duration::from_secs(180));
    assert_eq!(now_leader, survivor);
    tracing::info!(after = ?restarted.elapsed(), "phase: streaming again");
    let log = std::fs::read_to_string(&c.nodes[&file].log).unwrap_or_default();
    let attempts = log.matches("running pg_rewind").count();
    tracing::info!(attempts, "pg_rewind runs before the move aside");
    assert!(
        log.contains("made to fail by the test"),
        "pg_rewind never ran: the restarted former primary was started as a standby without the rewind its stopped-primary state calls for\n{}",
        c.logs()
    );
    assert!(log.contains("data directory moved aside"), "{}", c.logs());
    let name = pgdata.file_name().unwrap().to_string_lossy().to_string();
    let aside: Vec<_> = std::fs::read_dir(pgdata.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(&format!("{name}.failed-")))
        })
        .collect();
    assert_eq!(
        aside.len(),
        1,
        "expected one moved-aside directory: {aside:?}"
    );
    assert!(
        aside[0].join("PG_VERSION").is_file() && aside[0].join("global/pg_control").is_file(),
        "the moved-aside directory {} lost its contents",
        aside[0].display()
    );
    assert!(pgdata.join("PG_VERSION").is_file(), "no re-cloned data dir");
    assert!(
        log.contains("running pg_basebackup"),
        "the node did not re-clone\n{}",
        c.logs()
    );
    wait_rows(&rt, &hosts[&leader], 1, &c);
    let timelines = c.timelines(&c.file_of(&survivor));
    assert_eq!(timelines[&leader], timelines[&survivor], "{timelines:?}");
}

/// Three data nodes: the primary's machine is lost (its pgkeel and its
/// postmaster SIGKILLed together). A replica is promoted, writes through
/// the multi-host DSN resume, and the killed node, restarted, rejoins as a
/// streaming standby on the new timeline.
#[test]
fn three_data_nodes_survive_the_loss_of_the_primary_machine() {
    let Some(_serial) = exclusive() else {
        return;
    };
    let rt = runtime();
    let mut c = ProcCluster::from_example("three-node");
    c.start_all();
    let (leader, hosts) = c.wait_streaming(3, Duration::from_secs(90));
    let file = c.file_of(&leader);
    let before = c.timelines(&file)[&leader].expect("the leader's timeline");
    let postmaster = c.postmaster_pid(&file).expect("the primary's postmaster");
    let writes = writeloop::running(&c, &hosts, SUPERUSER_PASSWORD, Duration::from_secs(180));
    tracing::info!(
        leader,
        postmaster,
        "phase: kill -9 the primary's pgkeel and postmaster"
    );
    c.kill9(&file);
    kill(postmaster, libc::SIGKILL);
    let new_leader = c.wait_new_leader(&leader, &[], Duration::from_secs(30));
    assert!(
        writes.wait_for_more(50, Duration::from_secs(30)),
        "writes did not resume on {new_leader}\n{}",
        c.logs()
    );
    let stats = writes.finish();
    tracing::info!(new_leader, longest_gap = ?stats.longest_gap, "phase: promoted, writes resumed; restart the killed node");
    sql(
        &rt,
        &hosts[&new_leader],
        "create table t(x int); insert into t values (1)",
    )
    .unwrap();
    c.start(&file);
    let (now_leader, _) = c.wait_streaming(3, Duration::from_secs(90));
    assert_eq!(now_leader, new_leader);
    let timelines = c.timelines(&c.file_of(&new_leader));
    let new_timeline = timelines[&new_leader].expect("the new leader's timeline");
    assert!(new_timeline > before, "{timelines:?}, was {before}");
    for (name, tl) in &timelines {
        assert_eq!(
            *tl,
            Some(new_timeline),
            "{name} is not on the new timeline: {timelines:?}"
        );
    }
    wait_rows(&rt, &hosts[&leader], 1, &c);
    assert_eq!(writable_hosts(&rt, &hosts), [new_leader]);
}
