//! Layer 5 (data nodes only): the REST API on `restapi.listen`.
//!
//! Patroni's paths and status codes, so HAProxy configs, Kubernetes probes
//! and monitoring written for Patroni work unchanged:
//!
//! ```text
//!  health checks (GET/HEAD/OPTIONS)   health.rs   ◀── NodeStatus (watch) + BootClock::now()
//!  /patroni                           node_json.rs ◀── NodeStatus
//!  /cluster /history /config          cluster.rs  ◀── ClusterSource (store + Raft probes)
//!  /metrics                           metrics.rs  ◀── both
//!  unsafe calls (POST/PATCH/PUT/DELETE) unsafe_calls.rs, behind auth.rs
//! ```
//!
//! Health checks never wait on the HA loop or the store: they read the
//! latest [`NodeStatus`] and judge the lease at the instant of the request,
//! so a check costs a lock and a comparison.

mod auth;
mod cluster;
mod health;
mod metrics;
mod node_json;
mod operations;
mod query;
mod source;
mod switchover;
mod tls;
mod unsafe_calls;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, on, MethodFilter};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::{BootClock, Clock};
use crate::config::{Config, Scalar};
use crate::status::NodeStatus;
use crate::store::Store;

pub use auth::Credentials;
pub use health::Check;
pub use query::parse_size;
pub use source::{ClusterSource, StoreSource};
pub use tls::RestTls;

/// What the REST API knows about this node from its config file.
#[derive(Debug, Clone)]
pub struct RestInfo {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub scope: String,
    /// The `tags` section as written (free-form tags included), for
    /// `?tag_KEY=VALUE` filters and the status JSON.
    pub tags: BTreeMap<String, Scalar>,
    /// `raft.election_timeout_max`, which enters the lease timing check of
    /// a new dynamic config.
    pub election_timeout_max: Duration,
}

impl RestInfo {
    /// The `noloadbalance` tag: report this replica unhealthy to load
    /// balancers.
    pub fn noloadbalance(&self) -> bool {
        self.tags
            .get("noloadbalance")
            .and_then(Scalar::as_bool)
            .unwrap_or(false)
    }
}

/// Everything a handler reads. Shared by all requests.
pub struct RestState {
    pub info: RestInfo,
    /// The HA agent's latest snapshot of this node.
    pub status: watch::Receiver<NodeStatus>,
    /// The lease holder's clock (CLOCK_BOOTTIME in production).
    pub clock: Arc<dyn Clock>,
    /// Who may make unsafe calls.
    pub credentials: Credentials,
    /// The store and Raft, for the cluster-wide endpoints.
    pub cluster: Arc<dyn ClusterSource>,
}

/// The whole API.
pub fn router(state: Arc<RestState>) -> Router {
    let checks = MethodFilter::GET
        .or(MethodFilter::HEAD)
        .or(MethodFilter::OPTIONS);
    let check = |which: Check| on(checks, health::handler(which));
    let mut r = Router::new();
    for (path, which) in health::PATHS {
        r = r.route(path, check(*which));
    }
    r.route("/patroni", on(checks, node_json::handler))
        .route("/cluster", get(cluster::cluster))
        .route("/history", get(cluster::history))
        .route(
            "/config",
            get(cluster::config)
                .patch(unsafe_calls::patch_config)
                .put(unsafe_calls::put_config),
        )
        .route("/metrics", get(metrics::handler))
        .route(
            "/switchover",
            axum::routing::post(switchover::switchover).delete(switchover::cancel),
        )
        .route("/failover", axum::routing::post(switchover::failover))
        .route(
            "/restart",
            axum::routing::post(operations::restart).delete(operations::cancel_restart),
        )
        .route("/reload", axum::routing::post(operations::reload))
        .route(
            "/reinitialize",
            axum::routing::post(operations::reinitialize),
        )
        .with_state(state)
}

impl RestState {
    /// The state of a data node's API from its validated config, reading
    /// the agent's snapshots from `status`.
    pub fn from_config(
        config: &Config,
        store: Store,
        status: watch::Receiver<NodeStatus>,
    ) -> RestState {
        RestState {
            info: RestInfo {
                name: config.name.clone(),
                scope: config.scope.clone(),
                tags: config.tags.clone().unwrap_or_default().0,
                election_timeout_max: config.raft.election_timeout_max,
            },
            status,
            clock: Arc::new(BootClock),
            credentials: Credentials::from_config(&config.restapi()),
            cluster: Arc::new(StoreSource(store)),
        }
    }
}

/// A running REST server.
pub struct RestServer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RestServer {
    /// Serves `state` on `listener` (see [`bind`]) in a task.
    pub fn start(listener: TcpListener, state: RestState) -> RestServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, Arc::new(state), async {
            let _ = stopped.await;
        }));
        RestServer { stop, task }
    }

    /// Serves `state` over HTTPS only, with `tls` (see [`RestTls::load`]).
    pub fn start_tls(listener: TcpListener, state: RestState, tls: RestTls) -> RestServer {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tls::serve_tls(listener, Arc::new(state), tls, async {
            let _ = stopped.await;
        }));
        RestServer { stop, task }
    }

    /// Stops accepting requests and waits for those in progress.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| anyhow::anyhow!("the REST API task failed: {e}"))?
    }
}

/// Binds `restapi.listen`. A port in use is a start-up error naming the key.
pub async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on restapi.listen {listen}: {e}; is another process using it?"
        )
    })
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<RestState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| anyhow::anyhow!("the REST API server failed: {e}"))
}
