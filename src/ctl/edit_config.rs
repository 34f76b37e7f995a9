//! `pgkeelctl edit-config`, with Patroni's semantics: `-s a.b.c=VALUE`
//! (the value parsed as YAML, `null` removes the key), `-p name=VALUE`
//! (short for `-s postgresql.parameters.name=VALUE`), `--apply FILE|-`
//! (a YAML or JSON document merged as a patch). It shows the change as a
//! unified diff of the YAML, asks on a terminal unless `--force`, and
//! sends the merge patch with the revision it read, so an edit made
//! meanwhile by someone else is refused instead of overwritten.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use serde_json::Value;
use tonic::transport::Channel;

use super::{authorized, output, status_error, CtlError, Format};
use crate::config::edit::{merge_patch, normalized};
use crate::pb::admin as pb;
use crate::pb::admin::admin_client::AdminClient;

/// One `-s`/`-p` argument: where in the document, and the new value
/// (`Null` removes the key).
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub path: Vec<String>,
    pub value: Value,
}

/// Parses `-s key.path=VALUE`. The path is split on every dot; the value
/// is YAML (`5` a number, `false` a boolean, `8MB` a string, `null` or
/// nothing removes the key).
pub fn parse_set(arg: &str) -> Result<Setting, String> {
    let (key, value) = split(arg, "-s loop_wait=5")?;
    let path: Vec<String> = key.split('.').map(str::to_owned).collect();
    if path.iter().any(|p| p.trim().is_empty()) {
        return Err(format!(
            "\"{key}\" has an empty part between dots — write a path like postgresql.parameters.work_mem"
        ));
    }
    Ok(Setting {
        path,
        value: yaml_value(value)?,
    })
}

/// Parses `-p name=VALUE`: a PostgreSQL parameter. The name is taken
/// whole, so extension settings (`pg_stat_statements.max`) work.
pub fn parse_param(arg: &str) -> Result<Setting, String> {
    let (name, value) = split(arg, "-p work_mem=8MB")?;
    Ok(Setting {
        path: vec!["postgresql".into(), "parameters".into(), name.to_owned()],
        value: yaml_value(value)?,
    })
}

fn split<'a>(arg: &'a str, example: &str) -> Result<(&'a str, &'a str), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v)),
        _ => Err(format!(
            "\"{arg}\" is not NAME=VALUE — write it like {example}"
        )),
    }
}

fn yaml_value(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_norway::from_str(text)
        .map_err(|e| format!("\"{text}\" is not a YAML value ({e}) — quote it, e.g. '\"{text}\"'"))
}

/// The merge patch of `--apply`'s document (if any) with every setting
/// on top, in order.
pub fn build_patch(apply: Option<Value>, settings: &[Setting]) -> Value {
    let mut patch = apply.unwrap_or_else(|| Value::Object(Default::default()));
    for s in settings {
        let mut at = &mut patch;
        for (i, key) in s.path.iter().enumerate() {
            if !at.is_object() {
                *at = Value::Object(Default::default());
            }
            let Value::Object(map) = at else {
                break;
            };
            if i + 1 == s.path.len() {
                map.insert(key.clone(), s.value.clone());
                break;
            }
            at = map.entry(key.clone()).or_insert(Value::Null);
        }
    }
    patch
}

