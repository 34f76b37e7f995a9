//! The store, modelled: one Raft group of every voter, the real replicated
//! state machine ([`KvState`]) and, on the Raft leader, the real
//! [`Lessor`] fed that leader's own clock.
//!
//! Raft, as openraft 0.9 behaves: a leader never steps down on its own; a
//! voter that still hears the leader (leader alive, link leader -> voter
//! up) neither campaigns nor grants votes (openraft's leader lease); a
//! candidate needs votes of a majority over links in both directions. The
//! leader can commit only while it exchanges messages with a majority.
//! Requests go to the leader and retry every 50 ms while there is none
//! reachable, until `raft.request_timeout`; a reply lost on a cut link is
//! a timeout too. A keepalive is acknowledged only after a confirmation
//! round (the read index) and only if the lease is then still alive on
//! the leader's lessor (src/store/leader.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use pgkeel::clock::BootInstant;
use pgkeel::consensus::kv::KvState;
use pgkeel::consensus::types::{Command, CommandResponse, Expect, LeaseId, Op, Outcome};
use pgkeel::ha::records::{cluster_view, member_record};
use pgkeel::ha::{Action, ClusterView, Event, Reply};
use pgkeel::store::keys::{self, InitializeRecord, StatusRecord};
use pgkeel::store::lessor::LeaseCheck;
use tokio::time::Instant;

use super::clock::T;
use super::{done, ha_config, nanos, Ev, Sim, REQUEST_RETRY, REQUEST_TIMEOUT};

/// One store request from an agent.
#[derive(Debug, Clone)]
struct Req {
    node: usize,
    inc: u64,
    action: Action,
    /// The requester's clock when it sent the request: `valid_until` is
    /// measured from here.
    sent_l: BootInstant,
    deadline: T,
}

/// Store-side events.
#[derive(Debug, Clone)]
pub enum StoreEv {
    Try {
        id: u64,
    },
    Exec {
        id: u64,
        leader: usize,
        term: u64,
    },
    Confirm {
        id: u64,
        leader: usize,
        term: u64,
    },
    Reply {
        id: u64,
        result: Result<Reply, String>,
    },
    Timeout {
        id: u64,
    },
    Election,
    LessorWake {
        gen: u64,
    },
    ExpireCommit {
        leader: usize,
        term: u64,
        lease: LeaseId,
    },
    Watch {
        node: usize,
        view: Box<ClusterView>,
    },
}

/// The replicated store and the Raft group's leadership.
pub struct Store {
    pub kv: KvState,
    /// The voter that believes it leads, and its term.
    leader: Option<(usize, u64)>,
    term: u64,
    election_pending: bool,
    reqs: BTreeMap<u64, Req>,
    next_req: u64,
    /// Lessors count on tokio `Instant`s: local boot time `x` is `base + x`.
    base: Instant,
    lessor_gen: u64,
}

impl Store {
    pub fn new(kv: KvState) -> Store {
        Store {
            kv,
            leader: None,
            term: 0,
            election_pending: false,
            reqs: BTreeMap::new(),
            next_req: 0,
            base: Instant::now(),
            lessor_gen: 0,
        }
    }

    pub fn leader_holder(&self) -> Option<String> {
        self.kv.kv.get(keys::LEADER).map(|k| k.value.clone())
    }

    /// The `sync` key as it stands.
    pub fn sync_key(&self) -> Option<keys::SyncRecord> {
        let kv = self.kv.kv.get(keys::SYNC)?;
        keys::decode(&kv.key, &kv.value).ok()
    }
}

impl Sim {
    /// The Raft leader if it can commit: alive and exchanging messages
    /// with a majority of voters (itself included).
    pub(super) fn effective_leader(&self) -> Option<(usize, u64)> {
        let (l, term) = self.store.leader?;
        (self.nodes[l].alive() && self.quorum_with(l)).then_some((l, term))
    }

    fn quorum_with(&self, l: usize) -> bool {
        let n = self.nodes.len();
        let reach = (0..n)
            .filter(|v| self.nodes[*v].alive() && self.link(l, *v) && self.link(*v, l))
            .count();
        reach > n / 2
    }

