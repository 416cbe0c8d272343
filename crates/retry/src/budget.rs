//! The retry budget: requests and retries over a sliding window, in atomics, on tokio's
//! clock.

use switchyard_core::SlidingCounts;
use tokio::time::Instant;

use crate::BudgetConfig;

/// Allows retries up to `min_per_second × window + ratio × requests` in the window.
#[derive(Debug)]
pub(crate) struct Budget {
    config: BudgetConfig,
    /// (requests, retries)
    counts: SlidingCounts,
}

impl Budget {
    pub(crate) fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            counts: SlidingCounts::new(config.window),
        }
    }

    /// Counts a request (its first attempt), made at `now`.
    pub(crate) fn deposit(&self, now: Instant) {
        self.counts.add_at(now, 1, 0);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let (requests, retries) = self.counts.sums();
        let floor = f64::from(self.config.min_per_second) * self.config.window.as_secs_f64();
        let allowed = floor + self.config.ratio * requests as f64;
        if (retries as f64) < allowed {
            self.counts.add(0, 1);
            true
        } else {
            false
        }
    }
}