/// A unified diff (3 lines of context) from `old` to `new`, line by
/// line; empty when they are equal. Config documents are small, so a
/// plain longest-common-subsequence table is enough.
pub fn unified_diff(old: &str, new: &str, from: &str, to: &str) -> String {
    const CONTEXT: usize = 3;
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // (tag, old index, new index) per line of the script: ' ', '-', '+'.
    let mut script: Vec<(char, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            script.push((' ', i, j));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            script.push(('-', i, j));
            i += 1;
        } else {
            script.push(('+', i, j));
            j += 1;
        }
    }
    let changed: Vec<usize> = (0..script.len()).filter(|&k| script[k].0 != ' ').collect();
    let Some(&first) = changed.first() else {
        return String::new();
    };
    // Group changes whose context would overlap into one hunk.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut end) = (first, first);
    for &k in &changed[1..] {
        if k - end > 2 * CONTEXT {
            hunks.push((start, end));
            start = k;
        }
        end = k;
    }
    hunks.push((start, end));
    let mut out = format!("--- {from}\n+++ {to}\n");
    for (start, end) in hunks {
        let lo = start.saturating_sub(CONTEXT);
        let hi = (end + CONTEXT).min(script.len() - 1);
        let lines = &script[lo..=hi];
        let old_len = lines.iter().filter(|l| l.0 != '+').count();
        let new_len = lines.iter().filter(|l| l.0 != '-').count();
        let (_, old_at, new_at) = lines[0];
        // GNU diff numbers an empty side by the line before it.
        let old_start = if old_len == 0 { old_at } else { old_at + 1 };
        let new_start = if new_len == 0 { new_at } else { new_at + 1 };
        out.push_str(&format!(
            "@@ -{old_start},{old_len} +{new_start},{new_len} @@\n"
        ));
        for &(tag, oi, nj) in lines {
            let text = if tag == '+' { b[nj] } else { a[oi] };
            out.push(tag);
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// The document as YAML, stored keys normalized (defaults filled in,
/// durations spelled out) when it reads as a config.
fn yaml_of(doc: &Value) -> String {
    let shown = normalized(doc).unwrap_or_else(|| doc.clone());
    serde_norway::to_string(&shown).unwrap_or_else(|_| shown.to_string())
}

/// Reads `--apply`'s document: a file, or stdin for `-`.
fn read_apply(path: &PathBuf) -> Result<Value, CtlError> {
    let (name, text) = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CtlError(format!("cannot read the config patch from stdin: {e}")))?;
        ("stdin".to_string(), text)
    } else {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CtlError(format!(
                "cannot read {}: {e}; check the path passed to --apply",
                path.display()
            ))
        })?;
        (path.display().to_string(), text)
    };
    let doc: Value = serde_norway::from_str(&text).map_err(|e| {
        CtlError(format!(
            "{name} is not YAML or JSON ({e}); write the keys to change, e.g. loop_wait: 5"
        ))
    })?;
    if !doc.is_object() {
        return Err(CtlError(format!(
            "{name} holds no mapping; write the keys to change, e.g. loop_wait: 5"
        )));
    }
    Ok(doc)
}

