//! Real processes on loopback: the example clusters (2 data nodes + witness,
//! and 3 data nodes) survive the loss of any one voter, refuse writes
//! without a quorum instead of hanging, and heal with no data lost.

#[path = "common/procs.rs"]
#[allow(dead_code)]
mod procs;

use std::time::{Duration, Instant};

use procs::ProcCluster;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_test_writer()
        .try_init();
}

const ELECTION: Duration = Duration::from_secs(15);

fn survive_any_single_loss_and_heal(example: &str) {
    init_tracing();
    let mut c = ProcCluster::from_example(example);
    tracing::info!(example, "phase: start every voter from the example configs");
    c.start_all();
    c.wait_healthy(Duration::from_secs(30));
    let names = c.names();
    let mut written: Vec<(String, String)> = Vec::new();
    c.put_eventually(&names[0], "k/initial", "v0", ELECTION);
    written.push(("k/initial".into(), "v0".into()));

    for victim in &names {
        tracing::info!(
            victim,
            "phase: kill -9 one voter; the other two keep writing"
        );
        c.kill9(victim);
        for via in names.iter().filter(|n| *n != victim) {
            let key = format!("k/{victim}-down-via-{via}");
            c.put_eventually(via, &key, "ok", ELECTION);
            written.push((key, "ok".into()));
        }
        tracing::info!(victim, "phase: restart it with its data dir; it rejoins");
        c.start(victim);
        c.wait_healthy(Duration::from_secs(30));
        let (last_key, last_val) = written.last().unwrap().clone();
        let deadline = Instant::now() + Duration::from_secs(15);
        while c.get(victim, &last_key, false).ok().flatten().as_deref() != Some(last_val.as_str()) {
            assert!(
                Instant::now() < deadline,
                "{victim} did not catch up\n{}",
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    tracing::info!(
        "phase: kill two voters; a write through the third must fail with no-quorum, not hang"
    );
    let survivor = names[0].clone();
    for victim in &names[1..] {
        c.kill9(victim);
    }
    let started = Instant::now();
    let err = c.put(&survivor, "k/no-quorum", "x").unwrap_err();
    let took = started.elapsed();
    tracing::info!(?took, "no-quorum answer: {err}");
    assert!(
        err.contains("no quorum: 1 of 3 voters reachable"),
        "unexpected error: {err}"
    );
    // The bound is raft.request_timeout (2 s) plus a probe; this only
    // catches a hang, not a slow machine.
    assert!(
        took < Duration::from_secs(20),
        "no-quorum write took {took:?}"
    );

    tracing::info!("phase: restart both; the cluster heals and nothing acknowledged is lost");
    for victim in &names[1..] {
        c.start(victim);
    }
    c.wait_healthy(Duration::from_secs(30));
    for via in &names {
        for (key, value) in &written {
            let got = c
                .get(via, key, true)
                .unwrap_or_else(|e| panic!("read {key} via {via}: {e}"));
            assert_eq!(got.as_deref(), Some(value.as_str()), "{key} via {via}");
        }
    }
    let status = c.status(&survivor).expect("status");
    let cluster_id = status["cluster_id"].as_str().unwrap().to_string();
    assert!(!cluster_id.is_empty());
    for via in &names {
        assert_eq!(
            c.status(via).unwrap()["cluster_id"],
            cluster_id.as_str(),
            "one cluster"
        );
    }
}

#[test]
fn two_data_nodes_and_a_witness() {
    survive_any_single_loss_and_heal("two-plus-witness");
}

#[test]
fn three_data_nodes() {
    survive_any_single_loss_and_heal("three-node");
}

#[test]
fn a_node_with_another_secret_is_refused_and_says_so() {
    init_tracing();
    let mut c = ProcCluster::from_example("two-plus-witness");
    c.start_all();
    c.wait_healthy(Duration::from_secs(30));
    tracing::info!("phase: the witness comes back with another secret");
    c.kill9("witness");
    let bad = c.nodes["witness"].config.clone();
    let text = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(
        &bad,
        text.replace(
            "pgkeel-demo-secret-change-me",
            "a-completely-different-secret",
        ),
    )
    .unwrap();
    c.start("witness");
    std::thread::sleep(Duration::from_secs(1));
    c.wait_healthy_among(&["node1", "node2"], Duration::from_secs(30));
    let status = c.status("node1").unwrap();
    let witness = status["voters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "witness1")
        .unwrap()
        .clone();
    assert_eq!(witness["reachable"], false, "{witness}");
    assert!(
        witness["error"].as_str().unwrap().contains("raft.secret"),
        "{witness}"
    );
    c.wait_log(
        "witness",
        &["refused peer call", "raft.secret"],
        Duration::from_secs(10),
    );
}
