//! What the load-aware policies know about each endpoint: requests in flight and a
//! peak-EWMA latency estimate, in atomics so that picking and recording take no lock.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The estimate of an endpoint that has not answered yet (linkerd's default): a new
/// endpoint is neither shunned nor flooded. Its first response sets the estimate.
const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// The stamp of an estimate no response has set.
const UNSET: u64 = u64::MAX;

/// How fast the estimate forgets: an observation's weight halves in about 7 s
/// (`tau` = 10 s, linkerd's default).
const DECAY: Duration = Duration::from_secs(10);

/// One endpoint's load. Shared by every snapshot that lists the endpoint, and by the
/// futures of its requests in flight.
#[derive(Debug)]
pub(crate) struct Load {
    in_flight: AtomicUsize,
    /// The latency estimate in nanoseconds, as `f64` bits.
    rtt: AtomicU64,
    /// When `rtt` was last set, in nanoseconds since `epoch`; [`UNSET`] before the first
    /// response.
    stamp: AtomicU64,
    epoch: Instant,
}

impl Load {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            rtt: AtomicU64::new((DEFAULT_RTT.as_nanos() as f64).to_bits()),
            stamp: AtomicU64::new(UNSET),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn finish(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The latency estimate at `now`, in nanoseconds: the last one decayed toward zero by
    /// the time since it was set, so that an endpoint left alone after a slow spell is
    /// tried again.
    pub(crate) fn rtt(&self, now: Instant) -> f64 {
        let rtt = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        match self.stamp.load(Ordering::Relaxed) {
            UNSET => rtt,
            stamp => rtt * decay(self.since_epoch(now).saturating_sub(stamp)),
        }
    }

    /// Peak-EWMA's cost: the estimate × (requests in flight + 1). An endpoint that has
    /// not answered yet and has nothing in flight costs nothing: it is probed at once, and
    /// its first response sets its estimate.
    pub(crate) fn cost(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight();
        if in_flight == 0 && self.stamp.load(Ordering::Relaxed) == UNSET {
            return 0.0;
        }
        self.rtt(now).max(1.0) * (in_flight + 1) as f64
    }

    /// Records a response that took `rtt`: a slower one than the estimate replaces it at
    /// once (the peak), a faster one is averaged in by the time since the last update.
    /// Concurrent updates may overwrite each other; each is an estimate anyway.
    pub(crate) fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let stamp = self.since_epoch(now);
        let last = self.stamp.swap(stamp, Ordering::Relaxed);
        let estimate = f64::from_bits(self.rtt.load(Ordering::Relaxed));
        let next = if rtt > estimate || last == UNSET {
            rtt
        } else {
            let w = decay(stamp.saturating_sub(last));
            estimate * w + rtt * (1.0 - w)
        };
        self.rtt.store(next.to_bits(), Ordering::Relaxed);
    }
}

/// The weight an estimate keeps after `elapsed` nanoseconds.
fn decay(elapsed: u64) -> f64 {
    (-(elapsed as f64) / DECAY.as_nanos() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peaks_at_once_and_decays_slowly() {
        let load = Load::new();
        let ms = |x: f64| x * 1e6;
        assert_eq!(load.rtt(Instant::now()), DEFAULT_RTT.as_nanos() as f64);
        load.observe(Duration::from_millis(2), Instant::now());
        assert_eq!(
            load.rtt(Instant::now()),
            ms(2.0),
            "the first response sets it"
        );
        load.observe(Duration::from_millis(300), Instant::now());
        assert_eq!(load.rtt(Instant::now()), ms(300.0));
        tokio::time::advance(Duration::from_millis(100)).await;
        load.observe(Duration::from_millis(10), Instant::now());
        let after = load.rtt(Instant::now());
        assert!(after < ms(300.0) && after > ms(290.0), "{after}");
        tokio::time::advance(DECAY * 5).await;
        assert!(
            load.rtt(Instant::now()) < ms(3.0),
            "forgotten when left alone"
        );
    }
}
