//! The holder's side of the leader lease: acquire, renew, release, and the
//! holder's own conservative deadline on CLOCK_BOOTTIME.

use std::time::Duration;

use crate::clock::BootInstant;
use crate::consensus::peer::StoreError;
use crate::consensus::types::{Expect, LeaseId};
use crate::store::keys;
use crate::store::{LeaseGrant, Store};

/// What this node knows about the lease it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    pub lease: LeaseId,
    /// The last instant this node may believe it holds the leader key:
    /// `sent_at + ttl_applied - safety_margin` of the last request that
    /// succeeded.
    pub valid_until: BootInstant,
    /// The TTL the Raft leader applied.
    pub ttl: Duration,
}

impl HeldLease {
    fn from_grant(g: &LeaseGrant, safety_margin: Duration) -> Self {
        HeldLease {
            lease: g.lease,
            valid_until: g.valid_until(safety_margin),
            ttl: g.ttl,
        }
    }
}

/// The outcome of trying to take the vacant leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Won(HeldLease),
    /// Someone else holds it (their name).
    Lost(Option<String>),
}

/// Grants a lease and binds `leader` to it if the key is vacant. The holder's
/// deadline runs from the grant's send time; attaching the key never extends
/// it. A lost race revokes the fresh lease at once.
pub async fn acquire_leader(
    store: &Store,
    name: &str,
    ttl: Duration,
    safety_margin: Duration,
) -> Result<Acquired, StoreError> {
    let grant = store.grant(ttl).await?;
    match store
        .put(keys::LEADER, name, Some(grant.lease), Expect::Absent)
        .await
    {
        Ok(Ok(_)) => Ok(Acquired::Won(HeldLease::from_grant(&grant, safety_margin))),
        Ok(Err(current)) => {
            let _ = store.revoke(grant.lease).await;
            Ok(Acquired::Lost(current.map(|kv| kv.value)))
        }
        Err(e) => {
            let _ = store.revoke(grant.lease).await;
            Err(e)
        }
    }
}

/// Renews the lease; the new deadline is measured from this call's own send time.
pub async fn renew(
    store: &Store,
    lease: LeaseId,
    safety_margin: Duration,
) -> Result<HeldLease, StoreError> {
    let grant = store.keepalive(lease).await?;
    Ok(HeldLease::from_grant(&grant, safety_margin))
}

/// Binds a member key (or any other lease-bound key) to the held lease.
pub async fn put_bound(
    store: &Store,
    key: &str,
    value: &str,
    lease: LeaseId,
) -> Result<(), StoreError> {
    store
        .put(key, value, Some(lease), Expect::Any)
        .await
        .map(|_| ())
}
