//! Running a voter from its configuration file: what both binaries call.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use super::incoming::Acceptor;
use super::{serve::serve, Voter, VoterSpec};
use crate::admin::{AdminService, AdminToken};
use crate::clock::BootClock;
use crate::config::Config;
use crate::consensus::grpc::GrpcTransport;
use crate::consensus::types::{Member, NodeId};

/// The initial voters as the membership records them.
pub fn members(config: &Config) -> BTreeMap<NodeId, Member> {
    config
        .raft
        .peers
        .iter()
        .map(|p| {
            (
                p.id,
                Member {
                    name: p.name.clone(),
                    addr: p.address.clone(),
                    witness: p.witness,
                },
            )
        })
        .collect()
}

/// The voter spec of a validated configuration, talking plain-text gRPC.
pub fn spec(config: &Config) -> anyhow::Result<VoterSpec> {
    spec_over(config, GrpcTransport::new())
}

/// The voter spec of a validated configuration, talking over `transport`.
fn spec_over(config: &Config, transport: Arc<GrpcTransport>) -> anyhow::Result<VoterSpec> {
    let raft = &config.raft;
    let secret = raft
        .secret()
        .context("raft.secret is missing; set raft.secret or raft.secret_file")?;
    Ok(VoterSpec {
        node_id: raft.node_id,
        name: config.name.clone(),
        scope: config.scope.clone(),
        secret: secret.to_string(),
        peers: members(config),
        join: raft.join,
        data_dir: raft.data_dir.clone(),
        heartbeat_interval: raft.heartbeat_interval,
        election_timeout_min: raft.election_timeout_min,
        election_timeout_max: raft.election_timeout_max,
        request_timeout: raft.request_timeout,
        snapshot_every: raft.snapshot_every,
        cache_capacity: raft.cache_capacity,
        transport,
        clock: Arc::new(BootClock),
    })
}

/// The transport to peers and the server side of the gRPC port: in TLS
/// when `raft.tls` is set.
#[cfg(feature = "tls")]
fn grpc_tls(config: &Config) -> anyhow::Result<(Arc<GrpcTransport>, Option<Acceptor>)> {
    let Some(tls) = &config.raft.tls else {
        return Ok((GrpcTransport::new(), None));
    };
    let advertise = config.raft.advertise_address();
    let tls = crate::tls::GrpcTls::load(tls, crate::config::host_of(&advertise))
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    tracing::info!(
        verify_client = tls.verify_client,
        "gRPC port in TLS (raft.tls)"
    );
    Ok((
        GrpcTransport::with_tls(tls.client()),
        Some(tls.acceptor().clone()),
    ))
}

#[cfg(not(feature = "tls"))]
fn grpc_tls(config: &Config) -> anyhow::Result<(Arc<GrpcTransport>, Option<Acceptor>)> {
    if config.raft.tls.is_some() {
        anyhow::bail!("raft.tls is set but this binary was built without TLS — build it with the tls feature, or remove raft.tls on every node");
    }
    Ok((GrpcTransport::new(), None))
}

/// Runs one voter (data node or witness) until `shutdown` completes. A data
/// node with a `postgresql` section also runs the HA agent; on shutdown the
/// agent hands over first, then the voter stops.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listen = config.raft.listen;
    // Bind first: a port in use is a start-up error, before anything opens.
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on raft.listen {listen}; is another process using it?")
    })?;
    #[cfg(feature = "data-node")]
    let rest_listener = match config.postgresql.is_some() {
        true => {
            let restapi = config.restapi();
            let tls = match restapi.tls_files() {
                Some((cert, key)) => Some(crate::rest::RestTls::load(cert, key)?),
                None => None,
            };
            Some((crate::rest::bind(restapi.listen).await?, tls))
        }
        false => None,
    };
    let (transport, tls) = grpc_tls(&config)?;
    let spec = spec_over(&config, transport.clone())?;
    let token = AdminToken::from_config(&config.raft)
        .context("raft.secret is missing; set raft.secret or raft.secret_file")?;
    let voter = Voter::start(spec).await?;
    tracing::info!(
        node = config.raft.node_id,
        name = %config.name,
        scope = %config.scope,
        %listen,
        "voter running"
    );
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        voter.identity.clone(),
        voter.handler.clone(),
        AdminService::server(voter.store.clone(), token, transport),
        listener,
        tls,
        async {
            let _ = grpc_stopped.await;
        },
    ));
    let (agent_stop, agent_stop_rx) = tokio::sync::watch::channel(false);
    #[cfg(feature = "data-node")]
    let (mut agent, rest) = match rest_listener {
        Some((listener, tls)) => {
            let (status_tx, status_rx) = tokio::sync::watch::channel(Default::default());
            let agent = super::agent::start(
                &config,
                voter.store.clone(),
                &voter.handler,
                agent_stop_rx,
                status_tx,
            )?;
            let state =
                crate::rest::RestState::from_config(&config, voter.store.clone(), status_rx);
            let https = tls.is_some();
            tracing::info!(listen = %config.restapi().listen, https, "REST API running");
            let server = match tls {
                Some(tls) => crate::rest::RestServer::start_tls(listener, state, tls),
                None => crate::rest::RestServer::start(listener, state),
            };
            (Some(agent), Some(server))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "data-node"))]
    let mut agent: Option<tokio::task::JoinHandle<Option<String>>> = {
        drop(agent_stop_rx);
        None
    };
    let mut failure = None;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => {}
        r = async {
            match agent.as_mut() {
                Some(a) => a.await,
                None => std::future::pending().await,
            }
        } => {
            agent = None;
            failure = match r {
                Ok(Some(e)) => Some(e),
                Ok(None) => None,
                Err(e) => Some(format!("the HA agent failed: {e}")),
            };
        }
    }
    if let Some(a) = agent {
        let _ = agent_stop.send(true);
        match a.await {
            Ok(Some(e)) => failure = Some(e),
            Ok(None) => {}
            Err(e) => failure = Some(format!("the HA agent failed: {e}")),
        }
    }
    tracing::info!("shutting down");
    #[cfg(feature = "data-node")]
    if let Some(rest) = rest {
        if let Err(e) = rest.stop().await {
            tracing::warn!("{e}");
        }
    }
    let _ = stop_grpc.send(());
    let served = server.await;
    voter.stop().await;
    if let Some(e) = failure {
        anyhow::bail!(e);
    }
    match served {
        Ok(r) => r,
        Err(e) => Err(anyhow::anyhow!("the gRPC server task failed: {e}")),
    }
}