    pub(super) fn raft_leader_index(&self) -> Option<usize> {
        self.effective_leader().map(|(l, _)| l)
    }

    /// Whether voter `v` still hears the leader it knows (other than
    /// itself): then it neither campaigns nor grants a vote.
    fn hears_leader(&self, v: usize) -> bool {
        match self.store.leader {
            Some((l, _)) if l == v => self.nodes[v].alive(),
            Some((l, _)) => self.nodes[l].alive() && self.link(l, v),
            None => false,
        }
    }

    /// Reacts to a crash, restart, pause, resume or link change: an
    /// election when the leader cannot commit, catch-up of watches, the
    /// lessor.
    pub(super) fn topology_changed(&mut self) {
        if self.effective_leader().is_none() && !self.store.election_pending {
            self.store.election_pending = true;
            let at = self.now + self.rng.ms(500, 1000) + self.rng.ms(0, 100);
            self.push(at, Ev::Store(StoreEv::Election));
        }
        self.catch_up_watches();
        self.run_lessor();
    }

    fn election(&mut self) {
        self.store.election_pending = false;
        if self.effective_leader().is_some() {
            return;
        }
        let n = self.nodes.len();
        let majority = n / 2 + 1;
        let winners: Vec<usize> = (0..n)
            .filter(|c| self.nodes[*c].alive() && !self.hears_leader(*c))
            .filter(|c| {
                let votes = (0..n)
                    .filter(|v| {
                        *v == *c
                            || (self.nodes[*v].alive()
                                && self.link(*c, *v)
                                && self.link(*v, *c)
                                && !self.hears_leader(*v))
                    })
                    .count();
                votes >= majority
            })
            .collect();
        let Some(&c) = self.rng.pick(&winners) else {
            self.store.election_pending = true;
            let at = self.now + self.rng.ms(500, 1000);
            self.push(at, Ev::Store(StoreEv::Election));
            return;
        };
        if let Some((old, _)) = self.store.leader {
            self.nodes[old].lessor.sync_term(None);
        }
        self.store.term += 1;
        self.store.leader = Some((c, self.store.term));
        self.trace(c, format!("becomes Raft leader, term {}", self.store.term));
        self.run_lessor();
        self.catch_up_watches();
    }

    // ---- requests -------------------------------------------------------

    pub(super) fn store_send(&mut self, i: usize, action: Action) {
        if !matches!(
            action,
            Action::Keepalive { .. } | Action::PublishMember { .. } | Action::PublishStatus(_)
        ) {
            self.trace(i, format!("store {action:?}"));
        }
        self.store.next_req += 1;
        let id = self.store.next_req;
        // The driver bounds a renewal by keepalive_timeout, every other
        // request by raft.request_timeout.
        let bound = match action {
            Action::Keepalive { .. } => nanos(ha_config().keepalive_timeout),
            _ => REQUEST_TIMEOUT,
        };
        let deadline = self.now + bound;
        self.store.reqs.insert(
            id,
            Req {
                node: i,
                inc: self.nodes[i].inc,
                action,
                sent_l: self.nodes[i].clock.local(self.now),
                deadline,
            },
        );
        let at = self.now + self.rng.range(50, 500) * 1000;
        self.push(at, Ev::Store(StoreEv::Try { id }));
        self.push(deadline, Ev::Store(StoreEv::Timeout { id }));
    }

    fn retry(&mut self, id: u64) {
        if let Some(r) = self.store.reqs.get(&id) {
            if self.now + REQUEST_RETRY < r.deadline {
                self.push(self.now + REQUEST_RETRY, Ev::Store(StoreEv::Try { id }));
            }
        }
    }

