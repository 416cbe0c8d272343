use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use http::{Request, Response};
use switchyard_balance::Balance;
use switchyard_breaker::CircuitBreakers;
use switchyard_cache::{Cache, CacheBody, CacheHandle, CacheLayer};
use switchyard_core::{AttemptSlot, BoxError, Deadline, GiveBack, RouteHint};
use switchyard_health::{AdminState, Drain, HealthEvent, HealthReport, Registry, Tracked};
use switchyard_metrics::{
    CacheCounters, Metrics, MetricsLayer, MetricsRegistry, MetricsSnapshot, TextFormat,
};
use switchyard_pool::{PoolConfig, PoolStats};
use switchyard_retry::{ReplayBody, Retry, RetryLayer, RetryStats};
use tower::util::{Either, MapFuture, MapRequest, MapResponse};
use tower::{Layer, Service, ServiceBuilder};

use crate::body::{self, Body};
use crate::collector::{BackendState, SharedTierMetrics, TunnelGauge};
use crate::registry::{self as reg, EndpointService, HttpEndpoints, SameTls};
use crate::trace::{RequestTrace, RequestTraceLayer, Traces};
use crate::{
    Backend, BackendError, ConfigProblem, ErrorResponse, ErrorResponseLayer, ProxyConfig,
    ProxyHeaders, ProxyHeadersLayer, Reconfigured, StrictHost, TunnelStats, Tunnels,
};

type Balancer = Balance<Tracked<EndpointService>, Request<Body>>;
type Replayed = MapRequest<Balancer, fn(Request<ReplayBody<Body>>) -> Request<Body>>;
type Retried = Retry<Replayed>;
type RetryFuture = <Retried as Service<Request<Body>>>::Future;
/// The retry layer's future is most of a request's state (the request kept for replays,
/// the attempt, the deadline): boxed once here, the layers above it move a pointer
/// instead of copying it into each of their own futures.
type Upstream = ProxyHeaders<MapFuture<Retried, fn(RetryFuture) -> Pin<Box<RetryFuture>>>>;
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
///
/// [`Proxy::reconfigure`] replaces the settings of the layers above the backends: each
/// clone picks up the new stack at its next `poll_ready` (one atomic load per request),
/// while requests already started finish on the stack they started with.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    /// The settings this clone's `stack` was built with.
    current: Arc<Generation>,
    /// `Shared::reloads` when `current` was taken.
    seen: u64,
    stack: Stack,
}

struct Shared {
    /// The balancer's endpoint count, for `settled`.
    endpoints: tokio::sync::watch::Receiver<usize>,
    registry: Registry<HttpEndpoints>,
    metrics: MetricsRegistry,
    tunnels: Tunnels,
    /// What every generation's stack is built over: the same balancer (and so the same
    /// backends, breakers and pools), the same tunnels, metrics and decision traces.
    parts: Parts,
    current: ArcSwap<Generation>,
    /// How many times `current` was replaced: a clone compares it with what it saw, and
    /// loads `current` only when it moved.
    reloads: AtomicU64,
    /// What the backend TLS files held when they were last loaded (see
    /// [`ProxyConfig::tls_files`]): a reload that finds them rewritten loads them again.
    tls_files: AtomicU64,
}

#[derive(Clone)]
struct Parts {
    balance: Balancer,
    headers: ProxyHeadersLayer,
    top: MetricsLayer,
    traces: Traces,
}

/// One configuration in force, and the stack built for it.
struct Generation {
    config: Arc<ProxyConfig>,
    loaded: SystemTime,
    retry: RetryLayer,
    cache: Option<CacheHandle>,
    stack: Stack,
}

