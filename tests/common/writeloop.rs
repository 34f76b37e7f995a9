//! The write loop the real-PostgreSQL tests share: one INSERT every
//! `every` through a libpq multi-host DSN with
//! `target_session_attrs=read-write`, as an application would connect.
//! It counts acknowledged writes, records the longest gap between two
//! acknowledgements, and afterwards tells which acknowledged rows are
//! missing from a server. Each acknowledgement also records which server
//! gave it (port, timeline, WAL position), so a checker can tell two
//! writable servers apart from one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One acknowledged write and the server that acknowledged it, as that
/// server reported it in the INSERT's own `RETURNING` (so it cannot be
/// another server than the one that committed the row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub id: i64,
    /// `inet_server_port()`: which member (all share 127.0.0.1).
    pub port: i32,
    /// The server's timeline at the INSERT (from `pg_walfile_name`).
    pub timeline: i64,
    /// `pg_current_wal_insert_lsn()` at the INSERT, in bytes: the commit
    /// record comes at or after it.
    pub lsn: i64,
    /// At the INSERT, `synchronous_standby_names` was set and a standby
    /// reported `sync` or `quorum`: the commit waited for a standby.
    pub protected: bool,
}

/// The identity columns of [`Ack`], returned by every INSERT.
const RETURNING: &str = "returning inet_server_port(), \
     ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int::bigint, \
     (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint, \
     current_setting('synchronous_standby_names') <> '' \
       and exists (select 1 from pg_stat_replication where sync_state in ('sync', 'quorum'))";

/// What the loop saw.
#[derive(Debug, Default, Clone)]
pub struct WriteStats {
    /// Ids whose INSERT returned success.
    pub acked: Vec<i64>,
    /// The same writes with the server that acknowledged each, in order.
    pub acks: Vec<Ack>,
    /// Attempts that failed (connection refused, read-only, ...).
    pub failures: u64,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
}

pub struct WriteLoop {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<WriteStats>>,
    thread: Option<JoinHandle<()>>,
}

/// `postgresql://` DSN over every host, read-write sessions only.
pub fn dsn(hosts: &[String], password: &str) -> String {
    let (h, p): (Vec<_>, Vec<_>) = hosts.iter().filter_map(|a| a.rsplit_once(':')).unzip();
    format!(
        "host={} port={} user=postgres password={password} dbname=postgres connect_timeout=1 target_session_attrs=read-write",
        h.join(","),
        p.join(",")
    )
}

impl WriteLoop {
    /// Creates the table (through the DSN) and starts writing. Bounded: it
    /// stops by itself after `max` writes or `max_time`.
    pub fn start(dsn: String, every: Duration, max: i64, max_time: Duration) -> WriteLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(WriteStats::default()));
        let (s, st) = (stop.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let started = Instant::now();
                let mut client: Option<tokio_postgres::Client> = None;
                let mut last_ack = Instant::now();
                // Ids unique across loops on the same table: microseconds
                // since the epoch at the start, then one up per write.
                let first = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2))
                    .unwrap_or(0);
                let mut next_id = first;
                while !s.load(Ordering::Relaxed) && next_id - first < max && started.elapsed() < max_time {
                    if client.as_ref().is_none_or(|c| c.is_closed()) {
                        client = match tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await {
                            Ok((c, conn)) => {
                                tokio::spawn(conn);
                                let _ = c
                                    .simple_query("create table if not exists writes(id bigint primary key, at timestamptz default now())")
                                    .await;
                                Some(c)
                            }
                            Err(_) => None,
                        };
                    }
                    let ack = match &client {
                        Some(c) => c
                            .query_one(&format!("insert into writes(id) values ($1) {RETURNING}"), &[&next_id])
                            .await
                            .ok()
                            .map(|row| Ack {
                                id: next_id,
                                port: row.try_get(0).unwrap_or_default(),
                                timeline: row.try_get(1).unwrap_or_default(),
                                lsn: row.try_get(2).unwrap_or_default(),
                                protected: row.try_get(3).unwrap_or_default(),
                            }),
                        None => None,
                    };
                    let ok = ack.is_some();
                    {
                        let mut stats = st.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(ack) = ack {
                            stats.longest_gap = stats.longest_gap.max(last_ack.elapsed());
                            last_ack = Instant::now();
                            stats.acked.push(next_id);
                            stats.acks.push(ack);
                        } else {
                            stats.failures += 1;
                        }
                    }
                    // A new id also after a failure: an INSERT that
                    // committed but whose answer was lost (the server died
                    // after the commit) would otherwise collide forever.
                    next_id += 1;
                    if !ok {
                        client = None;
                    }
                    tokio::time::sleep(every).await;
                }
            });
        });
        WriteLoop {
            stop,
            stats,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more writes than now are acknowledged; false when
    /// that has not happened within `within`.
    pub fn wait_for_more(&self, n: usize, within: Duration) -> bool {
        let target = self.stats().acked.len() + n;
        let deadline = Instant::now() + within;
        while self.stats().acked.len() < target {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn stats(&self) -> WriteStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops the loop and returns what it saw.
    pub fn finish(mut self) -> WriteStats {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.stats()
    }
}

impl Drop for WriteLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The acknowledged ids that `dsn`'s server does not have.
pub fn missing(dsn: &str, acked: &[i64]) -> Result<Vec<i64>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let rows = c
            .query("select id from writes", &[])
            .await
            .map_err(|e| e.to_string())?;
        let have: std::collections::HashSet<i64> =
            rows.iter().map(|r| r.get::<_, i64>(0)).collect();
        Ok(acked
            .iter()
            .copied()
            .filter(|id| !have.contains(id))
            .collect())
    })
}

/// A client writing through the multi-host DSN over `hosts` of cluster
/// `c` (one INSERT every 10 ms, for at most `max_time`), once it has
/// written.
pub fn running(
    c: &crate::procs::ProcCluster,
    hosts: &std::collections::BTreeMap<String, String>,
    password: &str,
    max_time: Duration,
) -> WriteLoop {
    let all: Vec<String> = hosts.values().cloned().collect();
    let writes = WriteLoop::start(
        dsn(&all, password),
        Duration::from_millis(10),
        100_000,
        max_time,
    );
    assert!(
        writes.wait_for_more(20, Duration::from_secs(30)),
        "the write loop never wrote\n{}",
        c.logs()
    );
    writes
}
