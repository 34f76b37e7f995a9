//! Deterministic simulation of the HA core (DESIGN.md, tests tier 2): see
//! `hasim` for the model. Each scenario runs over a fixed list of seeds;
//! `PGKEEL_SIM_SEED=<n>` replays one seed, `PGKEEL_SIM_VERBOSE=1` prints
//! every traced event.

mod hasim;

use std::collections::BTreeSet;

use hasim::clock::{MS, S, T};
use hasim::{Sim, SimConfig};
use pgkeel::config::SynchronousMode;
use pgkeel::ha::SyncSettings;

const SEEDS: u64 = 20;

fn seeds() -> Vec<u64> {
    match std::env::var("PGKEEL_SIM_SEED") {
        Ok(s) => match s.trim().parse() {
            Ok(seed) => vec![seed],
            Err(_) => {
                panic!("PGKEEL_SIM_SEED={s} is not a number: give one seed from a failure message")
            }
        },
        Err(_) => (1..=seed_count()).collect(),
    }
}

/// `PGKEEL_SIM_SEEDS=<n>` runs seeds 1..=n (a longer search), else 20.
fn seed_count() -> u64 {
    std::env::var("PGKEEL_SIM_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(SEEDS)
}

/// Boots a cluster through the real bootstrap path and waits until it has
/// settled: one primary, every other node a streaming standby.
fn formed(
    label: &str,
    seed: u64,
    data_nodes: usize,
    witness: bool,
    watchdog: bool,
) -> (Sim, usize) {
    formed_sync(
        label,
        seed,
        data_nodes,
        witness,
        watchdog,
        SyncSettings::default(),
    )
}

/// [`formed`] under synchronous settings: in synchronous mode it also
/// waits until the primary's `sync` key protects its commits (k ≥ 1).
fn formed_sync(
    label: &str,
    seed: u64,
    data_nodes: usize,
    witness: bool,
    watchdog: bool,
    sync: SyncSettings,
) -> (Sim, usize) {
    let mut sim = Sim::new(SimConfig {
        seed,
        data_nodes,
        witness,
        watchdog,
        label: label.to_string(),
        sync,
    });
    // Synchronous mode: the set is complete (`on`: node_count members;
    // quorum: every standby) and promises k ≥ 1. While quorum mode adds a
    // member, k is 0 for a moment by design (docs/sync.md).
    let want = if sync.mode == SynchronousMode::Quorum {
        data_nodes - 1
    } else {
        usize::try_from(sync.node_count).map_or(1, |n| n.min(data_nodes - 1))
    };
    let ready = |s: &Sim| {
        s.converged()
            .is_some_and(|p| !sync.enabled() || (protects(s, p) && sync_set(s).len() == want))
    };
    let ok = sim.run_until_pred(90 * S, ready);
    sim.expect(ok, || "the cluster never formed".into());
    // Let it run settled for a while (keepalives, publishes, probes).
    let settle = sim.rng().ms(1000, 4000);
    sim.run_for(settle);
    let p = sim.converged();
    sim.expect(p.is_some() && ready(&sim), || {
        "the formed cluster did not stay settled".into()
    });
    (sim, p.unwrap_or(0))
}

/// The `sync` key is `p`'s and promises that each acknowledged commit is
/// on at least one member of its set.
fn protects(sim: &Sim, p: usize) -> bool {
    sim.sync_key()
        .is_some_and(|k| k.leader == sim.nodes[p].name && k.quorum >= 1)
}

/// The synchronous set of the `sync` key (empty without one).
fn sync_set(sim: &Sim) -> BTreeSet<String> {
    sim.sync_key()
        .map(|k| k.sync_standby.into_iter().collect())
        .unwrap_or_default()
}

/// The synchronous settings each scenario runs under again: `on`
/// (`FIRST 1`), `on` strict, `quorum` (`ANY 1` of every healthy standby:
/// k < |S| with three data nodes), `quorum` strict.
fn sync_modes() -> Vec<SyncSettings> {
    let on = SyncSettings {
        mode: SynchronousMode::On,
        ..SyncSettings::default()
    };
    let quorum = SyncSettings {
        mode: SynchronousMode::Quorum,
        ..SyncSettings::default()
    };
    let strict = |s: SyncSettings| SyncSettings { strict: true, ..s };
    vec![on, strict(on), quorum, strict(quorum)]
}

/// The mode for a message.
fn mode_word(sync: SyncSettings) -> String {
    if !sync.enabled() {
        return String::new();
    }
    let strict = if sync.strict { ", strict" } else { "" };
    format!(" ({}{strict})", sync.mode.as_str())
}

/// Each seed under each synchronous mode.
fn seeds_and_modes() -> Vec<(u64, SyncSettings)> {
    let modes = sync_modes();
    seeds()
        .into_iter()
        .flat_map(|seed| modes.iter().map(move |m| (seed, *m)))
        .collect()
}

/// The node promoted after the fault was in the synchronous set, or (in
/// synchronous mode) the checker's fork-point check would have failed; it
/// also saw commits acknowledged on the old timeline, so the check was
/// not vacuous.
fn promoted_from_set(sim: &Sim, set: &BTreeSet<String>, np: usize) {
    sim.expect(set.contains(&sim.nodes[np].name), || {
        format!(
            "{} was promoted but the synchronous set was {set:?}",
            sim.nodes[np].name
        )
    });
    let last = sim.checks.promotions.last();
    sim.expect(
        last.is_some_and(|p| p.node == np && p.acked > hasim::pg::INITIAL_LSN),
        || match last {
            Some(p) => format!(
                "no acknowledged commit recorded before {} was promoted at {:X}",
                sim.nodes[p.node].name, p.fork
            ),
            None => "no promotion recorded".into(),
        },
    );
}

fn wait_new_primary(sim: &mut Sim, old: usize, limit: T) -> usize {
    let ok = sim.run_until_pred(limit, |s| {
        let w = s.writable();
        w.len() == 1
            && w[0] != old
            && s.leader_key().as_deref() == Some(s.nodes[w[0]].name.as_str())
    });
    sim.expect(ok, || {
        format!("no new primary within {} of true time", hasim::fmt_t(limit))
    });
    sim.writable()[0]
}

/// Some primary, old or new, that the leader key names. After a Raft
/// leader change every lease deadline restarts at a full TTL, so a frozen
/// primary that comes back quickly enough may legitimately keep its key.
fn wait_primary(sim: &mut Sim, limit: T) -> usize {
    let ok = sim.run_until_pred(limit, |s| {
        let w = s.writable();
        w.len() == 1 && s.leader_key().as_deref() == Some(s.nodes[w[0]].name.as_str())
    });
    sim.expect(ok, || {
        format!("no primary within {} of true time", hasim::fmt_t(limit))
    });
    sim.writable()[0]
}

fn wait_converged(sim: &mut Sim, limit: T) -> usize {
    let ok = sim.run_until_pred(limit, |s| s.converged().is_some());
    sim.expect(ok, || "the cluster did not settle after healing".into());
    sim.converged().unwrap_or(0)
}

/// A scenario as two tests: asynchronous over the seeds, and again under
/// every synchronous mode (`$run(label, seed, settings)`); the doc, if
/// any, is the synchronous test's.
macro_rules! scenario {
    ($(#[$doc:meta])* $name:ident, $sync_name:ident, $run:ident) => {
        #[test]
        fn $name() {
            for seed in seeds() {
                $run(stringify!($name), seed, SyncSettings::default());
            }
        }

        $(#[$doc])*
        #[test]
        fn $sync_name() {
            for (seed, sync) in seeds_and_modes() {
                $run(stringify!($sync_name), seed, sync);
            }
        }
    };
}

/// TTL plus a few seconds: how long a failover may take after a fault.
const FAILOVER_BOUND: T = 5 * S + 10 * S;
const SETTLE_BOUND: T = 90 * S;

scenario!(
    /// In synchronous mode the member of the set is promoted (`on`: the one
    /// synchronous standby; quorum: one of the set that is at least as far as
    /// the others that answered), at or past every acknowledged commit.
    primary_loss,
    sync_primary_loss,
    primary_loss_run
);

fn primary_loss_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 3, false, false, sync);
    let set = sync_set(&sim);
    sim.crash(p);
    let np = wait_new_primary(&mut sim, p, FAILOVER_BOUND);
    if sync.enabled() {
        promoted_from_set(&sim, &set, np);
    }
    let down = sim.rng().ms(0, 10_000);
    sim.run_for(down);
    sim.restart(p);
    settles_or_old_primary_diverged(&mut sim, p);
    sim.expect(sim.writable() == vec![np], || {
        "the primary moved again".into()
    });
}

scenario!(
    /// Losing a synchronous standby (strict or not) never moves the primary;
    /// with another standby to choose, the key protects commits again
    /// without the lost one.
    replica_loss,
    sync_replica_loss,
    replica_loss_run
);

fn replica_loss_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 3, false, false, sync);
    // In synchronous mode, a member of the set (the one in `on` mode).
    let set = sync_set(&sim);
    let r = (0..3)
        .filter(|j| *j != p)
        .find(|j| set.contains(&sim.nodes[*j].name))
        .unwrap_or((p + 1 + (seed as usize % 2)) % 3);
    let changes = sim.checks.writer_changes;
    sim.crash(r);
    sim.run_for(20 * S);
    sim.expect(
        sim.writable() == vec![p] && sim.checks.writer_changes == changes,
        || "losing a replica disturbed the primary".into(),
    );
    if sync.enabled() {
        let lost = sim.nodes[r].name.clone();
        sim.expect(protects(&sim, p) && !sync_set(&sim).contains(&lost), || {
            format!("the sync key did not move from the lost {lost} to the other standby")
        });
    }
    let acked = sim.acked_on(p);
    sim.restart(r);
    let q = wait_converged(&mut sim, SETTLE_BOUND);
    sim.expect(q == p && sim.checks.writer_changes == changes, || {
        "the primary changed after a replica came back".into()
    });
    sim.expect(sim.acked_on(p) > acked, || {
        "the primary acknowledges no commits after the replica came back".into()
    });
}

