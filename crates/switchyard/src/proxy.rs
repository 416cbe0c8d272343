use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use switchyard_balance::Balance;
use switchyard_breaker::CircuitBreakers;
use switchyard_cache::{Cache, CacheBody, CacheHandle, CacheLayer};
use switchyard_core::{AttemptSlot, BoxError, Deadline, RouteHint};
use switchyard_health::{
    AdminState, Drain, HealthEvent, HealthReport, HttpChecker, Registry, Tracked,
};
use switchyard_metrics::{
    CacheCounters, Metrics, MetricsLayer, MetricsRegistry, MetricsSnapshot, TextFormat,
};
use switchyard_pool::{PoolConfig, PoolStats};
use switchyard_retry::{ReplayBody, Retry, RetryLayer, RetryStats};
use tower::util::{Either, MapRequest, MapResponse};
use tower::{Layer, Service, ServiceBuilder};

use crate::body::{self, Body};
use crate::collector::{BackendState, TunnelGauge};
use crate::registry::{self as reg, EndpointService, HttpEndpoints};
use crate::trace::{RequestTrace, RequestTraceLayer, Traces};
use crate::{
    Backend, BackendError, ErrorResponse, ErrorResponseLayer, ProxyConfig, ProxyHeaders,
    ProxyHeadersLayer, StrictHost, TunnelStats, Tunnels,
};

type Balancer = Balance<Tracked<EndpointService>, Request<Body>>;
type Replayed = MapRequest<Balancer, fn(Request<ReplayBody<Body>>) -> Request<Body>>;
type Upstream = ProxyHeaders<Retry<Replayed>>;
type Cached = MapResponse<Cache<Upstream>, fn(Response<CacheBody<Body>>) -> Response<Body>>;
type Stack = RequestTrace<Metrics<StrictHost<ErrorResponse<Either<Cached, Upstream>>>>>;

/// A response the cache only passed through keeps its body as it is; a stored or storing
/// one is boxed.
fn box_cached(res: Response<CacheBody<Body>>) -> Response<Body> {
    res.map(|b| b.into_passthrough().unwrap_or_else(body::boxed))
}

/// A body under the retry layer as the balancer takes it: one the retry layer passed
/// through (a request sent once, an empty body) as it is, one it keeps for replays boxed.
fn unreplay(req: Request<ReplayBody<Body>>) -> Request<Body> {
    req.map(|b| b.into_passthrough().unwrap_or_else(body::boxed))
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
    registry: Registry<HttpEndpoints>,
    cache: Option<CacheHandle>,
    metrics: MetricsRegistry,
    tunnels: Tunnels,
    traces: Traces,
}

