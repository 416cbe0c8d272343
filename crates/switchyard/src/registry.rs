//! The facade's endpoint factory for the backend registry: per address, a circuit
//! breaker over a connection pool.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::future::BoxFuture;
use http::StatusCode;

use switchyard_breaker::{CircuitBreaker, CircuitBreakers, HttpClassifier};
use switchyard_core::BoxError;
use switchyard_health::{
    AdminState, BackendSpec, CheckError, CheckTarget, Checker, Endpoints, HttpChecker, Listed,
    Registry,
};
use switchyard_metrics::{Metrics, MetricsRegistry};
use switchyard_pool::{PoolConfig, PoolStats, Protocol, TlsConfig};
use tower::Layer;

use crate::body::Body;

use crate::endpoint::HttpEndpoint;
use crate::Backend;

/// One endpoint of the balancer: a backend's address behind its breaker, counted in the
/// backend's metrics.
pub(crate) type EndpointService = Metrics<CircuitBreaker<HttpEndpoint<Body>>>;

/// The pool under an endpoint.
pub(crate) fn pool_of(service: &EndpointService) -> &HttpEndpoint<Body> {
    service.get_ref().get_ref()
}

/// Makes the endpoints of HTTP backends.
#[derive(Debug)]
pub(crate) struct HttpEndpoints {
    /// Its `tls` is used for `https` backends (see `HttpEndpoint::new`). Swapped by
    /// [`HttpEndpoints::reconfigure_pools`]; read when an endpoint is made.
    pub(crate) pool: ArcSwap<PoolConfig>,
    pub(crate) breakers: CircuitBreakers,
    /// The backends' numbers, recorded while the registry's switch is on.
    pub(crate) metrics: MetricsRegistry,
    /// The health checks' TLS settings: the pools'.
    pub(crate) checker: SameTls,
}

impl HttpEndpoints {
    /// Applies `pool` to the endpoints made from now on and to those of `registry` (see
    /// [`switchyard_pool::Pool::reconfigure`]): its limits, timeouts and HTTP/1.1 engine,
    /// and `tls` when given (for `https` backends, and the health checks), else the TLS
    /// settings in force.
    pub(crate) fn reconfigure_pools(
        registry: &Registry<Self>,
        pool: &PoolConfig,
        tls: Option<TlsConfig>,
    ) {
        let endpoints = registry.endpoints();
        let mut next = pool.clone();
        endpoints.pool.rcu(|now| {
            next = PoolConfig {
                tls: tls.clone().or_else(|| now.tls.clone()),
                ..pool.clone()
            };
            next.clone()
        });
        if let Some(tls) = tls {
            endpoints.checker.set(tls);
        }
        // After the swap: an endpoint made since has the new settings already.
        for backend in registry.list() {
            for (_, service) in registry.services(&backend.spec.id) {
                pool_of(&service).reconfigure(next.clone());
            }
        }
    }
}

/// The health checker of the proxy's registry: an [`HttpChecker`] with the TLS settings
/// the pools use, changed with them. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct SameTls(Arc<ArcSwap<HttpChecker>>);

impl SameTls {
    pub(crate) fn new(tls: TlsConfig) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(HttpChecker::with_tls(tls))))
    }

    /// Checks from now on trust `tls`.
    fn set(&self, tls: TlsConfig) {
        self.0.store(Arc::new(HttpChecker::with_tls(tls)));
    }
}

impl Checker for SameTls {
    fn check(&self, target: CheckTarget) -> BoxFuture<'static, Result<StatusCode, CheckError>> {
        self.0.load().check(target)
    }
}

impl Endpoints for HttpEndpoints {
    type Service = EndpointService;

    fn make(&self, backend: &BackendSpec, addr: SocketAddr) -> Result<EndpointService, BoxError> {
        let pool = PoolConfig {
            protocol: protocol(backend),
            ..PoolConfig::clone(&self.pool.load())
        };
        let endpoint = HttpEndpoint::with_address(&backend.url, addr, pool)?;
        let breaker = self.breakers.breaker(&backend.id);
        let guarded = CircuitBreaker::new(endpoint, breaker, HttpClassifier::new());
        Ok(self.metrics.backend(&backend.id).layer(guarded))
    }

    fn retire(&self, _: &BackendSpec, service: &EndpointService) {
        // Idle connections close now, busy ones after their response.
        pool_of(service).close();
    }

    fn removed(&self, backend: &BackendSpec) {
        self.breakers.remove(&backend.id);
        self.metrics.remove_backend(&backend.id);
    }

    fn resolve_failed(&self, backend: &BackendSpec, _: &str) {
        // A name that no longer resolves counts like a refused connection.
        self.breakers.breaker(&backend.id).record_failure();
    }

    fn recovered(&self, backend: &BackendSpec, _: SocketAddr) {
        // The checks saw it down and now up again (a restart, say): its breaker's open
        // time, doubled by every probe that failed while it was down, says nothing more.
        if let Some(breaker) = self.breakers.get(&backend.id) {
            breaker.reset();
        }
    }

    fn passive(&self, backend: &BackendSpec) -> Option<String> {
        self.breakers
            .state(&backend.id)
            .filter(|s| !s.is_closed())
            .map(|s| format!("circuit {}", s.name()))
    }

    fn available(&self, backend: &BackendSpec) -> bool {
        // Half-open counts as not yet: its probes decide.
        (self.breakers.state(&backend.id)).is_none_or(|s| s.is_closed())
    }
}

/// Tells `registry` of every circuit breaker that opens or closes, so that a `dns+srv://`
/// backend's traffic moves to its next priority group while the breakers of the first are
/// open, and back once they close. Ends when the registry is gone (the breakers' channel
/// closes with it).
pub(crate) fn follow_breakers(registry: &Registry<HttpEndpoints>) {
    let mut transitions = registry.endpoints().breakers.subscribe();
    let registry = registry.downgrade();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match transitions.recv().await {
                Ok(t) if t.from.is_closed() == t.to.is_closed() => continue,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
            let Some(registry) = registry.upgrade() else {
                return;
            };
            registry.availability_changed();
        }
    });
}

fn protocol(backend: &BackendSpec) -> Protocol {
    if backend.http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    }
}

pub(crate) fn spec(backend: &Backend) -> BackendSpec {
    BackendSpec {
        id: backend.id.clone(),
        url: backend.url.clone(),
        weight: backend.weight,
        http2: backend.protocol == Protocol::Http2,
    }
}

pub(crate) fn backend(listed: Listed) -> Backend {
    let protocol = protocol(&listed.spec);
    Backend {
        id: listed.spec.id,
        url: listed.spec.url,
        weight: listed.spec.weight,
        active: listed.admin == AdminState::Enabled,
        protocol,
    }
}

/// The pool counters of backend `id`'s endpoints, added up.
pub(crate) fn pool_stats(registry: &Registry<HttpEndpoints>, id: &str) -> PoolStats {
    let mut sum = PoolStats::default();
    for (_, service) in registry.services(id) {
        sum += pool_of(&service).pool_stats();
    }
    sum
}