scenario!(witness_loss, sync_witness_loss, witness_loss_run);

fn witness_loss_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 2, true, false, sync);
    let changes = sim.checks.writer_changes;
    sim.crash(2);
    sim.run_for(20 * S);
    sim.expect(
        sim.converged() == Some(p) && sim.checks.writer_changes == changes,
        || "losing the witness disturbed the primary".into(),
    );
    sim.restart(2);
    sim.run_for(20 * S);
    sim.expect(
        sim.converged() == Some(p) && sim.checks.writer_changes == changes,
        || "the witness's return disturbed the primary".into(),
    );
    sim.expect(!sync.enabled() || protects(&sim, p), || {
        "the witness's loss left the primary's commits unprotected".into()
    });
}

scenario!(
    primary_isolated,
    sync_primary_isolated,
    primary_isolated_run
);

fn primary_isolated_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 3, false, false, sync);
    let set = sync_set(&sim);
    sim.isolate(p, true, true);
    let np = wait_new_primary(&mut sim, p, FAILOVER_BOUND);
    if sync.enabled() {
        promoted_from_set(&sim, &set, np);
    }
    let cut = sim.rng().ms(0, 10_000);
    sim.run_for(cut);
    sim.heal();
    settles_or_old_primary_diverged(&mut sim, p);
}

