//! The member-operation commands: `restart`, `reload`, `reinit`,
//! `cancel restart|switchover`, `watch`, and the live views `list -w` and
//! `topology`.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use tonic::transport::Channel;

use super::{authorized, output, status_error, CtlError, Format};
use crate::pb::admin as pb;
use crate::pb::admin::admin_client::AdminClient;

/// Which members a restart may touch.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleFilter {
    Primary,
    Replica,
    Any,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// The member; without it, every data member, one at a time,
    /// replicas first and the primary last.
    pub member: Option<String>,
    /// Only members with this role.
    #[arg(long, value_enum)]
    pub role: Option<RoleFilter>,
    /// Only members whose PostgreSQL reports a setting pending restart.
    #[arg(long)]
    pub pending: bool,
    /// Restart at this time (RFC 3339, e.g. 2026-11-22T03:00:00Z) instead
    /// of now; needs MEMBER.
    #[arg(long, value_name = "TIME")]
    pub scheduled: Option<String>,
    /// Replace an operation of the member that has not finished.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the outcome.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

#[derive(Args, Debug)]
pub struct ReloadArgs {
    /// The member; without it, every data member.
    pub member: Option<String>,
    /// How long to wait for the outcome.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

#[derive(Args, Debug)]
pub struct ReinitArgs {
    /// The replica to clone again from the leader.
    pub member: String,
    /// Replace an operation of the member that has not finished.
    #[arg(long)]
    pub force: bool,
    /// How long to wait for the new copy to run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

#[derive(Subcommand, Debug)]
pub enum CancelCommand {
    /// Cancel a member's scheduled restart.
    Restart { member: String },
    /// Cancel the scheduled switchover.
    Switchover,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The operation id a restart, reload, reinit or switchover printed.
    pub id: String,
    /// Give up after this long.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub wait: Duration,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

fn describe(p: &pb::OperationProgress) -> String {
    let what = if p.member.is_empty() {
        p.kind.clone()
    } else {
        format!("{} of {}", p.kind, p.member)
    };
    format!("{what}: {} — {} (operation {})", p.state, p.message, p.id)
}

/// The operations a call acted on.
fn operations(r: &pb::OperationsReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => output::render(
            json!({ "operations": r.operations.iter().map(progress_doc).collect::<Vec<_>>() }),
            format,
        ),
        Format::Table if r.operations.is_empty() => "no member matched; nothing to do".into(),
        Format::Table => r
            .operations
            .iter()
            .map(|p| {
                if p.state == "pending" && !p.scheduled_at.is_empty() {
                    format!(
                        "{} of {} scheduled for {} (operation {}); cancel it with `pgkeelctl cancel {} {}`",
                        p.kind, p.member, p.scheduled_at, p.id, p.kind, p.member
                    )
                } else {
                    describe(p)
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn progress_doc(p: &pb::OperationProgress) -> serde_json::Value {
    json!({
        "id": p.id,
        "member": if p.member.is_empty() { None } else { Some(&p.member) },
        "kind": p.kind,
        "state": p.state,
        "message": p.message,
        "scheduled_at": if p.scheduled_at.is_empty() { None } else { Some(&p.scheduled_at) },
    })
}

/// Runs a restart, reload or reinit: the answer once every member acted on
/// is done.
pub async fn restart(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    secret: &Option<String>,
    a: RestartArgs,
    format: Format,
) -> Result<String, CtlError> {
    let role = match a.role {
        Some(RoleFilter::Primary) => "primary",
        Some(RoleFilter::Replica) => "replica",
        Some(RoleFilter::Any) | None => "",
    };
    let req = pb::RestartRequest {
        member: a.member.unwrap_or_default(),
        role: role.into(),
        pending_only: a.pending,
        scheduled_at: a.scheduled.unwrap_or_default(),
        force: a.force,
        timeout_ms: millis(a.wait),
    };
    let reply = client
        .restart(authorized(req, secret)?)
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    Ok(operations(&reply, format))
}

pub async fn reload(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    secret: &Option<String>,
    a: ReloadArgs,
    format: Format,
) -> Result<String, CtlError> {
    let req = pb::ReloadRequest {
        member: a.member.unwrap_or_default(),
        timeout_ms: millis(a.wait),
    };
    let reply = client
        .reload(authorized(req, secret)?)
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    Ok(operations(&reply, format))
}

pub async fn reinit(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    secret: &Option<String>,
    a: ReinitArgs,
    format: Format,
) -> Result<String, CtlError> {
    let req = pb::ReinitializeRequest {
        member: a.member,
        force: a.force,
        timeout_ms: millis(a.wait),
    };
    let reply = client
        .reinitialize(authorized(req, secret)?)
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    Ok(operations(&reply, format))
}

pub async fn cancel(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    secret: &Option<String>,
    c: CancelCommand,
    format: Format,
) -> Result<String, CtlError> {
    let (what, member) = match c {
        CancelCommand::Restart { member } => ("restart", member),
        CancelCommand::Switchover => ("switchover", String::new()),
    };
    let req = pb::CancelScheduledRequest {
        what: what.into(),
        member: member.clone(),
    };
    let reply = client
        .cancel_scheduled(authorized(req, secret)?)
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    Ok(match format {
        Format::Json | Format::Yaml => output::render(json!({ "cancelled": reply.id }), format),
        Format::Table if member.is_empty() => {
            format!("cancelled the scheduled {what} (operation {})", reply.id)
        }
        Format::Table => format!(
            "cancelled the scheduled {what} of {member} (operation {})",
            reply.id
        ),
    })
}

/// Prints each change of an operation as it happens; exits 0 when it ends
/// done, 1 when it fails.
pub async fn watch(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    a: WatchArgs,
    format: Format,
) -> Result<String, CtlError> {
    let req = pb::WatchRequest {
        id: a.id,
        timeout_ms: millis(a.wait),
    };
    let mut stream = client
        .watch(req)
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    let mut last: Option<pb::OperationProgress> = None;
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                let line = match format {
                    Format::Table => describe(&p),
                    _ => output::render(progress_doc(&p), Format::Json),
                };
                println!("{line}");
                last = Some(p);
            }
            Ok(None) => break,
            Err(s) => return Err(status_error(endpoint, s)),
        }
    }
    match last {
        Some(p) if p.state == "failed" => Err(CtlError(format!(
            "{} failed: {}",
            if p.member.is_empty() {
                p.kind.clone()
            } else {
                format!("{} of {}", p.kind, p.member)
            },
            p.message
        ))),
        _ => Ok(String::new()),
    }
}

/// `list -w SECONDS`: the list, redrawn every interval until Ctrl-C.
pub async fn list_watch(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    every: f64,
    format: Format,
    topology: bool,
) -> Result<String, CtlError> {
    let every = Duration::try_from_secs_f64(every)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            CtlError(format!(
                "--watch {every} is not a positive number of seconds"
            ))
        })?;
    loop {
        let reply = client
            .list_members(pb::ListMembersRequest {})
            .await
            .map_err(|s| status_error(endpoint, s))?
            .into_inner();
        let body = if topology {
            self::topology(&reply, format)
        } else {
            output::list(&reply, format)
        };
        // Clear the screen and home the cursor, then draw.
        print!(
            "\x1b[2J\x1b[H{}\n{body}\n",
            crate::store::keys::format_time(std::time::SystemTime::now())
        );
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(String::new()),
        }
    }
}

/// `topology`: the leader, the replicas under it (every pgkeel standby
/// streams from the leader), then the witness.
pub fn topology(r: &pb::ListMembersReply, format: Format) -> String {
    let is_witness = |m: &&pb::MemberStatus| m.role == "witness";
    let leader: Vec<&pb::MemberStatus> = r.members.iter().filter(|m| m.name == r.leader).collect();
    let replicas: Vec<&pb::MemberStatus> = r
        .members
        .iter()
        .filter(|m| m.name != r.leader && !is_witness(m))
        .collect();
    let witnesses: Vec<&pb::MemberStatus> = r.members.iter().filter(is_witness).collect();
    match format {
        Format::Json | Format::Yaml => {
            let doc = |m: &pb::MemberStatus| json!({"name": m.name, "host": m.host, "role": m.role, "state": m.state});
            output::render(
                json!({
                    "scope": r.scope,
                    "leader": leader.first().map(|m| {
                        let mut d = doc(m);
                        d["replicas"] = replicas.iter().map(|m| doc(m)).collect();
                        d
                    }),
                    "unattached": if leader.is_empty() {
                        replicas.iter().map(|m| doc(m)).collect::<Vec<_>>()
                    } else {
                        Vec::new()
                    },
                    "witnesses": witnesses.iter().map(|m| doc(m)).collect::<Vec<_>>(),
                }),
                format,
            )
        }
        Format::Table => {
            let indent = if leader.is_empty() { "" } else { "+ " };
            let row = output::member_cells;
            let mut rows: Vec<Vec<String>> = leader.iter().map(|m| row("", m)).collect();
            rows.extend(replicas.iter().map(|m| row(indent, m)));
            rows.extend(witnesses.iter().map(|m| row("", m)));
            format!(
                "Cluster: {}\n{}",
                r.scope,
                output::table(&["Member", "Host", "Role", "State", "TL"], &rows)
            )
        }
    }
}
