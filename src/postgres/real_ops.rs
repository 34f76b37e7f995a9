//! The [`Postgres`] operations of [`RealPostgres`].

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::config::{Authentication, InitdbOption, Scalar};

use super::conf::split_password;
use super::postmaster::{self, StartGuard};
use super::real::{lock, RealPostgres};
use super::spawn::{command, run_tool, tool_output};
use super::types::{
    ControlData, PgState, RewindOutcome, SlotInfo, StartSpec, StopMode, WantedRole,
};
use super::{check_slot_name, controldata, sql, PgError, Postgres};

/// pg_controldata reads one small file; a hung disk must not stall the loop.
const CONTROLDATA_TIMEOUT: Duration = Duration::from_secs(10);

impl RealPostgres {
    async fn set_role(&self, role: WantedRole) -> Result<(), PgError> {
        lock(&self.state).role = Some(role);
        self.write_files().await
    }

    async fn connects(&self) -> bool {
        self.forget_client();
        self.client().await.is_ok()
    }
}

/// How long the fencing thread waits for an immediate shutdown before it
/// kills the postmaster.
const FENCE_SIGKILL_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl Postgres for RealPostgres {
    async fn is_initialized(&self) -> Result<bool, PgError> {
        Ok(self.pg_version_file().exists())
    }

    async fn initdb(&self, options: &[InitdbOption]) -> Result<(), PgError> {
        self.prepare_data_dir().await?;
        let mut cmd = command(&self.bin_dir.join("initdb"), &self.who, libc::SIGTERM);
        let user_sets_encoding = options
            .iter()
            .any(|o| matches!(o, InitdbOption::Setting(name, _) if name == "encoding"));
        if !user_sets_encoding {
            cmd.arg("--encoding=UTF8");
        }
        cmd.args(options.iter().map(InitdbOption::to_arg));
        cmd.arg("--pgdata")
            .arg(&self.config.data_dir)
            .arg(format!(
                "--username={}",
                self.config.authentication.superuser.username
            ))
            .args([
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--data-checksums",
            ]);
        tracing::info!(data_dir = %self.config.data_dir.display(), "running initdb");
        run_tool(cmd, "initdb").await
    }

    async fn basebackup(&self, from_conninfo: &str, slot: Option<&str>) -> Result<(), PgError> {
        if let Some(slot) = slot {
            check_slot_name(slot)?;
        }
        let (conninfo, password) = split_password(from_conninfo)?;
        self.prepare_data_dir().await?;
        let mut cmd = command(
            &self.bin_dir.join("pg_basebackup"),
            &self.who,
            libc::SIGTERM,
        );
        cmd.arg("--pgdata")
            .arg(&self.config.data_dir)
            .arg(format!("--dbname={conninfo}"))
            .args(["--wal-method=stream", "--checkpoint=fast", "--no-password"]);
        if let Some(slot) = slot {
            cmd.arg(format!("--slot={slot}"));
        }
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        tracing::info!(data_dir = %self.config.data_dir.display(), %conninfo, ?slot, "running pg_basebackup");
        run_tool(cmd, "pg_basebackup").await
    }

    async fn configure_as_primary(&self) -> Result<(), PgError> {
        self.set_role(WantedRole::Primary).await
    }

    async fn configure_as_standby(
        &self,
        primary_conninfo: &str,
        primary_slot_name: Option<&str>,
    ) -> Result<(), PgError> {
        if let Some(slot) = primary_slot_name {
            check_slot_name(slot)?;
        }
        // A standby waits for nobody; a promotion starts from nothing
        // (strict mode sets its list before it promotes).
        self.set_sync_standby_names("").await?;
        self.set_role(WantedRole::Standby {
            primary_conninfo: primary_conninfo.to_owned(),
            primary_slot_name: primary_slot_name.map(str::to_owned),
        })
        .await
    }

    async fn set_sync_standby_names(&self, value: &str) -> Result<(), PgError> {
        if !self.pg_version_file().exists() {
            return Err(PgError::NotInitialized(
                self.config.data_dir.display().to_string(),
            ));
        }
        let path = self.config.data_dir.join(super::conf::SYNC_FILE);
        let (who, text) = (self.who.clone(), super::conf::render_sync(value));
        super::real::blocking(move || who.write_file(&path, &text)).await
    }

    async fn set_cluster_parameters(
        &self,
        parameters: BTreeMap<String, Scalar>,
    ) -> Result<(), PgError> {
        let has_role = {
            let mut st = lock(&self.state);
            st.cluster = parameters;
            st.role.is_some()
        };
        if has_role && self.pg_version_file().exists() {
            self.write_files().await?;
        }
        Ok(())
    }

    async fn start(&self, spec: &StartSpec) -> Result<u32, PgError> {
        if let Some(pid) = self.live_pid()? {
            return Err(PgError::AlreadyRunning(pid));
        }
        lock(&self.state).cluster = spec.cluster_parameters.clone();
        self.write_files().await?;
        self.prepare_socket_dir().await?;
        self.forget_client();
        let mut pm = postmaster::spawn(&self.bin_dir, &self.config.data_dir, &self.who).await?;
        let mut guard = StartGuard(Some(pm.pid));
        tracing::info!(pid = pm.pid, port = self.port(), "PostgreSQL starting");
        let ready = pm
            .wait_ready(&self.config.data_dir, spec.timeout, || self.connects())
            .await;
        if let Err(e) = ready {
            let _ = postmaster::stop(
                pm.pid,
                Some(&mut pm.child),
                StopMode::Immediate,
                Duration::from_secs(5),
            )
            .await;
            guard.0 = None;
            return Err(e);
        }
        guard.0 = None;
        let pid = pm.pid;
        lock(&self.state).postmaster = Some(pm);
        tracing::info!(pid, "PostgreSQL accepts connections");
        Ok(pid)
    }

    async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<(), PgError> {
        self.forget_client();
        let taken = lock(&self.state).postmaster.take();
        let result = match taken {
            Some(mut pm) => {
                tracing::info!(pid = pm.pid, ?mode, "stopping PostgreSQL");
                let r = postmaster::stop(pm.pid, Some(&mut pm.child), mode, timeout).await;
                if r.is_err() {
                    lock(&self.state).postmaster = Some(pm);
                }
                r
            }
            None => match self.live_pid()? {
                Some(pid) => {
                    tracing::info!(pid, ?mode, "stopping a PostgreSQL pgkeel did not start");
                    postmaster::stop(pid, None, mode, timeout).await
                }
                None => Ok(()),
            },
        };
        self.forget_client();
        result
    }

    async fn restart(&self, spec: &StartSpec) -> Result<u32, PgError> {
        self.stop(StopMode::Fast, spec.timeout).await?;
        self.start(spec).await
    }

    async fn reload(&self) -> Result<(), PgError> {
        let pid = self.live_pid()?.ok_or(PgError::NotRunning)?;
        postmaster::signal(pid, libc::SIGHUP)
    }

    async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        let _one_at_a_time = self.promoting.lock().await;
        let deadline = Instant::now() + timeout;
        if !self
            .with_client(|c| async move { sql::in_recovery(&c).await })
            .await?
        {
            return Ok(());
        }
        let secs = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        tracing::info!("promoting PostgreSQL");
        // Not `with_client`: pg_promote waits up to `secs`, longer than a
        // routine query may take.
        let client = self.client().await?;
        let promoted: bool = tokio::time::timeout(
            timeout + Duration::from_secs(2),
            client.query_one("SELECT pg_promote(true, $1)", &[&secs]),
        )
        .await
        .map_err(|_| PgError::Timeout {
            what: "pg_promote",
            after: timeout,
        })?
        .and_then(|r| r.try_get(0))
        .map_err(PgError::sql("promoting"))?;
        if !promoted {
            tracing::warn!(
                ?timeout,
                "pg_promote did not finish in time; still checking"
            );
        }
        // pg_promote has waited for the end of recovery; confirm the server
        // itself now says it is out of recovery, i.e. accepts writes.
        loop {
            match self
                .with_client(|c| async move { sql::in_recovery(&c).await })
                .await
            {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => tracing::debug!(error = %e, "checking a promotion"),
            }
            if Instant::now() >= deadline {
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
        Err(PgError::Timeout {
            what: "the promoted server to leave recovery",
            after: timeout,
        })
    }

    async fn probe(&self) -> Result<PgState, PgError> {
        let Some(pid) = self.live_pid()? else {
            return Ok(PgState::Stopped);
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(pid, error = %e, "PostgreSQL runs but refuses connections");
                return Ok(PgState::Starting { pid });
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), sql::probe(&client, pid)).await {
            Ok(Ok(running)) => Ok(PgState::Running(running)),
            Ok(Err(_)) if client.is_closed() => {
                self.forget_client();
                Ok(match self.live_pid()? {
                    Some(pid) => PgState::Starting { pid },
                    None => PgState::Stopped,
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                self.forget_client();
                Err(PgError::Timeout {
                    what: "the probe query",
                    after: Duration::from_secs(10),
                })
            }
        }
    }

    async fn timeline_switch(
        &self,
        timeline: u32,
    ) -> Result<Option<super::TimelineSwitch>, PgError> {
        if timeline < 2 {
            return Ok(None);
        }
        let path = self
            .config
            .data_dir
            .join("pg_wal")
            .join(format!("{timeline:08X}.history"));
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Ok(super::TimelineSwitch::parse_last(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PgError::io(format!("reading {}", path.display()))(e)),
        }
    }

    fn fence_fn(&self) -> crate::fence::FenceFn {
        let data_dir = self.config.data_dir.clone();
        Box::new(move || super::fence_blocking(&data_dir, FENCE_SIGKILL_AFTER))
    }

    async fn postmaster_pid(&self) -> Result<Option<u32>, PgError> {
        self.live_pid()
    }

    async fn control_data(&self) -> Result<Option<ControlData>, PgError> {
        if !self.pg_version_file().exists() {
            return Ok(None);
        }
        let mut cmd = command(
            &self.bin_dir.join("pg_controldata"),
            &self.who,
            libc::SIGTERM,
        );
        cmd.env("LC_ALL", "C").arg("-D").arg(&self.config.data_dir);
        let text = tokio::time::timeout(CONTROLDATA_TIMEOUT, tool_output(cmd, "pg_controldata"))
            .await
            .map_err(|_| PgError::Timeout {
                what: "pg_controldata",
                after: CONTROLDATA_TIMEOUT,
            })??;
        let mut cd = controldata::parse(&text)?;
        cd.from_backup = self.config.data_dir.join("backup_label").exists();
        Ok(Some(cd))
    }

    async fn checkpoint(&self) -> Result<(), PgError> {
        self.with_client(|c| async move {
            c.batch_execute("CHECKPOINT")
                .await
                .map_err(PgError::sql("CHECKPOINT"))
        })
        .await
    }

    async fn create_roles(&self, auth: &Authentication) -> Result<(), PgError> {
        // A session of its own: it turns statement logging off.
        let client = self.connect().await?;
        tokio::time::timeout(Duration::from_secs(30), sql::create_roles(&client, auth))
            .await
            .map_err(|_| PgError::Timeout {
                what: "creating roles",
                after: Duration::from_secs(30),
            })?
    }

    async fn create_slot(&self, name: &str) -> Result<bool, PgError> {
        check_slot_name(name)?;
        let name = name.to_owned();
        self.with_client(|c| async move { sql::create_slot(&c, &name).await })
            .await
    }

    async fn drop_slot(&self, name: &str) -> Result<bool, PgError> {
        check_slot_name(name)?;
        let name = name.to_owned();
        self.with_client(|c| async move { sql::drop_slot(&c, &name).await })
            .await
    }

    async fn list_slots(&self) -> Result<Vec<SlotInfo>, PgError> {
        self.with_client(|c| async move { sql::list_slots(&c).await })
            .await
    }

    async fn rewind(&self, source_conninfo: &str) -> Result<RewindOutcome, PgError> {
        self.rewind_impl(source_conninfo).await
    }

    async fn move_data_dir_aside(&self) -> Result<std::path::PathBuf, PgError> {
        self.move_data_dir_aside_impl().await
    }
}
