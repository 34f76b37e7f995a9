//! `pgkeelctl member add|remove`: online Raft membership change.

use std::time::Duration;

use clap::Subcommand;
use tonic::transport::Channel;

use super::{authorized, output, CtlError, Format};
use crate::pb::admin as pb;
use crate::pb::admin::admin_client::AdminClient;

/// Time on top of the catch-up bound for the two membership changes and a
/// forward to the Raft leader.
const CHANGE_MARGIN: Duration = Duration::from_secs(60);

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Add a running node (started with `raft.join: true`) as a voter: it
    /// joins as a learner and is promoted once it has caught up.
    Add {
        /// Its `name`, as in its config file.
        name: String,
        /// Its `raft.node_id`.
        #[arg(long)]
        id: u64,
        /// Its gRPC `host:port`, as the other nodes dial it.
        #[arg(long)]
        address: String,
        /// It is a `pgkeel-witness`.
        #[arg(long)]
        witness: bool,
        /// How long it may take to catch up with the Raft log before the add
        /// is abandoned (and the learner removed again).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        catch_up_timeout: Duration,
    },
    /// Remove a voter (or a leftover learner). Refused for the primary
    /// (switch over first) and when fewer than three voters would remain.
    Remove {
        /// Its member name.
        name: String,
    },
}

impl MemberCommand {
    /// How long the call may take: the catch-up bound and the changes.
    pub fn timeout(&self, base: Duration) -> Duration {
        match self {
            MemberCommand::Add {
                catch_up_timeout, ..
            } => base + *catch_up_timeout + CHANGE_MARGIN,
            MemberCommand::Remove { .. } => base + CHANGE_MARGIN,
        }
    }
}

/// Runs one `member` command.
pub async fn run(
    client: &mut AdminClient<Channel>,
    command: MemberCommand,
    secret: &Option<String>,
    format: Format,
) -> Result<Result<String, tonic::Status>, CtlError> {
    let reply = match command {
        MemberCommand::Add {
            name,
            id,
            address,
            witness,
            catch_up_timeout,
        } => {
            let req = pb::AddMemberRequest {
                name,
                node_id: id,
                address,
                witness,
                catch_up_timeout_ms: u64::try_from(catch_up_timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            };
            client.add_member(authorized(req, secret)?).await
        }
        MemberCommand::Remove { name } => {
            let req = pb::RemoveMemberRequest { name };
            client.remove_member(authorized(req, secret)?).await
        }
    };
    Ok(reply.map(|r| output::membership(&r.into_inner(), format)))
}
