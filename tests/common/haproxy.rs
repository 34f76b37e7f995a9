//! Real HAProxy in front of a [`ProcCluster`], from the shipped
//! `config/examples/haproxy.cfg` with only its addresses rewritten: each
//! server's PostgreSQL address and check port become the node's rewritten
//! ones, and the frontends (5000, 5001, 7000) get free ports. HAProxy runs
//! in the foreground as our child and is killed by PID on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{free_port, ProcCluster};

/// The `haproxy` program: on PATH, else where Debian puts it (root's PATH
/// may lack /usr/sbin).
pub fn binary() -> Option<PathBuf> {
    tool("haproxy", &["/usr/sbin", "/usr/local/sbin"])
}

/// `name` on PATH or in one of `extra`, if executable.
pub fn tool(name: &str, extra: &[&str]) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A running HAProxy.
pub struct Haproxy {
    child: Child,
    /// `host:port` of the read-write frontend (5000 in the example).
    pub primary: String,
    /// `host:port` of the read-only frontend (5001 in the example).
    pub replicas: String,
    /// `host:port` of the stats page (7000 in the example).
    pub stats: String,
    pub log: PathBuf,
}

/// `key`'s value in a YAML file.
fn yaml_str(path: &Path, section: &str, key: &str) -> String {
    let text = std::fs::read_to_string(path).expect("read config");
    let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("config parses");
    yaml[section][key]
        .as_str()
        .unwrap_or_else(|| panic!("{section}.{key} in {}", path.display()))
        .to_string()
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("host:port")
}

impl Haproxy {
    /// Rewrites the example config for `c` (built from `example`) and
    /// starts HAProxy on it; waits until it listens.
    pub fn start(c: &ProcCluster, example: &str, bin: &Path) -> Haproxy {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        // Example address (and check port) → this cluster's.
        let mut addrs: BTreeMap<String, String> = BTreeMap::new();
        let mut check_ports: BTreeMap<String, String> = BTreeMap::new();
        for (file, node) in c.nodes.iter().filter(|(_, n)| !n.witness) {
            let original = root.join(example).join(format!("{file}.yaml"));
            addrs.insert(
                yaml_str(&original, "postgresql", "listen"),
                yaml_str(&node.config, "postgresql", "listen"),
            );
            check_ports.insert(
                port_of(&yaml_str(&original, "restapi", "listen")),
                port_of(&yaml_str(&node.config, "restapi", "listen")),
            );
        }
        let frontends: BTreeMap<&str, String> =
            ["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:7000"]
                .into_iter()
                .map(|a| (a, format!("127.0.0.1:{}", free_port())))
                .collect();
        let text = std::fs::read_to_string(root.join("haproxy.cfg")).expect("haproxy.cfg");
        let mut servers = 0;
        // Token by token, so a new port never gets rewritten a second time.
        let cfg: Vec<String> = text
            .lines()
            .map(|line| {
                let indent = &line[..line.len() - line.trim_start().len()];
                let tokens: Vec<&str> = line.split_whitespace().collect();
                if tokens.first() == Some(&"server") {
                    servers += 1;
                }
                let out: Vec<String> = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        let after_port = i > 0 && tokens[i - 1] == "port";
                        match (after_port, check_ports.get(*t)) {
                            (true, Some(p)) => p.clone(),
                            _ => addrs
                                .get(*t)
                                .or(frontends.get(t))
                                .cloned()
                                .unwrap_or_else(|| t.to_string()),
                        }
                    })
                    .collect();
                format!("{indent}{}", out.join(" "))
            })
            .collect();
        assert_eq!(
            servers,
            2 * addrs.len(),
            "haproxy.cfg names every data node in both listeners"
        );
        let path = c.dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg.join("\n") + "\n").expect("write haproxy.cfg");
        let check = Command::new(bin)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects the rewritten example config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = c.dir.path().join("haproxy.log");
        let out = std::fs::File::create(&log).expect("haproxy log");
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("spawn haproxy");
        tracing::info!(pid = child.id(), cfg = %path.display(), "haproxy started");
        let mut h = Haproxy {
            child,
            primary: frontends["127.0.0.1:5000"].clone(),
            replicas: frontends["127.0.0.1:5001"].clone(),
            stats: frontends["127.0.0.1:7000"].clone(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&frontends["127.0.0.1:7000"]).is_err() {
            let exited = h.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "haproxy did not come up ({exited:?}): {}",
                std::fs::read_to_string(&h.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        h
    }
}

impl Haproxy {
    /// Each server's check status by `(listener, server)` (`UP`, `DOWN`,
    /// `UP 1/2`, ...) from the stats page's CSV; empty when it does not
    /// answer.
    pub fn states(&self) -> BTreeMap<(String, String), String> {
        let Some((200, body)) = crate::procs::http(&self.stats, "GET", "/;csv", &[], "") else {
            return BTreeMap::new();
        };
        // Column 18 is `status`; chunk-size lines of a chunked body have
        // no commas and drop out.
        body.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > 17 && !f[0].starts_with('#'))
            .filter(|f| f[1] != "FRONTEND" && f[1] != "BACKEND")
            .map(|f| ((f[0].to_string(), f[1].to_string()), f[17].to_string()))
            .collect()
    }

    /// Waits until HAProxy sends the read-write listener to `primary` only
    /// and the read-only listener to `replicas` only (server names are the
    /// example's file stems).
    pub fn wait_routes(&self, primary: &str, replicas: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let states = self.states();
            // Settled: fully UP where wanted; elsewhere not routable at
            // all. A server going down ("UP 1/3") still gets sessions.
            let up = |listener: &str, server: &str| {
                let state = states.get(&(listener.to_string(), server.to_string()));
                match state.map(String::as_str) {
                    Some("UP") => Some(true),
                    Some(s) if s.starts_with("UP") || s == "NOLB" => None,
                    _ => Some(false),
                }
            };
            let servers: Vec<&String> = states
                .keys()
                .filter(|(l, _)| l == "primary")
                .map(|(_, s)| s)
                .collect();
            let settled = !servers.is_empty()
                && servers.iter().all(|s| {
                    up("primary", s) == Some(s.as_str() == primary)
                        && up("replicas", s) == Some(replicas.contains(&s.as_str()))
                });
            if settled {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy did not route writes to {primary} and reads to {replicas:?} within {within:?}: {states:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
