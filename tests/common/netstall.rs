//! Network stalls on loopback with iptables: every packet one node's
//! pgkeel process sends (matched by its cgroup v2, so new connections it
//! opens during the stall are dropped too) and every packet to its gRPC
//! port is dropped (not refused: a stall, as a congested or flapping link
//! looks) until the guard drops. The exact rules added are deleted again
//! and the process moved back to the root cgroup, also when the caller
//! panics.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// Where cgroup v2 is mounted (a hybrid layout mounts it at `unified`).
fn cgroup2_root() -> Option<PathBuf> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
}

/// Why iptables cannot be used here, if it cannot.
pub fn unusable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("iptables needs root".into());
    }
    if cgroup2_root().is_none() {
        return Some("no cgroup v2 hierarchy to match a node's packets by".into());
    }
    match Command::new("iptables")
        .args(["-w", "-n", "-L", "INPUT"])
        .output()
    {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`iptables -L INPUT` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("no iptables ({e}); scripts/setup.sh installs it")),
    }
}

/// The DROP rules of one stall; deleted on drop.
pub struct Stall {
    rules: Vec<Vec<String>>,
    /// The cgroup made for the stalled process, and the process.
    cgroup: Option<(PathBuf, u32)>,
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

impl Stall {
    /// Stalls the node listening on `port` whose pgkeel process is `pid`.
    pub fn node(port: u16, pid: u32, peer_ports: &[u16]) -> Result<Stall, String> {
        let root = cgroup2_root().ok_or("no cgroup v2 hierarchy")?;
        let name = format!("pgkeel-stall-{pid}");
        let dir = root.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let mut stall = Stall {
            rules: Vec::new(),
            cgroup: None,
        };
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| format!("moving PID {pid} into {}: {e}", dir.display()))?;
        stall.cgroup = Some((dir, pid));
        // A socket keeps the cgroup it was created in, so the cgroup rule
        // catches the connections the node opens during the stall; the
        // ones it already has are caught by their local ports, and
        // everything towards it by its listening port.
        let mut specs = vec![strings(&[
            "OUTPUT", "-o", "lo", "-m", "cgroup", "--path", &name, "-j", "DROP",
        ])];
        let mut ports: BTreeSet<(&str, u16)> = [("--dport", port), ("--sport", port)].into();
        for local in outbound_ports(pid, peer_ports) {
            ports.insert(("--dport", local));
            ports.insert(("--sport", local));
        }
        for (flag, p) in ports {
            let p = p.to_string();
            specs.push(strings(&[
                "INPUT", "-i", "lo", "-p", "tcp", flag, &p, "-j", "DROP",
            ]));
        }
        // All at once: rule by rule, the stall would start and end over
        // the better part of a second.
        iptables_batch("-I", &specs)?;
        stall.rules = specs;
        Ok(stall)
    }

    /// How many rules this stall added.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        let rules: Vec<Vec<String>> = self.rules.drain(..).collect();
        if let Err(e) = iptables_batch("-D", &rules) {
            // One by one, so every rule that can go goes.
            eprintln!("WARNING: removing the stall's rules at once failed ({e}); one by one");
            for spec in rules {
                if let Err(e) = iptables("-D", &spec) {
                    eprintln!("WARNING: could not remove iptables rule {spec:?}: {e}");
                }
            }
        }
        if let Some((dir, pid)) = self.cgroup.take() {
            if let Some(root) = cgroup2_root() {
                // The process may be gone; then the cgroup is empty anyway.
                let _ = std::fs::write(root.join("cgroup.procs"), pid.to_string());
            }
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("WARNING: could not remove {}: {e}", dir.display());
            }
        }
    }
}

/// Applies `op` (`-I` or `-D`) to every rule in one `iptables-restore
/// --noflush` transaction.
fn iptables_batch(op: &str, specs: &[Vec<String>]) -> Result<(), String> {
    use std::io::Write;
    let mut text = String::from("*filter\n");
    for spec in specs {
        text.push_str(op);
        text.push(' ');
        text.push_str(&spec.join(" "));
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("iptables-restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore {op}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn iptables(op: &str, spec: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(spec)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {op} {}: {}",
            spec.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The local ports of `pid`'s TCP connections to any of `peer_ports` on
/// loopback (from /proc/net/tcp and the process's socket inodes).
fn outbound_ports(pid: u32, peer_ports: &[u16]) -> Vec<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            l.strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
            let remote = port_of(remote)?;
            (inodes.contains(*inode) && peer_ports.contains(&remote)).then(|| port_of(local))?
        })
        .collect()
}
