//! The `health` and `haproxy` parts of pg_bench: what a health check
//! costs, and what a client behind HAProxy sees of a hard failover.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::haproxy::{self, Haproxy};
use crate::{median, rand_u16, started, writeloop, SUPERUSER_PASSWORD};

/// One HTTP/1.1 request on `conn`; the status code once the whole answer
/// (its Content-Length body) is read. `None` on anything unexpected.
fn request(conn: &mut BufReader<TcpStream>, method: &str, path: &str, keep: bool) -> Option<u16> {
    let connection = if keep { "keep-alive" } else { "close" };
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).ok()?;
    let mut line = String::new();
    conn.read_line(&mut line).ok()?;
    let code = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().ok()?;
            }
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body).ok()?;
    Some(code)
}

fn connect(addr: &str) -> Option<BufReader<TcpStream>> {
    let s = TcpStream::connect(addr).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(BufReader::new(s))
}

/// `n` sequential requests; prints p50, p99 and requests/s.
fn measure(label: &str, addr: &str, method: &str, path: &str, keep: bool, n: usize) {
    let mut times = Vec::with_capacity(n);
    let mut conn = if keep { connect(addr) } else { None };
    let mut codes = std::collections::BTreeMap::new();
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let code = if keep {
            conn.as_mut().and_then(|c| request(c, method, path, true))
        } else {
            connect(addr).and_then(|mut c| request(&mut c, method, path, false))
        };
        times.push(t.elapsed());
        *codes.entry(code).or_insert(0) += 1;
        if keep && code.is_none() {
            conn = connect(addr);
        }
    }
    let total = started.elapsed();
    times.sort();
    let p = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "health {label:<28} {:<12} {method:<7} {path:<9} p50 {:>7.3} ms  p99 {:>7.3} ms  {:>7.0} req/s  codes {codes:?}",
        if keep { "keep-alive" } else { "new conn" },
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64()
    );
}

/// Health-check latency and throughput against a live primary and replica
/// (one sequential client; OPTIONS is what HAProxy sends, GET carries the
/// status JSON).
pub fn health() {
    let (c, leader, _) = started(Duration::from_secs(5));
    let primary = c.file_of(&leader);
    let replica = c
        .names()
        .into_iter()
        .find(|n| *n != primary && !c.nodes[n].witness)
        .expect("a replica");
    std::thread::sleep(Duration::from_secs(2));
    for (who, file, path) in [
        ("primary", &primary, "/primary"),
        ("replica", &replica, "/replica"),
    ] {
        let addr = c.rest_address(file);
        for method in ["OPTIONS", "GET"] {
            measure(&format!("{who} ({file})"), &addr, method, path, true, 5_000);
            measure(
                &format!("{who} ({file})"),
                &addr,
                method,
                path,
                false,
                2_000,
            );
        }
    }
}

/// Kill -9 of the primary's pgkeel while two clients write every 10 ms:
/// one through HAProxy's read-write frontend (the shipped haproxy.cfg),
/// one through the multi-host DSN. The longest gap between two
/// acknowledged writes of each, median of `runs`.
pub fn haproxy_failover(runs: usize) {
    let Some(bin) = haproxy::binary() else {
        println!("SKIP SKIP SKIP: haproxy is not installed (scripts/setup.sh installs it); the haproxy part did not run");
        return;
    };
    let ttl = Duration::from_secs(5);
    let (mut c, mut leader, hosts) = started(ttl);
    let h = Haproxy::start(&c, "two-plus-witness", &bin);
    let direct = writeloop::dsn(&hosts, SUPERUSER_PASSWORD);
    let proxied = writeloop::dsn(std::slice::from_ref(&h.primary), SUPERUSER_PASSWORD);
    let (mut via_haproxy, mut via_dsn) = (Vec::new(), Vec::new());
    for round in 1..=runs {
        let file = c.file_of(&leader);
        let others: Vec<String> = c
            .names()
            .into_iter()
            .filter(|n| *n != file && !c.nodes[n].witness)
            .collect();
        let others: Vec<&str> = others.iter().map(String::as_str).collect();
        h.wait_routes(&file, &others, Duration::from_secs(30));
        let every = Duration::from_millis(10);
        let max_time = ttl + Duration::from_secs(120);
        let a = writeloop::WriteLoop::start(proxied.clone(), every, 1_000_000, max_time);
        // Ids start at the loop's start time in microseconds: apart by
        // far more than either loop writes.
        std::thread::sleep(Duration::from_millis(100));
        let b = writeloop::WriteLoop::start(direct.clone(), every, 1_000_000, max_time);
        if !(a.wait_for_more(20, Duration::from_secs(30))
            && b.wait_for_more(20, Duration::from_secs(30)))
        {
            println!("haproxy failover {round}: a write loop never wrote; skipped");
            continue;
        }
        std::thread::sleep(Duration::from_millis(u64::from(rand_u16()) % 1_000));
        c.kill9(&file);
        let new_leader = c.wait_new_leader(&leader, &[], ttl * 3 + Duration::from_secs(30));
        let resumed = a.wait_for_more(100, Duration::from_secs(60))
            & b.wait_for_more(100, Duration::from_secs(60));
        let (sa, sb) = (a.finish(), b.finish());
        println!(
            "haproxy failover {round}: {leader} killed -> {new_leader}: longest write gap through HAProxy {:.3} s ({} failed attempts), through the multi-host DSN {:.3} s ({} failed attempts){}",
            sa.longest_gap.as_secs_f64(),
            sa.failures,
            sb.longest_gap.as_secs_f64(),
            sb.failures,
            if resumed { "" } else { "; writes did not resume within 60 s" }
        );
        via_haproxy.push(sa.longest_gap);
        via_dsn.push(sb.longest_gap);
        c.start(&file);
        c.wait_streaming(2, Duration::from_secs(180));
        leader = new_leader;
    }
    println!(
        "kill -9 of the primary at ttl 5 s, median of {}: write downtime through HAProxy (shipped haproxy.cfg) {:.3} s, through the multi-host DSN {:.3} s",
        via_haproxy.len(),
        median(via_haproxy).as_secs_f64(),
        median(via_dsn).as_secs_f64()
    );
}
