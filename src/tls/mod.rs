//! TLS through rustls with the ring provider (the `tls` feature, on in
//! every data node, optional in the witness).
//!
//! ```text
//!  raft.tls ──GrpcTls::load──▶ server side: TlsAcceptor (ALPN h2, client
//!     │                          certificates verified against cafile,
//!     │                          demanded when verify_client)
//!     └──────────────────────▶ client side: tonic ClientTlsConfig (cafile
//!                                as the only root, certfile/keyfile as
//!                                the client identity) for every peer call
//!  pgkeelctl --cacert/--cert/--key ──client_config──▶ ClientTlsConfig
//!  a failed connection ──describe──▶ one sentence on what went wrong
//! ```
//!
//! [`pem`] also serves the REST API's HTTPS (`restapi.certfile`).

mod client;
mod describe;
mod grpc;
pub mod pem;

pub use client::{client_config, ClientTls, PemFile};
pub use describe::{describe, describe_refused_client};
pub use grpc::GrpcTls;
pub use pem::TlsProblem;

use std::sync::Arc;

use tokio_rustls::rustls::crypto::{ring, CryptoProvider};

/// The one crypto provider pgkeel uses.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}
