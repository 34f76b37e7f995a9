//! The PostgreSQL cluster benchmark on loopback (release binaries, real
//! PostgreSQL, the 2 data nodes + witness example). Prints figures, asserts
//! nothing. Needs root (PostgreSQL runs as `postgres`).
//!
//! ```text
//! cargo bench --bench pg_bench                  # every part
//! cargo bench --bench pg_bench -- hardkill soak # some parts: basics, hardkill, soak, health, haproxy, switchover, sync, hunter
//! PGKEEL_HUNTER_FAULTS=200 cargo bench --bench pg_bench -- hunter
//! ```
//!
//! - bootstrap: empty data dirs → one primary and a streaming replica;
//! - SIGTERM handover: the longest gap between two acknowledged writes of a
//!   client writing every 10 ms through a multi-host DSN
//!   (`target_session_attrs=read-write`), median of 5 handovers;
//! - idle RSS and CPU of every pgkeel process over 10 s;
//! - hard kill of the primary node (kill -9 of its pgkeel; its postmaster
//!   follows) at a random moment of the 1 s keepalive cycle, at TTL 5 s
//!   (the default), 10 s and 30 s, 3 runs each: the longest write gap
//!   through the multi-host DSN, the time until `list` shows another
//!   member as the running leader, and how long the restarted old primary
//!   takes to stream again; medians;
//! - stall soak: 10 stalls of 2 s (iptables drops on loopback of every
//!   packet to, from and by one node's gRPC connections; primary node,
//!   replica node and witness in turn, 4 s apart), counting changes of the
//!   PostgreSQL leader or its timeline (false failovers) and of the Raft
//!   leader. Prints a loud SKIP where iptables is unusable;
//! - health: REST health checks (`/primary` on the primary, `/replica` on
//!   the replica; OPTIONS as HAProxy sends it, and GET) from one
//!   sequential client, p50/p99 and requests/s, over one keep-alive
//!   connection and with a new connection per request;
//! - haproxy: kill -9 of the primary's pgkeel while one client writes
//!   through HAProxy (config/examples/haproxy.cfg) and one through the
//!   multi-host DSN: each one's longest write gap, median of 3;
//! - switchover: `pgkeelctl switchover --force` while one client writes
//!   through the multi-host DSN and one behind HAProxy: each one's longest
//!   write gap and how long pgkeelctl took to return, median of 5 (the old
//!   primary streams again before each next round).
//! - sync: commit latency (p50, mean, p99) and tps of pgbench's
//!   simple-update from one client on the three-data-node example, with
//!   `synchronous_mode` off, on and quorum in turn, 10 s each;
//! - hunter: the lost-write hunter (tests/lost_writes.rs) in its long
//!   mode, 30 faults per mode unless `PGKEEL_HUNTER_FAULTS` says: async,
//!   on, on + strict, quorum + strict; faults injected, writes
//!   acknowledged, writes lost.

#[path = "../tests/common/haproxy.rs"]
#[allow(dead_code)]
mod haproxy;
#[path = "../tests/common/hunter.rs"]
mod hunter;
#[path = "../tests/common/netstall.rs"]
mod netstall;
#[path = "../tests/common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "../tests/common/realpg.rs"]
#[allow(dead_code)]
mod realpg;
#[path = "pg_bench/rest.rs"]
mod rest;
#[path = "pg_bench/switchover.rs"]
mod switchover;
#[path = "pg_bench/sync.rs"]
mod sync;
#[path = "../tests/common/writeloop.rs"]
#[allow(dead_code)]
mod writeloop;

use std::time::{Duration, Instant};

use procs::ProcCluster;

fn proc_stat(pid: u32) -> (u64, u64) {
    // (utime + stime in clock ticks, RSS in kB)
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks, rss)
}

