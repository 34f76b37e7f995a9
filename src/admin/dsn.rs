//! The libpq multi-host connection URI over the data members' published
//! PostgreSQL addresses: clients follow the primary (or find a standby)
//! without a proxy, libpq trying each host in turn.

use std::str::FromStr;

use crate::store::keys::MemberRecord;

/// Which server a client wants; maps to libpq's `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnRole {
    Primary,
    Replica,
    Any,
}

impl FromStr for DsnRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "primary" => Ok(DsnRole::Primary),
            "replica" => Ok(DsnRole::Replica),
            "any" => Ok(DsnRole::Any),
            other => Err(format!(
                "unknown role {other:?}: use primary, replica or any"
            )),
        }
    }
}

impl DsnRole {
    fn target_session_attrs(self) -> &'static str {
        match self {
            DsnRole::Primary => "read-write",
            // libpq 14+: only a server in recovery; `prefer-standby` would
            // silently hand a replica-only client the primary.
            DsnRole::Replica => "standby",
            DsnRole::Any => "any",
        }
    }
}

/// `host:port` as a URI authority: an IPv6 host in brackets, whether the
/// address came bracketed (`[::1]:5432`) or bare (`::1:5432`). `None` when
/// there is no numeric port or no host.
pub fn uri_host_port(address: &str) -> Option<String> {
    let (host, port) = address.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ',', ' ']) {
        return None;
    }
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// The URI and the member names in the order it lists them. Members that
/// published no usable address are left out (and logged). For the primary
/// the leader comes first, for a replica the others do, so libpq's first
/// try is usually the right one.
pub fn build(
    role: DsnRole,
    leader: Option<&str>,
    records: &[MemberRecord],
) -> Result<(String, Vec<String>), String> {
    let mut hosts: Vec<(bool, &str, String)> = records
        .iter()
        .filter_map(|r| match uri_host_port(r.pg_address()) {
            Some(h) => Some((leader == Some(r.name.as_str()), r.name.as_str(), h)),
            None => {
                if !r.conn_url.is_empty() {
                    tracing::warn!(
                        member = %r.name,
                        conn_url = %r.conn_url,
                        "left out of the DSN: its conn_url names no host:port"
                    );
                }
                None
            }
        })
        .collect();
    if hosts.is_empty() {
        return Err(
            "no data member has published its PostgreSQL address yet; wait until the data nodes run and retry"
                .into(),
        );
    }
    // Names are unique, so the order is total.
    hosts.sort_by(|a, b| match role {
        DsnRole::Primary => b.0.cmp(&a.0).then(a.1.cmp(b.1)),
        DsnRole::Replica => a.0.cmp(&b.0).then(a.1.cmp(b.1)),
        DsnRole::Any => a.1.cmp(b.1),
    });
    let authority: Vec<&str> = hosts.iter().map(|h| h.2.as_str()).collect();
    let dsn = format!(
        "postgresql://{}/postgres?target_session_attrs={}",
        authority.join(","),
        role.target_session_attrs()
    );
    Ok((dsn, hosts.iter().map(|h| h.1.to_string()).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, conn_url: &str) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            conn_url: conn_url.into(),
            ..Default::default()
        }
    }

    #[test]
    fn authorities_bracket_ipv6_and_refuse_junk() {
        let cases = [
            ("127.0.0.1:5433", Some("127.0.0.1:5433")),
            ("db1.example.com:6432", Some("db1.example.com:6432")),
            ("[::1]:5432", Some("[::1]:5432")),
            ("::1:5432", Some("[::1]:5432")),
            ("[fe80::1]:15432", Some("[fe80::1]:15432")),
            ("", None),
            ("host-without-port", None),
            ("host:notaport", None),
            (":5432", None),
            ("a,b:5432", None),
        ];
        for (input, want) in cases {
            assert_eq!(uri_host_port(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn the_uri_orders_hosts_for_the_role_and_names_the_session_attrs() {
        let records = [
            member("node1", "postgres://127.0.0.1:5433"),
            member("node2", "postgres://[::1]:5434/"),
            member("node3", "postgres://10.0.0.3:5435"),
            member("starting", ""),
        ];
        let (dsn, order) = build(DsnRole::Primary, Some("node2"), &records).unwrap();
        assert_eq!(
            dsn,
            "postgresql://[::1]:5434,127.0.0.1:5433,10.0.0.3:5435/postgres?target_session_attrs=read-write"
        );
        assert_eq!(order, ["node2", "node1", "node3"]);
        let (dsn, order) = build(DsnRole::Replica, Some("node2"), &records).unwrap();
        assert_eq!(
            dsn,
            "postgresql://127.0.0.1:5433,10.0.0.3:5435,[::1]:5434/postgres?target_session_attrs=standby"
        );
        assert_eq!(order, ["node1", "node3", "node2"]);
        let (dsn, _) = build(DsnRole::Any, None, &records).unwrap();
        assert_eq!(
            dsn,
            "postgresql://127.0.0.1:5433,[::1]:5434,10.0.0.3:5435/postgres?target_session_attrs=any"
        );
    }

    #[test]
    fn no_published_address_and_unknown_roles_are_refused_in_one_sentence() {
        let err = build(DsnRole::Primary, None, &[member("n", "")]).unwrap_err();
        assert!(err.contains("no data member"), "{err}");
        assert_eq!("".parse::<DsnRole>(), Ok(DsnRole::Primary));
        assert_eq!("replica".parse::<DsnRole>(), Ok(DsnRole::Replica));
        let err = "master".parse::<DsnRole>().unwrap_err();
        assert!(err.contains("\"master\"") && err.contains("primary, replica or any"));
    }
}
