//! Wiring of one Raft voter: storage, openraft, the store, the peer handler
//! and (through [`serve`]) the gRPC port. Shared by `pgkeel` and
//! `pgkeel-witness`; the transport and the clock are parameters so the
//! deterministic tests can run several voters in one process.

#[cfg(feature = "data-node")]
pub mod agent;
pub mod bootstrap;
pub mod election_gate;
pub mod grpc_router;
pub mod incoming;
pub mod membership_watch;
pub mod run;
pub mod serve;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::consensus::handler::RaftPeerHandler;
use crate::consensus::log_store::LogStore;
use crate::consensus::network::Network;
use crate::consensus::peer::{PeerIdentity, Transport};
use crate::consensus::state_machine::StateMachine;
use crate::consensus::types::{Member, NodeId, Raft};
use crate::store::Store;

/// Everything needed to start one voter.
pub struct VoterSpec {
    pub node_id: NodeId,
    pub name: String,
    pub scope: String,
    pub secret: String,
    /// The initial voters (id → member), the same list on every node.
    pub peers: BTreeMap<NodeId, Member>,
    /// `raft.join`: a pristine node waits to be added by the Raft leader
    /// (`pgkeelctl member add`) and never forms a cluster itself.
    pub join: bool,
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub request_timeout: Duration,
    /// Log entries between snapshots (older entries are then purged).
    pub snapshot_every: u64,
    /// sled's page cache, bytes.
    pub cache_capacity: u64,
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
}

/// A running voter.
pub struct Voter {
    pub raft: Raft,
    pub store: Store,
    pub identity: Arc<PeerIdentity>,
    pub handler: Arc<RaftPeerHandler>,
    db: sled::Db,
    tasks: Vec<JoinHandle<()>>,
    shutdown: watch::Sender<bool>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Voter {
    /// Opens the voter's storage, starts Raft and the store's background
    /// work, and begins bootstrap (which forms a new cluster only when every
    /// initial voter is pristine; see [`bootstrap`]).
    pub async fn start(spec: VoterSpec) -> anyhow::Result<Voter> {
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("cannot create raft.data_dir {}", spec.data_dir.display()))?;
        let db = sled::Config::new()
            .path(&spec.data_dir)
            .cache_capacity(spec.cache_capacity)
            // pgkeel flushes itself before telling openraft anything is
            // durable; sled's own periodic flusher thread is not needed.
            .flush_every_ms(None)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the Raft store in {} (is another pgkeel using it?)",
                    spec.data_dir.display()
                )
            })?;
        let log_store = LogStore::open(&db).context("cannot open the Raft log")?;
        let pristine = log_store.is_pristine();
        let sm = StateMachine::open(&db).context("cannot open the state machine")?;
        let sm_handle = sm.handle();

        let identity = PeerIdentity::new(&spec.scope, spec.node_id, &spec.secret);
        if let Some(id) = sm_handle.read(|s| s.cluster_id.clone()) {
            identity.set_cluster_id(&id);
        }

        let raft_config = openraft::Config {
            cluster_name: spec.scope.clone(),
            heartbeat_interval: millis(spec.heartbeat_interval),
            election_timeout_min: millis(spec.election_timeout_min),
            election_timeout_max: millis(spec.election_timeout_max),
            install_snapshot_timeout: millis(spec.request_timeout.max(Duration::from_secs(2))),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(spec.snapshot_every),
            max_in_snapshot_log_to_keep: spec.snapshot_every.min(1000),
            ..Default::default()
        }
        .validate()
        .context("invalid Raft timing")?;

        let network = Network::new(spec.transport.clone(), identity.clone());
        let raft = Raft::new(spec.node_id, Arc::new(raft_config), network, log_store, sm)
            .await
            .context("cannot start Raft")?;

        let store = Store::new(
            raft.clone(),
            &spec.name,
            sm_handle,
            spec.transport.clone(),
            identity.clone(),
            spec.clock.clone(),
            spec.request_timeout,
        );
        let handler = RaftPeerHandler::new(
            raft.clone(),
            &spec.name,
            identity.clone(),
            Arc::new(store.clone()),
        );

        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(
            store.clone().run_background(shutdown_rx.clone()),
        )];
        tasks.push(tokio::spawn(election_gate::run(
            raft.clone(),
            spec.node_id,
            spec.peers.clone(),
            spec.transport.clone(),
            identity.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(membership_watch::run(
            raft.clone(),
            spec.node_id,
            spec.join,
            pristine,
            shutdown_rx.clone(),
        )));
        if pristine && !spec.join {
            tasks.push(tokio::spawn(bootstrap::run(
                raft.clone(),
                spec.node_id,
                spec.peers.clone(),
                spec.transport.clone(),
                identity.clone(),
                shutdown_rx,
            )));
        } else if !pristine {
            tracing::info!(node = spec.node_id, "restarting with existing Raft state");
        }
        Ok(Voter {
            raft,
            store,
            identity,
            handler,
            db,
            tasks,
            shutdown,
        })
    }

    /// Stops Raft and the background tasks, and flushes storage.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            t.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft did not shut down cleanly: {e}");
        }
        if let Err(e) = self.db.flush_async().await {
            tracing::warn!("flushing the Raft store failed: {e}");
        }
    }
}
