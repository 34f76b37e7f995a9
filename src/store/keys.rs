//! The store's key layout and the JSON records kept under each key: the
//! contract between the HA loop that writes them and everything that reads
//! them (`pgkeelctl list`, the REST API, other members).
//!
//! Every record is JSON with `#[serde(default)]` on each field, so a member
//! running the next release can add fields that this one ignores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consensus::types::{Expect, LeaseId, Op};

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
/// Not lease-bound, one per member: `operations/<name>` →
/// [`OperationRecord`], the restart / reload / reinitialize asked of it.
pub const OPERATIONS: &str = "operations/";

/// The key of a member's record.
pub fn member_key(name: &str) -> String {
    format!("{MEMBERS}{name}")
}

/// The key of the operation asked of a member.
pub fn operation_key(name: &str) -> String {
    format!("{OPERATIONS}{name}")
}

/// An operation id, unique without coordination: the member it is for,
/// the wall clock in nanoseconds, this process's id and a random part
/// (two admin calls on two nodes in the same nanosecond still differ).
pub fn new_operation_id(member: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let salt: u32 = rand::random();
    format!("{member}-{nanos:x}-{:x}-{salt:08x}", std::process::id())
}

/// What an operation is.
pub mod op_kind {
    pub const RESTART: &str = "restart";
    pub const RELOAD: &str = "reload";
    pub const REINITIALIZE: &str = "reinitialize";
}

/// Where an operation (or a switchover in the `failover` key) stands.
pub mod op_state {
    /// Written by the admin call; the member has not started it.
    pub const PENDING: &str = "pending";
    /// The member has started it.
    pub const RUNNING: &str = "running";
    /// Finished (including "nothing to do", said in `message`).
    pub const DONE: &str = "done";
    /// Refused or failed; `message` says why.
    pub const FAILED: &str = "failed";

    /// Whether nothing more will happen to it.
    pub fn is_terminal(state: &str) -> bool {
        state == DONE || state == FAILED
    }
}

/// The value of `operations/<member>`: at most one operation per member.
/// Written by the admin service (compare-and-set), carried out by the
/// member's HA loop, which reports progress in `state` and `message`
/// (compare-and-set on the same `id`, so a replaced request is never
/// reported on). Kept after it ends, until the member's next operation,
/// so `pgkeelctl watch ID` can still tell how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OperationRecord {
    /// See [`new_operation_id`].
    pub id: String,
    /// The member it is for (the key names it too).
    pub member: String,
    /// [`op_kind`]: `restart`, `reload` or `reinitialize`.
    pub kind: String,
    /// Restart only if PostgreSQL reports `pending_restart`.
    pub pending_only: bool,
    /// Restart only if the member's role is this (`primary`, `replica`);
    /// empty: any.
    pub role: String,
    /// Reinitialize: asked with `--force`.
    pub force: bool,
    /// RFC 3339: not before then (by the member's wall clock).
    pub scheduled_at: Option<String>,
    /// RFC 3339, when the admin call wrote it (for people).
    pub requested_at: String,
    /// [`op_state`].
    pub state: String,
    /// Progress or outcome, one sentence.
    pub message: String,
    /// Failed because the member refused it before acting (a
    /// precondition, such as "this member is the primary").
    pub refused: bool,
}

/// The fields every long operation's record shares, the `failover` key's
/// switchover request included: what `Watch` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ProgressFields {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub message: String,
    pub scheduled_at: Option<String>,
}

/// Parses an RFC 3339 time (`2026-11-22T10:00:00Z`, fractions and
/// `+hh:mm` / `-hh:mm` offsets allowed). `Err` is a sentence naming it.
pub fn parse_time(text: &str) -> Result<std::time::SystemTime, String> {
    let bad = || {
        format!(
            "{text:?} is not an RFC 3339 time; write it like 2026-11-22T10:00:00Z or 2026-11-22T11:00:00+01:00"
        )
    };
    let t = text.trim();
    // A trailing `+hh:mm` / `-hh:mm` (checked byte by byte: any input,
    // however odd, is an error, never a panic).
    let split = t.len().checked_sub(6).filter(|i| t.is_char_boundary(*i));
    let offset = split.and_then(|i| {
        let off = &t.as_bytes()[i..];
        let digit = |k: usize| off[k].is_ascii_digit();
        let shaped =
            matches!(off[0], b'+' | b'-') && off[3] == b':' && [1, 2, 4, 5].into_iter().all(digit);
        let num = |k: usize| i64::from(off[k] - b'0') * 10 + i64::from(off[k + 1] - b'0');
        let sign = if off[0] == b'-' { -1 } else { 1 };
        shaped.then(|| (i, sign * (num(1) * 3600 + num(4) * 60)))
    });
    let (base, offset_secs) = match offset {
        Some((i, secs)) => (format!("{}Z", &t[..i]), secs),
        None => (t.to_string(), 0),
    };
    let utc_as_written = humantime::parse_rfc3339(&base).map_err(|_| bad())?;
    let shift = std::time::Duration::from_secs(offset_secs.unsigned_abs());
    if offset_secs >= 0 {
        utc_as_written.checked_sub(shift)
    } else {
        utc_as_written.checked_add(shift)
    }
    .ok_or_else(bad)
}

