//! Peer calls over gRPC (tonic): the client [`GrpcTransport`] with one
//! cached channel per peer, and the server-side [`PeerService`] that checks
//! credentials before anything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::peer::{
    BoxFuture, Credentials, PeerHandler, PeerIdentity, PeerResponse, PeerRpc, Transport,
    TransportError,
};
use super::throttle::Throttle;
use super::types::{NodeId, FORMAT_VERSION};
use crate::pb::peer::peer_client::PeerClient;
use crate::pb::peer::peer_server::{Peer, PeerServer};
use crate::pb::peer::{PeerReply, PeerRequest};

/// How long a connection attempt to a peer may take. Short: after a stall
/// a new attempt (a fresh SYN) gets through at once, while an old one
/// waits for TCP's SYN retransmission, a second or more.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Cached channels by address, each with an id that tells a replaced one
/// from the current one.
type Channels = HashMap<String, (u64, Channel)>;

/// Sends peer calls over gRPC, one lazily connected channel per address.
#[derive(Default)]
pub struct GrpcTransport {
    channels: Arc<Mutex<Channels>>,
    next_id: std::sync::atomic::AtomicU64,
    /// `raft.tls`'s client side: every peer is dialed over TLS with this
    /// node's certificate; `None` for plain-text gRPC.
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// When a refusal by each peer was last logged.
    refusals_logged: Arc<Throttle<String>>,
}

impl GrpcTransport {
    /// Plain-text gRPC to every peer.
    pub fn new() -> Arc<Self> {
        Arc::new(GrpcTransport::default())
    }

    /// TLS to every peer (see [`crate::tls::GrpcTls::client`]).
    #[cfg(feature = "tls")]
    pub fn with_tls(tls: tonic::transport::ClientTlsConfig) -> Arc<Self> {
        Arc::new(GrpcTransport {
            tls: Some(tls),
            ..GrpcTransport::default()
        })
    }