    pub(super) fn store_event(&mut self, ev: StoreEv) {
        match ev {
            StoreEv::Try { id } => {
                let Some(r) = self.store.reqs.get(&id) else {
                    return;
                };
                let node = r.node;
                if self.nodes[node].inc != r.inc {
                    self.store.reqs.remove(&id);
                    return;
                }
                match self.effective_leader() {
                    Some((l, term)) if !self.nodes[node].paused() && self.link(node, l) => {
                        let at = self.now + self.net(node, l);
                        self.push(
                            at,
                            Ev::Store(StoreEv::Exec {
                                id,
                                leader: l,
                                term,
                            }),
                        );
                    }
                    _ => self.retry(id),
                }
            }
            StoreEv::Exec { id, leader, term } => self.exec(id, leader, term),
            StoreEv::Confirm { id, leader, term } => {
                let Some(r) = self.store.reqs.get(&id) else {
                    return;
                };
                // A leader that lost its quorum cannot confirm: the
                // request runs into its timeout.
                if self.effective_leader() != Some((leader, term)) {
                    return;
                }
                let (sent_l, action) = (r.sent_l, r.action.clone());
                let Action::Keepalive { lease } = action else {
                    return;
                };
                let result = match self.lease_check(leader, term, lease, true) {
                    Ok(ttl) => Reply::Lease {
                        lease,
                        valid_until: sent_l + ttl - ha_config().safety_margin,
                    },
                    Err(()) => Reply::LeaseGone,
                };
                self.reply(id, leader, Ok(result), 0);
            }
            StoreEv::Reply { id, result } => {
                let Some(r) = self.store.reqs.remove(&id) else {
                    return;
                };
                if self.nodes[r.node].inc == r.inc {
                    self.feed(r.node, done(r.action.kind(), result));
                }
            }
            StoreEv::Timeout { id } => {
                let Some(r) = self.store.reqs.remove(&id) else {
                    return;
                };
                if self.nodes[r.node].inc == r.inc {
                    let err = "the store did not answer within raft.request_timeout".to_string();
                    self.feed(r.node, done(r.action.kind(), Err(err)));
                }
            }
            StoreEv::Election => self.election(),
            StoreEv::LessorWake { gen } => {
                if gen == self.store.lessor_gen {
                    self.run_lessor();
                }
            }
            StoreEv::ExpireCommit {
                leader,
                term,
                lease,
            } => {
                if self.effective_leader() == Some((leader, term))
                    && self.store.kv.leases.contains_key(&lease)
                {
                    self.trace(
                        leader,
                        format!("lease {lease} expired on the Raft leader's clock"),
                    );
                    self.commit(Op::Expire { lease });
                }
            }
            StoreEv::Watch { node, view } => {
                let n = &mut self.nodes[node];
                if !n.alive() || view.revision <= n.applied.revision {
                    return;
                }
                n.applied = (*view).clone();
                self.feed(node, Event::StoreChanged(*view));
            }
        }
    }