impl Generation {
    /// The stack of `config` over `parts`, carrying on from `previous`: the retry counters
    /// and budget, and the cache's store and counters.
    fn build(config: ProxyConfig, parts: &Parts, previous: Option<&Generation>) -> Self {
        let retry = match previous {
            Some(p) => p.retry.reconfigured(config.bounded_retry()),
            // Every layer below hands heads back (the balancer, the breakers, the pools).
            None => RetryLayer::new(config.bounded_retry()).heads_returned(),
        };
        let headers = (parts.headers.clone())
            .preserve_host(config.preserve_host)
            .upgrade_idle_timeout(Some(config.upgrade_idle_timeout).filter(|idle| !idle.is_zero()))
            .upgrade_protocols(&config.upgrade_protocols);
        let upstream = ServiceBuilder::new()
            .layer(headers)
            .map_future(Box::pin as fn(_) -> _)
            .layer(retry.clone())
            .map_request(unreplay as fn(_) -> _)
            .service(parts.balance.clone());
        // The cache sits above the retries and their deadline: a hit takes no timer, and a
        // stored response can answer for backends that time out (stale-if-error).
        let before = previous.and_then(|p| p.cache.as_ref());
        let (cached, cache) = match (&config.cache, before) {
            (Some(cache), before) => {
                let layer = match before {
                    Some(handle) => handle.reconfigured(cache.clone()),
                    None => CacheLayer::new(cache.clone()),
                };
                let handle = layer.handle();
                let cached = MapResponse::new(layer.layer(upstream), box_cached as fn(_) -> _);
                (Either::Left(cached), Some(handle))
            }
            (None, _) => (Either::Right(upstream), None),
        };
        // The host is checked before the cache keys on it or a backend sees it.
        let stack = (parts.top).layer(StrictHost::new(ErrorResponseLayer::new().layer(cached)));
        // Above everything, so that the trace covers the whole request and every answer,
        // the stack's own included.
        let tracing = RequestTraceLayer::new(
            parts.traces.clone(),
            config.trace,
            config.generate_traceparent,
        );
        let stack = tracing.layer(stack);
        Self {
            config: Arc::new(config),
            loaded: SystemTime::now(),
            retry,
            cache,
            stack,
        }
    }
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
        let tls_files = AtomicU64::new(config.tls_files());
        let endpoints = HttpEndpoints {
            pool: ArcSwap::from_pointee(PoolConfig {
                tls: Some(tls.clone()),
                ..config.pool.clone()
            }),
            breakers: CircuitBreakers::new(config.breaker.clone()),
            metrics: metrics.clone(),
            checker: SameTls::new(tls),
        };
        // Health checks trust what requests trust.
        let checker = endpoints.checker.clone();
        let (registry, discovery) = Registry::builder(config.health.clone(), endpoints)
            .checker(checker)
            .build();
        crate::registry::follow_breakers(&registry);
        let balance = Balance::weighted_with(discovery, config.balance.clone())
            .route_hints(RouteHint::in_extensions)
            .attempt_traces(AttemptSlot::in_extensions)
            .unsent(GiveBack::give_back);
        let endpoints = balance.endpoint_count();
        let headers = ProxyHeadersLayer::new();
        let tunnels = headers.tunnels().clone();
        // Always in place, recording while `metrics` is on: it can be turned on and off
        // while the proxy runs (`MetricsRegistry::set_enabled`).
        metrics.set_enabled(config.metrics);
        let top = MetricsLayer::new(&metrics);
        let parts = Parts {
            balance,
            headers,
            top,
            traces: Traces::default(),
        };
        let first = Generation::build(config, &parts, None);
        // Later generations share these counters (see `Generation::build`).
        let retries = first.retry.clone();
        metrics.retry_source(move || retries.stats().retries);
        if let Some(cache) = first.cache.clone() {
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
        if let Some(cache) = first.cache.clone().filter(|c| c.config().shared.is_some()) {
            metrics.register_collector(SharedTierMetrics(cache));
        }

        let first = Arc::new(first);
        Self {
            stack: first.stack.clone(),
            current: first.clone(),
            seen: 0,
            shared: Arc::new(Shared {
                registry,
                endpoints,
                metrics,
                tunnels,
                parts,
                current: ArcSwap::new(first),
                reloads: AtomicU64::new(0),
                tls_files,
            }),
        }
    }

