//! The openraft state machine: applies committed commands to [`KvState`],
//! pushes the resulting changes to watchers, and builds / installs snapshots.
//!
//! The state lives in memory; durability comes from the sled log plus the
//! last snapshot, which is kept in the `snapshot` tree of the same sled
//! database. On open the snapshot is loaded and openraft re-applies the log
//! entries after it.
//!
//! Watch registration and apply share one lock order (state, then watchers),
//! so a watcher gets the keys as of some revision plus every later change,
//! with no gap and no repeat.

// openraft's traits fix StorageError as the error type; it is large.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};

use super::kv::{KvState, WatchEvent};
use super::types::{CommandResponse, KeyValue, Member, NodeId, TypeConfig, FORMAT_VERSION};

type SmError = StorageError<NodeId>;

/// What a snapshot holds, with its format version.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotData {
    format: u16,
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Member>,
    state: KvState,
}

/// A stored snapshot: its meta plus the encoded [`SnapshotData`].
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    format: u16,
    meta: SnapshotMeta<NodeId, Member>,
    data: Vec<u8>,
}

const SNAPSHOT_KEY: &[u8] = b"current";

#[derive(Default)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, Member>,
    state: KvState,
}

struct Watcher {
    prefix: String,
    tx: mpsc::UnboundedSender<WatchEvent>,
}

/// The part of the state machine the store layer reads and watches. Cheap
/// to clone; every clone sees the same state.
#[derive(Clone)]
pub struct SmHandle {
    applied: Arc<RwLock<Applied>>,
    watchers: Arc<Mutex<Vec<Watcher>>>,
    changed: Arc<Notify>,
}

fn lock_poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic while holding the lock cannot leave KvState half-written
    // (apply mutates a value it owns), so the data is still consistent.
    e.into_inner()
}

impl SmHandle {
    /// Reads the state without going through Raft (a local, possibly stale read).
    pub fn read<R>(&self, f: impl FnOnce(&KvState) -> R) -> R {
        let guard = self.applied.read().unwrap_or_else(lock_poisoned);
        f(&guard.state)
    }

    /// The keys under `prefix` now, and a channel with every later change to them.
    pub fn watch(&self, prefix: &str) -> (u64, Vec<KeyValue>, mpsc::UnboundedReceiver<WatchEvent>) {
        let guard = self.applied.read().unwrap_or_else(lock_poisoned);
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers
            .lock()
            .unwrap_or_else(lock_poisoned)
            .push(Watcher {
                prefix: prefix.to_string(),
                tx,
            });
        (guard.state.revision, guard.state.range(prefix), rx)
    }

    /// Woken after every apply and snapshot install (the lessor waits on it).
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    fn publish(&self, events: Vec<WatchEvent>) {
        if events.is_empty() {
            return;
        }
        let mut watchers = self.watchers.lock().unwrap_or_else(lock_poisoned);
        watchers.retain(|w| {
            for ev in events.iter().filter(|e| e.matches(&w.prefix)) {
                let ev = match ev {
                    WatchEvent::Reset { revision, kvs } => WatchEvent::Reset {
                        revision: *revision,
                        kvs: kvs
                            .iter()
                            .filter(|kv| kv.key.starts_with(&w.prefix))
                            .cloned()
                            .collect(),
                    },
                    other => other.clone(),
                };
                if w.tx.send(ev).is_err() {
                    return false;
                }
            }
            true
        });
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    handle: SmHandle,
    snapshots: sled::Tree,
    snapshot_seq: u64,
}

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl StateMachine {
    /// Opens the state machine on `db`, restoring the last stored snapshot.
    pub fn open(db: &sled::Db) -> Result<Self, SmError> {
        let snapshots = db
            .open_tree("snapshot")
            .map_err(|e| StorageIOError::read_snapshot(None, &io_err(e)))?;
        let mut applied = Applied::default();
        if let Some(stored) = load_snapshot(&snapshots)? {
            let data = decode_data(&stored.data)?;
            applied.last_applied = data.last_applied;
            applied.last_membership = data.last_membership;
            applied.state = data.state;
        }
        Ok(StateMachine {
            handle: SmHandle {
                applied: Arc::new(RwLock::new(applied)),
                watchers: Arc::new(Mutex::new(Vec::new())),
                changed: Arc::new(Notify::new()),
            },
            snapshots,
            snapshot_seq: 0,
        })
    }

    pub fn handle(&self) -> SmHandle {
        self.handle.clone()
    }
}

fn load_snapshot(tree: &sled::Tree) -> Result<Option<StoredSnapshot>, SmError> {
    let Some(bytes) = tree
        .get(SNAPSHOT_KEY)
        .map_err(|e| StorageIOError::read_snapshot(None, &io_err(e)))?
    else {
        return Ok(None);
    };
    let stored: StoredSnapshot =
        decode_versioned(&bytes, "snapshot", |s: &StoredSnapshot| s.format)?;
    Ok(Some(stored))
}

fn decode_data(bytes: &[u8]) -> Result<SnapshotData, SmError> {
    decode_versioned(bytes, "snapshot data", |d: &SnapshotData| d.format)
}

/// Decodes a snapshot part, refusing one written by a newer release.
fn decode_versioned<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    format: impl Fn(&T) -> u16,
) -> Result<T, SmError> {
    let value: T = serde_json::from_slice(bytes).map_err(|e| {
        StorageIOError::read_snapshot(None, &io_err(format!("corrupt {what}: {e}")))
    })?;
    let v = format(&value);
    if v > FORMAT_VERSION {
        let msg = format!(
            "{what} format {v} is newer than this release reads ({FORMAT_VERSION}); upgrade pgkeel"
        );
        return Err(StorageIOError::read_snapshot(None, &io_err(msg)).into());
    }
    Ok(value)
}