    fn exec(&mut self, id: u64, l: usize, term: u64) {
        let Some(r) = self.store.reqs.get(&id) else {
            return;
        };
        if self.effective_leader() != Some((l, term)) {
            self.retry(id);
            return;
        }
        let (node, sent_l, action) = (r.node, r.sent_l, r.action.clone());
        let name = self.nodes[node].name.clone();
        let result = match action {
            Action::Keepalive { lease } => {
                if self.lease_check(l, term, lease, false).is_err() {
                    Ok(Reply::LeaseGone)
                } else {
                    let at = self.now + self.rng.ms(1, 10);
                    self.push(
                        at,
                        Ev::Store(StoreEv::Confirm {
                            id,
                            leader: l,
                            term,
                        }),
                    );
                    return;
                }
            }
            Action::AcquireInitialize => {
                let rec = InitializeRecord {
                    owner: name,
                    sysid: None,
                };
                let op = put(keys::INITIALIZE, keys::encode(&rec), None, Expect::Absent);
                cas(self.commit(op))
            }
            Action::SetInitializeSysid { sysid } => self.set_sysid(&name, sysid),
            Action::GrantLease { ttl } => {
                let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                match self.commit(Op::Grant { ttl_ms }).outcome {
                    Outcome::Granted { lease, ttl_ms } => Ok(Reply::Lease {
                        lease,
                        valid_until: sent_l + Duration::from_millis(ttl_ms)
                            - ha_config().safety_margin,
                    }),
                    other => Err(format!("unexpected answer to a grant: {other:?}")),
                }
            }
            Action::AcquireLeader { lease } => {
                let op = put(keys::LEADER, name, Some(lease), Expect::Absent);
                self.lease_put(l, term, lease, op, cas)
            }
            Action::RevokeLease { lease } => {
                self.commit(Op::Revoke { lease });
                Ok(Reply::Done)
            }
            Action::ReleaseLeader { revision, .. } => {
                self.commit(Op::Delete {
                    key: keys::LEADER.to_string(),
                    expect: Expect::ModRevision(revision),
                });
                Ok(Reply::Done)
            }
            Action::PublishMember { lease, info } => {
                let rec = keys::encode(&member_record(&name, &info, &Default::default()));
                let op = put(&keys::member_key(&name), rec, Some(lease), Expect::Any);
                self.lease_put(l, term, lease, op, |_| Ok(Reply::Done))
            }
            Action::PublishStatus(s) => {
                let rec = StatusRecord {
                    optime: s.lsn.0,
                    timeline: s.timeline,
                };
                self.commit(put(keys::STATUS, keys::encode(&rec), None, Expect::Any));
                Ok(Reply::Done)
            }
            // Guarded on our leader key (src/consensus/kv.rs `PutGuarded`):
            // a write sent while leading cannot land after the lease ended.
            Action::WriteSync {
                lease,
                members,
                quorum,
                base,
            } => {
                let op = keys::sync_write(&name, members, quorum, base, lease);
                match self.commit(op).outcome {
                    Outcome::Done => Ok(Reply::Done),
                    _ => Err("the sync key changed, or we no longer hold the leader key".into()),
                }
            }
            // The `history` key is for people; the model only acknowledges it.
            Action::RecordHistory { .. } => Ok(Reply::Done),
            other => Err(format!("{other:?} is not a store action")),
        };
        let delay = self.rng.ms(1, 20);
        self.reply(id, l, result, delay);
    }

    /// A put that names a lease: refused when the lease is dead on the
    /// leader's lessor, even before its Expire commits.
    fn lease_put(
        &mut self,
        l: usize,
        term: u64,
        lease: LeaseId,
        op: Op,
        ok: impl FnOnce(CommandResponse) -> Result<Reply, String>,
    ) -> Result<Reply, String> {
        if self.lease_check(l, term, lease, false).is_err() {
            return Ok(Reply::LeaseGone);
        }
        let resp = self.commit(op);
        match resp.outcome {
            Outcome::LeaseNotFound { .. } => Ok(Reply::LeaseGone),
            _ => ok(resp),
        }
    }

    fn set_sysid(&mut self, name: &str, sysid: u64) -> Result<Reply, String> {
        let current = self
            .store
            .kv
            .kv
            .get(keys::INITIALIZE)
            .cloned()
            .ok_or("the initialize key is gone")?;
        let mut rec: InitializeRecord = keys::decode(&current.key, &current.value)?;
        if rec.owner != name {
            return Err(format!("{} owns the initialize key", rec.owner));
        }
        rec.sysid = Some(sysid.to_string());
        let op = put(
            keys::INITIALIZE,
            keys::encode(&rec),
            None,
            Expect::ModRevision(current.mod_revision),
        );
        match self.commit(op).outcome {
            Outcome::Done => Ok(Reply::Done),
            _ => Err("the initialize key changed underneath".into()),
        }
    }

    fn reply(&mut self, id: u64, l: usize, result: Result<Reply, String>, delay: T) {
        let Some(node) = self.store.reqs.get(&id).map(|r| r.node) else {
            return;
        };
        if self.nodes[l].alive() && self.link(l, node) {
            let at = self.now + delay + self.net(l, node);
            self.push(at, Ev::Store(StoreEv::Reply { id, result }));
        }
    }

