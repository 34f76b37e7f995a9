//! The PostgreSQL controller: everything pgkeel does to its local server.
//!
//! The HA driver talks to PostgreSQL only through the [`Postgres`] trait, so
//! the deterministic tests can run it against [`FakePostgres`] while a node
//! runs [`RealPostgres`]. The trait is the whole vocabulary: create a data
//! directory (initdb or pg_basebackup), say which role the next start has
//! (`configure_as_primary` / `configure_as_standby`), start, stop, reload,
//! promote, observe ([`PgState`], and [`ControlData`] with the server up or
//! down), and manage roles and replication slots.
//!
//! ```text
//!   initdb / basebackup ──▶ configure_as_{primary,standby} ──▶ start ──▶ probe …
//!                               ▲                                 │
//!                               └──── (before every start) ◀── stop / restart
//! ```
//!
//! Files pgkeel owns in the data directory (rewritten before every start,
//! because pg_basebackup and pg_rewind copy the source's versions):
//! `pgkeel.conf` (includes the user's untouched `postgresql.conf`, then sets
//! pgkeel's settings), `pg_hba.conf`, pgkeel's map lines in `pg_ident.conf`,
//! and `standby.signal`. See [`conf`] for those decisions, `spawn` for how
//! the postmaster is tied to pgkeel's life (death signal) and run as
//! `os_user`, and [`setup`] for the socket directory.
//!
//! # Async trait shape
//! Methods return `impl Future + Send` (Rust's native async-in-trait), so the
//! trait is **not object safe**: the HA driver is generic over `P: Postgres`
//! (`Driver<RealPostgres>` in a node, `Driver<FakePostgres>` in tests). That
//! costs nothing at run time and keeps every future `Send` for `tokio::spawn`.

pub mod conf;
mod controldata;
mod error;
pub mod fake;
mod fake_net;
#[cfg(test)]
mod fake_tests;
pub mod lsn;
pub mod os;
mod postmaster;
mod real;
mod real_ops;
mod rewind;
pub mod setup;
mod spawn;
mod sql;
mod types;

use std::future::Future;
use std::time::Duration;

use crate::config::{Authentication, InitdbOption};

pub use error::PgError;
pub use fake::{FakePostgres, FakeState};
pub use fake_net::FakeNet;
pub use lsn::{format_lsn, parse_lsn};
#[cfg(test)]
pub(crate) use postmaster::alive;
pub use postmaster::fence_blocking;
pub use real::RealPostgres;
pub use setup::{find_bin_dir, server_major, MIN_MAJOR};
pub use types::{
    ControlData, PgState, ReplicationRow, RewindOutcome, Running, ServerRole, SlotInfo, StartSpec,
    StopMode, TimelineSwitch, WantedRole,
};

/// What the HA driver can ask of a node's PostgreSQL. Every method is
/// idempotent where that makes sense (stopping a stopped server, creating an
/// existing slot), so a retried action does no harm.
pub trait Postgres: Send + Sync {
    /// True when the data directory holds a cluster (`PG_VERSION` exists):
    /// bootstrap runs initdb or pg_basebackup only when it does not.
    fn is_initialized(&self) -> impl Future<Output = Result<bool, PgError>> + Send;

    /// Creates a new cluster in the (missing or empty) data directory, with
    /// data checksums so pg_rewind works later. `options` are the config's
    /// `bootstrap.initdb` items; pgkeel's own flags win on conflict.
    fn initdb(&self, options: &[InitdbOption]) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Clones a primary into the (missing or empty) data directory with
    /// pg_basebackup, streaming WAL through `slot` when given. A password in
    /// `from_conninfo` is passed through the environment, not the command line.
    fn basebackup(
        &self,
        from_conninfo: &str,
        slot: Option<&str>,
    ) -> impl Future<Output = Result<(), PgError>> + Send;

    /// The next start is a primary: removes `standby.signal` and rewrites
    /// pgkeel's settings without any upstream.
    fn configure_as_primary(&self) -> impl Future<Output = Result<(), PgError>> + Send;

