use std::time::Duration;

use http::StatusCode;

/// How a delay is spread (with `d` the exponential delay of an attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[0, d]` (AWS's "full jitter"): the widest spread.
    Full,
    /// Uniform in `[d/2, d]` ("equal jitter"): spread, yet never much sooner than `d`.
    /// The default.
    #[default]
    Equal,
}

switchyard_core::with_defaults! {
    /// A retry layer's settings. The defaults are the specification's: 3 retries, 100 ms,
    /// doubling (100, 200, 400 ms), with equal jitter.
    #[derive(Debug, Clone, PartialEq)]
    pub struct RetryConfig {
        /// Retries after the first attempt (default 3). 0 turns retries off.
        pub max_retries: u32 = 3,
        /// Delay before the first retry (default 100 ms).
        pub delay: Duration = Duration::from_millis(100),
        /// Double the delay at each retry (default on); off, every delay is `delay`.
        pub backoff: bool = true,
        /// Cap on one delay (default 10 s).
        pub max_delay: Duration = Duration::from_secs(10),
        /// How delays are spread.
        pub jitter: Jitter = Jitter::Equal,
        /// A 503 or 429 with a `Retry-After` up to this long is retried after that long; a
        /// longer one is returned as it is (default 10 s).
        pub retry_after_cap: Duration = Duration::from_secs(10),
        /// Retry POST and PATCH too (default off: only GET, HEAD, OPTIONS, TRACE, PUT, DELETE).
        pub non_idempotent: bool = false,
        /// Response statuses that are retried (default 502, 503, 504).
        pub statuses: Vec<StatusCode> = vec![
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT,
        ],
        /// gRPC status codes that are retried when a response carries them in its headers,
        /// as a trailers-only gRPC error does (its HTTP status is 200). Default: none; gRPC
        /// clients usually want `[14]` (UNAVAILABLE). Calls are POSTs, so `non_idempotent`
        /// must be on too, which is safe only for idempotent RPCs.
        pub grpc_statuses: Vec<u32> = Vec::new(),
        /// Request bodies up to this size are kept to be replayed (default 64 KiB); a request
        /// with a larger body is still forwarded, just not retried.
        pub max_replay_body: usize = 64 * 1024,
        /// No attempt starts later than this after the request arrived (the proxy's
        /// `request_timeout`); `None` for no bound.
        pub deadline: Option<Duration> = None,
        /// How long one attempt may wait for its response head (like nginx's per-try read
        /// timeout, Envoy's `per_try_timeout`); `None` (the default) for no bound of its own.
        /// An attempt without a response head by then, or by the request's deadline if that
        /// comes first, is abandoned and counted as a timeout of its backend (its circuit
        /// breaker sees it), then retried elsewhere like a broken connection: for idempotent
        /// methods, while `deadline` allows. Otherwise the request fails with
        /// [`AttemptTimeout`](switchyard_core::AttemptTimeout).
        pub attempt_timeout: Option<Duration> = None,
        /// Hedging (default off): an idempotent request with a complete body whose first
        /// attempt has no response after this long gets a second attempt on another backend,
        /// and the first response wins; the other attempt is dropped, which its backend's
        /// circuit breaker counts as a timeout only if it was past its attempt deadline. One
        /// hedge per request, paid from the retry budget; needs `max_retries > 0`.
        pub hedge_after: Option<Duration> = None,
        /// The retry budget.
        pub budget: BudgetConfig = BudgetConfig::default(),
    }
}

/// A retry budget, as in Envoy and Finagle: over the last `window`, retries may number at
/// most `min_per_second × window` plus `ratio` of the requests, so a failing fleet is not
/// hit by a retry storm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    /// Retries allowed as a fraction of requests (default 0.2).
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic (default 10), so that a quiet
    /// service still retries.
    pub min_per_second: u32,
    /// The window (default 10 s).
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// The delay before retry number `retry` (1-based), jitter applied.
    pub fn delay_for(&self, retry: u32) -> Duration {
        let base = if self.backoff {
            let factor = 1u32
                .checked_shl(retry.saturating_sub(1).min(31))
                .unwrap_or(u32::MAX);
            self.delay.saturating_mul(factor)
        } else {
            self.delay
        };
        let d = base.min(self.max_delay);
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => d.mul_f64(fastrand::f64()),
            Jitter::Equal => d / 2 + (d / 2).mul_f64(fastrand::f64()),
        }
    }
}
