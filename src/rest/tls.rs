//! HTTPS for the REST API when `restapi.certfile` and `restapi.keyfile` are
//! set: rustls with the `ring` provider, one task per connection.
//!
//! ```text
//!  accept ──▶ TLS handshake (≤ HANDSHAKE_TIMEOUT) ──▶ HTTP/1.1 ──▶ router
//!     ▲ stop: no new accepts; connections in progress get STOP_GRACE
//! ```
//!
//! A plain-HTTP request to an HTTPS listener fails its handshake and is
//! dropped: the listener never answers in clear text.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::{router, RestState};
use crate::node::incoming::client_error;
use crate::tls::pem;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for connections in progress before dropping them.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The pause after an accept error that is not the client's (e.g. out of
/// file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The server side of the REST API's TLS, built once at start-up.
#[derive(Clone)]
pub struct RestTls(TlsAcceptor);

impl RestTls {
    /// Reads the PEM certificate chain and private key. An unreadable file,
    /// a file without the expected PEM section or a key that does not
    /// belong to the certificate is an error naming the file and the fix.
    pub fn load(certfile: &Path, keyfile: &Path) -> anyhow::Result<RestTls> {
        let certs = pem::read_certs("restapi.certfile", certfile)?;
        let key = pem::read_key("restapi.keyfile", keyfile)?;
        let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("the ring crypto provider supports no TLS version")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                anyhow::anyhow!(
                    "restapi.certfile {} and restapi.keyfile {} do not make a TLS identity: {e} — check that the key belongs to the first certificate",
                    certfile.display(),
                    keyfile.display()
                )
            })?;
        Ok(RestTls(TlsAcceptor::from(Arc::new(config))))
    }
}

/// Serves the API over TLS on `listener` until `shutdown` completes, then
/// waits up to [`STOP_GRACE`] for requests in progress.
pub async fn serve_tls(
    listener: TcpListener,
    state: Arc<RestState>,
    tls: RestTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new());
    let builder = Arc::new(builder.http1_only());
    // Connection tasks; dropping the set at the end aborts any a stop
    // outlasted.
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) if client_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "REST API: accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let (acceptor, app, builder) = (tls.0.clone(), app.clone(), builder.clone());
        let watcher = graceful.watcher();
        tasks.spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "REST API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "REST API: TLS handshake timed out");
                    return;
                }
            };
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "REST API: connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("REST API: requests still in progress after {STOP_GRACE:?}; dropping them");
    }
    Ok(())
}
