//! The small per-node sections: `log`, `restapi`, `tags`, `watchdog`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use serde::Deserialize;

use super::addr::{self, host_port_problem};
use super::defaults;
use super::raft::{FileSecret, SecretSource};
use super::validate::Problems;
use super::value::{Scalar, Secret};

/// Logging, shared by both binaries.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive string (`info`,
    /// `pgkeel=debug,openraft=info`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: defaults::log_level(),
        }
    }
}

impl LogConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if self.level.trim().is_empty() {
            p.add(
                "log.level",
                format!(
                    "is empty — write a log filter, e.g. {}",
                    defaults::LOG_LEVEL
                ),
            );
        } else if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.level) {
            p.add("log.level", format!("\"{}\" is not a log filter ({e}) — write e.g. info, debug or pgkeel=debug,info", self.level));
        }
    }
}

/// The REST health/status API of a data node (Patroni-compatible paths).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestApiConfig {
    /// Where the HTTP server binds.
    #[serde(
        default = "defaults::restapi_listen",
        deserialize_with = "addr::restapi_listen"
    )]
    pub listen: SocketAddr,
    /// `host:port` published in the member key (the API URL others use);
    /// read it through [`RestApiConfig::connect_address`].
    #[serde(default)]
    pub connect_address: Option<String>,
    /// Basic-auth credentials for the unsafe calls (POST, PATCH, PUT,
    /// DELETE), as in Patroni's `restapi.authentication`.
    #[serde(default)]
    pub authentication: Option<RestAuthentication>,
    /// A bearer token that also authorizes the unsafe calls. At most one of
    /// `token` and `token_file`; read it through [`RestApiConfig::token`].
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the bearer token, read once at load.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// What `token_file` held when the file was loaded.
    #[serde(skip)]
    file_token: FileSecret,
    /// The server certificate chain (PEM) of HTTPS, as in Patroni. With
    /// `keyfile` the API serves HTTPS only; set both or neither.
    #[serde(default)]
    pub certfile: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `certfile`.
    #[serde(default)]
    pub keyfile: Option<PathBuf>,
}

/// `restapi.authentication`: the user and password of HTTP basic auth.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestAuthentication {
    pub username: String,
    pub password: Secret,
}

impl Default for RestApiConfig {
    fn default() -> Self {
        RestApiConfig {
            listen: defaults::RESTAPI_LISTEN,
            connect_address: None,
            authentication: None,
            token: None,
            token_file: None,
            file_token: FileSecret::NotRead,
            certfile: None,
            keyfile: None,
        }
    }
}

impl RestApiConfig {
    /// `connect_address`, else the listen address.
    pub fn connect_address(&self) -> String {
        self.connect_address
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The bearer token, from `token` or from the contents of `token_file`.
    pub fn token(&self) -> Option<&str> {
        self.file_token.or_inline(&self.token)
    }

    /// The API's URL as published in the member key: `https://` when
    /// `certfile` and `keyfile` are set, as Patroni does.
    pub fn api_url(&self) -> String {
        let scheme = match self.tls_files() {
            Some(_) => "https",
            None => "http",
        };
        format!("{scheme}://{}", self.connect_address())
    }

    /// `(certfile, keyfile)` when the API serves HTTPS; `None` for plain
    /// HTTP (and on a config that failed validation with only one set).
    pub fn tls_files(&self) -> Option<(&Path, &Path)> {
        match (&self.certfile, &self.keyfile) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        }
    }

