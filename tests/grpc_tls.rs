//! TLS and mutual TLS on the gRPC port, with real processes of the
//! two-plus-witness example and certificates made at test time by
//! `scripts/gen-test-certs.sh`: the cluster bootstraps and elects over
//! mTLS, `pgkeelctl` works with the CA and a client certificate and fails
//! with one sentence without them, a separate admin token replaces the
//! raft secret for admin calls, and a plain-text peer cannot join.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use procs::{gen_certs, refusal, stderr, ProcCluster};

const SECRET: &str = "pgkeel-demo-secret-change-me";
const ADMIN_TOKEN: &str = "tls-test-admin-token-0123";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
}

/// `pgkeelctl --endpoint <via> ARGS`, with no config file: every
/// credential comes from `args`.
fn ctl_bare(c: &ProcCluster, via: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgkeelctl"))
        .arg("--endpoint")
        .arg(&c.nodes[via].endpoint)
        .args(args)
        .env_remove("PGKEEL_CONFIG")
        .output()
        .expect("run pgkeelctl")
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn mutual_tls_cluster_pgkeelctl_admin_token_and_a_plain_peer() {
    init_tracing();
    let mut c = ProcCluster::from_example("two-plus-witness");
    let certs = c.enable_tls(true);
    for name in c.names() {
        c.add_raft_line(&name, &format!("admin_token: {ADMIN_TOKEN}"));
    }
    let other_ca = c.dir.path().join("other-ca");
    gen_certs(&other_ca, &["admin"]);
    let (ca, cert, key) = (
        certs.join("ca.crt"),
        certs.join("admin.crt"),
        certs.join("admin.key"),
    );

    tracing::info!("phase: 2 data nodes + witness bootstrap and elect over mutual TLS");
    c.start_all();
    c.wait_healthy(Duration::from_secs(30));
    let (leader, _) = c.wait_streaming(2, Duration::from_secs(120));
    tracing::info!(leader, "a leader runs and the replica streams");

    tracing::info!("phase: pgkeelctl with the CA and a client certificate");
    let tls_args = [
        "--cacert",
        path(&ca),
        "--cert",
        path(&cert),
        "--key",
        path(&key),
    ];
    let mut args = tls_args.to_vec();
    args.extend(["--format", "json", "raft", "status"]);
    let out = ctl_bare(&c, "node1", &args);
    assert!(
        out.status.success(),
        "raft status over TLS: {}",
        stderr(&out)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(!status["leader"].is_null(), "{status}");

    tracing::info!("phase: without the CA, with another CA, without a client certificate");
    refusal(
        &ctl_bare(&c, "node1", &["raft", "status"]),
        "speaks TLS only",
    );
    c.wait_log(
        "node1",
        &["plain-text client dialed this TLS gRPC port"],
        Duration::from_secs(10),
    );
    let wrong_ca = other_ca.join("ca.crt");
    refusal(
        &ctl_bare(
            &c,
            "node1",
            &["--cacert", path(&wrong_ca), "raft", "status"],
        ),
        "is not signed by the trusted CA",
    );
    refusal(
        &ctl_bare(&c, "node1", &["--cacert", path(&ca), "raft", "status"]),
        "demands a client certificate",
    );
    c.wait_log(
        "node1",
        &["refused a TLS connection", "presented no certificate"],
        Duration::from_secs(10),
    );
    let (foreign_cert, foreign_key) = (other_ca.join("admin.crt"), other_ca.join("admin.key"));
    refusal(
        &ctl_bare(
            &c,
            "node1",
            &[
                "--cacert",
                path(&ca),
                "--cert",
                path(&foreign_cert),
                "--key",
                path(&foreign_key),
                "raft",
                "status",
            ],
        ),
        "refused this client's certificate",
    );

    tracing::info!("phase: the separate admin token works; the raft secret is refused as one");
    let mut put = tls_args.to_vec();
    put.extend(["--token", ADMIN_TOKEN, "store", "put", "tls/k", "v"]);
    let out = ctl_bare(&c, "node1", &put);
    assert!(
        out.status.success(),
        "put with the admin token: {}",
        stderr(&out)
    );
    let mut put = tls_args.to_vec();
    put.extend(["--secret", SECRET, "store", "put", "tls/k", "w"]);
    refusal(
        &ctl_bare(&c, "node1", &put),
        "wrong token: pass the cluster's raft.admin_token",
    );
    let mut put = tls_args.to_vec();
    put.extend(["store", "put", "tls/k", "w"]);
    refusal(
        &ctl_bare(&c, "node1", &put),
        "needs the cluster's raft.admin_token",
    );
    // -c reads the admin token, the CA and the node's certificate from its file.
    c.put("node2", "tls/k2", "v2")
        .expect("put with -c node2.yaml");
    assert_eq!(
        c.get("witness", "tls/k", true).unwrap().as_deref(),
        Some("v")
    );

    tracing::info!("phase: the witness comes back in plain text and cannot join");
    c.kill9("witness");
    let file = c.nodes["witness"].config.clone();
    let text = std::fs::read_to_string(&file).unwrap();
    let plain: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("tls:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(plain, text, "the witness had a tls line");
    std::fs::write(&file, plain).unwrap();
    c.start("witness");
    // Its calls to the data nodes are refused with the reason...
    c.wait_log("witness", &["speaks TLS only"], Duration::from_secs(30));
    // ...the data nodes' ClientHellos to it are closed and logged there...
    c.wait_log(
        "witness",
        &["a TLS client dialed this plain-text gRPC port"],
        Duration::from_secs(30),
    );
    // ...and the data nodes show it unreachable, saying why.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = c.status("node1").expect("status over TLS");
        let witness = status["voters"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["name"] == "witness1").cloned())
            .expect("witness1 listed");
        let error = witness["error"].as_str().unwrap_or_default().to_string();
        if witness["reachable"] == false && error.contains("plain-text gRPC") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the witness's voter entry never said why: {witness}\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The two TLS data nodes keep their quorum and keep writing.
    c.put_eventually("node1", "tls/after", "ok", Duration::from_secs(15));
}
