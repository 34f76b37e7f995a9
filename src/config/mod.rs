//! The node config file: one YAML file per node, shaped like Patroni's.
//!
//! ```text
//!   file ──read──▶ text ──serde_norway + serde_path_to_error──▶ Config
//!                                (syntax, unknown key, wrong type:
//!                                 one Problem at the exact key)
//!   Config ──secret_file read──▶ Config::validate(kind) ──▶ every Problem, or Ok
//! ```
//!
//! An operator who knows Patroni recognises every key: `scope`, `name`,
//! `restapi`, `postgresql`, `bootstrap.dcs`, `tags`, `watchdog`, plus a
//! `raft:` section (node id, listen address, peers, data dir) in place of
//! `etcd3:`. The same loader serves both binaries; [`NodeKind`] says which
//! sections a file may hold. Defaults live in [`defaults`]; durations take
//! `500ms`/`5s`/`1m` or plain seconds ([`duration`]).
//!
//! Parsing stops at the first syntax or type error (serde cannot go on past
//! one); everything after that is collected, so a file is fixed in one pass.

mod addr;
mod bootstrap;
mod callbacks;
pub mod defaults;
pub mod duration;
pub mod edit;
mod error;
mod node;
mod postgresql;
mod raft;
mod raft_tls;
mod validate;
mod value;

#[cfg(test)]
mod callback_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tls_tests;

use std::path::Path;

pub use addr::PgListen;
pub(crate) use addr::{host_port_problem, same_address};
pub use bootstrap::{BootstrapConfig, DcsConfig, DcsPostgresql, InitdbOption, SynchronousMode};
pub use callbacks::{CallbackCommand, Callbacks};
pub use error::{ConfigError, Problem};
pub use node::{LogConfig, RestApiConfig, RestAuthentication, Tags, WatchdogConfig, WatchdogMode};
pub use postgresql::{Authentication, PgUser, PostgresqlConfig};
pub use raft::{Peer, RaftConfig};
#[cfg(feature = "tls")]
pub(crate) use raft_tls::host_of;
pub use raft_tls::RaftTls;
pub use validate::check_timing;
pub(crate) use validate::name_problem;
pub use value::{Scalar, Secret};

use serde::Deserialize;

/// Which binary reads the file. A witness file holds only `scope`, `name`,
/// `log` and `raft`; a data node's may hold everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// `pgkeel`: Raft voter plus PostgreSQL, HA loop and REST API.
    Data,
    /// `pgkeel-witness`: a Raft voter only.
    Witness,
}

/// One node's whole config file, as loaded and validated by [`load`].
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster name; every node of one cluster has the same.
    pub scope: String,
    /// This member's name, unique in the cluster.
    pub name: String,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Consensus: node id, transport, initial voters, Raft timings.
    pub raft: RaftConfig,
    /// REST API (data node only); see [`Config::restapi`] for the default.
    #[serde(default)]
    pub restapi: Option<RestApiConfig>,
    /// The local PostgreSQL server (data node only).
    #[serde(default)]
    pub postgresql: Option<PostgresqlConfig>,
    /// What a new cluster starts with (data node only).
    #[serde(default)]
    pub bootstrap: Option<BootstrapConfig>,
    /// Patroni tags (data node only).
    #[serde(default)]
    pub tags: Option<Tags>,
    /// Hardware watchdog (data node only); absent means no watchdog.
    #[serde(default)]
    pub watchdog: Option<WatchdogConfig>,
}

impl Config {
    /// This node's entry in `raft.peers`.
    ///
    /// `None` only on a `Config` that skipped validation: [`load`] and
    /// [`parse`] refuse a file whose `raft.node_id` is not in `raft.peers`.
    pub fn me(&self) -> Option<&Peer> {
        self.raft.peer(self.raft.node_id)
    }

    /// The initial dynamic config: `bootstrap.dcs`, or every default.
    pub fn dcs(&self) -> DcsConfig {
        self.bootstrap
            .as_ref()
            .map(|b| b.dcs.clone())
            .unwrap_or_default()
    }

    /// The REST API settings, defaults when the section is absent.
    pub fn restapi(&self) -> RestApiConfig {
        self.restapi.clone().unwrap_or_default()
    }
}

/// Reads, parses and validates the config file at `path` for a node of `kind`.
pub fn load(path: &Path, kind: NodeKind) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::one(
            &origin,
            Problem::new(
                "",
                format!("cannot read the config file: {e} — check the path and its permissions"),
            ),
        )
    })?;
    parse(&text, &origin, kind)
}

/// Parses and validates config `text`; `origin` names it in errors. Reads
/// `raft.secret_file` (relative to the working directory) when set.
pub fn parse(text: &str, origin: &str, kind: NodeKind) -> Result<Config, ConfigError> {
    let blank = text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---"
    });
    if blank {
        return Err(ConfigError::one(
            origin,
            Problem::new("", "the file is empty — write at least scope, name and a raft section (see config/examples/)"),
        ));
    }
    // Syntax first, so that a broken file is reported as such rather than as
    // a wrong type at whichever key the parser had reached.
    if let Err(e) = serde_norway::from_str::<serde_norway::Value>(text) {
        return Err(ConfigError::one(origin, error::from_yaml(&e)));
    }
    let deserializer = serde_norway::Deserializer::from_str(text);
    let mut config: Config = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| ConfigError::one(origin, error::from_serde(&e)))?;
    config.raft.load_secret_file();
    if let Some(restapi) = config.restapi.as_mut() {
        restapi.load_token_file();
    }
    let problems = config.validate(kind);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError {
            origin: origin.to_owned(),
            problems,
        })
    }
}