async fn persist_snapshot(tree: &sled::Tree, stored: &StoredSnapshot) -> Result<(), SmError> {
    let bytes = serde_json::to_vec(stored)
        .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &io_err(e)))?;
    tree.insert(SNAPSHOT_KEY, bytes)
        .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &io_err(e)))?;
    tree.flush_async()
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &io_err(e)))?;
    Ok(())
}

/// Builds snapshots from the current state.
pub struct SnapshotBuilder {
    handle: SmHandle,
    snapshots: sled::Tree,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SmError> {
        let (data, meta) = {
            let guard = self.handle.applied.read().unwrap_or_else(lock_poisoned);
            let data = SnapshotData {
                format: FORMAT_VERSION,
                last_applied: guard.last_applied,
                last_membership: guard.last_membership.clone(),
                state: guard.state.clone(),
            };
            let id = match guard.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.seq),
                None => format!("0-0-{}", self.seq),
            };
            let meta = SnapshotMeta {
                last_log_id: guard.last_applied,
                last_membership: guard.last_membership.clone(),
                snapshot_id: id,
            };
            (data, meta)
        };
        let bytes = serde_json::to_vec(&data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &io_err(e)))?;
        let stored = StoredSnapshot {
            format: FORMAT_VERSION,
            meta: meta.clone(),
            data: bytes.clone(),
        };
        persist_snapshot(&self.snapshots, &stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), SmError> {
        let guard = self.handle.applied.read().unwrap_or_else(lock_poisoned);
        Ok((guard.last_applied, guard.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, SmError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        {
            let mut guard = self.handle.applied.write().unwrap_or_else(lock_poisoned);
            let mut events = Vec::new();
            for entry in entries {
                guard.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => replies.push(CommandResponse {
                        revision: guard.state.revision,
                        ..Default::default()
                    }),
                    EntryPayload::Normal(cmd) => {
                        let (resp, evs) = guard.state.apply(&cmd);
                        events.extend(evs);
                        replies.push(resp);
                    }
                    EntryPayload::Membership(m) => {
                        guard.last_membership = StoredMembership::new(Some(entry.log_id), m);
                        replies.push(CommandResponse {
                            revision: guard.state.revision,
                            ..Default::default()
                        });
                    }
                }
            }
            // Published under the state lock: see the module comment.
            self.handle.publish(events);
        }
        self.handle.changed.notify_waiters();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshot_seq += 1;
        SnapshotBuilder {
            handle: self.handle.clone(),
            snapshots: self.snapshots.clone(),
            seq: self.snapshot_seq,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SmError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SmError> {
        let bytes = snapshot.into_inner();
        let data = decode_data(&bytes)?;
        let stored = StoredSnapshot {
            format: FORMAT_VERSION,
            meta: meta.clone(),
            data: bytes,
        };
        persist_snapshot(&self.snapshots, &stored).await?;
        {
            let mut guard = self.handle.applied.write().unwrap_or_else(lock_poisoned);
            guard.last_applied = meta.last_log_id;
            guard.last_membership = meta.last_membership.clone();
            guard.state = data.state;
            let reset = WatchEvent::Reset {
                revision: guard.state.revision,
                kvs: guard.state.kv.values().cloned().collect(),
            };
            self.handle.publish(vec![reset]);
        }
        self.handle.changed.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SmError> {
        Ok(load_snapshot(&self.snapshots)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;
    use crate::consensus::types::{Command, Expect, Op};

    fn entry(index: u64, op: Op) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::new(op)),
        }
    }

    fn put(index: u64, key: &str) -> Entry<TypeConfig> {
        entry(
            index,
            Op::Put {
                key: key.into(),
                value: "v".into(),
                lease: None,
                expect: Expect::Any,
            },
        )
    }

    #[tokio::test]
    async fn a_snapshot_restores_the_state_on_reopen_and_watchers_get_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let mut sm = StateMachine::open(&db).unwrap();
        sm.apply(vec![put(1, "a"), put(2, "b")]).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(2));
        drop(sm);

        let mut reopened = StateMachine::open(&db).unwrap();
        let (applied, _) = reopened.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert_eq!(reopened.handle().read(|s| s.kv.len()), 2);

        // Installing a snapshot taken elsewhere replaces the state and
        // tells watchers to start over.
        let other_db = sled::open(dir.path().join("other")).unwrap();
        let mut other = StateMachine::open(&other_db).unwrap();
        let mut w = other.handle().watch("");
        other.apply(vec![put(1, "stale")]).await.unwrap();
        let data = snap.snapshot.into_inner();
        other
            .install_snapshot(&snap.meta, Box::new(Cursor::new(data)))
            .await
            .unwrap();
        assert!(matches!(w.2.recv().await, Some(WatchEvent::Put { .. })));
        match w.2.recv().await {
            Some(WatchEvent::Reset { kvs, .. }) => {
                let keys: Vec<_> = kvs.into_iter().map(|kv| kv.key).collect();
                assert_eq!(keys, ["a", "b"]);
            }
            other => panic!("expected a reset, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_snapshot_from_a_newer_release_is_refused() {
        let data = serde_json::json!({
            "format": FORMAT_VERSION + 1,
            "last_applied": null,
            "last_membership": StoredMembership::<NodeId, Member>::default(),
            "state": KvState::default(),
        });
        let err = decode_data(&serde_json::to_vec(&data).unwrap()).unwrap_err();
        assert!(err.to_string().contains("newer than this release"), "{err}");
        assert!(decode_data(b"{not json").is_err());
    }
}
