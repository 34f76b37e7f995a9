//! Helpers for tests that run real PostgreSQL servers: skip loudly where
//! PostgreSQL cannot run, one server test at a time, free ports, 0755 test
//! roots, and teardown by PID even when a test panics.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pgkeel::config::{Authentication, PgListen, PgUser, PostgresqlConfig, Scalar, Secret};

pub const SUPERUSER: &str = "postgres";
pub const REPLICATOR: &str = "replicator";
pub const REPLICATOR_PASSWORD: &str = "repl-pass 'quoted'";
pub const REWINDER: &str = "rewinder";

/// Why real-PostgreSQL tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if let Err(e) = pgkeel::postgres::find_bin_dir(None) {
        return Some(e.to_string());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0
        && pgkeel::postgres::os::lookup_name("postgres")
            .ok()
            .flatten()
            .is_none()
    {
        return Some("running as root and the OS user \"postgres\" does not exist".into());
    }
    None
}

/// Returns false (after a loud line on stderr) when the test must skip.
pub fn can_run(test: &str) -> bool {
    match skip_reason() {
        Some(why) => {
            skipped(test, &why);
            false
        }
        None => true,
    }
}

/// Says loudly that a test skipped. Written to the stderr handle, not with
/// `eprintln!`, which libtest captures and hides for passing tests.
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

/// Real-PostgreSQL tests compete for two cores: one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A temporary directory the PostgreSQL user can enter (tempfile makes
/// 0700 directories).
pub fn test_root() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("pgk")
        .tempdir()
        .expect("cannot create a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod test root");
    dir
}

/// The roles every test cluster uses.
pub fn auth() -> Authentication {
    Authentication {
        superuser: PgUser {
            username: SUPERUSER.into(),
            password: Some(Secret::new("super-pass".into())),
        },
        replication: PgUser {
            username: REPLICATOR.into(),
            password: Some(Secret::new(REPLICATOR_PASSWORD.into())),
        },
        rewind: Some(PgUser {
            username: REWINDER.into(),
            password: Some(Secret::new("rewind-pass".into())),
        }),
    }
}

/// A node's `postgresql:` section for a test server on loopback.
pub fn pg_config(data_dir: &Path, port: u16) -> PostgresqlConfig {
    let parameters = BTreeMap::from([
        ("fsync".to_owned(), Scalar::Bool(false)),
        ("shared_buffers".to_owned(), Scalar::Str("16MB".into())),
        ("max_connections".to_owned(), Scalar::Int(20)),
    ]);
    PostgresqlConfig {
        listen: PgListen {
            hosts: vec!["127.0.0.1".into()],
            port,
        },
        connect_address: None,
        data_dir: data_dir.to_owned(),
        bin_dir: None,
        os_user: "postgres".into(),
        authentication: auth(),
        parameters,
        pg_hba: vec![
            format!("host replication {REPLICATOR} 127.0.0.1/32 scram-sha-256"),
            "host all all 127.0.0.1/32 scram-sha-256".into(),
        ],
        use_pg_rewind: true,
        remove_data_directory_on_rewind_failure: false,
        callbacks: Default::default(),
        pre_promote: None,
        callback_timeout: Duration::from_secs(30),
    }
}

/// True when `pid` is a live process (gone or zombie is dead).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|s| s != 'Z' && s != 'X'),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to die.
pub fn wait_dead(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Kills, on drop, every PID added and every postmaster named by the
/// `postmaster.pid` of every data directory added: teardown even on panic.
#[derive(Default)]
pub struct KillGuard {
    pids: Vec<u32>,
    data_dirs: Vec<PathBuf>,
}

impl KillGuard {
    pub fn pid(&mut self, pid: u32) {
        self.pids.push(pid);
    }

    pub fn data_dir(&mut self, dir: &Path) {
        self.data_dirs.push(dir.to_owned());
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        let from_files = self.data_dirs.iter().filter_map(|d| {
            std::fs::read_to_string(d.join("postmaster.pid"))
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse::<u32>()
                .ok()
        });
        let pids: Vec<u32> = self
            .pids
            .iter()
            .copied()
            .chain(from_files)
            .filter(|p| *p > 1)
            .collect();
        for &pid in &pids {
            if alive(pid) {
                // SAFETY: kill has no memory preconditions; pid > 1.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGQUIT) };
            }
        }
        for &pid in &pids {
            if !wait_dead(pid, Duration::from_secs(5)) {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}
