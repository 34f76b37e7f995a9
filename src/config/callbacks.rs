//! `postgresql.callbacks`, `postgresql.pre_promote` and
//! `postgresql.callback_timeout`: the scripts Patroni users already have.
//!
//! A command is one line, split on whitespace: the first word is the
//! absolute path of an executable, the rest are its first arguments. There
//! is no shell and no quoting (a script does what a shell line would), so
//! what runs is exactly what the file says. pgkeel appends
//! `<action> <role> <scope>` to a callback's arguments, as Patroni does;
//! `pre_promote` gets no arguments of pgkeel's (Patroni's behaviour too).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Deserialize;

use super::validate::Problems;

/// `postgresql.callbacks`: each key names a command run, asynchronously,
/// after that event.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Callbacks {
    /// After pgkeel started PostgreSQL.
    #[serde(default)]
    pub on_start: Option<CallbackCommand>,
    /// After pgkeel stopped PostgreSQL.
    #[serde(default)]
    pub on_stop: Option<CallbackCommand>,
    /// After a restart operation (instead of `on_stop` + `on_start`).
    #[serde(default)]
    pub on_restart: Option<CallbackCommand>,
    /// After a reload operation or a reload of changed parameters.
    #[serde(default)]
    pub on_reload: Option<CallbackCommand>,
    /// After this member's role changed (promoted, or a former primary
    /// running as a standby again).
    #[serde(default)]
    pub on_role_change: Option<CallbackCommand>,
}

impl Callbacks {
    /// Each configured callback with its key name (`on_start`, …).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &CallbackCommand)> {
        [
            ("on_start", &self.on_start),
            ("on_stop", &self.on_stop),
            ("on_restart", &self.on_restart),
            ("on_reload", &self.on_reload),
            ("on_role_change", &self.on_role_change),
        ]
        .into_iter()
        .filter_map(|(key, cmd)| cmd.as_ref().map(|c| (key, c)))
    }
}

/// One command line from the file (see the module docs for the rule).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct CallbackCommand(pub String);

impl CallbackCommand {
    /// The executable and its arguments.
    pub fn words(&self) -> Vec<&str> {
        self.0.split_whitespace().collect()
    }

    /// What is wrong with the command, if anything: one sentence with the
    /// fix. Reads the file system (the executable must exist now).
    fn problem(&self) -> Option<String> {
        let Some(program) = self.words().first().copied() else {
            return Some(
                "is empty — name an executable, e.g. /usr/local/bin/pgkeel-callback, or remove the key"
                    .into(),
            );
        };
        if !Path::new(program).is_absolute() {
            return Some(format!(
                "\"{program}\" is not an absolute path — write the executable's full path, e.g. /usr/local/bin/{program}"
            ));
        }
        match std::fs::metadata(program) {
            Err(e) => Some(format!(
                "cannot use {program}: {e} — install the script there or fix the path"
            )),
            Ok(m) if !m.is_file() => {
                Some(format!("{program} is not a file — name the script itself"))
            }
            Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(format!(
                "{program} is not executable — run chmod +x {program}"
            )),
            Ok(_) => None,
        }
    }
}

/// Checks every configured command and the timeout.
pub(crate) fn check(
    p: &mut Problems,
    callbacks: &Callbacks,
    pre_promote: Option<&CallbackCommand>,
    timeout: std::time::Duration,
) {
    for (key, cmd) in callbacks.iter() {
        p.add_opt(&format!("postgresql.callbacks.{key}"), cmd.problem());
    }
    if let Some(cmd) = pre_promote {
        p.add_opt("postgresql.pre_promote", cmd.problem());
    }
    if timeout.is_zero() {
        p.add(
            "postgresql.callback_timeout",
            "is zero — give callbacks time to run, e.g. 30s",
        );
    }
}
