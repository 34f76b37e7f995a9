//! Synchronous replication: which standbys PostgreSQL waits for
//! (`synchronous_standby_names`) and who may be promoted (the `sync` key).
//!
//! The promise: in synchronous mode a promoted node holds every commit the
//! primary acknowledged. The `sync` key states it as "every acknowledged
//! commit is on the key's `leader` and on at least `quorum` (k) members of
//! its set S". A commit acknowledged under `synchronous_standby_names`
//! = `FIRST n (L)` or `ANY n (L)` is on at least `n − |L \ S|` members of
//! S ([`holders`]); `FIRST` is counted like `ANY`, since which n of L
//! answer depends on who is connected.
//!
//! The primary changes the two in an order where the key's promise holds
//! after every single step ([`next_step`]), each step waiting for the one
//! before to be applied (the key seen in a store view, the setting seen in
//! a probe):
//! 1. **shrink the key**: drop the members the next setting leaves out and
//!    lower k to what both the setting in force and the next one guarantee
//!    (a dropped member may have been one of the k holders: k falls by one
//!    per member dropped);
//! 2. **change PostgreSQL** to the next setting (it guarantees at least
//!    what the shrunk key promises);
//! 3. **grow the key**: once the new setting is in force (seen by a probe
//!    *after* the one that first showed it), take the primary's position
//!    then as the mark; a listed standby counts once PostgreSQL reports it
//!    `sync`/`quorum` *and* its flush position reached the mark, so it
//!    holds every commit acknowledged before the change and is waited for
//!    after it. The key becomes S ∪ C with k = what those members hold.
//!
//! Adding a standby is therefore PostgreSQL first, key second; removing
//! one, key first, PostgreSQL second (the ordering), and changing
//! k and the set together is the same three steps (a lower k or a smaller
//! set is step 1, a higher k or a bigger set is step 3).
//!
//! A candidate ([`sync_allows`], [`quorum_short`]) must be the key's
//! leader or in S with k ≥ 1, and, unless k = |S| (mode `on`: every member
//! holds everything), have the WAL positions of |S| − k + 1 members of S,
//! itself included, and be at least as far as each: any |S| − k + 1
//! members include a holder of each acknowledged commit. An empty set (or
//! k = 0) means nobody is promoted automatically.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::SynchronousMode;

use super::names::sanitize_slot_name;
use super::view::{ClusterView, Lsn, MemberInfo, PgState, SyncKey, SyncSettings};

/// The name listed when strict mode has no standby to wait for: no
/// standby's `application_name` can match it (slot names have no `-`), so
/// commits wait until pgkeel lists a real one.
pub const NO_STANDBY: &str = "pgkeel-no-standby";

/// What `synchronous_standby_names` asks: each commit waits for `num` of
/// `names` (standbys' `application_name`, i.e. their slot names).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncNames {
    /// `ANY` (quorum) rather than `FIRST` (priority).
    pub any: bool,
    /// How many must confirm; 0: asynchronous.
    pub num: u32,
    /// The listed names (`*` matches every standby).
    pub names: BTreeSet<String>,
}

impl SyncNames {
    /// Asynchronous: an empty setting.
    pub fn none() -> SyncNames {
        SyncNames::default()
    }

    /// Whether commits wait for no standby.
    pub fn is_async(&self) -> bool {
        self.num == 0 || self.names.is_empty()
    }

