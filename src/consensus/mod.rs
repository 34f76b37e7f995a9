//! Layer 1: consensus. The openraft type configuration, the sled-backed log
//! and vote store, the replicated state machine and the peer transport.
//! Knows nothing of PostgreSQL.

pub mod grpc;
pub mod handler;
pub mod kv;
pub mod log_store;
pub mod network;
pub mod peer;
pub mod simnet;
pub mod sled_util;
pub mod state_machine;
pub mod throttle;
pub mod types;

pub use types::{
    Command, CommandResponse, Expect, KeyValue, LeaseId, Member, NodeId, Op, Outcome, Raft,
    TypeConfig,
};
