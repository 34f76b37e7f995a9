//! The PostgreSQL controller against real servers on loopback: bootstrap,
//! streaming through a slot, promotion, both stop modes, start-up errors,
//! and the postmaster dying with its agent. Skips loudly where PostgreSQL
//! cannot run; one server test at a time.

#[path = "common/pg.rs"]
mod pg;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgkeel::config::{InitdbOption, Scalar};
use pgkeel::postgres::conf::conninfo;
use pgkeel::postgres::{
    ControlData, PgError, PgState, Postgres, RealPostgres, ServerRole, StartSpec, StopMode,
};

const WAIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pgkeel=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn spec() -> StartSpec {
    StartSpec {
        timeout: WAIT,
        ..StartSpec::default()
    }
}

fn no_sync() -> Vec<InitdbOption> {
    vec![InitdbOption::Flag("no-sync".into())]
}

/// How a standby reaches `port` on loopback as the replication role.
fn upstream(port: u16, application_name: &str) -> String {
    conninfo(&[
        ("host", "127.0.0.1"),
        ("port", &port.to_string()),
        ("user", pg::REPLICATOR),
        ("password", pg::REPLICATOR_PASSWORD),
        ("application_name", application_name),
    ])
}

async fn running(pg: &RealPostgres) -> pgkeel::postgres::Running {
    match pg.probe().await {
        Ok(PgState::Running(r)) => r,
        other => panic!("expected a running server, got {other:?}"),
    }
}

async fn control_data(pg: &RealPostgres) -> ControlData {
    pg.control_data()
        .await
        .expect("control data")
        .expect("an initialized data directory")
}