    /// The setting's text, as pgkeel writes it.
    pub fn render(&self) -> String {
        if self.is_async() {
            return String::new();
        }
        let list: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("\"{}\"", n.replace('"', "\"\"")))
            .collect();
        let method = if self.any { "ANY" } else { "FIRST" };
        format!("{method} {} ({})", self.num, list.join(", "))
    }

    /// Reads a setting back: the forms PostgreSQL accepts (`FIRST n (...)`,
    /// `ANY n (...)`, `n (...)`, a plain list, `*`, empty). `None` for text
    /// it cannot read, which the caller treats as promising nothing.
    pub fn parse(text: &str) -> Option<SyncNames> {
        let text = text.trim();
        if text.is_empty() {
            return Some(SyncNames::none());
        }
        let (any, num, list) = match text.find('(') {
            Some(open) => {
                let head = text[..open].trim();
                let list = text[open + 1..].trim_end().strip_suffix(')')?;
                let mut words = head.split_whitespace();
                let (any, num) = match (words.next(), words.next(), words.next()) {
                    (Some(m), Some(n), None) if m.eq_ignore_ascii_case("any") => {
                        (true, n.parse().ok()?)
                    }
                    (Some(m), Some(n), None) if m.eq_ignore_ascii_case("first") => {
                        (false, n.parse().ok()?)
                    }
                    (Some(n), None, None) => (false, n.parse().ok()?),
                    _ => return None,
                };
                (any, num, list)
            }
            None => (false, 1, text),
        };
        let mut names = BTreeSet::new();
        for item in list.split(',') {
            let item = item.trim();
            let name = match item.strip_prefix('"') {
                Some(rest) => rest.strip_suffix('"')?.replace("\"\"", "\""),
                // Unquoted names are folded to lower case, as PostgreSQL does.
                None => item.to_ascii_lowercase(),
            };
            if name.is_empty() {
                return None;
            }
            names.insert(name);
        }
        Some(SyncNames { any, num, names })
    }
}

/// How many members of `set` (slot names) hold each commit acknowledged
/// under `names`, at the least.
pub fn holders(names: &SyncNames, set: &BTreeSet<String>) -> u32 {
    if names.is_async() || names.names.contains("*") {
        return 0;
    }
    let outside = names.names.iter().filter(|n| !set.contains(*n)).count();
    names
        .num
        .saturating_sub(u32::try_from(outside).unwrap_or(u32::MAX))
}

/// The next change the primary makes, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Write the `sync` key (guarded on our leader key).
    WriteKey {
        /// The synchronous set, by member name.
        members: BTreeSet<String>,
        /// k.
        quorum: u32,
    },
    /// Set `synchronous_standby_names` to this and reload.
    SetNames(SyncNames),
}

/// What [`next_step`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct SyncInputs<'a> {
    /// This node (the primary).
    pub me: &'a str,
    /// The dynamic config's synchronous settings.
    pub settings: SyncSettings,
    /// The `sync` key.
    pub key: Option<&'a SyncKey>,
    /// The member keys.
    pub members: &'a BTreeMap<String, MemberInfo>,
    /// A fresh probe of our primary.
    pub pg: &'a PgState,
    /// The primary's position once the setting in force was seen by a
    /// second probe; `None` until then.
    pub mark: Option<Lsn>,
}

/// A standby that could be made synchronous, as the primary sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    member: String,
    slot: String,
    lag: u64,
    healthy: bool,
    in_key: bool,
}

