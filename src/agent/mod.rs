//! The shell around the HA core: one event loop over the store watch,
//! action completions, a timer and shutdown. It feeds events to
//! [`Ha::handle`] and carries out the actions it returns, each in its own
//! task that answers with exactly one event.
//!
//! ```text
//!  store watch ──▶ ClusterView ─┐
//!  action tasks ──▶ ActionDone ─┼──▶ Ha::handle(now, event) ──▶ actions ──▶ run_store / run_pg
//!  timer (next_wakeup) ─▶ Tick ─┤                                               │
//!  SIGTERM ──────────▶ Shutdown ┘◀──────────────── one event per action ◀───────┘
//! ```
//!
//! PostgreSQL actions run one at a time (the core never asks for two); a
//! `Fence` aborts whichever is running and stops the server at once.

pub mod actions;
pub mod callbacks;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::clock::{BootClock, BootInstant, Clock};
use crate::config::{Authentication, DcsConfig, InitdbOption};
use crate::consensus::kv::WatchEvent;
use crate::consensus::peer::{BoxFuture, MemberPosition, PositionSource};
use crate::consensus::types::KeyValue;
use crate::fence::{Fencer, Watchdog, WatchdogSettings};
use crate::ha::records as view;
use crate::ha::{Action, ActionDone, ActionKind};
use crate::ha::{Event, Ha, NodeInfo};
use crate::ha::{HaConfig, MemberTags};
use crate::postgres::{Postgres, StartSpec};
use crate::status::{NodeStatus, StatusPublisher};
use crate::store::Store;

use actions::Configured;

/// What the agent needs from the node's configuration.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    /// This member's replication slot name (sanitized member name).
    pub slot: String,
    pub api_url: String,
    /// `host:port` other members reach this node's PostgreSQL at.
    pub pg_address: String,
    pub tags: MemberTags,
    /// The tags the core does not read (free-form ones included), as the
    /// config file has them: published in the member key beside `tags`.
    pub labels: BTreeMap<String, crate::config::Scalar>,
    pub auth: Authentication,
    pub initdb: Vec<InitdbOption>,
    pub ha: HaConfig,
    /// This node's `bootstrap.dcs`: written to the store's `config` key if
    /// no member has written it yet; the store's copy wins afterwards.
    pub dcs: DcsConfig,
    pub start: StartSpec,
    pub stop_timeout: Duration,
    /// `postgresql.use_pg_rewind` and
    /// `postgresql.remove_data_directory_on_rewind_failure`.
    pub rejoin: crate::ha::RejoinPolicy,
    /// `watchdog:`; `None` when off.
    pub watchdog: Option<WatchdogSettings>,
    /// `postgresql.callbacks`, `pre_promote` and `callback_timeout`.
    pub callbacks: callbacks::CallbackSpec,
}

/// Answers other members' position questions from this node's
/// PostgreSQL ([`crate::consensus::peer::PeerRpc::Position`]).
pub struct PositionAnswerer<P> {
    pub name: String,
    pub pg: Arc<P>,
    /// The agent's status: a node standing aside after a failed
    /// `pre_promote` answers that it is no contender.
    pub status: watch::Receiver<NodeStatus>,
}

impl<P: Postgres + 'static> PositionSource for PositionAnswerer<P> {
    fn position(&self) -> BoxFuture<Result<MemberPosition, String>> {
        let (name, pg) = (self.name.clone(), self.pg.clone());
        let aside = self.status.borrow().stands_aside_until;
        Box::pin(async move {
            if aside.is_some_and(|t| BootClock.now() < t) {
                return Err(format!(
                    "{name} stands aside from failover for one ttl: its pre_promote failed"
                ));
            }
            actions::own_position(&name, pg.as_ref()).await
        })
    }
}