impl Proxy {
    /// Builds the standard stack with `config`, with no backends yet.
    ///
    /// Must be called within a tokio runtime (the balancer spawns its discovery task).
    /// Check the configuration with [`ProxyConfig::validate`] first where it comes from a
    /// user.
    pub fn new(config: ProxyConfig) -> Self {
        let metrics = MetricsRegistry::new();
        let tls = config.tls_config();
        let endpoints = HttpEndpoints {
            pool: PoolConfig {
                tls: Some(tls.clone()),
                ..config.pool.clone()
            },
            breakers: CircuitBreakers::new(config.breaker.clone()),
            metrics: config.metrics.then(|| metrics.clone()),
        };
        // Health checks trust what requests trust.
        let (registry, discovery) = Registry::builder(config.health.clone(), endpoints)
            .checker(HttpChecker::with_tls(tls))
            .build();
        let retry = RetryLayer::new(config.bounded_retry());
        let balance = Balance::weighted(discovery)
            .route_hints(RouteHint::in_extensions)
            .attempt_traces(AttemptSlot::in_extensions);
        let endpoints = balance.endpoint_count();
        let headers = ProxyHeadersLayer::new()
            .preserve_host(config.preserve_host)
            .upgrade_idle_timeout(Some(config.upgrade_idle_timeout).filter(|idle| !idle.is_zero()))
            .upgrade_protocols(&config.upgrade_protocols);
        let tunnels = headers.tunnels().clone();
        let upstream = ServiceBuilder::new()
            .layer(headers)
            .layer(retry.clone())
            .map_request(unreplay as fn(_) -> _)
            .service(balance);
        // The cache sits above the retries and their deadline: a hit takes no timer, and a
        // stored response can answer for backends that time out (stale-if-error).
        let (cached, cache) = if let Some(cache) = &config.cache {
            let layer = CacheLayer::new(cache.clone());
            let handle = layer.handle();
            let cached = MapResponse::new(layer.layer(upstream), box_cached as fn(_) -> _);
            (Either::Left(cached), Some(handle))
        } else {
            (Either::Right(upstream), None)
        };
        let top = if config.metrics {
            let retries = retry.clone();
            metrics.retry_source(move || retries.stats().retries);
            if let Some(cache) = cache.clone() {
                metrics.cache_source(move || {
                    let stats = cache.stats();
                    CacheCounters {
                        hits: stats.hits,
                        misses: stats.misses,
                    }
                });
            }
            metrics.register_collector(BackendState {
                registry: registry.clone(),
            });
            metrics.register_collector(TunnelGauge(tunnels.clone()));
            MetricsLayer::new(&metrics)
        } else {
            MetricsLayer::off()
        };
        // The host is checked before the cache keys on it or a backend sees it.
        let stack = top.layer(StrictHost::new(ErrorResponseLayer::new().layer(cached)));
        // Above everything, so that the trace covers the whole request and every answer,
        // the stack's own included.
        let traces = Traces::default();
        let tracing =
            RequestTraceLayer::new(traces.clone(), config.trace, config.generate_traceparent);
        let stack = tracing.layer(stack);
        Self {
            shared: Arc::new(Shared {
                config,
                registry,
                retry,
                endpoints,
                cache,
                metrics,
                tunnels,
                traces,
            }),
            stack,
        }
    }

    /// The configuration the proxy was built with.
    pub fn config(&self) -> &ProxyConfig {
        &self.shared.config
    }

    /// Adds a backend (specification `AddBackend`). An inactive backend is listed and
    /// checked but gets no traffic. A backend given by host name gets traffic once its
    /// name has resolved, on every address it resolves to.
    pub fn add_backend(&self, backend: Backend) -> Result<(), BackendError> {
        if let Some(problem) = backend.validate().into_iter().next() {
            return Err(BackendError::Invalid {
                id: backend.id,
                reason: problem.to_string(),
            });
        }
        let admin = if backend.active {
            AdminState::Enabled
        } else {
            AdminState::Disabled
        };
        self.shared.registry.add(reg::spec(&backend), admin)?;
        Ok(())
    }

    /// Removes a backend at once (specification `RemoveBackend`); requests in flight on it
    /// finish. See [`Proxy::drain_backend`] for a removal that waits for them first.
    pub fn remove_backend(&self, id: &str) -> Result<Backend, BackendError> {
        Ok(reg::backend(self.shared.registry.remove(id)?))
    }

    /// Drains a backend: no new requests; once those in flight are done it is removed and
    /// its connections closed. The future completes then; the drain goes on whether or
    /// not it is awaited.
    pub fn drain_backend(&self, id: &str) -> Result<Drain, BackendError> {
        Ok(self.shared.registry.drain(id)?)
    }

    /// Lets a disabled or draining backend take traffic again.
    pub fn enable_backend(&self, id: &str) -> Result<(), BackendError> {
        Ok(self.shared.registry.enable(id)?)
    }

    /// Stops sending a backend requests; it stays listed and checked.
    pub fn disable_backend(&self, id: &str) -> Result<(), BackendError> {
        Ok(self.shared.registry.disable(id)?)
    }