/// The next step for the primary, or `None` when setting and key are
/// where they should be (or a step must first be seen applied).
pub fn next_step(i: &SyncInputs<'_>) -> Option<SyncStep> {
    let current = SyncNames::parse(i.pg.sync_standby_names.as_deref()?).unwrap_or_default();
    if !i.settings.enabled() {
        if !current.is_async() {
            return Some(SyncStep::SetNames(SyncNames::none()));
        }
        // Nobody reads the key in asynchronous mode; empty it so it
        // promises nothing stale should the mode come back.
        let stale = i
            .key
            .is_some_and(|k| k.leader != i.me || !k.members.is_empty() || k.quorum > 0);
        return stale.then(|| SyncStep::WriteKey {
            members: BTreeSet::new(),
            quorum: 0,
        });
    }
    // A key from another primary (we were just promoted) or none yet: our
    // own acknowledged commits are promised to nobody yet.
    let Some(key) = i.key.filter(|k| k.leader == i.me) else {
        return Some(SyncStep::WriteKey {
            members: BTreeSet::new(),
            quorum: 0,
        });
    };
    let target = target(i, key);
    let slot_of = |m: &String| sanitize_slot_name(m);
    let slots = |set: &BTreeSet<String>| set.iter().map(slot_of).collect::<BTreeSet<_>>();

    // 1. Shrink the key to what both settings guarantee.
    let kept: BTreeSet<String> = key
        .members
        .iter()
        .filter(|m| target.names.contains(&slot_of(m)))
        .cloned()
        .collect();
    let dropped = u32::try_from(key.members.len() - kept.len()).unwrap_or(u32::MAX);
    let kept_slots = slots(&kept);
    let k = key
        .quorum
        .saturating_sub(dropped)
        .min(holders(&current, &kept_slots))
        .min(holders(&target, &kept_slots));
    if kept != key.members || k != key.quorum {
        return Some(SyncStep::WriteKey {
            members: kept,
            quorum: k,
        });
    }
    // 2. PostgreSQL.
    if !same_setting(&current, &target) {
        return Some(SyncStep::SetNames(target));
    }
    // 3. Grow: standbys PostgreSQL waits for and that hold the mark.
    let mark = i.mark?;
    let counted: BTreeSet<String> = i
        .members
        .keys()
        .filter(|m| m.as_str() != i.me && target.names.contains(&slot_of(m)))
        .filter(|m| {
            let slot = slot_of(m);
            i.pg.replication.iter().any(|r| {
                r.application_name == slot
                    && matches!(r.sync_state.as_str(), "sync" | "quorum")
                    && r.flush_lsn.is_some_and(|f| f >= mark)
            })
        })
        .cloned()
        .collect();
    let grown: BTreeSet<String> = key.members.union(&counted).cloned().collect();
    let also_in_key = u32::try_from(key.members.intersection(&counted).count()).unwrap_or(0);
    let counted_n = u32::try_from(counted.len()).unwrap_or(u32::MAX);
    // Earlier commits: every counted member holds them all, and k members
    // of the old set each (some of them may be counted already).
    let earlier = counted_n.saturating_add(key.quorum.saturating_sub(also_in_key));
    let k = earlier.min(holders(&target, &slots(&grown)));
    (grown != key.members || k > key.quorum).then_some(SyncStep::WriteKey {
        members: grown,
        quorum: k,
    })
}

/// Whether two settings ask the same of PostgreSQL.
fn same_setting(a: &SyncNames, b: &SyncNames) -> bool {
    (a.is_async() && b.is_async()) || a == b
}

/// The setting the primary works towards.
fn target(i: &SyncInputs<'_>, key: &SyncKey) -> SyncNames {
    let quorum = i.settings.mode == SynchronousMode::Quorum;
    let n = usize::try_from(i.settings.node_count.max(1)).unwrap_or(1);
    let mut candidates = candidates(i, key);
    candidates.sort_by(|a, b| {
        (!a.healthy, !a.in_key, a.lag, &a.member).cmp(&(!b.healthy, !b.in_key, b.lag, &b.member))
    });
    let chosen: Vec<&Candidate> = if quorum {
        // Every healthy one, and lagging ones only to reach n.
        let healthy = candidates.iter().filter(|c| c.healthy).count();
        candidates.iter().take(healthy.max(n)).collect()
    } else {
        candidates.iter().take(n).collect()
    };
    if !chosen.is_empty() {
        let names: BTreeSet<String> = chosen.iter().map(|c| c.slot.clone()).collect();
        let count = u32::try_from(names.len()).unwrap_or(u32::MAX);
        return SyncNames {
            any: quorum,
            num: if quorum {
                count.min(i.settings.node_count.max(1))
            } else {
                count
            },
            names,
        };
    }
    if !i.settings.strict {
        return SyncNames::none();
    }
    // Strict, nobody to wait for: keep waiting for whom the key trusts
    // (they hold everything; commits wait until one is back), else for
    // any member that may be synchronous.
    if key.quorum > 0 && !key.members.is_empty() {
        return SyncNames {
            any: quorum,
            num: key.quorum,
            names: key.members.iter().map(|m| sanitize_slot_name(m)).collect(),
        };
    }
    any_standby(i.me, i.members)
}

