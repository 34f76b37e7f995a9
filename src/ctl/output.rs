//! How `pgkeelctl` prints answers: aligned tables for people, JSON or YAML
//! for tools (the same document in either).

use serde_json::{json, Value};

use super::Format;
use crate::pb::admin as pb;

/// PostgreSQL's `X/Y` spelling of a WAL position (`postgres::lsn` is not
/// part of the witness-sized build this CLI also ships in).
fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A document as JSON (one line) or YAML.
pub(super) fn render(doc: Value, format: Format) -> String {
    match format {
        Format::Yaml => match serde_norway::to_string(&doc) {
            Ok(y) => y.trim_end().to_string(),
            // A JSON value always has a YAML form; keep the answer if not.
            Err(_) => doc.to_string(),
        },
        Format::Json | Format::Table => doc.to_string(),
    }
}

pub(super) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

pub fn raft_status(r: &pb::RaftStatusReply, format: Format) -> String {
    let leader = if r.leader_id == 0 {
        None
    } else {
        Some(r.leader_id)
    };
    let node_json = |v: &pb::Voter| {
        json!({
            "id": v.id,
            "name": v.name,
            "address": v.address,
            "kind": if v.witness { "witness" } else { "data" },
            "reachable": v.reachable,
            "state": if v.reachable { Some(&v.state) } else { None },
            "last_log_index": if v.reachable { Some(v.last_log_index) } else { None },
            "leader": leader == Some(v.id),
            "error": if v.error.is_empty() { None } else { Some(&v.error) },
        })
    };
    match format {
        Format::Json | Format::Yaml => render(
            json!({
                "scope": r.scope,
                "cluster_id": r.cluster_id,
                "asked": {"id": r.node_id, "name": r.node_name, "state": r.state},
                "leader": leader.map(|id| json!({"id": id, "name": r.leader_name})),
                "term": r.term,
                "last_applied": r.last_applied,
                "last_log_index": r.last_log_index,
                "store_revision": r.store_revision,
                "voters": r.voters.iter().map(node_json).collect::<Vec<_>>(),
                "learners": r.learners.iter().map(node_json).collect::<Vec<_>>(),
            }),
            format,
        ),
        Format::Table => {
            let head = format!(
                "scope {} (cluster {}), asked {} (id {}): {}, term {}, leader {}",
                r.scope,
                if r.cluster_id.is_empty() {
                    "not formed yet"
                } else {
                    &r.cluster_id
                },
                r.node_name,
                r.node_id,
                r.state,
                r.term,
                match leader {
                    Some(id) => format!("{} (id {id})", r.leader_name),
                    None => "none".to_string(),
                }
            );
            // Learners (nodes being added) follow the voters; their ROLE
            // column says `learner`.
            let rows: Vec<Vec<String>> = r
                .voters
                .iter()
                .chain(&r.learners)
                .map(|v| {
                    vec![
                        v.id.to_string(),
                        v.name.clone(),
                        v.address.clone(),
                        if v.witness { "witness" } else { "data" }.to_string(),
                        if leader == Some(v.id) {
                            "leader".into()
                        } else if v.reachable {
                            v.state.clone()
                        } else {
                            "-".into()
                        },
                        if v.reachable {
                            "yes".into()
                        } else {
                            format!("no: {}", v.error)
                        },
                        if v.reachable {
                            v.last_log_index.to_string()
                        } else {
                            "-".into()
                        },
                    ]
                })
                .collect();
            format!(
                "{head}\n{}",
                table(
                    &[
                        "ID",
                        "NAME",
                        "ADDRESS",
                        "KIND",
                        "ROLE",
                        "REACHABLE",
                        "LAST LOG"
                    ],
                    &rows
                )
            )
        }
    }
}

/// A switchover's or failover's answer.
pub fn switched(r: &pb::SwitchoverReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => render(
            json!({
                "operation_id": r.operation_id,
                "scheduled": r.scheduled,
                "new_primary": if r.new_primary.is_empty() { None } else { Some(&r.new_primary) },
                "message": r.message,
            }),
            format,
        ),
        Format::Table => format!("{} ({})", r.message, r.operation_id),
    }
}

/// `member add` / `member remove`: what was done, then the membership.
pub fn membership(r: &pb::MembershipReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => render(
            json!({
                "message": r.message,
                "voters": r.voters,
                "learners": r.learners,
            }),
            format,
        ),
        Format::Table => {
            let mut out = format!("{}\nvoters: {}", r.message, r.voters.join(", "));
            if !r.learners.is_empty() {
                out.push_str(&format!("\nlearners: {}", r.learners.join(", ")));
            }
            out
        }
    }
}

