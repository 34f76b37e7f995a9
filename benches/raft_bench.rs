//! Consensus benchmark on loopback with the real binaries (release build).
//! Prints figures, asserts nothing.
//!
//! ```text
//! cargo bench --bench raft_bench                   # RSS, write and keepalive latency
//! cargo bench --bench raft_bench -- --soak 200000  # append + snapshot/purge soak
//! cargo bench --bench raft_bench -- --tls           # the same over mutual TLS (raft.tls)
//! ```
//!
//! - idle RSS of `pgkeel-witness` and `pgkeel` once the 2 + witness cluster
//!   has bootstrapped and sat idle for a few seconds;
//! - store write latency through Raft (admin `StorePut` on the leader, and
//!   through a follower, which forwards);
//! - lease keepalive latency (the real peer path: read index + lessor);
//! - soak: N writes with snapshots and log purges, sled's on-disk size and
//!   RSS before and after.

#[path = "../tests/common/procs.rs"]
#[allow(dead_code)]
mod procs;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgkeel::consensus::grpc::GrpcTransport;
use pgkeel::consensus::peer::{
    Credentials, PeerResponse, PeerRpc, StoreReply, StoreRequest, Transport,
};
use pgkeel::consensus::types::{Command, Op, Outcome};
use pgkeel::pb::admin::admin_client::AdminClient;
use pgkeel::pb::admin::StorePutRequest;
use pgkeel::tls::{client_config, ClientTls, PemFile};
use procs::ProcCluster;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

const SECRET: &str = "pgkeel-demo-secret-change-me";

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS:")
}

/// Bytes allocated on disk by every `raft` directory (sled) below `p`;
/// PostgreSQL data directories beside them are left out.
fn sled_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            if e.file_name() == "raft" {
                dir_size(&e.path())
            } else {
                sled_size(&e.path())
            }
        })
        .sum()
}

/// Bytes actually allocated on disk below `p` (sled's files may be sparse).
fn dir_size(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{what:<40} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        lat.len(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn print_rss(c: &ProcCluster, label: &str) {
    for name in c.names() {
        if let Some(pid) = c.pid(&name) {
            println!(
                "{label:<24} {name:<10} RSS {:>7.1} MB (anon {:.1} MB, file {:.1} MB)",
                rss_kb(pid) as f64 / 1024.0,
                status_kb(pid, "RssAnon:") as f64 / 1024.0,
                status_kb(pid, "RssFile:") as f64 / 1024.0
            );
        }
    }
}

/// The client side of `--tls`: the cluster's CA and the `admin` certificate.
static TLS: OnceLock<Option<ClientTls>> = OnceLock::new();

fn tls() -> Option<&'static ClientTls> {
    TLS.get().and_then(Option::as_ref)
}

async fn admin(endpoint: &str) -> AdminClient<tonic::transport::Channel> {
    let channel = match tls() {
        Some(tls) => Endpoint::from_shared(format!("https://{endpoint}"))
            .and_then(|e| e.tls_config(tls.tonic.clone())),
        None => Endpoint::from_shared(format!("http://{endpoint}")),
    }
    .expect("endpoint")
    .connect()
    .await
    .expect("connect admin");
    AdminClient::new(channel)
}

async fn put(client: &mut AdminClient<tonic::transport::Channel>, key: String, value: String) {
    let mut req = tonic::Request::new(StorePutRequest { key, value });
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {SECRET}")).expect("ascii"),
    );
    client.store_put(req).await.expect("put");
}

async fn write_latency(endpoint: &str, n: usize) -> Vec<Duration> {
    let mut client = admin(endpoint).await;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        put(&mut client, format!("bench/{}", i % 100), i.to_string()).await;
        lat.push(t.elapsed());
    }
    lat
}

async fn keepalive_latency(
    leader_id: u64,
    endpoint: &str,
    cluster_id: &str,
    n: usize,
) -> Vec<Duration> {
    let transport = match tls() {
        Some(tls) => GrpcTransport::with_tls(tls.tonic.clone()),
        None => GrpcTransport::new(),
    };
    let creds = Credentials {
        scope: "demo".into(),
        cluster_id: cluster_id.into(),
        from: 999,
        secret: SECRET.into(),
    };
    let call = |rpc| {
        transport.call(
            leader_id,
            endpoint,
            creds.clone(),
            rpc,
            Duration::from_secs(5),
        )
    };
    let grant = PeerRpc::Store(StoreRequest::Write(Command::new(Op::Grant {
        ttl_ms: 5000,
    })));
    let lease = match call(grant).await {
        Ok(PeerResponse::Store(Ok(StoreReply::Written(r)))) => match r.outcome {
            Outcome::Granted { lease, .. } => lease,
            other => panic!("grant: {other:?}"),
        },
        other => panic!("grant: {other:?}"),
    };
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        match call(PeerRpc::Store(StoreRequest::Keepalive(lease))).await {
            Ok(PeerResponse::Store(Ok(StoreReply::KeptAlive { .. }))) => {}
            other => panic!("keepalive: {other:?}"),
        }
        lat.push(t.elapsed());
    }
    lat
}

