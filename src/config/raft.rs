//! The `raft:` section: this node's place among the voters.
//!
//! It replaces Patroni's `etcd3:` section: instead of naming an external DCS,
//! it names the initial Raft voters (the same list in every file) and this
//! node's id among them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::addr::{self, host_port_problem};
use super::raft_tls::RaftTls;
use super::validate::{check_name, Problems};
use super::value::Secret;
use super::{defaults, duration};

/// Raft membership, transport and log-store settings of one node.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftConfig {
    /// This node's Raft id; must match its entry in `peers`.
    pub node_id: u64,
    /// Where the gRPC server (Raft transport + admin service) binds.
    #[serde(deserialize_with = "addr::raft_listen")]
    pub listen: SocketAddr,
    /// The `host:port` peers dial to reach this node, when it differs from
    /// `listen` (a wildcard bind, NAT). See [`RaftConfig::advertise_address`].
    #[serde(default)]
    pub advertise: Option<String>,
    /// The sled directory holding the Raft log, vote and snapshots.
    pub data_dir: PathBuf,
    /// The shared secret every peer RPC carries. Exactly one of `secret` and
    /// `secret_file` is set; read it through [`RaftConfig::secret`].
    #[serde(default)]
    pub secret: Option<Secret>,
    /// A file holding the shared secret, read once at load.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The bearer token of mutating admin calls (`pgkeelctl --token`), so
    /// operators need not hold the peer secret. At most one of
    /// `admin_token` and `admin_token_file`; when neither is set the
    /// secret is the admin token. Read it through [`RaftConfig::admin_token`].
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// A file holding the admin token, read once at load.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// TLS (and with `verify_client`, mutual TLS) on the gRPC port.
    #[serde(default)]
    pub tls: Option<RaftTls>,
    /// The initial voters, the same list in every node's file. With
    /// `join: true`: the running cluster's voters plus this node.
    pub peers: Vec<Peer>,
    /// This node joins a running cluster through `pgkeelctl member add`
    /// instead of forming one: it never initializes a cluster of its own
    /// and waits, pristine, until the Raft leader adds it. Ignored once the
    /// node has Raft state (every restart after it joined).
    #[serde(default)]
    pub join: bool,
    /// How often the Raft leader sends heartbeats.
    #[serde(
        default = "defaults::heartbeat_interval",
        deserialize_with = "duration::deserialize"
    )]
    pub heartbeat_interval: Duration,
    /// Lower bound of the randomized election timeout.
    #[serde(
        default = "defaults::election_timeout_min",
        deserialize_with = "duration::deserialize"
    )]
    pub election_timeout_min: Duration,
    /// Upper bound of the randomized election timeout; enters the lease
    /// timing invariant.
    #[serde(
        default = "defaults::election_timeout_max",
        deserialize_with = "duration::deserialize"
    )]
    pub election_timeout_max: Duration,
    /// Bound on a store write or read that cannot reach a quorum.
    #[serde(
        default = "defaults::request_timeout",
        deserialize_with = "duration::deserialize"
    )]
    pub request_timeout: Duration,
    /// Log entries between snapshots.
    #[serde(default = "defaults::snapshot_every")]
    pub snapshot_every: u64,
    /// sled page cache size in bytes.
    #[serde(default = "defaults::cache_capacity")]
    pub cache_capacity: u64,
    /// What `secret_file` held when the file was loaded.
    #[serde(skip)]
    file_secret: FileSecret,
    /// What `admin_token_file` held when the file was loaded.
    #[serde(skip)]
    file_admin_token: FileSecret,
}

/// The outcome of reading `secret_file`, kept so that `validate()` can report
/// an unreadable file along with every other problem.
#[derive(Clone, Debug, Default)]
pub(crate) enum FileSecret {
    #[default]
    NotRead,
    Read(Secret),
    Unreadable(String),
}

impl FileSecret {
    /// Reads a secret file, dropping the trailing newline editors add.
    pub(crate) fn read(path: &std::path::Path) -> FileSecret {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                FileSecret::Read(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()))
            }
            Err(e) => FileSecret::Unreadable(e.to_string()),
        }
    }

    /// The value given inline, else the one read from the file.
    pub(crate) fn or_inline<'a>(&'a self, inline: &'a Option<Secret>) -> Option<&'a str> {
        match (inline, self) {
            (Some(s), _) | (None, FileSecret::Read(s)) => Some(s.expose()),
            _ => None,
        }
    }
}

/// A secret that may be written inline (`key`) or in a file (`file_key`),
/// as `raft.secret`/`raft.secret_file` are.
pub(crate) struct SecretSource<'a> {
    pub key: &'a str,
    pub inline: &'a Option<Secret>,
    pub file_key: &'a str,
    pub file: &'a Option<PathBuf>,
    pub read: &'a FileSecret,
    /// What the value is called in messages: "secret", "token".
    pub what: &'a str,
}

