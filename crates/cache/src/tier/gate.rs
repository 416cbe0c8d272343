//! The tier's breaker: after `failure_threshold` consecutive failures Redis is skipped
//! for `open_for`; then commands try it again, and the first success closes the breaker
//! (a failure while it is half open opens it again at once). Atomics only: every request
//! that misses the local tier reads it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub(crate) struct Gate {
    epoch: Instant,
    threshold: u32,
    open_for: Duration,
    failures: AtomicU32,
    /// Milliseconds since `epoch` before which Redis is skipped.
    open_until: AtomicU64,
}

impl Gate {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            threshold: threshold.max(1),
            open_for,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether a command may go to Redis now.
    pub(crate) fn allows(&self) -> bool {
        self.now_ms() >= self.open_until.load(Ordering::Relaxed)
    }

    pub(crate) fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    pub(crate) fn failure(&self) {
        let n = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if n >= self.threshold {
            let until = self.now_ms() + self.open_for.as_millis() as u64;
            self.open_until.store(until, Ordering::Relaxed);
        }
    }

    /// Whether the last command succeeded (none failed since).
    pub(crate) fn is_healthy(&self) -> bool {
        self.failures.load(Ordering::Relaxed) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_closes_on_success() {
        let gate = Gate::new(2, Duration::from_secs(1));
        gate.failure();
        assert!(gate.allows(), "one failure is under the threshold");
        gate.failure();
        assert!(!gate.allows(), "open after two");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(gate.allows(), "half open after open_for");
        gate.failure();
        assert!(!gate.allows(), "a half-open failure opens it again");
        tokio::time::advance(Duration::from_millis(1001)).await;
        gate.success();
        gate.failure();
        assert!(gate.allows(), "a success reset the count");
    }
}