pub fn store_get(r: &pb::StoreGetReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => render(
            json!({
                "revision": r.revision,
                "kvs": r.kvs.iter().map(|kv| json!({
                    "key": kv.key, "value": kv.value, "create_revision": kv.create_revision,
                    "mod_revision": kv.mod_revision, "version": kv.version,
                    "lease": if kv.lease == 0 { None } else { Some(kv.lease) },
                })).collect::<Vec<_>>(),
            }),
            format,
        ),
        Format::Table => r
            .kvs
            .iter()
            .map(|kv| format!("{} = {}", kv.key, kv.value))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

pub fn revision(revision: u64, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => render(json!({ "revision": revision }), format),
        Format::Table => format!("OK (revision {revision})"),
    }
}

/// Name (after `prefix`), host, role, state and timeline: the first
/// columns of `list` and `topology`.
pub(super) fn member_cells(prefix: &str, m: &pb::MemberStatus) -> Vec<String> {
    let or_dash = |s: String| {
        if s.is_empty() || s == "0" {
            "-".into()
        } else {
            s
        }
    };
    vec![
        format!("{prefix}{}", m.name),
        or_dash(m.host.clone()),
        m.role.clone(),
        m.state.clone(),
        or_dash(m.timeline.to_string()),
    ]
}

pub fn list(r: &pb::ListMembersReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => render(
            json!({
                "scope": r.scope,
                "cluster_id": r.cluster_id,
                "leader": if r.leader.is_empty() { None } else { Some(&r.leader) },
                "paused": r.paused,
                "pending_switchover": if r.pending_switchover.is_empty() { None } else { Some(&r.pending_switchover) },
                "synchronous": if r.synchronous.is_empty() { None } else { Some(&r.synchronous) },
                "no_leader_reason": if r.no_leader_reason.is_empty() { None } else { Some(&r.no_leader_reason) },
                "promotion_blockers": r.promotion_blockers.iter()
                    .map(|b| (b.member.clone(), Value::from(b.reason.clone())))
                    .collect::<serde_json::Map<_, _>>(),
                "members": r.members.iter().map(|m| json!({
                    "name": m.name,
                    "host": m.host,
                    "role": m.role,
                    "state": m.state,
                    "timeline": if m.timeline == 0 { None } else { Some(m.timeline) },
                    "lag": m.lag_bytes,
                    "pending_restart": m.pending_restart,
                    "tags": member_tags(m),
                })).collect::<Vec<_>>(),
            }),
            format,
        ),
        Format::Table => {
            let with_tags = r.members.iter().any(|m| !m.tags.is_empty());
            let rows: Vec<Vec<String>> = r
                .members
                .iter()
                .map(|m| {
                    let mut cells = member_cells("", m);
                    cells.extend([
                        m.lag_bytes
                            .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0)),
                        if m.pending_restart {
                            "*".into()
                        } else {
                            String::new()
                        },
                    ]);
                    if with_tags {
                        cells.push(tags_cell(m));
                    }
                    cells
                })
                .collect();
            let mut header = vec![
                "Member",
                "Host",
                "Role",
                "State",
                "TL",
                "Lag in MB",
                "Pending restart",
            ];
            if with_tags {
                header.push("Tags");
            }
            let mut notes = String::new();
            if !r.no_leader_reason.is_empty() {
                notes.push_str(&format!("\n No leader: {}", r.no_leader_reason));
            }
            if r.paused {
                notes.push_str("\n Maintenance mode: on");
            }
            if !r.pending_switchover.is_empty() {
                notes.push_str(&format!("\n Pending: {}", r.pending_switchover));
            }
            if !r.synchronous.is_empty() {
                notes.push_str(&format!("\n {}", r.synchronous));
            }
            format!(
                "Cluster: {} ({})\n{}{notes}",
                r.scope,
                if r.cluster_id.is_empty() {
                    "not formed yet"
                } else {
                    &r.cluster_id
                },
                table(&header, &rows)
            )
        }
    }
}

/// A member's tags, typed as its key has them (`tags_json`); from the
/// string map when the answer lacks that (an older node).
fn member_tags(m: &pb::MemberStatus) -> Value {
    serde_json::from_str::<serde_json::Map<String, Value>>(&m.tags_json)
        .map(Value::Object)
        .unwrap_or_else(|_| json!(m.tags))
}

/// The Tags cell of `list`: the tags as one compact JSON object, empty
/// for an untagged member.
fn tags_cell(m: &pb::MemberStatus) -> String {
    match member_tags(m) {
        Value::Object(o) if o.is_empty() => String::new(),
        tags => tags.to_string(),
    }
}

/// `show-config`: the stored JSON document as YAML (the default) or JSON.
pub fn show_config(r: &pb::ShowConfigReply, format: Format) -> Result<String, String> {
    let doc: Value = serde_json::from_str(&r.json).map_err(|e| {
        format!("the store's config key is not JSON ({e}); rewrite it with PATCH /config on a node's REST API")
    })?;
    Ok(match format {
        Format::Json => doc.to_string(),
        Format::Table | Format::Yaml => render(doc, Format::Yaml),
    })
}