/// Asks "Apply these changes? [y/N]" on the terminal.
fn confirmed() -> Result<bool, CtlError> {
    if !std::io::stdin().is_terminal() {
        return Err(CtlError(
            "stdin is not a terminal, so nobody can confirm the change: pass --force to apply it without asking".into(),
        ));
    }
    print!("Apply these changes? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CtlError(format!("cannot read the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// What `edit-config` was asked to do.
pub struct EditArgs {
    pub settings: Vec<Setting>,
    pub apply: Option<PathBuf>,
    pub force: bool,
}

/// Shows the config, builds and shows the change, confirms, and sends it
/// with the revision shown. Returns what to print last.
pub async fn run(
    client: &mut AdminClient<Channel>,
    endpoint: &str,
    secret: &Option<String>,
    args: EditArgs,
    format: Format,
) -> Result<String, CtlError> {
    let apply = args.apply.as_ref().map(read_apply).transpose()?;
    let shown = client
        .show_config(pb::ShowConfigRequest {})
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    let current: Value = serde_json::from_str(&shown.json).map_err(|e| {
        CtlError(format!(
            "the store's config key is not JSON ({e}); rewrite it with PUT /config on a node's REST API"
        ))
    })?;
    let patch = build_patch(apply, &args.settings);
    let mut proposed = current.clone();
    merge_patch(&mut proposed, &patch);
    let before = yaml_of(&current);
    let diff = unified_diff(&before, &yaml_of(&proposed), "before", "after");
    if diff.is_empty() {
        return Ok("no changes".into());
    }
    print!("{diff}");
    let _ = std::io::stdout().flush();
    if !args.force && !confirmed()? {
        return Err(CtlError("not applied: the change was not confirmed".into()));
    }
    let reply = client
        .edit_config(authorized(
            pb::EditConfigRequest {
                patch_json: patch.to_string(),
                expected_revision: shown.mod_revision,
            },
            secret,
        )?)
        .await
        .map_err(|s| status_error(endpoint, s))?
        .into_inner();
    Ok(output::revision(reply.mod_revision, format))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_takes_a_dotted_path_and_a_yaml_value() {
        let s = |a| parse_set(a).map(|s| (s.path.join("/"), s.value));
        assert_eq!(s("loop_wait=5"), Ok(("loop_wait".into(), json!(5))));
        assert_eq!(
            s("postgresql.use_pg_rewind=false"),
            Ok(("postgresql/use_pg_rewind".into(), json!(false)))
        );
        assert_eq!(s("ttl=6s"), Ok(("ttl".into(), json!("6s"))));
        assert_eq!(s("ttl=null"), Ok(("ttl".into(), Value::Null)));
        assert_eq!(s("ttl="), Ok(("ttl".into(), Value::Null)));
        assert_eq!(s("x='a=b'"), Ok(("x".into(), json!("a=b"))));
        assert_eq!(s("x=a=b"), Ok(("x".into(), json!("a=b"))));
        assert_eq!(s("x=1.5"), Ok(("x".into(), json!(1.5))));
        for bad in ["loop_wait", "=5", "a..b=1", ".a=1", "a.=1", "x=[1"] {
            assert!(parse_set(bad).is_err(), "{bad}");
        }
        let p = parse_param("pg_stat_statements.max=5000").map(|s| s.path.join("/"));
        assert_eq!(p, Ok("postgresql/parameters/pg_stat_statements.max".into()));
        assert!(parse_param("work_mem").is_err());
    }

    #[test]
    fn settings_go_on_top_of_the_applied_document() {
        let sets = [
            parse_set("postgresql.use_pg_rewind=false"),
            parse_param("work_mem=8MB"),
            parse_param("max_connections=200"),
            parse_set("ttl=null"),
        ]
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_default();
        let apply = json!({"loop_wait": 3, "postgresql": {"parameters": {"work_mem": "4MB"}}});
        assert_eq!(
            build_patch(Some(apply), &sets),
            json!({
                "loop_wait": 3,
                "ttl": null,
                "postgresql": {
                    "use_pg_rewind": false,
                    "parameters": {"work_mem": "8MB", "max_connections": 200}
                }
            })
        );
        // A scalar in the way becomes a mapping.
        let over = build_patch(Some(json!({"postgresql": 1})), &sets[..1]);
        assert_eq!(over, json!({"postgresql": {"use_pg_rewind": false}}));
    }

    #[test]
    fn diff_is_unified_with_three_lines_of_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\n";
        let new = "a\nB\nc\nd\ne\nf\ng\nh\ni\nj\nk\nl\nm\nn\n";
        assert_eq!(
            unified_diff(old, new, "before", "after"),
            "--- before\n+++ after\n\
             @@ -1,5 +1,5 @@\n a\n-b\n+B\n c\n d\n e\n\
             @@ -11,3 +11,4 @@\n k\n l\n m\n+n\n"
        );
        assert_eq!(unified_diff(old, old, "x", "y"), "");
        assert_eq!(
            unified_diff("", "x\n", "before", "after"),
            "--- before\n+++ after\n@@ -0,0 +1,1 @@\n+x\n"
        );
        assert_eq!(
            unified_diff("x\ny\n", "y\n", "before", "after"),
            "--- before\n+++ after\n@@ -1,2 +1,1 @@\n-x\n y\n"
        );
        // Changes closer than twice the context share a hunk.
        let joined = unified_diff("1\n2\n3\n4\n5\n6\n7\n", "X\n2\n3\n4\n5\n6\nY\n", "a", "b");
        assert_eq!(joined.matches("@@ -").count(), 1, "{joined}");
    }

    #[test]
    fn the_yaml_shown_is_the_stored_form() {
        let before = yaml_of(&json!({"ttl": "5s"}));
        let after = yaml_of(&json!({"ttl": 5}));
        assert_eq!(
            before, after,
            "5 and 5s are the same ttl: no change to show"
        );
        let diff = unified_diff(
            &before,
            &yaml_of(&json!({"ttl": "5s", "postgresql": {"parameters": {"work_mem": "8MB"}}})),
            "before",
            "after",
        );
        assert!(diff.contains("+    work_mem: 8MB\n"), "{diff}");
    }
}
