//! What a failed load reports: every problem, each with its key path.

use std::fmt;

use serde_path_to_error::Segment;

/// One thing wrong with a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key path, `raft.peers[2].address`; empty when the problem is the
    /// file as a whole (unreadable, not YAML).
    pub path: String,
    /// One sentence: what is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config file was refused: the file and every problem found in it.
/// `Display` prints one `origin: path: message` line per problem, which is
/// what the binaries show before exiting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or the name a test gave the text).
    pub origin: String,
    /// At least one problem.
    pub problems: Vec<Problem>,
}

impl ConfigError {
    pub(crate) fn one(origin: &str, problem: Problem) -> Self {
        ConfigError {
            origin: origin.to_owned(),
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}: {problem}", self.origin)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Turns a YAML syntax error (the text is no YAML document at all) into a
/// problem about the file as a whole, pointing at the line.
pub(crate) fn from_yaml(err: &serde_norway::Error) -> Problem {
    let mut text = err.to_string();
    if text.starts_with("duplicate entry") {
        // libyaml points at the start of the mapping, not at the repeated key.
        let key = text.split_once(" with key ").map_or("", |(_, k)| k);
        return Problem::new(
            "",
            format!("has the key {key} twice in one mapping — keep only one"),
        );
    }
    let mut line = String::new();
    if let Some(loc) = err.location() {
        text = text.replacen(
            &format!(" at line {} column {}", loc.line(), loc.column()),
            "",
            1,
        );
        line = format!(" (line {})", loc.line());
    }
    Problem::new(
        "",
        format!("is not valid YAML: {text} — fix the YAML syntax there{line}"),
    )
}

/// Turns a parse error (YAML syntax, unknown key, wrong type) into a problem
/// at the exact key, with serde's wording rewritten into one sentence with a fix.
pub(crate) fn from_serde(err: &serde_path_to_error::Error<serde_norway::Error>) -> Problem {
    let segments: Vec<&Segment> = err.path().iter().collect();
    let path = render(&segments);
    let inner = err.inner();
    let mut text = inner.to_string();
    let location = inner.location();
    if let Some(loc) = &location {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_owned();
        }
    }
    // serde_norway prefixes its own path of the innermost map or sequence.
    for n in (1..=segments.len()).rev() {
        if let Some(rest) = text.strip_prefix(&format!("{}: ", render(&segments[..n]))) {
            text = rest.to_owned();
            break;
        }
    }
    let (path, mut message) = rewrite(path, &text);
    if let Some(loc) = location {
        message.push_str(&format!(" (line {})", loc.line()));
    }
    Problem { path, message }
}

fn render(segments: &[&Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => out.push_str(if out.is_empty() { "?" } else { ".?" }),
        }
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The text between the first pair of backticks.
fn quoted(text: &str) -> Option<&str> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(&text[start..start + len])
}

fn rewrite(path: String, text: &str) -> (String, String) {
    if text.starts_with("unknown field") {
        let key = quoted(text).unwrap_or("?");
        let expected: Vec<&str> = match text.find(", expected") {
            Some(at) => text[at..].split('`').skip(1).step_by(2).collect(),
            None => Vec::new(),
        };
        return (path.clone(), unknown_key(&path, key, &expected));
    }
    if text.starts_with("missing field") {
        let key = quoted(text).unwrap_or("?");
        let path = join(&path, key);
        let message = format!(
            "is required — add it to this file, e.g. {}",
            example_for(&path, key)
        );
        return (path, message);
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix) {
            if let Some((found, expected)) = rest.rsplit_once(", expected ") {
                return (
                    path,
                    format!(
                        "{} is not allowed here — write {}",
                        describe(found),
                        describe(expected)
                    ),
                );
            }
        }
    }
    if text.contains(" — ") {
        return (path, text.to_owned());
    }
    let fix = if path.is_empty() {
        "fix the YAML there"
    } else {
        "fix this value"
    };
    (path, format!("{text} — {fix}"))
}

/// Serde's type names in operator words.
fn describe(serde_words: &str) -> String {
    let s = serde_words.trim();
    match s {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i64" => "a whole number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "unit value" => "an empty value".to_owned(),
        "sequence" | "a sequence" => "a list".to_owned(),
        "map" | "a map" => "a mapping".to_owned(),
        _ if s.starts_with("struct ") => "a mapping of keys".to_owned(),
        _ => s.replace('`', ""),
    }
}

/// Keys Patroni users put elsewhere than pgkeel reads them.
const DCS_KEYS: [&str; 12] = [
    "ttl",
    "loop_wait",
    "retry_timeout",
    "keepalive_interval",
    "keepalive_timeout",
    "safety_margin",
    "maximum_lag_on_failover",
    "primary_start_timeout",
    "synchronous_mode",
    "synchronous_mode_strict",
    "synchronous_node_count",
    "maximum_lag_on_syncnode",
];
const DCS_SECTIONS: [&str; 6] = [
    "etcd",
    "etcd3",
    "consul",
    "zookeeper",
    "kubernetes",
    "exhibitor",
];

fn unknown_key(path: &str, key: &str, expected: &[&str]) -> String {
    let parent = path.strip_suffix(key).unwrap_or(path).trim_end_matches('.');
    if DCS_SECTIONS.contains(&key) && parent.is_empty() {
        return format!("is a Patroni DCS section, but pgkeel embeds its own consensus — remove `{key}` and list the voters under raft.peers");
    }
    if DCS_KEYS.contains(&key) && parent != "bootstrap.dcs" {
        return "is a cluster-wide setting — move it under bootstrap.dcs".to_owned();
    }
    if let Some(near) = expected
        .iter()
        .copied()
        .find(|k| edit_distance(k, key) <= 2)
    {
        return format!("is not a known key — did you mean `{near}`?");
    }
    if expected.is_empty() {
        return "is not a known key — remove it".to_owned();
    }
    format!(
        "is not a known key — use one of {}, or remove it",
        expected.join(", ")
    )
}

fn example_for(path: &str, key: &str) -> String {
    let example = match path {
        "scope" => "scope: demo",
        "name" => "name: node1",
        "raft" => "a raft section with node_id, listen, data_dir, secret and peers",
        "raft.node_id" => "node_id: 1",
        "raft.listen" => "listen: 127.0.0.1:7001",
        "raft.data_dir" => "data_dir: /var/lib/pgkeel/raft",
        "raft.peers" => "peers: [{ id: 1, name: node1, address: 127.0.0.1:7001 }, …]",
        "raft.tls.certfile" => "certfile: /etc/pgkeel/tls/node1.crt",
        "raft.tls.keyfile" => "keyfile: /etc/pgkeel/tls/node1.key",
        "raft.tls.cafile" => "cafile: /etc/pgkeel/tls/ca.crt",
        "postgresql.listen" => "listen: 127.0.0.1:5432",
        "postgresql.data_dir" => "data_dir: /var/lib/postgresql/15/main",
        "postgresql.authentication" => "authentication: { superuser: { username: postgres }, replication: { username: replicator } }",
        "postgresql.authentication.superuser" => "superuser: { username: postgres }",
        "postgresql.authentication.replication" => "replication: { username: replicator }",
        _ if path.ends_with(".username") => "username: postgres",
        _ if path.starts_with("raft.peers[") => match key {
            "id" => "id: 2",
            "name" => "name: node2",
            "address" => "address: 127.0.0.1:7002",
            _ => "",
        },
        _ => "",
    };
    if example.is_empty() {
        format!("{key}: …")
    } else {
        example.to_owned()
    }
}

/// Levenshtein distance, for "did you mean"; keys are short.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
