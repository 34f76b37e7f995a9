//! Starting the HA agent of a data node from its configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::{self, AgentSpec};
use crate::config::Config;
use crate::consensus::handler::RaftPeerHandler;
use crate::ha::{sanitize_slot_name, HaConfig, MemberTags};
use crate::postgres::{RealPostgres, StartSpec};
use crate::status::NodeStatus;
use crate::store::Store;

/// The agent's settings from the node's file (the dynamic config comes from
/// `bootstrap.dcs` until `edit-config` exists).
pub fn spec(config: &Config) -> anyhow::Result<(AgentSpec, crate::config::PostgresqlConfig)> {
    let mut pg = config
        .postgresql
        .clone()
        .context("this data node has no postgresql section")?;
    if pg.data_dir.is_relative() {
        let cwd = std::env::current_dir().context("cannot read the working directory")?;
        pg.data_dir = cwd.join(&pg.data_dir);
    }
    let dcs = config.dcs();
    let tags = config.tags.clone().unwrap_or_default();
    let pg_address = pg
        .connect_address()
        .context("postgresql.connect_address is needed: other members must reach this server")?;
    let spec = AgentSpec {
        name: config.name.clone(),
        slot: sanitize_slot_name(&config.name),
        api_url: config.restapi().api_url(),
        pg_address,
        tags: MemberTags {
            nofailover: tags.nofailover(),
            clonefrom: tags.clonefrom(),
            nosync: tags.nosync(),
            failover_priority: tags.failover_priority(),
        },
        labels: tags.labels(),
        auth: pg.authentication.clone(),
        initdb: config
            .bootstrap
            .as_ref()
            .map(|b| b.initdb.clone())
            .unwrap_or_default(),
        ha: crate::ha::records::ha_config(&dcs, &HaConfig::default()),
        dcs: dcs.clone(),
        start: StartSpec {
            timeout: Duration::from_secs(60),
            cluster_parameters: dcs.postgresql.parameters.clone(),
        },
        stop_timeout: Duration::from_secs(30),
        rejoin: crate::ha::RejoinPolicy {
            use_pg_rewind: pg.use_pg_rewind,
            remove_data_directory_on_rewind_failure: pg.remove_data_directory_on_rewind_failure,
        },
        watchdog: config
            .watchdog
            .as_ref()
            .filter(|w| w.mode != crate::config::WatchdogMode::Off)
            .map(|w| crate::fence::WatchdogSettings {
                mode: w.mode,
                device: w.device.clone(),
                reset_time: w.reset_time,
            }),
        callbacks: agent::callbacks::CallbackSpec::from_config(&config.scope, &pg),
    };
    Ok((spec, pg))
}

/// Checks the PostgreSQL setup (user, data dir owner, binaries) and starts
/// the agent, which publishes this node's status on `status`, and lets
/// peers ask this node's position (the `handler` answers candidates'
/// questions from this node's PostgreSQL). A setup mistake is a start-up
/// error.
pub fn start(
    config: &Config,
    store: Store,
    handler: &RaftPeerHandler,
    shutdown: watch::Receiver<bool>,
    status: watch::Sender<NodeStatus>,
) -> anyhow::Result<JoinHandle<Option<String>>> {
    let (spec, pg_config) = spec(config)?;
    let pg = Arc::new(RealPostgres::new(pg_config).map_err(|e| anyhow::anyhow!("{e}"))?);
    handler.set_position_source(Arc::new(agent::PositionAnswerer {
        name: spec.name.clone(),
        pg: pg.clone(),
        status: status.subscribe(),
    }));
    Ok(tokio::spawn(agent::run(store, pg, spec, shutdown, status)))
}