/// Strict mode's setting when nobody is trusted yet: one of the members
/// that may be synchronous must confirm each commit (a name no standby has
/// when there is none, so commits wait).
fn any_standby(me: &str, members: &BTreeMap<String, MemberInfo>) -> SyncNames {
    let mut names: BTreeSet<String> = members
        .iter()
        .filter(|(m, info)| m.as_str() != me && !info.tags.nosync)
        .map(|(m, _)| sanitize_slot_name(m))
        .collect();
    if names.is_empty() {
        names.insert(NO_STANDBY.to_string());
    }
    SyncNames {
        any: true,
        num: 1,
        names,
    }
}

/// The streaming standbys that may be synchronous: a member key that is
/// not ours, not tagged `nosync`, whose tags allow promoting it (a
/// synchronous standby that may never be promoted protects nothing at a
/// failover), a `pg_stat_replication` row under its slot name in state
/// `streaming`.
fn candidates(i: &SyncInputs<'_>, key: &SyncKey) -> Vec<Candidate> {
    let primary = i.pg.wal_lsn.unwrap_or_default();
    i.members
        .iter()
        .filter(|(m, info)| m.as_str() != i.me && !info.tags.nosync && info.tags.may_fail_over())
        .filter_map(|(m, _)| {
            let slot = sanitize_slot_name(m);
            let row =
                i.pg.replication
                    .iter()
                    .find(|r| r.application_name == slot && r.state == "streaming")?;
            let lag = row
                .flush_lsn
                .map_or(u64::MAX, |f| primary.0.saturating_sub(f.0));
            Some(Candidate {
                member: m.clone(),
                slot,
                lag,
                healthy: i.settings.max_lag.is_none_or(|max| lag <= max),
                in_key: key.contains(m),
            })
        })
        .collect()
}

/// Why synchronous mode does not let `name` be promoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncBlock {
    /// No `sync` key (synchronous mode was just turned on, or the first
    /// primary has not written one).
    NoKey,
    /// Not the key's leader and not in its set.
    NotInSet,
    /// The set promises nothing yet (k = 0).
    NothingPromised,
}

impl std::fmt::Display for SyncBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncBlock::NoKey => {
                "synchronous mode is on but no primary has written the sync key yet"
            }
            SyncBlock::NotInSet => "not a synchronous standby",
            SyncBlock::NothingPromised => {
                "the synchronous set does not yet hold every acknowledged commit"
            }
        })
    }
}

/// Whether synchronous mode lets `name` be promoted (in asynchronous mode
/// always). The key's leader holds everything it acknowledged.
pub fn sync_allows(view: &ClusterView, name: &str) -> Result<(), SyncBlock> {
    if !view.config.sync.enabled() {
        return Ok(());
    }
    let key = view.sync.as_deref().ok_or(SyncBlock::NoKey)?;
    if key.leader == name {
        return Ok(());
    }
    if !key.contains(name) {
        return Err(SyncBlock::NotInSet);
    }
    if key.quorum == 0 {
        return Err(SyncBlock::NothingPromised);
    }
    Ok(())
}

/// In quorum mode, how many more members of the set must have answered
/// before `me` can be sure it holds every acknowledged commit: |S| − k + 1
/// answers (its own included) are needed. `answered` are the members that
/// answered with a standby position (the caller has checked none of them
/// is further ahead). 0 when enough answered, or when no count is needed
/// (asynchronous mode, k = |S|, or `me` is the key's leader).
pub fn quorum_short(view: &ClusterView, me: &str, answered: &BTreeSet<String>) -> usize {
    let Some(key) = view.sync.as_deref().filter(|_| view.config.sync.enabled()) else {
        return 0;
    };
    if key.leader == me {
        return 0;
    }
    let size = key.members.len();
    let k = usize::try_from(key.quorum).unwrap_or(usize::MAX).min(size);
    let needed = size - k + 1;
    let have = key
        .members
        .iter()
        .filter(|m| m.as_str() == me || answered.contains(*m))
        .count();
    needed.saturating_sub(have)
}