/// Runs the HA loop until the core says to exit. Returns the core's error,
/// if it gave one. After every call of the core it publishes the node's
/// [`NodeStatus`] on `status` (for the REST API and `/metrics`).
pub async fn run<P: Postgres + 'static>(
    store: Store,
    pg: Arc<P>,
    spec: AgentSpec,
    mut shutdown: watch::Receiver<bool>,
    status: watch::Sender<NodeStatus>,
) -> Option<String> {
    let clock = BootClock;
    let mut status = StatusPublisher::new(status);
    let mut ha = Ha::new(NodeInfo {
        name: spec.name.clone(),
        api_url: spec.api_url.clone(),
        pg_address: spec.pg_address.clone(),
        tags: spec.tags,
        rejoin: spec.rejoin,
        callbacks: spec.callbacks.set(),
    });
    // The fencing thread: stops a primary whose lease ran out even when
    // this runtime is stalled (see `crate::fence`).
    let fencer = match Fencer::spawn(
        Arc::new(clock),
        pg.fence_fn(),
        spec.watchdog.clone().and_then(Watchdog::new),
    ) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot start the fencing thread: {e}")),
    };
    let mut refused: Option<String> = None;
    let mut spec = Arc::new(spec);
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let lanes = Lanes {
        store: store.clone(),
        pg: pg.clone(),
        configured: Arc::new(Mutex::new(Configured::default())),
        callbacks: callbacks::CallbackRunner::new(spec.callbacks.clone()),
        tx: tx.clone(),
    };
    let mut watch = store.watch("");
    let mut kv: BTreeMap<String, KeyValue> = watch
        .initial
        .drain(..)
        .map(|kv| (kv.key.clone(), kv))
        .collect();
    let mut revision = watch.revision;
    let mut pg_task: Option<(ActionKind, JoinHandle<()>)> = None;
    let mut shutdown_sent = false;
    let mut vacancy_logged = false;

    tokio::spawn(seed_dynamic_config(store.clone(), spec.dcs.clone()));
    if let Some(updated) = with_dynamic_config(&spec, &kv) {
        spec = updated;
    }
    // A scheduled operation for this node falls due at this wall-clock
    // time: the view is built again then.
    let mut op_due_at: Option<SystemTime> = None;
    let mut pending = vec![Event::StoreChanged(build_view(
        &kv,
        revision,
        &spec,
        &mut op_due_at,
    ))];
    loop {
        for event in pending.drain(..) {
            let now = clock.now();
            let actions = ha.handle(now, event);
            status.publish(&ha, now);
            log_vacancy_blocker(&ha, now, &mut vacancy_logged);
            let held = sync_fencer(&fencer, &ha, now);
            for action in actions {
                if let Action::Exit { error } = action {
                    if let Some((_, t)) = pg_task.take() {
                        t.abort();
                    }
                    lanes.callbacks.finish().await;
                    return error;
                }
                if let Some(e) = refuse(&fencer, &held, &action) {
                    if refused.as_ref() != Some(&e) {
                        tracing::warn!("{e}");
                        refused = Some(e.clone());
                    }
                    let _ = tx.send(Event::ActionDone(ActionDone {
                        kind: action.kind(),
                        result: Err(e),
                    }));
                    continue;
                }
                dispatch(&lanes, &spec, &mut pg_task, action);
            }
        }
        let now = clock.now();
        let op_wait = op_due_at.map(|t| {
            t.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        });
        let wake = ha
            .next_wakeup(now)
            .map(|w| w.saturating_since(now))
            .unwrap_or(spec.ha.loop_wait)
            .min(spec.ha.loop_wait)
            .min(op_wait.unwrap_or(Duration::MAX));
        tokio::select! {
            ev = watch.events.recv() => {
                let Some(ev) = ev else { return Some("the store watch closed".into()) };
                apply(&mut kv, &mut revision, ev);
                while let Ok(ev) = watch.events.try_recv() {
                    apply(&mut kv, &mut revision, ev);
                }
                if let Some(updated) = with_dynamic_config(&spec, &kv) {
                    spec = updated;
                }
                pending.push(Event::StoreChanged(build_view(&kv, revision, &spec, &mut op_due_at)));
            }
            Some(ev) = rx.recv() => {
                if let Event::ActionDone(ActionDone { kind, .. }) = &ev {
                    if pg_task.as_ref().is_some_and(|(k, _)| k == kind) {
                        pg_task = None;
                    }
                }
                if matches!(ev, Event::PgProbed(_)) && pg_task.as_ref().is_some_and(|(k, _)| *k == ActionKind::Probe) {
                    pg_task = None;
                }
                pending.push(ev);
            }
            _ = tokio::time::sleep(wake) => {
                if op_due_at.is_some_and(|t| t <= SystemTime::now()) {
                    pending.push(Event::StoreChanged(build_view(&kv, revision, &spec, &mut op_due_at)));
                }
                pending.push(Event::Tick);
            }
            r = shutdown.changed(), if !shutdown_sent => {
                if r.is_err() || *shutdown.borrow() {
                    shutdown_sent = true;
                    tracing::info!("shutting down: handing over before leaving");
                    pending.push(Event::Shutdown);
                }
            }
        }
    }
}

