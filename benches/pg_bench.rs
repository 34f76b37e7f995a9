//! The PostgreSQL cluster benchmark on loopback (release binaries, real
//! PostgreSQL, the 2 data nodes + witness example). Prints figures, asserts
//! nothing. Needs root (PostgreSQL runs as `postgres`).
//!
//! ```text
//! cargo bench --bench pg_bench
//! ```
//!
//! - bootstrap: empty data dirs → one primary and a streaming replica;
//! - SIGTERM handover: the longest gap between two acknowledged writes of a
//!   client writing every 10 ms through a multi-host DSN
//!   (`target_session_attrs=read-write`), median of 5 handovers;
//! - idle RSS and CPU of every pgkeel process over 10 s.

#[path = "../tests/common/procs.rs"]
#[allow(dead_code)]
mod procs;
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

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: pg_bench needs root (PostgreSQL runs as `postgres`)");
        return;
    }
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
    let dsn = writeloop::dsn(&all, "demo-superuser-password");
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

    // Hard loss of the primary node: kill -9 of its pgkeel (the postmaster
    // follows by its parent-death signal) at a random moment of the
    // keepalive cycle, default TTL.
    let mut downtimes = Vec::new();
    for round in 1..=3 {
        let writes = writeloop::WriteLoop::start(
            dsn.clone(),
            Duration::from_millis(10),
            1_000_000,
            Duration::from_secs(120),
        );
        // A random offset within the 1 s keepalive cycle.
        let jitter = Duration::from_millis(1_000 + u64::from(rand_u16()) % 1_000);
        std::thread::sleep(jitter);
        let file = c.file_of(&leader);
        let killed = Instant::now();
        c.kill9(&file);
        if !writes.wait_for_more(100, Duration::from_secs(60)) {
            println!("hard kill {round}: writes did not resume within 60 s");
        }
        let stats = writes.finish();
        let restarted = Instant::now();
        c.start(&file);
        let (new_leader, _) = c.wait_streaming(2, Duration::from_secs(120));
        println!(
            "hard kill {round}: {leader} killed -> {new_leader}: longest write gap {:.3} s; old primary streaming again {:.1} s after its restart (run took {:.1} s)",
            stats.longest_gap.as_secs_f64(),
            restarted.elapsed().as_secs_f64(),
            killed.elapsed().as_secs_f64()
        );
        downtimes.push(stats.longest_gap);
        leader = new_leader;
    }
    downtimes.sort();
    println!(
        "hard kill of the primary, write downtime at the default TTL, median of 3: {:.3} s",
        downtimes[1].as_secs_f64()
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
