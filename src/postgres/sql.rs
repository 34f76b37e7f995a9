//! The SQL pgkeel runs, over tokio-postgres on the node's unix socket.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::config::Authentication;

use super::conf::MUST_MATCH;
use super::lsn::{parse_lsn, parse_opt};
use super::types::{ReplicationRow, Running, ServerRole, SlotInfo};
use super::PgError;

/// Setting values by name.
type Settings = BTreeMap<String, i64>;

/// Reads role, positions, timeline and replication rows.
pub(crate) async fn probe(client: &Client, pid: u32) -> Result<Running, PgError> {
    let row = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    current_setting('server_version_num')::int,
                    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
                    CASE WHEN pg_is_in_recovery() THEN NULL
                         ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END,
                    pg_last_wal_receive_lsn()::text,
                    pg_last_wal_replay_lsn()::text,
                    (SELECT received_tli FROM pg_stat_wal_receiver),
                    (SELECT timeline_id FROM pg_control_checkpoint()),
                    EXISTS (SELECT 1 FROM pg_settings WHERE pending_restart),
                    coalesce((SELECT status = 'streaming' FROM pg_stat_wal_receiver), false),
                    (SELECT sender_host FROM pg_stat_wal_receiver),
                    (SELECT sender_port FROM pg_stat_wal_receiver),
                    current_setting('synchronous_standby_names')",
            &[],
        )
        .await
        .map_err(PgError::sql("probing PostgreSQL"))?;
    let get = |i: usize| {
        row.try_get::<_, Option<String>>(i)
            .map_err(PgError::sql("reading the probe"))
    };
    let in_recovery: bool = row.try_get(0).map_err(PgError::sql("reading the probe"))?;
    let version: i32 = row.try_get(1).map_err(PgError::sql("reading the probe"))?;
    let received_tli: Option<i32> = row.try_get(6).map_err(PgError::sql("reading the probe"))?;
    let checkpoint_tli: Option<i32> = row.try_get(7).map_err(PgError::sql("reading the probe"))?;
    let pending_restart: bool = row.try_get(8).map_err(PgError::sql("reading the probe"))?;
    let sync_standby_names = get(12)?.unwrap_or_default();
    let (must_match_running, must_match_pending) = must_match(client).await?;
    let (role, timeline) = if in_recovery {
        let streaming: bool = row.try_get(9).map_err(PgError::sql("reading the probe"))?;
        let sender_port: Option<i32> =
            row.try_get(11).map_err(PgError::sql("reading the probe"))?;
        let role = ServerRole::Standby {
            received_lsn: parse_opt(get(4)?)?,
            replayed_lsn: parse_opt(get(5)?)?,
            streaming,
            upstream: sender_address(get(10)?, sender_port),
        };
        let tli = received_tli.or(checkpoint_tli).unwrap_or(0);
        (role, u32::try_from(tli).unwrap_or(0))
    } else {
        let lsn = get(2)?
            .ok_or_else(|| PgError::Protocol("no current WAL position on a primary".into()))?;
        let tli_hex = get(3)?.unwrap_or_default();
        let tli = u32::from_str_radix(&tli_hex, 16)
            .map_err(|_| PgError::Protocol(format!("{tli_hex:?} is not a timeline")))?;
        (
            ServerRole::Primary {
                current_lsn: parse_lsn(&lsn)?,
            },
            tli,
        )
    };
    Ok(Running {
        pid,
        server_version_num: u32::try_from(version).unwrap_or(0),
        timeline,
        role,
        replication: replication(client).await?,
        pending_restart,
        must_match_running,
        must_match_pending,
        sync_standby_names,
    })
}

/// The [`MUST_MATCH`] settings as running, and as the configuration files
/// (the last line that sets each, `postgresql.auto.conf` included) would
/// make them at a restart. Values that are not integers are left out.
async fn must_match(client: &Client) -> Result<(Settings, Settings), PgError> {
    let names = MUST_MATCH
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let rows = client
        .query(
            &format!(
                "SELECT s.name, s.setting,
                        coalesce((SELECT f.setting FROM pg_file_settings f
                                  WHERE f.name = s.name ORDER BY f.seqno DESC LIMIT 1),
                                 s.boot_val)
                 FROM pg_settings s WHERE s.name IN ({names})"
            ),
            &[],
        )
        .await
        .map_err(PgError::sql("reading the settings standbys must match"))?;
    let (mut running, mut pending) = (Settings::new(), Settings::new());
    for row in rows {
        let text = |i| {
            row.try_get::<_, Option<String>>(i)
                .map_err(PgError::sql("reading the settings standbys must match"))
        };
        let Some(name) = text(0)? else { continue };
        let int = |v: Option<String>| v.and_then(|v| v.trim().parse::<i64>().ok());
        if let Some(v) = int(text(1)?) {
            running.insert(name.clone(), v);
        }
        if let Some(v) = int(text(2)?) {
            pending.insert(name, v);
        }
    }
    Ok((running, pending))
}