impl SecretSource<'_> {
    /// At most one of the two, long enough, and a readable file. Whether
    /// one of them is required is the caller's to say: `false` when
    /// neither is set.
    pub(crate) fn check(&self, p: &mut Problems) -> bool {
        let min = defaults::MIN_SECRET_LEN;
        let (key, file_key, what) = (self.key, self.file_key, self.what);
        match (self.inline, self.file) {
            (Some(_), Some(_)) => p.add(
                file_key,
                format!("is set together with {key} — keep only one of the two"),
            ),
            (None, None) => return false,
            (Some(s), None) => {
                let len = s.expose().chars().count();
                if len < min {
                    p.add(
                        key,
                        format!("is {len} characters long — use at least {min}"),
                    );
                }
            }
            (None, Some(path)) => {
                match self.read {
                    FileSecret::Read(s) => {
                        let len = s.expose().chars().count();
                        if len < min {
                            p.add(file_key, format!("{} holds {len} characters — put a {what} of at least {min} in it", path.display()));
                        }
                    }
                    FileSecret::Unreadable(e) => p.add(
                        file_key,
                        format!(
                            "cannot read {}: {e} — create the file or fix the path",
                            path.display()
                        ),
                    ),
                    FileSecret::NotRead => p.add(
                        file_key,
                        "was never read — load the file with config::load or config::parse",
                    ),
                }
            }
        }
        true
    }
}

/// One initial Raft voter.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Raft node id, unique and above 0.
    pub id: u64,
    /// Member name, the `name` in that node's own file.
    pub name: String,
    /// `host:port` of its gRPC server, as the other nodes dial it.
    pub address: String,
    /// A `pgkeel-witness` voter: votes and may lead Raft, never runs PostgreSQL.
    #[serde(default)]
    pub witness: bool,
}

impl RaftConfig {
    /// The address peers dial to reach this node: `advertise`, else `listen`.
    pub fn advertise_address(&self) -> String {
        match &self.advertise {
            Some(a) => a.clone(),
            None => self.listen.to_string(),
        }
    }

    /// The shared secret, from `secret` or from the contents of `secret_file`.
    /// `None` only on a config that failed validation.
    pub fn secret(&self) -> Option<&str> {
        self.file_secret.or_inline(&self.secret)
    }

    /// The separate admin token, from `admin_token` or `admin_token_file`;
    /// `None` when the cluster uses its secret as the admin token.
    pub fn admin_token(&self) -> Option<&str> {
        self.file_admin_token.or_inline(&self.admin_token)
    }

    /// The voter with Raft id `id`.
    pub fn peer(&self, id: u64) -> Option<&Peer> {
        self.peers.iter().find(|p| p.id == id)
    }

    /// Reads `secret_file`, dropping the trailing newline editors add.
    /// Relative paths are taken from the working directory, like `data_dir`.
    pub(crate) fn load_secret_file(&mut self) {
        if let Some(path) = &self.secret_file {
            self.file_secret = FileSecret::read(path);
        }
        if let Some(path) = &self.admin_token_file {
            self.file_admin_token = FileSecret::read(path);
        }
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        if self.node_id == 0 {
            p.add("raft.node_id", "0 is not a Raft node id — use a whole number above 0, the id of this node's entry in raft.peers");
        }
        match &self.advertise {
            Some(a) => p.add_opt("raft.advertise", host_port_problem(a, "10.0.0.1:7001")),
            None if self.listen.ip().is_unspecified() => p.add(
                "raft.advertise",
                format!(
                    "is needed because raft.listen {} is a wildcard peers cannot dial — set it to this host's address, e.g. 10.0.0.1:{}",
                    self.listen,
                    self.listen.port()
                ),
            ),
            None => {}
        }
        if self.data_dir.as_os_str().is_empty() {
            p.add(
                "raft.data_dir",
                "is empty — set it to the directory for the Raft log, e.g. /var/lib/pgkeel/raft",
            );
        }
        self.check_secret(p);
        self.check_peers(p);
        self.check_timing(p);
    }

