//! Starting PostgreSQL programs: as the right user, tied to pgkeel's life.
//!
//! # The death signal and its ordering
//! Every child gets `prctl(PR_SET_PDEATHSIG)` (SIGQUIT for the postmaster,
//! an immediate shutdown; SIGTERM for tools), so a PostgreSQL primary never
//! outlives its agent (DESIGN.md: a primary must not outlive its lease).
//! The kernel clears the death signal when credentials change, so it must be
//! set *after* the switch from root to `os_user`. std happens to switch
//! uid/gid before running `pre_exec` closures, but does not document that
//! order; pgkeel therefore does the switch itself inside its one `pre_exec`
//! closure — `setgroups(0)`, `setgid`, `setuid`, then `prctl` — and never
//! uses `CommandExt::uid`/`gid`. The death signal survives the `execve` of
//! a program that is not set-uid. A parent that died before `prctl` ran is
//! caught by comparing `getppid()` with pgkeel's PID afterwards.
//!
//! The death signal fires when the *thread* that forked the child exits,
//! not the process. Tokio's blocking threads come and go, so every child
//! is forked by one dedicated thread that lives as long as the process.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

use super::os::Identity;
use super::PgError;

/// Environment variables passed through to PostgreSQL programs; everything
/// else (a stray `PGDATA`, `PGPORT`, `PGPASSWORD`) is dropped.
/// `PG_OOM_ADJUST_*` lets backends drop the OOM protection a service
/// manager gives pgkeel (see packaging/pgkeel.service).
const PASS_ENV: [&str; 5] = [
    "LANG",
    "LC_ALL",
    "TZ",
    "PG_OOM_ADJUST_FILE",
    "PG_OOM_ADJUST_VALUE",
];

/// A command for `program` that will run as the PostgreSQL user, in `/`
/// (root's cwd is often unreadable to it), with a clean environment, in
/// its own process group (a terminal's Ctrl-C reaches pgkeel, which stops
/// PostgreSQL in order), and with `death_signal` sent when pgkeel dies.
pub(crate) fn command(program: &Path, who: &Identity, death_signal: libc::c_int) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &who.pg.home)
        .env("USER", &who.pg.name)
        .env("LOGNAME", &who.pg.name)
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0);
    for (key, value) in std::env::vars_os() {
        let key_str = key.to_string_lossy();
        if PASS_ENV.contains(&key_str.as_ref()) || key_str.starts_with("LC_") {
            cmd.env(key, value);
        }
    }
    let ids = who.switch.then_some((who.pg.uid, who.pg.gid));
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls; it allocates nothing (the error
    // values are `Os` codes).
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                death_signal as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd
}

type Job = Box<dyn FnOnce() + Send>;

/// The long-lived thread that forks every child (see the module doc).
fn spawner() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("pgkeel-spawner".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// Spawns `cmd` from the spawner thread, registered with the caller's
/// tokio runtime so the child can be awaited here.
pub(crate) async fn spawn(mut cmd: Command, what: &str) -> Result<Child, PgError> {
    let ctx = format!("starting {what}");
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _entered = handle.enter();
        let _ = tx.send(cmd.spawn());
    });
    let sent = match spawner() {
        Some(s) => s.lock().is_ok_and(|s| s.send(job).is_ok()),
        None => false,
    };
    if !sent {
        return Err(PgError::io(ctx)(io::Error::other(
            "the pgkeel-spawner thread is not running",
        )));
    }
    match rx.await {
        Ok(result) => result.map_err(PgError::io(ctx)),
        Err(_) => Err(PgError::io(ctx)(io::Error::other(
            "the pgkeel-spawner thread dropped the request",
        ))),
    }
}

/// The last lines a child wrote to stderr, for error messages.
#[derive(Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    const LINES: usize = 20;

    fn push(&self, line: String) {
        if let Ok(mut q) = self.0.lock() {
            if q.len() == Self::LINES {
                q.pop_front();
            }
            q.push_back(line);
        }
    }

    /// The kept lines joined with ` | `, newest last.
    pub(crate) fn text(&self) -> String {
        self.0
            .lock()
            .map(|q| q.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }
}

/// Forwards a child's stderr into tracing, line by line, keeping a tail.
pub(crate) fn log_stderr(
    stderr: ChildStderr,
    program: &'static str,
    tail: Tail,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if ["ERROR:", "FATAL:", "PANIC:"]
                .iter()
                .any(|k| line.contains(k))
            {
                tracing::warn!(target: "pgkeel::postgres::log", program, "{line}");
            } else {
                tracing::info!(target: "pgkeel::postgres::log", program, "{line}");
            }
            tail.push(line);
        }
    })
}

/// Runs a tool that reports on stdout (`pg_controldata`) and returns what
/// it printed; stderr goes to the log. `kill_on_drop`, so a caller's
/// timeout leaves no process behind. Fails with the end of its stderr.
pub(crate) async fn tool_output(
    mut cmd: Command,
    program: &'static str,
) -> Result<String, PgError> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn(cmd, program).await?;
    let tail = Tail::default();
    let stderr = child
        .stderr
        .take()
        .map(|s| log_stderr(s, program, tail.clone()));
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)
            .await
            .map_err(PgError::io(format!("reading the output of {program}")))?;
    }
    let status = child
        .wait()
        .await
        .map_err(PgError::io(format!("waiting for {program}")))?;
    if let Some(task) = stderr {
        let _ = task.await;
    }
    succeeded(status, program, &tail)?;
    String::from_utf8(stdout)
        .map_err(|_| PgError::Protocol(format!("{program} printed something that is not UTF-8")))
}

/// `Ok` when the tool exited successfully, else its exit status and the
/// end of what it printed.
fn succeeded(status: std::process::ExitStatus, program: &str, tail: &Tail) -> Result<(), PgError> {
    if status.success() {
        Ok(())
    } else {
        Err(PgError::Command {
            program: program.to_owned(),
            status: status.to_string(),
            detail: tail.text(),
        })
    }
}

/// Runs a tool to completion (`kill_on_drop`, so a cancelled bootstrap does
/// not leave a pg_basebackup behind) and fails with the end of its output.
pub(crate) async fn run_tool(cmd: Command, program: &'static str) -> Result<(), PgError> {
    run_tool_tail(cmd, program).await.map(|_| ())
}

/// [`run_tool`], returning the last lines the tool printed (stdout and
/// stderr, ` | `-joined) when it succeeds.
pub(crate) async fn run_tool_tail(
    mut cmd: Command,
    program: &'static str,
) -> Result<String, PgError> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = spawn(cmd, program).await?;
    let tail = Tail::default();
    let stdout = child.stdout.take().map(|s| {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "pgkeel::postgres::log", program, "{line}");
                tail.push(line);
            }
        })
    });
    let stderr = child
        .stderr
        .take()
        .map(|s| log_stderr(s, program, tail.clone()));
    let status = child
        .wait()
        .await
        .map_err(PgError::io(format!("waiting for {program}")))?;
    for task in [stdout, stderr].into_iter().flatten() {
        let _ = task.await;
    }
    succeeded(status, program, &tail)?;
    Ok(tail.text())
}
