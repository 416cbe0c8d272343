//! The retry budget: two counters per time bucket, in atomics; tokio's clock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::time::Instant;

use crate::BudgetConfig;

const BUCKETS: usize = 10;

/// Requests and retries over a sliding window of ten buckets.
#[derive(Debug)]
pub(crate) struct Budget {
    config: BudgetConfig,
    epoch: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Default)]
struct Bucket {
    period: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl Budget {
    pub(crate) fn new(config: BudgetConfig) -> Self {
        let bucket_nanos = u64::try_from((config.window / BUCKETS as u32).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        Self {
            config,
            epoch: Instant::now(),
            bucket_nanos,
            buckets: Default::default(),
        }
    }

    fn period(&self) -> u64 {
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos();
        u64::try_from(now).unwrap_or(u64::MAX) / self.bucket_nanos + 1
    }

    fn current(&self, period: u64) -> &Bucket {
        let bucket = &self.buckets[(period % BUCKETS as u64) as usize];
        let seen = bucket.period.load(Ordering::Acquire);
        if seen != period
            && bucket
                .period
                .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.requests.store(0, Ordering::Release);
            bucket.retries.store(0, Ordering::Release);
        }
        bucket
    }

    /// Counts a request (its first attempt).
    pub(crate) fn deposit(&self) {
        self.current(self.period())
            .requests
            .fetch_add(1, Ordering::AcqRel);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let period = self.period();
        let (mut requests, mut retries) = (0u64, 0u64);
        for b in &self.buckets {
            let p = b.period.load(Ordering::Acquire);
            if p != 0 && p + (BUCKETS as u64) > period {
                requests += u64::from(b.requests.load(Ordering::Acquire));
                retries += u64::from(b.retries.load(Ordering::Acquire));
            }
        }
        let floor = f64::from(self.config.min_per_second) * self.config.window.as_secs_f64();
        let allowed = floor + self.config.ratio * requests as f64;
        if (retries as f64) < allowed {
            self.current(period).retries.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }
}
