//! The atomics one layer records into, and their reading.
//!
//! A [`Recorder`] is split into stripes, one per core (up to 8): each thread records into
//! the stripe its index picks, so two cores recording at once do not pass the same cache
//! line back and forth. A stripe is one allocation aligned to 128 bytes (two lines, as the
//! adjacent-line prefetcher pairs them) holding its counters and a whole histogram. A
//! request in flight holds an `Arc` of its stripe, not of the recorder, so even the
//! reference count it takes and drops is in a line of its own thread's.
//!
//! A request adds to three counters: `started` when called, then its histogram bucket and
//! the latency sum when answered (and `failed` if it failed: successes are the bucket
//! total less failures), or `cancelled` when dropped. The bucket and `cancelled` adds are
//! `Release` and read with `Acquire` before `started`, so that a reader who sees a request
//! finished also sees it started: in-flight (started − answered − cancelled) never goes
//! negative.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::histogram::{self, BUCKETS};

/// How a finished request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
}

#[repr(align(128))]
struct Stripe {
    started: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Stripe {
    fn new() -> Self {
        Self {
            started: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[inline]
    fn finish(&self, elapsed: Duration, outcome: Outcome) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if outcome == Outcome::Failure {
            self.failed.fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(nanos, Relaxed);
        // Loading first leaves the line alone once the maximum has settled.
        if nanos > self.max_nanos.load(Relaxed) {
            self.max_nanos.fetch_max(nanos, Relaxed);
        }
        self.buckets[histogram::index(nanos / 1_000)].fetch_add(1, Release);
    }
}

/// The counters and histogram of one layer: proxy-wide or one backend's.
pub(crate) struct Recorder {
    stripes: Box<[Arc<Stripe>]>,
    /// `stripes.len() - 1`; the length is a power of two.
    mask: usize,
    /// Whether requests are recorded: its registry's switch, shared by all its recorders.
    on: Arc<AtomicBool>,
}

impl Recorder {
    /// A recorder of `stripes` stripes (rounded up to a power of two, at least one),
    /// recording while `on`.
    pub(crate) fn new(stripes: usize, on: Arc<AtomicBool>) -> Self {
        let n = stripes.max(1).next_power_of_two();
        Self {
            stripes: (0..n).map(|_| Arc::new(Stripe::new())).collect(),
            mask: n - 1,
            on,
        }
    }

    /// Whether requests are recorded now.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// Records a request's start; the returned guard records how it ends.
    #[inline]
    pub(crate) fn start(&self) -> InFlight {
        let stripe = self.stripes[thread_index() & self.mask].clone();
        stripe.started.fetch_add(1, Relaxed);
        InFlight {
            stripe,
            start: Instant::now(),
            done: false,
        }
    }

    /// Everything recorded so far, summed over the stripes.
    pub(crate) fn read(&self) -> Reading {
        let mut r = Reading {
            buckets: vec![0; BUCKETS],
            ..Reading::default()
        };
        // Finished before started (see the module docs).
        for s in self.stripes.iter() {
            for (total, b) in r.buckets.iter_mut().zip(s.buckets.iter()) {
                *total += b.load(Acquire);
            }
            r.cancelled += s.cancelled.load(Acquire);
        }
        for s in self.stripes.iter() {
            r.failed += s.failed.load(Relaxed);
            r.sum_nanos += s.sum_nanos.load(Relaxed);
            r.max_nanos = r.max_nanos.max(s.max_nanos.load(Relaxed));
            r.started += s.started.load(Relaxed);
        }
        r.count = r.buckets.iter().sum();
        // A failure being recorded right now may be counted in `failed` and not yet in
        // its bucket.
        r.failed = r.failed.min(r.count);
        r.succeeded = r.count - r.failed;
        r
    }
}

/// This thread's stripe index: threads are numbered in the order they first record.
#[inline]
fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Relaxed);
    }
    // A future dropped while its thread's locals are being destroyed records in stripe 0.
    INDEX.try_with(|i| *i).unwrap_or(0)
}

/// A request in flight. [`finish`](Self::finish) records its latency and outcome; dropped
/// without that, it counts as cancelled. Either way it is no longer in flight.
pub(crate) struct InFlight {
    stripe: Arc<Stripe>,
    start: Instant,
    done: bool,
}

impl InFlight {
    /// Records the request as finished now, with `outcome`.
    #[inline]
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.stripe.finish(self.start.elapsed(), outcome);
        self.done = true;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.stripe.cancelled.fetch_add(1, Release);
        }
    }
}

/// One recorder's numbers at one moment.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    pub(crate) started: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
    /// Latencies recorded (successes and failures).
    pub(crate) count: u64,
    pub(crate) sum_nanos: u64,
    pub(crate) max_nanos: u64,
    pub(crate) buckets: Vec<u64>,
}

impl Reading {
    pub(crate) fn in_flight(&self) -> u64 {
        self.started.saturating_sub(self.count + self.cancelled)
    }

    pub(crate) fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos)
    }

    pub(crate) fn max(&self) -> Duration {
        Duration::from_nanos(self.max_nanos)
    }

    /// The mean latency; zero before the first response.
    pub(crate) fn average(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => Duration::from_nanos(self.sum_nanos / n),
        }
    }

    pub(crate) fn quantile(&self, q: f64) -> Duration {
        histogram::quantile(&self.buckets, self.count, q, self.max())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_is_on_lines_of_its_own() {
        assert_eq!(std::mem::align_of::<Stripe>(), 128);
        assert_eq!(std::mem::size_of::<Stripe>() % 128, 0);
    }

    #[test]
    fn stripes_round_up_to_a_power_of_two() {
        assert_eq!(Recorder::new(0, Arc::default()).stripes.len(), 1);
        assert_eq!(Recorder::new(3, Arc::default()).stripes.len(), 4);
        assert_eq!(Recorder::new(8, Arc::default()).stripes.len(), 8);
    }

    #[test]
    fn threads_on_several_stripes_sum_up() {
        let rec = Recorder::new(4, Arc::default());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..1000 {
                        let outcome = if i % 4 == 0 {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        };
                        rec.start().finish(outcome);
                    }
                    drop(rec.start());
                });
            }
        });
        let r = rec.read();
        assert_eq!(r.started, 4004);
        assert_eq!(r.succeeded, 3000);
        assert_eq!(r.failed, 1000);
        assert_eq!(r.cancelled, 4);
        assert_eq!(r.count, 4000);
        assert_eq!(r.in_flight(), 0);
    }
}
