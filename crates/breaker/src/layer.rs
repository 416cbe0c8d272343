use std::sync::Arc;

use switchyard_core::HttpClassifier;
use tower::Layer;

use crate::{Breaker, BreakerConfig, CircuitBreaker};

/// Wraps services with one shared [`Breaker`]: every service this layer builds, and every
/// clone of them, trips and recovers together.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = HttpClassifier> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer with a new breaker of its own, judging results with [`HttpClassifier`].
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_breaker(Arc::new(Breaker::standalone("breaker", config)))
    }

    /// A layer over an existing breaker (from [`CircuitBreakers`](crate::CircuitBreakers)).
    pub fn with_breaker(breaker: Arc<Breaker>) -> Self {
        Self {
            breaker,
            classifier: HttpClassifier::new(),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Judges results with `classifier` instead ([`GrpcClassifier`](crate::GrpcClassifier)
    /// for gRPC, or a closure).
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker, to read its state or force it.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
