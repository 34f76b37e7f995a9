//! The configuration files pgkeel writes into the data directory.
//!
//! - `pgkeel.conf` is the server's `config_file` (`postgres -c
//!   config_file=…`). It first `include_if_exists`es the user's
//!   `postgresql.conf` (never edited, as initdb or a copy left it), then sets
//!   pgkeel's settings, so pgkeel's win. Precedence, lowest first: pgkeel's
//!   [`DEFAULTS`], the cluster-wide dynamic parameters, the node's
//!   `postgresql.parameters` — except the [`MUST_MATCH`] settings, where the
//!   cluster-wide value wins so no standby refuses to start — and last the
//!   [`OWNED`] settings only pgkeel writes (a value for them in parameters is
//!   ignored with a warning). `ALTER SYSTEM` (`postgresql.auto.conf`) still
//!   overrides everything, as in plain PostgreSQL.
//! - `pg_hba.conf`: pgkeel's own line first — `local all <superuser> peer
//!   map=pgkeel` — then `postgresql.pg_hba`; when that list is empty the
//!   file's existing lines are kept below pgkeel's. pgkeel connects over the
//!   node's socket as the superuser; peer authentication with the `pgkeel`
//!   ident map lets exactly two OS users do that without a password: the
//!   one pgkeel runs as and `os_user`. `trust` would let every local user
//!   in, and a password does not exist yet right after initdb.
//! - `pg_ident.conf`: the user's lines, minus any `pgkeel` map lines, plus
//!   pgkeel's map lines.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::config::{PgListen, Scalar};

use super::types::WantedRole;
use super::PgError;

/// pgkeel's settings file in the data directory.
pub const SETTINGS_FILE: &str = "pgkeel.conf";
/// `synchronous_standby_names` alone, included last by [`SETTINGS_FILE`]:
/// the primary changes it without rewriting the rest, and it survives an
/// agent restart (the setting in force is what the disk says).
pub const SYNC_FILE: &str = "pgkeel.sync.conf";

/// The text of [`SYNC_FILE`].
pub fn render_sync(value: &str) -> String {
    format!(
        "# Written by pgkeel (synchronous_mode); edits here are lost.\nsynchronous_standby_names = {}\n",
        quote(value)
    )
}
/// The client authentication file pgkeel writes.
pub const HBA_FILE: &str = "pg_hba.conf";
/// The ident map file pgkeel adds its map to.
pub const IDENT_FILE: &str = "pg_ident.conf";
/// The ident map name of pgkeel's local superuser line.
pub const IDENT_MAP: &str = "pgkeel";
/// Suffix of every line pgkeel adds to a file it shares with the user.
const MARK: &str = "# pgkeel";

/// Settings pgkeel sets unless a parameter says otherwise: what streaming
/// replication and pg_rewind need, and a cap on WAL kept for an abandoned
/// slot so it cannot fill the primary's disk.
pub const DEFAULTS: [(&str, &str); 7] = [
    ("wal_level", "replica"),
    ("hot_standby", "on"),
    ("wal_log_hints", "on"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "128MB"),
    ("max_slot_wal_keep_size", "8GB"),
];

/// Settings a standby must have at least as high as its primary, or it
/// refuses to start: the cluster-wide value wins over a node's own.
pub const MUST_MATCH: [&str; 5] = [
    "max_connections",
    "max_wal_senders",
    "max_worker_processes",
    "max_prepared_transactions",
    "max_locks_per_transaction",
];

/// Settings only pgkeel writes.
pub const OWNED: [&str; 11] = [
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "hba_file",
    "ident_file",
    "config_file",
    "data_directory",
    "primary_conninfo",
    "primary_slot_name",
    "recovery_target_timeline",
    "synchronous_standby_names",
];

/// Everything `pgkeel.conf` depends on.
pub struct Settings<'a> {
    /// The data directory (for `hba_file`, `ident_file`).
    pub data_dir: &'a Path,
    /// `listen_addresses` and `port`.
    pub listen: &'a PgListen,
    /// The value of `unix_socket_directories`.
    pub socket_dirs: &'a str,
    /// The node's `postgresql.parameters`.
    pub local: &'a BTreeMap<String, Scalar>,
    /// The cluster-wide dynamic parameters.
    pub cluster: &'a BTreeMap<String, Scalar>,
    /// Primary, or standby of whom.
    pub role: &'a WantedRole,
}

