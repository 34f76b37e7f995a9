//! Log a repeated complaint once per period: a peer that retries ten times
//! a second with a wrong secret or certificate must not flood the log.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often one complaint about one subject is logged.
pub const PERIOD: Duration = Duration::from_secs(10);

/// Remembers when each complaint was last logged.
pub struct Throttle<K> {
    last: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq> Default for Throttle<K> {
    fn default() -> Self {
        Throttle {
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Throttle<K> {
    /// Whether `key` should be logged now; if so, the period starts again.
    pub fn ready(&self, key: K) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < PERIOD)
        {
            return false;
        }
        // Subjects come and go (client ports): forget the stale ones.
        if last.len() > 1024 {
            last.retain(|_, t| now.duration_since(*t) < PERIOD);
        }
        last.insert(key, now);
        true
    }
}
