//! Two counts over a sliding time window, in atomics: what a failure-rate trip and a
//! retry budget both need.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

/// A pair of counters (say requests and failures) over the last `window`, kept as ten
/// buckets so that old counts leave the window a tenth at a time. Lock-free; the clock is
/// tokio's, so tests on paused time are exact. Concurrent updates at a bucket boundary may
/// lose a count: fine for the rates it feeds.
#[derive(Debug)]
pub struct SlidingCounts {
    epoch: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which period (`elapsed / bucket_nanos + 1`) the counts are of; 0: never used.
    period: AtomicU64,
    first: AtomicU32,
    second: AtomicU32,
}

impl SlidingCounts {
    /// Empty counts over `window`.
    pub fn new(window: Duration) -> Self {
        let bucket_nanos = u64::try_from((window / BUCKETS as u32).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            epoch: Instant::now(),
            bucket_nanos,
            buckets: Default::default(),
        }
    }

    fn period(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(elapsed).unwrap_or(u64::MAX) / self.bucket_nanos + 1
    }

    /// Adds to both counts now.
    pub fn add(&self, first: u32, second: u32) {
        self.add_at(Instant::now(), first, second);
    }

    /// Adds to both counts at `now`, a time the caller has already read (a clock read
    /// costs as much as the rest of an add).
    pub fn add_at(&self, now: Instant, first: u32, second: u32) {
        let period = self.period(now);
        let bucket = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = bucket.period.load(Ordering::Acquire);
        if seen != period
            && bucket
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.first.store(0, Ordering::Release);
            bucket.second.store(0, Ordering::Release);
        }
        if first > 0 {
            bucket.first.fetch_add(first, Ordering::AcqRel);
        }
        if second > 0 {
            bucket.second.fetch_add(second, Ordering::AcqRel);
        }
    }

    /// Both counts over the window ending now.
    pub fn sums(&self) -> (u64, u64) {
        let period = self.period(Instant::now());
        let (mut first, mut second) = (0, 0);
        for b in &self.buckets {
            let p = b.period.load(Ordering::Acquire);
            if p != 0 && p + (BUCKETS as u64) > period {
                first += u64::from(b.first.load(Ordering::Acquire));
                second += u64::from(b.second.load(Ordering::Acquire));
            }
        }
        (first, second)
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for b in &self.buckets {
            b.period.store(0, Ordering::Release);
            b.first.store(0, Ordering::Release);
            b.second.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_leave_the_window_a_bucket_at_a_time() {
        let w = SlidingCounts::new(Duration::from_secs(10));
        w.add(3, 1);
        tokio::time::advance(Duration::from_secs(5)).await;
        w.add(2, 0);
        assert_eq!(w.sums(), (5, 1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(w.sums(), (2, 0), "the first bucket left the window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(w.sums(), (0, 0));
        w.add(1, 1);
        w.clear();
        assert_eq!(w.sums(), (0, 0));
    }
}