    /// `lease_check` of src/store/leader.rs: the lease exists in the state
    /// machine and is alive on the leader's lessor; `renew` moves its
    /// deadline to now + ttl. Returns the TTL.
    fn lease_check(
        &mut self,
        l: usize,
        term: u64,
        lease: LeaseId,
        renew: bool,
    ) -> Result<Duration, ()> {
        let Some(rec) = self.store.kv.leases.get(&lease) else {
            return Err(());
        };
        let ttl = Duration::from_millis(rec.ttl_ms);
        let now = self.instant(l);
        let lessor = &mut self.nodes[l].lessor;
        lessor.sync_term(Some(term));
        let check = if renew {
            lessor.renew(lease, ttl, now)
        } else {
            lessor.check(lease, ttl, now)
        };
        self.run_lessor();
        match check {
            LeaseCheck::Alive => Ok(ttl),
            LeaseCheck::Expired | LeaseCheck::NotLeader => Err(()),
        }
    }

    /// Node `l`'s local clock as the tokio instant its lessor counts in.
    fn instant(&self, l: usize) -> Instant {
        let local = self.nodes[l].clock.local(self.now);
        self.store.base + Duration::from_nanos(local.as_nanos())
    }

    /// What `run_background` does on the Raft leader: propose `Expire` for
    /// deadlines passed, and wake up for the next one.
    fn run_lessor(&mut self) {
        let Some((l, term)) = self.store.leader else {
            return;
        };
        if !self.nodes[l].alive() {
            return;
        }
        let now = self.instant(l);
        let lessor = &mut self.nodes[l].lessor;
        lessor.sync_term(Some(term));
        let due = lessor.due(&self.store.kv.leases, now);
        let wake = lessor.next_wakeup();
        let effective = self.effective_leader() == Some((l, term));
        for lease in due {
            if effective {
                let at = self.now + self.rng.ms(1, 20);
                self.push(
                    at,
                    Ev::Store(StoreEv::ExpireCommit {
                        leader: l,
                        term,
                        lease,
                    }),
                );
            }
        }
        self.store.lessor_gen += 1;
        if let Some(w) = wake {
            let local =
                BootInstant::from_nanos(nanos(w.saturating_duration_since(self.store.base)));
            let at = self.nodes[l].clock.true_at(local).max(self.now + 1);
            let gen = self.store.lessor_gen;
            self.push(at, Ev::Store(StoreEv::LessorWake { gen }));
        }
    }

    /// Applies one committed entry and sends the change to every voter
    /// the leader reaches.
    fn commit(&mut self, op: Op) -> CommandResponse {
        let (resp, events) = self.store.kv.apply(&Command::new(op));
        if !events.is_empty() {
            self.catch_up_watches();
        }
        self.run_lessor();
        resp
    }

    /// Every alive data node the leader reaches and that is behind gets
    /// the current state as a view, after a replication delay.
    fn catch_up_watches(&mut self) {
        let Some((l, _)) = self.effective_leader() else {
            return;
        };
        let revision = self.store.kv.revision;
        let mut view: Option<ClusterView> = None;
        for i in 0..self.n_data {
            let n = &self.nodes[i];
            if !n.alive() || !self.link(l, i) || n.applied.revision >= revision {
                continue;
            }
            let v = view
                .get_or_insert_with(|| {
                    cluster_view(
                        &self.store.kv.kv,
                        revision,
                        &self.ha_cfg(),
                        std::time::SystemTime::UNIX_EPOCH,
                    )
                })
                .clone();
            let at = self.now + self.rng.ms(1, 10);
            self.push(
                at,
                Ev::Store(StoreEv::Watch {
                    node: i,
                    view: Box::new(v),
                }),
            );
        }
    }
}

fn put(key: &str, value: String, lease: Option<LeaseId>, expect: Expect) -> Op {
    Op::Put {
        key: key.to_string(),
        value,
        lease,
        expect,
    }
}

/// A compare-and-set's answer as the driver maps it.
fn cas(resp: CommandResponse) -> Result<Reply, String> {
    match resp.outcome {
        Outcome::Done => Ok(Reply::Won {
            revision: resp.revision,
        }),
        Outcome::CasFailed { .. } => Ok(Reply::Lost),
        Outcome::LeaseNotFound { .. } => Ok(Reply::LeaseGone),
        other => Err(format!("unexpected answer to a write: {other:?}")),
    }
}
