//! The set of backends, and the discovery stream that feeds it to the balancer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use switchyard_balance::Weighted;
use switchyard_breaker::{CircuitBreaker, CircuitBreakers, HttpClassifier};
use tokio::sync::mpsc;
use tower::discover::Change;

use switchyard_pool::{PoolConfig, PoolStats};

use crate::endpoint::HttpEndpoint;
use crate::{Backend, BackendError};

// Admin operations only: allowed here, and nowhere on the request path.
#[allow(clippy::disallowed_types)]
type AdminLock<T> = std::sync::Mutex<T>;

struct Entry {
    backend: Backend,
    endpoint: HttpEndpoint,
}

pub(crate) type Endpoint = Weighted<CircuitBreaker<HttpEndpoint>>;
type Event = Result<Change<String, Endpoint>, Infallible>;

/// Backends by id. Only the admin path (add, remove, list) touches the lock; requests read
/// the balancer's snapshot.
pub(crate) struct Registry {
    // A lock on the admin path only: it keeps the list and the order of discovery events
    // consistent when backends are changed concurrently. Never held across an await.
    backends: AdminLock<Vec<Entry>>,
    changes: mpsc::UnboundedSender<Event>,
    pool: PoolConfig,
    breakers: CircuitBreakers,
}

impl Registry {
    pub(crate) fn new(pool: PoolConfig, breakers: CircuitBreakers) -> (Self, Discovery) {
        let (changes, rx) = mpsc::unbounded_channel();
        let registry = Self {
            backends: AdminLock::default(),
            changes,
            pool,
            breakers,
        };
        (registry, Discovery { rx })
    }

    pub(crate) fn add(&self, backend: Backend) -> Result<(), BackendError> {
        if let Some(problem) = backend.validate().into_iter().next() {
            return Err(BackendError::Invalid {
                id: backend.id,
                reason: problem.to_string(),
            });
        }
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        if backends.iter().any(|e| e.backend.id == backend.id) {
            return Err(BackendError::Duplicate(backend.id));
        }
        let pool = PoolConfig {
            protocol: backend.protocol,
            ..self.pool.clone()
        };
        let endpoint =
            HttpEndpoint::new(&backend.url, pool).map_err(|reason| BackendError::Invalid {
                id: backend.id.clone(),
                reason,
            })?;
        if backend.active {
            let breaker = self.breakers.breaker(&backend.id);
            let guarded = CircuitBreaker::new(endpoint.clone(), breaker, HttpClassifier::new());
            let weighted = Weighted::new(guarded, backend.weight);
            // The receiver lives as long as the balancer, which the proxy holds.
            let _ = self
                .changes
                .send(Ok(Change::Insert(backend.id.clone(), weighted)));
        }
        tracing::info!(id = %backend.id, url = %backend.url, weight = backend.weight, active = backend.active, "backend added");
        backends.push(Entry { backend, endpoint });
        Ok(())
    }

    pub(crate) fn remove(&self, id: &str) -> Result<Backend, BackendError> {
        let mut backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let pos = backends
            .iter()
            .position(|e| e.backend.id == id)
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))?;
        let Entry { backend, endpoint } = backends.remove(pos);
        let _ = self.changes.send(Ok(Change::Remove(backend.id.clone())));
        // Requests already routed to it finish; its idle connections close now.
        endpoint.close();
        self.breakers.remove(&backend.id);
        tracing::info!(id = %backend.id, "backend removed");
        Ok(backend)
    }

    pub(crate) fn list(&self) -> Vec<Backend> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends.iter().map(|e| e.backend.clone()).collect()
    }

    pub(crate) fn pool_stats(&self) -> Vec<(String, PoolStats)> {
        let backends = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        backends
            .iter()
            .map(|e| (e.backend.id.clone(), e.endpoint.pool_stats()))
            .collect()
    }
}

/// The balancer's view of the registry: a stream of endpoint insertions and removals.
#[derive(Debug)]
pub(crate) struct Discovery {
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Stream for Discovery {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
