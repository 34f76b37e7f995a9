//! Health checks: each path, each role, the lease judged at request time,
//! lag thresholds, tag filters, HEAD/OPTIONS without a body.

use std::time::Duration;

use axum::http::StatusCode;

use super::*;

const OK: StatusCode = StatusCode::OK;
const DOWN: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

async fn codes(h: &Harness, paths: &[&str]) -> Vec<(String, StatusCode)> {
    let mut out = Vec::new();
    for p in paths {
        out.push((p.to_string(), get(&h.app, p).await.0));
    }
    out
}

fn expect(paths: &[&str], code: StatusCode) -> Vec<(String, StatusCode)> {
    paths.iter().map(|p| (p.to_string(), code)).collect()
}

const PRIMARY_PATHS: [&str; 5] = ["/", "/primary", "/read-write", "/master", "/leader"];
const REPLICA_PATHS: [&str; 3] = ["/replica", "/asynchronous", "/async"];

#[tokio::test]
async fn a_primary_with_a_valid_lease_passes_the_primary_checks_only() {
    let h = harness(primary());
    assert_eq!(codes(&h, &PRIMARY_PATHS).await, expect(&PRIMARY_PATHS, OK));
    assert_eq!(
        codes(&h, &REPLICA_PATHS).await,
        expect(&REPLICA_PATHS, DOWN)
    );
    let both = ["/read-only", "/health", "/liveness", "/readiness"];
    assert_eq!(codes(&h, &both).await, expect(&both, OK));
    let (_, body) = get(&h.app, "/primary").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "primary");
    assert_eq!(v["state"], "running");
    assert_eq!(v["xlog"]["location"], 0x300_0000);
    assert_eq!(v["timeline"], 2);
    assert_eq!(v["server_version"], 150004);
    assert_eq!(v["patroni"]["scope"], "demo");
    assert_eq!(v["patroni"]["name"], "node1");
    assert_eq!(v["pgkeel"]["lease_valid_for_ms"], 3000);
    assert_eq!(v["pgkeel"]["writable_primary"], true);
    assert!(v.get("cluster_unlocked").is_none(), "{v}");
}

#[tokio::test]
async fn a_primary_whose_lease_just_ran_out_is_not_primary() {
    // The snapshot still says "primary, holds the key": only the instant of
    // the request differs, so the handler must judge valid_until itself.
    let at_deadline = primary().lease_valid_until.unwrap();
    for now in [at_deadline, at_deadline + Duration::from_millis(1)] {
        let h = harness_with(
            primary(),
            BTreeMap::new(),
            FakeSource::with(&[]),
            Credentials::default(),
            now,
        );
        assert_eq!(
            codes(&h, &PRIMARY_PATHS).await,
            expect(&PRIMARY_PATHS, DOWN)
        );
        let (_, body) = get(&h.app, "/patroni").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pgkeel"]["lease_valid"], false);
        assert_eq!(v["pgkeel"]["lease_valid_for_ms"], 0);
    }
    // One millisecond earlier it still is.
    let h = harness_with(
        primary(),
        BTreeMap::new(),
        FakeSource::with(&[]),
        Credentials::default(),
        at_deadline - Duration::from_millis(1),
    );
    assert_eq!(get(&h.app, "/primary").await.0, OK);
}

#[tokio::test]
async fn a_fencing_or_stopping_primary_answers_503_at_once() {
    let fencing = NodeStatus {
        stepping_down: true,
        ..primary()
    };
    let h = harness(fencing);
    assert_eq!(
        codes(&h, &PRIMARY_PATHS).await,
        expect(&PRIMARY_PATHS, DOWN)
    );
    let stopping = NodeStatus {
        ha_state: "stopping",
        ..primary()
    };
    assert_eq!(get(&harness(stopping).app, "/primary").await.0, DOWN);
    // Holding the key while PostgreSQL is still a standby (mid-promotion):
    // /leader yes, /primary no.
    let mut promoting = primary();
    promoting.ha_state = "candidate";
    if let Some(pg) = promoting.pg.as_mut() {
        pg.in_recovery = Some(true);
    }
    let h = harness(promoting);
    assert_eq!(get(&h.app, "/leader").await.0, OK);
    assert_eq!(get(&h.app, "/primary").await.0, DOWN);
    // PostgreSQL read-write without the key: never primary.
    let no_key = NodeStatus {
        holds_leader_key: false,
        ..primary()
    };
    assert_eq!(get(&harness(no_key).app, "/primary").await.0, DOWN);
}

