//! Deterministic simulation of the HA core (DESIGN.md, tests tier 2): see
//! `hasim` for the model. Each scenario runs over a fixed list of seeds;
//! `PGKEEL_SIM_SEED=<n>` replays one seed, `PGKEEL_SIM_VERBOSE=1` prints
//! every traced event.

mod hasim;

use hasim::clock::{MS, S, T};
use hasim::{Sim, SimConfig};

const SEEDS: u64 = 20;

fn seeds() -> Vec<u64> {
    match std::env::var("PGKEEL_SIM_SEED") {
        Ok(s) => match s.trim().parse() {
            Ok(seed) => vec![seed],
            Err(_) => {
                panic!("PGKEEL_SIM_SEED={s} is not a number: give one seed from a failure message")
            }
        },
        Err(_) => (1..=SEEDS).collect(),
    }
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
    let mut sim = Sim::new(SimConfig {
        seed,
        data_nodes,
        witness,
        watchdog,
        label: label.to_string(),
    });
    let ok = sim.run_until_pred(90 * S, |s| s.converged().is_some());
    sim.expect(ok, || "the cluster never formed".into());
    // Let it run settled for a while (keepalives, publishes, probes).
    let settle = sim.rng().ms(1000, 4000);
    sim.run_for(settle);
    let p = sim.converged();
    sim.expect(p.is_some(), || {
        "the formed cluster did not stay settled".into()
    });
    (sim, p.unwrap_or(0))
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

/// TTL plus a few seconds: how long a failover may take after a fault.
const FAILOVER_BOUND: T = 5 * S + 10 * S;
const SETTLE_BOUND: T = 90 * S;

#[test]
fn primary_loss() {
    for seed in seeds() {
        let (mut sim, p) = formed("primary_loss", seed, 3, false, false);
        sim.crash(p);
        let np = wait_new_primary(&mut sim, p, FAILOVER_BOUND);
        let down = sim.rng().ms(0, 10_000);
        sim.run_for(down);
        sim.restart(p);
        settles_or_old_primary_diverged(&mut sim, p);
        sim.expect(sim.writable() == vec![np], || {
            "the primary moved again".into()
        });
    }
}

#[test]
fn replica_loss() {
    for seed in seeds() {
        let (mut sim, p) = formed("replica_loss", seed, 3, false, false);
        let r = (p + 1 + (seed as usize % 2)) % 3;
        let changes = sim.checks.writer_changes;
        sim.crash(r);
        sim.run_for(20 * S);
        sim.expect(
            sim.writable() == vec![p] && sim.checks.writer_changes == changes,
            || "losing a replica disturbed the primary".into(),
        );
        sim.restart(r);
        let q = wait_converged(&mut sim, SETTLE_BOUND);
        sim.expect(q == p && sim.checks.writer_changes == changes, || {
            "the primary changed after a replica came back".into()
        });
    }
}

#[test]
fn witness_loss() {
    for seed in seeds() {
        let (mut sim, p) = formed("witness_loss", seed, 2, true, false);
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
    }
}

#[test]
fn primary_isolated() {
    for seed in seeds() {
        let (mut sim, p) = formed("primary_isolated", seed, 3, false, false);
        sim.isolate(p, true, true);
        wait_new_primary(&mut sim, p, FAILOVER_BOUND);
        let cut = sim.rng().ms(0, 10_000);
        sim.run_for(cut);
        sim.heal();
        settles_or_old_primary_diverged(&mut sim, p);
    }
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
fn settles_or_old_primary_diverged(sim: &mut Sim, old: usize) -> bool {
    let ok = sim.run_until_pred(SETTLE_BOUND, |s| s.converged().is_some());
    if ok {
        return false;
    }
    let [p] = sim.writable()[..] else {
        sim.fail("no single primary after healing".into());
    };
    let others_fine = (0..sim.n_data).filter(|j| *j != p && *j != old).all(|j| {
        let n = &sim.nodes[j];
        n.pg.standby() && n.pg.streaming
    });
    let known = !strict() && p != old && others_fine && sim.diverged_from(old, p);
    sim.expect(known, || "the cluster did not settle after healing".into());
    eprintln!(
        "KNOWN LIMITATION {}: seed {}: {} stays a running standby diverged from {}'s timeline",
        sim.cfg.label, sim.cfg.seed, sim.nodes[old].name, sim.nodes[p].name
    );
    true
}

#[test]
fn asymmetric_cut() {
    for seed in seeds() {
        let (mut sim, p) = formed("asymmetric_cut", seed, 3, false, false);
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
                "KNOWN LIMITATION asymmetric_cut: seed {seed}: no failover while {} (Raft leader) cannot receive",
                sim.nodes[p].name
            );
        } else {
            wait_new_primary(&mut sim, p, FAILOVER_BOUND);
        }
        let cut = sim.rng().ms(0, 10_000);
        sim.run_for(cut);
        sim.heal();
        settles_or_old_primary_diverged(&mut sim, p);
    }
}

#[test]
fn quorum_loss() {
    for seed in seeds() {
        let (mut sim, p) = formed("quorum_loss", seed, 3, false, false);
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
}

/// The primary's pgkeel freezes (agent and voter) for longer than the TTL
/// while its PostgreSQL keeps running. With a watchdog (kicked to fire at
/// `valid_until - WATCHDOG_RESET`), the host is reset before any other node
/// can be promoted.
#[test]
fn agent_pause_longer_than_ttl_with_watchdog() {
    for seed in seeds() {
        let (mut sim, p) = formed(
            "agent_pause_longer_than_ttl_with_watchdog",
            seed,
            3,
            false,
            true,
        );
        let d = 5 * S + sim.rng().ms(1000, 5000);
        sim.pause(p, d);
        wait_primary(&mut sim, FAILOVER_BOUND);
        settles_or_old_primary_diverged(&mut sim, p);
    }
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
        settles_or_old_primary_diverged(&mut sim, p);
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
