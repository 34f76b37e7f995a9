//! Simulated time: one true clock for the world, and per node a skewed,
//! drifting local clock (what the node's `CLOCK_BOOTTIME` would read).
//! Plus the seeded random source every choice in the simulation draws from.

use pgkeel::clock::BootInstant;

/// True time in nanoseconds since the simulation started.
pub type T = u64;
pub const MS: T = 1_000_000;
pub const S: T = 1_000_000_000;

/// A node's boot-time clock: `local = offset + true * (1 + ppm / 1e6)`.
/// It never stops, also while the node's agent is paused (CLOCK_BOOTTIME
/// counts through a freeze).
#[derive(Debug, Clone, Copy)]
pub struct NodeClock {
    pub offset: u64,
    pub ppm: i64,
}

impl NodeClock {
    /// The local reading at true time `t`.
    pub fn local(&self, t: T) -> BootInstant {
        let scaled = i128::from(t) * (1_000_000 + i128::from(self.ppm)) / 1_000_000;
        BootInstant::from_nanos(self.offset + u64::try_from(scaled).unwrap_or(0))
    }

    /// The first true instant at which the local clock reads `local` or
    /// more.
    pub fn true_at(&self, local: BootInstant) -> T {
        let rel = i128::from(local.as_nanos().saturating_sub(self.offset));
        let rate = 1_000_000 + i128::from(self.ppm);
        let t = (rel * 1_000_000 + rate - 1) / rate;
        u64::try_from(t).unwrap_or(u64::MAX)
    }
}

/// SplitMix64: small, fast, and the same on every platform and version,
/// so a seed replays exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A duration uniform in `lo..=hi` milliseconds, in nanoseconds, at
    /// microsecond resolution.
    pub fn ms(&mut self, lo: u64, hi: u64) -> T {
        self.range(lo * 1000, hi * 1000) * 1000
    }

    pub fn pick<'a, X>(&mut self, xs: &'a [X]) -> Option<&'a X> {
        if xs.is_empty() {
            return None;
        }
        let i = self.range(0, xs.len() as u64 - 1) as usize;
        xs.get(i)
    }
}

#[test]
fn local_and_true_time_invert() {
    for ppm in [-1000, -1, 0, 1, 1000] {
        let c = NodeClock {
            offset: 123_456_789,
            ppm,
        };
        for t in [0, 1, 999, 5 * S + 17, 300 * S] {
            let l = c.local(t);
            let back = c.true_at(l);
            assert!(back <= t, "ppm {ppm} t {t}: back {back}");
            assert!(c.local(back) >= l);
        }
    }
}
