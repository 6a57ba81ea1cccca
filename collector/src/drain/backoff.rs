//! Jittered exponential backoff.
//!
//! Invariants: the delay for attempt `n` (0-based) is drawn uniformly from `[d/2, d]` where
//! `d = min(initial · 2ⁿ, max)` ("equal jitter"), so it is never 0, never above `max`, and many
//! collectors that lost the same receiver at the same time do not come back in lockstep.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Backoff settings of one drain (`retryInitialMs` … `retryMaxMs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay (before jitter).
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// Settings from milliseconds; `max` is raised to `initial` if lower.
    pub fn from_millis(initial: u64, max: u64) -> Self {
        Self {
            initial: Duration::from_millis(initial.max(1)),
            max: Duration::from_millis(max.max(initial).max(1)),
        }
    }

    /// The cap for attempt `attempt` before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The jittered delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(random() % spread.saturating_add(1))
    }
}

/// A fast, non-cryptographic random number (SplitMix64 over a process-wide counter seeded from the
/// clock): good enough to spread retries, and needs no extra crate.
fn random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut seed = STATE.load(Ordering::Relaxed);
    if seed == 0 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let _ = STATE.compare_exchange(0, now | 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    seed = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter() {
        let b = Backoff::from_millis(100, 1000);
        let ceilings: Vec<u64> = (0..6).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(
            b.ceiling(200),
            Duration::from_millis(1000),
            "no overflow for huge attempt numbers"
        );
        for attempt in 0..10 {
            for _ in 0..50 {
                let d = b.delay(attempt);
                let c = b.ceiling(attempt);
                assert!(
                    d >= c / 2 && d <= c,
                    "attempt {attempt}: {d:?} outside [{:?}, {c:?}]",
                    c / 2
                );
            }
        }
        let spread: std::collections::BTreeSet<Duration> = (0..20).map(|_| b.delay(5)).collect();
        assert!(spread.len() > 1, "delays are jittered");
    }
}
