//! The fencing timer: a dedicated OS thread that stops this node's
//! PostgreSQL when the leader lease runs out, whatever the async runtime is
//! doing.
//!
//! The HA core already asks for [`Action::Fence`](crate::ha::Action::Fence)
//! when `now` reaches `valid_until`, but that request travels through the
//! tokio runtime: a slow fsync, a stuck blocking call or a starved runtime
//! would delay it past the point where another node may be promoted.
//! DESIGN.md requires that the trigger not wait behind blocking I/O, so the
//! driver also tells this thread, after every decision, until when the
//! current PostgreSQL may accept writes ([`Fencer::hold`]) or that it may
//! not be written to under a lease at all ([`Fencer::release`]). The thread
//! sleeps on a condition variable in slices of at most
//! [`MAX_SLEEP`] and, once the deadline passes without a newer one, runs the
//! fence function (stop the postmaster by PID, immediate mode) on its own
//! stack. Both paths are idempotent: stopping a stopped server is nothing.
//!
//! The thread also owns the watchdog ([`watchdog`]): armed before the node
//! may write under a lease, kicked on every renewal with a timeout of what
//! is left of `valid_until` minus the device's reset time, closed with the
//! magic character once PostgreSQL was fenced or the node no longer holds
//! the key. When a kick would leave less than [`MIN_WATCHDOG_TIMEOUT`], the
//! thread fences instead. A hung agent stops kicking, so the machine resets
//! before its lease can expire anywhere; a healthy agent whose renewals
//! fail fences [`WATCHDOG_DISARM_MARGIN`] before the watchdog would fire
//! and then closes it, so a network partition costs a fenced PostgreSQL,
//! not a machine reset.

pub mod watchdog;

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::{BootInstant, Clock};

pub use watchdog::{Watchdog, WatchdogSettings};

/// Stops every postmaster of this node's data directory, blocking. Runs on
/// the fencing thread; must not touch the async runtime.
pub type FenceFn = Box<dyn FnMut() -> Result<(), String> + Send>;

/// The longest the thread sleeps before it looks at the clock again: a
/// condition variable waits on CLOCK_MONOTONIC, which stops during a
/// suspend while the lease (CLOCK_BOOTTIME) does not.
pub const MAX_SLEEP: Duration = Duration::from_millis(50);

/// How soon a failed fence is tried again.
pub const FENCE_RETRY: Duration = Duration::from_millis(100);

/// A kick that would leave the watchdog less than this fences instead.
pub const MIN_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(1);

/// How long before the watchdog would fire a healthy thread fences and
/// closes it.
pub const WATCHDOG_DISARM_MARGIN: Duration = Duration::from_millis(500);

#[derive(Default)]
struct State {
    /// PostgreSQL may accept writes until this instant; fence at it.
    deadline: Option<BootInstant>,
    /// When the armed watchdog fires unless kicked again.
    watchdog_fires: Option<BootInstant>,
    /// Completed fences, for the driver's log and tests.
    fenced: u64,
    /// Bumped by every [`Fencer::hold`] that changes the deadline.
    generation: u64,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    clock: Arc<dyn Clock>,
    watchdog: Mutex<Option<Watchdog>>,
}

