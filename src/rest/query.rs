//! The query string of a health check: `lag`, `replication_state`,
//! `mode` and `tag_KEY=VALUE`, as Patroni reads them.

/// A parsed health-check query. Parameters nobody uses are ignored, as in
/// Patroni.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckQuery {
    /// `lag`: the most bytes of WAL a replica may be behind.
    pub lag: Option<u64>,
    /// `replication_state`: e.g. `streaming`.
    pub replication_state: Option<String>,
    /// `mode=write`: `/readiness` compares received WAL instead of replayed.
    pub mode_write: bool,
    /// `tag_KEY=VALUE` pairs, without the prefix.
    pub tags: Vec<(String, String)>,
}

impl CheckQuery {
    /// Parses `raw` (the part after `?`). A bad `lag` is an error sentence.
    pub fn parse(raw: Option<&str>) -> Result<CheckQuery, String> {
        let mut q = CheckQuery::default();
        let Some(raw) = raw else { return Ok(q) };
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode(key);
            let value = decode(value);
            match key.as_str() {
                "lag" => {
                    q.lag = Some(parse_size(&value).ok_or_else(|| {
                        format!(
                            "lag={value} is not a size: write bytes (1048576) or a number with a unit, e.g. 16kB, 64MB or 1GB"
                        )
                    })?)
                }
                "replication_state" => q.replication_state = Some(value),
                "mode" => q.mode_write = value == "write",
                _ => {
                    if let Some(tag) = key.strip_prefix("tag_") {
                        q.tags.push((tag.to_string(), value));
                    }
                }
            }
        }
        Ok(q)
    }
}

/// A byte count as Patroni takes it: `1048576`, `1024kB`, `64MB`, `1GB`,
/// `1TB` (units are powers of 1024; `B` is allowed; case is ignored).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        "tb" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Percent-decoding of one query component (`+` is a space).
fn decode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_bytes_and_units() {
        assert_eq!(parse_size("1048576"), Some(1_048_576));
        assert_eq!(parse_size("16kB"), Some(16 * 1024));
        assert_eq!(parse_size("64MB"), Some(64 << 20));
        assert_eq!(parse_size("1GB"), Some(1 << 30));
        assert_eq!(parse_size("1gb"), Some(1 << 30));
        assert_eq!(parse_size("10 B"), Some(10));
        for bad in [
            "",
            "MB",
            "-1",
            "1.5MB",
            "12 parsecs",
            "99999999999999999999",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_pairs_decode_and_unknown_ones_are_ignored() {
        let q = CheckQuery::parse(Some(
            "lag=64MB&replication_state=streaming&tag_zone=eu%2Dwest+1&foo=bar&mode=write",
        ))
        .unwrap();
        assert_eq!(
            q,
            CheckQuery {
                lag: Some(64 << 20),
                replication_state: Some("streaming".into()),
                mode_write: true,
                tags: vec![("zone".into(), "eu-west 1".into())],
            }
        );
        let err = CheckQuery::parse(Some("lag=lots")).unwrap_err();
        assert!(err.starts_with("lag=lots is not a size"), "{err}");
        assert_eq!(CheckQuery::parse(None).unwrap(), CheckQuery::default());
    }
}
