//! Unsafe calls: 401 without or with wrong credentials and nothing
//! changes; with the right ones, config writes are real and the rest say
//! precisely that they are not implemented.

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
async fn with_credentials_config_writes_are_real_and_the_rest_say_not_yet() {
    let h = with_config(Credentials::new(Some((USER, PASSWORD)), Some(TOKEN)));
    let good_basic = basic(USER, PASSWORD);
    let bearer = format!("Bearer {TOKEN}");
    for (method, path, body) in &CALLS[..7] {
        for auth in [&good_basic, &bearer] {
            let (code, text) = call(&h.app, method, path, Some(auth), body).await;
            assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}");
            assert!(text.contains("over REST is not implemented yet;"), "{text}");
        }
    }
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

#[tokio::test]
async fn refused_configs_leave_the_store_alone() {
    let h = with_config(Credentials::new(None, Some(TOKEN)));
    let auth = format!("Bearer {TOKEN}");
    for (body, says) in [
        ("not json", "is not JSON"),
        (r#"{"ttl":"2s"}"#, "raise ttl to at least"),
        (r#"{"pause":true}"#, "unknown field `pause`"),
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
