//! Domain types → protobuf messages of the admin service.

use crate::consensus::types::KeyValue;
use crate::pb::admin as pb;
use crate::store::keys::{HistoryRecord, MemberRecord};
use crate::store::VoterProbe;

pub fn key_value(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease.unwrap_or(0),
    }
}

pub fn voter(p: VoterProbe) -> pb::Voter {
    let (reachable, last_log_index, state, error) = match p.answer {
        Ok(h) => (true, h.last_log_index, h.state, String::new()),
        Err(e) => (false, 0, String::new(), e),
    };
    pb::Voter {
        id: p.id,
        name: p.member.name,
        address: p.member.addr,
        witness: p.member.witness,
        reachable,
        last_log_index,
        state,
        error,
    }
}

/// Builds the `list` answer from the store's member records, the leader
/// key and the Raft voters (the witness has no member record).
pub fn members(
    leader: Option<&str>,
    records: &[MemberRecord],
    voters: &[VoterProbe],
) -> Vec<pb::MemberStatus> {
    let leader_lsn = leader
        .and_then(|l| records.iter().find(|r| r.name == l))
        .and_then(|r| r.xlog_location);
    let mut out: Vec<pb::MemberStatus> = records
        .iter()
        .map(|r| {
            let is_leader = leader == Some(r.name.as_str());
            let position = r.position();
            let lag_bytes = if is_leader {
                Some(0)
            } else {
                leader_lsn.zip(position).map(|(l, p)| l.saturating_sub(p))
            };
            pb::MemberStatus {
                name: r.name.clone(),
                host: r.pg_address().to_string(),
                role: if is_leader {
                    "leader".into()
                } else {
                    r.role.clone()
                },
                state: r.state.clone(),
                timeline: r.timeline.unwrap_or(0),
                lag_bytes,
                pending_restart: r.pending_restart,
                tags: r
                    .tags
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_string),
                        )
                    })
                    .collect(),
                tags_json: if r.tags.is_empty() {
                    String::new()
                } else {
                    serde_json::to_string(&r.tags).unwrap_or_default()
                },
            }
        })
        .collect();
    for v in voters {
        if out.iter().any(|m| m.name == v.member.name) {
            continue;
        }
        let (role, state) = if v.member.witness {
            (
                "witness",
                if v.answer.is_ok() {
                    "running"
                } else {
                    "unreachable"
                },
            )
        } else {
            (
                "replica",
                if v.answer.is_ok() {
                    "no status"
                } else {
                    "unreachable"
                },
            )
        };
        out.push(pb::MemberStatus {
            name: v.member.name.clone(),
            role: role.into(),
            state: state.into(),
            ..Default::default()
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub fn history_entry(r: HistoryRecord) -> pb::HistoryEntry {
    pb::HistoryEntry {
        timeline: r.timeline,
        lsn: r.lsn,
        reason: r.reason,
        time: r.time,
        new_leader: r.new_leader,
    }
}
