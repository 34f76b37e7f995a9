//! The lease holder's clock: `CLOCK_BOOTTIME`.
//!
//! A lease holder must never under-count elapsed time, or it would believe
//! in its lease after the Raft leader has already let it go. `Instant`
//! (CLOCK_MONOTONIC) stops while the machine is suspended or a VM is paused;
//! CLOCK_BOOTTIME keeps counting, so a holder that wakes from a pause sees
//! that its lease has run out (DESIGN.md, "The leader key and time").
//!
//! The clock sits behind [`Clock`] so deterministic tests can give each
//! simulated node its own time.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point on the boot-time clock, in nanoseconds since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(u64);

impl BootInstant {
    pub const fn from_nanos(nanos: u64) -> Self {
        BootInstant(nanos)
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: BootInstant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl Sub<Duration> for BootInstant {
    type Output = BootInstant;
    fn sub(self, d: Duration) -> BootInstant {
        BootInstant(
            self.0
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

/// A source of boot-time instants.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> BootInstant;
}

/// The real `CLOCK_BOOTTIME`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootClock;

impl Clock for BootClock {
    fn now(&self) -> BootInstant {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; CLOCK_BOOTTIME exists
        // on every Linux since 2.6.39. clock_gettime cannot fail with these
        // arguments, and if it did, `ts` stays zero, which only makes the
        // holder's deadline earlier (the safe side).
        unsafe {
            libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
        }
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        BootInstant(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_advances_and_arithmetic_saturates() {
        let a = BootClock.now();
        std::thread::sleep(Duration::from_millis(5));
        let b = BootClock.now();
        assert!(b.saturating_since(a) >= Duration::from_millis(5));
        assert_eq!(a.saturating_since(b), Duration::ZERO);
        assert_eq!(
            BootInstant::from_nanos(5) - Duration::from_secs(1),
            BootInstant::from_nanos(0)
        );
        assert_eq!(
            BootInstant::from_nanos(u64::MAX) + Duration::from_secs(1),
            BootInstant::from_nanos(u64::MAX)
        );
    }
}
