//! The `postgresql:` section, as in Patroni: how this node runs its server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::addr::{host_port_problem, PgListen};
use super::callbacks::{CallbackCommand, Callbacks};
use super::defaults;
use super::validate::Problems;
use super::value::{Scalar, Secret};

/// Local PostgreSQL settings of a data node. Cluster-wide parameters go in
/// `bootstrap.dcs.postgresql` instead; these are this node's own.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresqlConfig {
    /// Where the server listens (`listen_addresses` and `port`).
    pub listen: PgListen,
    /// `host:port` other nodes and clients use to reach this server;
    /// read it through [`PostgresqlConfig::connect_address`].
    #[serde(default)]
    pub connect_address: Option<String>,
    /// The data directory (`PGDATA`).
    pub data_dir: PathBuf,
    /// Where `pg_ctl`, `initdb`, `pg_rewind`… live; `PATH` when absent.
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// The user PostgreSQL programs run as when pgkeel runs as root.
    #[serde(default = "defaults::os_user")]
    pub os_user: String,
    /// The roles pgkeel connects as.
    pub authentication: Authentication,
    /// Local `postgresql.conf` settings.
    #[serde(default)]
    pub parameters: BTreeMap<String, Scalar>,
    /// Lines of `pg_hba.conf`; pgkeel writes the file when the list is set.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// Rejoin a diverged former primary with pg_rewind before recloning.
    #[serde(default = "defaults::use_pg_rewind")]
    pub use_pg_rewind: bool,
    /// When pg_rewind fails, move the data directory aside and reclone.
    /// On by default (Patroni's is off): pgkeel never deletes the old
    /// directory, it renames it, so recloning costs no data and needs no
    /// human step.
    #[serde(default = "defaults::remove_data_directory_on_rewind_failure")]
    pub remove_data_directory_on_rewind_failure: bool,
    /// Scripts run after PostgreSQL events (Patroni's keys).
    #[serde(default)]
    pub callbacks: Callbacks,
    /// Run by a candidate that won the leader key, before it promotes: a
    /// non-zero exit or a timeout cancels the promotion.
    #[serde(default)]
    pub pre_promote: Option<CallbackCommand>,
    /// Bound on each callback and on `pre_promote`; one that runs over is
    /// killed with its process group.
    #[serde(default = "defaults::callback_timeout", with = "super::duration")]
    pub callback_timeout: Duration,
}

/// The roles pgkeel uses, Patroni's `authentication:` block.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authentication {
    /// For local administration (promote checks, CHECKPOINT, slots).
    pub superuser: PgUser,
    /// For streaming replication and pg_basebackup.
    pub replication: PgUser,
    /// For pg_rewind; the superuser when absent.
    #[serde(default)]
    pub rewind: Option<PgUser>,
}

/// One role and its password.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgUser {
    /// The role name.
    pub username: String,
    /// The password; absent for trust, peer or `.pgpass` authentication.
    #[serde(default)]
    pub password: Option<Secret>,
}

impl PostgresqlConfig {
    /// The `host:port` others use to reach this server: `connect_address`,
    /// else the listen address when it names a single dialable host.
    pub fn connect_address(&self) -> Option<String> {
        self.connect_address
            .clone()
            .or_else(|| self.listen.dialable())
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        match &self.connect_address {
            Some(a) => p.add_opt("postgresql.connect_address", host_port_problem(a, "10.0.0.1:5432")),
            None if self.listen.dialable().is_none() => p.add(
                "postgresql.connect_address",
                format!(
                    "is needed because postgresql.listen {} names no single host others can dial — set it to this host's address, e.g. 10.0.0.1:{}",
                    self.listen, self.listen.port
                ),
            ),
            None => {}
        }
        if self.data_dir.as_os_str().is_empty() {
            p.add("postgresql.data_dir", "is empty — set it to the PostgreSQL data directory, e.g. /var/lib/postgresql/15/main");
        }
        if self
            .bin_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            p.add(
                "postgresql.bin_dir",
                "is empty — set the directory holding pg_ctl, or remove the key to use PATH",
            );
        }
        if self.os_user.is_empty() {
            p.add(
                "postgresql.os_user",
                format!(
                    "is empty — name the OS user PostgreSQL runs as, e.g. {}",
                    defaults::OS_USER
                ),
            );
        }
        let auth = &self.authentication;
        let users = [
            ("superuser", Some(&auth.superuser)),
            ("replication", Some(&auth.replication)),
            ("rewind", auth.rewind.as_ref()),
        ];
        for (role, user) in users {
            if user.is_some_and(|u| u.username.is_empty()) {
                p.add(
                    format!("postgresql.authentication.{role}.username"),
                    "is empty — name the PostgreSQL role",
                );
            }
        }
        check_parameters(p, "postgresql.parameters", &self.parameters);
        super::callbacks::check(
            p,
            &self.callbacks,
            self.pre_promote.as_ref(),
            self.callback_timeout,
        );
        for (i, line) in self.pg_hba.iter().enumerate() {
            if line.trim().is_empty() {
                p.add(
                    format!("postgresql.pg_hba[{i}]"),
                    "is empty — write a pg_hba.conf line or remove the item",
                );
            }
        }
    }
}

/// Parameter names are what PostgreSQL accepts: letters, digits, `_`, and a
/// `.` for extension settings.
pub(crate) fn check_parameters(p: &mut Problems, at: &str, parameters: &BTreeMap<String, Scalar>) {
    for name in parameters.keys() {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid {
            p.add(
                format!("{at}.{name}"),
                "is not a PostgreSQL parameter name — use letters, digits, '_' and '.' only",
            );
        }
    }
}