pub fn history(r: &pb::HistoryReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => render(
            Value::Array(
                r.entries
                    .iter()
                    .map(|h| {
                        json!({
                            "timeline": h.timeline,
                            "lsn": format_lsn(h.lsn),
                            "lsn_bytes": h.lsn,
                            "reason": h.reason,
                            "time": h.time,
                            "new_leader": h.new_leader,
                        })
                    })
                    .collect(),
            ),
            format,
        ),
        Format::Table => {
            let rows: Vec<Vec<String>> = r
                .entries
                .iter()
                .map(|h| {
                    vec![
                        h.timeline.to_string(),
                        format_lsn(h.lsn),
                        h.reason.clone(),
                        h.time.clone(),
                        h.new_leader.clone(),
                    ]
                })
                .collect();
            table(&["TL", "LSN", "Reason", "Timestamp", "New Leader"], &rows)
        }
    }
}

pub fn dsn(r: &pb::DsnReply, format: Format) -> String {
    match format {
        Format::Json | Format::Yaml => {
            render(json!({ "dsn": r.dsn, "members": r.members }), format)
        }
        Format::Table => r.dsn.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_table_spells_lsns_as_postgres_does() {
        let r = pb::HistoryReply {
            entries: vec![
                pb::HistoryEntry {
                    timeline: 1,
                    lsn: 0x0300_0060,
                    reason: "failover".into(),
                    time: "2026-11-22T07:00:00Z".into(),
                    new_leader: "node2".into(),
                },
                pb::HistoryEntry {
                    timeline: 2,
                    lsn: (1 << 32) | 0xA8,
                    reason: "switchover".into(),
                    time: "2026-11-22T07:05:00Z".into(),
                    new_leader: "node1".into(),
                },
            ],
        };
        assert_eq!(
            history(&r, Format::Table),
            "TL  LSN        Reason      Timestamp             New Leader\n\
             1   0/3000060  failover    2026-11-22T07:00:00Z  node2\n\
             2   1/A8       switchover  2026-11-22T07:05:00Z  node1"
        );
        let doc: Value = serde_json::from_str(&history(&r, Format::Json)).unwrap();
        assert_eq!(doc[1]["lsn"], "1/A8");
        assert_eq!(doc[1]["lsn_bytes"], (1u64 << 32) | 0xA8);
        assert_eq!(doc[0]["new_leader"], "node2");
        assert_eq!(
            history(&pb::HistoryReply::default(), Format::Table),
            "TL  LSN  Reason  Timestamp  New Leader"
        );
    }

    #[test]
    fn raft_status_lists_learners_after_the_voters() {
        let node = |id: u64, name: &str, state: &str| pb::Voter {
            id,
            name: name.into(),
            address: format!("127.0.0.1:700{id}"),
            reachable: true,
            last_log_index: 40 + id,
            state: state.into(),
            ..Default::default()
        };
        let r = pb::RaftStatusReply {
            scope: "demo".into(),
            cluster_id: "c-1".into(),
            node_id: 1,
            node_name: "node1".into(),
            leader_id: 1,
            leader_name: "node1".into(),
            term: 3,
            state: "leader".into(),
            voters: vec![node(1, "node1", "leader"), node(2, "node2", "follower")],
            learners: vec![node(4, "node3", "learner")],
            ..Default::default()
        };
        let table = raft_status(&r, Format::Table);
        let last = table.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("4   node3") && last.contains("learner"),
            "{table}"
        );
        let doc: Value = serde_json::from_str(&raft_status(&r, Format::Json)).unwrap();
        assert_eq!(doc["voters"].as_array().map(Vec::len), Some(2));
        assert_eq!(doc["learners"][0]["name"], "node3");
        assert_eq!(doc["learners"][0]["state"], "learner");
        let reply = pb::MembershipReply {
            message: "node3@127.0.0.1:7004 (data) is a voter (id 4)".into(),
            voters: vec!["node1".into(), "node2".into(), "node3".into()],
            learners: vec![],
        };
        assert_eq!(
            membership(&reply, Format::Table),
            "node3@127.0.0.1:7004 (data) is a voter (id 4)\nvoters: node1, node2, node3"
        );
    }

    #[test]
    fn show_config_is_yaml_by_default_and_json_on_request() {
        let r = pb::ShowConfigReply {
            json: r#"{"ttl":30,"postgresql":{"parameters":{"max_connections":100}}}"#.into(),
            mod_revision: 7,
        };
        let yaml = show_config(&r, Format::Table).unwrap();
        assert_eq!(
            yaml,
            // Keys sorted, as `patronictl show-config` prints them.
            "postgresql:\n  parameters:\n    max_connections: 100\nttl: 30"
        );
        assert_eq!(show_config(&r, Format::Yaml).unwrap(), yaml);
        let back: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(&r.json).unwrap());
        let json: Value = serde_json::from_str(&show_config(&r, Format::Json).unwrap()).unwrap();
        assert_eq!(json["postgresql"]["parameters"]["max_connections"], 100);
        let bad = pb::ShowConfigReply {
            json: "ttl: 30".into(),
            mod_revision: 1,
        };
        assert!(show_config(&bad, Format::Table)
            .unwrap_err()
            .contains("config key is not JSON"));
    }

    #[test]
    fn list_as_yaml_holds_what_json_holds() {
        let r = pb::ListMembersReply {
            scope: "demo".into(),
            cluster_id: "c1".into(),
            leader: "node1".into(),
            members: vec![
                pb::MemberStatus {
                    name: "node1".into(),
                    host: "[::1]:5433".into(),
                    role: "leader".into(),
                    state: "running".into(),
                    timeline: 2,
                    lag_bytes: Some(0),
                    ..Default::default()
                },
                pb::MemberStatus {
                    name: "witness1".into(),
                    role: "witness".into(),
                    state: "running".into(),
                    ..Default::default()
                },
            ],
            paused: true,
            pending_switchover: "switchover s-1 from node1 to node2".into(),
            ..Default::default()
        };
        let table = list(&r, Format::Table);
        assert!(
            table
                .ends_with("\n Maintenance mode: on\n Pending: switchover s-1 from node1 to node2"),
            "{table}"
        );
        let yaml = list(&r, Format::Yaml);
        assert!(yaml.starts_with("cluster_id: c1\n"), "{yaml}");
        assert!(yaml.contains("host: '[::1]:5433'"), "{yaml}");
        let from_yaml: Value = serde_norway::from_str(&yaml).unwrap();
        let from_json: Value = serde_json::from_str(&list(&r, Format::Json)).unwrap();
        assert_eq!(from_yaml, from_json);
        assert_eq!(from_yaml["members"][1]["timeline"], Value::Null);
    }

    #[test]
    fn list_shows_tags_typed_and_why_nobody_leads() {
        let tagged = pb::MemberStatus {
            name: "node2".into(),
            role: "replica".into(),
            state: "running".into(),
            tags: [("nofailover".to_string(), "true".to_string())].into(),
            tags_json: r#"{"nofailover":true,"zone":"eu-1","weight":3}"#.into(),
            ..Default::default()
        };
        let untagged = pb::MemberStatus {
            name: "node3".into(),
            role: "replica".into(),
            state: "stopped".into(),
            ..Default::default()
        };
        let r = pb::ListMembersReply {
            scope: "demo".into(),
            members: vec![tagged, untagged],
            no_leader_reason: "no member may be promoted — node2: tagged nofailover".into(),
            promotion_blockers: vec![pb::PromotionBlocker {
                member: "node2".into(),
                reason: "tagged nofailover".into(),
            }],
            ..Default::default()
        };
        let table = list(&r, Format::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].ends_with("  Tags"), "{table}");
        assert!(
            lines[2].ends_with(r#"  {"nofailover":true,"weight":3,"zone":"eu-1"}"#),
            "{table}"
        );
        assert!(!lines[3].contains('{'), "{table}");
        assert_eq!(
            lines[4],
            " No leader: no member may be promoted — node2: tagged nofailover"
        );
        let doc: Value = serde_json::from_str(&list(&r, Format::Json)).unwrap();
        assert_eq!(doc["members"][0]["tags"]["weight"], 3);
        assert_eq!(doc["members"][0]["tags"]["nofailover"], true);
        assert_eq!(doc["members"][1]["tags"], json!({}));
        assert_eq!(doc["promotion_blockers"]["node2"], "tagged nofailover");
        assert!(doc["no_leader_reason"]
            .as_str()
            .unwrap()
            .contains("node2: tagged nofailover"));
        // Without any tag, no Tags column.
        let plain = pb::ListMembersReply {
            members: vec![r.members[1].clone()],
            ..Default::default()
        };
        assert!(!list(&plain, Format::Table).contains("Tags"));
    }

    #[test]
    fn dsn_prints_the_bare_uri_for_people() {
        let r = pb::DsnReply {
            dsn: "postgresql://a:1,b:2/postgres?target_session_attrs=any".into(),
            members: vec!["a".into(), "b".into()],
        };
        assert_eq!(dsn(&r, Format::Table), r.dsn);
        let doc: Value = serde_json::from_str(&dsn(&r, Format::Json)).unwrap();
        assert_eq!(doc["members"], json!(["a", "b"]));
    }
}
