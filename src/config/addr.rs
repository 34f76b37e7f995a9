//! Addresses: the sockets this node listens on and the `host:port` strings
//! other nodes dial.
//!
//! Listen keys (`raft.listen`, `restapi.listen`, `postgresql.listen`) are
//! parsed while the file is read, since nothing else can be checked without
//! them. Addresses that others dial (`raft.peers[].address`, `raft.advertise`,
//! `*.connect_address`) stay strings, may name hosts, and are checked by
//! `validate()` so that every bad one is reported at once.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};

use serde::de::{self, Deserializer, Visitor};

/// Why `text` is not a `host:port` a peer can dial, as a full sentence naming
/// the fix with `example`; `None` when it is fine.
pub(crate) fn host_port_problem(text: &str, example: &str) -> Option<String> {
    split_host_port(text)
        .err()
        .map(|why| format!("\"{text}\" is not host:port ({why}) — write it like {example}"))
}

/// Splits `host:port` (`[v6]:port` for IPv6) and checks both halves.
pub(crate) fn split_host_port(text: &str) -> Result<(&str, u16), String> {
    if text.contains("://") {
        return Err("drop the scheme".to_owned());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, port) = rest
            .split_once("]:")
            .ok_or_else(|| "an IPv6 address is written [address]:port".to_owned())?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{v6} is not an IPv6 address"))?;
        (v6, port)
    } else {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| "no port".to_owned())?;
        if host.contains(':') {
            return Err("an IPv6 address needs brackets, as in [::1]:7001".to_owned());
        }
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        if let Some(bad) = host
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(format!("the host may not contain {bad:?}"));
        }
        (host, port)
    };
    let port = parse_port(port)?;
    Ok((host, port))
}

fn parse_port(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port \"{port}\" is not a number from 1 to 65535")),
    }
}

/// Whether two dialable addresses name the same endpoint: equal but for
/// letter case, or the same socket when both are IP:port (`[::1]:7001` and
/// `[0::1]:7001`).
pub(crate) fn same_address(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    matches!((a.parse::<SocketAddr>(), b.parse::<SocketAddr>()), (Ok(x), Ok(y)) if x == y)
}

struct SocketVisitor(&'static str);

impl Visitor<'_> for SocketVisitor {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an IP:port socket address like {}", self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
        v.trim().parse::<SocketAddr>().map_err(|_| {
            let why = match split_host_port(v.trim()) {
                Ok(_) => "a listen address takes an IP, not a host name".to_owned(),
                Err(why) => why,
            };
            E::custom(format!(
                "\"{v}\" is not an IP:port socket address ({why}) — write it like {}",
                self.0
            ))
        })
    }
}

/// Serde `deserialize_with` for `raft.listen`.
pub(crate) fn raft_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    d.deserialize_str(SocketVisitor("127.0.0.1:7001"))
}

/// Serde `deserialize_with` for `restapi.listen`.
pub(crate) fn restapi_listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    d.deserialize_str(SocketVisitor("127.0.0.1:8008"))
}

/// Where PostgreSQL listens, as Patroni writes it: one port after the last
/// of one or more comma-separated hosts (`127.0.0.1,10.0.0.5:5432`, `*:5432`).
/// Kept split so the controller can set `listen_addresses` and `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgListen {
    /// Values for `listen_addresses`; `*` means every interface.
    pub hosts: Vec<String>,
    /// Value for `port`.
    pub port: u16,
}

impl PgListen {
    /// The `listen_addresses` setting.
    pub fn listen_addresses(&self) -> String {
        self.hosts.join(",")
    }

    /// An address other hosts can dial, when the listen address is one:
    /// a single host that is neither `*` nor a wildcard IP.
    pub fn dialable(&self) -> Option<String> {
        let [host] = self.hosts.as_slice() else {
            return None;
        };
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() => None,
            Ok(std::net::IpAddr::V6(_)) => Some(format!("[{host}]:{}", self.port)),
            _ if host == "*" => None,
            _ => Some(format!("{host}:{}", self.port)),
        }
    }

    fn parse(text: &str) -> Result<PgListen, String> {
        let (hosts, port) = text.rsplit_once(':').ok_or_else(|| "no port".to_owned())?;
        let port = parse_port(port)?;
        let hosts: Vec<String> = hosts
            .split(',')
            .map(|h| {
                h.trim()
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            })
            .collect();
        if let Some(bad) = hosts
            .iter()
            .find(|h| h.is_empty() || h.contains(char::is_whitespace))
        {
            return Err(format!("host \"{bad}\" is empty or has spaces"));
        }
        Ok(PgListen { hosts, port })
    }
}

impl fmt::Display for PgListen {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.listen_addresses(), self.port)
    }
}

impl<'de> serde::Deserialize<'de> for PgListen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PgListen;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("host:port like 127.0.0.1:5432")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PgListen, E> {
                PgListen::parse(v.trim()).map_err(|why| {
                    E::custom(format!(
                        "\"{v}\" is not host:port ({why}) — write it like 127.0.0.1:5432 or 127.0.0.1,10.0.0.5:5432"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}