    /// The endpoint of a peer's gRPC port as this node dials it: over TLS
    /// with this node's certificate when `raft.tls` is set. For any other
    /// node-to-node call on that port (e.g. forwarding an admin call).
    #[cfg(feature = "tls")]
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        match &self.tls {
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))
                .and_then(|e| e.tls_config(tls.clone()))
                .map_err(|e| e.to_string()),
            None => Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string()),
        }
    }

    /// The endpoint of a peer's gRPC port as this node dials it.
    #[cfg(not(feature = "tls"))]
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())
    }

    fn channel(&self, addr: &str) -> Result<(u64, Channel), TransportError> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let endpoint = self
            .endpoint(addr)
            .map_err(|e| TransportError::Unreachable(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let ch = (
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            endpoint.connect_lazy(),
        );
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// Forgets channel `id` to `addr` after a call on it timed out, so the
/// next call opens a new connection. After a network stall the old
/// connection may still be in TCP's retransmission back-off (seconds on an
/// idle loopback); a fresh one works the moment the stall ends.
fn forget(channels: &Mutex<Channels>, addr: &str, id: u64) {
    let mut channels = channels.lock().unwrap_or_else(|e| e.into_inner());
    if channels.get(addr).is_some_and(|(cur, _)| *cur == id) {
        channels.remove(addr);
    }
}

/// Maps a gRPC status from a peer to what the caller can conclude. A
/// refusal — wrong credentials, or a connection that failed in TLS (a
/// certificate, a plain-text peer) — is logged here with its reason, once
/// per period and peer: it needs the operator, not a retry.
fn status_to_transport(addr: &str, s: &Status, logged: &Throttle<String>) -> TransportError {
    let refused = match s.code() {
        Code::Unauthenticated | Code::PermissionDenied => Some(format!("{addr}: {}", s.message())),
        _ => tls_failure(addr, s),
    };
    if let Some(reason) = refused {
        if logged.ready(addr.to_string()) {
            tracing::warn!(peer = addr, "a peer refused this node's call: {reason}");
        }
        return TransportError::Refused(reason);
    }
    match s.code() {
        // tonic reports connection failures (refused, reset before the
        // request went out, connect timeout) as Unavailable.
        Code::Unavailable => TransportError::Unreachable(format!("{addr}: {}", s.message())),
        _ => TransportError::Failed(format!("{addr}: {}: {}", s.code(), s.message())),
    }
}

/// The sentence for a call that failed in TLS; `None` for anything else.
fn tls_failure(addr: &str, s: &Status) -> Option<String> {
    #[cfg(feature = "tls")]
    return crate::tls::describe(addr, s);
    #[cfg(not(feature = "tls"))]
    {
        let _ = (addr, s);
        None
    }
}

impl Transport for GrpcTransport {
    fn call(
        &self,
        _target: NodeId,
        addr: &str,
        creds: Credentials,
        rpc: PeerRpc,
        timeout: Duration,
    ) -> BoxFuture<Result<PeerResponse, TransportError>> {
        let addr = addr.to_string();
        let channel = self.channel(&addr);
        let channels = self.channels.clone();
        let logged = self.refusals_logged.clone();
        Box::pin(async move {
            let (id, channel) = channel?;
            let payload = serde_json::to_vec(&rpc)
                .map_err(|e| TransportError::Unreachable(format!("cannot encode call: {e}")))?;
            let mut req = Request::new(PeerRequest {
                scope: creds.scope,
                cluster_id: creds.cluster_id,
                from: creds.from,
                secret: creds.secret,
                format: u32::from(FORMAT_VERSION),
                payload,
            });
            req.set_timeout(timeout);
            let mut client = PeerClient::new(channel);
            let reply = match tokio::time::timeout(timeout, client.call(req)).await {
                Err(_) => {
                    forget(&channels, &addr, id);
                    return Err(TransportError::Failed(format!(
                        "{addr}: timed out after {timeout:?}"
                    )));
                }
                Ok(Err(status)) => return Err(status_to_transport(&addr, &status, &logged)),
                Ok(Ok(r)) => r.into_inner(),
            };
            decode_reply(&addr, &reply)
        })
    }
}

fn decode_reply(addr: &str, reply: &PeerReply) -> Result<PeerResponse, TransportError> {
    if reply.format > u32::from(FORMAT_VERSION) {
        return Err(TransportError::Failed(format!(
            "{addr} answered in format {}, newer than this release reads ({FORMAT_VERSION})",
            reply.format
        )));
    }
    serde_json::from_slice(&reply.payload)
        .map_err(|e| TransportError::Failed(format!("{addr} sent an unreadable answer: {e}")))
}

/// The gRPC `Peer` service: credentials first, then the handler.
pub struct PeerService {
    identity: Arc<PeerIdentity>,
    handler: Arc<dyn PeerHandler>,
}

impl PeerService {
    pub fn server(identity: Arc<PeerIdentity>, handler: Arc<dyn PeerHandler>) -> PeerServer<Self> {
        PeerServer::new(PeerService { identity, handler })
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn call(&self, request: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let req = request.into_inner();
        let creds = Credentials {
            scope: req.scope,
            cluster_id: req.cluster_id,
            from: req.from,
            secret: req.secret,
        };
        self.identity
            .check(&creds)
            .map_err(Status::unauthenticated)?;
        if req.format > u32::from(FORMAT_VERSION) {
            return Err(Status::failed_precondition(format!(
                "peer call format {} is newer than this node reads ({FORMAT_VERSION}); upgrade this node",
                req.format
            )));
        }
        let rpc: PeerRpc = serde_json::from_slice(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("unreadable peer call: {e}")))?;
        let resp = self.handler.handle(creds.from, rpc).await;
        let payload = serde_json::to_vec(&resp)
            .map_err(|e| Status::internal(format!("cannot encode answer: {e}")))?;
        Ok(Response::new(PeerReply {
            format: u32::from(FORMAT_VERSION),
            payload,
        }))
    }
}
