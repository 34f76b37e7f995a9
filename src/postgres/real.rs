//! [`RealPostgres`]: the controller for a real server on this host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use crate::config::{PostgresqlConfig, Scalar};

use super::conf::{self, Settings, HBA_FILE, IDENT_FILE, SETTINGS_FILE};
use super::os::Identity;
use super::postmaster::{self, Postmaster};
use super::setup::{self, find_bin_dir};
use super::types::WantedRole;
use super::PgError;

/// How long one connection attempt or one query may take before the
/// controller gives up on it (a hung server must not stall the HA loop).
const SQL_TIMEOUT: Duration = Duration::from_secs(10);

/// Controls the PostgreSQL server of this node: the postmaster is pgkeel's
/// child, SQL goes over the node's unix socket as the superuser (peer
/// authentication, see [`conf`]). Shareable (`&self` everywhere): the HA
/// driver may probe while an action runs.
pub struct RealPostgres {
    pub(super) config: PostgresqlConfig,
    pub(super) bin_dir: PathBuf,
    pub(super) major: u32,
    pub(super) who: Identity,
    pub(super) socket_dir: PathBuf,
    socket_setting: String,
    create_socket_dir: bool,
    pub(super) state: Mutex<State>,
    pub(super) promoting: tokio::sync::Mutex<()>,
    client: Mutex<Option<Arc<Client>>>,
}

/// What the controller remembers between calls.
#[derive(Default)]
pub(super) struct State {
    /// The role the next start gets; `None` until configured, so a start
    /// never runs from whatever files a copy left behind.
    pub role: Option<WantedRole>,
    /// The dynamic config's parameters last given.
    pub cluster: BTreeMap<String, Scalar>,
    /// The postmaster pgkeel started, until seen exited.
    pub postmaster: Option<Postmaster>,
}

/// A snapshot of what the files depend on, for a blocking task.
struct Files {
    data_dir: PathBuf,
    config: PostgresqlConfig,
    socket_setting: String,
    cluster: BTreeMap<String, Scalar>,
    role: WantedRole,
    who: Identity,
}

