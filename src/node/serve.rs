//! The gRPC port of a voter: peer traffic and the admin service.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use super::grpc_router::Router;
use super::Voter;
use crate::admin::AdminService;
use crate::consensus::grpc::PeerService;

/// Serves the voter's gRPC port on `listener` until `shutdown` completes.
pub async fn serve(
    voter: &Voter,
    listener: TcpListener,
    admin_token: &str,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let peer = PeerService::server(voter.identity.clone(), voter.handler.clone());
    let admin = AdminService::server(voter.store.clone(), admin_token);
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
