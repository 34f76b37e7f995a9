//! Where `pgkeelctl` connects and how: the endpoint, the admin token and
//! TLS, from flags, environment variables or a node's config file (`-c`),
//! in that order.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::{Cli, CtlError};
use crate::config::Config;

/// A PEM file and the flag or setting that named it, for error messages.
pub type Named = (&'static str, PathBuf);

/// The PEM files of a TLS connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cafile: Named,
    /// Certificate and key, for a server that demands a client certificate.
    pub identity: Option<(Named, Named)>,
}

/// What one run of `pgkeelctl` talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: String,
    /// The bearer token of mutating calls.
    pub token: Option<String>,
    /// `None`: plain-text gRPC.
    pub tls: Option<TlsFiles>,
}

impl Target {
    /// Flags and environment first, then the config file.
    pub(crate) fn resolve(cli: &Cli, file: Option<&Config>) -> Result<Target, CtlError> {
        let endpoint = cli
            .endpoint
            .clone()
            .or_else(|| file.map(|c| c.raft.advertise_address()))
            .ok_or_else(|| {
                CtlError(
                    "no node to ask: pass --endpoint HOST:PORT, PGKEEL_ENDPOINT or -c CONFIG"
                        .into(),
                )
            })?;
        let token = cli
            .token
            .clone()
            .or_else(|| cli.secret.clone())
            .or_else(|| {
                file.and_then(|c| c.raft.admin_token().or(c.raft.secret()))
                    .map(str::to_string)
            });
        let tls = match (&cli.cacert, file.and_then(|c| c.raft.tls.as_ref())) {
            (Some(ca), _) => Some(TlsFiles {
                cafile: ("--cacert", ca.clone()),
                identity: cli
                    .client_cert
                    .clone()
                    .zip(cli.client_key.clone())
                    .map(|(c, k)| (("--cert", c), ("--key", k))),
            }),
            (None, Some(t)) => Some(TlsFiles {
                cafile: ("raft.tls.cafile", t.cafile.clone()),
                identity: Some((
                    ("raft.tls.certfile", t.certfile.clone()),
                    ("raft.tls.keyfile", t.keyfile.clone()),
                )),
            }),
            (None, None) if cli.client_cert.is_some() => {
                return Err(CtlError(
                    "--cert is only used over TLS: pass the cluster's CA with --cacert too".into(),
                ))
            }
            (None, None) => None,
        };
        Ok(Target {
            endpoint,
            token,
            tls,
        })
    }

    /// Connects, or says in one sentence why not.
    pub(crate) async fn connect(&self, timeout: Duration) -> Result<Channel, CtlError> {
        let endpoint = &self.endpoint;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let channel = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
            .map_err(|e| CtlError(format!("--endpoint {endpoint:?} is not HOST:PORT: {e}")))?;
        let channel = with_tls(channel, endpoint, self.tls.as_ref(), timeout)
            .await?
            .connect_timeout(timeout)
            .timeout(timeout);
        channel
            .connect()
            .await
            .map_err(|e| match tls_sentence(endpoint, &e) {
                Some(s) => CtlError(s),
                None => CtlError(format!(
                    "cannot reach {endpoint}: is pgkeel running there? ({e})"
                )),
            })
    }
}

/// TLS on `endpoint` when `tls` says so, after a probe of `addr` has
/// shown the server accepts this client (see [`crate::tls::ClientTls`]).
#[cfg(feature = "tls")]
async fn with_tls(
    endpoint: Endpoint,
    addr: &str,
    tls: Option<&TlsFiles>,
    timeout: Duration,
) -> Result<Endpoint, CtlError> {
    use crate::tls::{client_config, PemFile};
    let Some(tls) = tls else {
        return Ok(endpoint);
    };
    fn pem((key, path): &Named) -> PemFile<'_> {
        PemFile {
            key,
            path: path.as_path(),
        }
    }
    let config = client_config(
        pem(&tls.cafile),
        tls.identity.as_ref().map(|(c, k)| (pem(c), pem(k))),
    )
    .map_err(|p| CtlError(p.to_string()))?;
    if let Some(sentence) = config
        .probe(addr, crate::config::host_of(addr), timeout)
        .await
    {
        return Err(CtlError(sentence));
    }
    endpoint
        .tls_config(config.tonic)
        .map_err(|e| CtlError(format!("cannot set up TLS: {e}")))
}

#[cfg(not(feature = "tls"))]
async fn with_tls(
    endpoint: Endpoint,
    _addr: &str,
    tls: Option<&TlsFiles>,
    _timeout: Duration,
) -> Result<Endpoint, CtlError> {
    match tls {
        None => Ok(endpoint),
        Some(_) => Err(CtlError(
            "this pgkeelctl was built without TLS — build it with the tls feature (the default build has it)".into(),
        )),
    }
}

/// The sentence for a connection or call that failed in TLS.
pub(crate) fn tls_sentence(
    endpoint: &str,
    e: &(dyn std::error::Error + 'static),
) -> Option<String> {
    #[cfg(feature = "tls")]
    return crate::tls::describe(endpoint, e);
    #[cfg(not(feature = "tls"))]
    {
        let _ = (endpoint, e);
        None
    }
}
