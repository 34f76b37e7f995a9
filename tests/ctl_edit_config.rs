//! `pgkeelctl edit-config` as an operator runs it, against a real 2 data
//! nodes + witness cluster: a reloadable parameter reaches both servers
//! without a restart, a restart-only one is flagged pending on both,
//! on a terminal it asks (through `script`, util-linux), refusals (a ttl
//! that breaks the timing invariant, no terminal without --force, no
//! secret, a stale revision over gRPC and over REST) store nothing, and
//! --apply merges a file or stdin.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "common/realpg.rs"]
#[allow(dead_code)]
mod realpg;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use pgkeel::pb::admin as pb;
use pgkeel::pb::admin::admin_client::AdminClient;
use procs::{http, stderr, stdout, ProcCluster};
use realpg::{exclusive, runtime, sql, two_plus_witness_streaming};
use serde_json::Value;
use tokio::runtime::Runtime;

/// The examples' `raft.secret` and REST basic-auth credentials.
const SECRET: &str = "pgkeel-demo-secret-change-me";
const REST_USER: &str = "admin:demo-rest-password-change-me";

/// The stored config and its revision, through `show-config --format json`
/// and the store (for the revision).
fn shown(c: &ProcCluster) -> (Value, u64) {
    let out = c.ctl(
        "node1",
        &[
            "--format",
            "json",
            "store",
            "get",
            "config",
            "--linearizable",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let reply: Value = serde_json::from_str(&stdout(&out)).expect("store get JSON");
    let kv = &reply["kvs"][0];
    let doc = serde_json::from_str(kv["value"].as_str().expect("value")).expect("config JSON");
    (doc, kv["mod_revision"].as_u64().expect("mod_revision"))
}

/// Waits until `query`'s first value is `want` on every host.
fn wait_value(rt: &Runtime, c: &ProcCluster, hosts: &[String], query: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for host in hosts {
        loop {
            let got = sql(rt, host, query);
            if got.as_deref().ok().and_then(|v| v.first()) == Some(&want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{host}: {query} never gave {want}; last {got:?}\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `pgkeelctl` run through `script`, so that its stdin is a terminal, with
/// `answer` typed at it.
fn ctl_on_terminal(c: &ProcCluster, args: &[&str], answer: &str) -> Output {
    let mut words = vec![
        env!("CARGO_BIN_EXE_pgkeelctl").to_string(),
        "--config".to_string(),
        c.nodes["node1"].config.display().to_string(),
    ];
    words.extend(args.iter().map(|a| a.to_string()));
    let line = words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run script");
    // Kept open until pgkeelctl exits: an early EOF would end the session.
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(answer.as_bytes()).expect("type the answer");
    let out = child.wait_with_output().expect("script exits");
    drop(stdin);
    out
}

#[test]
fn edit_config_through_pgkeelctl_grpc_and_rest() {
    let Some(_serial) = exclusive() else { return };
    let rt = runtime();
    let (c, leader, hosts) = two_plus_witness_streaming();
    let all: Vec<String> = hosts.values().cloned().collect();
    tracing::info!(%leader, ?hosts, "cluster streaming");
    let pids = |c: &ProcCluster| {
        ["node1", "node2"]
            .map(|n| c.postmaster_pid(n))
            .into_iter()
            .collect::<Vec<_>>()
    };
    let before_pids = pids(&c);
    assert!(before_pids.iter().all(Option::is_some), "{before_pids:?}");

    tracing::info!("phase: -p work_mem reaches both servers by reload, no restart");
    let out = c.ctl("node2", &["edit-config", "-p", "work_mem=12MB", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("--- before\n+++ after\n@@ "),
        "a unified diff: {text}"
    );
    assert!(text.contains("\n+    work_mem: 12MB\n"), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with("OK (revision ")),
        "{text}"
    );
    wait_value(
        &rt,
        &c,
        &all,
        "select setting::bigint from pg_settings where name = 'work_mem'",
        12 * 1024,
    );
    assert_eq!(pids(&c), before_pids, "reloaded, not restarted");

    tracing::info!("phase: the same edit again changes nothing");
    let out = c.ctl("node1", &["edit-config", "-p", "work_mem=12MB", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "no changes");

    tracing::info!("phase: on a terminal it asks; no applies nothing, yes applies");
    let (doc, revision) = shown(&c);
    let out = ctl_on_terminal(&c, &["edit-config", "-s", "loop_wait=3"], "n\n");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("Apply these changes? [y/N]"), "{text}");
    assert!(text.contains("not applied"), "{text}");
    assert_eq!(shown(&c), (doc, revision), "nothing stored");
    let out = ctl_on_terminal(
        &c,
        &["edit-config", "-s", "maximum_lag_on_failover=2097152"],
        "y\n",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("OK (revision "), "{text}");
    assert_eq!(shown(&c).0["maximum_lag_on_failover"], 2097152);

    let (doc, revision) = shown(&c);
    tracing::info!("phase: no terminal and no --force: refused, nothing stored");
    let out = c.ctl("node1", &["edit-config", "-s", "loop_wait=3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("+loop_wait: 3s"),
        "the diff is shown first"
    );
    assert!(stderr(&out).contains("pass --force"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    tracing::info!("phase: nothing to change, or -s without =, is a usage error");
    for args in [
        &["edit-config"][..],
        &["edit-config", "-s", "loop_wait"][..],
    ] {
        let out = c.ctl("node1", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }

    tracing::info!("phase: a ttl that breaks the timing invariant is refused");
    let out = c.ctl("node1", &["edit-config", "-s", "ttl=2s", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ttl") && err.contains("raise ttl to at least"),
        "{err}"
    );
    tracing::info!("phase: an unknown key is refused, naming it");
    let out = c.ctl(
        "node1",
        &["edit-config", "-s", "postgresql.use_slots=false", "--force"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("postgresql.use_slots"),
        "{}",
        stderr(&out)
    );

    tracing::info!("phase: without the secret: refused");
    let out = c.ctl_anonymous("node2", &["edit-config", "-s", "loop_wait=3", "--force"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("raft.secret"), "{}", stderr(&out));
    assert_eq!(shown(&c), (doc.clone(), revision), "nothing stored");

    tracing::info!("phase: EditConfig over gRPC: stale, zero and anonymous are refused");
    let endpoint = format!("http://{}", c.nodes["witness"].endpoint);
    let call = |patch: &str, expected: u64, token: Option<&str>| {
        rt.block_on(async {
            let mut client = AdminClient::connect(endpoint.clone())
                .await
                .expect("connect");
            let mut req = tonic::Request::new(pb::EditConfigRequest {
                patch_json: patch.to_string(),
                expected_revision: expected,
            });
            if let Some(t) = token {
                let v = format!("Bearer {t}").parse().expect("metadata");
                req.metadata_mut().insert("authorization", v);
            }
            client.edit_config(req).await.map(|r| r.into_inner())
        })
    };
    let stale = call(r#"{"loop_wait": 3}"#, revision - 1, Some(SECRET)).expect_err("stale");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        stale.message(),
        format!(
            "the config changed since revision {} was read: show it again and re-apply",
            revision - 1
        )
    );
    let zero = call(r#"{"loop_wait": 3}"#, 0, Some(SECRET)).expect_err("zero");
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);
    let bad = call(r#"{"loop_wait": "#, revision, Some(SECRET)).expect_err("not JSON");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let invalid = call(r#"{"safety_margin": "9s"}"#, revision, Some(SECRET)).expect_err("timing");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    assert!(invalid.message().contains("ttl"), "{}", invalid.message());
    let anonymous = call(r#"{"loop_wait": 3}"#, revision, None).expect_err("no token");
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    let wrong = call(r#"{"loop_wait": 3}"#, revision, Some("nope")).expect_err("bad token");
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    assert_eq!(shown(&c), (doc.clone(), revision), "nothing stored");
    let done = call(r#"{"loop_wait": 3}"#, revision, Some(SECRET)).expect("applied");
    assert!(done.mod_revision > revision);
    let stored: Value = serde_json::from_str(&done.json).expect("JSON");
    assert_eq!(stored["loop_wait"], "3s");
    assert_eq!(stored["postgresql"]["parameters"]["work_mem"], "12MB");
    let again = call(r#"{"loop_wait": 4}"#, revision, Some(SECRET)).expect_err("stale now");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);

    tracing::info!("phase: PATCH /config with If-Match: stale is 412, the ETag works");
    let rest = c.rest_address("node1");
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(REST_USER)
    );
    let (code, _) = http(&rest, "GET", "/config", &[], "").expect("GET /config");
    assert_eq!(code, 200);
    let patch = |revision: u64, body: &str| {
        let tag = format!("\"{revision}\"");
        let headers = [
            ("Authorization", basic.as_str()),
            ("If-Match", tag.as_str()),
        ];
        http(&rest, "PATCH", "/config", &headers, body).expect("PATCH /config")
    };
    let (code, body) = patch(revision, r#"{"loop_wait": 5}"#);
    assert_eq!(code, 412, "{body}");
    let (now_doc, now_rev) = shown(&c);
    assert_eq!(now_doc["loop_wait"], "3s");
    let (code, body) = patch(now_rev, r#"{"loop_wait": 2}"#);
    assert_eq!(code, 200, "{body}");

    tracing::info!("phase: --apply FILE and --apply - merge a YAML document");
    let file = c.dir.path().join("patch.yaml");
    std::fs::write(
        &file,
        "loop_wait: 1\npostgresql:\n  parameters:\n    work_mem: 16MB\n",
    )
    .expect("write patch");
    let path = file.display().to_string();
    let out = c.ctl("node1", &["edit-config", "--apply", &path, "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("+    work_mem: 16MB"),
        "{}",
        stdout(&out)
    );
    let node = &c.nodes["node2"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgkeelctl"))
        .arg("--config")
        .arg(&node.config)
        .args(["edit-config", "--apply", "-", "--force"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pgkeelctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(br#"{"postgresql": {"parameters": {"work_mem": "20MB"}}}"#)
        .expect("write stdin");
    let out = child.wait_with_output().expect("pgkeelctl exits");
    assert!(out.status.success(), "{}", stderr(&out));
    let (doc, _) = shown(&c);
    assert_eq!(doc["loop_wait"], "1s");
    assert_eq!(doc["postgresql"]["parameters"]["work_mem"], "20MB");
    wait_value(
        &rt,
        &c,
        &all,
        "select setting::bigint from pg_settings where name = 'work_mem'",
        20 * 1024,
    );

    tracing::info!("phase: -p max_connections needs a restart: pending on both members");
    let out = c.ctl(
        "node1",
        &["edit-config", "-p", "max_connections=150", "--force"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = c.list("node1").unwrap_or_default();
        let pending = list["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["role"] != "witness" && m["pending_restart"] == true)
                    .count()
            })
            .unwrap_or(0);
        if pending == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both members never showed pending_restart: {list}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = c.ctl("node1", &["list"]);
    let table = stdout(&out);
    assert!(table.contains("Pending restart"), "{table}");
    let starred = table
        .lines()
        .filter(|l| l.starts_with("node") && l.trim_end().ends_with('*'))
        .count();
    assert_eq!(starred, 2, "{table}");
    for node in ["node1", "node2"] {
        let rest = c.rest_address(node);
        let (code, body) = http(&rest, "GET", "/patroni", &[], "").expect("GET /patroni");
        assert_eq!(code, 200);
        let doc: Value = serde_json::from_str(&body).expect("/patroni JSON");
        assert_eq!(doc["pending_restart"], true, "{node}: {doc}");
    }
    let (_, body) = http(&rest, "GET", "/cluster", &[], "").expect("GET /cluster");
    let doc: Value = serde_json::from_str(&body).expect("/cluster JSON");
    let flagged = doc["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["pending_restart"] == true).count());
    assert_eq!(flagged, Some(2), "{doc}");
    for host in &all {
        let running = sql(
            &rt,
            host,
            "select setting::bigint from pg_settings where name = 'max_connections'",
        );
        assert!(
            running.as_deref().is_ok_and(|v| v.first() != Some(&150)),
            "{host} still runs its old max_connections: {running:?}"
        );
    }
    tracing::info!("phase: member keys publish the running values restarts are ordered by");
    for member in ["node1", "node2"] {
        let key = format!("members/{member}");
        let record = c
            .get("witness", &key, true)
            .ok()
            .flatten()
            .unwrap_or_default();
        let record: Value = serde_json::from_str(&record).unwrap_or_default();
        let running = record["must_match"]["max_connections"].as_i64();
        assert!(
            running.is_some_and(|v| v != 150),
            "{member} publishes its running max_connections: {record}"
        );
        assert!(record["must_match"]["max_wal_senders"].is_i64(), "{record}");
    }
    assert_eq!(pids(&c), before_pids, "nothing restarted on its own");
}
