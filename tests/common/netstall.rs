//! Network stalls on loopback with iptables: every packet to or from one
//! node's gRPC port, and on the node's own outbound connections to its
//! peers, is dropped (not refused: a stall, as a congested or flapping
//! link looks) until the guard drops. The exact rules added are deleted
//! again, also when the caller panics.

use std::collections::BTreeSet;
use std::process::Command;

/// Why iptables cannot be used here, if it cannot.
pub fn unusable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("iptables needs root".into());
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
}

fn rule(flag: &str, port: u16) -> Vec<String> {
    [
        "INPUT",
        "-i",
        "lo",
        "-p",
        "tcp",
        flag,
        &port.to_string(),
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Stall {
    /// Stalls the node listening on `port` whose process is `pid`, towards
    /// the peers listening on `peer_ports`.
    pub fn node(port: u16, pid: u32, peer_ports: &[u16]) -> Result<Stall, String> {
        let mut stall = Stall { rules: Vec::new() };
        let mut ports: BTreeSet<(&str, u16)> = [("--dport", port), ("--sport", port)].into();
        for local in outbound_ports(pid, peer_ports) {
            ports.insert(("--dport", local));
            ports.insert(("--sport", local));
        }
        for (flag, p) in ports {
            let spec = rule(flag, p);
            iptables("-I", &spec)?;
            stall.rules.push(spec);
        }
        Ok(stall)
    }

    /// How many rules this stall added.
    pub fn rules(&self) -> usize {
        self.rules.len()
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        for spec in self.rules.drain(..).rev() {
            if let Err(e) = iptables("-D", &spec) {
                eprintln!("WARNING: could not remove iptables rule {spec:?}: {e}");
            }
        }
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
