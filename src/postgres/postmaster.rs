//! The postmaster process: started directly (not through pg_ctl) as
//! pgkeel's child, so pgkeel holds its handle, reads its stderr, and the
//! kernel's death signal ties it to pgkeel (see `spawn`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Child;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use super::conf::SETTINGS_FILE;
use super::os::Identity;
use super::spawn::{self, Tail};
use super::types::StopMode;
use super::PgError;

/// The postmaster's lock file in the data directory.
pub(crate) const PID_FILE: &str = "postmaster.pid";
const POLL: Duration = Duration::from_millis(50);

/// A postmaster pgkeel started and has not yet seen exit.
pub(crate) struct Postmaster {
    /// The child handle: `stop` waits on it, which also reaps it.
    pub child: Child,
    /// Its PID (what every signal goes to).
    pub pid: u32,
    /// The last lines of its stderr, for a start-up failure message.
    pub tail: Tail,
    log_task: JoinHandle<()>,
}

/// What `postmaster.pid` says; lines 1, 2 and 8 of the file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PidFile {
    pub pid: u32,
    pub data_dir: PathBuf,
    /// `starting`, `stopping`, `ready` or `standby` (PG10+).
    pub status: Option<String>,
}

/// Reads `postmaster.pid`. `None` when absent or not (yet) complete: the
/// postmaster writes it in steps, so a torn read is normal, not an error.
pub(crate) fn read_pid_file(data_dir: &Path) -> Result<Option<PidFile>, PgError> {
    let path = data_dir.join(PID_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PgError::io(format!("reading {}", path.display()))(e)),
    };
    Ok(parse_pid_file(&text))
}

fn parse_pid_file(text: &str) -> Option<PidFile> {
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines
        .first()?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 1)?;
    let data_dir = PathBuf::from(lines.get(1)?.trim());
    let status = lines
        .get(7)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    Some(PidFile {
        pid,
        data_dir,
        status,
    })
}

/// The PID of the live postmaster of `data_dir`: `postmaster.pid` names
/// it, it was started for this directory, and the process is a postgres.
pub(crate) fn verified_pid(data_dir: &Path) -> Result<Option<u32>, PgError> {
    let Some(file) = read_pid_file(data_dir)? else {
        return Ok(None);
    };
    let same_dir = file.data_dir == data_dir
        || std::fs::canonicalize(&file.data_dir).ok() == std::fs::canonicalize(data_dir).ok();
    let is_postgres = std::fs::read(format!("/proc/{}/cmdline", file.pid))
        .map(|c| String::from_utf8_lossy(&c).contains("postgres"))
        .unwrap_or(true);
    Ok((same_dir && is_postgres && alive(file.pid)).then_some(file.pid))
}

/// Fences the postmaster of `data_dir` from a plain thread (the fencing
/// thread, see [`crate::fence`]): SIGQUIT (immediate shutdown: the
/// postmaster SIGQUITs every backend), SIGKILL after `limit`. No async
/// runtime involved. A directory with no live postmaster is already fenced.
pub fn fence_blocking(data_dir: &Path, limit: Duration) -> Result<(), String> {
    let pid = match verified_pid(data_dir) {
        Ok(Some(pid)) => pid,
        Ok(None) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    signal(pid, libc::SIGQUIT).map_err(|e| e.to_string())?;
    let gone = |until: std::time::Instant| {
        while std::time::Instant::now() < until {
            if !alive(pid) {
                return true;
            }
            std::thread::sleep(POLL.min(Duration::from_millis(10)));
        }
        !alive(pid)
    };
    if gone(std::time::Instant::now() + limit) {
        return Ok(());
    }
    tracing::error!(pid, "PostgreSQL ignored an immediate shutdown; killing it");
    signal(pid, libc::SIGKILL).map_err(|e| e.to_string())?;
    if gone(std::time::Instant::now() + Duration::from_secs(5)) {
        Ok(())
    } else {
        Err(format!(
            "the postmaster (PID {pid}) did not exit after SIGKILL"
        ))
    }
}

/// True when `pid` names a live process (not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks existence and permission.
    let rc = unsafe { libc::kill(raw, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may
        // itself hold parentheses: take the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => true,
    }
}

/// Sends `sig` to `pid`; a process already gone is not an error. Refuses
/// PIDs 0 and 1 and pgkeel's own, whatever a file said.
pub(crate) fn signal(pid: u32, sig: libc::c_int) -> Result<(), PgError> {
    let raw = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 1 && *p as u32 != std::process::id());
    let Some(raw) = raw else {
        return Err(PgError::Protocol(format!("refusing to signal PID {pid}")));
    };
    // SAFETY: kill has no memory preconditions.
    if unsafe { libc::kill(raw, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(PgError::io(format!("signalling PostgreSQL PID {pid}"))(e));
        }
    }
    Ok(())
}

