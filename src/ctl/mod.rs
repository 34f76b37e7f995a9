//! `pgkeelctl`: the operator CLI, a gRPC client of the admin service.
//!
//! Exit codes: 0 done, 1 refused or failed (one sentence on stderr),
//! 2 usage.

mod connect;
mod edit_config;
mod member;
mod ops;
mod output;
mod switchover;

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
    List {
        /// Redraw every SECONDS until Ctrl-C.
        #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
        watch: Option<f64>,
    },
    /// The dynamic cluster configuration (YAML unless --format json).
    ShowConfig,
    /// Every timeline switch: timeline, fork LSN, reason, time, new leader.
    History,
    /// A libpq multi-host connection URI over every data member.
    Dsn {
        #[arg(long, value_enum, default_value_t = DsnRole::Primary)]
        role: DsnRole,
    },
    /// Change the dynamic config: shows a diff, asks, and applies it with
    /// a compare-and-set on the revision shown.
    #[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["set", "pg", "apply"])))]
    EditConfig {
        /// Set KEY (a dotted path, e.g. postgresql.parameters.work_mem) to VALUE
        /// (YAML; null removes the key). Repeatable.
        #[arg(short = 's', long = "set", value_name = "KEY=VALUE", value_parser = edit_config::parse_set)]
        set: Vec<edit_config::Setting>,
        /// Set the PostgreSQL parameter NAME, short for
        /// -s postgresql.parameters.NAME=VALUE. Repeatable.
        #[arg(short = 'p', long = "pg", value_name = "NAME=VALUE", value_parser = edit_config::parse_param)]
        pg: Vec<edit_config::Setting>,
        /// Merge this YAML or JSON document (- for stdin) as a patch.
        #[arg(long, value_name = "FILE")]
        apply: Option<PathBuf>,
        /// Apply without asking (needed when stdin is not a terminal).
        #[arg(long)]
        force: bool,
    },
    /// Raft consensus state.
    Raft {
        #[command(subcommand)]
        command: RaftCommand,
    },
    /// Hand the primary role to a standby: the primary stops cleanly and
    /// the candidate has every write before it is promoted.
    Switchover {
        /// The member you expect to lead now (refused if another does).
        #[arg(long)]
        leader: Option<String>,
        /// The standby to promote; default: the best healthy one.
        #[arg(long)]
        candidate: Option<String>,
        /// When: an RFC 3339 UTC time (2026-11-22T03:00:00Z) or +DURATION
        /// from now (+10m); default: now.
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Promote the named standby: through the primary if one leads, else as
    /// soon as the dead primary's lease runs out.
    Failover {
        #[arg(long)]
        candidate: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Maintenance mode: no automatic failover; pgkeel starts and stops no
    /// PostgreSQL (a primary still fences when it loses its lease).
    Pause {
        /// Return once every member reports it.
        #[arg(long)]
        wait: bool,
    },
    /// Leave maintenance mode.
    Resume {
        /// Return once every member reports it.
        #[arg(long)]
        wait: bool,
    },
    /// Raw access to the cluster store (like etcdctl).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Add or remove a Raft voter online (data node or witness).
    Member {
        #[command(subcommand)]
        command: member::MemberCommand,
    },
    // ---- member operations (issue 6) ----
    /// Restart PostgreSQL on a member, or on every member one at a time.
    Restart(ops::RestartArgs),
    /// Reload PostgreSQL's settings on a member, or on every member.
    Reload(ops::ReloadArgs),
    /// Clone a replica again from the leader (its old data directory is
    /// moved aside, never deleted).
    Reinit(ops::ReinitArgs),
    /// Cancel a scheduled restart or switchover.
    Cancel {
        #[command(subcommand)]
        what: ops::CancelCommand,
    },
    /// Follow an operation by id until it ends.
    Watch(ops::WatchArgs),
    /// The leader, the replicas streaming from it, and the witness.
    Topology {
        /// Redraw every SECONDS until Ctrl-C.
        #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
        watch: Option<f64>,
    },
}

impl Command {
    /// How long the call may take beyond the usual `--timeout`: the
    /// operations wait for their outcome.
    fn waits(&self) -> Duration {
        match self {
            Command::Restart(a) => a.wait,
            Command::Reload(a) => a.wait,
            Command::Reinit(a) => a.wait,
            Command::Watch(a) => a.wait,
            Command::Switchover { .. }
            | Command::Failover { .. }
            | Command::Pause { wait: true }
            | Command::Resume { wait: true } => switchover::LONG_CALL,
            _ => Duration::ZERO,
        }
    }
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
    // Calls that wait for the cluster get longer than `--timeout`: the
    // channel's bound would otherwise cut them short.
    let call_timeout = match &cli.command {
        Command::Member { command } => command.timeout(cli.timeout),
        other => cli.timeout + other.waits(),
    };
    let channel = target.connect(cli.timeout, call_timeout).await?;
    let (endpoint, secret) = (target.endpoint, target.token);
    let mut client = AdminClient::new(channel);
    let mut call = switchover::Call {
        client: &mut client,
        endpoint: &endpoint,
        secret: &secret,
        timeout: cli.timeout,
        format: cli.format,
    };
    match cli.command {
        Command::Switchover {
            leader,
            candidate,
            scheduled,
            force,
        } => call.switchover(leader, candidate, scheduled, force).await,
        Command::Failover { candidate, force } => call.failover(candidate, force).await,
        Command::Pause { wait } => call.pause(true, wait).await,
        Command::Resume { wait } => call.pause(false, wait).await,
        Command::List { watch: Some(every) } => {
            ops::list_watch(&mut client, &endpoint, every, cli.format, false).await
        }
        Command::Topology { watch: Some(every) } => {
            ops::list_watch(&mut client, &endpoint, every, cli.format, true).await
        }
        Command::Topology { watch: None } => {
            let reply = client
                .list_members(pb::ListMembersRequest {})
                .await
                .map_err(|s| status_error(&endpoint, s))?
                .into_inner();
            Ok(ops::topology(&reply, cli.format))
        }
        Command::Restart(a) => ops::restart(&mut client, &endpoint, &secret, a, cli.format).await,
        Command::Reload(a) => ops::reload(&mut client, &endpoint, &secret, a, cli.format).await,
        Command::Reinit(a) => ops::reinit(&mut client, &endpoint, &secret, a, cli.format).await,
        Command::Cancel { what } => {
            ops::cancel(&mut client, &endpoint, &secret, what, cli.format).await
        }
        Command::Watch(a) => ops::watch(&mut client, &endpoint, a, cli.format).await,
        Command::List { watch: None } => {
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
        Command::EditConfig {
            set,
            pg,
            apply,
            force,
        } => {
            let args = edit_config::EditArgs {
                settings: set.into_iter().chain(pg).collect(),
                apply,
                force,
            };
            edit_config::run(&mut client, &endpoint, &secret, args, cli.format).await
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
        Command::Member { command } => member::run(&mut client, command, &secret, cli.format)
            .await?
            .map_err(|s| status_error(&endpoint, s)),
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
