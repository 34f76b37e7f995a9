//! The replicated key-value state and its pure apply function.
//!
//! This is what every voter's state machine holds, byte for byte the same on
//! each: keys with revisions (for compare-and-set), leases with their TTL and
//! attached keys, and the cluster id. Applying a command here has no notion
//! of time: leases end only through an explicit `Revoke` or `Expire` entry,
//! which only the Raft leader's lessor proposes. That is what keeps expiry on
//! one clock (DESIGN.md, "The leader key and time").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::types::{
    Command, CommandResponse, Expect, KeyValue, LeaseId, LeaseRecord, Op, Outcome, FORMAT_VERSION,
};

/// The smallest and largest TTL a lease may be granted with. A request
/// outside is clamped, and the reply says which TTL was applied.
pub const MIN_TTL_MS: u64 = 500;
pub const MAX_TTL_MS: u64 = 3_600_000;

/// One change as a watcher sees it, in apply order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEvent {
    Put {
        revision: u64,
        kv: KeyValue,
    },
    Delete {
        revision: u64,
        key: String,
    },
    /// The whole state was replaced (a snapshot was installed): a watcher
    /// must drop what it knows and take these keys as the truth.
    Reset {
        revision: u64,
        kvs: Vec<KeyValue>,
    },
}

impl WatchEvent {
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put { revision, .. }
            | WatchEvent::Delete { revision, .. }
            | WatchEvent::Reset { revision, .. } => *revision,
        }
    }

    /// Whether a watcher of `prefix` cares about this event.
    pub fn matches(&self, prefix: &str) -> bool {
        match self {
            WatchEvent::Put { kv, .. } => kv.key.starts_with(prefix),
            WatchEvent::Delete { key, .. } => key.starts_with(prefix),
            WatchEvent::Reset { .. } => true,
        }
    }
}

/// The replicated store contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KvState {
    /// Increases by one with every applied change; 0 for an empty store.
    pub revision: u64,
    /// Set once by the first `InitCluster` entry; peers must carry it.
    pub cluster_id: Option<String>,
    pub kv: BTreeMap<String, KeyValue>,
    pub leases: BTreeMap<LeaseId, LeaseRecord>,
    /// The next lease id to hand out; ids are never reused.
    pub next_lease: LeaseId,
}

impl KvState {
    /// Applies one command and returns its response plus the watch events
    /// it caused. Deterministic: the same command on the same state gives
    /// the same result on every voter.
    pub fn apply(&mut self, cmd: &Command) -> (CommandResponse, Vec<WatchEvent>) {
        let mut events = Vec::new();
        let outcome = if cmd.format > FORMAT_VERSION {
            Outcome::UnsupportedFormat { format: cmd.format }
        } else {
            self.apply_op(&cmd.op, &mut events)
        };
        let resp = CommandResponse {
            revision: self.revision,
            outcome,
        };
        (resp, events)
    }