/// Whether known limitations fail the run (for whoever fixes them).
fn strict() -> bool {
    std::env::var_os("PGKEEL_SIM_STRICT").is_some()
}

/// After healing: the cluster settles, or (a known limitation of the core,
/// see the report in `hasim`) exactly `old` is left a running standby that
/// diverged from the new primary's timeline and never rejoins, because the
/// core never judges a running standby diverged (src/ha/rejoin.rs).
/// Returns whether the limitation was hit.
///
/// In synchronous mode the promoted standby holds every acknowledged
/// commit but a standby outside the set may have received more (commits
/// still waiting): that one ends diverged the same way.
fn settles_or_old_primary_diverged(sim: &mut Sim, old: usize) -> bool {
    if sim.cfg.sync.enabled() {
        let all: Vec<usize> = (0..sim.n_data).collect();
        return settles_or_diverged(sim, &all);
    }
    settles_or_diverged(sim, &[old])
}

/// [`settles_or_old_primary_diverged`], where any of `may` may be the
/// diverged standby (every other node streams).
fn settles_or_diverged(sim: &mut Sim, may: &[usize]) -> bool {
    let ok = sim.run_until_pred(SETTLE_BOUND, |s| s.converged().is_some());
    if ok {
        return false;
    }
    let [p] = sim.writable()[..] else {
        sim.fail("no single primary after healing".into());
    };
    let diverged: Vec<usize> = (0..sim.n_data)
        .filter(|j| *j != p && sim.diverged_from(*j, p))
        .collect();
    let others_fine = (0..sim.n_data)
        .filter(|j| *j != p && !diverged.contains(j))
        .all(|j| {
            let n = &sim.nodes[j];
            n.pg.standby() && n.pg.streaming
        });
    let known = !strict()
        && !diverged.is_empty()
        && diverged.iter().all(|d| may.contains(d))
        && others_fine;
    sim.expect(known, || "the cluster did not settle after healing".into());
    let names: Vec<&str> = diverged
        .iter()
        .map(|d| sim.nodes[*d].name.as_str())
        .collect();
    eprintln!(
        "KNOWN LIMITATION {}: seed {}{}: {names:?} stay running standbys diverged from {}'s timeline",
        sim.cfg.label,
        sim.cfg.seed,
        mode_word(sim.cfg.sync),
        sim.nodes[p].name
    );
    true
}

