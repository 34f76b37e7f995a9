//! Unsafe calls: 401 without or with wrong credentials and nothing
//! changes; with the right ones, config writes and member operations are
//! real and switchover / failover say precisely that they are not
//! implemented.

use axum::http::StatusCode;
use base64::Engine;

use super::*;

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b64}")
}

const CALLS: [(&str, &str, &str); 10] = [
    ("POST", "/switchover", r#"{"leader":"node1"}"#),
    ("DELETE", "/switchover", ""),
    ("POST", "/failover", r#"{"candidate":"node2"}"#),
    ("POST", "/restart", "{}"),
    ("DELETE", "/restart", ""),
    ("POST", "/reload", ""),
    ("POST", "/reinitialize", "{}"),
    ("PATCH", "/config", r#"{"loop_wait":"2s"}"#),
    ("PUT", "/config", r#"{"ttl":"6s"}"#),
    ("PATCH", "/config", "not json"),
];

const STORED: &str = r#"{"ttl":"5s","loop_wait":"1s"}"#;

/// A primary whose store holds [`STORED`] as the dynamic config.
fn with_config(credentials: Credentials) -> Harness {
    harness_with(
        primary(),
        BTreeMap::new(),
        FakeSource::with(&[("config", STORED)]),
        credentials,
        NOW,
    )
}

#[tokio::test]
async fn every_unsafe_call_without_good_credentials_is_401_and_changes_nothing() {
    let h = with_config(Credentials::new(Some((USER, PASSWORD)), Some(TOKEN)));
    let bad = [
        None,
        Some(basic(USER, "wrong-password-123")),
        Some(basic("root", PASSWORD)),
        Some(format!("Bearer {TOKEN}x")),
        Some("Bearer ".to_string()),
        Some("Basic !!!not-base64".to_string()),
        Some(TOKEN.to_string()),
    ];
    for (method, path, body) in CALLS {
        for auth in &bad {
            let (code, text) = call(&h.app, method, path, auth.as_deref(), body).await;
            assert_eq!(
                code,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}"
            );
            assert!(
                text.ends_with('\n') && text.lines().count() == 1,
                "one sentence: {text}"
            );
        }
    }
    assert_eq!(h.source.get("config").as_deref(), Some(STORED));
}

#[tokio::test]
async fn with_credentials_config_writes_are_real_and_switchovers_are_checked() {
    let h = with_config(Credentials::new(Some((USER, PASSWORD)), Some(TOKEN)));
    let good_basic = basic(USER, PASSWORD);
    let bearer = format!("Bearer {TOKEN}");
    // No leader and no members in this store: each is refused, as Patroni
    // codes it, and nothing is written.
    let refusals = [
        (
            StatusCode::PRECONDITION_FAILED,
            "no member holds the leader key",
        ),
        (StatusCode::NOT_FOUND, "no scheduled switchover to cancel"),
        (StatusCode::NOT_FOUND, "no data member is named node2"),
    ];
    for ((method, path, body), (want, says)) in CALLS[..3].iter().zip(refusals) {
        for auth in [&good_basic, &bearer] {
            let (code, text) = call(&h.app, method, path, Some(auth), body).await;
            assert_eq!(code, want, "{method} {path}: {text}");
            assert!(text.contains(says), "{method} {path}: {text}");
        }
    }
    assert_eq!(h.source.get("failover"), None);
    // A merge patch: loop_wait changes, ttl stays, a parameter is added.
    let patch = r#"{"loop_wait":"2s","postgresql":{"parameters":{"work_mem":"8MB"}}}"#;
    let (code, text) = call(&h.app, "PATCH", "/config", Some(&good_basic), patch).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let stored: serde_json::Value = serde_json::from_str(&h.source.get("config").unwrap()).unwrap();
    assert_eq!(stored["loop_wait"], "2s");
    assert_eq!(stored["ttl"], "5s");
    assert_eq!(stored["postgresql"]["parameters"]["work_mem"], "8MB");
    // null removes the parameter again.
    let (code, _) = call(
        &h.app,
        "PATCH",
        "/config",
        Some(&bearer),
        r#"{"postgresql":{"parameters":{"work_mem":null}}}"#,
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let stored: serde_json::Value = serde_json::from_str(&h.source.get("config").unwrap()).unwrap();
    assert!(
        stored["postgresql"]["parameters"].get("work_mem").is_none(),
        "{stored}"
    );
    // PUT replaces everything.
    let (code, _) = call(&h.app, "PUT", "/config", Some(&bearer), r#"{"ttl":"6s"}"#).await;
    assert_eq!(code, StatusCode::OK);
    let stored: serde_json::Value = serde_json::from_str(&h.source.get("config").unwrap()).unwrap();
    assert_eq!(stored["ttl"], "6s");
    assert_eq!(stored["loop_wait"], "1s", "defaults again after PUT");
}

/// node1 (this node) holds the leader key; node2 is a member too.
fn with_members() -> Harness {
    harness_with(
        primary(),
        BTreeMap::new(),
        FakeSource::with(&[
            ("config", STORED),
            ("leader", "node1"),
            ("members/node1", r#"{"name":"node1","role":"primary"}"#),
            ("members/node2", r#"{"name":"node2","role":"replica"}"#),
        ]),
        Credentials::new(None, Some(TOKEN)),
        NOW,
    )
}

#[tokio::test]
async fn a_scheduled_restart_is_written_for_this_node_and_can_be_deleted() {
    let h = with_members();
    let auth = format!("Bearer {TOKEN}");
    let at = crate::store::keys::format_time(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let body = format!(r#"{{"schedule":"{at}","restart_pending":true,"role":"primary"}}"#);
    let (code, text) = call(&h.app, "POST", "/restart", Some(&auth), &body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    assert!(
        text.starts_with(&format!("restart scheduled for {at}")),
        "{text}"
    );
    let rec: crate::store::keys::OperationRecord =
        serde_json::from_str(&h.source.get("operations/node1").unwrap()).unwrap();
    assert_eq!(
        (
            rec.kind.as_str(),
            rec.state.as_str(),
            rec.pending_only,
            rec.role.as_str()
        ),
        ("restart", "pending", true, "primary")
    );
    assert_eq!(rec.scheduled_at.as_deref(), Some(at.as_str()));
    // A second one while the first is unfinished: refused, nothing changes.
    let (code, text) = call(&h.app, "POST", "/restart", Some(&auth), &body).await;
    assert_eq!(code, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("already has a restart pending"), "{text}");
    let (code, text) = call(&h.app, "DELETE", "/restart", Some(&auth), "").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert!(text.contains(&rec.id), "{text}");
    assert_eq!(h.source.get("operations/node1"), None);
    let (code, text) = call(&h.app, "DELETE", "/restart", Some(&auth), "").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{text}");
    assert!(
        text.contains("node1 has no scheduled restart to cancel"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_operation_requests_are_refused_and_write_nothing() {
    let h = with_members();
    let auth = format!("Bearer {TOKEN}");
    for (method, path, body, code, says) in [
        (
            "POST",
            "/restart",
            r#"{"schedule":"yesterday"}"#,
            StatusCode::BAD_REQUEST,
            "is not an RFC 3339 time",
        ),
        (
            "POST",
            "/restart",
            r#"{"schedule":"2001-01-01T00:00:00Z"}"#,
            StatusCode::BAD_REQUEST,
            "is in the past",
        ),
        (
            "POST",
            "/restart",
            r#"{"role":"boss"}"#,
            StatusCode::BAD_REQUEST,
            "is not a role",
        ),
        (
            "POST",
            "/restart",
            r#"{"sheduled":"x"}"#,
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            "POST",
            "/reinitialize",
            r#"{"force":true}"#,
            StatusCode::CONFLICT,
            "cannot reinitialize the primary; switch over first",
        ),
    ] {
        let (got, text) = call(&h.app, method, path, Some(&auth), body).await;
        assert_eq!(got, code, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    assert_eq!(h.source.get("operations/node1"), None);
}

#[tokio::test]
async fn refused_configs_leave_the_store_alone() {
    let h = with_config(Credentials::new(None, Some(TOKEN)));
    let auth = format!("Bearer {TOKEN}");
    for (body, says) in [
        ("not json", "is not JSON"),
        (r#"{"ttl":"2s"}"#, "raise ttl to at least"),
        (r#"{"paws":true}"#, "unknown field `paws`"),
        (r#"{"ttl":"soon"}"#, "is not valid"),
    ] {
        let (code, text) = call(&h.app, "PATCH", "/config", Some(&auth), body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {text}");
        assert!(text.contains(says), "{body}: {text}");
    }
    assert_eq!(h.source.get("config").as_deref(), Some(STORED));
    // Basic auth is not configured here, so it never admits.
    let (code, _) = call(&h.app, "PUT", "/config", Some(&basic(USER, PASSWORD)), "{}").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_node_without_credentials_refuses_unsafe_calls_with_403() {
    let h = with_config(Credentials::default());
    let (code, text) = call(&h.app, "PATCH", "/config", Some("Bearer anything"), "{}").await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        text.contains("set restapi.authentication or restapi.token"),
        "{text}"
    );
    assert_eq!(h.source.get("config").as_deref(), Some(STORED));
}

#[tokio::test]
async fn if_match_makes_config_writes_compare_and_set_on_the_etag() {
    let h = with_config(Credentials::new(None, Some(TOKEN)));
    let auth = format!("Bearer {TOKEN}");
    let send = |method: &'static str, tag: &'static str, body: &'static str| {
        let req = Request::builder()
            .method(method)
            .uri("/config")
            .header("authorization", auth.as_str())
            .header("if-match", tag)
            .body(Body::from(body))
            .unwrap();
        let app = h.app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let code = resp.status();
            let etag = resp
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (code, etag, String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    let (code, tag, _) = send("GET", "\"0\"", "").await;
    assert_eq!((code, tag.as_deref()), (StatusCode::OK, Some("\"1\"")));
    let (code, _, text) = send("PATCH", "\"9\"", r#"{"loop_wait":"2s"}"#).await;
    assert_eq!(code, StatusCode::PRECONDITION_FAILED, "{text}");
    assert!(text.contains("changed since revision 9 was read"), "{text}");
    let (code, _, text) = send("PUT", "soon", "{}").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(h.source.get("config").as_deref(), Some(STORED));
    let (code, tag, text) = send("PATCH", "\"1\"", r#"{"loop_wait":"2s"}"#).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(tag.as_deref(), Some("\"2\""));
    let (code, _, _) = send("PATCH", "\"1\"", r#"{"loop_wait":"3s"}"#).await;
    assert_eq!(code, StatusCode::PRECONDITION_FAILED);
    let stored: serde_json::Value = serde_json::from_str(&h.source.get("config").unwrap()).unwrap();
    assert_eq!(stored["loop_wait"], "2s");
}

#[tokio::test]
async fn a_scheduled_switchover_is_stored_and_can_be_cancelled() {
    let member = |role: &str, state: &str, lsn: &str| {
        format!(
            r#"{{"name":"x","role":"{role}","state":"{state}","xlog_location":{lsn},"received_location":{lsn}}}"#
        )
    };
    let (n1, n2) = (
        member("primary", "running", "100"),
        member("replica", "streaming", "100"),
    );
    let h = harness_with(
        primary(),
        BTreeMap::new(),
        FakeSource::with(&[
            ("config", STORED),
            ("leader", "node1"),
            ("members/node1", &n1),
            ("members/node2", &n2),
        ]),
        Credentials::new(None, Some(TOKEN)),
        NOW,
    );
    let auth = format!("Bearer {TOKEN}");
    let later = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
    );
    let body = format!(r#"{{"leader":"node1","candidate":"node2","scheduled_at":"{later}"}}"#);
    let (code, text) = call(&h.app, "POST", "/switchover", Some(&auth), &body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    let stored: serde_json::Value =
        serde_json::from_str(&h.source.get("failover").expect("stored")).unwrap();
    assert_eq!(stored["leader"], "node1");
    assert_eq!(stored["candidate"], "node2");
    assert_eq!(stored["state"], "pending");
    // A second one is refused while the first is pending.
    let (code, text) = call(&h.app, "POST", "/switchover", Some(&auth), &body).await;
    assert_eq!(code, StatusCode::PRECONDITION_FAILED, "{text}");
    assert!(text.contains("already pending"), "{text}");
    let (code, text) = call(&h.app, "DELETE", "/switchover", Some(&auth), "").await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(h.source.get("failover"), None);
    // A wrong leader, and a candidate that is the leader.
    let (code, text) = call(
        &h.app,
        "POST",
        "/switchover",
        Some(&auth),
        r#"{"leader":"node2"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::PRECONDITION_FAILED, "{text}");
    assert!(text.contains("node2 is not the leader; node1 is"), "{text}");
    let (code, text) = call(
        &h.app,
        "POST",
        "/failover",
        Some(&auth),
        r#"{"candidate":"node1"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::PRECONDITION_FAILED, "{text}");
    assert!(text.contains("node1 is already the primary"), "{text}");
}
