use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchyard_balance::{http_route_hint, Balance};
use switchyard_breaker::CircuitBreakers;
use switchyard_core::BoxError;
use switchyard_pool::PoolStats;
use switchyard_retry::{ReplayBody, Retry, RetryLayer, RetryStats};
use tower::timeout::{Timeout, TimeoutLayer};
use tower::util::MapRequest;
use tower::{Service, ServiceBuilder};

use crate::body::{self, Body};
use crate::registry::{Endpoint, Registry};
use crate::{
    Backend, BackendError, ErrorResponse, ErrorResponseLayer, ProxyConfig, ProxyHeaders,
    ProxyHeadersLayer,
};

type Balancer = Balance<Endpoint, Request<Body>>;
type BoxReplay = MapRequest<Balancer, fn(Request<ReplayBody<Body>>) -> Request<Body>>;
type Stack = ErrorResponse<Timeout<ProxyHeaders<Retry<BoxReplay>>>>;

/// Between retry and balance: attempts carry a replayable body; below, one body type.
fn box_replay(req: Request<ReplayBody<Body>>) -> Request<Body> {
    req.map(body::boxed)
}

/// The future of [`Proxy`]'s `call`.
pub type ProxyFuture = <Stack as Service<Request<Body>>>::Future;

/// A reverse proxy: the standard stack over a set of backends, and the handle to change
/// them at run time.
///
/// `Proxy` is a `Service<http::Request<B>>` for any body `B`, whose error type is
/// `Infallible`: failures come back as 503/504/502 responses (see
/// [`ErrorResponse`](crate::ErrorResponse)). Clones are cheap and share everything, so a
/// clone can be handed to each connection, to axum, or kept to manage backends. Changes
/// take effect for the next request; requests in flight on a removed backend finish.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    stack: Stack,
}

struct Shared {
    retry: RetryLayer,
    /// The balancer's endpoint count, for `settled`.
    endpoints: tokio::sync::watch::Receiver<usize>,
    config: ProxyConfig,
    registry: Registry,
    breakers: CircuitBreakers,
}

impl Proxy {
    /// Builds the standard stack with `config`, with no backends yet.
    ///
    /// Must be called within a tokio runtime (the balancer spawns its discovery task).
    /// Check the configuration with [`ProxyConfig::validate`] first where it comes from a
    /// user.
    pub fn new(config: ProxyConfig) -> Self {
        let breakers = CircuitBreakers::new(config.breaker_config());
        let (registry, discovery) = Registry::new(config.pool_config(), breakers.clone());
        let retry = RetryLayer::new(config.retry_config());
        let balance = Balance::weighted(discovery).route_hints(http_route_hint);
        let endpoints = balance.endpoint_count();
        let stack = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(TimeoutLayer::new(config.request_timeout))
            .layer(ProxyHeadersLayer::new().preserve_host(config.preserve_host))
            .layer(retry.clone())
            .service(MapRequest::new(balance, box_replay as fn(_) -> _));
        Self {
            shared: Arc::new(Shared {
                config,
                registry,
                retry,
                endpoints,
                breakers,
            }),
            stack,
        }
    }

    /// The configuration the proxy was built with.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Adds a backend (specification `AddBackend`). An inactive backend is listed but gets
    /// no traffic.
    pub fn add_backend(&self, backend: Backend) -> Result<(), BackendError> {
        self.shared.registry.add(backend)
    }

    /// Removes a backend (specification `RemoveBackend`); requests in flight on it finish.
    pub fn remove_backend(&self, id: &str) -> Result<Backend, BackendError> {
        self.shared.registry.remove(id)
    }

    /// The backends, in the order they were added (specification `ListBackends`).
    pub fn list_backends(&self) -> Vec<Backend> {
        self.shared.registry.list()
    }

    /// Retry counters: attempts, retries by reason, budget exhaustion (the
    /// specification's `TotalRetries` is `retries`).
    pub fn retry_stats(&self) -> RetryStats {
        self.shared.retry.stats()
    }

    /// The backends' circuit breakers (specification `GetCircuitBreaker`): state per
    /// backend, trip counts, forcing, and a stream of transitions.
    pub fn circuit_breaker(&self) -> &CircuitBreakers {
        &self.shared.breakers
    }

    /// Connection pool counters of every backend, in the order they were added
    /// (specification `pool.Stats()`).
    pub fn pool_stats(&self) -> Vec<(String, PoolStats)> {
        self.shared.registry.pool_stats()
    }

    /// Waits until the balancer has applied every backend change made so far; for tests
    /// and start-up code that must not send a request before the backends are in place.
    pub async fn settled(&self) {
        let active = self.list_backends().iter().filter(|b| b.active).count();
        let mut endpoints = self.shared.endpoints.clone();
        let _ = endpoints.wait_for(|&n| n == active).await;
    }
}

impl<B> Service<Request<B>> for Proxy
where
    B: http_body::Body + Send + 'static,
    B::Data: Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.stack.call(req.map(body::boxed))
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.shared.config)
            .field("backends", &self.list_backends())
            .finish()
    }
}
