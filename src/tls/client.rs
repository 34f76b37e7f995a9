//! The client side for `pgkeelctl`.

use std::path::Path;

use tokio_rustls::rustls::sign::CertifiedKey;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use super::pem::{self, TlsProblem};
use super::provider;

/// A PEM file and the setting that named it (`--cacert`, `raft.tls.cafile`).
#[derive(Clone, Copy, Debug)]
pub struct PemFile<'a> {
    pub key: &'a str,
    pub path: &'a Path,
}

/// A client that trusts only the CA in `ca` and, with `identity`
/// (certificate, key), presents that certificate.
pub fn client_config(
    ca: PemFile,
    identity: Option<(PemFile, PemFile)>,
) -> Result<ClientTlsConfig, TlsProblem> {
    let ca_pem = pem::read(ca.key, ca.path)?;
    pem::roots_of(ca.key, ca.path, &ca_pem)?;
    let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    let Some((cert, key)) = identity else {
        return Ok(config);
    };
    let cert_pem = pem::read(cert.key, cert.path)?;
    let key_pem = pem::read(key.key, key.path)?;
    let certs = pem::certs_of(cert.key, cert.path, &cert_pem)?;
    let der = pem::key_of(key.key, key.path, &key_pem)?;
    CertifiedKey::from_der(certs, der, &provider()).map_err(|e| {
        TlsProblem::new(
            key.key,
            format!(
                "{} does not belong to the certificate in {} ({e}) — check that the key belongs to the first certificate",
                key.path.display(),
                cert.path.display()
            ),
        )
    })?;
    Ok(config.identity(Identity::from_pem(cert_pem, key_pem)))
}