/// `host:port` of a WAL receiver's sender (`[host]:port` for an IPv6
/// address); none without a host (no receiver, or not yet connected).
fn sender_address(host: Option<String>, port: Option<i32>) -> Option<String> {
    let host = host.filter(|h| !h.is_empty())?;
    let host = if host.contains(':') && !host.starts_with('/') {
        format!("[{host}]")
    } else {
        host
    };
    Some(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

async fn replication(client: &Client) -> Result<Vec<ReplicationRow>, PgError> {
    let rows = client
        .query(
            "SELECT coalesce(application_name, ''), coalesce(state, ''),
                    sent_lsn::text, write_lsn::text, flush_lsn::text, replay_lsn::text,
                    coalesce(sync_state, '')
             FROM pg_stat_replication ORDER BY application_name",
            &[],
        )
        .await
        .map_err(PgError::sql("reading pg_stat_replication"))?;
    rows.iter()
        .map(|r| {
            let text = |i| {
                r.try_get::<_, String>(i)
                    .map_err(PgError::sql("reading pg_stat_replication"))
            };
            let lsn = |i| {
                r.try_get::<_, Option<String>>(i)
                    .map_err(PgError::sql("reading pg_stat_replication"))
                    .and_then(parse_opt)
            };
            Ok(ReplicationRow {
                application_name: text(0)?,
                state: text(1)?,
                sent_lsn: lsn(2)?,
                write_lsn: lsn(3)?,
                flush_lsn: lsn(4)?,
                replay_lsn: lsn(5)?,
                sync_state: text(6)?,
            })
        })
        .collect()
}

/// `pg_is_in_recovery()`.
pub(crate) async fn in_recovery(client: &Client) -> Result<bool, PgError> {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(PgError::sql("asking pg_is_in_recovery()"))
}

/// Sets the superuser's password and creates or updates the other roles.
/// Passwords travel as SQL literals (DDL takes no bind parameters), so the
/// session turns statement logging off first.
pub(crate) async fn create_roles(client: &Client, auth: &Authentication) -> Result<(), PgError> {
    client
        .batch_execute("SET log_statement = 'none'; SET log_min_duration_statement = -1")
        .await
        .map_err(PgError::sql("preparing to create roles"))?;
    let su = &auth.superuser;
    if let Some(pw) = &su.password {
        let sql = format!(
            "ALTER ROLE {} WITH PASSWORD {}",
            ident(&su.username),
            literal(pw.expose())
        );
        client
            .batch_execute(&sql)
            .await
            .map_err(PgError::sql("setting the superuser's password"))?;
    }
    let repl = &auth.replication;
    if repl.username != su.username {
        upsert_role(
            client,
            &repl.username,
            "LOGIN REPLICATION",
            repl.password.as_ref().map(|p| p.expose()),
        )
        .await?;
    }
    if let Some(rw) = auth.rewind.as_ref().filter(|r| r.username != su.username) {
        upsert_role(
            client,
            &rw.username,
            "LOGIN",
            rw.password.as_ref().map(|p| p.expose()),
        )
        .await?;
        let who = ident(&rw.username);
        let grants = [
            "pg_catalog.pg_ls_dir(text, boolean, boolean)",
            "pg_catalog.pg_stat_file(text, boolean)",
            "pg_catalog.pg_read_binary_file(text)",
            "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
        ]
        .map(|f| format!("GRANT EXECUTE ON FUNCTION {f} TO {who};"))
        .concat();
        client
            .batch_execute(&grants)
            .await
            .map_err(PgError::sql("granting the rewind role its functions"))?;
    }
    Ok(())
}

async fn upsert_role(
    client: &Client,
    name: &str,
    options: &str,
    password: Option<&str>,
) -> Result<(), PgError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(PgError::sql("looking up a role"))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let password = password.map_or_else(String::new, |p| format!(" PASSWORD {}", literal(p)));
    let sql = format!("{verb} ROLE {} WITH {options}{password}", ident(name));
    client
        .batch_execute(&sql)
        .await
        .map_err(PgError::sql("creating a role"))
}

/// Creates a physical slot reserving WAL now; `false` when it existed.
pub(crate) async fn create_slot(client: &Client, name: &str) -> Result<bool, PgError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql("looking up a replication slot"))?
        .is_some();
    if exists {
        return Ok(false);
    }
    client
        .execute(
            "SELECT pg_create_physical_replication_slot($1, true)",
            &[&name],
        )
        .await
        .map_err(PgError::sql("creating a replication slot"))?;
    Ok(true)
}

/// Drops a slot; `false` when there was none.
pub(crate) async fn drop_slot(client: &Client, name: &str) -> Result<bool, PgError> {
    let n = client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::sql("dropping a replication slot"))?;
    Ok(n > 0)
}

/// Every slot.
pub(crate) async fn list_slots(client: &Client) -> Result<Vec<SlotInfo>, PgError> {
    let rows = client
        .query(
            "SELECT slot_name::text, slot_type, active, restart_lsn::text
             FROM pg_replication_slots ORDER BY slot_name",
            &[],
        )
        .await
        .map_err(PgError::sql("listing replication slots"))?;
    rows.iter()
        .map(|r| {
            let read =
                || -> Result<(String, String, bool, Option<String>), tokio_postgres::Error> {
                    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))
                };
            let (name, slot_type, active, restart) =
                read().map_err(PgError::sql("reading pg_replication_slots"))?;
            Ok(SlotInfo {
                name,
                slot_type,
                active,
                restart_lsn: parse_opt(restart)?,
            })
        })
        .collect()
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal, independent of `standard_conforming_strings`.
fn literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", text.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\'"), r"E'a\\'''");
    }

    #[test]
    fn sender_addresses() {
        let addr = |h: Option<&str>, p| sender_address(h.map(str::to_owned), p);
        assert_eq!(
            addr(Some("10.0.0.1"), Some(5432)).as_deref(),
            Some("10.0.0.1:5432")
        );
        assert_eq!(addr(Some("::1"), Some(5433)).as_deref(), Some("[::1]:5433"));
        assert_eq!(
            addr(Some("/run/postgresql"), Some(5432)).as_deref(),
            Some("/run/postgresql:5432")
        );
        assert_eq!(addr(Some("db1"), None).as_deref(), Some("db1"));
        assert_eq!(addr(None, Some(5432)), None);
        assert_eq!(addr(Some(""), Some(5432)), None);
    }
}
