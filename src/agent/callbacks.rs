//! Running the operator's scripts: the `postgresql.callbacks` the core asks
//! for with [`Action::RunCallback`](crate::ha::Action::RunCallback), and
//! `pre_promote` ([`Action::PrePromote`](crate::ha::Action::PrePromote)).
//!
//! Every script runs as pgkeel's own user, in `/`, with stdin closed, in a
//! process group of its own; its stdout and stderr lines go to pgkeel's
//! log. A script that runs longer than `callback_timeout` is killed with
//! its whole process group (SIGKILL to the group of the child pgkeel
//! spawned, never a name), and so is a running callback when a new call of
//! the same kind arrives. The group is killed before the child is reaped,
//! so its PID (the group's id) cannot have been reused; every child is
//! waited for, so none is left a zombie. A failure is logged, never fatal.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::PostgresqlConfig;
use crate::ha::{CallbackKind, CallbackRole, CallbackSet};

/// The scripts of one node, from its config file.
#[derive(Debug, Clone, Default)]
pub struct CallbackSpec {
    /// The cluster name, every callback's third argument.
    pub scope: String,
    /// Each configured callback: the executable and its own arguments.
    pub commands: BTreeMap<CallbackKind, Vec<String>>,
    /// `pre_promote`, if configured.
    pub pre_promote: Option<Vec<String>>,
    /// Bound on each run.
    pub timeout: Duration,
}

impl CallbackSpec {
    /// The scripts named in the `postgresql` section.
    pub fn from_config(scope: &str, pg: &PostgresqlConfig) -> CallbackSpec {
        let words = |c: &crate::config::CallbackCommand| -> Vec<String> {
            c.words().into_iter().map(String::from).collect()
        };
        let cb = &pg.callbacks;
        let commands = [
            (CallbackKind::OnStart, &cb.on_start),
            (CallbackKind::OnStop, &cb.on_stop),
            (CallbackKind::OnRestart, &cb.on_restart),
            (CallbackKind::OnReload, &cb.on_reload),
            (CallbackKind::OnRoleChange, &cb.on_role_change),
        ]
        .into_iter()
        .filter_map(|(kind, cmd)| cmd.as_ref().map(|c| (kind, words(c))))
        .collect();
        CallbackSpec {
            scope: scope.to_string(),
            commands,
            pre_promote: pg.pre_promote.as_ref().map(words),
            timeout: pg.callback_timeout,
        }
    }

    /// Which scripts exist, for the core.
    pub fn set(&self) -> CallbackSet {
        let has = |k| self.commands.contains_key(&k);
        CallbackSet {
            on_start: has(CallbackKind::OnStart),
            on_stop: has(CallbackKind::OnStop),
            on_restart: has(CallbackKind::OnRestart),
            on_reload: has(CallbackKind::OnReload),
            on_role_change: has(CallbackKind::OnRoleChange),
            pre_promote: self.pre_promote.is_some(),
        }
    }
}

/// How one run of a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this status code (0: success).
    Exited(i32),
    /// A signal it did not get from pgkeel ended it.
    Signalled(i32),
    /// It ran over `callback_timeout`; its process group was killed.
    TimedOut,
    /// A newer call of the same kind replaced it; its process group was
    /// killed.
    Replaced,
    /// It could not be started (the message says why).
    NotStarted(String),
}

/// A callback in the background: how to stop it, and how to know it ended.
struct Running {
    cancel: oneshot::Sender<()>,
    ended: oneshot::Receiver<()>,
}

/// Starts scripts; one running callback per kind.
pub struct CallbackRunner {
    spec: CallbackSpec,
    running: Mutex<BTreeMap<CallbackKind, Running>>,
}

