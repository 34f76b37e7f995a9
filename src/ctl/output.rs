//! How `pgkeelctl` prints answers: aligned tables for people, JSON for tools.

use serde_json::json;

use super::Format;
use crate::pb::admin as pb;

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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
    match format {
        Format::Json => json!({
            "scope": r.scope,
            "cluster_id": r.cluster_id,
            "asked": {"id": r.node_id, "name": r.node_name, "state": r.state},
            "leader": leader.map(|id| json!({"id": id, "name": r.leader_name})),
            "term": r.term,
            "last_applied": r.last_applied,
            "last_log_index": r.last_log_index,
            "store_revision": r.store_revision,
            "voters": r.voters.iter().map(|v| json!({
                "id": v.id,
                "name": v.name,
                "address": v.address,
                "kind": if v.witness { "witness" } else { "data" },
                "reachable": v.reachable,
                "state": if v.reachable { Some(&v.state) } else { None },
                "last_log_index": if v.reachable { Some(v.last_log_index) } else { None },
                "leader": leader == Some(v.id),
                "error": if v.error.is_empty() { None } else { Some(&v.error) },
            })).collect::<Vec<_>>(),
        })
        .to_string(),
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
            let rows: Vec<Vec<String>> = r
                .voters
                .iter()
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

pub fn store_get(r: &pb::StoreGetReply, format: Format) -> String {
    match format {
        Format::Json => json!({
            "revision": r.revision,
            "kvs": r.kvs.iter().map(|kv| json!({
                "key": kv.key, "value": kv.value, "create_revision": kv.create_revision,
                "mod_revision": kv.mod_revision, "version": kv.version,
                "lease": if kv.lease == 0 { None } else { Some(kv.lease) },
            })).collect::<Vec<_>>(),
        })
        .to_string(),
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
        Format::Json => json!({ "revision": revision }).to_string(),
        Format::Table => format!("OK (revision {revision})"),
    }
}

pub fn list(r: &pb::ListMembersReply, format: Format) -> String {
    match format {
        Format::Json => json!({
            "scope": r.scope,
            "cluster_id": r.cluster_id,
            "leader": if r.leader.is_empty() { None } else { Some(&r.leader) },
            "members": r.members.iter().map(|m| json!({
                "name": m.name,
                "host": m.host,
                "role": m.role,
                "state": m.state,
                "timeline": if m.timeline == 0 { None } else { Some(m.timeline) },
                "lag": m.lag_bytes,
                "pending_restart": m.pending_restart,
                "tags": m.tags,
            })).collect::<Vec<_>>(),
        })
        .to_string(),
        Format::Table => {
            let rows: Vec<Vec<String>> = r
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        if m.host.is_empty() {
                            "-".into()
                        } else {
                            m.host.clone()
                        },
                        m.role.clone(),
                        m.state.clone(),
                        if m.timeline == 0 {
                            "-".into()
                        } else {
                            m.timeline.to_string()
                        },
                        m.lag_bytes
                            .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1_048_576.0)),
                        if m.pending_restart {
                            "*".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect();
            format!(
                "Cluster: {} ({})\n{}",
                r.scope,
                if r.cluster_id.is_empty() {
                    "not formed yet"
                } else {
                    &r.cluster_id
                },
                table(
                    &[
                        "Member",
                        "Host",
                        "Role",
                        "State",
                        "TL",
                        "Lag in MB",
                        "Pending restart"
                    ],
                    &rows
                )
            )
        }
    }
}