impl RealPostgres {
    /// Checks everything that can be wrong before PostgreSQL is touched:
    /// the OS user, the data directory's owner, the binaries and their
    /// version, the socket path. Each failure is a [`PgError::Setup`]
    /// sentence naming the fix.
    pub fn new(config: PostgresqlConfig) -> Result<RealPostgres, PgError> {
        if !config.data_dir.is_absolute() {
            return Err(PgError::Setup(format!(
                "postgresql.data_dir {} is relative — write it as an absolute path",
                config.data_dir.display()
            )));
        }
        let who = Identity::resolve(&config.os_user)?;
        who.check_owner(&config.data_dir)?;
        let bin_dir = find_bin_dir(config.bin_dir.as_deref())?;
        let major = setup::server_major(&bin_dir)?;
        let (socket_dir, socket_setting, create_socket_dir) = setup::socket_dir(&config)?;
        Ok(RealPostgres {
            config,
            bin_dir,
            major,
            who,
            socket_dir,
            socket_setting,
            create_socket_dir,
            state: Mutex::new(State::default()),
            promoting: tokio::sync::Mutex::new(()),
            client: Mutex::new(None),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The directory of the node's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.config.listen.port
    }

    /// The server binaries' directory.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The binaries' major version (13, 14, …).
    pub fn major_version(&self) -> u32 {
        self.major
    }

    /// The OS user PostgreSQL runs as.
    pub fn os_user(&self) -> &str {
        &self.who.pg.name
    }

    /// A new connection as the superuser over the socket, its connection
    /// task spawned. For callers that need their own session.
    pub async fn connect(&self) -> Result<Client, PgError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host_path(&self.socket_dir)
            .port(self.config.listen.port)
            .user(&self.config.authentication.superuser.username)
            .dbname("postgres")
            .application_name("pgkeel")
            .connect_timeout(SQL_TIMEOUT);
        let (client, connection) = tokio::time::timeout(SQL_TIMEOUT, cfg.connect(NoTls))
            .await
            .map_err(|_| PgError::Timeout {
                what: "a connection to PostgreSQL",
                after: SQL_TIMEOUT,
            })?
            .map_err(PgError::sql("connecting to PostgreSQL over its socket"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// The shared connection, reconnecting when the last one closed.
    pub(super) async fn client(&self) -> Result<Arc<Client>, PgError> {
        if let Some(c) = lock(&self.client).as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(self.connect().await?);
        *lock(&self.client) = Some(c.clone());
        Ok(c)
    }

    /// Drops the shared connection (after a restart or a failed query).
    pub(super) fn forget_client(&self) {
        *lock(&self.client) = None;
    }

    /// Runs `f` on the shared connection with [`SQL_TIMEOUT`].
    pub(super) async fn with_client<T, F, Fut>(&self, f: F) -> Result<T, PgError>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, PgError>>,
    {
        let client = self.client().await?;
        match tokio::time::timeout(SQL_TIMEOUT, f(client)).await {
            Ok(result) => result,
            Err(_) => {
                self.forget_client();
                Err(PgError::Timeout {
                    what: "a query",
                    after: SQL_TIMEOUT,
                })
            }
        }
    }

    pub(super) fn pg_version_file(&self) -> PathBuf {
        self.config.data_dir.join("PG_VERSION")
    }

    /// Rewrites `pgkeel.conf`, `pg_hba.conf`, `pg_ident.conf` and
    /// `standby.signal` from the remembered role and parameters.
    pub(super) async fn write_files(&self) -> Result<(), PgError> {
        let files = {
            let st = lock(&self.state);
            Files {
                data_dir: self.config.data_dir.clone(),
                config: self.config.clone(),
                socket_setting: self.socket_setting.clone(),
                cluster: st.cluster.clone(),
                role: st.role.clone().ok_or(PgError::NoRole)?,
                who: self.who.clone(),
            }
        };
        blocking(move || files.write()).await
    }

    /// Creates the default socket directory (0755, owned by the server's
    /// user) so the postmaster can create its socket and lock file there.
    pub(super) async fn prepare_socket_dir(&self) -> Result<(), PgError> {
        if !self.create_socket_dir {
            return Ok(());
        }
        let (who, dir) = (self.who.clone(), self.socket_dir.clone());
        blocking(move || who.create_dir(&dir, 0o755)).await
    }

    /// Creates the data directory (0700, owned by the server's user).
    pub(super) async fn prepare_data_dir(&self) -> Result<(), PgError> {
        if self.pg_version_file().exists() {
            return Err(PgError::Setup(format!(
                "the data directory {} already holds a PostgreSQL cluster — move it aside before creating a new one",
                self.config.data_dir.display()
            )));
        }
        let (who, dir) = (self.who.clone(), self.config.data_dir.clone());
        blocking(move || who.create_dir(&dir, 0o700)).await
    }

    /// The live postmaster's PID: pgkeel's child while it runs, else the
    /// one `postmaster.pid` names if that process is alive, runs a
    /// `postgres` program and the file is this data directory's.
    pub(super) fn live_pid(&self) -> Result<Option<u32>, PgError> {
        {
            let mut st = lock(&self.state);
            if let Some(pm) = st.postmaster.as_mut() {
                match pm.child.try_wait() {
                    Ok(None) => return Ok(Some(pm.pid)),
                    Ok(Some(status)) => tracing::warn!(pid = pm.pid, %status, "PostgreSQL exited"),
                    Err(e) => {
                        tracing::warn!(pid = pm.pid, error = %e, "cannot check on PostgreSQL")
                    }
                }
                st.postmaster = None;
            }
        }
        postmaster::verified_pid(&self.config.data_dir)
    }
}

impl Files {
    fn write(self) -> Result<(), PgError> {
        let dir = &self.data_dir;
        if !dir.join("PG_VERSION").exists() {
            return Err(PgError::NotInitialized(dir.display().to_string()));
        }
        let settings = Settings {
            data_dir: dir,
            listen: &self.config.listen,
            socket_dirs: &self.socket_setting,
            local: &self.config.parameters,
            cluster: &self.cluster,
            role: &self.role,
        };
        let (text, ignored) = conf::render_settings(&settings);
        if !ignored.is_empty() {
            tracing::warn!(?ignored, "parameters pgkeel sets itself were ignored");
        }
        self.who.write_file(&dir.join(SETTINGS_FILE), &text)?;
        // The synchronous setting is included by the settings file; it
        // exists from the first start so PostgreSQL never reports it
        // missing (its content is the primary's to change).
        let sync = dir.join(conf::SYNC_FILE);
        if !sync.exists() {
            self.who.write_file(&sync, &conf::render_sync(""))?;
        }
        let superuser = &self.config.authentication.superuser.username;
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let hba = conf::render_hba(superuser, &self.config.pg_hba, read(HBA_FILE).as_deref());
        self.who.write_file(&dir.join(HBA_FILE), &hba)?;
        let users = [self.who.agent_name.as_str(), self.who.pg.name.as_str()];
        let ident = conf::render_ident(read(IDENT_FILE).as_deref(), &users, superuser);
        self.who.write_file(&dir.join(IDENT_FILE), &ident)?;
        remove_if_exists(&dir.join("recovery.signal"))?;
        let standby_signal = dir.join("standby.signal");
        match self.role {
            WantedRole::Primary => remove_if_exists(&standby_signal),
            WantedRole::Standby { .. } => self.who.write_file(&standby_signal, ""),
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), PgError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PgError::io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// File work off the async threads (a slow disk must not stall the loop).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, PgError> + Send + 'static,
) -> Result<T, PgError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PgError::io("running a file task")(std::io::Error::other(e)))?
}

/// A poisoned lock only means another task panicked mid-update of plain
/// data; the data is still the best knowledge there is.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
