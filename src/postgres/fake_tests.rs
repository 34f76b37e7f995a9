//! Scenarios for [`FakePostgres`]: it must follow PostgreSQL's rules for
//! timelines and streaming, or the deterministic HA tests prove nothing.

use std::time::Duration;

use super::conf::conninfo;
use super::{FakeNet, FakePostgres, PgError, Postgres, StartSpec, StopMode};

fn to(address: &str, app: &str) -> String {
    let (host, port) = address.split_once(':').unwrap_or((address, "5432"));
    conninfo(&[("host", host), ("port", port), ("application_name", app)])
}

#[tokio::test]
async fn stream_promote_and_diverge() -> Result<(), PgError> {
    let net = FakeNet::default();
    let (a, b) = (
        FakePostgres::new(&net, "a:1"),
        FakePostgres::new(&net, "b:1"),
    );
    let spec = StartSpec::default();
    assert!(matches!(
        a.start(&spec).await,
        Err(PgError::NotInitialized(_))
    ));
    a.initdb(&[]).await?;
    assert!(matches!(a.start(&spec).await, Err(PgError::NoRole)));
    a.configure_as_primary().await?;
    a.start(&spec).await?;
    assert!(a.create_slot("b").await?);
    assert!(!a.create_slot("b").await?);
    b.basebackup(&to("a:1", "b"), Some("b")).await?;
    b.configure_as_standby(&to("a:1", "b"), Some("b")).await?;
    b.start(&spec).await?;
    assert!(!b.is_writable() && a.is_writable());
    let acked = a.write(100)?;
    assert!(b.write(1).is_err());
    net.replicate();
    let rows = a
        .probe()
        .await?
        .running()
        .map(|r| r.replication.clone())
        .unwrap_or_default();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].replay_lsn, Some(acked));
    assert_eq!(a.list_slots().await?[0].restart_lsn, Some(acked));
    assert!(a.list_slots().await?[0].active);

    // The primary writes what the standby never gets, then b is promoted.
    a.write(50)?;
    a.crash();
    b.promote(Duration::from_secs(1)).await?;
    let st = b.state();
    assert_eq!((st.timeline, st.lsn, st.in_recovery), (2, acked, false));
    assert_eq!(st.history, vec![(1, acked)]);

    // The old primary, ahead of the fork point, cannot follow: diverged.
    a.configure_as_standby(&to("b:1", "a"), None).await?;
    a.start(&spec).await?;
    net.replicate();
    assert!(a.state().diverged);
    assert_eq!(a.state().timeline, 1);
    Ok(())
}

#[tokio::test]
async fn a_standby_behind_the_fork_follows_the_new_timeline() -> Result<(), PgError> {
    let net = FakeNet::default();
    let (a, b, c) = (
        FakePostgres::new(&net, "a:1"),
        FakePostgres::new(&net, "b:1"),
        FakePostgres::new(&net, "c:1"),
    );
    let spec = StartSpec::default();
    a.initdb(&[]).await?;
    a.configure_as_primary().await?;
    a.start(&spec).await?;
    for s in [&b, &c] {
        s.basebackup(&to("a:1", "x"), None).await?;
        s.configure_as_standby(&to("a:1", "x"), None).await?;
        s.start(&spec).await?;
    }
    a.write(10)?;
    net.replicate();
    a.stop(StopMode::Fast, Duration::from_secs(1)).await?;
    b.promote(Duration::from_secs(1)).await?;
    b.write(10)?;
    c.configure_as_standby(&to("b:1", "c"), None).await?;
    c.reload().await?;
    net.replicate();
    let st = c.state();
    assert_eq!(
        (st.timeline, st.lsn, st.diverged),
        (2, b.state().lsn, false)
    );
    b.fail_next("checkpoint");
    assert!(b.checkpoint().await.is_err());
    b.checkpoint().await?;
    assert_eq!(b.state().checkpoints, 1);
    Ok(())
}