    fn apply_op(&mut self, op: &Op, events: &mut Vec<WatchEvent>) -> Outcome {
        match op {
            Op::Noop => Outcome::Done,
            Op::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
                Outcome::Done
            }
            Op::Put {
                key,
                value,
                lease,
                expect,
            } => {
                if let Err(current) = self.check(key, *expect) {
                    return Outcome::CasFailed { current };
                }
                if let Some(id) = lease {
                    if !self.leases.contains_key(id) {
                        return Outcome::LeaseNotFound { lease: *id };
                    }
                }
                self.revision += 1;
                let rev = self.revision;
                let prev = self.kv.get(key).cloned();
                if let Some(old) = prev.as_ref().and_then(|p| p.lease) {
                    if Some(old) != *lease {
                        if let Some(rec) = self.leases.get_mut(&old) {
                            rec.keys.remove(key);
                        }
                    }
                }
                if let Some(id) = lease {
                    if let Some(rec) = self.leases.get_mut(id) {
                        rec.keys.insert(key.clone());
                    }
                }
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                    mod_revision: rev,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: *lease,
                };
                self.kv.insert(key.clone(), kv.clone());
                events.push(WatchEvent::Put { revision: rev, kv });
                Outcome::Done
            }
            Op::PutGuarded {
                key,
                value,
                expect,
                guard_key,
                guard_value,
                guard_lease,
            } => {
                let guard_holds = self
                    .kv
                    .get(guard_key)
                    .is_some_and(|g| g.value == *guard_value && g.lease == Some(*guard_lease));
                if !guard_holds {
                    return Outcome::CasFailed {
                        current: self.kv.get(key).cloned(),
                    };
                }
                let put = Op::Put {
                    key: key.clone(),
                    value: value.clone(),
                    lease: None,
                    expect: *expect,
                };
                self.apply_op(&put, events)
            }
            Op::Delete { key, expect } => {
                if let Err(current) = self.check(key, *expect) {
                    return Outcome::CasFailed { current };
                }
                if self.kv.contains_key(key) {
                    self.revision += 1;
                    self.remove_key(key, events);
                }
                Outcome::Done
            }
            Op::Grant { ttl_ms } => {
                let ttl_ms = (*ttl_ms).clamp(MIN_TTL_MS, MAX_TTL_MS);
                self.next_lease = self.next_lease.max(1);
                let lease = self.next_lease;
                self.next_lease += 1;
                self.revision += 1;
                self.leases.insert(
                    lease,
                    LeaseRecord {
                        ttl_ms,
                        keys: Default::default(),
                    },
                );
                Outcome::Granted { lease, ttl_ms }
            }
            Op::Revoke { lease } | Op::Expire { lease } => {
                let Some(rec) = self.leases.remove(lease) else {
                    return Outcome::LeaseNotFound { lease: *lease };
                };
                self.revision += 1;
                for key in &rec.keys {
                    self.remove_key(key, events);
                }
                Outcome::Done
            }
        }
    }

    /// Removes `key` at the current revision, detaching it from its lease.
    fn remove_key(&mut self, key: &str, events: &mut Vec<WatchEvent>) {
        if let Some(old) = self.kv.remove(key) {
            if let Some(rec) = old.lease.and_then(|l| self.leases.get_mut(&l)) {
                rec.keys.remove(key);
            }
            events.push(WatchEvent::Delete {
                revision: self.revision,
                key: key.to_string(),
            });
        }
    }

    fn check(&self, key: &str, expect: Expect) -> Result<(), Option<KeyValue>> {
        let current = self.kv.get(key);
        let ok = match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::ModRevision(rev) => current.is_some_and(|c| c.mod_revision == rev),
        };
        if ok {
            Ok(())
        } else {
            Err(current.cloned())
        }
    }

    /// All keys starting with `prefix`, in key order.
    pub fn range(&self, prefix: &str) -> Vec<KeyValue> {
        self.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, lease: Option<LeaseId>, expect: Expect) -> Command {
        Command::new(Op::Put {
            key: key.into(),
            value: value.into(),
            lease,
            expect,
        })
    }

    fn grant(st: &mut KvState, ttl_ms: u64) -> LeaseId {
        match st.apply(&Command::new(Op::Grant { ttl_ms })).0.outcome {
            Outcome::Granted { lease, .. } => lease,
            other => panic!("grant failed: {other:?}"),
        }
    }

    #[test]
    fn cas_on_absent_key_lets_exactly_one_writer_in() {
        let mut st = KvState::default();
        let first = st.apply(&put("leader", "a", None, Expect::Absent)).0;
        let second = st.apply(&put("leader", "b", None, Expect::Absent)).0;
        assert_eq!(first.outcome, Outcome::Done);
        match second.outcome {
            Outcome::CasFailed { current: Some(kv) } => assert_eq!(kv.value, "a"),
            other => panic!("second acquire must fail, got {other:?}"),
        }
        assert_eq!(st.kv["leader"].value, "a");
    }

    #[test]
    fn cas_on_mod_revision_detects_a_concurrent_change() {
        let mut st = KvState::default();
        st.apply(&put("config", "v1", None, Expect::Any));
        let rev = st.kv["config"].mod_revision;
        st.apply(&put("config", "v2", None, Expect::ModRevision(rev)));
        let stale = st
            .apply(&put("config", "v3", None, Expect::ModRevision(rev)))
            .0;
        assert!(matches!(stale.outcome, Outcome::CasFailed { .. }));
        assert_eq!(st.kv["config"].value, "v2");
        assert_eq!(st.kv["config"].version, 2);
        assert_eq!(st.kv["config"].create_revision, rev);
    }

    #[test]
    fn expire_removes_every_key_bound_to_the_lease_and_nothing_else() {
        let mut st = KvState::default();
        let lease = grant(&mut st, 5000);
        st.apply(&put("leader", "n1", Some(lease), Expect::Absent));
        st.apply(&put("members/n1", "{}", Some(lease), Expect::Any));
        st.apply(&put("status", "{}", None, Expect::Any));
        let (resp, events) = st.apply(&Command::new(Op::Expire { lease }));
        assert_eq!(resp.outcome, Outcome::Done);
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.revision() == resp.revision));
        assert!(!st.kv.contains_key("leader"));
        assert!(!st.kv.contains_key("members/n1"));
        assert!(st.kv.contains_key("status"));
        assert!(st.leases.is_empty());
    }

    #[test]
    fn a_put_naming_a_gone_lease_fails_and_ids_are_never_reused() {
        let mut st = KvState::default();
        let lease = grant(&mut st, 5000);
        st.apply(&Command::new(Op::Revoke { lease }));
        let resp = st
            .apply(&put("leader", "n1", Some(lease), Expect::Absent))
            .0;
        assert_eq!(resp.outcome, Outcome::LeaseNotFound { lease });
        assert!(st.kv.is_empty());
        assert_ne!(grant(&mut st, 5000), lease);
        // A late Expire for the old id touches nothing.
        let again = st.apply(&Command::new(Op::Expire { lease })).0;
        assert_eq!(again.outcome, Outcome::LeaseNotFound { lease });
        assert_eq!(st.leases.len(), 1);
    }

    #[test]
    fn a_guarded_put_lands_only_while_the_guard_key_is_held_on_that_lease() {
        let mut st = KvState::default();
        let a = grant(&mut st, 5000);
        st.apply(&put("leader", "n1", Some(a), Expect::Absent));
        let guarded = |value: &str, holder: &str, lease: LeaseId| {
            Command::new(Op::PutGuarded {
                key: "sync".into(),
                value: value.into(),
                expect: Expect::Any,
                guard_key: "leader".into(),
                guard_value: holder.into(),
                guard_lease: lease,
            })
        };
        assert_eq!(st.apply(&guarded("1", "n1", a)).0.outcome, Outcome::Done);
        assert_eq!(st.kv["sync"].lease, None, "the sync key outlives the lease");
        // Another holder name, or the same name on another lease: refused.
        let b = grant(&mut st, 5000);
        for (holder, lease) in [("n2", a), ("n1", b)] {
            let refused = st.apply(&guarded("2", holder, lease)).0;
            assert!(matches!(refused.outcome, Outcome::CasFailed { .. }));
        }
        // The holder's lease ended: a late write from it changes nothing.
        st.apply(&Command::new(Op::Expire { lease: a }));
        let late = st.apply(&guarded("3", "n1", a)).0;
        assert!(matches!(late.outcome, Outcome::CasFailed { .. }));
        assert_eq!(st.kv["sync"].value, "1");
    }

    #[test]
    fn rebinding_a_key_to_another_lease_detaches_it_from_the_first() {
        let mut st = KvState::default();
        let a = grant(&mut st, 5000);
        let b = grant(&mut st, 5000);
        st.apply(&put("k", "1", Some(a), Expect::Any));
        st.apply(&put("k", "2", Some(b), Expect::Any));
        st.apply(&Command::new(Op::Expire { lease: a }));
        assert_eq!(st.kv["k"].value, "2");
        st.apply(&Command::new(Op::Expire { lease: b }));
        assert!(st.kv.is_empty());
    }

    #[test]
    fn ttl_is_clamped_and_the_applied_value_reported() {
        let mut st = KvState::default();
        let resp = st.apply(&Command::new(Op::Grant { ttl_ms: 1 })).0;
        assert!(matches!(resp.outcome, Outcome::Granted { ttl_ms, .. } if ttl_ms == MIN_TTL_MS));
    }

    #[test]
    fn a_newer_format_is_refused_without_change() {
        let mut st = KvState::default();
        let mut cmd = put("k", "v", None, Expect::Any);
        cmd.format = FORMAT_VERSION + 1;
        let resp = st.apply(&cmd).0;
        assert_eq!(
            resp.outcome,
            Outcome::UnsupportedFormat {
                format: FORMAT_VERSION + 1
            }
        );
        assert!(st.kv.is_empty());
    }

    #[test]
    fn cluster_id_is_set_once() {
        let mut st = KvState::default();
        st.apply(&Command::new(Op::InitCluster {
            cluster_id: "a".into(),
        }));
        st.apply(&Command::new(Op::InitCluster {
            cluster_id: "b".into(),
        }));
        assert_eq!(st.cluster_id.as_deref(), Some("a"));
    }

    #[test]
    fn range_returns_only_the_prefix() {
        let mut st = KvState::default();
        for k in ["members/a", "members/b", "membersx", "leader"] {
            st.apply(&put(k, "", None, Expect::Any));
        }
        let keys: Vec<_> = st.range("members/").into_iter().map(|kv| kv.key).collect();
        assert_eq!(keys, ["members/a", "members/b"]);
    }
}
