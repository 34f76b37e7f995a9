//! The gRPC port of a voter: peer traffic and the admin service, in TLS
//! when `raft.tls` is set (see [`super::incoming`]).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::Server;

use super::grpc_router::Router;
use super::incoming::{incoming, Acceptor};
use crate::admin::AdminService;
use crate::consensus::grpc::PeerService;
use crate::consensus::handler::RaftPeerHandler;
use crate::consensus::peer::PeerIdentity;
use crate::pb::admin::admin_server::AdminServer;

/// Serves the voter's gRPC port on `listener` until `shutdown` completes.
pub async fn serve(
    identity: Arc<PeerIdentity>,
    handler: Arc<RaftPeerHandler>,
    admin: AdminServer<AdminService>,
    listener: TcpListener,
    tls: Option<Acceptor>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let peer = PeerService::server(identity, handler);
    Server::builder()
        .serve_with_incoming_shutdown(Router::new(peer, admin), incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}
