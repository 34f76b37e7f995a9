//! The `switchover` part of pg_bench: the write gap of a planned
//! `pgkeelctl switchover` as a client sees it through the multi-host DSN
//! and (when HAProxy is installed) behind the shipped haproxy.cfg.

use std::time::{Duration, Instant};

use crate::haproxy::{self, Haproxy};
use crate::{median, rand_u16, started, writeloop, SUPERUSER_PASSWORD};

pub fn switchovers(runs: usize) {
    let ttl = Duration::from_secs(5);
    let (c, mut leader, hosts) = started(ttl);
    let bin = haproxy::binary();
    if bin.is_none() {
        println!("SKIP SKIP SKIP: haproxy is not installed (scripts/setup.sh installs it); switchovers are measured through the DSN only");
    }
    let h = bin.map(|b| Haproxy::start(&c, "two-plus-witness", &b));
    let direct = writeloop::dsn(&hosts, SUPERUSER_PASSWORD);
    let (mut via_dsn, mut via_haproxy, mut commands) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=runs {
        let file = c.file_of(&leader);
        if let Some(h) = &h {
            let others: Vec<String> = c
                .names()
                .into_iter()
                .filter(|n| *n != file && !c.nodes[n].witness)
                .collect();
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            h.wait_routes(&file, &others, Duration::from_secs(30));
        }
        let every = Duration::from_millis(10);
        let max_time = Duration::from_secs(120);
        let b = writeloop::WriteLoop::start(direct.clone(), every, 1_000_000, max_time);
        // Ids start at the loop's start time in microseconds: apart by far
        // more than either loop writes.
        std::thread::sleep(Duration::from_millis(100));
        let a = h.as_ref().map(|h| {
            let proxied = writeloop::dsn(std::slice::from_ref(&h.primary), SUPERUSER_PASSWORD);
            writeloop::WriteLoop::start(proxied, every, 1_000_000, max_time)
        });
        let writing = b.wait_for_more(20, Duration::from_secs(30))
            && a.as_ref()
                .is_none_or(|a| a.wait_for_more(20, Duration::from_secs(30)));
        if !writing {
            println!("switchover {round}: a write loop never wrote; skipped");
            continue;
        }
        std::thread::sleep(Duration::from_millis(u64::from(rand_u16()) % 1_000));
        let asked = Instant::now();
        let out = c.ctl(&file, &["switchover", "--force"]);
        let took = asked.elapsed();
        if !out.status.success() {
            println!(
                "switchover {round}: pgkeelctl failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        }
        let new_leader = c.wait_new_leader(&leader, &[], Duration::from_secs(30));
        let resumed = b.wait_for_more(100, Duration::from_secs(60))
            & a.as_ref()
                .is_none_or(|a| a.wait_for_more(100, Duration::from_secs(60)));
        let sb = b.finish();
        let sa = a.map(writeloop::WriteLoop::finish);
        println!(
            "switchover {round}: {leader} -> {new_leader}: pgkeelctl returned after {:.3} s; longest write gap through the multi-host DSN {:.3} s ({} failed attempts){}{}",
            took.as_secs_f64(),
            sb.longest_gap.as_secs_f64(),
            sb.failures,
            sa.as_ref()
                .map(|s| format!(
                    ", behind HAProxy {:.3} s ({} failed attempts)",
                    s.longest_gap.as_secs_f64(),
                    s.failures
                ))
                .unwrap_or_default(),
            if resumed { "" } else { "; writes did not resume within 60 s" }
        );
        via_dsn.push(sb.longest_gap);
        via_haproxy.extend(sa.map(|s| s.longest_gap));
        commands.push(took);
        // The old primary rejoins as a standby before the next round.
        c.wait_streaming(2, Duration::from_secs(120));
        leader = new_leader;
    }
    println!(
        "pgkeelctl switchover, median of {}: write gap through the multi-host DSN {:.3} s, behind HAProxy {}, pgkeelctl returned after {:.3} s",
        via_dsn.len(),
        median(via_dsn).as_secs_f64(),
        if via_haproxy.is_empty() {
            "not measured".to_string()
        } else {
            format!("{:.3} s", median(via_haproxy).as_secs_f64())
        },
        median(commands).as_secs_f64()
    );
}
