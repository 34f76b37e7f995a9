//! Changing the dynamic config (the `config` key): read, merge, check,
//! compare-and-set. The one implementation behind the REST API's
//! `PATCH/PUT /config` and the admin service's `EditConfig`.
//!
//! ```text
//!  read config (rev R) ──expected rev ≠ R──▶ Stale
//!        │ merge the patch (or take the whole new document)
//!        ▼
//!  config::edit::check_document ──problem──▶ Invalid (nothing stored)
//!        │
//!        ▼
//!  put config if mod_revision == R ──lost──▶ Stale / Raced
//!        │
//!        ▼  Edited { revision, json }
//! ```
//!
//! Every agent follows the key: timings reach its HA core at once, and
//! PostgreSQL parameters are written and reloaded by the core's
//! `ApplyParameters` (restart-only ones are flagged "pending restart").

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;

use super::keys;
use super::{Consistency, Store};
use crate::config::edit::{check_document, merge_patch};
use crate::config::DcsConfig;
use crate::consensus::types::{Expect, KeyValue};

/// Reading and writing the `config` key, so the REST API (through its own
/// source) and the admin service (through [`Store`]) share [`edit`].
pub trait ConfigAccess: Send + Sync {
    /// The `config` key as the Raft leader has it, if set.
    fn read_config(&self) -> BoxFuture<'_, Result<Option<KeyValue>, String>>;
    /// Writes the `config` key if `expect` holds; `Ok(Err(_))` is a lost
    /// compare-and-set.
    fn write_config(
        &self,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Result<u64, Option<KeyValue>>, String>>;
    /// The shortest TTL among the leases in force (this node's copy of the
    /// store), if it knows: a lease keeps the TTL it was granted with.
    fn shortest_lease_ttl(&self) -> Option<Duration> {
        None
    }
}

impl ConfigAccess for Store {
    fn read_config(&self) -> BoxFuture<'_, Result<Option<KeyValue>, String>> {
        Box::pin(async move {
            self.get(keys::CONFIG, Consistency::Linearizable)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn write_config(
        &self,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Result<u64, Option<KeyValue>>, String>> {
        Box::pin(async move {
            self.put(keys::CONFIG, &value, None, expect)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn shortest_lease_ttl(&self) -> Option<Duration> {
        let ms = self
            .state_machine()
            .read(|s| s.leases.values().map(|l| l.ttl_ms).min())?;
        Some(Duration::from_millis(ms))
    }
}

/// What to change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// An RFC 7386 merge patch onto the stored document.
    Patch(Value),
    /// A whole new document (missing keys take their defaults).
    Replace(Value),
}

/// A stored edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Edited {
    /// The `config` key's new `mod_revision`.
    pub revision: u64,
    /// The document as stored (JSON, every key, defaults filled in).
    pub json: String,
    pub config: DcsConfig,
}

/// Why an edit was not stored. Each `Display`s as one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The result is not a valid config (bad JSON, unknown key, bad value,
    /// a timing that breaks the lease invariant).
    #[error("{0}")]
    Invalid(String),
    /// The caller edited revision `read`, but the key has moved on.
    #[error("the config changed since revision {read} was read: show it again and re-apply")]
    Stale { read: u64 },
    /// Without an expected revision: another edit landed between this
    /// one's read and its write.
    #[error("the dynamic config changed while this edit was applied; read it again and retry")]
    Raced,
    /// Nothing to patch yet.
    #[error("the cluster has no dynamic config yet to patch: wait for the first data node to bootstrap it")]
    Missing,
    /// The store could not be read or written.
    #[error("cannot {0}")]
    Store(String),
}

/// Applies `change` to the `config` key. With `expected`, the edit is
/// refused unless the key is still at that revision (`mod_revision`, as
/// `ShowConfig` and `GET /config` reading returned it); without, it is
/// checked against whatever it reads. Nothing is stored unless the
/// result passes [`check_document`].
pub async fn edit(
    access: &dyn ConfigAccess,
    change: Change,
    expected: Option<u64>,
    election_timeout_max: Duration,
) -> Result<Edited, EditError> {
    let current = access
        .read_config()
        .await
        .map_err(|e| EditError::Store(format!("read the dynamic config: {e}")))?;
    if let Some(read) = expected {
        if current.as_ref().map(|kv| kv.mod_revision) != Some(read) {
            return Err(EditError::Stale { read });
        }
    }
    let (doc, expect) = match change {
        Change::Replace(doc) => {
            let expect = match &current {
                Some(kv) if expected.is_some() => Expect::ModRevision(kv.mod_revision),
                Some(_) => Expect::Any,
                None => Expect::Absent,
            };
            (doc, expect)
        }
        Change::Patch(patch) => {
            let kv = current.as_ref().ok_or(EditError::Missing)?;
            // An unreadable stored document is patched from nothing: the
            // check below then says what is missing.
            let mut doc: Value = serde_json::from_str(&kv.value)
                .unwrap_or_else(|_| Value::Object(serde_json::Map::new()));
            merge_patch(&mut doc, &patch);
            (doc, Expect::ModRevision(kv.mod_revision))
        }
    };
    let config = check_document(doc, election_timeout_max).map_err(EditError::Invalid)?;
    if let Some(held) = access.shortest_lease_ttl() {
        check_leases_in_force(&config, held, election_timeout_max).map_err(EditError::Invalid)?;
    }
    let json = keys::encode(&config);
    match access.write_config(json.clone(), expect).await {
        Ok(Ok(revision)) => Ok(Edited {
            revision,
            json,
            config,
        }),
        Ok(Err(_)) => Err(match expected {
            Some(read) => EditError::Stale { read },
            None => EditError::Raced,
        }),
        Err(e) => Err(EditError::Store(format!("write the dynamic config: {e}"))),
    }
}

/// The new lease timings against the TTL the leases in force were granted
/// with: a lease keeps its TTL until it is granted again (a node's
/// restart, or a lost lease), while safety_margin and the keepalive
/// timings apply at once. A holder whose margin reached its lease's TTL
/// would fence itself at its next renewal.
fn check_leases_in_force(
    config: &DcsConfig,
    held: Duration,
    election_timeout_max: Duration,
) -> Result<(), String> {
    if held >= config.ttl {
        return Ok(()); // the stored check already covered the shorter ttl
    }
    crate::config::check_timing(
        held,
        config.safety_margin,
        config.keepalive_interval,
        election_timeout_max,
        config.keepalive_timeout,
    )
    .map_err(|why| {
        format!(
            "the new dynamic config is refused: the leases in force were granted with ttl {} and keep it until they are granted again, so the other timings must fit it too ({why}); change ttl first, and these timings once every data node has restarted",
            crate::config::duration::format(held)
        )
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    /// The `config` key in memory, with revisions, and the shortest TTL
    /// of the leases in force.
    #[derive(Default)]
    struct Memory(Mutex<(u64, BTreeMap<String, KeyValue>)>, Option<Duration>);

    impl Memory {
        fn with(value: &str) -> Memory {
            let m = Memory::default();
            m.set(value);
            m
        }
        fn set(&self, value: &str) -> u64 {
            let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
            g.0 += 1;
            let rev = g.0;
            g.1.insert(
                keys::CONFIG.into(),
                KeyValue {
                    key: keys::CONFIG.into(),
                    value: value.into(),
                    create_revision: 1,
                    mod_revision: rev,
                    version: rev,
                    lease: None,
                },
            );
            rev
        }
        fn value(&self) -> Option<String> {
            let g = self.0.lock().unwrap_or_else(|e| e.into_inner());
            g.1.get(keys::CONFIG).map(|kv| kv.value.clone())
        }
    }

    impl ConfigAccess for Memory {
        fn read_config(&self) -> BoxFuture<'_, Result<Option<KeyValue>, String>> {
            let kv = self
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .get(keys::CONFIG)
                .cloned();
            Box::pin(async move { Ok(kv) })
        }
        fn write_config(
            &self,
            value: String,
            expect: Expect,
        ) -> BoxFuture<'_, Result<Result<u64, Option<KeyValue>>, String>> {
            let current = self
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .1
                .get(keys::CONFIG)
                .cloned();
            let ok = match expect {
                Expect::Any => true,
                Expect::Absent => current.is_none(),
                Expect::ModRevision(r) => current.as_ref().is_some_and(|c| c.mod_revision == r),
            };
            let out = if ok {
                Ok(self.set(&value))
            } else {
                Err(current)
            };
            Box::pin(async move { Ok(out) })
        }
        fn shortest_lease_ttl(&self) -> Option<Duration> {
            self.1
        }
    }

    const ETM: Duration = Duration::from_secs(1);
    const STORED: &str = r#"{"ttl":"5s","loop_wait":"1s"}"#;

    #[tokio::test]
    async fn a_patch_at_the_read_revision_is_stored_whole() {
        let m = Memory::with(STORED);
        let patch = json!({"loop_wait": 2, "postgresql": {"parameters": {"work_mem": "8MB"}}});
        let e = edit(&m, Change::Patch(patch), Some(1), ETM).await;
        let e = e.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.revision, 2);
        assert_eq!(m.value().as_deref(), Some(e.json.as_str()));
        let stored: Value = serde_json::from_str(&e.json).unwrap_or_default();
        assert_eq!(stored["loop_wait"], "2s");
        assert_eq!(stored["ttl"], "5s");
        assert_eq!(stored["postgresql"]["parameters"]["work_mem"], "8MB");
        assert!(stored["safety_margin"].is_string(), "defaults filled in");
    }

    #[tokio::test]
    async fn stale_invalid_and_missing_store_nothing() {
        let m = Memory::with(STORED);
        let stale = edit(&m, Change::Patch(json!({"loop_wait": 2})), Some(7), ETM).await;
        assert_eq!(stale, Err(EditError::Stale { read: 7 }));
        assert_eq!(
            stale.err().map(|e| e.to_string()).unwrap_or_default(),
            "the config changed since revision 7 was read: show it again and re-apply"
        );
        let bad = edit(&m, Change::Patch(json!({"ttl": "2s"})), Some(1), ETM).await;
        assert!(
            matches!(&bad, Err(EditError::Invalid(s)) if s.contains("raise ttl to at least")),
            "{bad:?}"
        );
        assert_eq!(m.value().as_deref(), Some(STORED));
        let empty = Memory::default();
        let missing = edit(&empty, Change::Patch(json!({})), None, ETM).await;
        assert_eq!(missing, Err(EditError::Missing));
        assert_eq!(empty.value(), None);
        let stale = edit(&empty, Change::Patch(json!({})), Some(1), ETM).await;
        assert_eq!(stale, Err(EditError::Stale { read: 1 }));
    }

    #[tokio::test]
    async fn replace_takes_defaults_and_creates_the_key() {
        let empty = Memory::default();
        let e = edit(&empty, Change::Replace(json!({"ttl": "6s"})), None, ETM).await;
        assert_eq!(e.map(|e| e.config.ttl), Ok(Duration::from_secs(6)));
        let m = Memory::with(STORED);
        let e = edit(&m, Change::Replace(json!({})), None, ETM).await;
        assert_eq!(e.map(|e| e.config), Ok(crate::config::DcsConfig::default()));
    }

    #[tokio::test]
    async fn timings_must_fit_the_leases_in_force() {
        let mut m = Memory::with(STORED);
        m.1 = Some(Duration::from_secs(5));
        // ttl and margin raised together: the 5 s leases would not hold.
        let both = json!({"ttl": "30s", "safety_margin": "5s"});
        let refused = edit(&m, Change::Patch(both), Some(1), ETM).await;
        assert!(
            matches!(&refused, Err(EditError::Invalid(s)) if s.contains("leases in force were granted with ttl 5s")),
            "{refused:?}"
        );
        assert_eq!(m.value().as_deref(), Some(STORED));
        // ttl alone is fine, and so is a margin that fits 5 s.
        let ttl = edit(&m, Change::Patch(json!({"ttl": "30s"})), Some(1), ETM).await;
        assert!(ttl.is_ok(), "{ttl:?}");
        let margin = json!({"safety_margin": "1s"});
        assert!(edit(&m, Change::Patch(margin), Some(2), ETM).await.is_ok());
    }
}
