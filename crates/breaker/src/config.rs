use std::time::Duration;

switchyard_core::with_defaults! {
    /// A circuit breaker's settings. The defaults are the specification's (threshold 5,
    /// timeout 30 s) plus a half-open state with one probe.
    #[derive(Debug, Clone, PartialEq)]
    pub struct BreakerConfig {
        /// When `false` the breaker lets everything through and records nothing.
        pub enabled: bool = true,
        /// Consecutive failures that trip the breaker (default 5; at least 1).
        pub threshold: u32 = 5,
        /// How long it stays open after a trip from closed (default 30 s).
        pub timeout: Duration = Duration::from_secs(30),
        /// Cap on the open time as re-trips double it (default 5 min).
        pub max_timeout: Duration = Duration::from_secs(300),
        /// Random spread applied to doubled open times, as a fraction (default 0.1: ±10 %),
        /// so that many proxies do not probe a recovering backend in the same instant.
        pub jitter: f64 = 0.1,
        /// Probe requests admitted at once while half-open (default 1).
        pub probes: u32 = 1,
        /// Successful probes that close the breaker (default 1).
        pub probe_successes: u32 = 1,
        /// Cap on an open time taken from `Retry-After` (default 5 min).
        pub retry_after_cap: Duration = Duration::from_secs(300),
        /// Also trip on a failure ratio over a sliding window (off by default).
        pub rate: Option<RateTrip> = None,
    }
}

/// Trip when at least `min_requests` requests in the last `window` saw a failure ratio of
/// `failure_ratio` or more (for example 0.5 of ≥ 20 requests in 10 s).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateTrip {
    /// Failures over requests, from 0.0 to 1.0.
    pub failure_ratio: f64,
    /// Fewer requests than this in the window never trip.
    pub min_requests: u32,
    /// The window, kept as ten buckets.
    pub window: Duration,
}

impl Default for RateTrip {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
        }
    }
}