impl CallbackRunner {
    pub fn new(spec: CallbackSpec) -> Arc<CallbackRunner> {
        Arc::new(CallbackRunner {
            spec,
            running: Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts `kind`'s script as `<cmd…> <kind> <role> <scope>` in the
    /// background, after killing a run of the same kind that has not ended.
    /// `None` when no such script is configured. The handle is for tests:
    /// the agent never waits on it.
    pub fn call(&self, kind: CallbackKind, role: CallbackRole) -> Option<JoinHandle<Outcome>> {
        let mut argv = self.spec.commands.get(&kind)?.clone();
        argv.extend([
            kind.name().to_string(),
            role.name().to_string(),
            self.spec.scope.clone(),
        ]);
        let (cancel, cancelled) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel::<()>();
        let previous = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(kind, Running { cancel, ended });
        let timeout = self.spec.timeout;
        Some(tokio::spawn(async move {
            if let Some(old) = previous {
                // Gone already when it ended: then there is nothing to kill.
                let _ = old.cancel.send(());
                let _ = old.ended.await;
            }
            let outcome = run(kind.name(), &argv, timeout, Some(cancelled)).await;
            drop(ended_tx);
            outcome
        }))
    }

    /// Waits for the callbacks still running (each ends by its timeout at
    /// the latest), so an `on_stop` called on the way out of a shutdown
    /// finishes and is logged before pgkeel exits.
    pub async fn finish(&self) {
        let running: Vec<Running> =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(|e| e.into_inner()))
                .into_values()
                .collect();
        // Dropping `cancel` does not cancel: a run then goes to its end.
        let ended = running.into_iter().map(|r| async move {
            let _ = r.ended.await;
        });
        futures::future::join_all(ended).await;
    }

    /// Runs `pre_promote` and waits for it: `Ok` on a zero exit, else one
    /// sentence saying what happened. `Ok` when none is configured.
    pub async fn pre_promote(&self) -> Result<(), String> {
        let Some(argv) = &self.spec.pre_promote else {
            return Ok(());
        };
        match run("pre_promote", argv, self.spec.timeout, None).await {
            Outcome::Exited(0) => Ok(()),
            Outcome::Exited(code) => Err(format!("pre_promote exited with status {code}")),
            Outcome::Signalled(sig) => Err(format!("pre_promote was killed by signal {sig}")),
            Outcome::TimedOut => Err(format!(
                "pre_promote ran longer than callback_timeout {}",
                crate::config::duration::format(self.spec.timeout)
            )),
            Outcome::Replaced => Err("pre_promote was cancelled".into()),
            Outcome::NotStarted(e) => Err(e),
        }
    }
}

/// Runs `argv` to its end, its timeout or its cancellation, and logs how it
/// ended.
async fn run(
    label: &'static str,
    argv: &[String],
    timeout: Duration,
    cancelled: Option<oneshot::Receiver<()>>,
) -> Outcome {
    let Some((program, args)) = argv.split_first() else {
        return Outcome::NotStarted(format!("{label} has no command"));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot run {label} ({program}): {e}");
            tracing::warn!("{why}");
            return Outcome::NotStarted(why);
        }
    };
    let pid = child.id();
    tracing::info!(callback = label, ?pid, args = ?args, "running {label}");
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(label, "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(label, "stderr", err));
    }
    let cancel = async {
        let asked = match cancelled {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        if !asked {
            // Nobody can cancel it any more (or ever): it runs to its end
            // or its timeout.
            std::future::pending::<()>().await;
        }
    };
    let outcome = tokio::select! {
        biased;
        status = child.wait() => match status {
            Ok(s) => exit_outcome(s),
            Err(e) => Outcome::NotStarted(format!("cannot wait for {label}: {e}")),
        },
        _ = tokio::time::sleep(timeout) => {
            kill_group(pid);
            let _ = child.wait().await;
            Outcome::TimedOut
        }
        _ = cancel => {
            kill_group(pid);
            let _ = child.wait().await;
            Outcome::Replaced
        }
    };
    match &outcome {
        Outcome::Exited(0) => tracing::info!(callback = label, "{label} finished"),
        Outcome::Exited(code) => {
            tracing::warn!(callback = label, "{label} exited with status {code}")
        }
        Outcome::Signalled(sig) => {
            tracing::warn!(callback = label, "{label} was killed by signal {sig}")
        }
        Outcome::TimedOut => tracing::warn!(
            callback = label,
            "{label} ran longer than callback_timeout {}; killed its process group",
            crate::config::duration::format(timeout)
        ),
        Outcome::Replaced => tracing::info!(
            callback = label,
            "{label} replaced by a newer call; killed its process group"
        ),
        Outcome::NotStarted(e) => tracing::warn!(callback = label, "{e}"),
    }
    outcome
}

fn exit_outcome(status: ExitStatus) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Outcome::Exited(code),
        (None, Some(sig)) => Outcome::Signalled(sig),
        (None, None) => Outcome::Exited(-1),
    }
}

/// SIGKILL to the process group led by our unreaped child `pid`.
fn kill_group(pid: Option<u32>) {
    let Some(pgid) = pid
        .and_then(|p| libc::pid_t::try_from(p).ok())
        .filter(|p| *p > 1)
    else {
        return;
    };
    // SAFETY: kill has no memory preconditions; the group is the one our
    // child leads (process_group(0)), and the child is not reaped yet.
    if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!("cannot kill process group {pgid}: {e}");
        }
    }
}

/// Copies a script's output into the log, a line at a time.
async fn log_lines(label: &'static str, stream: &'static str, pipe: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(callback = label, stream, "{line}");
    }
}

#[cfg(test)]
mod tests;
