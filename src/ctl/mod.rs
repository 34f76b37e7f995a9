//! `pgkeelctl`: the operator CLI, a gRPC client of the admin service.
//!
//! Exit codes: 0 done, 1 refused or failed (one sentence on stderr),
//! 2 usage.

mod connect;
mod output;

pub use connect::{Target, TlsFiles};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tonic::metadata::MetadataValue;
use tonic::Request;

use crate::config::{self, Config, NodeKind};
use crate::pb::admin as pb;
use crate::pb::admin::admin_client::AdminClient;

/// pgkeel's operator CLI.
#[derive(Parser, Debug)]
#[command(name = "pgkeelctl", version)]
pub struct Cli {
    /// gRPC address of any node (HOST:PORT).
    #[arg(long, env = "PGKEEL_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    /// A node's config file: endpoint, token and TLS are read from it.
    #[arg(short = 'c', long = "config", env = "PGKEEL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The cluster secret, needed by calls that change anything when the
    /// cluster sets no separate raft.admin_token.
    #[arg(long, env = "PGKEEL_SECRET", global = true, hide_env_values = true)]
    pub secret: Option<String>,
    /// The admin token (raft.admin_token) for calls that change anything;
    /// wins over --secret.
    #[arg(long, env = "PGKEEL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Connect in TLS, trusting only this CA certificate (PEM; the
    /// cluster's raft.tls.cafile).
    #[arg(long, env = "PGKEEL_CACERT", global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// The client certificate (PEM) for a cluster with
    /// raft.tls.verify_client; with --key.
    #[arg(
        long = "cert",
        env = "PGKEEL_CERT",
        global = true,
        value_name = "FILE",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    // Not `key`: `store put KEY VALUE` already has an argument of that id.
    #[arg(
        long = "key",
        env = "PGKEEL_KEY",
        global = true,
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    pub format: Format,
    /// How long to wait for an answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// The server a `dsn` should lead to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum DsnRole {
    /// The writable primary (`target_session_attrs=read-write`).
    Primary,
    /// A standby (`target_session_attrs=standby`, libpq 14 or newer).
    Replica,
    /// Whichever answers first.
    Any,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Every member: role, state, timeline, lag (like `patronictl list`).
    List,
    /// The dynamic cluster configuration (YAML unless --format json).
    ShowConfig,
    /// Every timeline switch: timeline, fork LSN, reason, time, new leader.
    History,
    /// A libpq multi-host connection URI over every data member.
    Dsn {
        #[arg(long, value_enum, default_value_t = DsnRole::Primary)]
        role: DsnRole,
    },
    /// Raft consensus state.
    Raft {
        #[command(subcommand)]
        command: RaftCommand,
    },
    /// Raw access to the cluster store (like etcdctl).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum RaftCommand {
    /// Leader, term, and every voter's reachability and last log index.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Read a key (or every key under a prefix).
    Get {
        key: String,
        #[arg(long)]
        prefix: bool,
        /// Read through the Raft leader instead of the answering node's copy.
        #[arg(long)]
        linearizable: bool,
    },
    /// Write a key.
    Put { key: String, value: String },
    /// Delete a key.
    Delete { key: String },
}

/// A failure to report: one sentence.
#[derive(Debug)]
pub struct CtlError(pub String);

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, CtlError> {
    config::load(path, NodeKind::Data)
        .or_else(|_| config::load(path, NodeKind::Witness))
        .map_err(|e| CtlError(e.to_string()))
}

impl Cli {
    /// Where and how to connect: flags and environment, then `-c FILE`.
    pub fn target(&self) -> Result<Target, CtlError> {
        let file = self.config.as_deref().map(load_config).transpose()?;
        Target::resolve(self, file.as_ref())
    }
}

fn status_error(endpoint: &str, s: tonic::Status) -> CtlError {
    if let Some(sentence) = connect::tls_sentence(endpoint, &s) {
        return CtlError(sentence);
    }
    match s.code() {
        tonic::Code::Unavailable
            if s.message().contains("transport") || s.message().contains("connect") =>
        {
            CtlError(format!(
                "cannot reach {endpoint}: is pgkeel running there? ({})",
                s.message()
            ))
        }
        _ => CtlError(s.message().to_string()),
    }
}

fn authorized<T>(msg: T, secret: &Option<String>) -> Result<Request<T>, CtlError> {
    let mut req = Request::new(msg);
    if let Some(s) = secret {
        let value = MetadataValue::try_from(format!("Bearer {s}")).map_err(|_| {
            CtlError("the token holds characters that cannot be sent; check it".into())
        })?;
        req.metadata_mut().insert("authorization", value);
    }
    Ok(req)
}

/// Runs one command and returns what to print on stdout.
pub async fn run(cli: Cli) -> Result<String, CtlError> {
    let target = cli.target()?;
    let channel = target.connect(cli.timeout, cli.timeout).await?;
    let (endpoint, secret) = (target.endpoint, target.token);
    let mut client = AdminClient::new(channel);
    match cli.command {
        Command::List => {
            let reply = client
                .list_members(pb::ListMembersRequest {})
                .await
                .map_err(|s| status_error(&endpoint, s))?
                .into_inner();
            Ok(output::list(&reply, cli.format))
        }
        Command::ShowConfig => {
            let reply = client
                .show_config(pb::ShowConfigRequest {})
                .await
                .map_err(|s| status_error(&endpoint, s))?
                .into_inner();
            output::show_config(&reply, cli.format).map_err(CtlError)
        }
        Command::History => {
            let reply = client
                .history(pb::HistoryRequest {})
                .await
                .map_err(|s| status_error(&endpoint, s))?
                .into_inner();
            Ok(output::history(&reply, cli.format))
        }
        Command::Dsn { role } => {
            let role = match role {
                DsnRole::Primary => "primary",
                DsnRole::Replica => "replica",
                DsnRole::Any => "any",
            };
            let reply = client
                .dsn(pb::DsnRequest { role: role.into() })
                .await
                .map_err(|s| status_error(&endpoint, s))?
                .into_inner();
            Ok(output::dsn(&reply, cli.format))
        }
        Command::Raft {
            command: RaftCommand::Status,
        } => {
            let reply = client
                .raft_status(pb::RaftStatusRequest {})
                .await
                .map_err(|s| status_error(&endpoint, s))?
                .into_inner();
            Ok(output::raft_status(&reply, cli.format))
        }
        Command::Store { command } => match command {
            StoreCommand::Get {
                key,
                prefix,
                linearizable,
            } => {
                let reply = client
                    .store_get(pb::StoreGetRequest {
                        key,
                        prefix,
                        linearizable,
                    })
                    .await
                    .map_err(|s| status_error(&endpoint, s))?
                    .into_inner();
                Ok(output::store_get(&reply, cli.format))
            }
            StoreCommand::Put { key, value } => {
                let reply = client
                    .store_put(authorized(pb::StorePutRequest { key, value }, &secret)?)
                    .await
                    .map_err(|s| status_error(&endpoint, s))?
                    .into_inner();
                Ok(output::revision(reply.revision, cli.format))
            }
            StoreCommand::Delete { key } => {
                let reply = client
                    .store_delete(authorized(pb::StoreDeleteRequest { key }, &secret)?)
                    .await
                    .map_err(|s| status_error(&endpoint, s))?
                    .into_inner();
                Ok(output::revision(reply.revision, cli.format))
            }
        },
    }
}