    /// Reads `token_file`; relative paths are taken from the working directory.
    pub(crate) fn load_token_file(&mut self) {
        if let Some(path) = &self.token_file {
            self.file_token = FileSecret::read(path);
        }
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        match &self.connect_address {
            Some(a) => p.add_opt("restapi.connect_address", host_port_problem(a, "10.0.0.1:8008")),
            None if self.listen.ip().is_unspecified() => p.add(
                "restapi.connect_address",
                format!(
                    "is needed because restapi.listen {} is a wildcard others cannot dial — set it to this host's address, e.g. 10.0.0.1:{}",
                    self.listen,
                    self.listen.port()
                ),
            ),
            None => {}
        }
        if let Some(auth) = &self.authentication {
            if auth.username.trim().is_empty() {
                p.add(
                    "restapi.authentication.username",
                    "is empty — name the user unsafe REST calls authenticate as, e.g. admin",
                );
            } else if auth.username.contains(':') {
                p.add("restapi.authentication.username", format!("\"{}\" contains ':', which basic auth cannot carry — choose a name without it", auth.username));
            }
            let len = auth.password.expose().chars().count();
            if len < defaults::MIN_SECRET_LEN {
                p.add(
                    "restapi.authentication.password",
                    format!(
                        "is {len} characters long — use at least {}",
                        defaults::MIN_SECRET_LEN
                    ),
                );
            }
        }
        self.check_token(p);
        self.check_tls(p);
    }

    /// Both or neither of `certfile` and `keyfile`, each a readable file.
    /// Whether they hold a usable PEM certificate and key is checked when
    /// the REST server starts (the witness links no TLS code).
    fn check_tls(&self, p: &mut Problems) {
        let pair = [
            (
                "restapi.certfile",
                &self.certfile,
                "restapi.keyfile",
                &self.keyfile,
            ),
            (
                "restapi.keyfile",
                &self.keyfile,
                "restapi.certfile",
                &self.certfile,
            ),
        ];
        for (key, path, other_key, other) in pair {
            match path {
                None if other.is_some() => p.add(
                    key,
                    format!("is missing while {other_key} is set — set both certfile and keyfile, or neither"),
                ),
                None => {}
                Some(path) if path.as_os_str().is_empty() => p.add(
                    key,
                    "is empty — name a PEM file, or remove certfile and keyfile for plain HTTP",
                ),
                Some(path) => {
                    if let Err(e) = std::fs::File::open(path) {
                        p.add(
                            key,
                            format!(
                                "cannot read {}: {e} — create the file or fix the path",
                                path.display()
                            ),
                        );
                    }
                }
            }
        }
    }

    fn check_token(&self, p: &mut Problems) {
        SecretSource {
            key: "restapi.token",
            inline: &self.token,
            file_key: "restapi.token_file",
            file: &self.token_file,
            read: &self.file_token,
            what: "token",
        }
        .check(p);
    }
}

/// Patroni tags: per-node failover policy plus free-form labels. Kept as a
/// map so unknown tags pass through to the member key; the known ones are
/// type-checked by `validate()` and read through the accessors.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Tags(pub BTreeMap<String, Scalar>);

/// Tags Patroni gives a meaning to and that must be `true`/`false`.
const BOOL_TAGS: [&str; 5] = [
    "nofailover",
    "clonefrom",
    "nosync",
    "noloadbalance",
    "nostream",
];

impl Tags {
    fn flag(&self, key: &str) -> bool {
        self.0.get(key).and_then(Scalar::as_bool).unwrap_or(false)
    }

    /// Never promote this node.
    pub fn nofailover(&self) -> bool {
        self.flag("nofailover")
    }

    /// Other nodes may pg_basebackup from this one.
    pub fn clonefrom(&self) -> bool {
        self.flag("clonefrom")
    }

    /// Never a synchronous standby.
    pub fn nosync(&self) -> bool {
        self.flag("nosync")
    }

    /// Report this replica unhealthy to load balancers.
    pub fn noloadbalance(&self) -> bool {
        self.flag("noloadbalance")
    }

    /// Tie-breaker among equally advanced candidates; higher wins.
    pub fn failover_priority(&self) -> i64 {
        self.0
            .get("failover_priority")
            .and_then(Scalar::as_i64)
            .unwrap_or(defaults::FAILOVER_PRIORITY)
    }

