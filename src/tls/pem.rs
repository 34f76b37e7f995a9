//! Reading PEM certificates and keys, with errors that name the setting
//! (`restapi.certfile`, `raft.tls.cafile`, `--cacert`), the file and the fix.

use std::path::Path;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::RootCertStore;

/// A file that cannot be used, said in one sentence naming the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProblem {
    /// The setting at fault: `raft.tls.certfile`, `--cacert`, ...
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl TlsProblem {
    pub fn new(key: &str, message: impl Into<String>) -> TlsProblem {
        TlsProblem {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for TlsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for TlsProblem {}

/// The bytes of the file `key` names.
pub fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsProblem> {
    std::fs::read(path).map_err(|e| {
        TlsProblem::new(
            key,
            format!(
                "cannot read {}: {e} — create the file or fix the path",
                path.display()
            ),
        )
    })
}

/// Every certificate in a PEM file, at least one.
pub fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsProblem> {
    certs_of(key, path, &read(key, path)?)
}

/// Every certificate in PEM text read from `path`, at least one.
pub fn certs_of(
    key: &str,
    path: &Path,
    text: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsProblem> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsProblem::new(
                key,
                format!(
                    "{} is not valid PEM ({e}) — write the certificate chain in PEM",
                    path.display()
                ),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsProblem::new(
            key,
            format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----) — point it at the certificate",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsProblem> {
    key_of(key, path, &read(key, path)?)
}

/// The private key in PEM text read from `path`.
pub fn key_of(key: &str, path: &Path, text: &[u8]) -> Result<PrivateKeyDer<'static>, TlsProblem> {
    PrivateKeyDer::from_pem_slice(text).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsProblem::new(
            key,
            format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1) — point it at the certificate's private key",
                path.display()
            ),
        ),
        e => TlsProblem::new(
            key,
            format!(
                "{} is not valid PEM ({e}) — write the private key in PEM",
                path.display()
            ),
        ),
    })
}

/// The CA certificates in PEM text read from `path`, as trust anchors.
pub fn roots_of(key: &str, path: &Path, text: &[u8]) -> Result<RootCertStore, TlsProblem> {
    let mut roots = RootCertStore::empty();
    for cert in certs_of(key, path, text)? {
        roots.add(cert).map_err(|e| {
            TlsProblem::new(
                key,
                format!(
                    "{} holds a certificate that cannot be a trust anchor ({e}) — point it at the CA certificate",
                    path.display()
                ),
            )
        })?;
    }
    Ok(roots)
}

/// The end-entity certificate and the chain above it.
pub(crate) fn split<'a>(
    key: &str,
    certs: &'a [CertificateDer<'static>],
) -> Result<(&'a CertificateDer<'static>, &'a [CertificateDer<'static>]), TlsProblem> {
    certs
        .split_first()
        .ok_or_else(|| TlsProblem::new(key, "holds no certificate — point it at the certificate"))
}