/// Says once per vacancy of the leader key why this member does not take
/// it, and why nobody may (the cluster waits rather than promote a member
/// it must not).
fn log_vacancy_blocker(ha: &Ha, now: BootInstant, logged: &mut bool) {
    let Some(view) = ha.view() else { return };
    if view.leader.is_some() {
        *logged = false;
        return;
    }
    if *logged {
        return;
    }
    if let Some(why) = ha.vacancy_blocker(now) {
        *logged = true;
        match crate::ha::no_leader(view) {
            Some(all) => tracing::warn!(
                "the leader key is vacant and this member may not take it ({why}): {}",
                all.reason
            ),
            None => {
                tracing::warn!("the leader key is vacant and this member may not take it ({why})")
            }
        }
    }
}

/// The core's view of the store, with this node's operation once it is
/// due by this node's wall clock; `due_at` is set to when a scheduled one
/// falls due.
fn build_view(
    kv: &BTreeMap<String, KeyValue>,
    revision: u64,
    spec: &AgentSpec,
    due_at: &mut Option<SystemTime>,
) -> crate::ha::ClusterView {
    let now = SystemTime::now();
    let mut v = view::cluster_view(kv, revision, &spec.ha, now);
    // A scheduled switchover is shown to the core as due once its time
    // has come (`cluster_view` compares): wake for that too.
    *due_at = view::failover_request(kv)
        .and_then(|(_, at)| at)
        .filter(|at| *at > now);
    match view::operation_due(kv, &spec.name, now) {
        view::OperationDue::Now(op) => v.operation = Some(op),
        view::OperationDue::At(t) => *due_at = Some(due_at.map_or(t, |f| f.min(t))),
        view::OperationDue::None => {}
    }
    v
}

/// Tells the fencing thread until when PostgreSQL may accept writes: the
/// leader lease's `valid_until` while the core holds the key, nothing
/// otherwise. `Err` when a required watchdog could not be armed (the thread
/// then fences at once).
fn sync_fencer(fencer: &Fencer, ha: &Ha, now: BootInstant) -> Result<(), String> {
    match ha.lease().and_then(|l| l.valid_until) {
        Some(valid_until) if ha.holds_leader(now) => fencer.hold(valid_until),
        _ => {
            fencer.release();
            Ok(())
        }
    }
}

/// Why `action` must not run now, if it must not: racing for the leader
/// key needs a working watchdog when it is required, and making PostgreSQL
/// writable needs the lease to be armed on the fencing thread.
fn refuse(fencer: &Fencer, held: &Result<(), String>, action: &Action) -> Option<String> {
    use crate::ha::StartAs;
    match action {
        Action::AcquireLeader { .. } => fencer
            .check_watchdog()
            .err()
            .map(|e| format!("not racing for the leader key: {e}")),
        Action::Promote | Action::StartPostgres(StartAs::Primary) => held
            .as_ref()
            .err()
            .map(|e| format!("not making PostgreSQL writable: {e}")),
        _ => None,
    }
}

/// The spec with the store's dynamic config applied, when that changes it.
fn with_dynamic_config(
    spec: &Arc<AgentSpec>,
    kv: &BTreeMap<String, KeyValue>,
) -> Option<Arc<AgentSpec>> {
    let dcs = view::dynamic_config(kv)?;
    let mut updated = (**spec).clone();
    updated.ha = view::ha_config(&dcs, &spec.ha);
    updated.start.cluster_parameters = dcs.postgresql.parameters;
    let changed =
        updated.ha != spec.ha || updated.start.cluster_parameters != spec.start.cluster_parameters;
    changed.then(|| Arc::new(updated))
}

