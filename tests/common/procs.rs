//! Real `pgkeel` / `pgkeel-witness` processes on loopback, started from the
//! example configs with fresh ports and data directories, and `pgkeelctl`
//! to talk to them. Every process is killed by PID when the cluster drops,
//! also when a test panics.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A node of the example cluster: its config file and its process, if running.
pub struct ProcNode {
    pub name: String,
    pub witness: bool,
    pub config: PathBuf,
    pub endpoint: String,
    pub log: PathBuf,
    child: Option<Child>,
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<String, ProcNode>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl ProcCluster {
    /// Copies `config/examples/<example>/*.yaml` with new gRPC ports and a
    /// temporary data directory. Nothing is started yet.
    pub fn from_example(example: &str) -> ProcCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        // PostgreSQL runs as postgresql.os_user, which must reach the data
        // directories below this root-owned temporary directory.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod tempdir");
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/examples")
            .join(example);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
            .expect("example dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        // Every gRPC address in the example files, in order, gets a new port.
        let texts: Vec<String> = files
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("read"))
            .collect();
        let mut ports: BTreeMap<String, String> = BTreeMap::new();
        for t in &texts {
            for line in t.lines().filter(|l| {
                l.trim_start().starts_with("listen:") || l.contains("address: 127.0.0.1:")
            }) {
                if let Some(pos) = line.find("127.0.0.1:") {
                    let addr: String = line[pos..]
                        .chars()
                        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                        .collect();
                    ports
                        .entry(addr)
                        .or_insert_with(|| format!("127.0.0.1:{}", free_port()));
                }
            }
        }
        let data = dir.path().join("data");
        let mut nodes = BTreeMap::new();
        for (file, text) in files.iter().zip(texts) {
            let mut t = text.replace("data_dir: ./", &format!("data_dir: {}/", data.display()));
            // Longest first, so 127.0.0.1:7001 never rewrites 127.0.0.1:70010.
            let mut keys: Vec<_> = ports.keys().cloned().collect();
            keys.sort_by_key(|k| std::cmp::Reverse(k.len()));
            for k in keys {
                t = t.replace(&k, &ports[&k]);
            }
            let name = file.file_stem().unwrap().to_string_lossy().to_string();
            let path = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&path, &t).expect("write config");
            let yaml: serde_norway::Value = serde_norway::from_str(&t).expect("example parses");
            let endpoint = yaml["raft"]["listen"]
                .as_str()
                .expect("raft.listen")
                .to_string();
            nodes.insert(
                name.clone(),
                ProcNode {
                    witness: name.starts_with("witness"),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    config: path,
                    endpoint,
                    child: None,
                },
            );
        }
        ProcCluster { dir, nodes }
    }

    /// Writes the config of a new node `name` with Raft id `id`, modelled
    /// on `template`'s file (a data node or the witness): fresh ports and
    /// data directories, `raft.join: true`, and the template's peer list
    /// plus itself. Not started; start it with `start(name)` and add it
    /// with `pgkeelctl member add`. Returns its gRPC address.
    pub fn add_joining_node(&mut self, name: &str, template: &str, id: u64) -> String {
        use serde_norway::Value;
        let witness = self.nodes[template].witness;
        let text = std::fs::read_to_string(&self.nodes[template].config).expect("read template");
        let mut v: Value = serde_norway::from_str(&text).expect("template parses");
        let data = self.dir.path().join("data").join(name);
        let grpc = format!("127.0.0.1:{}", free_port());
        let s = |x: &str| Value::String(x.to_string());
        v["name"] = s(name);
        v["raft"]["node_id"] = Value::from(id);
        v["raft"]["listen"] = s(&grpc);
        v["raft"]["data_dir"] = s(&data.join("raft").display().to_string());
        v["raft"]["join"] = Value::Bool(true);
        let mut me = serde_norway::Mapping::new();
        me.insert(s("id"), Value::from(id));
        me.insert(s("name"), s(name));
        me.insert(s("address"), s(&grpc));
        me.insert(s("witness"), Value::Bool(witness));
        v["raft"]["peers"]
            .as_sequence_mut()
            .expect("raft.peers")
            .push(Value::Mapping(me));
        if !witness {
            for section in ["restapi", "postgresql"] {
                let addr = format!("127.0.0.1:{}", free_port());
                v[section]["listen"] = s(&addr);
                v[section]["connect_address"] = s(&addr);
            }
            v["postgresql"]["data_dir"] = s(&data.join("pgdata").display().to_string());
        }
        let path = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, serde_norway::to_string(&v).expect("yaml")).expect("write config");
        self.nodes.insert(
            name.to_string(),
            ProcNode {
                name: name.to_string(),
                witness,
                log: self.dir.path().join(format!("{name}.log")),
                config: path,
                endpoint: grpc.clone(),
                child: None,
            },
        );
        grpc
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn start(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("node");
        assert!(node.child.is_none(), "{name} already runs");
        // PGKEEL_WITNESS_BIN runs another witness build, e.g. the shipped
        // `--no-default-features` one, to measure its memory.
        let witness_bin = std::env::var("PGKEEL_WITNESS_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_pgkeel-witness").to_string());
        let bin = if node.witness {
            witness_bin.as_str()
        } else {
            env!("CARGO_BIN_EXE_pgkeel")
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&node.config)
            // PGKEEL_NODE_LOG overrides the filter, e.g. to debug a bench.
            .env(
                "RUST_LOG",
                std::env::var("PGKEEL_NODE_LOG")
                    .unwrap_or_else(|_| "pgkeel=info,openraft=warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn node");
        tracing::info!(name, pid = child.id(), "started");
        node.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for n in self.names() {
            self.start(&n);
        }
    }

    /// SIGTERM, as systemd's stop would send, and wait for the process to exit.
    pub fn sigterm(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("node");
        if let Some(mut child) = node.child.take() {
            tracing::info!(name, pid = child.id(), "SIGTERM");
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on the PID of our own child, which we have not reaped yet.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "{name} did not exit within 60 s of SIGTERM\n{}",
                            self.logs()
                        );
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// `host:port` of a data node's REST API (its rewritten `restapi.listen`).
    pub fn rest_address(&self, file: &str) -> String {
        let text = std::fs::read_to_string(&self.nodes[file].config).expect("config");
        let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("config parses");
        yaml["restapi"]["listen"]
            .as_str()
            .expect("restapi.listen")
            .to_string()
    }

    /// `pgkeelctl list --format json` through `via`.
    pub fn list(&self, via: &str) -> Option<serde_json::Value> {
        let out = self.ctl(via, &["--format", "json", "list"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Waits until `list` shows one leader running and every other data
    /// member streaming; returns the leader's name and every member's
    /// PostgreSQL host:port by name.
    pub fn wait_streaming(
        &self,
        data_members: usize,
        within: Duration,
    ) -> (String, BTreeMap<String, String>) {
        self.try_streaming(data_members, within)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// [`Self::wait_streaming`] that says why instead of panicking: the
    /// last `list` seen when `within` has passed.
    pub fn try_streaming(
        &self,
        data_members: usize,
        within: Duration,
    ) -> Result<(String, BTreeMap<String, String>), String> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            let via = self
                .nodes
                .values()
                .find(|n| n.child.is_some())
                .map(|n| n.name.clone())
                .ok_or("no node runs")?;
            if let Some(list) = self.list(&via) {
                let members = list["members"].as_array().cloned().unwrap_or_default();
                let data: Vec<_> = members.iter().filter(|m| m["role"] != "witness").collect();
                let leader: Vec<_> = data
                    .iter()
                    .filter(|m| m["role"] == "leader" && m["state"] == "running")
                    .collect();
                let streaming = data
                    .iter()
                    .filter(|m| {
                        // A synchronous standby is a replica too.
                        matches!(
                            m["role"].as_str(),
                            Some("replica" | "sync_standby" | "quorum_standby")
                        ) && m["state"] == "streaming"
                    })
                    .count();
                if data.len() == data_members && leader.len() == 1 && streaming == data_members - 1
                {
                    let hosts = data
                        .iter()
                        .map(|m| {
                            (
                                m["name"].as_str().unwrap_or_default().to_string(),
                                m["host"].as_str().unwrap_or_default().to_string(),
                            )
                        })
                        .collect();
                    return Ok((
                        leader[0]["name"].as_str().unwrap_or_default().to_string(),
                        hosts,
                    ));
                }
                last = Some(list);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not one leader + streaming replicas within {within:?}: {last:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The example file stem of the member named `member` (node1 → node1, witness1 → witness).
    pub fn file_of(&self, member: &str) -> String {
        self.nodes
            .values()
            .find(|n| {
                std::fs::read_to_string(&n.config).is_ok_and(|t| {
                    t.lines().any(|l| {
                        l.trim() == format!("name: {member}")
                            || l.trim().starts_with(&format!("name: {member} "))
                    })
                })
            })
            .map(|n| n.name.clone())
            .unwrap_or_else(|| member.to_string())
    }

    /// The `postgresql.data_dir` in the node's (rewritten) config file.
    pub fn pg_data_dir(&self, file: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.nodes[file].config).expect("read config");
        let yaml: serde_norway::Value = serde_norway::from_str(&text).expect("config parses");
        PathBuf::from(
            yaml["postgresql"]["data_dir"]
                .as_str()
                .expect("postgresql.data_dir"),
        )
    }

    /// The PID of a running node.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.nodes[name].child.as_ref().map(Child::id)
    }

    /// The PID of the node's postmaster: the first line of its
    /// `postmaster.pid`, when that file exists and names a live process.
    pub fn postmaster_pid(&self, file: &str) -> Option<i32> {
        let text = std::fs::read_to_string(self.pg_data_dir(file).join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        // SAFETY: kill(pid, 0) only checks that the process exists.
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the node's pgkeel process.
    pub fn signal(&self, name: &str, signal: i32) {
        if let Some(pid) = self.pid(name).and_then(|p| i32::try_from(p).ok()) {
            tracing::info!(name, pid, signal, "signal");
            // SAFETY: kill(2) on the PID of our own child, not yet reaped.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// SIGSTOPs the named nodes; the returned guard SIGCONTs them when
    /// dropped, also when an assertion fails before the cluster's own
    /// teardown kills them.
    pub fn sigstop<'a>(&'a self, names: &'a [String]) -> Resume<'a> {
        for n in names {
            self.signal(n, libc::SIGSTOP);
        }
        Resume(self, names)
    }

    /// Replaces one `key: value` line of the node's config file (the first
    /// line whose key, commented out or not, is `key`); effective from the
    /// node's next start.
    pub fn set_config_line(&self, file: &str, key: &str, value: &str) {
        let path = &self.nodes[file].config;
        let text = std::fs::read_to_string(path).expect("read config");
        let pat = format!("{key}:");
        let mut done = false;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let body = l.trim_start().trim_start_matches("# ");
                if !done && body.starts_with(&pat) {
                    done = true;
                    let indent = &l[..l.len() - l.trim_start().len()];
                    format!("{indent}{key}: {value}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert!(done, "{} has no `{key}:` line", path.display());
        std::fs::write(path, lines.join("\n") + "\n").expect("write config");
    }

    /// Sets tag `key` to `value` (YAML) in the node's `tags:` section:
    /// rewrites its line, or adds one for a free-form tag. Effective from
    /// the node's next start.
    pub fn set_tag(&self, file: &str, key: &str, value: &str) {
        let path = &self.nodes[file].config;
        let text = std::fs::read_to_string(path).expect("read config");
        let (head, tags) = text
            .split_once("\ntags:\n")
            .unwrap_or_else(|| panic!("{} has no tags section", path.display()));
        let line = format!("  {key}: {value}");
        let tags = match tags
            .lines()
            .take_while(|l| l.starts_with("  "))
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        {
            Some(old) => tags.replacen(old, &line, 1),
            None => format!("{line}\n{tags}"),
        };
        std::fs::write(path, format!("{head}\ntags:\n{tags}")).expect("write config");
    }

    /// Adds `line` (e.g. `admin_token: x`) to the `raft:` section of the
    /// node's file, before its `peers:` list.
    pub fn add_raft_line(&self, file: &str, line: &str) {
        self.insert_line(
            file,
            "\n  peers:",
            "raft.peers",
            &format!("\n  {line}\n  peers:"),
        );
    }

    /// Adds `line` (e.g. `pre_promote: /usr/local/bin/fence`) at the top of
    /// the `postgresql:` section of the node's file; effective from the
    /// node's next start.
    pub fn add_postgresql_line(&self, file: &str, line: &str) {
        let with = format!("\npostgresql:\n  {line}\n");
        self.insert_line(file, "\npostgresql:\n", "postgresql section", &with);
    }

    /// Replaces the first `anchor` in the node's file with `with`.
    fn insert_line(&self, file: &str, anchor: &str, what: &str, with: &str) {
        let path = &self.nodes[file].config;
        let text = std::fs::read_to_string(path).expect("read config");
        assert!(text.contains(anchor), "{} has no {what}", path.display());
        std::fs::write(path, text.replacen(anchor, with, 1)).expect("write config");
    }

    /// Loses a data node's machine: SIGKILL of its pgkeel and then of its
    /// postmaster (by the PID in `postmaster.pid`). Returns that PID.
    pub fn kill_machine(&mut self, file: &str) -> Option<i32> {
        let postmaster = self.postmaster_pid(file);
        tracing::info!(file, ?postmaster, "kill -9 pgkeel and its postmaster");
        self.kill9(file);
        if let Some(pid) = postmaster {
            // SAFETY: kill(2) on the PID from this node's postmaster.pid,
            // checked alive just above.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        postmaster
    }

    /// Turns on `raft.tls` in every node's file, with a fresh CA and a
    /// certificate per node from `scripts/gen-test-certs.sh`, plus a client
    /// certificate `admin` for pgkeelctl. Returns the certificates' directory.
    pub fn enable_tls(&self, verify_client: bool) -> PathBuf {
        let certs = self.dir.path().join("tls");
        let names = self.names();
        let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
        all.push("admin");
        gen_certs(&certs, &all);
        for name in &names {
            let line = format!(
                "tls: {{ certfile: {dir}/{name}.crt, keyfile: {dir}/{name}.key, cafile: {dir}/ca.crt, verify_client: {verify_client} }}",
                dir = certs.display()
            );
            self.add_raft_line(name, &line);
        }
        certs
    }

    /// Sets `bootstrap.dcs.ttl` in every node's file: before the first
    /// start, since only the bootstrapping node's copy reaches the store.
    pub fn set_ttl(&self, ttl: Duration) {
        for name in self.names().into_iter().filter(|n| !self.nodes[n].witness) {
            self.set_config_line(&name, "ttl", &format!("{}ms", ttl.as_millis()));
        }
    }

    /// The gRPC port of a node (its `raft.listen`).
    pub fn grpc_port(&self, name: &str) -> u16 {
        self.nodes[name]
            .endpoint
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("raft.listen has a port")
    }

    /// The leader `list` shows as running, asked through any running data
    /// node but `except` (a stopped or stalled one would not answer).
    pub fn running_leader(&self, except: &[&str]) -> Option<(String, Option<u64>)> {
        self.nodes
            .values()
            .filter(|n| n.child.is_some() && !n.witness && !except.contains(&n.name.as_str()))
            .find_map(|n| {
                let list = self.list(&n.name)?;
                let m = list["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["role"] == "leader" && m["state"] == "running")?;
                Some((m["name"].as_str()?.to_string(), m["timeline"].as_u64()))
            })
    }

    /// Waits until a member other than `old` is listed as the running
    /// leader; returns it.
    pub fn wait_new_leader(&self, old: &str, except: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some((name, _)) = self.running_leader(except) {
                if name != old {
                    return name;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no member but {old} became leader within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Each data member's timeline as `list` through `via` shows it.
    pub fn timelines(&self, via: &str) -> BTreeMap<String, Option<u64>> {
        self.list(via)
            .and_then(|l| l["members"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|m| m["role"] != "witness")
            .filter_map(|m| Some((m["name"].as_str()?.to_string(), m["timeline"].as_u64())))
            .collect()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill9(&mut self, name: &str) {
        let node = self.nodes.get_mut(name).expect("node");
        if let Some(mut child) = node.child.take() {
            tracing::info!(name, pid = child.id(), "kill -9");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `pgkeelctl ARGS` through `via`, which must exit 0; its stdout.
    pub fn ctl_ok(&self, via: &str, args: &[&str]) -> String {
        let out = self.ctl(via, args);
        assert!(
            out.status.success(),
            "pgkeelctl {args:?} failed: {} / {}\n{}",
            stdout(&out),
            stderr(&out),
            self.logs()
        );
        stdout(&out)
    }

    /// `pgkeelctl ARGS` with only `via`'s endpoint: no config file, so no
    /// secret or token.
    pub fn ctl_anonymous(&self, via: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pgkeelctl"))
            .env_remove("PGKEEL_SECRET")
            .env_remove("PGKEEL_TOKEN")
            .env_remove("PGKEEL_CONFIG")
            .arg("--endpoint")
            .arg(&self.nodes[via].endpoint)
            .args(args)
            .output()
            .expect("run pgkeelctl")
    }

    pub fn ctl(&self, via: &str, args: &[&str]) -> Output {
        let node = &self.nodes[via];
        Command::new(env!("CARGO_BIN_EXE_pgkeelctl"))
            .arg("--config")
            .arg(&node.config)
            .arg("--endpoint")
            .arg(&node.endpoint)
            .args(args)
            .output()
            .expect("run pgkeelctl")
    }

    /// `pgkeelctl store put` through `via`.
    pub fn put(&self, via: &str, key: &str, value: &str) -> Result<(), String> {
        let out = self.ctl(via, &["store", "put", key, value]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Retries a put through `via` until it succeeds or `within` passes
    /// (a Raft election may be under way).
    pub fn put_eventually(&self, via: &str, key: &str, value: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.put(via, key, value) {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(via, "put not yet accepted: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "put {key} through {via} never succeeded: {e}\n{}",
                    self.logs()
                ),
            }
        }
    }

    /// The value of `key` read through `via` (linearizable or local).
    pub fn get(&self, via: &str, key: &str, linearizable: bool) -> Result<Option<String>, String> {
        let mut args = vec!["--format", "json", "store", "get", key];
        if linearizable {
            args.push("--linearizable");
        }
        let out = self.ctl(via, &args);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        Ok(v["kvs"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|kv| kv["value"].as_str())
            .map(str::to_string))
    }

    /// `pgkeelctl raft status --format json` through `via`.
    pub fn status(&self, via: &str) -> Option<serde_json::Value> {
        let out = self.ctl(via, &["--format", "json", "raft", "status"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Waits until every running node reports the same leader and every
    /// voter it lists as reachable.
    pub fn wait_healthy(&self, within: Duration) {
        let running: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.child.is_some())
            .map(|n| n.name.clone())
            .collect();
        let running: Vec<&str> = running.iter().map(String::as_str).collect();
        self.wait_healthy_among(&running, within);
    }

    /// Like `wait_healthy`, for the named nodes only.
    pub fn wait_healthy_among(&self, running: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let statuses: Vec<_> = running.iter().map(|n| self.status(n)).collect();
            let ok = statuses.iter().all(|s| {
                s.as_ref().is_some_and(|s| {
                    !s["leader"].is_null()
                        && s["voters"].as_array().is_some_and(|v| {
                            v.iter().filter(|x| x["reachable"] == true).count() == running.len()
                        })
                })
            }) && statuses.windows(2).all(|w| {
                w[0].as_ref().map(|s| s["leader"].clone())
                    == w[1].as_ref().map(|s| s["leader"].clone())
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not healthy within {within:?}: {statuses:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the node's log holds a line containing every one of
    /// `parts`.
    pub fn wait_log(&self, node: &str, parts: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read_to_string(&self.nodes[node].log).unwrap_or_default();
            if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{node} never logged {parts:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tail of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .values()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<_> = text
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("--- {} ---\n{}", n.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Stopped nodes, resumed on drop (see [`ProcCluster::sigstop`]).
pub struct Resume<'a>(&'a ProcCluster, &'a [String]);

impl Drop for Resume<'_> {
    fn drop(&mut self) {
        for n in self.1 {
            self.0.signal(n, libc::SIGCONT);
        }
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for name in self.names() {
            self.kill9(&name);
        }
        // PGKEEL_TEST_LOGS=DIR keeps every node's whole log there, to read
        // a failure in full (the panic message shows only the tails).
        if let Some(dir) = std::env::var_os("PGKEEL_TEST_LOGS") {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            for n in self.nodes.values() {
                let _ = std::fs::copy(&n.log, dir.join(format!("{}.log", n.name)));
            }
        }
    }
}

/// Runs `scripts/gen-test-certs.sh DIR NAME...`: a CA in `dir` (made once)
/// and a certificate for each name, valid for localhost and 127.0.0.1.
pub fn gen_certs(dir: &Path, names: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-test-certs.sh");
    let out = Command::new(script)
        .arg(dir)
        .args(names)
        .output()
        .expect("run scripts/gen-test-certs.sh");
    assert!(
        out.status.success(),
        "gen-test-certs.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP/1.1 request over a fresh connection: the status code and the
/// body (`None` when the server is not reachable or answers garbage).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A command's stdout, trimmed.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A command's stderr, trimmed.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// `out` is a refusal: exit 1 and one sentence on stderr that contains
/// `says`. Returns that sentence.
pub fn refusal(out: &Output, says: &str) -> String {
    let e = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a refusal, got {:?}: {} / {e}",
        out.status.code(),
        stdout(out)
    );
    assert_eq!(e.lines().count(), 1, "one sentence: {e}");
    assert!(e.contains(says), "stderr should say {says:?}: {e}");
    e
}