async fn soak(c: &ProcCluster, endpoint: &str, n: usize) {
    let data = c.dir.path().join("data");
    println!("soak: {n} writes, 16 at a time, snapshot every 10000 entries");
    print_rss(c, "soak before");
    println!(
        "soak before              sled on disk {:>7.1} MB",
        sled_size(&data) as f64 / 1048576.0
    );
    let started = Instant::now();
    let rounds = 8;
    let per = n / 16 / rounds;
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for w in 0..16 {
            let endpoint = endpoint.to_string();
            tasks.push(tokio::spawn(async move {
                let mut client = admin(&endpoint).await;
                for i in 0..per {
                    let key = format!("soak/{}", (w * per + i) % 1000);
                    put(&mut client, key, "x".repeat(100)).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let done = (round + 1) * per * 16;
        let rss: Vec<String> = c
            .names()
            .iter()
            .filter_map(|name| {
                c.pid(name)
                    .map(|pid| format!("{name} {:.1} MB", rss_kb(pid) as f64 / 1024.0))
            })
            .collect();
        println!(
            "soak progress {done:>7} writes  {:>6.1} s  disk {:>6.1} MB  RSS {}",
            started.elapsed().as_secs_f64(),
            sled_size(&data) as f64 / 1048576.0,
            rss.join(", ")
        );
    }
    let per = per * rounds;
    let took = started.elapsed();
    println!(
        "soak: {} writes in {:.1} s ({:.0}/s)",
        per * 16,
        took.as_secs_f64(),
        (per * 16) as f64 / took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    print_rss(c, "soak after");
    tokio::time::sleep(Duration::from_secs(20)).await;
    print_rss(c, "soak after 25 s idle");
    println!(
        "soak after               sled on disk {:>7.1} MB",
        sled_size(&data) as f64 / 1048576.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let soak_n = args
        .iter()
        .position(|a| a == "--soak")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut c = ProcCluster::from_example("two-plus-witness");
    let tls = args.iter().any(|a| a == "--tls").then(|| {
        let certs = c.enable_tls(true);
        let file = |name: &str| certs.join(name);
        let (ca, cert, key) = (file("ca.crt"), file("admin.crt"), file("admin.key"));
        let pem = |key, path| PemFile { key, path };
        client_config(pem("ca", &ca), Some((pem("cert", &cert), pem("key", &key))))
            .expect("client TLS")
    });
    println!("gRPC in mutual TLS: {}", tls.is_some());
    let _ = TLS.set(tls);
    c.start_all();
    c.wait_healthy(Duration::from_secs(30));
    let status = c.status("node1").expect("status");
    let leader_id = status["leader"]["id"].as_u64().expect("leader");
    let cluster_id = status["cluster_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let leader_file = c
        .nodes
        .values()
        .find(|n| {
            status["voters"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|x| x["id"] == leader_id && x["address"] == n.endpoint.as_str())
            })
        })
        .map(|n| n.name.clone())
        .expect("leader node");
    let follower_file = c
        .names()
        .into_iter()
        .find(|n| *n != leader_file)
        .expect("follower");
    println!("cluster up; Raft leader: {leader_file}");
    std::thread::sleep(Duration::from_secs(3));
    print_rss(&c, "idle after bootstrap");

    let leader_ep = c.nodes[&leader_file].endpoint.clone();
    let follower_ep = c.nodes[&follower_file].endpoint.clone();
    if let Some(n) = soak_n {
        rt.block_on(soak(&c, &leader_ep, n));
        return;
    }
    rt.block_on(async {
        // Warm up channels and caches.
        write_latency(&leader_ep, 50).await;
        report(
            "store write via the Raft leader",
            write_latency(&leader_ep, 2000).await,
        );
        report(
            &format!("store write via a follower ({follower_file})"),
            write_latency(&follower_ep, 1000).await,
        );
        report(
            "lease keepalive at the Raft leader",
            keepalive_latency(leader_id, &leader_ep, &cluster_id, 2000).await,
        );
    });
    print_rss(&c, "after the runs");
}
