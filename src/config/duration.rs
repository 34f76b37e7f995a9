//! Durations as the config file writes them.
//!
//! Operators coming from Patroni write timings as a number of seconds
//! (`ttl: 30`); everyone else writes `500ms`, `5s` or `1m`. Both are accepted:
//!
//! * a humantime string: `500ms`, `5s`, `1m 30s`;
//! * a plain number of seconds, integer or fractional: `5`, `1.5` (= 1500 ms),
//!   also when quoted (`"5"`).
//!
//! Negative, NaN and infinite values are refused. Durations are written back
//! (for the store's dynamic config) in humantime form, which reads back the same.
//!
//! Use with `#[serde(with = "duration")]` or, for an optional key,
//! `#[serde(default, with = "duration::option")]`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

const WRITE_IT: &str = "write it like 500ms, 5s or 1m, or as a number of seconds";

/// Parses one duration string: a number of seconds or a humantime string.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("is empty — {WRITE_IT}"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return from_secs_f64(secs);
    }
    humantime::parse_duration(s).map_err(|_| format!("\"{s}\" is not a duration — {WRITE_IT}"))
}

/// Formats a duration the way the config file would write it (`1s 500ms`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn from_secs_f64(secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() {
        return Err(format!(
            "{secs} is not a usable number of seconds — {WRITE_IT}"
        ));
    }
    if secs < 0.0 {
        return Err(format!(
            "{secs} is negative — a duration is zero or more; {WRITE_IT}"
        ));
    }
    Duration::try_from_secs_f64(secs.abs())
        .map_err(|_| format!("{secs} is not a usable number of seconds — {WRITE_IT}"))
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration like 500ms, 5s or 1m, or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v).map(Duration::from_secs).map_err(|_| {
            E::custom(format!(
                "{v} is negative — a duration is zero or more; {WRITE_IT}"
            ))
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        from_secs_f64(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

/// Serde `deserialize_with` for a required or defaulted `Duration`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Serde `serialize_with` writing the humantime form.
pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

/// The same for `Option<Duration>`: an absent key or `null` is `None`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "super::deserialize")] Duration);

    /// Serde `deserialize_with` for `Option<Duration>`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
    }

    /// Serde `serialize_with` for `Option<Duration>`.
    pub fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, serializer),
            None => serializer.serialize_none(),
        }
    }
}
