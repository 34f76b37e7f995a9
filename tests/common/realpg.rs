//! What the real-PostgreSQL cluster tests share on top of [`ProcCluster`]:
//! the root check and the one-cluster-at-a-time lock, a started 2 data
//! nodes + witness cluster, and one-off SQL against a member.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::procs::ProcCluster;

/// One real-PostgreSQL cluster at a time: two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub const SUPERUSER_PASSWORD: &str = "demo-superuser-password";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
}

pub fn can_run() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let bins = pgkeel::postgres::find_bin_dir(None).is_ok();
    if !root || !bins {
        eprintln!(
            "SKIPPED: real-PostgreSQL cluster tests need root (PostgreSQL runs as `postgres`) and the server binaries; root={root} binaries={bins}"
        );
        return false;
    }
    true
}

/// Prepares a real-PostgreSQL test: tracing, the root check (None after a
/// loud SKIPPED line), and the lock that runs one cluster at a time.
pub fn exclusive() -> Option<std::sync::MutexGuard<'static, ()>> {
    init_tracing();
    if !can_run() {
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The 2 data nodes + witness example, started and streaming: the cluster,
/// the leader's member name, and every data member's PostgreSQL host:port.
pub fn two_plus_witness_streaming() -> (
    ProcCluster,
    String,
    std::collections::BTreeMap<String, String>,
) {
    let mut c = ProcCluster::from_example("two-plus-witness");
    c.start_all();
    let (leader, hosts) = c.wait_streaming(2, Duration::from_secs(90));
    (c, leader, hosts)
}

/// A superuser DSN to one member's PostgreSQL at `host:port`.
pub fn direct_dsn(host: &str) -> String {
    let (h, p) = host.rsplit_once(':').unwrap_or((host, "5432"));
    format!("host={h} port={p} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=3")
}

/// `query` on `host`: the first column of every row that parses as a number.
pub fn sql(rt: &tokio::runtime::Runtime, host: &str, query: &str) -> Result<Vec<i64>, String> {
    Ok(sql_text(rt, host, query)?
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect())
}

/// `query` on `host`: the first column of every row, as text.
pub fn sql_text(
    rt: &tokio::runtime::Runtime,
    host: &str,
    query: &str,
) -> Result<Vec<String>, String> {
    rt.block_on(async {
        let (client, connection) =
            tokio_postgres::connect(&direct_dsn(host), tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let rows = client
            .simple_query(query)
            .await
            .map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect())
    })
}

pub fn wait_rows(rt: &tokio::runtime::Runtime, host: &str, want: i64, c: &ProcCluster) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(v) = sql(rt, host, "select count(*) from t") {
            if v.first() == Some(&want) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{host} never showed {want} rows\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether `host` accepts a write now: `txid_current()` assigns a
/// transaction id, which a standby (or a stopped server) refuses.
pub fn writable(rt: &tokio::runtime::Runtime, host: &str) -> bool {
    sql(rt, host, "select txid_current()").is_ok()
}

/// The members of `hosts` that accept a write now.
pub fn writable_hosts(
    rt: &tokio::runtime::Runtime,
    hosts: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    hosts
        .iter()
        .filter(|(_, h)| writable(rt, h))
        .map(|(n, _)| n.clone())
        .collect()
}

/// A current-thread runtime for [`sql`].
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
