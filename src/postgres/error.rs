//! What can go wrong, split by what the HA driver does about it.

use std::time::Duration;

/// A controller failure. The driver branches on the kind: `Setup` stops the
/// node with the message, `NotRunning` / `NotInitialized` steer the next
/// action, the rest are retried or reported.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The operator's mistake (missing OS user, data dir owned by someone
    /// else, no server binaries): one sentence naming the thing and the fix.
    #[error("{0}")]
    Setup(String),
    /// The operation needs a running server and none runs.
    #[error("PostgreSQL is not running")]
    NotRunning,
    /// `start` found a live postmaster for this data directory.
    #[error("PostgreSQL is already running with PID {0}")]
    AlreadyRunning(u32),
    /// The operation needs a data directory and there is none yet.
    #[error("the data directory {0} holds no PostgreSQL cluster yet")]
    NotInitialized(String),
    /// `start` was called before `configure_as_primary`/`configure_as_standby`.
    #[error("no role configured — call configure_as_primary or configure_as_standby before start")]
    NoRole,
    /// A PostgreSQL program failed; `detail` holds the end of its output.
    #[error("{program} failed ({status}): {detail}")]
    Command {
        /// `initdb`, `pg_basebackup`, …
        program: String,
        /// Its exit status.
        status: String,
        /// The last lines it printed.
        detail: String,
    },
    /// The postmaster exited while starting; the last lines of its log.
    #[error("PostgreSQL exited during start-up ({status}): {log}")]
    StartupExit {
        /// Exit status.
        status: String,
        /// The last lines of its stderr.
        log: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The timeout that passed.
        after: Duration,
    },
    /// A query or connection failed.
    #[error("{context}: {message}")]
    Sql {
        /// What pgkeel was doing.
        context: &'static str,
        /// The server's message, or the client's reason.
        message: String,
    },
    /// File or process I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What pgkeel was doing, naming the path.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Text from the server that is not a WAL position.
    #[error("{0:?} is not a WAL position (X/Y)")]
    BadLsn(String),
    /// The server answered something pgkeel cannot use.
    #[error("unexpected answer from PostgreSQL: {0}")]
    Protocol(String),
}

impl PgError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
        let context = context.into();
        move |source| PgError::Io { context, source }
    }

    pub(crate) fn sql(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        move |e| PgError::Sql {
            context,
            message: sql_message(&e),
        }
    }
}

/// tokio-postgres prints only `db error`; the server's own words are in the
/// source chain.
fn sql_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
