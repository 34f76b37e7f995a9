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
        // Each file from its flag, else from the node's raft.tls.
        let node_tls = file.and_then(|c| c.raft.tls.as_ref());
        let cafile = match (&cli.cacert, node_tls) {
            (Some(ca), _) => Some(("--cacert", ca.clone())),
            (None, Some(t)) => Some(("raft.tls.cafile", t.cafile.clone())),
            (None, None) => None,
        };
        let identity = match (&cli.client_cert, &cli.client_key, node_tls) {
            (Some(c), Some(k), _) => Some((("--cert", c.clone()), ("--key", k.clone()))),
            (_, _, Some(t)) => Some((
                ("raft.tls.certfile", t.certfile.clone()),
                ("raft.tls.keyfile", t.keyfile.clone()),
            )),
            _ => None,
        };
        let tls = match cafile {
            Some(cafile) => Some(TlsFiles { cafile, identity }),
            None if cli.client_cert.is_some() => {
                return Err(CtlError(
                    "--cert is only used over TLS: pass the cluster's CA with --cacert too".into(),
                ))
            }
            None => None,
        };
        Ok(Target {
            endpoint,
            token,
            tls,
        })
    }

    /// Connects within `timeout`, each call bounded by `call_timeout`, or
    /// says in one sentence why not.
    pub(crate) async fn connect(
        &self,
        timeout: Duration,
        call_timeout: Duration,
    ) -> Result<Channel, CtlError> {
        let endpoint = &self.endpoint;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let channel = Endpoint::from_shared(format!("{scheme}://{endpoint}"))
            .map_err(|e| CtlError(format!("--endpoint {endpoint:?} is not HOST:PORT: {e}")))?;
        let channel = with_tls(channel, endpoint, self.tls.as_ref(), timeout)
            .await?
            .connect_timeout(timeout)
            .timeout(call_timeout);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::tests::DATA;
    use crate::config::{parse, NodeKind};

    fn target(args: &[&str], file: Option<&Config>) -> Result<Target, CtlError> {
        let cli = Cli::try_parse_from([&["pgkeelctl"], args, &["list"]].concat()).unwrap();
        Target::resolve(&cli, file)
    }

    #[test]
    fn flags_win_over_the_config_file() {
        let plain = parse(DATA, "node1.yaml", NodeKind::Data).unwrap();
        let with_token = parse(
            &DATA.replace(
                "  peers:\n",
                "  admin_token: 0123456789abcdef-admin\n  peers:\n",
            ),
            "node1.yaml",
            NodeKind::Data,
        )
        .unwrap();
        // Token: --token, then --secret, then admin_token, then the secret.
        let t = |args: &[&str], file| target(args, file).unwrap().token;
        assert_eq!(
            t(&[], Some(&plain)).as_deref(),
            Some("0123456789abcdef-secret")
        );
        assert_eq!(
            t(&[], Some(&with_token)).as_deref(),
            Some("0123456789abcdef-admin")
        );
        assert_eq!(
            t(&["--secret", "s"], Some(&with_token)).as_deref(),
            Some("s")
        );
        assert_eq!(
            t(&["--secret", "s", "--token", "x"], Some(&with_token)).as_deref(),
            Some("x")
        );
        assert_eq!(t(&["--endpoint", "h:1"], None), None);

        let found = target(&[], Some(&plain)).unwrap();
        assert_eq!(found.endpoint, "127.0.0.1:7001");
        assert_eq!(found.tls, None, "plain text without raft.tls or --cacert");
        let tls = target(&["--endpoint", "h:1", "--cacert", "ca.crt"], None)
            .unwrap()
            .tls;
        assert_eq!(
            tls,
            Some(TlsFiles {
                cafile: ("--cacert", "ca.crt".into()),
                identity: None
            })
        );
        let tls = target(
            &[
                "--endpoint",
                "h:1",
                "--cacert",
                "ca.crt",
                "--cert",
                "a.crt",
                "--key",
                "a.key",
            ],
            None,
        )
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            tls.identity,
            Some((("--cert", "a.crt".into()), ("--key", "a.key".into())))
        );

        let err = target(
            &["--endpoint", "h:1", "--cert", "a.crt", "--key", "a.key"],
            None,
        )
        .unwrap_err();
        assert!(
            err.0.contains("pass the cluster's CA with --cacert"),
            "{err}"
        );
        let err = target(&[], None).unwrap_err();
        assert!(err.0.contains("pass --endpoint HOST:PORT"), "{err}");
        // --cert without --key is a usage error (exit 2).
        assert!(Cli::try_parse_from(["pgkeelctl", "--cert", "a.crt", "list"]).is_err());
    }
}