/// Handle to the fencing thread. Dropping it stops the thread (without
/// fencing) and closes the watchdog.
pub struct Fencer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fencer {
    /// Starts the thread. `fence` stops the server; `watchdog` is `None`
    /// when `watchdog.mode` is off.
    pub fn spawn(
        clock: Arc<dyn Clock>,
        fence: FenceFn,
        watchdog: Option<Watchdog>,
    ) -> std::io::Result<Fencer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            clock,
            watchdog: Mutex::new(watchdog),
        });
        let thread = std::thread::Builder::new()
            .name("pgkeel-fence".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, fence)
            })?;
        Ok(Fencer {
            shared,
            thread: Some(thread),
        })
    }

    /// PostgreSQL may accept writes under a lease valid until
    /// `valid_until`. The first call arms the watchdog; a call with a later
    /// deadline (a renewal) kicks it. `Err` when the watchdog is required
    /// and cannot be armed or kicked: the caller must not let PostgreSQL
    /// write (the thread fences at once in that case).
    pub fn hold(&self, valid_until: BootInstant) -> Result<(), String> {
        let now = self.shared.clock.now();
        let mut st = lock(&self.shared.state);
        if st.deadline == Some(valid_until) {
            return Ok(());
        }
        // A deadline that already passed is not moved by a later call: the
        // thread fences for it (the driver may be running late).
        if st.deadline.is_some_and(|d| d <= now) {
            return Err("the lease ran out before it was renewed".into());
        }
        let mut result = Ok(());
        let mut deadline = valid_until;
        if let Some(wd) = lock(&self.shared.watchdog).as_mut() {
            let left = valid_until.saturating_since(now);
            match wd.kick(left) {
                Ok(Some(timeout)) => st.watchdog_fires = Some(now + timeout),
                Ok(None) => {}
                Err(e) => {
                    // Too little time left for a watchdog, or a required
                    // device failed: PostgreSQL must stop writing now.
                    tracing::error!("{e}; fencing PostgreSQL");
                    deadline = now;
                    result = Err(e);
                }
            }
        }
        st.deadline = Some(deadline);
        st.generation += 1;
        drop(st);
        self.shared.wake.notify_all();
        result
    }

    /// No lease protects writes on this node any more (it is a standby, or
    /// it was fenced): forget the deadline and close the watchdog. A
    /// deadline that has already passed stays, so the thread still fences.
    pub fn release(&self) {
        let now = self.shared.clock.now();
        let mut st = lock(&self.shared.state);
        if st.deadline.is_some_and(|d| d <= now) {
            return;
        }
        let had = st.deadline.take().is_some() || st.watchdog_fires.is_some();
        st.watchdog_fires = None;
        drop(st);
        if had {
            if let Some(wd) = lock(&self.shared.watchdog).as_mut() {
                wd.disarm();
            }
        }
        self.shared.wake.notify_all();
    }

    /// Checks, before the node races for the leader key, that a required
    /// watchdog can be armed. `Ok` when the watchdog is off or automatic.
    pub fn check_watchdog(&self) -> Result<(), String> {
        match lock(&self.shared.watchdog).as_mut() {
            Some(wd) => wd.check(),
            None => Ok(()),
        }
    }

    /// How many times the thread has fenced.
    pub fn fenced(&self) -> u64 {
        lock(&self.shared.state).fenced
    }
}

impl Drop for Fencer {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(wd) = lock(&self.shared.watchdog).as_mut() {
            wd.disarm();
        }
    }
}

/// When the thread must act: the lease deadline, or just before the armed
/// watchdog would fire.
fn due(st: &State) -> Option<BootInstant> {
    let by_watchdog = st.watchdog_fires.map(|t| t - WATCHDOG_DISARM_MARGIN);
    match (st.deadline, by_watchdog) {
        (Some(d), Some(w)) => Some(d.min(w)),
        (d, w) => d.or(w),
    }
}

fn run(shared: &Shared, mut fence: FenceFn) {
    let mut st = lock(&shared.state);
    loop {
        if st.stop {
            return;
        }
        let now = shared.clock.now();
        let Some(at) = due(&st) else {
            st = shared
                .wake
                .wait_timeout(st, MAX_SLEEP)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            continue;
        };
        if now < at {
            let nap = at.saturating_since(now).min(MAX_SLEEP);
            st = shared
                .wake
                .wait_timeout(st, nap)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
            continue;
        }
        let generation = st.generation;
        drop(st);
        tracing::error!(
            "the leader lease ran out without a renewal: fencing PostgreSQL (immediate stop by PID)"
        );
        let outcome = fence();
        st = lock(&shared.state);
        match outcome {
            Ok(()) => {
                st.fenced += 1;
                // PostgreSQL no longer writes: forget the deadline and close
                // the watchdog, unless a hold arrived while it was fenced.
                if st.generation == generation {
                    st.deadline = None;
                    st.watchdog_fires = None;
                    drop(st);
                    if let Some(wd) = lock(&shared.watchdog).as_mut() {
                        wd.disarm();
                    }
                    st = lock(&shared.state);
                }
            }
            Err(e) => {
                // Keep the watchdog armed: if PostgreSQL cannot be stopped,
                // a reset of the machine is the remaining fence.
                tracing::error!("fencing failed: {e}; trying again");
                drop(st);
                std::thread::sleep(FENCE_RETRY);
                st = lock(&shared.state);
            }
        }
    }
}

#[cfg(test)]
mod tests;
