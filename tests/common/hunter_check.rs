//! The lost-write hunter's verdicts, as pure functions over what it
//! recorded (the write log and the REST samples), so each can be tested on
//! a made-up history without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::writeloop::Ack;

/// One probe of a member's `/primary` health check.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Index into the hunter's member list.
    pub member: usize,
    pub sent: Instant,
    pub got: Instant,
    /// Answered 200: a writable primary under a valid lease.
    pub writable: bool,
}

/// Two members writable at the same moment, according to the REST samples.
///
/// One sample says "writable at some instant between `sent` and `got`".
/// A run of consecutive writable samples of one member is taken to mean
/// writable throughout `[first.got, last.sent]` (between the first and the
/// last answer; a lease cannot move away and back within one ~100 ms
/// sampling period). Two members' such intervals must never intersect.
/// A lone writable sample gives no interval, so this never reports a
/// legitimate handover as an overlap.
pub fn rest_overlaps(samples: &[Sample], names: &[String], origin: Instant) -> Vec<String> {
    let mut spans: Vec<(usize, Instant, Instant)> = Vec::new();
    for member in 0..names.len() {
        let mut own: Vec<&Sample> = samples.iter().filter(|s| s.member == member).collect();
        own.sort_by_key(|s| s.sent);
        for run in own.split(|s| !s.writable) {
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                if first.got < last.sent {
                    spans.push((member, first.got, last.sent));
                }
            }
        }
    }
    let ms = |t: Instant| t.saturating_duration_since(origin).as_millis();
    let mut found = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.0 != b.0 && a.1 < b.2 && b.1 < a.2 {
                found.push(format!(
                    "{} and {} both answered /primary 200 throughout {}..{} ms and {}..{} ms",
                    names[a.0],
                    names[b.0],
                    ms(a.1),
                    ms(a.2),
                    ms(b.1),
                    ms(b.2)
                ));
            }
        }
    }
    found
}

/// Two servers accepting writes at once, according to the client's own
/// write log (one sequential client, so log order is real-time order).
///
/// Each server reign is a (port, timeline) pair. A reign that acknowledges,
/// loses the client to another server, and later acknowledges again was
/// writable while the other one was (it never left its timeline, so it was
/// never demoted in between). And timelines only grow: a write acknowledged
/// on timeline 2 after one on timeline 3 came from a primary that should
/// have been fenced when timeline 3 began.
pub fn log_overlaps(acks: &[Ack]) -> Vec<String> {
    let mut found = Vec::new();
    let mut closed: BTreeSet<(i32, i64)> = BTreeSet::new();
    let mut current: Option<&Ack> = None;
    for a in acks.iter().filter(|a| a.port != 0) {
        let key = (a.port, a.timeline);
        match current {
            Some(c) if (c.port, c.timeline) == key => continue,
            Some(c) => {
                closed.insert((c.port, c.timeline));
                if a.timeline < c.timeline {
                    found.push(format!(
                        "write {} was acknowledged on timeline {} (port {}) after write {} on timeline {} (port {})",
                        a.id, a.timeline, a.port, c.id, c.timeline, c.port
                    ));
                }
            }
            None => {}
        }
        if closed.contains(&key) {
            found.push(format!(
                "port {} on timeline {} acknowledged write {} after another server had taken writes: both were writable",
                a.port, a.timeline, a.id
            ));
        }
        current = Some(a);
    }
    found
}

/// What a fault did, for judging the writes lost across it.
#[derive(Debug, Clone)]
pub struct FaultOutcome {
    /// The fault hit the primary by a crash or a shutdown (not a
    /// switchover), so an asynchronous standby may have missed its tail.
    pub primary_lost: bool,
    /// The PostgreSQL port of the primary before the fault.
    pub old_port: i32,
    /// The new primary's timeline.
    pub timeline: i64,
    /// The new primary's timeline history: parent timeline → the WAL
    /// position (bytes) where the next timeline forked off it.
    pub switch_points: BTreeMap<i64, i64>,
}

/// The writes of `lost` that even a non-lossless mode must not lose;
/// one sentence each. See `tests/lost_writes.rs` for the rule.
pub fn unallowed_losses(
    lost: &[Ack],
    fault: &FaultOutcome,
    synchronous: bool,
    maximum_lag_on_failover: i64,
) -> Vec<String> {
    lost.iter()
        .filter_map(|a| {
            let why = if !fault.primary_lost {
                "the fault was not the loss of the primary (a switchover or a standby's fault)".to_string()
            } else if a.port != fault.old_port {
                format!(
                    "it was acknowledged by port {}, not by the primary that was lost (port {})",
                    a.port, fault.old_port
                )
            } else if synchronous && a.protected {
                "it was acknowledged while a synchronous standby was attached".to_string()
            } else if a.timeline >= fault.timeline {
                format!(
                    "its timeline {} was not abandoned (the primary is on {})",
                    a.timeline, fault.timeline
                )
            } else {
                match fault.switch_points.get(&a.timeline) {
                    None => format!(
                        "its timeline {} is not in the new primary's history",
                        a.timeline
                    ),
                    Some(fork) if a.lsn - fork > maximum_lag_on_failover => format!(
                        "it was {} bytes past the fork at {fork}, beyond maximum_lag_on_failover {maximum_lag_on_failover}",
                        a.lsn - fork
                    ),
                    Some(_) => return None,
                }
            };
            Some(format!("write {} lost: {why}", a.id))
        })
        .collect()
}

/// Parses a `NNNNNNNN.history` file: `parent<TAB>X/Y<TAB>reason` lines
/// into parent timeline → fork position in bytes.
pub fn parse_history(text: &str) -> BTreeMap<i64, i64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let parent = f.next()?.parse().ok()?;
            let (hi, lo) = f.next()?.split_once('/')?;
            let lsn =
                (i64::from_str_radix(hi, 16).ok()? << 32) + i64::from_str_radix(lo, 16).ok()?;
            Some((parent, lsn))
        })
        .collect()
}

/// `d` in seconds with one decimal, for reports.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
