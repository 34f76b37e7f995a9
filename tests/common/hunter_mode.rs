//! The durability mode a hunt runs under, and setting it on a cluster as
//! an operator would.

use std::time::{Duration, Instant};

use crate::procs::ProcCluster;
use crate::realpg::{runtime, sql_text};

/// Bound on waiting for a mode to take effect.
const WITHIN: Duration = Duration::from_secs(120);

/// The durability setting under test.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// `off`, `on` or `quorum`.
    pub synchronous_mode: &'static str,
    pub strict: bool,
}

impl Mode {
    /// Strict synchronous modes promise that no acknowledged write is lost.
    pub fn lossless(self) -> bool {
        self.synchronous_mode != "off" && self.strict
    }

    pub fn label(self) -> String {
        match (self.synchronous_mode, self.strict) {
            ("off", _) => "async".into(),
            (m, true) => format!("{m} + strict"),
            (m, false) => format!("{m}, not strict"),
        }
    }
}

/// Sets `mode` through `pgkeelctl edit-config` via the node file `via`,
/// as an operator would, and waits (bounded) until the primary at
/// `primary` shows it in `synchronous_standby_names`: empty for off,
/// `ANY k (...)` for quorum, another non-empty list for on. Returns that
/// setting, or why it never took effect.
pub fn set_mode(c: &ProcCluster, via: &str, primary: &str, mode: Mode) -> Result<String, String> {
    let out = c.ctl(
        via,
        &[
            "edit-config",
            "-s",
            &format!("synchronous_mode={}", mode.synchronous_mode),
            "-s",
            &format!("synchronous_mode_strict={}", mode.strict),
            "--force",
        ],
    );
    // edit-config exits 1 when nothing changes, which is fine here.
    if out.status.code() == Some(2) {
        return Err(format!(
            "pgkeelctl edit-config said usage: {}",
            crate::procs::stderr(&out)
        ));
    }
    let deadline = Instant::now() + WITHIN;
    loop {
        let names = query_text(
            primary,
            "select current_setting('synchronous_standby_names')",
        );
        let in_effect = names.as_deref().is_ok_and(|n| match mode.synchronous_mode {
            "off" => n.is_empty(),
            "quorum" => n.starts_with("ANY"),
            _ => !n.is_empty() && !n.starts_with("ANY"),
        });
        if in_effect {
            tracing::info!(?names, mode = mode.label(), "durability mode in effect");
            return names;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "synchronous_mode {} never took effect: synchronous_standby_names on the primary is {names:?} ({})",
                mode.synchronous_mode,
                crate::procs::stderr(&out)
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The first column of the first row of `query` on `host`, as text.
pub fn query_text(host: &str, query: &str) -> Result<String, String> {
    let rt = runtime();
    sql_text(&rt, host, query)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{query} returned no row"))
}