/// How the primary's writes stand, for `list`, `/cluster`, a metric and
/// the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Asynchronous mode.
    Off,
    /// Every acknowledged commit is on a synchronous standby too.
    Protected,
    /// Synchronous mode, no synchronous standby: writes continue without
    /// one (not strict).
    Unprotected,
    /// Strict, no synchronous standby: commits wait for one.
    Blocking,
}

impl Protection {
    /// The word shown.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protection::Off => "off",
            Protection::Protected => "protected",
            Protection::Unprotected => "unprotected",
            Protection::Blocking => "blocking",
        }
    }
}

/// How the current primary's writes stand, from the store alone: the
/// `sync` key of the leader key's holder.
pub fn protection(view: &ClusterView) -> Protection {
    if !view.config.sync.enabled() {
        return Protection::Off;
    }
    let leader = view.leader.as_ref().map(|l| l.holder.as_str());
    let promised = view
        .sync
        .as_deref()
        .is_some_and(|k| Some(k.leader.as_str()) == leader && k.quorum > 0);
    match (promised, view.config.sync.strict) {
        (true, _) => Protection::Protected,
        (false, true) => Protection::Blocking,
        (false, false) => Protection::Unprotected,
    }
}

/// The setting in force as the primary's probes saw it, for the mark of
/// step 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyncMark {
    /// The setting's text.
    text: String,
    /// The probe that first showed it.
    first_seen: crate::clock::BootInstant,
    /// The primary's position in a later probe that still showed it.
    lsn: Option<Lsn>,
}

impl super::Ha {
    /// The primary's synchronous replication step (see the module doc),
    /// on a fresh probe of our running primary while we hold the key.
    pub(super) fn manage_sync(
        &mut self,
        now: crate::clock::BootInstant,
        pg: &PgState,
        out: &mut Vec<super::Action>,
    ) {
        use super::actions::{Action, ActionKind};
        let Some(view) = self.view.as_ref() else {
            return;
        };
        let key = view.sync.as_deref();
        let base = key.map(|k| k.mod_revision);
        // A written key is waited for in a view before the next step.
        if self.sync_written.is_some_and(|b| b == base) {
            return;
        }
        self.sync_written = None;
        if self.inflight.contains_key(&ActionKind::WriteSync) {
            return;
        }
        // The mark: the position in the second probe that shows the text.
        let text = pg.sync_standby_names.clone();
        let probed_at = self.last_probe;
        match (&mut self.sync_mark, text, probed_at) {
            (Some(m), Some(t), Some(at)) if m.text == t => {
                if m.lsn.is_none() && at > m.first_seen {
                    m.lsn = pg.wal_lsn;
                }
            }
            (slot, Some(t), Some(at)) => {
                *slot = Some(SyncMark {
                    text: t,
                    first_seen: at,
                    lsn: None,
                })
            }
            (slot, _, _) => *slot = None,
        }
        let inputs = SyncInputs {
            me: &self.node.name,
            settings: view.config.sync,
            key,
            members: &view.members,
            pg,
            mark: self.sync_mark.as_ref().and_then(|m| m.lsn),
        };
        let Some(step) = next_step(&inputs) else {
            return;
        };
        match step {
            SyncStep::WriteKey { members, quorum } => {
                let Some(lease) = self.lease.map(|l| l.id) else {
                    return;
                };
                let write = Action::WriteSync {
                    lease,
                    members: members.into_iter().collect(),
                    quorum,
                    base,
                };
                self.emit(now, out, write);
            }
            SyncStep::SetNames(names) => {
                let value = names.render();
                self.emit(now, out, Action::SetSyncStandbyNames { value });
            }
        }
    }