    /// Changes a backend's weight, from the next request on.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), BackendError> {
        if weight == 0 {
            return Err(BackendError::Invalid {
                id: id.to_owned(),
                reason: "`weight` must be at least 1".to_owned(),
            });
        }
        Ok(self.shared.registry.set_weight(id, weight)?)
    }

    /// The backends, in the order they were added (specification `ListBackends`).
    pub fn list_backends(&self) -> Vec<Backend> {
        self.shared
            .registry
            .list()
            .into_iter()
            .map(reg::backend)
            .collect()
    }

    /// Every backend's health: state, consecutive failures, last response time and error,
    /// per address, and whether panic mode is on (specification `GetHealthStatus`).
    pub fn health_status(&self) -> HealthReport {
        self.shared.registry.status()
    }

    /// Checks every backend now and returns when the checks are done (specification
    /// `HealthCheck()`).
    pub async fn check_now(&self) -> HealthReport {
        self.shared.registry.check_now().await
    }

    /// Health transitions, panic mode, resolutions and removals as they happen.
    pub fn health_events(&self) -> tokio::sync::broadcast::Receiver<HealthEvent> {
        self.shared.registry.subscribe()
    }

    /// Retry counters: attempts, retries by reason, budget exhaustion (the
    /// specification's `TotalRetries` is `retries`).
    pub fn retry_stats(&self) -> RetryStats {
        self.shared.retry.stats()
    }

    /// The backends' circuit breakers (specification `GetCircuitBreaker`): state per
    /// backend, trip counts, forcing, and a stream of transitions.
    pub fn circuit_breaker(&self) -> &CircuitBreakers {
        &self.shared.registry.endpoints().breakers
    }

    /// Request counts, latency, cache hits and misses, retries, and each backend's numbers
    /// (specification `GetMetrics`). All zero when `metrics` is off.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot()
    }

    /// The metrics, and the backends' pool, breaker and health state, as Prometheus or
    /// OpenMetrics text.
    pub fn encode_metrics(&self, format: TextFormat) -> String {
        self.shared.metrics.encode(format)
    }

    /// The response cache: purge entries, read its counters. `None` when
    /// `cache` is.
    pub fn cache(&self) -> Option<&CacheHandle> {
        self.shared.cache.as_ref()
    }

    /// Connection pool counters of every backend, in the order they were added
    /// (specification `pool.Stats()`).
    pub fn pool_stats(&self) -> Vec<(String, PoolStats)> {
        let registry = &self.shared.registry;
        registry
            .list()
            .into_iter()
            .map(|b| {
                let stats = reg::pool_stats(registry, &b.spec.id);
                (b.spec.id, stats)
            })
            .collect()
    }

    /// The requests' decision traces: the recent ones, a live feed, and the token that
    /// asks for one in a response (`Switchyard-Trace`). Empty when `trace` is off.
    pub fn traces(&self) -> &Traces {
        &self.shared.traces
    }

    /// Upgraded connections (WebSocket tunnels): open now, and opened since start.
    pub fn tunnel_stats(&self) -> TunnelStats {
        self.shared.tunnels.stats()
    }

    /// The upgraded connections, to wait for them at shutdown
    /// ([`Tunnels::all_closed`]).
    pub fn tunnels(&self) -> &Tunnels {
        &self.shared.tunnels
    }

    /// Waits until the balancer has applied every backend change made so far; for tests
    /// and start-up code that must not send a request before the backends are in place.
    pub async fn settled(&self) {
        let routed = self.shared.registry.resolved().await;
        let mut endpoints = self.shared.endpoints.clone();
        let _ = endpoints.wait_for(|&n| n == routed).await;
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
        let mut req = req.map(body::boxed);
        // The request's deadline: the retry layer bounds every attempt, backoff and wait
        // for a ready backend by it (one timer per request), and an attempt cut off at it
        // counts against its backend. A cache hit above the retries needs no timer.
        req.extensions_mut()
            .insert(Deadline::after(self.shared.config.request_timeout));
        self.stack.call(req)
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
