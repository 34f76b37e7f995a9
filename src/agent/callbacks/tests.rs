//! The runner against real shell scripts in a temporary directory.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::postgres::alive;

fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn spec(kind: CallbackKind, argv: &[&str], timeout: Duration) -> CallbackSpec {
    CallbackSpec {
        scope: "demo".into(),
        commands: [(kind, argv.iter().map(|s| s.to_string()).collect())].into(),
        pre_promote: None,
        timeout,
    }
}

/// Waits until `path` holds at least `lines` lines; returns them.
async fn wait_lines(path: &Path, lines: usize) -> Vec<String> {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path) {
            let found: Vec<String> = text.lines().map(String::from).collect();
            if found.len() >= lines {
                return found;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never got {lines} lines", path.display());
}

fn pid_in(path: &Path, line: usize) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .nth(line)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Reaped: no /proc entry at all (a zombie would still have one).
fn reaped(pid: u32) -> bool {
    !PathBuf::from(format!("/proc/{pid}")).exists()
}

/// A log sink for the current thread (the tests run on a current-thread
/// runtime, so the runner's tasks log into it too).
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn the_script_gets_its_own_arguments_then_action_role_scope() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("args");
    let exe = script(
        dir.path(),
        "cb.sh",
        &format!("echo \"$@\" > {}", out.display()),
    );
    let runner = CallbackRunner::new(spec(
        CallbackKind::OnRoleChange,
        &[&exe, "--vip", "10.0.0.5"],
        Duration::from_secs(10),
    ));
    let outcome = runner
        .call(CallbackKind::OnRoleChange, CallbackRole::Primary)
        .expect("configured")
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Exited(0));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim(),
        "--vip 10.0.0.5 on_role_change primary demo"
    );
    assert!(runner
        .call(CallbackKind::OnStart, CallbackRole::Primary)
        .is_none());
}

#[tokio::test]
async fn output_and_a_non_zero_exit_are_logged_and_not_fatal() {
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let exe = script(
        dir.path(),
        "cb.sh",
        "echo hello from $1; echo trouble >&2; exit 3",
    );
    let runner = CallbackRunner::new(spec(CallbackKind::OnStop, &[&exe], Duration::from_secs(10)));
    let outcome = runner
        .call(CallbackKind::OnStop, CallbackRole::Replica)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Exited(3));
    // The output readers finish when the pipes close, just after the exit.
    for _ in 0..200 {
        if sink.text().contains("trouble") && sink.text().contains("hello from on_stop") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = sink.text();
    assert!(log.contains("on_stop exited with status 3"), "{log}");
    assert!(log.contains("hello from on_stop"), "{log}");
    assert!(log.contains("trouble"), "{log}");
}

#[tokio::test]
async fn a_script_over_its_timeout_is_killed_with_its_group_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, grandchild) = (dir.path().join("pid"), dir.path().join("grandchild"));
    let exe = script(
        dir.path(),
        "slow.sh",
        &format!(
            "echo $$ > {}\nsleep 60 &\necho $! > {}\nwait",
            pid.display(),
            grandchild.display()
        ),
    );
    let runner = CallbackRunner::new(spec(
        CallbackKind::OnStart,
        &[&exe],
        Duration::from_millis(500),
    ));
    let outcome = runner
        .call(CallbackKind::OnStart, CallbackRole::Replica)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::TimedOut);
    wait_lines(&grandchild, 1).await;
    let (pid, grandchild) = (pid_in(&pid, 0), pid_in(&grandchild, 0));
    assert!(reaped(pid), "the script {pid} is left as a zombie or alive");
    // The grandchild is not ours to reap, but it must not run on.
    for _ in 0..200 {
        if !alive(grandchild) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !alive(grandchild),
        "the script's child {grandchild} survived"
    );
}

#[tokio::test]
async fn a_new_call_of_the_same_kind_kills_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let (pids, quick, finished) = (
        dir.path().join("pids"),
        dir.path().join("quick"),
        dir.path().join("finished"),
    );
    let exe = script(
        dir.path(),
        "cb.sh",
        &format!(
            "echo $$ >> {pids}\n[ -e {quick} ] && exit 0\nsleep 60\necho $$ >> {finished}",
            pids = pids.display(),
            quick = quick.display(),
            finished = finished.display()
        ),
    );
    let runner = CallbackRunner::new(spec(
        CallbackKind::OnReload,
        &[&exe],
        Duration::from_secs(60),
    ));
    let first = runner
        .call(CallbackKind::OnReload, CallbackRole::Primary)
        .unwrap();
    wait_lines(&pids, 1).await;
    let second = runner
        .call(CallbackKind::OnReload, CallbackRole::Primary)
        .unwrap();
    assert_eq!(first.await.unwrap(), Outcome::Replaced);
    let first_pid = pid_in(&pids, 0);
    assert!(
        reaped(first_pid),
        "the replaced script {first_pid} was not reaped"
    );
    wait_lines(&pids, 2).await;
    let second_pid = pid_in(&pids, 1);
    assert!(alive(second_pid), "the replacing script must be running");
    std::fs::write(&quick, "").unwrap();
    let third = runner
        .call(CallbackKind::OnReload, CallbackRole::Primary)
        .unwrap();
    assert_eq!(second.await.unwrap(), Outcome::Replaced);
    assert_eq!(third.await.unwrap(), Outcome::Exited(0));
    assert!(reaped(second_pid));
    assert!(!finished.exists(), "a replaced script ran to its end");
}

#[tokio::test]
async fn pre_promote_succeeds_only_on_a_zero_exit_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pre = |body: &str, timeout: Duration| {
        let exe = script(dir.path(), &format!("pre{}.sh", body.len()), body);
        CallbackRunner::new(CallbackSpec {
            scope: "demo".into(),
            commands: BTreeMap::new(),
            pre_promote: Some(vec![exe]),
            timeout,
        })
    };
    let long = Duration::from_secs(10);
    assert_eq!(pre("exit 0", long).pre_promote().await, Ok(()));
    let failed = pre("echo no; exit 1", long)
        .pre_promote()
        .await
        .unwrap_err();
    assert!(failed.contains("exited with status 1"), "{failed}");
    let slow = pre("sleep 60", Duration::from_millis(300))
        .pre_promote()
        .await
        .unwrap_err();
    assert!(slow.contains("ran longer than callback_timeout"), "{slow}");
    let none = CallbackRunner::new(CallbackSpec::default());
    assert_eq!(none.pre_promote().await, Ok(()));
}

#[tokio::test]
async fn finish_waits_for_running_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("stopped");
    let exe = script(
        dir.path(),
        "cb.sh",
        &format!("sleep 0.3\necho \"$1 $2\" > {}", out.display()),
    );
    let runner = CallbackRunner::new(spec(CallbackKind::OnStop, &[&exe], Duration::from_secs(10)));
    drop(runner.call(CallbackKind::OnStop, CallbackRole::Primary));
    runner.finish().await;
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default().trim(),
        "on_stop primary"
    );
}
