//! The `bootstrap:` section: what the first node writes into a new cluster.
//!
//! `bootstrap.dcs` seeds the dynamic config kept in the store (Patroni's
//! names); after bootstrap, `pgkeelctl edit-config` changes it cluster-wide
//! and the file's copy is only read again for a new cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::Problem;
use super::postgresql::check_parameters;
use super::validate::{check_timing, Problems};
use super::value::Scalar;
use super::{defaults, duration};

/// Data-node bootstrap settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BootstrapConfig {
    /// The initial dynamic config.
    pub dcs: DcsConfig,
    /// Options for `initdb`, Patroni style: `- data-checksums` or `- encoding: UTF8`.
    pub initdb: Vec<InitdbOption>,
}

/// The cluster-wide dynamic config: leader lease timings, failover policy and
/// shared PostgreSQL settings. Stored in the `config` key, so it serializes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DcsConfig {
    /// The leader lease.
    #[serde(with = "duration")]
    pub ttl: Duration,
    /// Period of routine status refreshes (the HA loop is event driven).
    #[serde(with = "duration")]
    pub loop_wait: Duration,
    /// How long to retry store and PostgreSQL calls before giving up.
    #[serde(with = "duration")]
    pub retry_timeout: Duration,
    /// How often the leader renews its lease.
    #[serde(with = "duration")]
    pub keepalive_interval: Duration,
    /// Bound on one keepalive round trip.
    #[serde(with = "duration")]
    pub keepalive_timeout: Duration,
    /// How much earlier than the Raft leader the holder stops trusting its
    /// lease; covers fencing time and clock-rate drift.
    #[serde(with = "duration")]
    pub safety_margin: Duration,
    /// Bytes of WAL a candidate may lag the last primary and still be promoted.
    pub maximum_lag_on_failover: u64,
    /// How long a crashed primary may take to restart before it gives up the lease.
    #[serde(with = "duration")]
    pub primary_start_timeout: Duration,
    /// Synchronous replication policy.
    pub synchronous_mode: SynchronousMode,
    /// With no synchronous standby available, block writes instead of
    /// running unprotected.
    pub synchronous_mode_strict: bool,
    /// `on`: how many standbys every commit waits for; `quorum`: how many
    /// of the synchronous set must acknowledge each commit.
    pub synchronous_node_count: u32,
    /// Bytes a synchronous standby may lag before a healthier standby
    /// takes its place; -1 (or any negative value): never swapped for lag.
    pub maximum_lag_on_syncnode: i64,
    /// PostgreSQL settings shared by every node.
    pub postgresql: DcsPostgresql,
    /// Maintenance mode (`pgkeelctl pause`): no automatic failover, and
    /// pgkeel starts or stops no PostgreSQL on its own; a primary keeps
    /// renewing its lease and still fences if it loses it. Shown only
    /// while on, as Patroni does.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

impl Default for DcsConfig {
    fn default() -> Self {
        DcsConfig {
            ttl: defaults::TTL,
            loop_wait: defaults::LOOP_WAIT,
            retry_timeout: defaults::RETRY_TIMEOUT,
            keepalive_interval: defaults::KEEPALIVE_INTERVAL,
            keepalive_timeout: defaults::KEEPALIVE_TIMEOUT,
            safety_margin: defaults::SAFETY_MARGIN,
            maximum_lag_on_failover: defaults::MAXIMUM_LAG_ON_FAILOVER,
            primary_start_timeout: defaults::PRIMARY_START_TIMEOUT,
            synchronous_mode: SynchronousMode::Off,
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            maximum_lag_on_syncnode: -1,
            postgresql: DcsPostgresql::default(),
            pause: false,
        }
    }
}

/// Shared PostgreSQL settings in the dynamic config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DcsPostgresql {
    /// `postgresql.conf` settings every node gets.
    pub parameters: BTreeMap<String, Scalar>,
    /// Rejoin diverged former primaries with pg_rewind.
    pub use_pg_rewind: bool,
}

impl Default for DcsPostgresql {
    fn default() -> Self {
        DcsPostgresql {
            parameters: BTreeMap::new(),
            use_pg_rewind: defaults::USE_PG_REWIND,
        }
    }
}

impl DcsConfig {
    /// Every problem with these settings, keys relative to the dcs section
    /// (`ttl`, `loop_wait`…), so `edit-config` can report them as typed.
    /// `election_timeout_max` is the node's Raft setting, which enters the
    /// lease timing invariant.
    pub fn validate(&self, election_timeout_max: Duration) -> Vec<Problem> {
        let mut p = Problems::default();
        self.check(&mut p, "", election_timeout_max);
        p.into_vec()
    }

