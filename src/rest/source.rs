//! The store and Raft as the cluster-wide endpoints need them, behind a
//! trait so handler tests run against an in-memory fake.

use futures::future::BoxFuture;

use crate::admin::{raft_facts, RaftFacts};
use crate::consensus::types::{Expect, KeyValue};
use crate::store::config_edit::ConfigAccess;
use crate::store::{Consistency, Store};

/// What `/cluster`, `/history`, `/config` and `/metrics` read and write.
pub trait ClusterSource: Send + Sync + 'static {
    /// Every key under `prefix`: through the Raft leader when a quorum
    /// answers, else this node's own copy (so a cut-off node still shows
    /// what it last knew).
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, String>>;

    /// Writes `key` if `expect` holds; `Ok(Err(current))` is a lost
    /// compare-and-set.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>>;

    /// Raft metrics and every voter's answer to a probe.
    fn raft(&self) -> BoxFuture<'_, RaftFacts>;

    /// The shortest TTL among the leases in force, when known (see
    /// [`ConfigAccess::shortest_lease_ttl`]).
    fn shortest_lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The real store of this voter.
pub struct StoreSource(pub Store);

impl ClusterSource for StoreSource {
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, String>> {
        Box::pin(async move {
            match self.0.range(prefix, Consistency::Linearizable).await {
                Ok((_, kvs)) => Ok(kvs),
                Err(e) => {
                    tracing::debug!("REST shows this node's own copy of the store: {e}");
                    self.0
                        .range(prefix, Consistency::Local)
                        .await
                        .map(|(_, kvs)| kvs)
                        .map_err(|e| e.to_string())
                }
            }
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>> {
        Box::pin(async move {
            self.0
                .put(key, &value, None, expect)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn raft(&self) -> BoxFuture<'_, RaftFacts> {
        Box::pin(raft_facts(&self.0))
    }

    fn shortest_lease_ttl(&self) -> Option<std::time::Duration> {
        ConfigAccess::shortest_lease_ttl(&self.0)
    }
}