const SUPERUSER_PASSWORD: &str = "demo-superuser-password";

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: pg_bench needs root (PostgreSQL runs as `postgres`)");
        return;
    }
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|x| x == p);
    if want("basics") {
        basics();
    }
    if want("hardkill") {
        for ttl in [5, 10, 30] {
            hard_kills(Duration::from_secs(ttl), 3);
        }
    }
    if want("soak") {
        stall_soak(10, Duration::from_secs(2), Duration::from_secs(4));
    }
    if want("health") {
        rest::health();
    }
    if want("haproxy") {
        rest::haproxy_failover(3);
    }
    if want("switchover") {
        switchover::switchovers(5);
    }
    if want("sync") {
        sync::commit_latency(10);
    }
    if want("hunter") {
        sync::hunters(30);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// A two-plus-witness cluster with `ttl`, started and streaming.
fn started(ttl: Duration) -> (ProcCluster, String, Vec<String>) {
    let mut c = ProcCluster::from_example("two-plus-witness");
    c.set_ttl(ttl);
    c.start_all();
    let (leader, hosts) = c.wait_streaming(2, Duration::from_secs(120));
    (c, leader, hosts.into_values().collect())
}

/// Hard loss of the primary node at a random moment of the keepalive
/// cycle: kill -9 of its pgkeel (the postmaster follows by its
/// parent-death signal).
fn hard_kills(ttl: Duration, runs: usize) {
    let (mut c, mut leader, hosts) = started(ttl);
    let dsn = writeloop::dsn(&hosts, SUPERUSER_PASSWORD);
    let (mut gaps, mut to_leader, mut rejoins) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=runs {
        let writes = writeloop::WriteLoop::start(
            dsn.clone(),
            Duration::from_millis(10),
            1_000_000,
            ttl + Duration::from_secs(120),
        );
        if !writes.wait_for_more(20, Duration::from_secs(30)) {
            println!("hard kill ttl {ttl:?} {round}: the write loop never wrote; skipped");
            continue;
        }
        // A random offset within the 1 s keepalive cycle.
        std::thread::sleep(Duration::from_millis(u64::from(rand_u16()) % 1_000));
        let file = c.file_of(&leader);
        let killed = Instant::now();
        c.kill9(&file);
        let new_leader = c.wait_new_leader(&leader, &[], ttl * 3 + Duration::from_secs(30));
        let elected = killed.elapsed();
        if !writes.wait_for_more(100, Duration::from_secs(60)) {
            println!("hard kill ttl {ttl:?} {round}: writes did not resume within 60 s");
        }
        let stats = writes.finish();
        let restarted = Instant::now();
        c.start(&file);
        c.wait_streaming(2, Duration::from_secs(180));
        let rejoin = restarted.elapsed();
        println!(
            "hard kill ttl {:>2} s run {round}: {leader} killed -> {new_leader} listed leader after {:.3} s; longest write gap {:.3} s ({} writes, {} failed attempts); old primary streaming {:.2} s after its restart",
            ttl.as_secs(),
            elected.as_secs_f64(),
            stats.longest_gap.as_secs_f64(),
            stats.acked.len(),
            stats.failures,
            rejoin.as_secs_f64()
        );
        gaps.push(stats.longest_gap);
        to_leader.push(elected);
        rejoins.push(rejoin);
        leader = new_leader;
    }
    println!(
        "hard kill of the primary at ttl {} s, median of {}: write downtime {:.3} s, new leader listed after {:.3} s, old primary rejoined (streaming) {:.2} s after restart",
        ttl.as_secs(),
        gaps.len(),
        median(gaps).as_secs_f64(),
        median(to_leader).as_secs_f64(),
        median(rejoins).as_secs_f64()
    );
}

/// The PostgreSQL leader, its timeline and the Raft leader, asked through
/// a node that is not stalled.
fn observe(c: &ProcCluster, stalled: &str) -> (Option<(String, Option<u64>)>, Option<String>) {
    let pg = c.running_leader(&[stalled]);
    let raft = c
        .names()
        .iter()
        .filter(|n| n.as_str() != stalled)
        .find_map(|n| c.status(n))
        .and_then(|s| s["leader"]["name"].as_str().map(str::to_string));
    (pg, raft)
}

/// Repeated short stalls of one node at a time; none should move the
/// leader key or the timeline.
fn stall_soak(stalls: usize, stall: Duration, between: Duration) {
    if let Some(why) = netstall::unusable() {
        println!("SKIP SKIP SKIP: stall soak not run: {why}");
        return;
    }
    let (c, leader, hosts) = started(Duration::from_secs(5));
    let writes = writeloop::WriteLoop::start(
        writeloop::dsn(&hosts, SUPERUSER_PASSWORD),
        Duration::from_millis(10),
        10_000_000,
        (stall + between) * u32::try_from(stalls).unwrap_or(u32::MAX) + Duration::from_secs(60),
    );
    writes.wait_for_more(20, Duration::from_secs(30));
    let leader_file = c.file_of(&leader);
    let mut targets: Vec<String> = vec![leader_file.clone()];
    targets.extend(c.names().into_iter().filter(|n| *n != leader_file));
    let ports: Vec<u16> = c.names().iter().map(|n| c.grpc_port(n)).collect();
    let (first_pg, first_raft) = observe(&c, "");
    let mut last_pg = first_pg.clone();
    let mut last_raft = first_raft.clone();
    let (mut pg_changes, mut tl_changes, mut raft_changes) = (0, 0, 0);
    let started = Instant::now();
    let mut watch = |stalled: &str, for_: Duration| {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            let (pg, raft) = observe(&c, stalled);
            if let (Some((name, tl)), Some((last_name, last_tl))) = (&pg, &last_pg) {
                if name != last_name {
                    pg_changes += 1;
                    println!(
                        "  false failover at {:.1} s: leader {last_name} -> {name}",
                        started.elapsed().as_secs_f64()
                    );
                }
                if tl != last_tl {
                    tl_changes += 1;
                    println!("  timeline change: {last_tl:?} -> {tl:?}");
                }
            }
            if let (Some(r), Some(lr)) = (&raft, &last_raft) {
                if r != lr {
                    raft_changes += 1;
                }
            }
            last_pg = pg.or(last_pg.take());
            last_raft = raft.or(last_raft.take());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for i in 0..stalls {
        let target = &targets[i % targets.len()];
        let own = c.grpc_port(target);
        let peers: Vec<u16> = ports.iter().copied().filter(|p| *p != own).collect();
        let guard = match netstall::Stall::node(own, c.pid(target).unwrap_or(0), &peers) {
            Ok(g) => g,
            Err(e) => {
                println!("SKIP SKIP SKIP: stall soak stopped: {e}");
                return;
            }
        };
        println!(
            "stall {} at {:.1} s: {target} cut off for {stall:?} ({} iptables rules)",
            i + 1,
            started.elapsed().as_secs_f64(),
            guard.rules()
        );
        // The stall ends on time even when an observation (a `list`
        // that waits for the store) runs long.
        let lift = std::thread::spawn(move || {
            std::thread::sleep(stall);
            drop(guard);
        });
        watch(target, stall);
        let _ = lift.join();
        watch("", between);
    }
    let stats = writes.finish();
    if pg_changes + tl_changes > 0 || std::env::var_os("PGKEEL_KEEP_LOGS").is_some() {
        let keep = std::env::temp_dir().join(format!("pg_bench-soak-{}", std::process::id()));
        if std::fs::create_dir_all(&keep).is_ok() {
            for n in c.nodes.values() {
                let _ = std::fs::copy(&n.log, keep.join(format!("{}.log", n.name)));
            }
            println!("  node logs kept in {}", keep.display());
        }
    }
    println!(
        "stall soak: {stalls} stalls of {:.1} s over {:.0} s: {pg_changes} false failovers (leader changes), {tl_changes} timeline changes, {raft_changes} Raft leader changes; longest write gap {:.3} s ({} writes, {} failed attempts); leader {first_pg:?} -> {last_pg:?}",
        stall.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        stats.longest_gap.as_secs_f64(),
        stats.acked.len(),
        stats.failures
    );
}

/// Bootstrap, idle cost, SIGTERM handovers.
fn basics() {
    let mut c = ProcCluster::from_example("two-plus-witness");
    let t = Instant::now();
    c.start_all();
    let (mut leader, hosts) = c.wait_streaming(2, Duration::from_secs(120));
    println!(
        "bootstrap to all-streaming: {:.2} s (leader {leader})",
        t.elapsed().as_secs_f64()
    );

    std::thread::sleep(Duration::from_secs(3));
    let before: Vec<_> = c
        .names()
        .iter()
        .filter_map(|n| c.pid(n).map(|p| (n.clone(), p, proc_stat(p))))
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    for (name, pid, (t0, _)) in &before {
        let (t1, rss) = proc_stat(*pid);
        let ticks_per_s = 100.0;
        println!(
            "idle {name:<8} RSS {:>6.1} MB  CPU {:>5.2} %",
            rss as f64 / 1024.0,
            (t1.saturating_sub(*t0)) as f64 / ticks_per_s / 10.0 * 100.0
        );
    }

    let all: Vec<String> = hosts.values().cloned().collect();
    let dsn = writeloop::dsn(&all, SUPERUSER_PASSWORD);
    let mut gaps = Vec::new();
    for round in 1..=5 {
        let writes = writeloop::WriteLoop::start(
            dsn.clone(),
            Duration::from_millis(10),
            1_000_000,
            Duration::from_secs(120),
        );
        std::thread::sleep(Duration::from_secs(1));
        let file = c.file_of(&leader);
        c.sigterm(&file);
        if !writes.wait_for_more(100, Duration::from_secs(60)) {
            println!("handover {round}: writes did not resume within 60 s");
        }
        let stats = writes.finish();
        c.start(&file);
        let (new_leader, _) = c.wait_streaming(2, Duration::from_secs(120));
        println!(
            "handover {round}: {leader} -> {new_leader}: longest write gap {:.3} s ({} writes acknowledged, {} failed attempts)",
            stats.longest_gap.as_secs_f64(),
            stats.acked.len(),
            stats.failures
        );
        gaps.push(stats.longest_gap);
        leader = new_leader;
    }
    gaps.sort();
    println!(
        "SIGTERM handover write gap, median of 5: {:.3} s",
        gaps[2].as_secs_f64()
    );
}

/// A little randomness without a dependency: the clock's low bits.
fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos >> 7) as u16
}
