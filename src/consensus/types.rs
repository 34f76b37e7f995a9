//! The openraft type configuration and the replicated command format.
//!
//! Every command that goes through the Raft log is a [`Command`]: a format
//! version plus one [`Op`]. The version travels inside the entry itself, so a
//! node that reads its own log after an upgrade, or receives entries from an
//! older peer during a rolling upgrade, knows which shape it is decoding.

use std::collections::BTreeSet;
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// The format version written into every log entry and snapshot by this
/// release. Readers accept every version up to and including this one.
pub const FORMAT_VERSION: u16 = 1;

/// A Raft voter's numeric id, stable for the life of the node (`raft.node_id`).
pub type NodeId = u64;

/// A lease's id. Assigned by the state machine, never reused, so an `Expire`
/// for an old lease can never touch a newer one.
pub type LeaseId = u64;

/// What the membership records about each voter: enough to reach it and to
/// tell a witness from a data node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's `name` (Patroni's member name).
    pub name: String,
    /// `host:port` of its gRPC listener (Raft transport + admin).
    pub addr: String,
    /// A witness votes and stores but never runs PostgreSQL or holds `leader`.
    #[serde(default)]
    pub witness: bool,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.witness { "witness" } else { "data" };
        write!(f, "{}@{} ({kind})", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of pgkeel.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The running Raft instance.
pub type Raft = openraft::Raft<TypeConfig>;

/// A replicated command: a format version and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// See [`FORMAT_VERSION`].
    pub format: u16,
    pub op: Op,
}

impl Command {
    pub fn new(op: Op) -> Self {
        Command {
            format: FORMAT_VERSION,
            op,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{} {:?}", self.format, self.op)
    }
}

/// The condition a compare-and-set checks before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Expect {
    /// Unconditional.
    #[default]
    Any,
    /// The key must not exist (acquire a vacant key).
    Absent,
    /// The key must exist with exactly this `mod_revision`.
    ModRevision(u64),
}

/// A state machine operation. Only the leader's lessor proposes `Expire`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Records the cluster id once; later ones are ignored.
    InitCluster {
        cluster_id: String,
    },
    Put {
        key: String,
        value: String,
        /// Binds the key to a lease: it vanishes when the lease ends.
        lease: Option<LeaseId>,
        expect: Expect,
    },
    Delete {
        key: String,
        expect: Expect,
    },
    Grant {
        ttl_ms: u64,
    },
    Revoke {
        lease: LeaseId,
    },
    Expire {
        lease: LeaseId,
    },
    /// No change; used to measure the log path and to check a quorum.
    Noop,
    /// A [`Op::Put`] (no lease) applied only while `guard_key` holds
    /// `guard_value` on lease `guard_lease`; otherwise a failed
    /// compare-and-set. The primary writes the `sync` key this way, so a
    /// write it sent while it led cannot land after its lease ended and a
    /// new primary took over.
    PutGuarded {
        key: String,
        value: String,
        expect: Expect,
        guard_key: String,
        guard_value: String,
        guard_lease: LeaseId,
    },
}

/// One stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Store revision at which the key was created (since its last delete).
    pub create_revision: u64,
    /// Store revision of the last change; the handle for compare-and-set.
    pub mod_revision: u64,
    /// Number of writes since creation.
    pub version: u64,
    pub lease: Option<LeaseId>,
}

/// A live lease as the state machine knows it. Its deadline is not here: it
/// lives only in the Raft leader's memory (see `store::lessor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ttl_ms: u64,
    pub keys: BTreeSet<String>,
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Outcome {
    /// Applied (or a no-op); `revision` in the response is the store's.
    #[default]
    Done,
    /// A compare-and-set did not match; the key as it is now.
    CasFailed {
        current: Option<KeyValue>,
    },
    /// The command named a lease that does not exist (expired or revoked).
    LeaseNotFound {
        lease: LeaseId,
    },
    Granted {
        lease: LeaseId,
        ttl_ms: u64,
    },
    /// The command's format version is newer than this node understands.
    UnsupportedFormat {
        format: u16,
    },
}

/// The reply to a replicated command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CommandResponse {
    /// The store revision after the command was applied.
    pub revision: u64,
    pub outcome: Outcome,
}