    /// Synchronous mode: a standby about to be promoted first makes the
    /// `sync` key its own, promising nothing yet, so no commit it
    /// acknowledges before it has a synchronous standby can be lost to
    /// the promotion of a member of the old set. Returns whether the
    /// promotion must wait (the write is out, or not yet seen in a view).
    pub(super) fn claim_sync_before_promote(
        &mut self,
        now: crate::clock::BootInstant,
        out: &mut Vec<super::Action>,
    ) -> bool {
        use super::actions::ActionKind;
        let Some(view) = self.view.as_ref() else {
            return false;
        };
        if !view.config.sync.enabled() {
            return false;
        }
        let key = view.sync.as_deref();
        if key.is_some_and(|k| k.leader == self.node.name) {
            return false;
        }
        let base = key.map(|k| k.mod_revision);
        if self.sync_written == Some(base) || self.inflight.contains_key(&ActionKind::WriteSync) {
            return true;
        }
        let Some(lease) = self.lease.map(|l| l.id) else {
            return true;
        };
        let claim = super::Action::WriteSync {
            lease,
            members: Vec::new(),
            quorum: 0,
            base,
        };
        self.emit(now, out, claim);
        true
    }

    /// Strict mode: a standby about to be promoted first lists whom its
    /// commits must wait for, so it never acknowledges one alone. Returns
    /// whether the promotion must wait.
    pub(super) fn strict_before_promote(
        &mut self,
        now: crate::clock::BootInstant,
        pg: &PgState,
        out: &mut Vec<super::Action>,
    ) -> bool {
        let Some(view) = self.view.as_ref() else {
            return false;
        };
        let settings = view.config.sync;
        if !(settings.enabled() && settings.strict) {
            return false;
        }
        let current = pg
            .sync_standby_names
            .as_deref()
            .and_then(SyncNames::parse)
            .unwrap_or_default();
        if !current.is_async() {
            return false;
        }
        let value = any_standby(&self.node.name, &view.members).render();
        self.emit(now, out, super::Action::SetSyncStandbyNames { value });
        true
    }
}

/// Patroni's role word for `name` when it is in the current leader's
/// synchronous set: `sync_standby` (mode on) or `quorum_standby`.
pub fn standby_role(view: &ClusterView, name: &str) -> Option<&'static str> {
    let leader = view.leader.as_ref()?;
    let key = view.sync.as_deref()?;
    if !view.config.sync.enabled() || key.leader != leader.holder || !key.contains(name) {
        return None;
    }
    Some(match view.config.sync.mode {
        SynchronousMode::Quorum => "quorum_standby",
        _ => "sync_standby",
    })
}

/// One line on synchronous replication for `pgkeelctl list` and the log:
/// the mode, who is synchronous, and whether writes are protected and
/// failover possible. `None` in asynchronous mode.
pub fn summary(view: &ClusterView) -> Option<String> {
    let settings = view.config.sync;
    if !settings.enabled() {
        return None;
    }
    let mode = match (settings.mode, settings.strict) {
        (SynchronousMode::Quorum, true) => "quorum, strict",
        (SynchronousMode::Quorum, false) => "quorum",
        (_, true) => "on, strict",
        (_, false) => "on",
    };
    let key = view.sync.as_deref();
    let detail = match protection(view) {
        Protection::Protected => {
            let k = key.map_or(0, |k| k.quorum);
            let set: Vec<&str> = key
                .map(|k| k.members.iter().map(String::as_str).collect())
                .unwrap_or_default();
            if settings.mode == SynchronousMode::Quorum {
                format!("each commit on {k} of {}", set.join(", "))
            } else {
                format!("synchronous: {}", set.join(", "))
            }
        }
        Protection::Unprotected => "no synchronous standby: writes are NOT protected and nobody is promoted automatically".to_string(),
        Protection::Blocking => "no synchronous standby: commits wait for one (strict) and nobody is promoted automatically".to_string(),
        Protection::Off => return None,
    };
    Some(format!("Synchronous mode: {mode} — {detail}"))
}
