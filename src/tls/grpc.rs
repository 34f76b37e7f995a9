//! TLS of the gRPC port from `raft.tls`: the server side of this node and
//! the client side of its calls to peers, built and checked once.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{CertificateError, Error, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::pem::{self, split, TlsProblem};
use super::provider;
use crate::config::RaftTls;

const CERTFILE: &str = "raft.tls.certfile";
const KEYFILE: &str = "raft.tls.keyfile";
const CAFILE: &str = "raft.tls.cafile";

/// This node's TLS on the gRPC port, both directions.
#[derive(Clone)]
pub struct GrpcTls {
    acceptor: TlsAcceptor,
    client: ClientTlsConfig,
    /// Whether the server demands client certificates.
    pub verify_client: bool,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls")
            .field("verify_client", &self.verify_client)
            .finish_non_exhaustive()
    }
}

impl GrpcTls {
    /// Reads the three files and checks them as peers will: the key
    /// belongs to the certificate, `cafile` signs it, it names `own_host`
    /// (the host of this node's peer address) and, with `verify_client`,
    /// it is also good as a client certificate.
    pub fn load(cfg: &RaftTls, own_host: &str) -> Result<GrpcTls, TlsProblem> {
        let cert_pem = pem::read(CERTFILE, &cfg.certfile)?;
        let key_pem = pem::read(KEYFILE, &cfg.keyfile)?;
        let ca_pem = pem::read(CAFILE, &cfg.cafile)?;
        let certs = pem::certs_of(CERTFILE, &cfg.certfile, &cert_pem)?;
        let key = pem::key_of(KEYFILE, &cfg.keyfile, &key_pem)?;
        let roots = Arc::new(pem::roots_of(CAFILE, &cfg.cafile, &ca_pem)?);
        check_server_cert(cfg, &certs, &roots, own_host)?;

        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider());
        let clients = match cfg.verify_client {
            true => clients.build(),
            false => clients.allow_unauthenticated().build(),
        }
        .map_err(|e| {
            TlsProblem::new(
                CAFILE,
                format!(
                    "{} cannot verify client certificates: {e} — point it at the CA certificate",
                    cfg.cafile.display()
                ),
            )
        })?;
        if cfg.verify_client {
            let (end, chain) = split(CERTFILE, &certs)?;
            clients
                .verify_client_cert(end, chain, UnixTime::now())
                .map_err(|e| TlsProblem::new(CERTFILE, format!("{} is not valid as a client certificate ({e}), yet with raft.tls.verify_client every peer presents its certificate as one — issue it with extendedKeyUsage serverAuth and clientAuth", cfg.certfile.display())))?;
        }
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsProblem::new("raft.tls", format!("the ring crypto provider supports no TLS version: {e}")))?
            .with_client_cert_verifier(clients)
            .with_single_cert(certs, key)
            .map_err(|e| TlsProblem::new(KEYFILE, format!("{} does not belong to the certificate in {} ({e}) — check that the key belongs to the first certificate", cfg.keyfile.display(), cfg.certfile.display())))?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem));
        Ok(GrpcTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            client,
            verify_client: cfg.verify_client,
        })
    }

    /// The server side, for every accepted connection.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// The client side, for every call to a peer.
    pub fn client(&self) -> ClientTlsConfig {
        self.client.clone()
    }
}

/// Verifies this node's own certificate the way a peer dialing `host`
/// will, so a certificate peers would refuse stops the node at start-up
/// with the reason instead of failing every call.
fn check_server_cert(
    cfg: &RaftTls,
    certs: &[CertificateDer<'static>],
    roots: &Arc<RootCertStore>,
    host: &str,
) -> Result<(), TlsProblem> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| {
            TlsProblem::new(
                CAFILE,
                format!(
                    "{} cannot verify certificates: {e} — point it at the CA certificate",
                    cfg.cafile.display()
                ),
            )
        })?;
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        TlsProblem::new(
            "raft.tls",
            format!("\"{host}\", the host of this node's raft.peers address, cannot be a TLS server name — use a DNS name or an IP address there"),
        )
    })?;
    let (end, chain) = split(CERTFILE, certs)?;
    match verifier.verify_server_cert(end, chain, &name, &[], UnixTime::now()) {
        Ok(_) => Ok(()),
        Err(e) => Err(own_cert_problem(&cfg.certfile, &cfg.cafile, host, &e)),
    }
}

fn own_cert_problem(cert: &Path, ca: &Path, host: &str, e: &Error) -> TlsProblem {
    let (cert, ca) = (cert.display(), ca.display());
    let message = match e {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!("{cert} is not signed by the CA in raft.tls.cafile {ca} — issue it from that CA, or point cafile at the CA that signed it"),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("{cert} does not name {host}, the host peers dial to reach this node (its raft.peers address) — reissue it with subjectAltName {}:{host}", if host.parse::<std::net::IpAddr>().is_ok() { "IP" } else { "DNS" }),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("{cert} has expired — renew it"),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => format!("{cert} is not valid yet — check this host's clock or the certificate's start date"),
        Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => format!("{cert} is not valid for a TLS server — issue it with extendedKeyUsage serverAuth (and clientAuth)"),
        e => format!("{cert} does not verify against raft.tls.cafile {ca} ({e}) — issue it from that CA for {host}"),
    };
    TlsProblem::new(CERTFILE, message)
}
