//! Handler tests through `Router::oneshot`, with hand-built snapshots, a
//! fixed clock and an in-memory store.

mod checks;
mod documents;
mod tls;
mod unsafe_calls;

use crate::admin::operations::OpsKv;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;

use super::{router, ClusterSource, Credentials, RestInfo, RestState};
use crate::admin::RaftFacts;
use crate::clock::{BootInstant, Clock};
use crate::config::Scalar;
use crate::consensus::peer::HelloInfo;
use crate::consensus::types::{Expect, KeyValue, Member};
use crate::ha::{
    ClusterView, DataDir, HaConfig, LeaderKey, Lsn, MemberInfo, MemberRole, MemberState,
    MemberTags, PgState, StatusKey,
};
use crate::status::NodeStatus;
use crate::store::VoterProbe;

/// "Now" in every test: 100 s after boot.
pub const NOW: BootInstant = BootInstant::from_nanos(100_000_000_000);

pub struct FixedClock(pub BootInstant);

impl Clock for FixedClock {
    fn now(&self) -> BootInstant {
        self.0
    }
}

/// Whether a compare-and-set's `expect` holds for `current`.
fn holds(expect: Expect, current: &Option<KeyValue>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::ModRevision(r) => current.as_ref().is_some_and(|c| c.mod_revision == r),
    }
}

/// An in-memory store: keys with revisions, compare-and-set on put.
#[derive(Default)]
pub struct FakeSource {
    pub kv: Mutex<BTreeMap<String, KeyValue>>,
    pub revision: Mutex<u64>,
    pub witness_reachable: bool,
}

impl FakeSource {
    pub fn with(keys: &[(&str, &str)]) -> FakeSource {
        let f = FakeSource {
            witness_reachable: true,
            ..Default::default()
        };
        for (k, v) in keys {
            f.set(k, v);
        }
        f
    }

    pub fn set(&self, key: &str, value: &str) -> u64 {
        let mut rev = self.revision.lock().unwrap();
        *rev += 1;
        self.kv.lock().unwrap().insert(
            key.to_string(),
            KeyValue {
                key: key.to_string(),
                value: value.to_string(),
                create_revision: *rev,
                mod_revision: *rev,
                version: 1,
                lease: None,
            },
        );
        *rev
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.kv.lock().unwrap().get(key).map(|kv| kv.value.clone())
    }
}