/// Polls `probe` until `check` holds, failing the test after [`WAIT`].
async fn wait_for(pg: &RealPostgres, what: &str, check: impl Fn(&PgState) -> bool) -> PgState {
    let deadline = Instant::now() + WAIT;
    loop {
        let state = pg.probe().await.expect("probe");
        if check(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last state {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `test` on its own runtime while holding the one-server-test lock
/// (held outside the runtime, so never across an await).
fn serially<F: std::future::Future<Output = ()>>(test: F) {
    let _serial = pg::serial();
    init_tracing();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

#[test]
fn primary_standby_streaming_promotion_and_stops() {
    if pg::can_run("primary_standby_streaming_promotion_and_stops") {
        serially(streaming_promotion_and_stops());
    }
}

async fn streaming_promotion_and_stops() {
    let root = pg::test_root();
    let mut guard = pg::KillGuard::default();
    let (port_a, port_b) = (pg::free_port(), pg::free_port());
    let (dir_a, dir_b) = (root.path().join("a/data"), root.path().join("b/data"));
    guard.data_dir(&dir_a);
    guard.data_dir(&dir_b);

    tracing::info!("phase: initdb and start the primary");
    let a = RealPostgres::new(pg::pg_config(&dir_a, port_a)).expect("controller a");
    assert!(!a.is_initialized().await.expect("is_initialized"));
    assert_eq!(a.control_data().await.expect("control data"), None);
    a.initdb(&no_sync()).await.expect("initdb");
    assert!(a.is_initialized().await.expect("is_initialized"));
    let fresh = control_data(&a).await;
    assert!(fresh.sysid != 0 && fresh.checkpoint_lsn > 0, "{fresh:?}");
    assert_eq!((fresh.state.as_str(), fresh.timeline), ("shut down", 1));
    assert!(matches!(a.start(&spec()).await, Err(PgError::NoRole)));
    a.configure_as_primary().await.expect("configure a");
    let pid_a = a.start(&spec()).await.expect("start a");
    guard.pid(pid_a);
    assert_eq!(a.postmaster_pid().await.expect("pid"), Some(pid_a));
    assert!(matches!(a.start(&spec()).await, Err(PgError::AlreadyRunning(p)) if p == pid_a));
    let r = running(&a).await;
    assert!(matches!(r.role, ServerRole::Primary { .. }), "{r:?}");
    assert_eq!(r.timeline, 1);
    assert!(r.server_version_num >= 130_000, "{r:?}");
    assert_eq!(r.pid, pid_a);
    let live = control_data(&a).await;
    assert_eq!(live.sysid, fresh.sysid);
    assert_eq!(live.state, "in production");

    tracing::info!("phase: roles and a slot");
    a.create_roles(&pg::auth()).await.expect("create roles");
    a.create_roles(&pg::auth())
        .await
        .expect("create roles again");
    let client_a = a.connect().await.expect("connect a");
    let row = client_a
        .query_one(
            "SELECT (SELECT rolreplication AND rolcanlogin FROM pg_roles WHERE rolname = $1),
                    has_function_privilege($2, 'pg_catalog.pg_ls_dir(text, boolean, boolean)', 'EXECUTE'),
                    has_function_privilege($2, 'pg_catalog.pg_stat_file(text, boolean)', 'EXECUTE'),
                    has_function_privilege($2,
                        'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE')",
            &[&pg::REPLICATOR, &pg::REWINDER],
        )
        .await
        .expect("role query");
    let (repl, ls, stat, read): (bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(
        repl && ls && stat && read,
        "roles: {repl} {ls} {stat} {read}"
    );
    assert!(a.create_slot("b").await.expect("create slot"));
    assert!(!a.create_slot("b").await.expect("create slot again"));
    let slots = a.list_slots().await.expect("list slots");
    assert_eq!(slots.len(), 1);
    assert!(
        slots[0].name == "b" && slots[0].restart_lsn.is_some(),
        "{slots:?}"
    );
    assert!(a.create_slot("Bad-Name").await.is_err());

    tracing::info!("phase: a restart-only parameter written and reloaded is pending");
    let before = running(&a).await;
    assert_eq!(before.must_match_running.len(), 5, "{before:?}");
    let mc = before.must_match_running["max_connections"];
    assert_eq!(before.must_match_pending.get("max_connections"), Some(&mc));
    assert!(!before.pending_restart, "{before:?}");
    let raised = [("max_connections".to_string(), Scalar::Int(mc + 7))].into();
    a.set_cluster_parameters(raised)
        .await
        .expect("set parameters");
    a.reload().await.expect("reload");
    let pending =
        |on: bool| move |s: &PgState| matches!(s, PgState::Running(r) if r.pending_restart == on);
    let PgState::Running(r) = wait_for(&a, "pending_restart", pending(true)).await else {
        panic!("wait_for returned a server that is not running");
    };
    assert_eq!(r.must_match_running.get("max_connections"), Some(&mc));
    assert_eq!(r.must_match_pending.get("max_connections"), Some(&(mc + 7)));
    a.set_cluster_parameters(Default::default())
        .await
        .expect("reset parameters");
    a.reload().await.expect("reload");
    wait_for(&a, "no pending restart", pending(false)).await;

    tracing::info!("phase: clone a standby and stream through the slot");
    let b = RealPostgres::new(pg::pg_config(&dir_b, port_b)).expect("controller b");
    b.basebackup(&upstream(port_a, "b"), Some("b"))
        .await
        .expect("basebackup");
    assert_eq!(control_data(&b).await.sysid, fresh.sysid);
    b.configure_as_standby(&upstream(port_a, "b"), Some("b"))
        .await
        .expect("configure b");
    assert!(dir_b.join("standby.signal").exists());
    let pid_b = b.start(&spec()).await.expect("start b");
    guard.pid(pid_b);
    wait_for(&a, "b streaming", |s| {
        s.running().is_some_and(|r| {
            r.replication
                .iter()
                .any(|row| row.application_name == "b" && row.state == "streaming")
        })
    })
    .await;
    assert!(a.list_slots().await.expect("slots")[0].active);
    let state = wait_for(&b, "b's WAL receiver streaming", |s| {
        s.running().is_some_and(|r| {
            matches!(
                r.role,
                ServerRole::Standby {
                    streaming: true,
                    ..
                }
            )
        })
    })
    .await;
    match &state.running().expect("running").role {
        ServerRole::Standby {
            upstream: Some(up), ..
        } => assert!(up.ends_with(&format!(":{port_a}")), "{up}"),
        other => panic!("expected a standby with an upstream, got {other:?}"),
    }

    tracing::info!("phase: a row written on the primary appears on the standby");
    client_a
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        .await
        .expect("insert");
    let written = running(&a).await.wal_position();
    wait_for(&b, "b to replay the insert", |s| {
        s.running().is_some_and(|r| match r.role {
            ServerRole::Standby { replayed_lsn, .. } => replayed_lsn.is_some_and(|l| l >= written),
            _ => false,
        })
    })
    .await;
    let client_b = b.connect().await.expect("connect b");
    let x: i32 = client_b
        .query_one("SELECT x FROM t", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(x, 42);
    assert_eq!(running(&b).await.timeline, 1);

    tracing::info!("phase: promote the standby");
    b.promote(WAIT).await.expect("promote");
    let r = running(&b).await;
    assert!(matches!(r.role, ServerRole::Primary { .. }), "{r:?}");
    assert_eq!(r.timeline, 2);
    b.checkpoint().await.expect("checkpoint");
    b.connect()
        .await
        .expect("connect")
        .batch_execute("INSERT INTO t VALUES (43)")
        .await
        .expect("write on b");
    b.promote(WAIT)
        .await
        .expect("promoting a primary is a no-op");

    tracing::info!("phase: restart as primary keeps the timeline");
    b.configure_as_primary()
        .await
        .expect("configure b as primary");
    let pid_b = b.restart(&spec()).await.expect("restart b");
    guard.pid(pid_b);
    assert!(!pg::alive(r.pid), "old postmaster survived the restart");
    assert_eq!(running(&b).await.timeline, 2);

    tracing::info!("phase: fast and immediate stops leave no process");
    a.stop(StopMode::Fast, WAIT).await.expect("fast stop");
    assert!(!pg::alive(pid_a), "postmaster {pid_a} survived a fast stop");
    let stopped = control_data(&a).await;
    assert_eq!(stopped.sysid, fresh.sysid);
    assert_eq!((stopped.state.as_str(), stopped.timeline), ("shut down", 1));
    assert!(
        stopped.checkpoint_lsn > 0 && stopped.checkpoint_lsn >= written,
        "{stopped:?}"
    );
    assert_eq!(a.probe().await.expect("probe"), PgState::Stopped);
    a.stop(StopMode::Fast, WAIT)
        .await
        .expect("stopping a stopped server");
    b.stop(StopMode::Immediate, WAIT)
        .await
        .expect("immediate stop");
    assert!(
        !pg::alive(pid_b),
        "postmaster {pid_b} survived an immediate stop"
    );
    assert_eq!(b.postmaster_pid().await.expect("pid"), None);

    tracing::info!("phase: a start that fails reports the server's words");
    let bad =
        std::collections::BTreeMap::from([("wal_buffers".to_owned(), Scalar::Str("lots".into()))]);
    let failed = a
        .start(&StartSpec {
            timeout: WAIT,
            cluster_parameters: bad,
        })
        .await;
    match failed {
        Err(PgError::StartupExit { log, .. }) => assert!(log.contains("wal_buffers"), "{log}"),
        other => panic!("expected a start-up exit, got {other:?}"),
    }
    assert_eq!(a.postmaster_pid().await.expect("pid"), None);
}

#[test]
fn wrong_owner_or_missing_user_is_a_clear_error() {
    if !pg::can_run("wrong_owner_or_missing_user_is_a_clear_error") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        pg::skipped(
            "wrong_owner_or_missing_user_is_a_clear_error",
            "needs root to own a directory as another user",
        );
        return;
    }
    let root = pg::test_root();
    let dir = root.path().join("data");
    std::fs::create_dir(&dir).expect("mkdir");
    let err = RealPostgres::new(pg::pg_config(&dir, pg::free_port()))
        .err()
        .map(|e| e.to_string());
    let err = err.expect("a root-owned data dir was accepted");
    assert!(
        err.contains(&dir.display().to_string())
            && err.contains("\"root\"")
            && err.contains("chown -R postgres"),
        "{err}"
    );

    let mut config = pg::pg_config(&root.path().join("other"), pg::free_port());
    config.os_user = "pgkeel-no-such-user".into();
    let err = RealPostgres::new(config)
        .err()
        .map(|e| e.to_string())
        .expect("a missing user was accepted");
    assert!(
        err.contains("\"pgkeel-no-such-user\"") && err.contains("postgresql.os_user"),
        "{err}"
    );
}

const CHILD_ENV: &str = "PGKEEL_TEST_PDEATH_DIR";
const PID_LINE: &str = "PGKEEL_POSTMASTER_PID=";

/// Run in a child copy of this test binary: start the server, print its
/// PID, wait to be killed.
async fn pdeath_child(dir: &Path) {
    let port: u16 = std::env::var("PGKEEL_TEST_PDEATH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("port in the environment");
    let pg = RealPostgres::new(pg::pg_config(dir, port)).expect("controller");
    pg.configure_as_primary().await.expect("configure");
    let pid = pg.start(&spec()).await.expect("start");
    println!("{PID_LINE}{pid}");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[test]
fn postmaster_dies_with_its_parent() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
        return runtime.block_on(pdeath_child(Path::new(&dir)));
    }
    if pg::can_run("postmaster_dies_with_its_parent") {
        serially(dies_with_parent());
    }
}

async fn dies_with_parent() {
    let root = pg::test_root();
    let dir = root.path().join("data");
    let mut guard = pg::KillGuard::default();
    guard.data_dir(&dir);
    let port = pg::free_port();
    let pg = RealPostgres::new(pg::pg_config(&dir, port)).expect("controller");
    pg.initdb(&no_sync()).await.expect("initdb");

    tracing::info!("phase: a child process starts the postmaster");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "postmaster_dies_with_its_parent",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .env("PGKEEL_TEST_PDEATH_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    guard.pid(child.id());
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest's "test … ... " precedes it on the same line.
            let pid = line
                .split_once(PID_LINE)
                .and_then(|(_, p)| p.trim().parse::<u32>().ok());
            if let Some(pid) = pid {
                let _ = tx.send(pid);
            }
        }
    });
    let pid = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the child never reported a postmaster PID");
    guard.pid(pid);
    assert!(pg::alive(pid));

    tracing::info!(pid, "phase: SIGKILL the parent; the postmaster must follow");
    child.kill().expect("kill the child");
    child.wait().expect("reap the child");
    assert!(
        pg::wait_dead(pid, Duration::from_secs(15)),
        "postmaster {pid} outlived its parent"
    );
}
