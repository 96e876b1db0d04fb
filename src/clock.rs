//! The time the TTL caches go by (tags, tokens, job outcomes): the monotonic clock, plus an
//! offset that only tests move. Tests cannot pause tokio's clock while a real registry and
//! real archives answer over loopback (paused time fires every timeout at once), so they
//! advance this offset instead of sleeping past a TTL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A shared clock; clones see the same time.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Nanoseconds added to the monotonic clock.
    offset: Arc<AtomicU64>,
}

impl Clock {
    /// The monotonic clock, as every caller but a test uses it.
    pub fn new() -> Clock {
        Clock::default()
    }

    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.offset.load(Ordering::Relaxed))
    }

    /// The wall clock, moved by the same offset: for TTLs of what is written to disk.
    pub fn system_now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_nanos(self.offset.load(Ordering::Relaxed))
    }

    /// The time since `earlier` (a value of [`Clock::now`]); zero if it lies ahead.
    pub fn since(&self, earlier: Instant) -> Duration {
        self.now().saturating_duration_since(earlier)
    }

    /// Moves this clock (and its clones) forward by `by`: for tests of expiry.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset.fetch_add(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advanced_clock_moves_its_clones_too() {
        let clock = Clock::new();
        let start = clock.now();
        let clone = clock.clone();
        clock.advance(Duration::from_secs(3600));
        assert!(clone.since(start) >= Duration::from_secs(3600));
        assert!(Clock::new().since(start) < Duration::from_secs(3600));
    }
}