    /// The next start (or the next reload, PG13+) follows `primary_conninfo`,
    /// through `primary_slot_name` when given: writes `standby.signal` and
    /// rewrites pgkeel's settings.
    fn configure_as_standby(
        &self,
        primary_conninfo: &str,
        primary_slot_name: Option<&str>,
    ) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Replaces the cluster-wide parameters (the store's dynamic config) and
    /// rewrites pgkeel's settings; takes effect at the next reload or start.
    fn set_cluster_parameters(
        &self,
        parameters: std::collections::BTreeMap<String, crate::config::Scalar>,
    ) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Writes `synchronous_standby_names` (its own file, included by
    /// pgkeel's settings); takes effect at the next reload or start.
    /// Configuring the server as a standby empties it.
    fn set_sync_standby_names(
        &self,
        value: &str,
    ) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Starts the postmaster in the role last configured and waits until it
    /// accepts connections. Returns its PID. Refuses when no role was
    /// configured since this controller was created.
    fn start(&self, spec: &StartSpec) -> impl Future<Output = Result<u32, PgError>> + Send;

    /// Stops the postmaster and waits until it has exited. `Fast` escalates
    /// to `Immediate` after `timeout`. Stopping a stopped server is fine.
    fn stop(
        &self,
        mode: StopMode,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), PgError>> + Send;

    /// A fast stop (bounded by `spec.timeout`) and a start.
    fn restart(&self, spec: &StartSpec) -> impl Future<Output = Result<u32, PgError>> + Send;

    /// Makes the running server re-read its configuration (SIGHUP).
    fn reload(&self) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Promotes a standby and returns once it is verified writable (not in
    /// recovery), or fails after `timeout`. Only one promotion runs at a time.
    fn promote(&self, timeout: Duration) -> impl Future<Output = Result<(), PgError>> + Send;

    /// What the server is doing now. Never fails because the server is down:
    /// that is [`PgState::Stopped`].
    fn probe(&self) -> impl Future<Output = Result<PgState, PgError>> + Send;

    /// A blocking function that stops this data directory's postmaster in
    /// immediate mode by PID, for the fencing thread ([`crate::fence`]): it
    /// must work while the async runtime is stalled.
    fn fence_fn(&self) -> crate::fence::FenceFn;

    /// Where `timeline` began: the last line of its `.history` file in
    /// `pg_wal` — the parent timeline, the WAL position where it forked
    /// off, and PostgreSQL's reason. `None` for timeline 1 or when the file
    /// is missing.
    fn timeline_switch(
        &self,
        timeline: u32,
    ) -> impl Future<Output = Result<Option<types::TimelineSwitch>, PgError>> + Send;

    /// The postmaster's PID when one is alive for this data directory.
    fn postmaster_pid(&self) -> impl Future<Output = Result<Option<u32>, PgError>> + Send;

    /// What `pg_control` says (`pg_controldata`): the cluster's system
    /// identifier, the latest checkpoint and its timeline, and whether the
    /// last shutdown was clean. Works with the server up or down; `None`
    /// when the data directory holds no cluster. On a running server the
    /// checkpoint lags the WAL written since.
    fn control_data(&self) -> impl Future<Output = Result<Option<ControlData>, PgError>> + Send;

    /// `CHECKPOINT`: a new primary runs it so a rewind sees the new timeline.
    fn checkpoint(&self) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Sets the superuser's password and creates (or updates) the
    /// replication and rewind roles with the configured passwords.
    fn create_roles(
        &self,
        auth: &Authentication,
    ) -> impl Future<Output = Result<(), PgError>> + Send;

    /// Creates a physical slot that reserves WAL at once. `Ok(false)` when it
    /// already existed.
    fn create_slot(&self, name: &str) -> impl Future<Output = Result<bool, PgError>> + Send;

    /// Drops a slot. `Ok(false)` when there was none.
    fn drop_slot(&self, name: &str) -> impl Future<Output = Result<bool, PgError>> + Send;

    /// Every replication slot on the server.
    fn list_slots(&self) -> impl Future<Output = Result<Vec<SlotInfo>, PgError>> + Send;

    /// Rewinds the stopped server's data directory onto the timeline of
    /// the running server at `source_conninfo` with pg_rewind (a superuser
    /// or the rewind role, `dbname=postgres`; a password in it goes through
    /// the environment). A target that was not shut down cleanly first gets
    /// crash recovery in single-user mode, as pg_rewind requires. pg_rewind
    /// copies the source's configuration files; the next start rewrites
    /// pgkeel's, as every start does. Refuses while the server runs.
    fn rewind(
        &self,
        source_conninfo: &str,
    ) -> impl Future<Output = Result<RewindOutcome, PgError>> + Send;

    /// Renames the (stopped) data directory to `<dir>.failed-<unix time>`
    /// and returns the new path, so a pg_basebackup can re-clone into an
    /// empty one. Never deletes anything. Refuses while the server runs.
    fn move_data_dir_aside(
        &self,
    ) -> impl Future<Output = Result<std::path::PathBuf, PgError>> + Send;
}

/// Slot names PostgreSQL accepts: lower-case letters, digits and `_`, at
/// most 63 bytes. Checked before any SQL so a bad member name is a clear error.
pub fn check_slot_name(name: &str) -> Result<(), PgError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PgError::Setup(format!(
            "\"{name}\" is not a valid replication slot name — use 1 to 63 lower-case letters, digits or '_'"
        )))
    }
}

/// A member name made into a slot name: lower-cased, other characters `_`.
pub fn slot_name_for(member: &str) -> String {
    let mut s: String = member
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(63);
    if s.is_empty() {
        s.push('_');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert_eq!(slot_name_for("Node-1.dc"), "node_1_dc");
        assert!(check_slot_name("node_1").is_ok());
        assert!(check_slot_name("Node").is_err());
        assert!(check_slot_name("").is_err());
        assert!(check_slot_name(&"a".repeat(64)).is_err());
        assert!(check_slot_name(&slot_name_for(&"x".repeat(80))).is_ok());
    }
}