#[tokio::test]
async fn a_streaming_replica_passes_the_replica_checks_within_lag() {
    // 2048 bytes behind the last known primary position.
    let h = harness(replica(0x10_0800, 0x10_0000));
    assert_eq!(
        codes(&h, &PRIMARY_PATHS).await,
        expect(&PRIMARY_PATHS, DOWN)
    );
    let ok = [
        "/replica",
        "/async",
        "/asynchronous",
        "/read-only",
        "/health",
        "/liveness",
        "/readiness",
    ];
    assert_eq!(codes(&h, &ok).await, expect(&ok, OK));
    let cases = [
        ("/replica?lag=2048", OK),
        ("/replica?lag=2047", DOWN),
        ("/replica?lag=1kB", DOWN),
        ("/replica?lag=16kB", OK),
        ("/replica?lag=64MB", OK),
        ("/replica?lag=1GB", OK),
        ("/async?lag=1024", DOWN),
        ("/asynchronous?lag=1MB", OK),
        ("/read-only?lag=1024", DOWN),
        ("/readiness?lag=1024", DOWN),
        ("/readiness?lag=4kB", OK),
        ("/replica?replication_state=streaming", OK),
        ("/replica?replication_state=catchup", DOWN),
    ];
    for (uri, want) in cases {
        assert_eq!(get(&h.app, uri).await.0, want, "{uri}");
    }
    let (_, body) = get(&h.app, "/replica").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["role"], "replica");
    assert_eq!(v["replication_state"], "streaming");
    assert_eq!(v["xlog"]["replayed_location"], 0x10_0000);
}

#[tokio::test]
async fn lag_is_measured_against_the_leaders_newer_position() {
    // The status key says 0x1000 but the leader published 0x9000.
    let mut s = replica(0x1000, 0x1000);
    if let Some(v) = s.view.as_mut() {
        v.leader = Some(LeaderKey {
            holder: "node1".into(),
            lease: 7,
            mod_revision: 5,
        });
        v.members.get_mut("node1").unwrap().wal_lsn = Some(Lsn(0x9000));
    }
    let h = harness(s);
    assert_eq!(get(&h.app, "/replica?lag=32kB").await.0, OK);
    assert_eq!(get(&h.app, "/replica?lag=16kB").await.0, DOWN);
}

#[tokio::test]
async fn a_replica_not_streaming_fails_the_streaming_and_readiness_checks() {
    let mut s = replica(0x1000, 0x1000);
    if let Some(pg) = s.pg.as_mut() {
        pg.streaming = false;
    }
    let h = harness(s);
    assert_eq!(get(&h.app, "/replica").await.0, OK);
    assert_eq!(
        get(&h.app, "/replica?replication_state=streaming").await.0,
        DOWN
    );
    assert_eq!(get(&h.app, "/readiness").await.0, DOWN);
}