/// Writes this node's `bootstrap.dcs` as the cluster's dynamic config
/// unless some member already did (the first one wins, as in Patroni).
async fn seed_dynamic_config(store: Store, dcs: DcsConfig) {
    let value = match serde_json::to_string(&dcs) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("cannot encode bootstrap.dcs: {e}");
            return;
        }
    };
    loop {
        match store
            .put(
                crate::store::keys::CONFIG,
                &value,
                None,
                crate::consensus::types::Expect::Absent,
            )
            .await
        {
            Ok(Ok(_)) => {
                tracing::info!("wrote bootstrap.dcs as the cluster's dynamic config");
                return;
            }
            Ok(Err(_)) => return,
            Err(e) => {
                tracing::debug!("cannot seed the dynamic config yet: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn apply(kv: &mut BTreeMap<String, KeyValue>, revision: &mut u64, ev: WatchEvent) {
    *revision = ev.revision();
    match ev {
        WatchEvent::Put { kv: v, .. } => {
            kv.insert(v.key.clone(), v);
        }
        WatchEvent::Delete { key, .. } => {
            kv.remove(&key);
        }
        WatchEvent::Reset { kvs, .. } => {
            *kv = kvs.into_iter().map(|v| (v.key.clone(), v)).collect();
        }
    }
}

fn is_store_action(a: &Action) -> bool {
    // Everything that is neither on the PostgreSQL lane nor the fence or
    // the exit (the special store actions are dispatched before this).
    let kind = a.kind();
    !kind.is_postgres() && !matches!(kind, ActionKind::Fence | ActionKind::Exit)
}

/// What every action task needs, shared by the driver's tasks.
struct Lanes<P> {
    store: Store,
    pg: Arc<P>,
    configured: Arc<Mutex<Configured>>,
    callbacks: Arc<callbacks::CallbackRunner>,
    tx: mpsc::UnboundedSender<Event>,
}

fn dispatch<P: Postgres + 'static>(
    lanes: &Lanes<P>,
    spec: &Arc<AgentSpec>,
    pg_task: &mut Option<(ActionKind, JoinHandle<()>)>,
    action: Action,
) {
    tracing::debug!(?action, "action");
    let Lanes {
        store,
        pg,
        configured,
        callbacks,
        tx,
    } = lanes;
    let tx = tx.clone();
    if let Action::RunCallback { kind, role } = action {
        // In the background; nothing waits for it.
        drop(callbacks.call(kind, role));
        return;
    }
    if let Action::PrePromote = action {
        let callbacks = callbacks.clone();
        tokio::spawn(async move {
            let result = callbacks.pre_promote().await;
            if let Err(e) = &result {
                tracing::warn!("not promoting: {e}; giving the leader key back");
            }
            let _ = tx.send(Event::ActionDone(ActionDone {
                kind: ActionKind::PrePromote,
                result: result.map(|_| crate::ha::Reply::Done),
            }));
        });
        return;
    }
    if let Action::QueryPositions { members, timeout } = action {
        let store = store.clone();
        tokio::spawn(async move {
            let _ = tx.send(actions::query_positions(&store, members, timeout).await);
        });
        return;
    }
    if let Action::FinishFailover { id, ok, message } = action {
        let store = store.clone();
        tokio::spawn(async move {
            let result = actions::finish_failover(&store, &id, ok, &message).await;
            if let Err(e) = &result {
                tracing::warn!("cannot write the outcome of request {id} yet: {e}");
            }
            let _ = tx.send(Event::ActionDone(ActionDone {
                kind: ActionKind::FinishFailover,
                result: result.map(|_| crate::ha::Reply::Done),
            }));
        });
        return;
    }
    if let Action::RecordHistory { timeline } = action {
        let (store, pg, name) = (store.clone(), pg.clone(), spec.name.clone());
        tokio::spawn(async move {
            let result = actions::record_history(&store, pg.as_ref(), &name, timeline).await;
            if let Err(e) = &result {
                tracing::warn!(
                    "cannot record the switch to timeline {timeline} in history yet: {e}"
                );
            }
            let _ = tx.send(Event::ActionDone(ActionDone {
                kind: ActionKind::RecordHistory,
                result: result.map(|_| crate::ha::Reply::Done),
            }));
        });
        return;
    }
    if is_store_action(&action) {
        let (store, spec) = (store.clone(), spec.clone());
        tokio::spawn(async move {
            let _ = tx.send(actions::run_store(&store, &spec, action).await);
        });
        return;
    }
    if matches!(action, Action::Fence) {
        // Whatever PostgreSQL was doing (a promote, a start) must not finish.
        if let Some((kind, t)) = pg_task.take() {
            t.abort();
            let _ = tx.send(Event::ActionDone(ActionDone {
                kind,
                result: Err("aborted: fencing".into()),
            }));
        }
        tracing::warn!("fencing: stopping PostgreSQL in immediate mode");
    }
    let kind = action.kind();
    let (pg, spec, configured) = (pg.clone(), spec.clone(), configured.clone());
    let fence = matches!(action, Action::Fence);
    let handle = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let event = actions::run_pg(&pg, &spec, &configured, action).await;
        tracing::debug!(?kind, took = ?started.elapsed(), "PostgreSQL action finished");
        let _ = tx.send(event);
    });
    if !fence {
        *pg_task = Some((kind, handle));
    }
}
