//! `/patroni`, `/cluster`, `/history`, `GET /config` and `/metrics`.

use axum::http::StatusCode;

use super::*;
use crate::store::keys::{self, HistoryRecord, MemberRecord};

fn member(name: &str, role: &str, state: &str, xlog: Option<u64>, received: Option<u64>) -> String {
    keys::encode(&MemberRecord {
        name: name.into(),
        role: role.into(),
        state: state.into(),
        conn_url: format!(
            "postgres://127.0.0.1:{}",
            if name == "node1" { 5433 } else { 5434 }
        ),
        api_url: Some(format!(
            "http://127.0.0.1:{}",
            if name == "node1" { 8008 } else { 8009 }
        )),
        xlog_location: xlog,
        received_location: received,
        replayed_location: received,
        timeline: Some(2),
        tags: [("nofailover".to_string(), serde_json::Value::Bool(false))].into(),
        ..Default::default()
    })
}

fn cluster_store() -> FakeSource {
    let n1 = member("node1", "primary", "running", Some(5000), None);
    let n2 = member("node2", "replica", "streaming", None, Some(4000));
    FakeSource::with(&[
        ("leader", "node1"),
        ("members/node1", &n1),
        ("members/node2", &n2),
        ("status", r#"{"optime":5000,"timeline":2}"#),
        ("config", r#"{"ttl":"5s","loop_wait":"1s"}"#),
    ])
}

#[tokio::test]
async fn cluster_lists_members_with_lag_and_the_witness_from_raft() {
    let h = harness_with(
        primary(),
        BTreeMap::new(),
        cluster_store(),
        Credentials::default(),
        NOW,
    );
    let (code, body) = get(&h.app, "/cluster").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["scope"], "demo");
    let members = v["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node1", "node2", "witness1"]);
    assert_eq!(members[0]["role"], "leader");
    assert_eq!(members[0]["host"], "127.0.0.1");
    assert_eq!(members[0]["port"], 5433);
    assert_eq!(members[0]["lag"], 0);
    assert_eq!(members[0]["api_url"], "http://127.0.0.1:8008");
    assert_eq!(members[1]["role"], "replica");
    assert_eq!(members[1]["state"], "streaming");
    assert_eq!(members[1]["lag"], 1000);
    assert_eq!(members[1]["replay_lsn"], "0/FA0");
    assert_eq!(members[1]["timeline"], 2);
    assert_eq!(members[1]["raft"]["reachable"], true);
    assert_eq!(members[2]["role"], "witness");
    assert_eq!(members[2]["state"], "running");
    assert_eq!(members[2]["raft"]["witness"], true);
    assert_eq!(v["raft"]["term"], 4);
    assert_eq!(v["raft"]["leader"], "node1");

    let mut cut_off = cluster_store();
    cut_off.witness_reachable = false;
    let h = harness_with(
        primary(),
        BTreeMap::new(),
        cut_off,
        Credentials::default(),
        NOW,
    );
    let (_, body) = get(&h.app, "/cluster").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let witness = &v["members"][2];
    assert_eq!(witness["state"], "unreachable");
    assert_eq!(witness["raft"]["reachable"], false);
    assert_eq!(witness["raft"]["error"], "connection refused");
}