#[tokio::test]
async fn tag_filters_and_noloadbalance() {
    let node_tags = tags(&[
        ("zone", Scalar::Str("eu-1".into())),
        ("nofailover", Scalar::Bool(true)),
        ("weight", Scalar::Int(3)),
    ]);
    let h = harness_with(
        replica(0x1000, 0x1000),
        node_tags.clone(),
        FakeSource::with(&[]),
        Credentials::default(),
        NOW,
    );
    let cases = [
        ("/replica?tag_zone=eu-1", OK),
        ("/replica?tag_zone=eu%2D1", OK),
        ("/replica?tag_zone=us-1", DOWN),
        ("/replica?tag_rack=r1", DOWN),
        ("/replica?tag_nofailover=true&tag_weight=3", OK),
        ("/replica?tag_nofailover=false", DOWN),
        ("/read-only?tag_zone=us-1", DOWN),
    ];
    for (uri, want) in cases {
        assert_eq!(get(&h.app, uri).await.0, want, "{uri}");
    }
    // The leader paths ignore tags, as in Patroni.
    let h = harness_with(
        primary(),
        node_tags,
        FakeSource::with(&[]),
        Credentials::default(),
        NOW,
    );
    assert_eq!(get(&h.app, "/primary?tag_zone=us-1").await.0, OK);

    let lb_off = tags(&[("noloadbalance", Scalar::Bool(true))]);
    let h = harness_with(
        replica(0x1000, 0x1000),
        lb_off.clone(),
        FakeSource::with(&[]),
        Credentials::default(),
        NOW,
    );
    for uri in ["/replica", "/read-only", "/async"] {
        assert_eq!(get(&h.app, uri).await.0, DOWN, "{uri}");
    }
    assert_eq!(get(&h.app, "/health").await.0, OK);
    // A primary tagged noloadbalance still serves /read-only.
    let h = harness_with(
        primary(),
        lb_off,
        FakeSource::with(&[]),
        Credentials::default(),
        NOW,
    );
    assert_eq!(get(&h.app, "/read-only").await.0, OK);
}

#[tokio::test]
async fn head_and_options_carry_no_body() {
    for (status, path, want) in [
        (primary(), "/primary", OK),
        (primary(), "/replica", DOWN),
        (replica(0x1000, 0x1000), "/replica", OK),
        (replica(0x1000, 0x1000), "/", DOWN),
        (primary(), "/patroni", OK),
    ] {
        let h = harness(status);
        for method in ["HEAD", "OPTIONS"] {
            let (code, body) = call(&h.app, method, path, None, "").await;
            assert_eq!((code, body.as_str()), (want, ""), "{method} {path}");
        }
        let (code, body) = get(&h.app, path).await;
        assert_eq!(code, want);
        assert!(body.starts_with('{'), "GET {path} has the JSON: {body}");
    }
}

#[tokio::test]
async fn a_bad_lag_is_a_400_with_a_sentence() {
    let h = harness(replica(0x1000, 0x1000));
    for uri in ["/replica?lag=lots", "/async?lag=-1", "/readiness?lag=1.5GB"] {
        let (code, body) = get(&h.app, uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains("is not a size"), "{uri}: {body}");
    }
}

#[tokio::test]
async fn health_liveness_and_readiness() {
    // PostgreSQL down: not healthy, still alive (the loop runs), not ready.
    let mut down = replica(0x1000, 0x1000);
    if let Some(pg) = down.pg.as_mut() {
        pg.running = false;
        pg.in_recovery = None;
    }
    let h = harness(down);
    assert_eq!(get(&h.app, "/health").await.0, DOWN);
    assert_eq!(get(&h.app, "/liveness").await.0, OK);
    assert_eq!(get(&h.app, "/readiness").await.0, DOWN);
    let (_, body) = get(&h.app, "/patroni").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "stopped");

    // The loop stalled: the primary's limit is ttl, a replica's 2 × ttl.
    let ttl = HaConfig::default().ttl;
    let stale = |mut s: NodeStatus, age: Duration| {
        s.heartbeat = Some(NOW - age);
        harness(s)
    };
    assert_eq!(get(&stale(primary(), ttl).app, "/liveness").await.0, DOWN);
    assert_eq!(get(&stale(primary(), ttl / 2).app, "/liveness").await.0, OK);
    assert_eq!(get(&stale(replica(1, 1), ttl).app, "/liveness").await.0, OK);
    assert_eq!(
        get(&stale(replica(1, 1), ttl * 2).app, "/liveness").await.0,
        DOWN
    );
    let never = NodeStatus::default();
    assert_eq!(get(&harness(never).app, "/liveness").await.0, DOWN);

    // Readiness without ?lag= uses maximum_lag_on_failover; liveness and
    // readiness answer with the code only, as in Patroni.
    let max = HaConfig::default().maximum_lag_on_failover;
    let h = harness(replica(0x100_0000 + max + 1, 0x100_0000));
    let (code, body) = get(&h.app, "/readiness").await;
    assert_eq!((code, body.as_str()), (DOWN, ""));
    let h = harness(replica(0x100_0000 + max, 0x100_0000));
    assert_eq!(get(&h.app, "/readiness").await.0, OK);
}
