//! `raft.tls`: TLS, and with `verify_client` mutual TLS, on the gRPC port
//! that carries both peer traffic and the admin service.
//!
//! Every file must be readable on every build. Whether they hold a
//! certificate signed by `cafile` for this node's own peer address, and a
//! key that belongs to it, is checked here too when the binary has TLS
//! (the `tls` feature); a binary without it refuses the section.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::Problems;

/// The gRPC port's TLS settings, the same shape in every node's file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftTls {
    /// This node's certificate chain (PEM): the server certificate of its
    /// gRPC port and its client certificate when it dials peers. It must
    /// name the host of this node's `raft.peers` address (DNS or IP
    /// subjectAltName), since that is what peers verify.
    pub certfile: PathBuf,
    /// The private key of `certfile` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub keyfile: PathBuf,
    /// The CA certificate(s) (PEM) that sign every node's certificate.
    /// Peers and `pgkeelctl` verify this node against it, and this node
    /// verifies peers (and client certificates) against it.
    pub cafile: PathBuf,
    /// Demand a client certificate signed by `cafile` from everyone who
    /// connects — peers and `pgkeelctl` alike (mutual TLS). Off: a client
    /// certificate is verified when one is presented, not demanded.
    #[serde(default)]
    pub verify_client: bool,
}

impl RaftTls {
    /// Each file named and readable; then, with TLS compiled in, the
    /// whole identity checked as peers will check it.
    pub(crate) fn check(&self, p: &mut Problems, advertise: &str) {
        let files = [
            ("raft.tls.certfile", &self.certfile),
            ("raft.tls.keyfile", &self.keyfile),
            ("raft.tls.cafile", &self.cafile),
        ];
        let mut readable = true;
        for (key, path) in files {
            if path.as_os_str().is_empty() {
                p.add(
                    key,
                    "is empty — name a PEM file, or remove raft.tls for plain-text gRPC",
                );
                readable = false;
            } else if let Err(e) = std::fs::File::open(path) {
                p.add(
                    key,
                    format!(
                        "cannot read {}: {e} — create the file or fix the path",
                        path.display()
                    ),
                );
                readable = false;
            }
        }
        #[cfg(feature = "tls")]
        if readable {
            if let Err(problem) = crate::tls::GrpcTls::load(self, host_of(advertise)) {
                p.add(problem.key, problem.message);
            }
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (readable, advertise);
            p.add("raft.tls", "is set but this binary was built without TLS — build it with the tls feature (pgkeel-witness: cargo build --release --no-default-features --features tls --bin pgkeel-witness), or remove raft.tls on every node");
        }
    }
}

/// The host part of a `host:port` address, without IPv6 brackets.
#[cfg(feature = "tls")]
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