    fn check_secret(&self, p: &mut Problems) {
        let secret = SecretSource {
            key: "raft.secret",
            inline: &self.secret,
            file_key: "raft.secret_file",
            file: &self.secret_file,
            read: &self.file_secret,
            what: "secret",
        };
        if !secret.check(p) {
            p.add("raft.secret", format!("is required so peers can authenticate each other — set raft.secret (at least {} characters) or raft.secret_file", defaults::MIN_SECRET_LEN));
        }
        let admin = SecretSource {
            key: "raft.admin_token",
            inline: &self.admin_token,
            file_key: "raft.admin_token_file",
            file: &self.admin_token_file,
            read: &self.file_admin_token,
            what: "token",
        };
        admin.check(p);
        if let (Some(token), Some(secret)) = (self.admin_token(), self.secret()) {
            if token == secret {
                p.add("raft.admin_token", "equals raft.secret, so whoever holds the admin token can also pose as a peer — choose a different token, or remove it to use the secret");
            }
        }
        if let Some(tls) = &self.tls {
            tls.check(p, &self.advertise_address());
        }
    }

    fn check_peers(&self, p: &mut Problems) {
        match self.peers.len() {
            0 => p.add("raft.peers", "is empty — list every initial voter, this node included, the same list in every node's file"),
            2 => p.add("raft.peers", "lists two voters, which lose their quorum when either one is down — add a witness (pgkeel-witness) as a third peer"),
            _ => {}
        }
        if self.join && self.peers.iter().all(|peer| peer.id == self.node_id) {
            p.add("raft.peers", "lists no running voter, but raft.join is set — list the cluster's current voters (and this node), or drop raft.join to form a new cluster");
        }
        if !self.peers.is_empty() && self.peers.iter().all(|peer| peer.witness) {
            p.add(
                "raft.peers",
                "lists only witnesses, so no node can run PostgreSQL — add the data nodes",
            );
        }
        let mut ids = HashMap::new();
        let mut names = HashMap::new();
        let mut addresses = HashMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let at = format!("raft.peers[{i}]");
            if peer.id == 0 {
                p.add(
                    format!("{at}.id"),
                    "0 is not a Raft node id — use a whole number above 0",
                );
            } else if let Some(first) = earlier(&mut ids, peer.id, i) {
                p.add(
                    format!("{at}.id"),
                    format!(
                        "{} is already the id of raft.peers[{first}] — give every peer its own id",
                        peer.id
                    ),
                );
            }
            check_name(p, &format!("{at}.name"), &peer.name);
            if let Some(first) = earlier(&mut names, peer.name.as_str(), i) {
                p.add(format!("{at}.name"), format!("\"{}\" is already the name of raft.peers[{first}] — give every peer its own name", peer.name));
            }
            if let Some(problem) = host_port_problem(&peer.address, "127.0.0.1:7001") {
                p.add(format!("{at}.address"), problem);
            } else if let Some(first) =
                earlier(&mut addresses, peer.address.to_ascii_lowercase(), i)
            {
                p.add(format!("{at}.address"), format!("\"{}\" is already the address of raft.peers[{first}] — give every peer its own host:port", peer.address));
            }
        }
    }

    fn check_timing(&self, p: &mut Problems) {
        let fmt = duration::format;
        let (hb, min, max) = (
            self.heartbeat_interval,
            self.election_timeout_min,
            self.election_timeout_max,
        );
        if min >= max {
            p.add("raft.election_timeout_min", format!("{} must be less than raft.election_timeout_max {} — the election timeout is drawn between the two; lower it or raise the maximum", fmt(min), fmt(max)));
        }
        if hb.is_zero() {
            p.add(
                "raft.heartbeat_interval",
                "is 0 — set it to a positive duration, e.g. 100ms",
            );
        } else if hb >= min / 2 {
            p.add("raft.heartbeat_interval", format!("{} must be less than half of raft.election_timeout_min ({}), so that one lost heartbeat does not start an election — lower it below {}", fmt(hb), fmt(min), fmt(min / 2)));
        }
        if self.request_timeout < max {
            p.add("raft.request_timeout", format!("{} is shorter than raft.election_timeout_max {}, so requests would fail during every Raft election — raise it to at least {}", fmt(self.request_timeout), fmt(max), fmt(max)));
        }
        if self.snapshot_every == 0 {
            p.add(
                "raft.snapshot_every",
                format!(
                    "is 0 — set the number of log entries between snapshots, e.g. {}",
                    defaults::SNAPSHOT_EVERY
                ),
            );
        }
        if self.cache_capacity == 0 {
            p.add(
                "raft.cache_capacity",
                format!(
                    "is 0 — set sled's page cache size in bytes, e.g. {}",
                    defaults::CACHE_CAPACITY
                ),
            );
        }
    }
}

/// The index of the first peer that used `key`, when it was not peer `i`.
fn earlier<K: std::hash::Hash + Eq>(
    seen: &mut HashMap<K, usize>,
    key: K,
    i: usize,
) -> Option<usize> {
    let first = *seen.entry(key).or_insert(i);
    (first != i).then_some(first)
}
