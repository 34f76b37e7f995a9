//! Scenarios for [`FakePostgres`]: it must follow PostgreSQL's rules for
//! timelines and streaming, or the deterministic HA tests prove nothing.

use std::time::Duration;

use super::conf::conninfo;
use super::{
    FakeNet, FakePostgres, PgError, PgState, Postgres, RewindOutcome, Running, ServerRole,
    StartSpec, StopMode,
};

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

/// The standby part of a probe: `(streaming, upstream)`.
async fn receiver(pg: &FakePostgres) -> Result<(bool, Option<String>), PgError> {
    match pg.probe().await? {
        PgState::Running(Running {
            role:
                ServerRole::Standby {
                    streaming,
                    upstream,
                    ..
                },
            ..
        }) => Ok((streaming, upstream)),
        other => panic!("expected a running standby, got {other:?}"),
    }
}

#[tokio::test]
async fn control_data_and_the_wal_receiver() -> Result<(), PgError> {
    let net = FakeNet::default();
    let (a, b, c) = (
        FakePostgres::new(&net, "a:1"),
        FakePostgres::new(&net, "b:1"),
        FakePostgres::new(&net, "c:1"),
    );
    let spec = StartSpec::default();
    assert_eq!(a.control_data().await?, None);
    a.initdb(&[]).await?;
    c.initdb(&[]).await?;
    let fresh = a.control_data().await?.expect("initialized");
    assert!(fresh.sysid != 0 && fresh.is_clean_shutdown());
    assert_ne!(fresh.sysid, c.control_data().await?.expect("c").sysid);
    a.configure_as_primary().await?;
    a.start(&spec).await?;
    assert_eq!(a.control_data().await?.expect("a").state, "in production");

    b.basebackup(&to("a:1", "b"), None).await?;
    assert_eq!(b.control_data().await?.expect("b").sysid, fresh.sysid);
    b.configure_as_standby(&to("a:1", "b"), None).await?;
    b.start(&spec).await?;
    assert_eq!(receiver(&b).await?, (false, Some("a:1".into())));
    net.replicate();
    assert_eq!(receiver(&b).await?, (true, Some("a:1".into())));
    assert_eq!(
        b.control_data().await?.expect("b").state,
        "in archive recovery"
    );

    // A fast stop writes a shutdown checkpoint at the end of WAL.
    let end = a.write(100)?;
    net.replicate();
    a.stop(StopMode::Fast, Duration::from_secs(1)).await?;
    let stopped = a.control_data().await?.expect("a");
    assert_eq!(
        (
            stopped.state.as_str(),
            stopped.checkpoint_lsn,
            stopped.timeline
        ),
        ("shut down", end, 1)
    );
    assert_eq!(receiver(&b).await?, (false, None));

    // Promotion: the checkpoint's timeline lags until a CHECKPOINT.
    b.promote(Duration::from_secs(1)).await?;
    let promoted = b.control_data().await?.expect("b");
    assert_eq!(
        (promoted.state.as_str(), promoted.timeline),
        ("in production", 1)
    );
    b.checkpoint().await?;
    let b_cd = b.control_data().await?.expect("b");
    assert_eq!((b_cd.timeline, b_cd.checkpoint_lsn), (2, end));

    // An immediate stop leaves pg_control as it was, like a crash.
    b.write(10)?;
    b.stop(StopMode::Immediate, Duration::from_secs(1)).await?;
    assert_eq!(b.control_data().await?, Some(b_cd));

    // A stopped standby: "shut down in recovery" at what it replayed.
    a.configure_as_standby(&to("c:1", "a"), None).await?;
    a.start(&spec).await?;
    assert_eq!(receiver(&a).await?, (false, None));
    a.stop(StopMode::Fast, Duration::from_secs(1)).await?;
    let a_cd = a.control_data().await?.expect("a");
    assert_eq!(
        (a_cd.state.as_str(), a_cd.checkpoint_lsn),
        ("shut down in recovery", end)
    );
    a.fail_next("control_data");
    assert!(a.control_data().await.is_err());
    Ok(())
}

#[tokio::test]
async fn rewind_puts_a_diverged_node_back_on_the_new_timeline() -> Result<(), PgError> {
    let net = FakeNet::default();
    let (a, b) = (
        FakePostgres::new(&net, "a:1"),
        FakePostgres::new(&net, "b:1"),
    );
    let spec = StartSpec::default();
    a.initdb(&[]).await?;
    a.configure_as_primary().await?;
    a.start(&spec).await?;
    b.basebackup(&to("a:1", "b"), None).await?;
    b.configure_as_standby(&to("a:1", "b"), None).await?;
    b.start(&spec).await?;
    net.replicate();
    // a writes past what b has, dies; b is promoted; a comes back diverged.
    a.write(50)?;
    a.crash();
    b.promote(Duration::from_secs(1)).await?;
    b.write(10)?;
    a.configure_as_standby(&to("b:1", "a"), None).await?;
    a.start(&spec).await?;
    net.replicate();
    assert!(a.state().diverged);
    assert!(matches!(
        a.rewind(&to("b:1", "a")).await,
        Err(PgError::AlreadyRunning(_))
    ));
    a.stop(StopMode::Fast, Duration::from_secs(1)).await?;
    a.fail_next("rewind");
    assert!(a.rewind(&to("b:1", "a")).await.is_err());
    assert_eq!(a.rewind(&to("b:1", "a")).await?, RewindOutcome::Rewound);
    assert_eq!(a.rewind(&to("b:1", "a")).await?, RewindOutcome::NotNeeded);
    let st = a.state();
    assert_eq!((st.timeline, st.diverged, st.rewinds), (2, false, 1));
    assert_eq!(st.cluster_state, "in archive recovery");
    a.start(&spec).await?;
    b.write(5)?;
    net.replicate();
    assert_eq!((a.state().lsn, a.state().streaming), (b.state().lsn, true));

    // Moving aside empties the data directory; basebackup re-clones.
    a.stop(StopMode::Fast, Duration::from_secs(1)).await?;
    let aside = a.move_data_dir_aside().await?;
    assert!(aside.to_string_lossy().contains(".failed-"));
    assert!(!a.is_initialized().await?);
    assert_eq!(a.state().moved_aside, 1);
    a.basebackup(&to("b:1", "a"), None).await?;
    assert_eq!(a.state().timeline, 2);
    Ok(())
}
