//! The durable Raft log and vote, kept in sled.
//!
//! # Layout
//!
//! Two trees in the caller's [`sled::Db`]:
//!
//! * `logs`: key = big-endian `u64` log index, value = encoded
//!   [`openraft::Entry`].
//! * `meta`: `vote`, `committed` and `last_purged_log_id`.
//!
//! Every value is encoded by [`sled_util::encode`]: a `u16` format version
//! followed by JSON. A value from a newer release, or a damaged one, becomes a
//! [`StorageError`], never a panic.
//!
//! # Durability
//!
//! * [`save_vote`](RaftLogStorage::save_vote) returns only after the vote is
//!   flushed to disk.
//! * [`append`](RaftLogStorage::append) writes all entries in one atomic sled
//!   batch (so they are readable when it returns), flushes, and only then
//!   reports completion through the callback.
//! * [`truncate`](RaftLogStorage::truncate) removes the suffix in one atomic
//!   batch and flushes.
//! * [`purge`](RaftLogStorage::purge) first records and flushes
//!   `last_purged_log_id`, then removes the prefix and flushes. A crash in
//!   between leaves entries at or below `last_purged_log_id` on disk;
//!   [`LogStore::open`] finishes such an interrupted purge, and
//!   `get_log_state` never reports a last log id below the purged one.
//! * `committed` is written without a flush: losing it only costs re-applying
//!   entries after a restart.
//!
//! openraft serialises all write calls, and every write here finishes (flush
//! included) before the call returns, so writes reach disk in call order.

// StorageError is openraft's type, required by the traits; it is large.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::sled_util::{self, CodecError};
use super::types::{NodeId, TypeConfig};

/// The log entry type stored here.
pub type Entry = openraft::Entry<TypeConfig>;

/// Name of the sled tree holding log entries.
pub const LOGS_TREE: &str = "logs";
/// Name of the sled tree holding vote, committed and last purged log id.
pub const META_TREE: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged_log_id";

type StResult<T> = Result<T, StorageError<NodeId>>;

fn sto_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: &(impl std::error::Error + 'static),
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(e)).into()
}

fn codec_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: CodecError,
) -> StorageError<NodeId> {
    sto_err(subject, verb, &e)
}

/// The Raft log store. Cheap to clone: all fields are `Arc`-backed sled
/// handles; clones share the same data (used as the log reader).
#[derive(Clone)]
pub struct LogStore {
    db: sled::Db,
    logs: sled::Tree,
    meta: sled::Tree,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

impl LogStore {
    /// Opens (creating if needed) the `logs` and `meta` trees in `db`.
    ///
    /// Validates the stored meta values (so a store written by a newer pgkeel
    /// is refused here, with the version in the error) and completes a purge
    /// that a crash interrupted.
    pub fn open(db: &sled::Db) -> StResult<LogStore> {
        let logs = db
            .open_tree(LOGS_TREE)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        let meta = db
            .open_tree(META_TREE)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, &e))?;
        let store = LogStore {
            db: db.clone(),
            logs,
            meta,
        };

