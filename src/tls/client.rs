//! The client side for `pgkeelctl`: the tonic TLS config, and a probe that
//! learns the server's verdict on this client before any call is made.
//!
//! In TLS 1.3 a server judges the client's certificate after the client
//! has finished its handshake, so a refusal only arrives with the first
//! read — and through hyper and h2 it reaches a call as "connection
//! closed" or "transport error", or not at all. The probe makes that first
//! read itself: handshake, HTTP/2 preface, one byte of the server's answer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::describe::describe;
use super::pem::{self, TlsProblem};
use super::provider;

/// The HTTP/2 connection preface and an empty SETTINGS frame: a gRPC
/// server answers with its own SETTINGS once it has accepted the client.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// A PEM file and the setting that named it (`--cacert`, `raft.tls.cafile`).
#[derive(Clone, Copy, Debug)]
pub struct PemFile<'a> {
    pub key: &'a str,
    pub path: &'a Path,
}

/// One client identity and trust, for tonic and for the probe.
#[derive(Clone)]
pub struct ClientTls {
    /// What tonic's channel uses.
    pub tonic: ClientTlsConfig,
    rustls: Arc<ClientConfig>,
}

/// A client that trusts only the CA in `ca` and, with `identity`
/// (certificate, key), presents that certificate.
pub fn client_config(
    ca: PemFile,
    identity: Option<(PemFile, PemFile)>,
) -> Result<ClientTls, TlsProblem> {
    let ca_pem = pem::read(ca.key, ca.path)?;
    let roots = pem::roots_of(ca.key, ca.path, &ca_pem)?;
    let tonic = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsProblem::new(ca.key, format!("no TLS version available: {e}")))?
        .with_root_certificates(roots);
    let (tonic, mut rustls) = match identity {
        None => (tonic, builder.with_no_client_auth()),
        Some((cert, key)) => {
            let cert_pem = pem::read(cert.key, cert.path)?;
            let key_pem = pem::read(key.key, key.path)?;
            let certs = pem::certs_of(cert.key, cert.path, &cert_pem)?;
            let der = pem::key_of(key.key, key.path, &key_pem)?;
            let rustls = builder.with_client_auth_cert(certs, der).map_err(|e| {
                TlsProblem::new(
                    key.key,
                    format!(
                        "{} does not belong to the certificate in {} ({e}) — check that the key belongs to the first certificate",
                        key.path.display(),
                        cert.path.display()
                    ),
                )
            })?;
            (
                tonic.identity(Identity::from_pem(cert_pem, key_pem)),
                rustls,
            )
        }
    };
    rustls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ClientTls {
        tonic,
        rustls: Arc::new(rustls),
    })
}

impl ClientTls {
    /// Connects to `addr` (`host:port`) as a call would and returns why
    /// TLS refused this client or the server, in one sentence; `None` when
    /// TLS is fine or the failure is not TLS's (the call then reports it).
    pub async fn probe(&self, addr: &str, host: &str, timeout: Duration) -> Option<String> {
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .ok()?
            .ok()?;
        let name = ServerName::try_from(host.to_string()).ok()?;
        let connector = TlsConnector::from(self.rustls.clone());
        let mut tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return describe(addr, &e),
            Err(_) => return None,
        };
        let first = async {
            tls.write_all(H2_PREFACE).await?;
            tls.flush().await?;
            tls.read(&mut [0u8; 1]).await
        };
        match tokio::time::timeout(timeout, first).await {
            Ok(Err(e)) => describe(addr, &e),
            _ => None,
        }
    }
}
