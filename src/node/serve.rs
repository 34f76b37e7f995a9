//! The gRPC port of a voter: peer traffic and the admin service.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::grpc_router::Router;
use std::sync::Arc;

use crate::admin::AdminService;
use crate::consensus::grpc::PeerService;
use crate::consensus::handler::RaftPeerHandler;
use crate::consensus::peer::PeerIdentity;
use crate::store::Store;

/// Serves the voter's gRPC port on `listener` until `shutdown` completes.
pub async fn serve(
    identity: Arc<PeerIdentity>,
    handler: Arc<RaftPeerHandler>,
    store: Store,
    listener: TcpListener,
    admin_token: String,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let peer = PeerService::server(identity, handler);
    let admin = AdminService::server(store, &admin_token);
    Server::builder()
        .tcp_nodelay(true)
        .serve_with_incoming_shutdown(
            Router::new(peer, admin),
            TcpIncoming::from(listener),
            shutdown,
        )
        .await?;
    Ok(())
}
