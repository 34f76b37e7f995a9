//! Several voters in one process over the simulated network.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Duration;

use pgkeel::clock::BootClock;
use pgkeel::consensus::simnet::SimNet;
use pgkeel::consensus::types::{Member, NodeId};
use pgkeel::node::{Voter, VoterSpec};
use pgkeel::store::Store;
use tokio::time::Instant;

pub const SECRET: &str = "test-secret-0123456789";

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "pgkeel=info,openraft=warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

pub fn addr(id: NodeId) -> String {
    format!("sim-{id}:7000")
}

pub fn peers(n: u64) -> BTreeMap<NodeId, Member> {
    (1..=n)
        .map(|id| {
            (
                id,
                Member {
                    name: format!("n{id}"),
                    addr: addr(id),
                    witness: id == 3 && n == 3,
                },
            )
        })
        .collect()
}

/// A cluster of in-process voters. Dropping it stops nothing; call `stop`.
pub struct SimCluster {
    pub net: SimNet,
    pub dir: tempfile::TempDir,
    pub peers: BTreeMap<NodeId, Member>,
    pub voters: BTreeMap<NodeId, Voter>,
    pub secret: String,
}

pub fn spec(
    net: &SimNet,
    peers: &BTreeMap<NodeId, Member>,
    id: NodeId,
    dir: PathBuf,
    secret: &str,
) -> VoterSpec {
    VoterSpec {
        node_id: id,
        name: peers[&id].name.clone(),
        scope: "test".into(),
        secret: secret.into(),
        peers: peers.clone(),
        join: false,
        data_dir: dir,
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        request_timeout: Duration::from_millis(1500),
        snapshot_every: 10_000,
        cache_capacity: 1 << 20,
        transport: Arc::new(net.clone()),
        clock: Arc::new(BootClock),
    }
}

impl SimCluster {
    pub async fn start(n: u64) -> SimCluster {
        init_tracing();
        let mut c = SimCluster {
            net: SimNet::new(),
            dir: tempfile::tempdir().expect("tempdir"),
            peers: peers(n),
            voters: BTreeMap::new(),
            secret: SECRET.into(),
        };
        for id in 1..=n {
            c.start_node(id).await;
        }
        c.wait_leader(Duration::from_secs(10)).await;
        c
    }

    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    pub async fn start_node(&mut self, id: NodeId) {
        let mut last_err = None;
        // sled may hold the directory lock a moment after a stop.
        for _ in 0..50 {
            match Voter::start(spec(
                &self.net,
                &self.peers,
                id,
                self.data_dir(id),
                &self.secret,
            ))
            .await
            {
                Ok(v) => {
                    self.net
                        .register(&addr(id), id, v.identity.clone(), v.handler.clone());
                    self.voters.insert(id, v);
                    return;
                }
                Err(e) => {
                    last_err = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("node {id} did not start: {last_err:?}");
    }

    /// Stops a node as a crash would: it disappears from the network.
    pub async fn stop_node(&mut self, id: NodeId) {
        self.net.unregister(&addr(id));
        if let Some(v) = self.voters.remove(&id) {
            v.stop().await;
        }
    }

    pub fn store(&self, id: NodeId) -> &Store {
        &self.voters[&id].store
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }

    /// Waits until some running node is leader and the others agree.
    pub async fn wait_leader(&self, within: Duration) -> NodeId {
        self.wait_leader_among(&self.voters.keys().copied().collect::<Vec<_>>(), within)
            .await
    }

    pub async fn wait_leader_among(&self, ids: &[NodeId], within: Duration) -> NodeId {
        let deadline = Instant::now() + within;
        loop {
            let views: Vec<_> = ids
                .iter()
                .map(|id| {
                    let m = self.voters[id].raft.metrics().borrow().clone();
                    (m.current_leader, m.current_term)
                })
                .collect();
            if let Some((Some(l), term)) = views.first().copied() {
                if ids.contains(&l)
                    && views.iter().all(|v| *v == (Some(l), term))
                    && self.voters[&l].store.leader_term().is_some()
                {
                    return l;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {ids:?} within {within:?}: {views:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        for id in self.voters.keys().copied().collect::<Vec<_>>() {
            self.stop_node(id).await;
        }
    }
}
