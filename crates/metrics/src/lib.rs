//! Request metrics as `tower` layers: counts, in-flight requests and latency, proxy-wide and
//! per backend, read as a [`MetricsSnapshot`] (serde, for a JSON admin endpoint) or as
//! Prometheus / OpenMetrics text.
//!
//! # Where the layers go
//!
//! A [`MetricsRegistry`] hands out two kinds of layer:
//!
//! - [`MetricsRegistry::layer`] for the **whole proxy**: put it at the top of the stack,
//!   above retries and the balancer, so that each client request counts once.
//! - [`MetricsRegistry::backend`]`(id)` for **one backend**: put it on that backend's
//!   endpoint stack, below the balancer, when the endpoint is built. It counts attempts: a
//!   request retried on another backend counts once on each. Without a retry layer (or
//!   anything else that answers or fans out) between the two, the backends' counts add up
//!   to the proxy-wide ones.
//!
//! ```text
//!   Metrics (proxy-wide)
//!   ErrorResponse, Timeout, ...
//!   Retry
//!   Balance
//!     Metrics (backend "a")     Metrics (backend "b")
//!     CircuitBreaker            CircuitBreaker
//!     HttpEndpoint              HttpEndpoint
//! ```
//!
//! # What is counted
//!
//! - A request is **started** when `call` is made (`total_requests`).
//! - It **succeeds** when the inner service answers with a status below 500; it **fails**
//!   when the answer is a 5xx or the inner service returns an error (which passes through
//!   untouched). A 4xx is the client's doing, so it is a success here.
//! - It is **cancelled** when its response future is dropped first (the client went away,
//!   or a timeout above fired). It is then no longer in flight, and has no latency.
//! - **In flight**: started and not yet answered or dropped.
//! - **Latency** runs from `call` to the response head (the inner future's output), not to
//!   the end of the body: it is the backend's (or proxy's) time to answer, unaffected by
//!   how fast the client reads. It is measured with `tokio::time::Instant`, so paused-time
//!   tests see exact durations.
//!
//! # The request path
//!
//! Labels are resolved when the stack is built: each layer holds its recorder, so a
//! request does no lookup, takes no lock and allocates nothing. It does three atomic adds
//! (started; then its histogram bucket and the latency sum; a fourth for a failure), two
//! clock reads, and takes and drops one reference count. The atomics are striped per core
//! (each stripe on cache lines of its own), so cores recording at once do not contend; the
//! readers sum the stripes. See the crate's README for what that costs.
//!
//! # The latency histogram
//!
//! Log-linear buckets like HdrHistogram's: one per microsecond below 128 µs, then 64 per
//! power of two, up to 2^27 µs (about 134 s; longer requests share the top bucket). A
//! percentile is reported as the middle of the bucket holding the true (nearest-rank) value,
//! so it is **within 1/128 (0.78 %) of it, or within half a microsecond below 128 µs**; the
//! maximum, the sum and so the average are exact. 11 KiB per stripe.
//!
//! # Other layers' numbers
//!
//! The response cache and the retry layer count their own hits, misses and retries; the
//! integrator tells the registry where to read them with [`MetricsRegistry::cache_source`]
//! and [`MetricsRegistry::retry_source`]. Anything else (pool connections, breaker states)
//! goes into the Prometheus output through a [`prometheus_client`] collector registered
//! with [`MetricsRegistry::register_collector`]. All of these are read at snapshot or scrape
//! time only.
//!
//! # Prometheus
//!
//! [`MetricsRegistry::encode_prometheus`] writes OpenMetrics text with
//! [`prometheus_client`]'s encoder, reading the atomics at scrape time. The names:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `switchyard_requests_total` | counter | `outcome` = `success`, `failure`, `cancelled` |
//! | `switchyard_requests_in_flight` | gauge | |
//! | `switchyard_request_duration_seconds` | histogram | |
//! | `switchyard_backend_requests_total` | counter | `backend`, `outcome` |
//! | `switchyard_backend_requests_in_flight` | gauge | `backend` |
//! | `switchyard_backend_request_duration_seconds` | histogram | `backend` |
//! | `switchyard_cache_hits_total`, `switchyard_cache_misses_total` | counter | (with a cache source) |
//! | `switchyard_retries_total` | counter | (with a retry source) |
//!
//! The exported histogram buckets are the powers of two from 128 µs to 67 s (`le` =
//! 0.000128, 0.000256, … 67.108864 seconds): boundaries of the fine buckets, so their
//! counts are exact.
//!
//! # Example
//!
//! ```
//! # async fn run() -> Result<(), std::convert::Infallible> {
//! use http::{Request, Response};
//! use switchyard_metrics::{CacheCounters, MetricsRegistry};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! let metrics = MetricsRegistry::new();
//! let backend = ServiceBuilder::new()
//!     .layer(metrics.backend("a"))
//!     .service(service_fn(|_req: Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(Response::new(()))
//!     }));
//! let proxy = ServiceBuilder::new().layer(metrics.layer()).service(backend);
//! metrics.retry_source(|| 0);
//! metrics.cache_source(|| CacheCounters { hits: 3, misses: 1 });
//!
//! proxy.oneshot(Request::new(())).await?;
//!
//! let snapshot = metrics.snapshot();
//! assert_eq!(snapshot.successful_requests, 1);
//! assert_eq!(snapshot.backend_metrics["a"].requests, 1);
//! assert_eq!(snapshot.cache_hits, 3);
//! assert!(metrics.encode_prometheus().contains("switchyard_requests_total{outcome=\"success\"} 1"));
//! # Ok(()) }
//! ```

mod future;
mod histogram;
mod layer;
mod prometheus;
mod recorder;
mod registry;
mod service;
mod snapshot;

pub use future::ResponseFuture;
pub use layer::{BackendMetrics, MetricsLayer};
pub use prometheus::TextFormat;
pub use registry::{CacheCounters, MetricsRegistry};
pub use service::Metrics;
pub use snapshot::{BackendSnapshot, Latency, MetricsSnapshot};

/// The `prometheus_client` this crate encodes with, for writing collectors.
pub use prometheus_client;
