//! The store and Raft as the cluster-wide endpoints need them, behind a
//! trait so handler tests run against an in-memory fake.

use futures::future::BoxFuture;

use crate::admin::operations::OpsKv;
use crate::admin::{raft_facts, RaftFacts};
use crate::consensus::types::{Expect, KeyValue};
use crate::store::config_edit::ConfigAccess;
use crate::store::{Consistency, Store};

/// What `/cluster`, `/history`, `/config`, `/metrics` and the member
/// operations read and write. [`OpsKv::range`] answers through the Raft
/// leader when a quorum answers, else from this node's own copy (so a
/// cut-off node still shows what it last knew).
pub trait ClusterSource: OpsKv + Send + Sync + 'static {
    /// Raft metrics and every voter's answer to a probe.
    fn raft(&self) -> BoxFuture<'_, RaftFacts>;

    /// Itself as the store the member operations use.
    fn kv(&self) -> &dyn OpsKv;
    /// The shortest TTL among the leases in force, when known (see
    /// [`ConfigAccess::shortest_lease_ttl`]).
    fn shortest_lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The real store of this voter.
pub struct StoreSource(pub Store);

impl OpsKv for StoreSource {
    fn range<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, String>> {
        Box::pin(async move {
            match OpsKv::range(&self.0, prefix).await {
                Ok(kvs) => Ok(kvs),
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
        OpsKv::put(&self.0, key, value, expect)
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, String>> {
        OpsKv::delete(&self.0, key, expect)
    }
}

impl ClusterSource for StoreSource {
    fn raft(&self) -> BoxFuture<'_, RaftFacts> {
        Box::pin(raft_facts(&self.0))
    }

    fn kv(&self) -> &dyn OpsKv {
        self
    }

    fn shortest_lease_ttl(&self) -> Option<std::time::Duration> {
        ConfigAccess::shortest_lease_ttl(&self.0)
    }
}
