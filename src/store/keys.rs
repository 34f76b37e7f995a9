//! The store's key layout and the JSON records kept under each key: the
//! contract between the HA loop that writes them and everything that reads
//! them (`pgkeelctl list`, the REST API, other members).
//!
//! Every record is JSON with `#[serde(default)]` on each field, so a member
//! running the next release can add fields that this one ignores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Lease-bound: the member name of the current primary.
pub const LEADER: &str = "leader";
/// Lease-bound, one per member: `members/<name>` → [`MemberRecord`].
pub const MEMBERS: &str = "members/";
/// Not lease-bound: the last primary's last known WAL position and timeline.
pub const STATUS: &str = "status";
/// The dynamic cluster configuration.
pub const CONFIG: &str = "config";
/// Who may be promoted in synchronous mode.
pub const SYNC: &str = "sync";
/// Timeline switches.
pub const HISTORY: &str = "history";
/// Bootstrap owner and the PostgreSQL system identifier.
pub const INITIALIZE: &str = "initialize";
/// A pending switchover / failover request.
pub const FAILOVER: &str = "failover";

/// The key of a member's record.
pub fn member_key(name: &str) -> String {
    format!("{MEMBERS}{name}")
}

/// What a data member publishes about itself, under its own lease.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberRecord {
    pub name: String,
    /// `primary` or `replica` (Patroni's `role` values).
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `stopping`, ...
    pub state: String,
    /// `postgres://host:port` clients and replicas use.
    pub conn_url: String,
    /// The REST API base URL, once there is one.
    pub api_url: Option<String>,
    /// On a primary: its current WAL position.
    pub xlog_location: Option<u64>,
    /// On a replica: last WAL position received / replayed.
    pub received_location: Option<u64>,
    pub replayed_location: Option<u64>,
    pub timeline: Option<u32>,
    pub server_version: Option<u32>,
    pub pending_restart: bool,
    /// The settings a standby must hold at least as high as its primary
    /// (`max_connections`, ...), as the member's server runs them: other
    /// members read them to order restarts.
    pub must_match: BTreeMap<String, i64>,
    pub tags: BTreeMap<String, serde_json::Value>,
}

impl MemberRecord {
    /// `host:port` of the member's PostgreSQL, from `conn_url`.
    pub fn pg_address(&self) -> &str {
        self.conn_url
            .trim_start_matches("postgres://")
            .trim_end_matches('/')
    }

    /// The furthest WAL position it published: received, else replayed
    /// (a standby), else its write position (a primary).
    pub fn position(&self) -> Option<u64> {
        self.received_location
            .or(self.replayed_location)
            .or(self.xlog_location)
    }
}

/// The value of [`STATUS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusRecord {
    /// The last primary's last known WAL position.
    pub optime: u64,
    pub timeline: u32,
}

/// The value of [`INITIALIZE`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitializeRecord {
    /// The member that won the right to run initdb.
    pub owner: String,
    /// PostgreSQL's system identifier once initdb ran.
    pub sysid: Option<String>,
}

/// One timeline switch. The value of [`HISTORY`] is a JSON array of these,
/// oldest first; the HA layer appends one after each promotion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryRecord {
    /// The timeline that ended (as in PostgreSQL's `.history` files).
    pub timeline: u32,
    /// The WAL position where the new timeline forked off.
    pub lsn: u64,
    /// Why: `failover`, `switchover`, or PostgreSQL's own wording.
    pub reason: String,
    /// When the new timeline began, RFC 3339 (wall clock, for people only).
    pub time: String,
    /// The member promoted onto the new timeline.
    pub new_leader: String,
}

/// Decodes a record; a malformed value from the store is an error string,
/// never a panic.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, value: &str) -> Result<T, String> {
    serde_json::from_str(value)
        .map_err(|e| format!("the store value of {key} is not readable: {e}"))
}

/// Encodes a record as the store value.
pub fn encode<T: Serialize>(record: &T) -> String {
    // Serializing plain structs of strings, numbers and maps cannot fail.
    serde_json::to_string(record).unwrap_or_else(|_| "{}".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tolerate_unknown_and_missing_fields() {
        let m = MemberRecord {
            name: "node1".into(),
            role: "replica".into(),
            received_location: Some(42),
            ..Default::default()
        };
        let back: MemberRecord = decode("members/node1", &encode(&m)).unwrap();
        assert_eq!(back, m);
        let with_url = MemberRecord {
            conn_url: "postgres://127.0.0.1:5433/".into(),
            ..m
        };
        assert_eq!(with_url.pg_address(), "127.0.0.1:5433");
        let newer = r#"{"name":"n","role":"primary","added_later":[1,2]}"#;
        let r: MemberRecord = decode("members/n", newer).unwrap();
        assert_eq!(r.role, "primary");
        assert!(decode::<StatusRecord>("status", "not json")
            .unwrap_err()
            .contains("status"));
    }
}