impl OpsKv for FakeSource {
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, String>> {
        let kvs = self
            .kv
            .lock()
            .unwrap()
            .values()
            .filter(|kv| kv.key.starts_with(prefix))
            .cloned()
            .collect();
        Box::pin(async move { Ok(kvs) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>> {
        let current = self.kv.lock().unwrap().get(key).cloned();
        let out = if holds(expect, &current) {
            Ok(self.set(key, &value))
        } else {
            Err(current)
        };
        Box::pin(async move { Ok(out) })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>> {
        let mut kv = self.kv.lock().unwrap();
        let current = kv.get(key).cloned();
        let out = if holds(expect, &current) && current.is_some() {
            kv.remove(key);
            let mut rev = self.revision.lock().unwrap();
            *rev += 1;
            Ok(*rev)
        } else {
            Err(current)
        };
        Box::pin(async move { Ok(out) })
    }
}

impl ClusterSource for FakeSource {
    fn kv(&self) -> &dyn OpsKv {
        self
    }

    fn raft(&self) -> BoxFuture<'_, RaftFacts> {
        let hello = |id: u64, name: &str, state: &str| HelloInfo {
            node_id: id,
            name: name.into(),
            cluster_id: "c1".into(),
            initialized: true,
            state: state.into(),
            term: 4,
            last_log_index: 77,
            current_leader: Some(1),
        };
        let probe = |id: u64, name: &str, witness: bool, answer| VoterProbe {
            id,
            member: Member {
                name: name.into(),
                addr: format!("127.0.0.1:700{id}"),
                witness,
            },
            answer,
        };
        let witness = if self.witness_reachable {
            Ok(hello(3, "witness1", "follower"))
        } else {
            Err("connection refused".to_string())
        };
        let facts = RaftFacts {
            node_id: 1,
            node_name: "node1".into(),
            leader_id: Some(1),
            leader_name: "node1".into(),
            term: 4,
            last_applied: 76,
            last_log_index: 77,
            state: "leader",
            voters: vec![
                probe(1, "node1", false, Ok(hello(1, "node1", "leader"))),
                probe(2, "node2", false, Ok(hello(2, "node2", "follower"))),
                probe(3, "witness1", true, witness),
            ],
            store_revision: 9,
        };
        Box::pin(async move { facts })
    }
}

/// Tags of the node under test.
pub fn tags(pairs: &[(&str, Scalar)]) -> BTreeMap<String, Scalar> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

pub struct Harness {
    pub app: Router,
    pub source: Arc<FakeSource>,
    /// Kept so the router's receiver stays connected.
    pub _tx: watch::Sender<NodeStatus>,
}

pub const USER: &str = "admin";
pub const PASSWORD: &str = "0123456789abcdef-pw";
pub const TOKEN: &str = "0123456789abcdef-token";

/// The API's state for `status`, with the store behind it and the sender
/// that keeps the state's receiver connected.
pub fn state_with(
    status: NodeStatus,
    node_tags: BTreeMap<String, Scalar>,
    source: FakeSource,
    credentials: Credentials,
    now: BootInstant,
) -> (RestState, Arc<FakeSource>, watch::Sender<NodeStatus>) {
    let (tx, rx) = watch::channel(status);
    let source = Arc::new(source);
    let state = RestState {
        info: RestInfo {
            name: "node1".into(),
            scope: "demo".into(),
            tags: node_tags,
            election_timeout_max: Duration::from_secs(1),
        },
        status: rx,
        clock: Arc::new(FixedClock(now)),
        credentials,
        cluster: source.clone(),
    };
    (state, source, tx)
}

pub fn harness_with(
    status: NodeStatus,
    node_tags: BTreeMap<String, Scalar>,
    source: FakeSource,
    credentials: Credentials,
    now: BootInstant,
) -> Harness {
    let (state, source, tx) = state_with(status, node_tags, source, credentials, now);
    Harness {
        app: router(Arc::new(state)),
        source,
        _tx: tx,
    }
}

pub fn harness(status: NodeStatus) -> Harness {
    harness_with(
        status,
        BTreeMap::new(),
        FakeSource::with(&[]),
        Credentials::new(Some((USER, PASSWORD)), Some(TOKEN)),
        NOW,
    )
}

/// Sends one request; returns the status code and the body as text.
pub async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = req.body(Body::from(body.to_string())).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let code = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

pub async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    call(app, "GET", uri, None, "").await
}

/// A view with node1 holding the leader key at `primary_lsn` and node2 a
/// standby.
pub fn view(primary_lsn: u64) -> ClusterView {
    let member = |role, state, wal: Option<u64>, recv: Option<u64>| MemberInfo {
        role,
        state,
        api_url: String::new(),
        pg_address: String::new(),
        wal_lsn: wal.map(Lsn),
        received_lsn: recv.map(Lsn),
        replayed_lsn: recv.map(Lsn),
        timeline: Some(2),
        tags: MemberTags::default(),
        paused: false,
        pending_restart: false,
        must_match: Default::default(),
    };
    ClusterView {
        revision: 10,
        initialize: None,
        leader: Some(LeaderKey {
            holder: "node1".into(),
            lease: 7,
            mod_revision: 5,
        }),
        members: [
            (
                "node1".to_string(),
                member(
                    MemberRole::Primary,
                    MemberState::Running,
                    Some(primary_lsn),
                    None,
                ),
            ),
            (
                "node2".to_string(),
                member(
                    MemberRole::Replica,
                    MemberState::Streaming,
                    None,
                    Some(primary_lsn),
                ),
            ),
        ]
        .into_iter()
        .collect(),
        status: Some(StatusKey {
            lsn: Lsn(primary_lsn),
            timeline: 2,
        }),
        config: HaConfig::default(),
        failover: None,
        sync: None,
        operation: None,
    }
}

/// This node as the writable primary, lease valid for 3 more seconds.
pub fn primary() -> NodeStatus {
    NodeStatus {
        heartbeat: Some(NOW - Duration::from_millis(200)),
        ha_state: "primary",
        holds_leader_key: true,
        lease_valid_until: Some(NOW + Duration::from_secs(3)),
        stepping_down: false,
        pg: Some(PgState {
            data_dir: DataDir::Initialized { sysid: 7301 },
            running: true,
            in_recovery: Some(false),
            timeline: Some(2),
            wal_lsn: Some(Lsn(0x300_0000)),
            server_version: Some(150004),
            ..Default::default()
        }),
        view: Some(view(0x300_0000)),
        ..Default::default()
    }
}

/// This node as a streaming standby that replayed up to `replayed`, with
/// the cluster's primary at `primary_lsn`.
pub fn replica(primary_lsn: u64, replayed: u64) -> NodeStatus {
    let mut v = view(primary_lsn);
    v.leader = Some(LeaderKey {
        holder: "node2".into(),
        lease: 8,
        mod_revision: 6,
    });
    NodeStatus {
        heartbeat: Some(NOW - Duration::from_millis(200)),
        ha_state: "replica",
        holds_leader_key: false,
        lease_valid_until: Some(NOW + Duration::from_secs(3)),
        stepping_down: false,
        pg: Some(PgState {
            data_dir: DataDir::Initialized { sysid: 7301 },
            running: true,
            in_recovery: Some(true),
            timeline: Some(2),
            received_lsn: Some(Lsn(replayed)),
            replayed_lsn: Some(Lsn(replayed)),
            streaming: true,
            server_version: Some(150004),
            ..Default::default()
        }),
        view: Some(v),
        ..Default::default()
    }
}