    /// The configuration in force: the one the proxy was built with, or the last one
    /// [`Proxy::reconfigure`] applied.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.shared.current.load().config.clone()
    }

    /// When the configuration in force was applied.
    pub fn config_loaded_at(&self) -> SystemTime {
        self.shared.current.load().loaded
    }

    /// Applies `config` to the requests from now on, keeping what the proxy holds: the
    /// backends, their breakers' states (under the new breaker settings), their pools and
    /// connections, the cached responses (a smaller cache evicts down to its new size) and
    /// the retry counters. Requests in flight finish on the settings they started with.
    ///
    /// The retry, breaker, cache, timeout, host, upgrade and balancer-policy settings apply
    /// at once, and so do the connection pools' limits and timeouts: new connections and
    /// new checkouts follow them, a lower idle limit closes the idle connections beyond it
    /// (see [`switchyard_pool::Pool::reconfigure`]). New backend TLS settings (CA and
    /// client certificate files, those files rewritten in place, `pool.tls`) or a new
    /// HTTP/1.1 engine apply to the connections dialled from now on, and to the health
    /// checks: the pooled connections made before take no new request (the idle ones close
    /// now, the busy ones once their response ends). The health checks take their new
    /// settings at their next round, keeping every backend's health
    /// ([`Registry::reconfigure`](switchyard_health::Registry::reconfigure)): checks turned
    /// on start at each backend's next round, turned off they stop and every backend's
    /// health is forgotten (routable); a new name server resolves every name again at once.
    /// A new slow start applies to the ramps under way and to come. Metrics turned off
    /// stop recording at once (snapshots and `/metrics` then show nothing recorded);
    /// turned on, they go on from the numbers they stood at. A configuration that does
    /// not validate changes nothing and comes back with every problem.
    pub fn reconfigure(&self, config: ProxyConfig) -> Result<Reconfigured, Vec<ConfigProblem>> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut done = Reconfigured::default();
        self.shared.current.rcu(|now| {
            done = now.config.changes(&config);
            Arc::new(Generation::build(
                config.clone(),
                &self.shared.parts,
                Some(now),
            ))
        });
        self.shared.reloads.fetch_add(1, Ordering::Release);
        // The same files, rewritten in place (a renewed client certificate), are new
        // settings too.
        let files = self.config().tls_files();
        let rewritten = self.shared.tls_files.swap(files, Ordering::Relaxed) != files;
        if rewritten && !done.applied.contains(&"backend TLS") {
            done.applied.push("backend TLS");
        }
        if done.applied.contains(&"balancer") {
            let policy = self.config().balance.policy;
            self.shared.parts.balance.set_policy(policy);
        }
        if done.applied.contains(&"slow_start") {
            let window = self.config().balance.slow_start;
            self.shared.parts.balance.set_slow_start(window);
        }
        let checks = ["health_check", "health_check_enabled", "dns_server"];
        if checks.iter().any(|c| done.applied.contains(c)) {
            self.shared
                .registry
                .reconfigure(self.config().health.clone());
        }
        let pools = ["connection pool", "backend_http1", "backend TLS"];
        if pools.iter().any(|p| done.applied.contains(p)) {
            let config = self.config();
            let tls = (done.applied.contains(&"backend TLS")).then(|| config.tls_config());
            HttpEndpoints::reconfigure_pools(&self.shared.registry, &config.pool, tls);
        }
        if done.applied.contains(&"metrics_enabled") {
            self.shared.metrics.set_enabled(self.config().metrics);
        }
        if done.applied.contains(&"circuit_breaker") {
            let breaker = self.config().breaker.clone();
            self.shared
                .registry
                .endpoints()
                .breakers
                .set_config(breaker);
        }
        Ok(done)
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

    /// Name resolutions (A/AAAA and `dns+srv://`) that have failed since the proxy
    /// started; each kept the last good addresses or targets.
    pub fn resolve_failures(&self) -> u64 {
        self.shared.registry.resolve_failures()
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
        self.shared.current.load().retry.stats()
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
    pub fn cache(&self) -> Option<CacheHandle> {
        self.shared.current.load().cache.clone()
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
        &self.shared.parts.traces
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
        // A reload since this clone's last request: the next one takes the new stack (a
        // stack readied before it is dropped unused).
        let reloads = self.shared.reloads.load(Ordering::Acquire);
        if reloads != self.seen {
            self.seen = reloads;
            let latest = self.shared.current.load();
            self.current = Arc::clone(&latest);
            self.stack = self.current.stack.clone();
        }
        self.stack.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut req = req.map(body::boxed_request);
        // The request's deadline: the retry layer bounds every attempt, backoff and wait
        // for a ready backend by it (one timer per request), and an attempt cut off at it
        // counts against its backend. A cache hit above the retries needs no timer.
        req.extensions_mut()
            .insert(Deadline::after(self.current.config.request_timeout));
        self.stack.call(req)
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.current.config)
            .field("backends", &self.list_backends())
            .finish()
    }
}
