use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::recorder::Reading;

/// The proxy's numbers at one moment, from [`MetricsRegistry::snapshot`].
///
/// Each number is read exactly from its atomics; numbers read while requests are running
/// may be a few requests apart from each other. With serde, durations serialize as seconds
/// (`f64`) and `backend_metrics` as an object keyed by backend id.
///
/// [`MetricsRegistry::snapshot`]: crate::MetricsRegistry::snapshot
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsSnapshot {
    /// Requests started: `successful + failed + cancelled + in_flight`.
    pub total_requests: u64,
    /// Requests answered with a status below 500.
    pub successful_requests: u64,
    /// Requests answered with a 5xx status or an error from the inner service.
    pub failed_requests: u64,
    /// Requests dropped before their response head arrived (the client went away, or a
    /// timeout above the layer fired).
    pub cancelled_requests: u64,
    /// Requests started and not yet answered or dropped.
    pub in_flight: u64,
    /// Mean time to the response head over successful and failed requests; zero before
    /// the first.
    #[serde(serialize_with = "seconds")]
    pub average_response_time: Duration,
    /// Latency percentiles.
    pub latency: Latency,
    /// Responses served from the cache, from the
    /// [cache source](crate::MetricsRegistry::cache_source); 0 without one.
    pub cache_hits: u64,
    /// Cacheable requests the cache could not answer; 0 without a cache source.
    pub cache_misses: u64,
    /// Retries made, from the [retry source](crate::MetricsRegistry::retry_source); 0
    /// without one.
    pub total_retries: u64,
    /// Each backend's numbers, by id.
    pub backend_metrics: BTreeMap<String, BackendSnapshot>,
}

/// Latency percentiles, to the response head, of successful and failed requests.
///
/// Each percentile is within 0.78 % (1/128) of the true nearest-rank value, or within half a
/// microsecond below 128 µs; see the [crate docs](crate#the-latency-histogram).
/// `max` and `sum` are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Latency {
    /// Median.
    #[serde(serialize_with = "seconds")]
    pub p50: Duration,
    /// 90th percentile.
    #[serde(serialize_with = "seconds")]
    pub p90: Duration,
    /// 99th percentile.
    #[serde(serialize_with = "seconds")]
    pub p99: Duration,
    /// The slowest.
    #[serde(serialize_with = "seconds")]
    pub max: Duration,
    /// How many latencies were recorded.
    pub count: u64,
    /// Their sum.
    #[serde(serialize_with = "seconds")]
    pub sum: Duration,
}

impl Latency {
    pub(crate) fn from_reading(r: &Reading) -> Self {
        Self {
            p50: r.quantile(0.5),
            p90: r.quantile(0.9),
            p99: r.quantile(0.99),
            max: r.max(),
            count: r.count,
            sum: r.sum(),
        }
    }
}

/// One backend's numbers at one moment. They count attempts: a request retried on two
/// backends counts once on each.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSnapshot {
    /// Requests sent to it (started).
    pub requests: u64,
    /// Answered with a status below 500.
    pub successes: u64,
    /// Answered with a 5xx status or failed with an error.
    pub failures: u64,
    /// Dropped before their response head arrived.
    pub cancelled: u64,
    /// `successes / (successes + failures)`; `None` (JSON `null`) before the first answer.
    pub success_rate: Option<f64>,
    /// Sent and not yet answered or dropped.
    pub in_flight: u64,
    /// Mean time to the response head; zero before the first answer.
    #[serde(serialize_with = "seconds")]
    pub average_response_time: Duration,
    /// 99th percentile of the time to the response head.
    #[serde(serialize_with = "seconds")]
    pub p99: Duration,
}

impl BackendSnapshot {
    pub(crate) fn from_reading(r: &Reading) -> Self {
        let answered = r.succeeded + r.failed;
        Self {
            requests: r.started,
            successes: r.succeeded,
            failures: r.failed,
            cancelled: r.cancelled,
            success_rate: (answered > 0).then(|| r.succeeded as f64 / answered as f64),
            in_flight: r.in_flight(),
            average_response_time: r.average(),
            p99: r.quantile(0.99),
        }
    }
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}
