//! pgkeel: PostgreSQL high availability with the consensus layer embedded.
//!
//! Layers, bottom to top (arrows only point down; see DESIGN.md):
//!
//! - [`consensus`]: openraft type config, sled log store, state machine,
//!   peer transport (gRPC). Commands flow leader → log → every voter's
//!   state machine; changes flow state machine → watchers.
//! - [`store`]: the cluster store the HA loop talks to: keys with
//!   compare-and-set, leases whose expiry runs on the Raft leader's clock,
//!   prefix watches, request forwarding to the leader.
//! - [`admin`]: the gRPC admin service `pgkeelctl` talks to.
//! - [`ha`]: the pure HA decision core: cluster view + local PostgreSQL
//!   state + config + now → actions. No I/O. The witness uses only its
//!   translations of store records ([`ha::records`]) and the candidate
//!   checks, so its admin service refuses a bad switchover as a data node
//!   would.
//! - [`postgres`] (data nodes only): the PostgreSQL controller behind a
//!   trait, with a real implementation and an in-memory fake.
//! - [`agent`] (data nodes only): the event loop that feeds the HA core
//!   and carries out its actions on the store and PostgreSQL.
//! - [`status`] (data nodes only): the agent's snapshot of this node
//!   ([`status::NodeStatus`]), published after every pass of the core.
//! - [`rest`] (data nodes only): the Patroni-compatible REST API (health
//!   checks for HAProxy, status JSON, unsafe calls) and `/metrics`, read
//!   from that snapshot and the store.
//! - [`node`]: wiring: opens storage, starts Raft, bootstraps the cluster,
//!   serves gRPC; used by both `pgkeel` and `pgkeel-witness`.
//! - [`config`]: the YAML file of one node, validated on load.
//! - [`fence`] (data nodes only): the fencing thread and the watchdog,
//!   which stop a primary whose lease ran out even when the runtime stalls.
//! - [`clock`]: `CLOCK_BOOTTIME`, the lease holder's clock.
//! - [`tls`] (the `tls` feature): rustls for the gRPC port (`raft.tls`,
//!   peers and `pgkeelctl`) and the REST API's HTTPS.

pub mod admin;
#[cfg(feature = "data-node")]
pub mod agent;
pub mod clock;
pub mod config;
pub mod consensus;
pub mod ctl;
pub mod entry;
#[cfg(feature = "data-node")]
pub mod fence;
pub mod ha;
pub mod node;
pub mod pb;
#[cfg(feature = "data-node")]
pub mod postgres;
#[cfg(feature = "data-node")]
pub mod rest;
#[cfg(feature = "data-node")]
pub mod status;
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;