scenario!(asymmetric_cut, sync_asymmetric_cut, asymmetric_cut_run);

fn asymmetric_cut_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 3, false, false, sync);
    let set = sync_set(&sim);
    // Odd seeds: the primary sends but hears nothing; even: the reverse.
    let inbound = seed % 2 == 1;
    let raft_leader_here = sim.raft_leader() == Some(p);
    sim.isolate(p, inbound, !inbound);
    if inbound && raft_leader_here {
        // Known limitation (openraft 0.9 has no check-quorum): the
        // primary's voter leads, its heartbeats still reach the others,
        // so they neither campaign nor grant votes; it hears no acks,
        // so it cannot commit. The store is stuck, the primary fences
        // on its own, nobody is promoted until the cut heals.
        sim.run_for(FAILOVER_BOUND);
        sim.expect(strict() || sim.writable().is_empty(), || {
            "expected the stuck store of a half-cut Raft leader".into()
        });
        eprintln!(
            "KNOWN LIMITATION {label}: seed {seed}{}: no failover while {} (Raft leader) cannot receive",
            mode_word(sync),
            sim.nodes[p].name
        );
    } else if inbound && sync.enabled() && !sync.strict {
        // Not strict, the primary hears nothing: its standbys look
        // gone, so it shrinks the `sync` key to promise nothing (its
        // write still lands: it can send), then fences when its lease
        // ends. With nobody promotable, no failover until the cut
        // heals; nothing acknowledged is lost (its PostgreSQL never got
        // the empty setting: it never saw the key written).
        sim.run_for(FAILOVER_BOUND);
        let key = sim.sync_key();
        sim.expect(
            sim.writable().is_empty()
                && key.is_some_and(|k| k.leader == sim.nodes[p].name && k.quorum == 0),
            || "expected no failover from a primary that shrank its sync key to nobody".into(),
        );
    } else {
        let np = wait_new_primary(&mut sim, p, FAILOVER_BOUND);
        if sync.enabled() {
            promoted_from_set(&sim, &set, np);
        }
    }
    let cut = sim.rng().ms(0, 10_000);
    sim.run_for(cut);
    sim.heal();
    settles_or_old_primary_diverged(&mut sim, p);
}

scenario!(quorum_loss, sync_quorum_loss, quorum_loss_run);

