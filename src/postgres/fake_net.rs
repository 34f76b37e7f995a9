//! [`FakeNet`]: how fake servers reach each other, and streaming between them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::fake::{FakeState, Shared};
use super::real::lock;

/// The fakes that can reach each other, by the `host:port` their
/// connection strings name: how basebackup and streaming find upstreams.
#[derive(Clone, Default)]
pub struct FakeNet(pub(super) Arc<Mutex<BTreeMap<String, Shared>>>);

impl FakeNet {
    /// One round of streaming: every running standby that can follow its
    /// upstream catches up with it (and its slot there advances); one that
    /// cannot is marked `diverged`.
    pub fn replicate(&self) {
        let all: Vec<(String, Shared)> = lock(&self.0)
            .iter()
            .map(|(a, s)| (a.clone(), s.clone()))
            .collect();
        for (_, standby) in &all {
            let snap = lock(standby).clone();
            let Some((to, _, slot)) = snap.upstream.clone() else {
                continue;
            };
            if snap.pid.is_none() || !snap.in_recovery {
                continue;
            }
            let Some((_, upstream)) = all.iter().find(|(a, _)| *a == to) else {
                continue;
            };
            if Arc::ptr_eq(upstream, standby) {
                continue;
            }
            let up = lock(upstream).clone();
            if up.pid.is_none() {
                continue;
            }
            let can_follow = can_follow(&snap, &up);
            {
                let mut st = lock(standby);
                if !can_follow {
                    st.diverged = true;
                    st.streaming = false;
                    continue;
                }
                st.diverged = false;
                st.streaming = true;
                st.timeline = up.timeline;
                st.history = up.history.clone();
                st.lsn = up.lsn;
                st.replayed = up.lsn;
            }
            if let Some(slot) = slot {
                if let Some(pos) = lock(upstream).slots.get_mut(&slot) {
                    *pos = Some(up.lsn);
                }
            }
        }
    }
}

/// PostgreSQL's rule: a server can stream from `up` when it is on the same
/// timeline and not ahead, or on an older timeline of `up`'s history and
/// not past the point where `up`'s timeline forked off it.
pub(super) fn can_follow(me: &FakeState, up: &FakeState) -> bool {
    match me.timeline.cmp(&up.timeline) {
        std::cmp::Ordering::Equal => me.lsn <= up.lsn,
        std::cmp::Ordering::Less => up
            .history
            .iter()
            .find(|(tli, _)| *tli == me.timeline)
            .is_some_and(|(_, end)| me.lsn <= *end),
        std::cmp::Ordering::Greater => false,
    }
}
