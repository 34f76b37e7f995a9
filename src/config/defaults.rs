//! Every default of the config file, in one place.
//!
//! The timing defaults are DESIGN.md's starting point (heartbeat 100 ms,
//! election timeout 500–1000 ms, keepalive every 1 s, safety margin 1 s,
//! ttl 5 s); the benchmarks decide what ships. The functions at the bottom
//! exist only because serde's `default = "…"` wants a function path.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// `log.level`.
pub const LOG_LEVEL: &str = "info";

/// `raft.heartbeat_interval`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// `raft.election_timeout_min`.
pub const ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// `raft.election_timeout_max`.
pub const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);
/// `raft.request_timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// `raft.snapshot_every`, in log entries.
pub const SNAPSHOT_EVERY: u64 = 10_000;
/// `raft.cache_capacity`, in bytes (sled's page cache).
pub const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;
/// The shortest `raft.secret` accepted.
pub const MIN_SECRET_LEN: usize = 16;

/// `restapi.listen`, Patroni's port.
pub const RESTAPI_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8008));

/// `postgresql.os_user`.
pub const OS_USER: &str = "postgres";
/// `postgresql.use_pg_rewind` and `bootstrap.dcs.postgresql.use_pg_rewind`.
pub const USE_PG_REWIND: bool = true;

/// `bootstrap.dcs.ttl`: the leader lease.
pub const TTL: Duration = Duration::from_secs(5);
/// The longest `ttl` accepted: a dead primary keeps the leader key this long.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// `bootstrap.dcs.loop_wait`.
pub const LOOP_WAIT: Duration = Duration::from_secs(1);
/// `bootstrap.dcs.retry_timeout`.
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(2);
/// `bootstrap.dcs.keepalive_interval`. With `SAFETY_MARGIN` this leaves a
/// holder `ttl - 1 s` from its last renewal: the stall soak
/// (`pg_bench -- soak`, 2 s stalls) showed false failovers at 1 s + 1 s.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
/// `bootstrap.dcs.keepalive_timeout`: bound on one keepalive round trip.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);
/// `bootstrap.dcs.safety_margin`: covers the fencing thread's wake-up
/// slice (50 ms), an immediate stop, and clock-rate drift.
pub const SAFETY_MARGIN: Duration = Duration::from_millis(500);
/// `bootstrap.dcs.maximum_lag_on_failover`, in bytes (Patroni's default).
pub const MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// `bootstrap.dcs.primary_start_timeout`. Patroni waits 300 s for a crashed
/// primary to come back before failing over; pgkeel's point is short write
/// downtime, so it gives up after 30 s and lets a replica take over.
pub const PRIMARY_START_TIMEOUT: Duration = Duration::from_secs(30);

/// `tags.failover_priority` when the tag is absent (Patroni's default).
pub const FAILOVER_PRIORITY: i64 = 1;

/// `watchdog.device`.
pub const WATCHDOG_DEVICE: &str = "/dev/watchdog";

pub(crate) fn log_level() -> String {
    LOG_LEVEL.to_owned()
}
pub(crate) fn heartbeat_interval() -> Duration {
    HEARTBEAT_INTERVAL
}
pub(crate) fn election_timeout_min() -> Duration {
    ELECTION_TIMEOUT_MIN
}
pub(crate) fn election_timeout_max() -> Duration {
    ELECTION_TIMEOUT_MAX
}
pub(crate) fn request_timeout() -> Duration {
    REQUEST_TIMEOUT
}
pub(crate) fn snapshot_every() -> u64 {
    SNAPSHOT_EVERY
}
pub(crate) fn cache_capacity() -> u64 {
    CACHE_CAPACITY
}
pub(crate) fn restapi_listen() -> SocketAddr {
    RESTAPI_LISTEN
}
pub(crate) fn os_user() -> String {
    OS_USER.to_owned()
}
pub(crate) fn remove_data_directory_on_rewind_failure() -> bool {
    true
}

/// `postgresql.callback_timeout`, Patroni's usual bound on a callback.
pub const CALLBACK_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn callback_timeout() -> Duration {
    CALLBACK_TIMEOUT
}

pub(crate) fn use_pg_rewind() -> bool {
    USE_PG_REWIND
}
/// `watchdog.reset_time`.
pub const WATCHDOG_RESET_TIME: Duration = Duration::from_secs(1);

/// The largest `watchdog.reset_time` accepted.
pub const MAX_WATCHDOG_RESET_TIME: Duration = Duration::from_secs(10);

pub(crate) fn watchdog_reset_time() -> Duration {
    WATCHDOG_RESET_TIME
}

pub(crate) fn watchdog_device() -> PathBuf {
    PathBuf::from(WATCHDOG_DEVICE)
}
