//! Store semantics on several voters in one process, over the simulated
//! network: compare-and-set, leases on the Raft leader's clock, leadership
//! changes, watches, forwarding and the no-quorum bound.

mod common;

use std::time::Duration;

use common::SimCluster;
use pgkeel::consensus::kv::WatchEvent;
use pgkeel::consensus::peer::{PeerResponse, PeerRpc, StoreError, Transport, TransportError};
use pgkeel::consensus::types::{Expect, NodeId};
use pgkeel::store::Consistency;
use tokio::time::Instant;

const TTL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acquirers_of_a_vacant_key_exactly_one_wins() {
    let c = SimCluster::start(3).await;
    tracing::info!("phase: 30 acquirers on 3 nodes race for `leader`");
    let mut tasks = Vec::new();
    for i in 0..30u64 {
        let store = c.store(1 + i % 3).clone();
        tasks.push(tokio::spawn(async move {
            store
                .put("leader", &format!("cand-{i}"), None, Expect::Absent)
                .await
        }));
    }
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.expect("task").expect("store reachable") {
            Ok(_) => winners.push(format!("cand-{i}")),
            Err(current) => assert!(current.is_some(), "a loser sees the winner's key"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one acquirer wins: {winners:?}");
    let kv = c
        .store(2)
        .get("leader", Consistency::Linearizable)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kv.value, winners[0]);
    tracing::info!("phase: a CAS on a stale revision fails");
    let stale = kv.mod_revision;
    c.store(3)
        .put("leader", "x", None, Expect::ModRevision(stale))
        .await
        .unwrap()
        .unwrap();
    let again = c
        .store(1)
        .put("leader", "y", None, Expect::ModRevision(stale))
        .await
        .unwrap();
    assert_eq!(again.unwrap_err().unwrap().value, "x");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_bound_keys_vanish_after_the_ttl_and_not_before() {
    let c = SimCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let follower = c.ids().into_iter().find(|id| *id != leader).unwrap();
    let store = c.store(follower);
    let mut watch = store.watch("leader");
    let started = Instant::now();
    let grant = store.grant(TTL).await.unwrap();
    assert_eq!(grant.ttl, TTL);
    store
        .put("leader", "n", Some(grant.lease), Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    tracing::info!("phase: the key holds while the lease is young");
    tokio::time::sleep(TTL * 6 / 10).await;
    assert!(store
        .get("leader", Consistency::Linearizable)
        .await
        .unwrap()
        .is_some());
    tracing::info!("phase: no keepalive, the key must vanish");
    let deleted_at = loop {
        match tokio::time::timeout(Duration::from_secs(5), watch.events.recv()).await {
            Ok(Some(WatchEvent::Delete { key, .. })) if key == "leader" => break Instant::now(),
            Ok(Some(_)) => continue,
            other => panic!("no delete event: {other:?}"),
        }
    };
    assert!(
        deleted_at.duration_since(started) >= TTL,
        "deleted after {:?}, before the TTL",
        deleted_at.duration_since(started)
    );
    assert!(store
        .get("leader", Consistency::Linearizable)
        .await
        .unwrap()
        .is_none());
    tracing::info!("phase: a keepalive after the deadline is refused");
    let late = store.keepalive(grant.lease).await.unwrap_err();
    assert!(
        matches!(
            late,
            StoreError::LeaseNotFound { .. } | StoreError::LeaseExpired { .. }
        ),
        "{late:?}"
    );
    tracing::info!("phase: the dead lease cannot take a key");
    let err = store
        .put("leader", "n", Some(grant.lease), Expect::Absent)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LeaseNotFound { .. } | StoreError::LeaseExpired { .. }
        ),
        "{err:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_keep_a_lease_and_the_holder_deadline_is_conservative() {
    let c = SimCluster::start(3).await;
    let store = c.store(1);
    let grant = store.grant(TTL).await.unwrap();
    store
        .put("leader", "n1", Some(grant.lease), Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    let margin = Duration::from_millis(200);
    let mut last = grant;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = pgkeel::clock::Clock::now(&pgkeel::clock::BootClock);
        last = store.keepalive(grant.lease).await.unwrap();
        assert!(
            last.sent_at >= before,
            "valid_until measured from this call's own send time"
        );
        assert_eq!(last.valid_until(margin), last.sent_at + TTL - margin);
    }
    assert!(store
        .get("leader", Consistency::Linearizable)
        .await
        .unwrap()
        .is_some());
    tracing::info!("phase: revoke removes the key at once");
    store.revoke(last.lease).await.unwrap();
    assert!(store
        .get("leader", Consistency::Linearizable)
        .await
        .unwrap()
        .is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_restarts_deadlines_at_a_full_ttl() {
    let mut c = SimCluster::start(3).await;
    let old = c.wait_leader(Duration::from_secs(5)).await;
    let others: Vec<_> = c.ids().into_iter().filter(|id| *id != old).collect();
    let ttl = Duration::from_secs(2);
    let grant = c.store(others[0]).grant(ttl).await.unwrap();
    c.store(others[0])
        .put("leader", "h", Some(grant.lease), Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    let granted = Instant::now();
    tracing::info!("phase: wait until the lease is nearly expired, then kill the Raft leader");
    tokio::time::sleep(ttl - Duration::from_millis(600)).await;
    c.stop_node(old).await;
    let new = c.wait_leader_among(&others, Duration::from_secs(5)).await;
    let changed = Instant::now();
    tracing::info!(
        new,
        "phase: new Raft leader; the key must outlive the old deadline"
    );
    let mut watch = c.store(new).watch("leader");
    assert!(
        watch.initial.iter().any(|kv| kv.key == "leader"),
        "key survived the change"
    );
    let gone = loop {
        match tokio::time::timeout(Duration::from_secs(6), watch.events.recv()).await {
            Ok(Some(WatchEvent::Delete { .. })) => break Instant::now(),
            Ok(Some(_)) => continue,
            other => panic!("lease never expired after the change: {other:?}"),
        }
    };
    assert!(
        gone.duration_since(granted) > ttl + Duration::from_millis(300),
        "old deadline was not restarted"
    );
    assert!(
        gone.duration_since(changed) >= ttl - Duration::from_millis(50),
        "expired {:?} after the change, before a full TTL",
        gone.duration_since(changed)
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_does_not_acknowledge_a_keepalive() {
    let c = SimCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(5)).await;
    let grant = c.store(leader).grant(Duration::from_secs(5)).await.unwrap();
    tracing::info!(
        leader,
        "phase: cut the Raft leader off; it still believes it leads for a while"
    );
    c.net.isolate(leader, &c.ids());
    let err = c.store(leader).keepalive(grant.lease).await.unwrap_err();
    tracing::info!("keepalive on the deposed leader: {err}");
    let others: Vec<_> = c.ids().into_iter().filter(|id| *id != leader).collect();
    let new = c.wait_leader_among(&others, Duration::from_secs(5)).await;
    assert_ne!(new, leader);
    c.net.heal();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expire_left_by_a_crashed_leader_is_not_undone_by_the_next() {
    let mut c = SimCluster::start(3).await;
    let l = c.wait_leader(Duration::from_secs(5)).await;
    let others: Vec<_> = c.ids().into_iter().filter(|id| *id != l).collect();
    let (f1, f2) = (others[0], others[1]);
    let grant = c.store(l).grant(TTL).await.unwrap();
    c.store(l)
        .put("leader", "h", Some(grant.lease), Expect::Absent)
        .await
        .unwrap()
        .unwrap();
    tracing::info!(
        l,
        f1,
        f2,
        "phase: F1 receives the leader's appends but its answers are lost; F2 is cut off"
    );
    c.net.cut(f1, l);
    c.net.cut(l, f2);
    c.net.cut(f2, l);
    let before = c.voters[&f1]
        .raft
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    tracing::info!(
        "phase: the deadline passes; the leader appends Expire, which reaches F1 uncommitted"
    );
    // The Expire is proposed once the deadline passed on the leader; wait
    // for that, then until F1 holds every entry the leader appended (an
    // index that merely grew could be some other entry).
    let expire_at = Instant::now() + TTL + Duration::from_millis(300);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let last = |id: NodeId| {
            c.voters[&id]
                .raft
                .metrics()
                .borrow()
                .last_log_index
                .unwrap_or(0)
        };
        if Instant::now() >= expire_at && last(f1) > before && last(f1) == last(l) {
            break;
        }
        assert!(Instant::now() < deadline, "the Expire never reached F1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        c.voters[&l]
            .store
            .state_machine()
            .read(|s| s.leases.contains_key(&grant.lease)),
        "the Expire must not have committed on the old leader"
    );
    tracing::info!("phase: the old leader crashes; a new one takes over");
    c.stop_node(l).await;
    c.net.heal();
    let new = c.wait_leader_among(&[f1, f2], Duration::from_secs(5)).await;
    tracing::info!(new, "phase: a keepalive to the new leader must be refused");
    let answer = c.store(f2).keepalive(grant.lease).await;
    let Err(err) = answer else {
        let m = |id: NodeId| {
            let m = c.voters[&id].raft.metrics().borrow().clone();
            let has = c.voters[&id]
                .store
                .state_machine()
                .read(|s| s.leases.contains_key(&grant.lease));
            format!(
                "node {id}: leader {:?} term {} last_log {:?} applied {:?} lease present {has}",
                m.current_leader, m.current_term, m.last_log_index, m.last_applied
            )
        };
        panic!(
            "the new leader {new} renewed a lease whose Expire the old one left: {answer:?}\n{}\n{}",
            m(f1),
            m(f2)
        );
    };
    assert!(matches!(err, StoreError::LeaseNotFound { .. }), "{err:?}");
    assert!(c
        .store(f2)
        .get("leader", Consistency::Linearizable)
        .await
        .unwrap()
        .is_none());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_delivers_every_change_in_order() {
    let c = SimCluster::start(3).await;
    let mut watch = c.store(3).watch("members/");
    assert!(watch.initial.is_empty());
    for i in 0..100u64 {
        let node = 1 + i % 3;
        c.store(node)
            .put(
                &format!("members/m{}", i % 7),
                &i.to_string(),
                None,
                Expect::Any,
            )
            .await
            .unwrap()
            .unwrap();
        if i % 10 == 9 {
            c.store(node)
                .delete(&format!("members/m{}", i % 7), Expect::Any)
                .await
                .unwrap()
                .unwrap();
        }
        c.store(node)
            .put("other", "x", None, Expect::Any)
            .await
            .unwrap()
            .unwrap();
    }
    let mut last_rev = watch.revision;
    let mut puts = Vec::new();
    let mut deletes = 0;
    while puts.len() < 100 || deletes < 10 {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.events.recv())
            .await
            .expect("event in time")
            .expect("channel open");
        assert!(ev.revision() > last_rev, "revisions strictly increase");
        last_rev = ev.revision();
        match ev {
            WatchEvent::Put { kv, .. } => {
                assert!(kv.key.starts_with("members/"));
                puts.push(kv.value.parse::<u64>().unwrap());
            }
            WatchEvent::Delete { key, .. } => {
                assert!(key.starts_with("members/"));
                deletes += 1;
            }
            WatchEvent::Reset { .. } => panic!("no snapshot was installed"),
        }
    }
    assert_eq!(puts, (0..100).collect::<Vec<_>>(), "every put, in order");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_a_write_fails_within_the_bound_saying_so() {
    let c = SimCluster::start(3).await;
    c.store(1)
        .put("k", "v", None, Expect::Any)
        .await
        .unwrap()
        .unwrap();
    tracing::info!("phase: node 1 is cut off from both others");
    c.net.isolate(1, &c.ids());
    let started = Instant::now();
    let err = c
        .store(1)
        .put("k", "w", None, Expect::Any)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err,
        StoreError::NoQuorum {
            reachable: 1,
            voters: 3
        }
    );
    assert_eq!(err.to_string(), "no quorum: 1 of 3 voters reachable");
    // request_timeout (1.5 s) plus one probe round; generous for a loaded machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    tracing::info!("phase: the majority side still writes");
    c.store(2)
        .put("k", "x", None, Expect::Any)
        .await
        .unwrap()
        .unwrap();
    c.net.heal();
    c.stop().await;
}

async fn hello_to_node2(
    c: &SimCluster,
    creds: pgkeel::consensus::peer::Credentials,
) -> Result<PeerResponse, TransportError> {
    c.net
        .call(
            2,
            &common::addr(2),
            creds,
            PeerRpc::Hello,
            Duration::from_secs(1),
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_secret_or_cluster_is_refused() {
    let c = SimCluster::start(3).await;
    // Wait for the cluster id to be applied everywhere.
    let deadline = Instant::now() + Duration::from_secs(5);
    while c
        .voters
        .values()
        .any(|v| v.identity.cluster_id().is_empty())
    {
        assert!(Instant::now() < deadline, "cluster id never applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut creds = c.voters[&1].identity.credentials();
    creds.secret = "not-the-secret-0000000".into();
    let r = hello_to_node2(&c, creds.clone()).await;
    assert!(
        matches!(r, Err(TransportError::Refused(ref m)) if m.contains("raft.secret")),
        "{r:?}"
    );
    creds.secret = common::SECRET.into();
    creds.cluster_id = "another-cluster".into();
    let r = hello_to_node2(&c, creds.clone()).await;
    assert!(
        matches!(r, Err(TransportError::Refused(ref m)) if m.contains("never merged")),
        "{r:?}"
    );
    creds.cluster_id = c.voters[&1].identity.cluster_id();
    let r = hello_to_node2(&c, creds).await;
    assert!(matches!(r, Ok(PeerResponse::Hello(_))), "{r:?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_voter_rejoins_its_cluster_instead_of_forming_a_new_one() {
    let mut c = SimCluster::start(3).await;
    c.store(1)
        .put("status", "important", None, Expect::Any)
        .await
        .unwrap()
        .unwrap();
    let cluster_id = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let id = c.voters[&1].identity.cluster_id();
            if !id.is_empty() {
                break id;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tracing::info!("phase: node 3 loses its data directory and starts empty");
    c.stop_node(3).await;
    std::fs::remove_dir_all(c.data_dir(3)).unwrap();
    c.start_node(3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let has = c.store(3).get("status", Consistency::Local).await.unwrap();
        if has.is_some_and(|kv| kv.value == "important") {
            break;
        }
        assert!(Instant::now() < deadline, "node 3 never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.voters[&3].identity.cluster_id(),
        cluster_id,
        "same cluster, not a new one"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn voters_started_one_by_one_in_any_order_form_one_cluster() {
    common::init_tracing();
    let net = pgkeel::consensus::simnet::SimNet::new();
    let dir = tempfile::tempdir().unwrap();
    let peers = common::peers(3);
    let mut voters = Vec::new();
    for id in [3u64, 1, 2] {
        let v = pgkeel::node::Voter::start(common::spec(
            &net,
            &peers,
            id,
            dir.path().join(id.to_string()),
            common::SECRET,
        ))
        .await
        .unwrap();
        net.register(&common::addr(id), id, v.identity.clone(), v.handler.clone());
        voters.push(v);
        tracing::info!(id, "phase: started; the others must not form a cluster yet");
        tokio::time::sleep(Duration::from_millis(700)).await;
        if voters.len() < 3 {
            for v in &voters {
                assert!(
                    !v.raft.is_initialized().await.unwrap(),
                    "formed a cluster without every voter"
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<_> = voters.iter().map(|v| v.identity.cluster_id()).collect();
        if !ids[0].is_empty() && ids.iter().all(|i| *i == ids[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "no single cluster id: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for v in voters {
        v.stop().await;
    }
}
