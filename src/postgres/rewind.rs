//! Rejoining a former primary: pg_rewind (after crash recovery in
//! single-user mode when the target was not shut down cleanly), and moving
//! a data directory aside so pg_basebackup can re-clone.
//!
//! pg_rewind refuses a target that was not cleanly shut down. Since
//! PostgreSQL 13 it can run the single-user recovery itself, but with the
//! data directory's `postgresql.conf` (pgkeel's settings live in
//! `pgkeel.conf`) and it fails on a `standby.signal` left behind; pgkeel
//! therefore runs `postgres --single` itself, with `config_file` pointing
//! at pgkeel's settings and `archive_mode=off` (a recovery run must not
//! archive anything), after removing the signal files (pgkeel rewrites
//! them before every start).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::conf::{split_password, SETTINGS_FILE};
use super::real::RealPostgres;
use super::spawn::{command, run_tool, run_tool_tail};
use super::types::RewindOutcome;
use super::{PgError, Postgres};

impl RealPostgres {
    fn refuse_if_running(&self, what: &str) -> Result<(), PgError> {
        match self.live_pid()? {
            Some(pid) => {
                tracing::warn!(pid, "{what} refused: PostgreSQL runs");
                Err(PgError::AlreadyRunning(pid))
            }
            None => Ok(()),
        }
    }

    pub(super) async fn rewind_impl(&self, source: &str) -> Result<RewindOutcome, PgError> {
        self.refuse_if_running("pg_rewind")?;
        let (conninfo, password) = split_password(source)?;
        let control = self
            .control_data()
            .await?
            .ok_or_else(|| PgError::NotInitialized(self.data_dir().display().to_string()))?;
        if !control.is_clean_shutdown() {
            tracing::info!(state = %control.state, "crash recovery in single-user mode before pg_rewind");
            self.single_user_recovery().await?;
        }
        let mut cmd = command(&self.bin_dir.join("pg_rewind"), &self.who, libc::SIGTERM);
        cmd.env("LC_ALL", "C")
            .arg("--target-pgdata")
            .arg(self.data_dir())
            .arg(format!("--source-server={conninfo}"));
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        tracing::info!(data_dir = %self.data_dir().display(), %conninfo, "running pg_rewind");
        let tail = run_tool_tail(cmd, "pg_rewind").await?;
        if tail.contains("no rewind required") {
            tracing::info!("pg_rewind: no rewind required");
            Ok(RewindOutcome::NotNeeded)
        } else {
            tracing::info!("pg_rewind done");
            Ok(RewindOutcome::Rewound)
        }
    }

    /// `postgres --single … postgres < /dev/null`: replays the WAL and
    /// writes a shutdown checkpoint, leaving pg_control "shut down".
    async fn single_user_recovery(&self) -> Result<(), PgError> {
        let dir = self.data_dir().to_owned();
        for signal in ["standby.signal", "recovery.signal"] {
            let path = dir.join(signal);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(PgError::io(format!("removing {}", path.display()))(e));
                }
            }
        }
        let mut cmd = command(&self.bin_dir.join("postgres"), &self.who, libc::SIGTERM);
        cmd.arg("--single").arg("-D").arg(&dir);
        let settings = dir.join(SETTINGS_FILE);
        if settings.exists() {
            let mut c = std::ffi::OsString::from("config_file=");
            c.push(&settings);
            cmd.arg("-c").arg(c);
        }
        cmd.args(["-c", "archive_mode=off", "postgres"]);
        run_tool(cmd, "postgres --single").await?;
        match self.control_data().await? {
            Some(cd) if cd.is_clean_shutdown() => Ok(()),
            Some(cd) => Err(PgError::Protocol(format!(
                "single-user crash recovery left the cluster \"{}\", not shut down",
                cd.state
            ))),
            None => Err(PgError::NotInitialized(dir.display().to_string())),
        }
    }

    pub(super) async fn move_data_dir_aside_impl(&self) -> Result<PathBuf, PgError> {
        self.refuse_if_running("moving the data directory aside")?;
        let dir = self.data_dir().to_owned();
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let to = aside_path(&dir, secs, |p| p.exists());
        std::fs::rename(&dir, &to).map_err(PgError::io(format!(
            "moving {} aside to {}",
            dir.display(),
            to.display()
        )))?;
        tracing::warn!(from = %dir.display(), to = %to.display(), "data directory moved aside");
        Ok(to)
    }
}

/// `<dir>.failed-<secs>`, with `-2`, `-3`… appended while that exists.
fn aside_path(dir: &Path, secs: u64, exists: impl Fn(&Path) -> bool) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".failed-{secs}"));
    let base = PathBuf::from(name);
    let mut to = base.clone();
    let mut n = 2;
    while exists(&to) {
        let mut s = base.as_os_str().to_owned();
        s.push(format!("-{n}"));
        to = PathBuf::from(s);
        n += 1;
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aside_paths_never_clobber() {
        let dir = Path::new("/var/lib/pg/data");
        assert_eq!(
            aside_path(dir, 17, |_| false),
            PathBuf::from("/var/lib/pg/data.failed-17")
        );
        let taken = |p: &Path| p == Path::new("/var/lib/pg/data.failed-17");
        assert_eq!(
            aside_path(dir, 17, taken),
            PathBuf::from("/var/lib/pg/data.failed-17-2")
        );
    }
}