#[tokio::test]
async fn cluster_says_why_nobody_leads_and_shows_free_form_tags() {
    let mut rec: MemberRecord =
        serde_json::from_str(&member("node2", "replica", "running", None, Some(5000))).unwrap();
    rec.tags = serde_json::from_str(r#"{"nofailover":true,"zone":"eu-1","weight":3}"#).unwrap();
    let n2 = keys::encode(&rec);
    let store = |config: &str| {
        FakeSource::with(&[
            ("initialize", r#"{"owner":"node1","sysid":"7301"}"#),
            ("members/node2", &n2),
            ("status", r#"{"optime":5000,"timeline":2}"#),
            ("config", config),
        ])
    };
    let v = cluster_doc(store(r#"{"ttl":"5s","loop_wait":"1s"}"#)).await;
    assert_eq!(
        v["no_leader_reason"],
        "no member may be promoted — node2: tagged nofailover"
    );
    assert_eq!(
        v["promotion_blockers"],
        serde_json::json!({"node2": "tagged nofailover"})
    );
    let node2 = v["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "node2")
        .unwrap();
    assert_eq!(
        node2["tags"],
        serde_json::json!({"nofailover": true, "zone": "eu-1", "weight": 3})
    );
    assert!(v.get("pause").is_none(), "{v}");

    // Maintenance mode shows, as in Patroni.
    let v = cluster_doc(store(r#"{"ttl":"5s","loop_wait":"1s","pause":true}"#)).await;
    assert_eq!(v["pause"], true, "{v}");

    // With a leader: nothing to explain.
    let v = cluster_doc(cluster_store()).await;
    assert!(v.get("no_leader_reason").is_none(), "{v}");
    assert!(v.get("promotion_blockers").is_none(), "{v}");
}

/// `/cluster` of a replica's REST API over `store`.
async fn cluster_doc(store: FakeSource) -> serde_json::Value {
    let h = harness_with(
        replica(5000, 5000),
        BTreeMap::new(),
        store,
        Credentials::default(),
        NOW,
    );
    let (code, body) = get(&h.app, "/cluster").await;
    assert_eq!(code, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn history_is_empty_until_written_then_patroni_rows() {
    let h = harness(primary());
    assert_eq!(
        get(&h.app, "/history").await,
        (StatusCode::OK, "[]".to_string())
    );
    let rec = HistoryRecord {
        timeline: 1,
        lsn: 25623960,
        reason: "failover".into(),
        time: "2025-01-02T03:04:05+00:00".into(),
        new_leader: "node2".into(),
    };
    h.source.set(keys::HISTORY, &keys::encode(&vec![rec]));
    let (_, body) = get(&h.app, "/history").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!([[
            1,
            25623960,
            "failover",
            "2025-01-02T03:04:05+00:00",
            "node2"
        ]])
    );
}

#[tokio::test]
async fn config_shows_the_stored_dynamic_config_or_502() {
    let h = harness(primary());
    assert_eq!(get(&h.app, "/config").await.0, StatusCode::BAD_GATEWAY);
    h.source.set(
        "config",
        r#"{"ttl":"5s","maximum_lag_on_failover":1048576}"#,
    );
    let (code, body) = get(&h.app, "/config").await;
    assert_eq!(code, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["maximum_lag_on_failover"], 1048576);
}

#[tokio::test]
async fn patroni_marks_an_unlocked_cluster() {
    let mut s = replica(0x1000, 0x1000);
    if let Some(v) = s.view.as_mut() {
        v.leader = None;
    }
    let (_, body) = get(&harness(s).app, "/patroni").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cluster_unlocked"], true);
    assert_eq!(v["database_system_identifier"], "7301");
}

#[tokio::test]
async fn metrics_carry_patroni_and_pgkeel_names_and_pass_promtool() {
    let mut s = primary();
    s.failovers = 2;
    s.last_failover = Some(crate::status::FailoverPhases {
        vacant_at: NOW - Duration::from_millis(900),
        acquired_at: Some(NOW - Duration::from_millis(800)),
        promoted_at: Some(NOW - Duration::from_millis(300)),
        writable_at: Some(NOW - Duration::from_millis(200)),
    });
    let h = harness(s);
    let (code, text) = get(&h.app, "/metrics").await;
    assert_eq!(code, StatusCode::OK);
    for line in [
        "patroni_primary{scope=\"demo\",name=\"node1\"} 1",
        "patroni_replica{scope=\"demo\",name=\"node1\"} 0",
        "patroni_postgres_timeline{scope=\"demo\",name=\"node1\"} 2",
        "patroni_xlog_location{scope=\"demo\",name=\"node1\"} 50331648",
        "patroni_postgres_server_version{scope=\"demo\",name=\"node1\"} 150004",
        "pgkeel_lease_remaining_seconds{scope=\"demo\",name=\"node1\"} 3.0",
        "pgkeel_ha_state{scope=\"demo\",name=\"node1\",state=\"primary\"} 1",
        "pgkeel_failovers_total{scope=\"demo\",name=\"node1\"} 2",
        "pgkeel_switchovers_total{scope=\"demo\",name=\"node1\"} 0",
        "pgkeel_last_failover_phase_seconds{scope=\"demo\",name=\"node1\",phase=\"acquired_to_promoted\"} 0.5",
        "pgkeel_member_lag_bytes{scope=\"demo\",name=\"node1\",member=\"node2\"} 0",
        "pgkeel_raft_term{scope=\"demo\",name=\"node1\"} 4",
        "pgkeel_raft_voter_reachable{scope=\"demo\",name=\"node1\",voter=\"witness1\",witness=\"true\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(
        !text.contains("# EOF"),
        "classic text format without an Accept header"
    );
    assert!(
        text.contains("# TYPE pgkeel_failovers_total counter"),
        "{text}"
    );
    promtool_check(&text);
    // Prometheus asks for OpenMetrics and gets it, counters as OpenMetrics
    // names them.
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let om = String::from_utf8_lossy(&bytes);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE pgkeel_failovers counter"), "{om}");
}

/// `promtool check metrics` on `text`, or a loud SKIP without promtool.
fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIP promtool check: promtool is not installed (Debian package prometheus)");
        return;
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}