/// The text of `pgkeel.conf`, and the names of parameters ignored because
/// pgkeel owns them (for a warning).
pub fn render_settings(s: &Settings<'_>) -> (String, Vec<String>) {
    let mut merged: BTreeMap<&str, String> = DEFAULTS.iter().map(|(k, v)| (*k, quote(v))).collect();
    for (k, v) in s.cluster {
        merged.insert(k, value(v));
    }
    for (k, v) in s.local {
        if !(MUST_MATCH.contains(&k.as_str()) && s.cluster.contains_key(k)) {
            merged.insert(k, value(v));
        }
    }
    let ignored: Vec<String> = merged
        .keys()
        .filter(|k| OWNED.contains(k))
        .map(|k| (*k).to_owned())
        .collect();
    merged.retain(|k, _| !OWNED.contains(k));

    let mut out = String::from(
        "# Written by pgkeel before every start; edits here are lost.\n\
         # Your settings: postgresql.conf (included first) or postgresql.parameters.\n\
         include_if_exists 'postgresql.conf'\n\n",
    );
    for (k, v) in &merged {
        let _ = writeln!(out, "{k} = {v}");
    }
    out.push_str("\n# owned by pgkeel\n");
    let dir = s.data_dir.to_string_lossy();
    let owned = [
        ("listen_addresses", quote(&s.listen.listen_addresses())),
        ("port", s.listen.port.to_string()),
        ("unix_socket_directories", quote(s.socket_dirs)),
        ("hba_file", quote(&format!("{dir}/{HBA_FILE}"))),
        ("ident_file", quote(&format!("{dir}/{IDENT_FILE}"))),
    ];
    for (k, v) in owned {
        let _ = writeln!(out, "{k} = {v}");
    }
    if let WantedRole::Standby {
        primary_conninfo,
        primary_slot_name,
    } = s.role
    {
        let _ = writeln!(out, "primary_conninfo = {}", quote(primary_conninfo));
        if let Some(slot) = primary_slot_name {
            let _ = writeln!(out, "primary_slot_name = {}", quote(slot));
        }
        out.push_str("recovery_target_timeline = 'latest'\n");
    }
    let _ = writeln!(out, "include_if_exists '{SYNC_FILE}'");
    (out, ignored)
}

