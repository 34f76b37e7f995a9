//! Membership change on several voters in one process, over the simulated
//! network, where the test chooses who leads: a `raft.join` node is added,
//! the Raft leader removes itself (it leads on as a learner and steps down
//! once dropped), the removed node's store requests are refused, and a
//! second change waits for the first.

mod common;

use std::time::Duration;

use common::{addr, spec, SimCluster};
use pgkeel::admin::membership::Membership;
use pgkeel::consensus::peer::StoreError;
use pgkeel::consensus::types::{Expect, Member, NodeId};
use pgkeel::node::Voter;
use pgkeel::pb::admin as pb;
use tonic::{Code, Request};

/// Starts node `id` as a pristine `raft.join` node named `n<id>`.
async fn start_joiner(c: &mut SimCluster, id: NodeId) {
    c.peers.insert(
        id,
        Member {
            name: format!("n{id}"),
            addr: addr(id),
            witness: false,
        },
    );
    let mut s = spec(&c.net, &c.peers, id, c.data_dir(id), &c.secret);
    s.join = true;
    let v = Voter::start(s).await.expect("the joiner starts");
    c.net
        .register(&addr(id), id, v.identity.clone(), v.handler.clone());
    c.voters.insert(id, v);
}

fn voter_ids(c: &SimCluster, on: NodeId) -> Vec<NodeId> {
    let m = c.voters[&on].raft.metrics().borrow().clone();
    m.membership_config.membership().voter_ids().collect()
}

fn add(id: NodeId) -> Request<pb::AddMemberRequest> {
    Request::new(pb::AddMemberRequest {
        name: format!("n{id}"),
        node_id: id,
        address: addr(id),
        witness: false,
        catch_up_timeout_ms: 10_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_is_added_and_the_raft_leader_removes_itself() {
    let mut c = SimCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let admin = Membership::new(
        c.store(leader).clone(),
        &c.secret,
        pgkeel::consensus::grpc::GrpcTransport::new(),
    );

    tracing::info!("phase: n4 starts with raft.join and forms nothing on its own");
    start_joiner(&mut c, 4).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !c.voters[&4].raft.is_initialized().await.expect("raft runs"),
        "a joining node never initializes a cluster"
    );
    let refused = c.store(4).put("k", "v", None, Expect::Any).await;
    assert!(refused.is_err(), "not a member yet: {refused:?}");

    tracing::info!(leader, "phase: add n4 on the Raft leader");
    let reply = admin.add(add(4)).await.expect("n4 is added");
    assert!(reply.message.contains("is a voter"), "{}", reply.message);
    assert_eq!(voter_ids(&c, leader), vec![1, 2, 3, 4]);
    let status = admin.add(add(4)).await.expect_err("already a voter");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    c.store(4)
        .put("from-n4", "ok", None, Expect::Any)
        .await
        .expect("the new voter writes through the leader")
        .expect("unconditional");

    tracing::info!(leader, "phase: the Raft leader removes itself");
    let name = format!("n{leader}");
    let reply = admin
        .remove(Request::new(pb::RemoveMemberRequest { name: name.clone() }))
        .await
        .expect("the leader removes itself");
    assert!(
        reply.message.contains("is no longer a member"),
        "{}",
        reply.message
    );
    assert!(!reply.voters.contains(&name), "{:?}", reply.voters);
    let rest: Vec<NodeId> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let next = c.wait_leader_among(&rest, Duration::from_secs(10)).await;
    assert_ne!(next, leader);
    assert_eq!(voter_ids(&c, next), rest);
    c.store(next)
        .put("after", "ok", None, Expect::Any)
        .await
        .expect("the remaining three commit")
        .expect("unconditional");

    tracing::info!("phase: the removed node's store requests are refused");
    match c
        .store(leader)
        .put("from-removed", "x", None, Expect::Any)
        .await
    {
        Err(StoreError::Refused(why)) => assert!(why.contains("not a member"), "{why}"),
        other => panic!("a removed node must not write: {other:?}"),
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_change_at_a_time() {
    let mut c = SimCluster::start(3).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let admin = Membership::new(
        c.store(leader).clone(),
        &c.secret,
        pgkeel::consensus::grpc::GrpcTransport::new(),
    );
    start_joiner(&mut c, 4).await;
    start_joiner(&mut c, 5).await;
    admin.add(add(4)).await.expect("n4 is added");

    tracing::info!("phase: n4 is cut off; its removal waits for it to learn it is a learner");
    c.net.isolate(4, &[1, 2, 3, 4, 5]);
    let remove = Request::new(pb::RemoveMemberRequest { name: "n4".into() });
    let (first, second) = tokio::join!(admin.remove(remove), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        admin.add(add(5)).await
    });
    let second = second.expect_err("one change at a time");
    assert_eq!(second.code(), Code::FailedPrecondition, "{second:?}");
    assert!(
        second.message().contains("in progress (removing n4)"),
        "{second:?}"
    );
    let first = first.expect("n4 is removed although it cannot hear of it");
    assert!(
        first
            .message
            .contains("n4 (data node, id 4) is no longer a member"),
        "{}",
        first.message
    );

    tracing::info!("phase: with the first change done, the second goes through");
    admin.add(add(5)).await.expect("n5 is added");
    assert_eq!(voter_ids(&c, leader), vec![1, 2, 3, 5]);
    c.stop().await;
}
