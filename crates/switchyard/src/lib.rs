//! switchyard: a reverse proxy built from `tower` layers.
//!
//! This crate is the facade. It holds the forwarding service and composes switchyard's
//! layers into the standard stack, outermost first:
//!
//! ```text
//!   request ──▶ RequestTrace    the decision trace, traceparent, Switchyard-Trace
//!                               (switchyard::trace)
//!               Metrics         counts, in-flight, latency (switchyard-metrics)
//!               StrictHost      an invalid or ambiguous Host gets 400 (switchyard::host)
//!               ErrorResponse   typed errors become 503 / 504 / 502 responses
//!               Cache           RFC 9111 shared cache (switchyard-cache)
//!               ProxyHeaders    hop-by-hop headers, X-Forwarded-*, Via, Host; joins
//!                               client and backend on 101 (switchyard::upgrade)
//!               Retry           request_timeout: one deadline for every attempt; backoff,
//!                               budget, idempotency, body replay, hedging
//!                               (switchyard-retry), and attempt_timeout: a slow attempt
//!                               is cut off and retried
//!               Balance         round robin, least request or peak EWMA, with slow
//!                               start, over the backend registry (switchyard-health:
//!                               admin states, active checks, DNS A/AAAA and SRV),
//!                               skipping backends whose breaker is open
//!               Metrics         one per backend: its attempts (switchyard-metrics)
//!               CircuitBreaker  one per backend (switchyard-breaker)
//!               HttpEndpoint    one per backend: its own connection pool (switchyard-pool)
//! ```
//!
//! Bodies are streamed both ways, never buffered whole.
//!
//! The trace is on top so that it sees every answer, the stack's own 400s and 503s
//! included; the layers below write to it through the request's extensions
//! ([`switchyard_core::trace`]).
//!
//! # Why this order
//!
//! The cache is on top, so a hit costs no timer and no attempt, what is stored is the
//! outcome after retries, and a stored response can stand in for backends that fail or
//! time out (`stale-if-error`). The retry layer keeps the request's deadline, one timer
//! for every attempt and backoff; the retries are above the balancer, so each attempt can go to another
//! backend; the breakers are per backend below it, so an open one makes only its backend
//! not ready and the balancer routes around it. The README's "Composing the stack" shows
//! what goes wrong in other orders.
//!
//! Nothing in the stack waits in `poll_ready`: the balancer is always ready and fails at
//! once with [`NoBackendsAvailable`] when no backend is, and an open breaker answers
//! readiness with [`CircuitOpen`]. That is what axum needs, since it treats services as
//! always ready.
//!
//! # In axum and tonic
//!
//! [`Proxy`] mounts in an axum `Router` as it is (`nest_service`, `fallback_service`),
//! and [`ForwardLayer`] wraps an application to forward only some requests (a path
//! prefix, a host, a closure). `tonic::client::Grpc` runs over any stack of these layers;
//! the workspace's `examples/` show all three.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard::{Backend, Proxy, ProxyConfig};
//! use tower::ServiceExt;
//!
//! let proxy = Proxy::new(ProxyConfig::default());
//! proxy.add_backend(Backend::new("a", "http://127.0.0.1:3001".parse()?))?;
//! proxy.add_backend(Backend::new("b", "http://127.0.0.1:3002".parse()?).weight(2))?;
//!
//! // `Proxy` is a `Service<http::Request<B>>` for any body, cheap to clone, and never
//! // fails: errors come back as 503/504/502 responses. It drops straight into axum.
//! let req = http::Request::get("/hello").body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let res = proxy.clone().oneshot(req).await?;
//! println!("{}", res.status());
//! # Ok(()) }
//! ```

pub mod body;
mod collector;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod forward;
pub mod headers;
pub mod host;
mod proxy;
mod registry;
pub mod response;
pub mod trace;
mod upgrade;

pub use body::Body;
pub use config::{
    Backend, ByteSize, ConfigProblem, Discovery, DiscoveryKind, ParseBackendError, ProxyConfig,
    Reconfigured,
};
pub use error::{BackendError, Error, InvalidBackendUrl};
pub use forward::{Forward, ForwardLayer};
pub use headers::{ClientAddr, ProxyHeaders, ProxyHeadersLayer};
pub use host::{StrictHost, StrictHostLayer};
pub use proxy::{Proxy, ProxyFuture};
pub use response::{ErrorResponse, ErrorResponseLayer};
pub use switchyard_balance::{BalanceConfig, Policy};
pub use switchyard_breaker::{BreakerConfig, CircuitBreakers, State as BreakerState, Transition};
pub use switchyard_cache::{CacheConfig, CacheHandle, CacheStats, SharedConfig, SharedStats};
pub use switchyard_core::trace::{AttemptEnd, AttemptKind, AttemptView, CacheOutcome, Decision};
pub use switchyard_core::{
    AttemptTimeout, BoxError, CircuitOpen, ErrorKind, NoBackendsAvailable, RequestTimeout,
};
pub use switchyard_core::{Trace, TraceContext};
pub use switchyard_health::{
    AdminState, BackendStatus, Drain, EndpointStatus, Health, HealthConfig, HealthEvent,
    HealthReport, StatusRange,
};
pub use switchyard_metrics::{BackendSnapshot, Latency, MetricsSnapshot, TextFormat};
pub use switchyard_pool::{
    CaError, CertKey, CertKeyError, PoolConfig, PoolStats, Protocol, TlsConfig,
};
pub use switchyard_retry::{RetryConfig, RetryStats};
pub use trace::{trace_json, RequestTrace, RequestTraceLayer, Traces};
pub use upgrade::{TunnelStats, Tunnels};

/// The layers, re-exported so a custom stack needs only this crate.
pub mod layers {
    pub use switchyard_balance as balance;
    pub use switchyard_breaker as breaker;
    pub use switchyard_cache as cache;
    pub use switchyard_health as health;
    pub use switchyard_metrics as metrics;
    pub use switchyard_pool as pool;
    pub use switchyard_retry as retry;
}