    /// The tags the HA core does not read (`noloadbalance`, `nostream`,
    /// `replicatefrom` and every free-form tag), as written: published in
    /// the member key beside the core's own, so `pgkeelctl list` and
    /// `/cluster` show them. A `false` flag is left out, as Patroni does.
    pub fn labels(&self) -> BTreeMap<String, Scalar> {
        const CORE: [&str; 4] = ["nofailover", "clonefrom", "nosync", "failover_priority"];
        self.0
            .iter()
            .filter(|(k, _)| !CORE.contains(&k.as_str()))
            .filter(|(k, v)| !(BOOL_TAGS.contains(&k.as_str()) && v.as_bool() == Some(false)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The member this replica should stream from instead of the primary.
    pub fn replicatefrom(&self) -> Option<&str> {
        self.0.get("replicatefrom").and_then(Scalar::as_str)
    }

    pub(crate) fn check(&self, p: &mut Problems) {
        for (key, value) in &self.0 {
            let ok = match key.as_str() {
                k if BOOL_TAGS.contains(&k) => value.as_bool().is_some(),
                "failover_priority" => value.as_i64().is_some_and(|n| n >= 0),
                "replicatefrom" => value.as_str().is_some_and(|s| !s.is_empty()),
                _ => true,
            };
            if !ok {
                let want = match key.as_str() {
                    "failover_priority" => "a whole number, 0 or more",
                    "replicatefrom" => "a member name",
                    _ => "true or false",
                };
                p.add(
                    format!("tags.{key}"),
                    format!("\"{value}\" is not allowed — write {want}"),
                );
            }
        }
    }
}

/// The hardware watchdog that resets a hung primary before its lease ends.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogConfig {
    /// Patroni's modes; `automatic` when the section is present without one.
    #[serde(default)]
    pub mode: WatchdogMode,
    /// The watchdog device.
    #[serde(default = "defaults::watchdog_device")]
    pub device: PathBuf,
    /// How long the hardware takes from its timeout to the reset; every
    /// kick sets the timeout to what is left of the lease minus this.
    #[serde(
        default = "defaults::watchdog_reset_time",
        deserialize_with = "super::duration::deserialize"
    )]
    pub reset_time: Duration,
    /// Accepted only to be refused with a pointer to `bootstrap.dcs`:
    /// Patroni has a `watchdog.safety_margin`, pgkeel's is a lease setting.
    #[serde(default)]
    safety_margin: Option<IgnoredAny>,
}

impl WatchdogConfig {
    pub(crate) fn check(&self, p: &mut Problems) {
        if self.safety_margin.is_some() {
            p.add("watchdog.safety_margin", "safety_margin is a lease setting, not a watchdog one — move it to bootstrap.dcs.safety_margin");
        }
        if self.reset_time > defaults::MAX_WATCHDOG_RESET_TIME {
            p.add(
                "watchdog.reset_time",
                format!(
                    "{} leaves no room for a watchdog timeout inside the lease — a watchdog resets within a second or two; lower it",
                    super::duration::format(self.reset_time)
                ),
            );
        }
        if self.mode != WatchdogMode::Off && self.device.as_os_str().is_empty() {
            p.add(
                "watchdog.device",
                format!(
                    "is empty — name the watchdog device, e.g. {}",
                    defaults::WATCHDOG_DEVICE
                ),
            );
        }
    }
}

/// Whether the watchdog is used: `off` (YAML 1.1 parsers read it as `false`,
/// which is accepted too), `automatic` (use it if the device opens) or
/// `required` (refuse to run as primary without it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WatchdogMode {
    Off,
    #[default]
    Automatic,
    Required,
}

impl<'de> Deserialize<'de> for WatchdogMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WatchdogMode;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("off, automatic or required")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<WatchdogMode, E> {
                if v {
                    Err(E::custom(
                        "true is not a watchdog mode — write off, automatic or required",
                    ))
                } else {
                    Ok(WatchdogMode::Off)
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WatchdogMode, E> {
                match v.to_ascii_lowercase().as_str() {
                    "off" => Ok(WatchdogMode::Off),
                    "automatic" => Ok(WatchdogMode::Automatic),
                    "required" => Ok(WatchdogMode::Required),
                    _ => Err(E::custom(format!(
                        "\"{v}\" is not a watchdog mode — write off, automatic or required"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}