/// A time as RFC 3339 UTC, to the second.
pub fn format_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
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
    /// Its HA loop runs in maintenance mode.
    pub pause: bool,
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

/// The value of [`FAILOVER`]: an operator's switchover or failover
/// request, and how it went. The HA loops act on it while `state` is
/// `pending` (and its `scheduled_at` has come); the new primary (or the
/// primary that refused it) writes the outcome, so `pgkeelctl` and the
/// Watch call can report it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailoverRecord {
    /// The operation id the admin call returned.
    pub id: String,
    /// `switchover` (the named leader hands over) or `failover` (to the
    /// named candidate, whoever leads).
    pub kind: String,
    /// Switchover: the member that must hold the leader key.
    pub leader: Option<String>,
    /// The member to promote; `None`: the best healthy replica.
    pub candidate: Option<String>,
    /// RFC 3339 wall-clock time it may start; `None`: at once.
    pub scheduled_at: Option<String>,
    /// RFC 3339, when it was asked for (for people).
    pub requested_at: String,
    /// [`op_state`]: `pending`, then `done` or `failed`.
    pub state: String,
    /// What happened, in one sentence.
    pub message: String,
}

impl FailoverRecord {
    /// Whether the HA loops still have to act on it.
    pub fn is_pending(&self) -> bool {
        self.state == op_state::PENDING
    }
}

/// The value of [`SYNC`], written only by the leader key's holder: who
/// holds every acknowledged commit, so who may be promoted in synchronous
/// mode (DESIGN.md, "Choosing the new primary"; docs/sync.md).
///
/// Meaning: every commit the primary acknowledged is on `leader` and on at
/// least `quorum` members of `sync_standby`. With `quorum` equal to the
/// set's size (synchronous_mode `on`), each member holds them all; with
/// `quorum` 0 nothing is promised and nobody is promoted automatically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncRecord {
    /// The primary that wrote it.
    pub leader: String,
    /// The synchronous set, by member name.
    pub sync_standby: Vec<String>,
    /// How many members of the set hold each acknowledged commit.
    pub quorum: u32,
}

/// The one way the `sync` key is written: `leader`'s record as a
/// compare-and-set on `base` (absent when `None`), guarded on the `leader`
/// key naming `leader` on `lease` ([`Op::PutGuarded`]), so a write sent
/// while leading cannot land after the lease ended.
pub fn sync_write(
    leader: &str,
    members: Vec<String>,
    quorum: u32,
    base: Option<u64>,
    lease: LeaseId,
) -> Op {
    let record = SyncRecord {
        leader: leader.to_string(),
        sync_standby: members,
        quorum,
    };
    Op::PutGuarded {
        key: SYNC.to_string(),
        value: encode(&record),
        expect: base.map_or(Expect::Absent, Expect::ModRevision),
        guard_key: LEADER.to_string(),
        guard_value: leader.to_string(),
        guard_lease: lease,
    }
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
    fn times_parse_with_offsets_and_bad_ones_are_named() {
        let z = parse_time("2026-11-22T10:00:00Z").unwrap();
        assert_eq!(parse_time("2026-11-22T11:30:00+01:30").unwrap(), z);
        assert_eq!(parse_time("2026-11-22T08:00:00-02:00").unwrap(), z);
        assert_eq!(format_time(z), "2026-11-22T10:00:00Z");
        assert!(parse_time("2026-11-22T10:00:00.250Z").unwrap() > z);
        let e = parse_time("tomorrow").unwrap_err();
        assert!(e.contains("\"tomorrow\" is not an RFC 3339 time"), "{e}");
        assert!(parse_time("2026-11-22T10:00:00+1:00").is_err());
    }

    #[test]
    fn operation_ids_differ_and_records_tolerate_missing_fields() {
        assert_ne!(new_operation_id("n1"), new_operation_id("n1"));
        assert!(new_operation_id("n1").starts_with("n1-"));
        let r: OperationRecord =
            decode("operations/n1", r#"{"id":"x","kind":"restart","later":1}"#).unwrap();
        assert_eq!((r.id.as_str(), r.state.as_str(), r.force), ("x", "", false));
        let f: ProgressFields = decode(
            "failover",
            r#"{"id":"s1","kind":"switchover","state":"pending","leader":"a","scheduled_at":"2026-11-22T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(f.scheduled_at.as_deref(), Some("2026-11-22T10:00:00Z"));
        assert!(op_state::is_terminal("failed") && !op_state::is_terminal("running"));
    }

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
