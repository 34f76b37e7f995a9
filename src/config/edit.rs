//! Editing the dynamic config: the JSON merge patch and the check every
//! new document passes before it is stored. Pure; the compare-and-set
//! write around it is [`crate::store::config_edit`], shared by the REST
//! API (`PATCH/PUT /config`) and the admin service (`EditConfig`), and
//! `pgkeelctl edit-config` uses the same merge to show its diff.

use std::time::Duration;

use serde_json::Value;

use super::DcsConfig;

/// RFC 7386: objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Reads `doc` as a dynamic config and checks it like `bootstrap.dcs`
/// (unknown keys, bad values, DESIGN.md's lease timing invariant, which
/// needs the answering node's `raft.election_timeout_max`). The error is
/// one sentence naming every key at fault and the reason.
pub fn check_document(doc: Value, election_timeout_max: Duration) -> Result<DcsConfig, String> {
    let dcs: DcsConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        format!(
            "the new dynamic config is not valid: {at}{}; fix that key and retry",
            e.inner()
        )
    })?;
    let problems = dcs.validate(election_timeout_max);
    if problems.is_empty() {
        return Ok(dcs);
    }
    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
    Err(format!(
        "the new dynamic config is refused: {}",
        list.join("; ")
    ))
}

/// The document as pgkeel stores it: every key, defaults filled in,
/// durations spelled out. `None` when `doc` is not a readable config (the
/// server's check reports why).
pub fn normalized(doc: &Value) -> Option<Value> {
    let dcs: DcsConfig = serde_json::from_value(doc.clone()).ok()?;
    serde_json::to_value(dcs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "h": [1]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "h": [1]}));
        let mut scalar = json!("x");
        merge_patch(&mut scalar, &json!({"k": {"n": null, "m": 1}}));
        assert_eq!(scalar, json!({"k": {"m": 1}}));
        let mut whole = json!({"a": 1});
        merge_patch(&mut whole, &json!([1, 2]));
        assert_eq!(whole, json!([1, 2]));
    }

    #[test]
    fn check_names_the_key_and_the_reason() {
        let etm = Duration::from_secs(1);
        let ok = check_document(json!({"ttl": "6s", "loop_wait": 2}), etm);
        assert_eq!(ok.map(|d| d.loop_wait), Ok(Duration::from_secs(2)));
        for (doc, says) in [
            (json!({"paws": true}), "unknown field `paws`"),
            (
                json!({"postgresql": {"use_slots": false}}),
                "postgresql.use_slots: unknown field `use_slots`",
            ),
            (json!({"ttl": "soon"}), "ttl: "),
            (json!({"ttl": "2s"}), "raise ttl to at least"),
            (
                json!({"safety_margin": "4s"}),
                "ttl: ttl 5s must be longer than safety_margin 4s",
            ),
            (
                json!({"postgresql": {"parameters": {"bad name": 1}}}),
                "postgresql.parameters.bad name",
            ),
        ] {
            let err = check_document(doc.clone(), etm).err().unwrap_or_default();
            assert!(err.contains(says), "{doc}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    #[test]
    fn normalized_fills_defaults_and_spells_durations() {
        let n = normalized(&json!({"ttl": 6})).unwrap_or_default();
        assert_eq!(n["ttl"], "6s");
        assert!(n["loop_wait"].is_string(), "{n}");
        assert_eq!(normalized(&json!({"ttl": "soon"})), None);
    }
}