fn quorum_loss_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 3, false, false, sync);
    let (a, b) = ((p + 1) % 3, (p + 2) % 3);
    sim.crash(a);
    sim.crash(b);
    // The primary's lease ends at most ttl - safety_margin after its
    // last keepalive was sent; nothing can renew it without a quorum.
    let cfg = hasim::ha_config();
    sim.run_for(hasim::nanos(cfg.ttl - cfg.safety_margin) + 300 * MS);
    sim.expect(sim.writable().is_empty(), || {
        "a primary without a quorum still accepts writes after its lease".into()
    });
    sim.run_for(20 * S);
    sim.expect(sim.writable().is_empty(), || {
        "something was promoted without a quorum".into()
    });
    sim.restart(a);
    sim.restart(b);
    // The fenced primary may have written past what the others have;
    // when another node wins while it still starts (and so is not yet
    // a contender), it ends as a diverged running standby: a known
    // limitation, reported, and failed under PGKEEL_SIM_STRICT.
    settles_or_old_primary_diverged(&mut sim, p);
}

scenario!(
    agent_pause_longer_than_ttl_with_watchdog,
    sync_agent_pause_longer_than_ttl_with_watchdog,
    pause_with_watchdog_run
);

/// The primary's pgkeel freezes (agent and voter) for longer than the TTL
/// while its PostgreSQL keeps running. With a watchdog (kicked to fire at
/// `valid_until - WATCHDOG_RESET`), the host is reset before any other node
/// can be promoted.
fn pause_with_watchdog_run(label: &str, seed: u64, sync: SyncSettings) {
    let (mut sim, p) = formed_sync(label, seed, 3, false, true, sync);
    let d = 5 * S + sim.rng().ms(1000, 5000);
    sim.pause(p, d);
    wait_primary(&mut sim, FAILOVER_BOUND);
    settles_or_old_primary_diverged(&mut sim, p);
}

/// The same pause without a watchdog: nothing can stop the frozen agent's
/// postmaster, so once another node is promoted two servers accept writes
/// until the agent thaws and its own timer fences. A known limitation of
/// the design (DESIGN.md asks for a mechanism that works without a
/// watchdog; none exists yet): asserted here exactly, so a fix shows.
#[test]
fn agent_pause_longer_than_ttl_without_watchdog() {
    for seed in seeds() {
        let (mut sim, p) = formed(
            "agent_pause_longer_than_ttl_without_watchdog",
            seed,
            3,
            false,
            false,
        );
        sim.checks.fail_fast = strict();
        let d = 5 * S + sim.rng().ms(3000, 5000);
        let paused_at = sim.now;
        sim.pause(p, d);
        let np = wait_new_primary_beside(&mut sim, p, FAILOVER_BOUND);
        sim.run_until(paused_at + d + 200 * MS);
        let v = sim.checks.violations.clone();
        sim.expect(!v.is_empty(), || {
            "expected two writers while the agent was frozen".into()
        });
        for x in &v {
            sim.expect(x.writers.contains(&p) && x.at <= paused_at + d, || {
                format!(
                    "a violation other than the frozen primary's: {} at {}",
                    x.what,
                    hasim::fmt_t(x.at)
                )
            });
        }
        sim.expect(sim.writable() == vec![np], || {
            "the thawed agent did not fence at once".into()
        });
        sim.checks.fail_fast = true;
        // The frozen primary's PostgreSQL kept writing: a standby still
        // streaming from it after the candidate asked its position may end
        // past the new timeline's fork, diverged like the old primary.
        let all: Vec<usize> = (0..sim.n_data).collect();
        settles_or_diverged(&mut sim, &all);
        eprintln!(
            "KNOWN LIMITATION {}: seed {seed}: {} and {} both accepted writes for {} (frozen agent, no watchdog)",
            sim.cfg.label,
            sim.nodes[p].name,
            sim.nodes[np].name,
            hasim::fmt_t(paused_at + d - v[0].at)
        );
    }
}