/// Spawns `postgres -D <data_dir> -c config_file=<data_dir>/pgkeel.conf`.
pub(crate) async fn spawn(
    bin_dir: &Path,
    data_dir: &Path,
    who: &Identity,
) -> Result<Postmaster, PgError> {
    let mut cmd = spawn::command(&bin_dir.join("postgres"), who, libc::SIGQUIT);
    let mut config_file = std::ffi::OsString::from("config_file=");
    config_file.push(data_dir.join(SETTINGS_FILE));
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-c")
        .arg(config_file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let mut child = spawn::spawn(cmd, "postgres").await?;
    let Some(pid) = child.id() else {
        return Err(PgError::Protocol(
            "the postmaster exited before its PID was known".into(),
        ));
    };
    let tail = Tail::default();
    let log_task = match child.stderr.take() {
        Some(stderr) => spawn::log_stderr(stderr, "postgres", tail.clone()),
        None => tokio::spawn(async {}),
    };
    Ok(Postmaster {
        child,
        pid,
        tail,
        log_task,
    })
}

impl Postmaster {
    /// Waits until `postmaster.pid` names this process and says `ready` or
    /// `standby`, or `connects()` succeeds (tried once a second). Fails when
    /// the child exits (with the end of its log) or at `limit`.
    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        data_dir: &Path,
        limit: Duration,
        connects: F,
    ) -> Result<(), PgError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        let mut next_connect = started + Duration::from_secs(1);
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .map_err(PgError::io("checking the postmaster"))?
            {
                let _ = timeout(Duration::from_secs(1), &mut self.log_task).await;
                return Err(PgError::StartupExit {
                    status: status.to_string(),
                    log: self.tail.text(),
                });
            }
            if let Some(file) = read_pid_file(data_dir)? {
                let ready = matches!(file.status.as_deref(), Some("ready" | "standby"));
                if file.pid == self.pid && ready {
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= next_connect {
                if connects().await {
                    return Ok(());
                }
                next_connect = now + Duration::from_secs(1);
            }
            if now.duration_since(started) >= limit {
                return Err(PgError::Timeout {
                    what: "PostgreSQL to accept connections",
                    after: limit,
                });
            }
            sleep(POLL).await;
        }
    }
}

/// Stops the postmaster `pid` and waits until it is gone: `Fast` escalates
/// to SIGQUIT after `limit`, SIGQUIT to SIGKILL after as long again.
/// `child` is the handle when pgkeel started it (waiting on it reaps it).
pub(crate) async fn stop(
    pid: u32,
    mut child: Option<&mut Child>,
    mode: StopMode,
    limit: Duration,
) -> Result<(), PgError> {
    let limit = limit.max(POLL);
    let first = match mode {
        StopMode::Fast => libc::SIGINT,
        StopMode::Immediate => libc::SIGQUIT,
    };
    signal(pid, first)?;
    if wait_exit(pid, child.as_deref_mut(), limit).await {
        return Ok(());
    }
    if mode == StopMode::Fast {
        tracing::warn!(
            pid,
            ?limit,
            "PostgreSQL did not stop in fast mode; stopping it in immediate mode"
        );
        signal(pid, libc::SIGQUIT)?;
        if wait_exit(pid, child.as_deref_mut(), limit).await {
            return Ok(());
        }
    }
    tracing::error!(pid, "PostgreSQL ignored an immediate shutdown; killing it");
    signal(pid, libc::SIGKILL)?;
    if wait_exit(pid, child, Duration::from_secs(5)).await {
        return Ok(());
    }
    Err(PgError::Timeout {
        what: "the postmaster to exit",
        after: limit,
    })
}

async fn wait_exit(pid: u32, child: Option<&mut Child>, limit: Duration) -> bool {
    match child {
        Some(child) => timeout(limit, child.wait()).await.is_ok(),
        None => {
            let deadline = Instant::now() + limit;
            while alive(pid) {
                if Instant::now() >= deadline {
                    return false;
                }
                sleep(POLL).await;
            }
            true
        }
    }
}

/// Kills a postmaster whose start failed or was cancelled: immediate
/// shutdown by PID unless disarmed. Drop cannot wait; the runtime reaps.
pub(crate) struct StartGuard(pub Option<u32>);

impl Drop for StartGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            tracing::warn!(pid, "stopping a PostgreSQL whose start failed");
            let _ = signal(pid, libc::SIGQUIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_lines() {
        let text =
            "4242\n/d/main\n1700000000\n5433\n/d/main.sock\n127.0.0.1\n  1234  5678\nready   \n";
        let f = parse_pid_file(text);
        assert_eq!(
            f,
            Some(PidFile {
                pid: 4242,
                data_dir: "/d/main".into(),
                status: Some("ready".into())
            })
        );
        assert_eq!(parse_pid_file("4242\n/d\n").and_then(|f| f.status), None);
        assert_eq!(parse_pid_file(""), None);
        assert_eq!(parse_pid_file("x\n/d\n"), None);
        assert_eq!(parse_pid_file("1\n/d\n"), None);
        assert_eq!(parse_pid_file("4242"), None);
    }

    #[test]
    fn liveness_and_refusals() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX));
        assert!(signal(0, 0).is_err());
        assert!(signal(1, 0).is_err());
        assert!(signal(std::process::id(), 0).is_err());
    }
}