    pub(crate) fn check(&self, p: &mut Problems, prefix: &str, election_timeout_max: Duration) {
        let positive = [
            ("loop_wait", self.loop_wait, "1s"),
            ("retry_timeout", self.retry_timeout, "2s"),
            ("keepalive_interval", self.keepalive_interval, "1s"),
            ("keepalive_timeout", self.keepalive_timeout, "500ms"),
            ("safety_margin", self.safety_margin, "1s"),
        ];
        for (key, value, example) in positive {
            if value.is_zero() {
                p.add(
                    format!("{prefix}{key}"),
                    format!("is 0 — set it to a positive duration, e.g. {example}"),
                );
            }
        }
        if self.ttl > defaults::MAX_TTL {
            p.add(format!("{prefix}ttl"), format!("{} is longer than {}, and a dead primary would hold the leader key that long — lower it", duration::format(self.ttl), duration::format(defaults::MAX_TTL)));
        } else if let Err(why) = check_timing(
            self.ttl,
            self.safety_margin,
            self.keepalive_interval,
            election_timeout_max,
            self.keepalive_timeout,
        ) {
            p.add(format!("{prefix}ttl"), why);
        }
        if self.synchronous_node_count == 0 {
            p.add(
                format!("{prefix}synchronous_node_count"),
                "is 0 — a commit must wait for at least one standby; set 1 or more",
            );
        }
        if self
            .postgresql
            .parameters
            .contains_key("synchronous_standby_names")
        {
            p.add(
                format!("{prefix}postgresql.parameters.synchronous_standby_names"),
                "is set by pgkeel itself from synchronous_mode — remove it and use synchronous_mode, synchronous_node_count",
            );
        }
        check_parameters(
            p,
            &format!("{prefix}postgresql.parameters"),
            &self.postgresql.parameters,
        );
    }
}

impl BootstrapConfig {
    pub(crate) fn check(&self, p: &mut Problems, election_timeout_max: Duration) {
        self.dcs.check(p, "bootstrap.dcs.", election_timeout_max);
        for (i, option) in self.initdb.iter().enumerate() {
            let name = match option {
                InitdbOption::Flag(name) | InitdbOption::Setting(name, _) => name,
            };
            if name.is_empty() {
                p.add(
                    format!("bootstrap.initdb[{i}]"),
                    "is empty — name an initdb option, e.g. data-checksums",
                );
            } else if name.starts_with('-') {
                p.add(format!("bootstrap.initdb[{i}]"), format!("\"{name}\" starts with '-' — write initdb options without the leading dashes, e.g. data-checksums"));
            }
        }
    }
}

/// Patroni's `synchronous_mode`: `false`/`off`, `true`/`on`, or `quorum`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SynchronousMode {
    #[default]
    Off,
    On,
    Quorum,
}

impl SynchronousMode {
    /// The word the config and `pgkeelctl` show.
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousMode::Off => "off",
            SynchronousMode::On => "on",
            SynchronousMode::Quorum => "quorum",
        }
    }
}

impl Serialize for SynchronousMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SynchronousMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SynchronousMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("off, on or quorum")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<SynchronousMode, E> {
                Ok(if v {
                    SynchronousMode::On
                } else {
                    SynchronousMode::Off
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SynchronousMode, E> {
                match v.to_ascii_lowercase().as_str() {
                    "off" | "false" => Ok(SynchronousMode::Off),
                    "on" | "true" => Ok(SynchronousMode::On),
                    "quorum" => Ok(SynchronousMode::Quorum),
                    _ => Err(E::custom(format!(
                        "\"{v}\" is not a synchronous mode — write off, on or quorum"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One `initdb` option: a bare flag or a single `name: value` pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitdbOption {
    /// `- data-checksums` → `--data-checksums`.
    Flag(String),
    /// `- encoding: UTF8` → `--encoding=UTF8`.
    Setting(String, String),
}

impl InitdbOption {
    /// The command-line argument for `initdb`.
    pub fn to_arg(&self) -> String {
        match self {
            InitdbOption::Flag(name) => format!("--{name}"),
            InitdbOption::Setting(name, value) => format!("--{name}={value}"),
        }
    }
}

impl<'de> Deserialize<'de> for InitdbOption {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InitdbOption;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "an option name like data-checksums or a single pair like encoding: UTF8",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InitdbOption, E> {
                Ok(InitdbOption::Flag(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InitdbOption, A::Error> {
                let Some((name, value)) = map.next_entry::<String, Scalar>()? else {
                    return Err(de::Error::custom("is an empty mapping — write an option like encoding: UTF8 or data-checksums"));
                };
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("holds more than one option — write each initdb option as its own list item, e.g. - encoding: UTF8"));
                }
                Ok(InitdbOption::Setting(name, value.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