/// `pg_hba.conf`: pgkeel's local line, then the configured lines, or the
/// existing file's own lines when none are configured.
pub fn render_hba(superuser: &str, lines: &[String], existing: Option<&str>) -> String {
    let mut out = format!(
        "# pgkeel: written before every start from postgresql.pg_hba; lines marked pgkeel are its own.\n\
         local all {} peer map={IDENT_MAP}  {MARK}\n",
        hba_name(superuser)
    );
    if lines.is_empty() {
        for line in existing.unwrap_or("").lines().filter(|l| !is_ours(l)) {
            out.push_str(line);
            out.push('\n');
        }
    } else {
        for line in lines {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// `pg_ident.conf`: the existing lines minus pgkeel's map, then the map
/// from each OS user pgkeel trusts to the superuser.
pub fn render_ident(existing: Option<&str>, os_users: &[&str], superuser: &str) -> String {
    let mut out = String::new();
    for line in existing.unwrap_or("").lines() {
        let first = line.split_whitespace().next();
        if !is_ours(line) && first != Some(IDENT_MAP) {
            out.push_str(line);
            out.push('\n');
        }
    }
    let mut seen = Vec::new();
    for user in os_users.iter().filter(|u| !u.is_empty()) {
        if !seen.contains(user) {
            seen.push(user);
            let _ = writeln!(
                out,
                "{IDENT_MAP} {} {}  {MARK}",
                hba_name(user),
                hba_name(superuser)
            );
        }
    }
    out
}

fn is_ours(line: &str) -> bool {
    line.trim_end().ends_with(MARK) || line.starts_with("# pgkeel:")
}

/// A user name in pg_hba/pg_ident syntax: double-quoted when it is not
/// plain, with `"` doubled.
fn hba_name(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A parameter value in `postgresql.conf` syntax.
fn value(v: &Scalar) -> String {
    match v {
        Scalar::Bool(true) => "on".into(),
        Scalar::Bool(false) => "off".into(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => quote(s),
    }
}

/// A single-quoted `postgresql.conf` string; the parser unescapes `\\`.
fn quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('\'', "''")
        .replace('\n', "\\n")
        .replace('\r', "\\r");
    format!("'{escaped}'")
}

/// A libpq `keyword=value` connection string, every value quoted.
pub fn conninfo(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses a `keyword=value` connection string into its pairs (libpq rules:
/// values optionally single-quoted, `\` escapes). URIs are not supported.
pub fn parse_conninfo(text: &str) -> Result<Vec<(String, String)>, PgError> {
    let bad = |why: &str| {
        PgError::Setup(format!(
            "the connection string is malformed ({why}) — write it as keyword=value pairs, e.g. host=10.0.0.1 port=5432 user=replicator"
        ))
    };
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("no '=' after \"{key}\"")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut val = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quote")),
                    Some('\'') => break,
                    Some('\\') => val.push(chars.next().ok_or_else(|| bad("trailing backslash"))?),
                    Some(c) => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    val.push(chars.next().ok_or_else(|| bad("trailing backslash"))?);
                } else {
                    val.push(c);
                }
            }
        }
        out.push((key, val));
    }
}

/// Splits the password out of a connection string, so a tool gets it
/// through `PGPASSWORD` instead of its command line (visible in `ps`).
pub fn split_password(text: &str) -> Result<(String, Option<String>), PgError> {
    let mut password = None;
    let mut rest = Vec::new();
    for (k, v) in parse_conninfo(text)? {
        if k == "password" {
            password = Some(v);
        } else {
            rest.push((k, v));
        }
    }
    let pairs: Vec<(&str, &str)> = rest.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ok((conninfo(&pairs), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listen() -> PgListen {
        PgListen {
            hosts: vec!["127.0.0.1".into()],
            port: 5433,
        }
    }

    #[test]
    fn settings_precedence_and_ownership() {
        let cluster = BTreeMap::from([
            ("max_connections".to_owned(), Scalar::Int(200)),
            ("work_mem".to_owned(), Scalar::Str("8MB".into())),
        ]);
        let local = BTreeMap::from([
            ("max_connections".to_owned(), Scalar::Int(50)),
            ("work_mem".to_owned(), Scalar::Str("16MB".into())),
            ("fsync".to_owned(), Scalar::Bool(false)),
            ("port".to_owned(), Scalar::Int(1)),
            (
                "max_slot_wal_keep_size".to_owned(),
                Scalar::Str("1GB".into()),
            ),
        ]);
        let role = WantedRole::Standby {
            primary_conninfo: conninfo(&[("host", "10.0.0.1"), ("password", "it's")]),
            primary_slot_name: Some("n2".into()),
        };
        let s = Settings {
            data_dir: Path::new("/d/main"),
            listen: &listen(),
            socket_dirs: "/d/main.sock",
            local: &local,
            cluster: &cluster,
            role: &role,
        };
        let (text, ignored) = render_settings(&s);
        assert_eq!(ignored, vec!["port".to_owned()]);
        for line in [
            "include_if_exists 'postgresql.conf'",
            "max_connections = 200",
            "work_mem = '16MB'",
            "fsync = off",
            "wal_level = 'replica'",
            "max_slot_wal_keep_size = '1GB'",
            "port = 5433",
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = '/d/main.sock'",
            "hba_file = '/d/main/pg_hba.conf'",
            r"primary_conninfo = 'host=''10.0.0.1'' password=''it\\''s'''",
            "primary_slot_name = 'n2'",
            "recovery_target_timeline = 'latest'",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(text.matches("port =").count(), 1);
        let primary = Settings {
            role: &WantedRole::Primary,
            ..s
        };
        assert!(!render_settings(&primary).0.contains("primary_conninfo"));
    }

    #[test]
    fn hba_keeps_user_lines_only_when_none_configured() {
        let existing =
            "local all all peer\n# pgkeel: old header\nlocal all x peer map=pgkeel  # pgkeel\n";
        let kept = render_hba("postgres", &[], Some(existing));
        assert_eq!(kept.matches("map=pgkeel").count(), 1);
        assert!(kept
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("local all postgres peer map=pgkeel")));
        assert!(kept.contains("local all all peer\n"));
        let configured = render_hba(
            "su per",
            &["host all all 0.0.0.0/0 scram-sha-256".into()],
            Some(existing),
        );
        assert!(configured.contains("local all \"su per\" peer"));
        assert!(!configured.contains("local all all peer"));
        assert!(configured.ends_with("host all all 0.0.0.0/0 scram-sha-256\n"));
    }

    #[test]
    fn ident_replaces_its_map() {
        let existing = "# comment\nmymap joe bob\npgkeel old postgres\n";
        let text = render_ident(Some(existing), &["root", "postgres", "root"], "postgres");
        assert_eq!(
            text,
            "# comment\nmymap joe bob\npgkeel root postgres  # pgkeel\npgkeel postgres postgres  # pgkeel\n"
        );
    }

    #[test]
    fn conninfo_round_trip_and_password_split() {
        let text = conninfo(&[
            ("host", "h"),
            ("password", r"a b'c\d"),
            ("application_name", "n1"),
        ]);
        let pairs = parse_conninfo(&text).ok();
        assert_eq!(
            pairs,
            Some(vec![
                ("host".into(), "h".into()),
                ("password".into(), r"a b'c\d".into()),
                ("application_name".into(), "n1".into())
            ])
        );
        let (rest, pw) = split_password("host=x  port = 5 password=secret").unwrap_or_default();
        assert_eq!(pw.as_deref(), Some("secret"));
        assert_eq!(rest, "host='x' port='5'");
        for bad in ["host", "host='x", "=x y", "a=\\"] {
            assert!(parse_conninfo(bad).is_err(), "{bad:?}");
        }
    }
}