        // Decode every meta value once so incompatible or damaged data is
        // reported at startup rather than in the middle of an election.
        store.read_vote_sync()?;
        store.read_committed_sync()?;
        if let Some(purged) = store.read_last_purged()? {
            store.finish_interrupted_purge(purged)?;
        }
        Ok(store)
    }

    /// True when this node has never taken part in a cluster: no vote, no
    /// log entry, nothing purged, no committed id.
    ///
    /// If the store cannot be read, this answers `false` (and logs why): a
    /// node that cannot tell must not bootstrap a new cluster.
    pub fn is_pristine(&self) -> bool {
        let check = || -> Result<bool, sled::Error> {
            Ok(!self.meta.contains_key(KEY_VOTE)?
                && !self.meta.contains_key(KEY_LAST_PURGED)?
                && !self.meta.contains_key(KEY_COMMITTED)?
                && self.logs.first()?.is_none())
        };
        match check() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the raft log store; treating it as not pristine");
                false
            }
        }
    }

    // ---- meta helpers -------------------------------------------------

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StResult<Option<T>> {
        let Some(bytes) = self
            .meta
            .get(key)
            .map_err(|e| sto_err(subject.clone(), ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        sled_util::decode(&bytes)
            .map(Some)
            .map_err(|e| codec_err(subject, ErrorVerb::Read, e))
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> StResult<()> {
        let bytes = sled_util::encode(value)
            .map_err(|e| codec_err(subject.clone(), ErrorVerb::Write, e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| sto_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    fn read_vote_sync(&self) -> StResult<Option<Vote<NodeId>>> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    fn read_committed_sync(&self) -> StResult<Option<LogId<NodeId>>> {
        // Stored as an `Option` so that `save_committed(None)` round-trips.
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    fn read_last_purged(&self) -> StResult<Option<LogId<NodeId>>> {
        self.get_meta(KEY_LAST_PURGED, ErrorSubject::Logs)
    }

    /// Flushes the whole Db (all trees share one sled log) to disk.
    async fn flush(&self, subject: ErrorSubject<NodeId>) -> StResult<()> {
        self.db
            .flush_async()
            .await
            .map_err(|e| sto_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    // ---- log helpers --------------------------------------------------

    fn decode_entry(key: &[u8], value: &[u8]) -> StResult<Entry> {
        let index = sled_util::key_u64(key)
            .map_err(|e| codec_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let entry: Entry = sled_util::decode(value)
            .map_err(|e| codec_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
        if entry.log_id.index != index {
            return Err(StorageIOError::read_log_at_index(
                index,
                AnyError::error(format!(
                    "log entry stored under index {index} carries log id {} (corrupted data)",
                    entry.log_id
                )),
            )
            .into());
        }
        Ok(entry)
    }

    fn last_entry_log_id(&self) -> StResult<Option<LogId<NodeId>>> {
        let Some((k, v)) = self
            .logs
            .last()
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?
        else {
            return Ok(None);
        };
        Ok(Some(Self::decode_entry(&k, &v)?.log_id))
    }

    /// Removes every entry whose index is in `range`, in one atomic batch.
    /// Returns how many were removed. Does not flush.
    fn remove_range<R: RangeBounds<[u8; 8]>>(&self, range: R) -> StResult<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for key in self.logs.range(range).keys() {
            let key = key.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            batch.remove(key);
            n += 1;
        }
        if n > 0 {
            self.logs
                .apply_batch(batch)
                .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        }
        Ok(n)
    }

    /// A crash between "record last purged" and "delete entries" leaves
    /// entries `<= purged` behind: delete them now.
    fn finish_interrupted_purge(&self, purged: LogId<NodeId>) -> StResult<()> {
        let removed = self.remove_range(..=sled_util::u64_key(purged.index))?;
        if removed > 0 {
            tracing::info!(removed, last_purged = %purged, "completed an interrupted raft log purge");
            self.db
                .flush()
                .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => match s.checked_add(1) {
                Some(s) => s,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) if e < start => return Ok(Vec::new()),
            Bound::Excluded(&e) if e <= start => return Ok(Vec::new()),
            Bound::Included(&e) => Bound::Included(sled_util::u64_key(e)),
            Bound::Excluded(&e) => Bound::Excluded(sled_util::u64_key(e)),
            Bound::Unbounded => Bound::Unbounded,
        };

        let mut out = Vec::new();
        for item in self
            .logs
            .range((Bound::Included(sled_util::u64_key(start)), end))
        {
            let (k, v) = item.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            out.push(Self::decode_entry(&k, &v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.read_last_purged()?;
        let last_entry = self.last_entry_log_id()?;
        let last_log_id = match (last_entry, last_purged_log_id) {
            (Some(last), Some(purged)) if last.index > purged.index => Some(last),
            (Some(last), None) => Some(last),
            (_, purged) => purged,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StResult<()> {
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> StResult<Option<Vote<NodeId>>> {
        self.read_vote_sync()
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StResult<()> {
        // Deliberately not flushed: see the module docs.
        self.put_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> StResult<Option<LogId<NodeId>>> {
        self.read_committed_sync()
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = sled_util::encode(&entry)
                .map_err(|e| codec_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.insert(&sled_util::u64_key(entry.log_id.index), bytes);
        }

        if let Err(e) = self.logs.apply_batch(batch) {
            let err = sto_err(ErrorSubject::Logs, ErrorVerb::Write, &e);
            callback.log_io_completed(Err(io::Error::from(e)));
            return Err(err);
        }

        // The entries are readable now; report completion only once durable.
        match self.db.flush_async().await {
            Ok(_) => callback.log_io_completed(Ok(())),
            Err(e) => {
                tracing::error!(error = %e, "flushing appended raft log entries failed");
                callback.log_io_completed(Err(io::Error::from(e)));
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        tracing::debug!(since = %log_id, "truncating raft log");
        self.remove_range(sled_util::u64_key(log_id.index)..)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        tracing::debug!(upto = %log_id, "purging raft log");
        // 1. Record how far the log is purged, durably, before anything is
        //    deleted: get_log_state must never describe a log that is not
        //    there. Never move it backwards.
        let previous = self.read_last_purged()?;
        let record = previous.is_none_or(|p| p.index < log_id.index);
        if record {
            self.put_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Logs)?;
            self.flush(ErrorSubject::Logs).await?;
        }
        // 2. Delete the prefix in one batch, then persist that too.
        let removed = self.remove_range(..=sled_util::u64_key(log_id.index))?;
        if removed > 0 {
            self.flush(ErrorSubject::Logs).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use openraft::storage::RaftLogStorageExt;
    use openraft::testing::log_id;
    use openraft::{EntryPayload, Membership, RaftLogReader};

    use super::*;
    use crate::consensus::types::{Command, Member, Op, FORMAT_VERSION};

    /// Opens the sled Db at `path`. After a `drop` of the previous handles,
    /// sled's background threads may hold the directory lock a moment
    /// longer, so a reopen retries briefly on a lock error.
    fn open_db(path: &Path) -> sled::Db {
        let mut attempts = 0;
        loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(4 * 1024 * 1024)
                .open()
            {
                Ok(db) => return db,
                Err(sled::Error::Io(e))
                    if attempts < 200 && e.to_string().contains("could not acquire lock") =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => panic!("open sled at {}: {e}", path.display()),
            }
        }
    }

    fn normal(term: u64, index: u64, key: &str) -> Entry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Normal(Command::new(Op::Put {
                key: key.to_string(),
                value: format!("v{index}"),
                lease: None,
                expect: Default::default(),
            })),
        }
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Blank,
        }
    }

    fn membership(term: u64, index: u64) -> Entry {
        let nodes: BTreeMap<NodeId, Member> = [1, 2, 3]
            .into_iter()
            .map(|id| {
                (
                    id,
                    Member {
                        name: format!("n{id}"),
                        addr: format!("10.0.0.{id}:5433"),
                        witness: id == 3,
                    },
                )
            })
            .collect();
        Entry {
            log_id: log_id(term, 1, index),
            payload: EntryPayload::Membership(Membership::new(
                vec![BTreeSet::from([1, 2, 3])],
                nodes,
            )),
        }
    }

    /// Entries 1..=n: a membership entry first, then normal entries.
    fn entries(n: u64) -> Vec<Entry> {
        (1..=n)
            .map(|i| {
                if i == 1 {
                    membership(1, i)
                } else {
                    normal(1, i, &format!("/k{i}"))
                }
            })
            .collect()
    }

    fn indexes(es: &[Entry]) -> Vec<u64> {
        es.iter().map(|e| e.log_id.index).collect()
    }

    #[tokio::test]
    async fn append_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("open");

        let st = store.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, None);
        assert_eq!(st.last_purged_log_id, None);

        let mut written = vec![blank(0, 0)];
        written.extend(entries(9));
        store
            .blocking_append(written.clone())
            .await
            .expect("append");
        store
            .blocking_append([normal(2, 10, "/a"), normal(2, 11, "/b")])
            .await
            .expect("append");
        written.push(normal(2, 10, "/a"));
        written.push(normal(2, 11, "/b"));

        let all = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(all, written);

        assert_eq!(
            indexes(&store.try_get_log_entries(3..6).await.expect("read")),
            vec![3, 4, 5]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(..=2).await.expect("read")),
            vec![0, 1, 2]
        );
        assert_eq!(
            indexes(&store.try_get_log_entries(9..).await.expect("read")),
            vec![9, 10, 11]
        );
        assert_eq!(
            indexes(
                &store
                    .try_get_log_entries((Bound::Excluded(4), Bound::Included(6)))
                    .await
                    .expect("read")
            ),
            vec![5, 6]
        );
        assert!(store
            .try_get_log_entries(3..3)
            .await
            .expect("read")
            .is_empty());
        #[allow(clippy::reversed_empty_ranges)]
        let inverted = store.try_get_log_entries(6..2).await.expect("read");
        assert!(inverted.is_empty());
        assert!(store
            .try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded))
            .await
            .expect("read")
            .is_empty());
        assert!(store
            .try_get_log_entries(12..100)
            .await
            .expect("read")
            .is_empty());

        // The reader is a clone sharing the same data.
        let mut reader = store.get_log_reader().await;
        assert_eq!(reader.try_get_log_entries(..).await.expect("read"), written);
        assert_eq!(
            reader.try_get_log_entries(1..2).await.expect("read")[0],
            membership(1, 1)
        );

        let st = store.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, Some(log_id(2, 1, 11)));
        assert_eq!(st.last_purged_log_id, None);

        // Stored values carry the format version prefix.
        let raw = db
            .open_tree(LOGS_TREE)
            .expect("tree")
            .get(sled_util::u64_key(5))
            .expect("get")
            .expect("present");
        assert_eq!(&raw[..2], &FORMAT_VERSION.to_be_bytes());
    }

    #[tokio::test]
    async fn entries_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            store.blocking_append(entries(300)).await.expect("append");
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        let all = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(all, entries(300));
        // Byte order is numeric order past index 255.
        assert_eq!(
            indexes(&store.try_get_log_entries(254..258).await.expect("read")),
            vec![254, 255, 256, 257]
        );
        assert_eq!(
            store.get_log_state().await.expect("state").last_log_id,
            Some(log_id(1, 1, 300))
        );
    }

    #[tokio::test]
    async fn truncate_removes_suffix_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            store.blocking_append(entries(10)).await.expect("append");

            // Truncating past the end is a no-op.
            store.truncate(log_id(1, 1, 11)).await.expect("truncate");
            assert_eq!(store.try_get_log_entries(..).await.expect("read").len(), 10);

            store.truncate(log_id(1, 1, 6)).await.expect("truncate");
            assert_eq!(
                indexes(&store.try_get_log_entries(..).await.expect("read")),
                vec![1, 2, 3, 4, 5]
            );
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_log_id, Some(log_id(1, 1, 5)));

            // A new leader's entries replace the truncated suffix.
            store
                .blocking_append([normal(2, 6, "/new")])
                .await
                .expect("append");
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        let all = store.try_get_log_entries(..).await.expect("read");
        assert_eq!(indexes(&all), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(all[5], normal(2, 6, "/new"));
        assert_eq!(
            store.get_log_state().await.expect("state").last_log_id,
            Some(log_id(2, 1, 6))
        );

        store.truncate(log_id(1, 1, 1)).await.expect("truncate all");
        let st = store.get_log_state().await.expect("state");
        assert_eq!(st.last_log_id, None);
        assert_eq!(st.last_purged_log_id, None);
    }

    #[tokio::test]
    async fn purge_removes_prefix_and_records_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            store.blocking_append(entries(10)).await.expect("append");

            store.purge(log_id(1, 1, 4)).await.expect("purge");
            assert_eq!(
                indexes(&store.try_get_log_entries(..).await.expect("read")),
                vec![5, 6, 7, 8, 9, 10]
            );
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 4)));
            assert_eq!(st.last_log_id, Some(log_id(1, 1, 10)));

            // An older purge never moves last_purged_log_id backwards.
            store.purge(log_id(1, 1, 2)).await.expect("purge");
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 4)));
        }
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("reopen");
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 4)));
            assert_eq!(st.last_log_id, Some(log_id(1, 1, 10)));

            // Purge beyond the last entry (e.g. after installing a snapshot).
            store.purge(log_id(3, 2, 20)).await.expect("purge");
            assert!(store
                .try_get_log_entries(..)
                .await
                .expect("read")
                .is_empty());
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(log_id(3, 2, 20)));
            assert_eq!(st.last_log_id, Some(log_id(3, 2, 20)));
            assert!(!store.is_pristine());
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        let st = store.get_log_state().await.expect("state");
        assert_eq!(st.last_purged_log_id, Some(log_id(3, 2, 20)));
        assert_eq!(st.last_log_id, Some(log_id(3, 2, 20)));
        store
            .blocking_append([normal(3, 21, "/x")])
            .await
            .expect("append after purge");
        assert_eq!(
            store.get_log_state().await.expect("state").last_log_id,
            Some(log_id(3, 1, 21))
        );
    }

    /// Simulates a crash between the two steps of `purge`: last_purged_log_id
    /// recorded, entries not yet deleted.
    #[tokio::test]
    async fn interrupted_purge_is_consistent_and_completed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            store.blocking_append(entries(10)).await.expect("append");
            // Step 1 of purge only.
            store
                .put_meta(KEY_LAST_PURGED, &log_id(1, 1, 6), ErrorSubject::Logs)
                .expect("put");
            // Even before the purge is completed, the state does not lie.
            let st = store.get_log_state().await.expect("state");
            assert_eq!(st.last_purged_log_id, Some(log_id(1, 1, 6)));
            assert_eq!(st.last_log_id, Some(log_id(1, 1, 10)));
            db.flush().expect("flush");
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        assert_eq!(
            indexes(&store.try_get_log_entries(..).await.expect("read")),
            vec![7, 8, 9, 10]
        );

        // Interrupted purge past the end of the log.
        store
            .put_meta(KEY_LAST_PURGED, &log_id(2, 1, 15), ErrorSubject::Logs)
            .expect("put");
        let st = store.get_log_state().await.expect("state");
        assert_eq!(
            st.last_log_id,
            Some(log_id(2, 1, 15)),
            "never below last_purged_log_id"
        );
        drop(store);
        drop(db);
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        assert!(store
            .try_get_log_entries(..)
            .await
            .expect("read")
            .is_empty());
    }

    #[tokio::test]
    async fn vote_persists_across_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            assert_eq!(store.read_vote().await.expect("read"), None);
            store.save_vote(&Vote::new(3, 2)).await.expect("save");
            let mut committed = Vote::new_committed(4, 1);
            store.save_vote(&committed).await.expect("save");
            assert_eq!(store.read_vote().await.expect("read"), Some(committed));
            committed = Vote::new_committed(5, 1);
            store.save_vote(&committed).await.expect("save");
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        assert_eq!(
            store.read_vote().await.expect("read"),
            Some(Vote::new_committed(5, 1))
        );
    }

    #[tokio::test]
    async fn committed_persists_across_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            assert_eq!(store.read_committed().await.expect("read"), None);
            store
                .save_committed(Some(log_id(1, 1, 3)))
                .await
                .expect("save");
            assert_eq!(
                store.read_committed().await.expect("read"),
                Some(log_id(1, 1, 3))
            );
            store
                .save_committed(Some(log_id(2, 1, 7)))
                .await
                .expect("save");
        }
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("reopen");
            assert_eq!(
                store.read_committed().await.expect("read"),
                Some(log_id(2, 1, 7))
            );
            store.save_committed(None).await.expect("save none");
            assert_eq!(store.read_committed().await.expect("read"), None);
        }
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("reopen");
        assert_eq!(store.read_committed().await.expect("read"), None);
    }

    #[tokio::test]
    async fn pristine_only_when_nothing_was_ever_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("open");
        assert!(store.is_pristine());
        // Other trees (the state machine's) do not count.
        db.open_tree("snapshot")
            .expect("tree")
            .insert(b"x", b"y")
            .expect("insert");
        assert!(store.is_pristine());
        store.save_vote(&Vote::new(1, 1)).await.expect("vote");
        assert!(!store.is_pristine());
        drop(store);
        drop(db);
        let db = open_db(dir.path());
        assert!(!LogStore::open(&db).expect("reopen").is_pristine());

        let dir2 = tempfile::tempdir().expect("tempdir");
        let db2 = open_db(dir2.path());
        let mut store2 = LogStore::open(&db2).expect("open");
        store2.blocking_append([blank(0, 0)]).await.expect("append");
        assert!(!store2.is_pristine());
        // Even once everything is purged, it has been part of a cluster.
        store2.purge(log_id(0, 1, 0)).await.expect("purge");
        assert!(store2
            .try_get_log_entries(..)
            .await
            .expect("read")
            .is_empty());
        assert!(!store2.is_pristine());
    }

    #[tokio::test]
    async fn future_format_version_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let future = FORMAT_VERSION + 1;
        {
            let db = open_db(dir.path());
            let mut store = LogStore::open(&db).expect("open");
            store.blocking_append(entries(3)).await.expect("append");

            // A log entry written by a newer release.
            let e = normal(1, 4, "/future");
            let bytes = sled_util::encode_with_version(future, &e).expect("encode");
            db.open_tree(LOGS_TREE)
                .expect("tree")
                .insert(sled_util::u64_key(4), bytes)
                .expect("insert");
            let err = store
                .try_get_log_entries(..)
                .await
                .expect_err("future entry");
            assert!(err.to_string().contains(&future.to_string()), "{err}");
            let err = store.get_log_state().await.expect_err("future last entry");
            assert!(err.to_string().contains(&future.to_string()), "{err}");
            // Older entries are still readable.
            assert_eq!(
                store.try_get_log_entries(1..4).await.expect("read").len(),
                3
            );

            // A vote written by a newer release.
            let bytes =
                sled_util::encode_with_version(future, &Vote::<NodeId>::new(9, 9)).expect("encode");
            db.open_tree(META_TREE)
                .expect("tree")
                .insert(KEY_VOTE, bytes)
                .expect("insert");
            let err = store.read_vote().await.expect_err("future vote");
            let msg = err.to_string();
            assert!(msg.contains(&future.to_string()), "{msg}");
            // Display of a StorageIOError is "when <verb> <subject>: <source>".
            assert!(msg.contains("Read Vote"), "{msg}");
        }
        // Opening such a store is refused, naming the version.
        let db = open_db(dir.path());
        let err = LogStore::open(&db).expect_err("open must refuse");
        assert!(err.to_string().contains(&future.to_string()), "{err}");
    }

    #[tokio::test]
    async fn corrupted_values_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open_db(dir.path());
        let mut store = LogStore::open(&db).expect("open");
        store.blocking_append(entries(3)).await.expect("append");
        let logs = db.open_tree(LOGS_TREE).expect("tree");
        let meta = db.open_tree(META_TREE).expect("tree");

        // Truncated value.
        logs.insert(sled_util::u64_key(2), &[0x00][..])
            .expect("insert");
        assert!(store.try_get_log_entries(..).await.is_err());
        // Right version, garbage payload.
        let mut junk = FORMAT_VERSION.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{\"log_id\": ");
        logs.insert(sled_util::u64_key(2), junk).expect("insert");
        assert!(store.try_get_log_entries(2..3).await.is_err());
        // A valid entry under the wrong index.
        logs.insert(
            sled_util::u64_key(2),
            sled_util::encode(&normal(1, 9, "/x")).expect("encode"),
        )
        .expect("insert");
        assert!(store.try_get_log_entries(2..3).await.is_err());
        // A key of the wrong length sorts after every 8-byte key: last entry.
        logs.insert(
            sled_util::u64_key(2),
            sled_util::encode(&normal(1, 2, "/k2")).expect("encode"),
        )
        .expect("insert");
        assert_eq!(store.try_get_log_entries(..).await.expect("read").len(), 3);
        logs.insert(
            [0xffu8; 9],
            sled_util::encode(&normal(1, 4, "/x")).expect("encode"),
        )
        .expect("insert");
        assert!(store.get_log_state().await.is_err());
        logs.remove([0xffu8; 9]).expect("remove");

        meta.insert(KEY_VOTE, &b"\x00\x01not json"[..])
            .expect("insert");
        assert!(store.read_vote().await.is_err());
        meta.insert(KEY_COMMITTED, &b""[..]).expect("insert");
        assert!(store.read_committed().await.is_err());
        meta.insert(KEY_LAST_PURGED, &b"\x00\x00{}"[..])
            .expect("insert");
        assert!(store.get_log_state().await.is_err());
        assert!(LogStore::open(&db).is_err());
    }
}
