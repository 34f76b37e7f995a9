//! The `sync` and `hunter` parts of pg_bench: what synchronous replication
//! costs a commit, and the lost-write hunter's long run.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::hunter::{self, Hunt, Mode};
use crate::procs::ProcCluster;
use crate::SUPERUSER_PASSWORD;

const OFF: Mode = Mode {
    synchronous_mode: "off",
    strict: false,
};
const ON: Mode = Mode {
    synchronous_mode: "on",
    strict: false,
};
const QUORUM: Mode = Mode {
    synchronous_mode: "quorum",
    strict: false,
};

/// pgbench's `simple-update` (one UPDATE, one SELECT, one INSERT per
/// transaction: one commit each) from one client for `seconds`, with
/// synchronous_mode off, on and quorum in turn on the same three-data-node
/// cluster: p50 and mean commit latency and tps of each.
pub fn commit_latency(seconds: u64) {
    let Some(pgbench) = pgkeel::postgres::find_bin_dir(None)
        .ok()
        .map(|d| d.join("pgbench"))
        .filter(|p| p.exists())
    else {
        println!("SKIP SKIP SKIP: pgbench not found next to the PostgreSQL server (scripts/setup.sh installs the postgresql package)");
        return;
    };
    let mut c = ProcCluster::from_example("three-node");
    c.start_all();
    let (leader, hosts) = c.wait_streaming(3, Duration::from_secs(120));
    let primary = hosts[&leader].clone();
    let via = c.file_of(&leader);
    if let Err(e) = run_pgbench(&pgbench, &primary, &["-i", "-s", "1", "-q"], c.dir.path()) {
        println!("sync: pgbench -i failed: {e}");
        return;
    }
    for mode in [OFF, ON, QUORUM] {
        let names = match hunter::set_mode(&c, &via, &primary, mode) {
            Ok(n) => n,
            Err(e) => {
                println!("sync {:<18} skipped: {e}", mode.label());
                continue;
            }
        };
        let logs = c
            .dir
            .path()
            .join(format!("pgbench-{}", mode.synchronous_mode));
        let _ = std::fs::create_dir_all(&logs);
        let args = [
            "-n",
            "-b",
            "simple-update",
            "-c",
            "1",
            "-T",
            &seconds.to_string(),
            "-M",
            "prepared",
            "-l",
            "--log-prefix",
            &logs.join("tx").display().to_string(),
        ];
        let out = match run_pgbench(&pgbench, &primary, &args, c.dir.path()) {
            Ok(out) => out,
            Err(e) => {
                println!("sync {:<18} pgbench failed: {e}", mode.label());
                continue;
            }
        };
        let tps = out
            .lines()
            .find(|l| l.starts_with("tps = "))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("?")
            .to_string();
        let mut us = latencies(&logs);
        us.sort_unstable();
        let p50 = us.get(us.len() / 2).copied().unwrap_or(0);
        let p99 = us.get(us.len() * 99 / 100).copied().unwrap_or(0);
        let mean = us.iter().sum::<u64>() / (us.len() as u64).max(1);
        println!(
            "sync {:<18} commit latency p50 {:.3} ms, mean {:.3} ms, p99 {:.3} ms, {tps} tps ({} transactions, 1 client, {seconds} s; synchronous_standby_names = '{names}')",
            mode.label(),
            p50 as f64 / 1000.0,
            mean as f64 / 1000.0,
            p99 as f64 / 1000.0,
            us.len()
        );
    }
}

/// Runs pgbench against `host:port` as the superuser; its stdout.
fn run_pgbench(pgbench: &Path, host: &str, args: &[&str], cwd: &Path) -> Result<String, String> {
    let (h, p) = host.rsplit_once(':').ok_or("host:port")?;
    let out = Command::new(pgbench)
        .args(["-h", h, "-p", p, "-U", "postgres"])
        .args(args)
        .arg("postgres")
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .current_dir(cwd)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every transaction's latency in µs from pgbench's `-l` files in `dir`
/// (`client_id transaction_no time script_no time_epoch time_us`).
fn latencies(dir: &Path) -> Vec<u64> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|t| {
            t.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// The lost-write hunter in its long mode: `faults` per mode unless
/// `PGKEEL_HUNTER_FAULTS` says otherwise. A failed hunt prints its seed
/// and why (the panic message) and the next mode runs.
pub fn hunters(faults: usize) {
    let modes = [
        (OFF, "two-plus-witness", 2),
        (ON, "two-plus-witness", 2),
        (Mode { strict: true, ..ON }, "two-plus-witness", 2),
        (
            Mode {
                strict: true,
                ..QUORUM
            },
            "three-node",
            3,
        ),
    ];
    for (mode, example, nodes) in modes {
        let hunt = Hunt::new(mode, example, nodes, faults);
        let seed = hunt.seed;
        match std::panic::catch_unwind(|| hunt.run()) {
            Ok(r) => println!("hunter on {example}, {}", r.summary()),
            Err(_) => println!(
                "hunter {:<16} {example}: FAILED (seed {seed}; the reason is printed above)",
                mode.label()
            ),
        }
    }
}
