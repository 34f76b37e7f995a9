//! Start-up checks: where the server binaries are, which version they
//! are, and where the node's unix socket lives.

use std::path::{Path, PathBuf};

use crate::config::PostgresqlConfig;

use super::PgError;

/// The oldest major version pgkeel drives (`standby.signal`, `wal_keep_size`,
/// reloadable `primary_conninfo`).
pub const MIN_MAJOR: u32 = 13;

/// Finds the directory holding `postgres`, `initdb`, `pg_basebackup`…:
/// `configured` (`postgresql.bin_dir`), else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/<major>/bin`.
pub fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, PgError> {
    if let Some(dir) = configured {
        if has_server(dir) {
            return Ok(dir.to_owned());
        }
        return Err(PgError::Setup(format!(
            "postgresql.bin_dir {} holds no `postgres` program — point it at the server's bin directory, e.g. /usr/lib/postgresql/15/bin",
            dir.display()
        )));
    }
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| has_server(d));
    if let Some(dir) = from_pg_config {
        return Ok(dir);
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_server(&bin).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        PgError::Setup(
            "no PostgreSQL server binaries found (no postgresql.bin_dir, no pg_config, nothing in /usr/lib/postgresql) — install the postgresql package or set postgresql.bin_dir".into(),
        )
    })
}

fn has_server(dir: &Path) -> bool {
    dir.join("postgres").is_file()
}

/// The server's major version from `postgres --version`; older than
/// [`MIN_MAJOR`] is a start-up error.
pub fn server_major(bin_dir: &Path) -> Result<u32, PgError> {
    let program = bin_dir.join("postgres");
    let out = std::process::Command::new(&program)
        .arg("--version")
        .output()
        .map_err(PgError::io(format!(
            "running {} --version",
            program.display()
        )))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = parse_major(&text).ok_or_else(|| {
        PgError::Protocol(format!(
            "`{} --version` printed {:?}",
            program.display(),
            text.trim()
        ))
    })?;
    if major < MIN_MAJOR {
        return Err(PgError::Setup(format!(
            "PostgreSQL {major} at {} is too old — pgkeel needs {MIN_MAJOR} or newer; set postgresql.bin_dir to a newer server",
            bin_dir.display()
        )));
    }
    Ok(major)
}

/// `postgres (PostgreSQL) 15.4 (Debian …)` → 15; `16devel` → 16.
fn parse_major(text: &str) -> Option<u32> {
    let version = text
        .split("(PostgreSQL)")
        .nth(1)?
        .split_whitespace()
        .next()?;
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Where this node's unix socket lives, the `unix_socket_directories`
/// value, and whether pgkeel creates the directory.
///
/// Default: a sibling of the data directory, `<data_dir>.sock` (e.g.
/// `/var/lib/postgresql/15/main.sock`) — per node, so clusters on one host
/// never meet in `/var/run/postgresql`; outside the data directory, so
/// pg_basebackup and pg_rewind never see a socket file. A socket path
/// longer than the kernel's 107 bytes is a start-up error whose fix is a
/// shorter `unix_socket_directories` in `postgresql.parameters`, which
/// pgkeel then uses as is (first entry for its own connections).
pub(crate) fn socket_dir(config: &PostgresqlConfig) -> Result<(PathBuf, String, bool), PgError> {
    let (dir, setting, create) = match config
        .parameters
        .get("unix_socket_directories")
        .and_then(|v| v.as_str().map(str::to_owned))
    {
        Some(setting) => {
            let first = setting.split(',').next().unwrap_or("").trim().to_owned();
            if first.is_empty() {
                return Err(PgError::Setup(
                    "postgresql.parameters.unix_socket_directories is empty — name a directory for the node's socket".into(),
                ));
            }
            (PathBuf::from(first), setting, false)
        }
        None => {
            let name = config.data_dir.file_name().ok_or_else(|| {
                PgError::Setup(format!(
                    "postgresql.data_dir {} has no directory name — use a path like /var/lib/postgresql/15/main",
                    config.data_dir.display()
                ))
            })?;
            let mut sock = name.to_owned();
            sock.push(".sock");
            let dir = config.data_dir.with_file_name(sock);
            let setting = dir.to_string_lossy().into_owned();
            (dir, setting, true)
        }
    };
    let socket = format!("{}/.s.PGSQL.{}", dir.display(), config.listen.port);
    if socket.len() > 107 {
        return Err(PgError::Setup(format!(
            "the socket path {socket} is {} bytes, over the 107 the kernel allows — use a shorter postgresql.data_dir or set postgresql.parameters.unix_socket_directories to a short directory",
            socket.len()
        )));
    }
    Ok((dir, setting, create))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            parse_major("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_major("postgres (PostgreSQL) 16devel"), Some(16));
        assert_eq!(parse_major("postgres (PostgreSQL) 9.6.24"), Some(9));
        assert_eq!(parse_major("something else"), None);
    }
}