/// Waits until a node other than `old` is promoted and holds the key,
/// while `old` may still be writable (frozen).
fn wait_new_primary_beside(sim: &mut Sim, old: usize, limit: T) -> usize {
    let found = |s: &Sim| {
        s.writable()
            .into_iter()
            .find(|w| *w != old && s.leader_key().as_deref() == Some(s.nodes[*w].name.as_str()))
    };
    let ok = sim.run_until_pred(limit, |s| found(s).is_some());
    sim.expect(ok, || "no new primary while the old one was frozen".into());
    found(sim).unwrap_or(0)
}

/// Two data nodes and a witness; the only standby is lost, then the
/// primary too, then the standby comes back.
/// - strict: commits wait while the standby is gone (nothing is
///   acknowledged without it), the key keeps trusting it, so when it
///   returns it is promoted, holding every acknowledged commit;
/// - not strict: writes continue unprotected (acknowledged at once) and
///   the key promises nothing, so the returning standby is not promoted;
///   the old primary takes its key back when it returns.
#[test]
fn sync_only_standby_lost() {
    for (seed, sync) in seeds_and_modes() {
        let label = "sync_only_standby_lost";
        let (mut sim, p) = formed_sync(label, seed, 2, true, false, sync);
        let r = 1 - p;
        let changes = sim.checks.writer_changes;
        sim.crash(r);
        let acked = sim.acked_on(p);
        sim.run_for(10 * S);
        sim.expect(
            sim.writable() == vec![p] && sim.checks.writer_changes == changes,
            || "losing the only standby disturbed the primary".into(),
        );
        let after = sim.acked_on(p);
        if sync.strict {
            sim.expect(after == acked && protects(&sim, p), || {
                format!("strict: {after:X} acknowledged without the standby (had {acked:X}), or the key stopped trusting it")
            });
        } else {
            sim.expect(after > acked && !protects(&sim, p), || {
                "not strict: writes did not continue unprotected".into()
            });
        }
        sim.crash(p);
        let down = sim.rng().ms(0, 3000);
        sim.run_for(down);
        sim.restart(r);
        if sync.strict {
            let np = wait_new_primary(&mut sim, p, SETTLE_BOUND);
            sim.expect(np == r, || "the trusted standby was not promoted".into());
            let last = sim.checks.promotions.last();
            sim.expect(last.is_some_and(|x| x.acked == acked), || {
                format!(
                    "the promotion did not see the commits acknowledged before the loss: {last:?}"
                )
            });
        } else {
            sim.run_for(FAILOVER_BOUND + 10 * S);
            sim.expect(sim.writable().is_empty(), || {
                "a standby that was promised nothing was promoted".into()
            });
        }
        sim.restart(p);
        let q = settles_or_old_primary_diverged(&mut sim, p);
        let np = sim.writable();
        sim.expect(q || sync.strict || np == vec![p], || {
            format!("not strict: the old primary did not take its key back ({np:?})")
        });
    }
}

/// Quorum mode (`ANY 1` of two standbys, k = 1 < |S| = 2): the primary
/// dies while its two standbys cannot reach each other (a witness keeps
/// the store up). Each may lack a commit only the other acknowledged, so
/// neither is promoted until it has the other's position; once the cut
/// heals, the one that is at least as far is.
#[test]
fn sync_quorum_peer_unreachable() {
    let quorum: Vec<SyncSettings> = sync_modes()
        .into_iter()
        .filter(|m| m.mode == SynchronousMode::Quorum)
        .collect();
    for seed in seeds() {
        for sync in &quorum {
            let label = "sync_quorum_peer_unreachable";
            let (mut sim, p) = formed_sync(label, seed, 3, true, false, *sync);
            let set = sync_set(&sim);
            let (b, c) = ((p + 1) % 3, (p + 2) % 3);
            sim.cut(b, c);
            sim.crash(p);
            sim.run_for(FAILOVER_BOUND + 10 * S);
            sim.expect(sim.writable().is_empty(), || {
                "a quorum member was promoted without its peer's position".into()
            });
            sim.heal();
            let np = wait_new_primary(&mut sim, p, FAILOVER_BOUND);
            promoted_from_set(&sim, &set, np);
            sim.restart(p);
            settles_or_old_primary_diverged(&mut sim, p);
        }
    }
}
