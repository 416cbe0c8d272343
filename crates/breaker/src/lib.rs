//! A circuit breaker for one backend, as a `tower::Layer`.
//!
//! The breaker watches the results of the requests it lets through, classified by a
//! [`Classify`] shared with the retry layer (by default:
//! connect errors, timeouts and 5xx are failures, 4xx are not). It
//!
//! - **trips** after [`BreakerConfig::threshold`] consecutive failures, or, when
//!   [`BreakerConfig::rate`] is set, when the failure ratio over a sliding window reaches a
//!   limit with at least a minimum number of requests;
//! - stays **open** for [`BreakerConfig::timeout`]; each re-trip without a full recovery
//!   doubles that, up to [`BreakerConfig::max_timeout`], with jitter. A failure that was a
//!   503 or 429 carrying `Retry-After` opens it for exactly that long (capped): the backend
//!   said when to come back;
//! - then goes **half-open**: up to [`BreakerConfig::probes`] requests at a time are let
//!   through as probes, the others rejected as if open. Enough successful probes close it;
//!   a failed one opens it again;
//! - is **reset** (closed, its doubling forgotten) by [`Breaker::reset`] when something
//!   else shows the backend is back: switchyard calls it when the backend's active health
//!   checks pass again after having failed.
//!
//! While open, the service's `poll_ready` answers `Err(`[`CircuitOpen`]`)` at once, so a
//! balancer (switchyard's skips endpoints whose readiness fails) routes around it and a
//! caller is never parked waiting for the breaker; a `call` made anyway fails at once with
//! the same error. The error belongs to that one readiness check, not to the service: it
//! recovers by itself. (So do not put a `tower::buffer::Buffer` *around* a breaker: a
//! buffer treats a readiness error as the end of its worker.)
//!
//! The request path reads and updates atomics only; in the closed state it costs one load
//! before the request and one after. The clock (`tokio::time`) is read only while open.
//!
//! [`CircuitBreakers`] keeps one breaker per backend id, reports their [`State`]s and trip
//! counts, lets operators [force](CircuitBreakers::force_open) a state, and publishes every
//! [`Transition`] (also logged with `tracing`) to subscribers.
//!
//! # Example
//!
//! ```
//! # async fn run() {
//! use std::time::Duration;
//! use switchyard_breaker::{BreakerConfig, CircuitBreakerLayer};
//! use tower::ServiceBuilder;
//!
//! let layer = CircuitBreakerLayer::new(BreakerConfig {
//!     threshold: 5,
//!     timeout: Duration::from_secs(30),
//!     ..BreakerConfig::default()
//! });
//! let handle = layer.breaker().clone();
//! let svc = ServiceBuilder::new().layer(layer).service(tower::service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! assert!(handle.state().is_closed());
//! # drop(svc); }
//! ```

mod breaker;
mod config;
mod future;
mod layer;
mod registry;
mod service;

pub use breaker::{Breaker, State, Transition};
pub use config::{BreakerConfig, RateTrip};
pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use registry::CircuitBreakers;
pub use service::CircuitBreaker;
pub use switchyard_core::{CircuitOpen, Classify, GrpcClassifier, HttpClassifier, Outcome};
