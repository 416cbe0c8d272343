use tower::Layer;

use crate::{HttpPolicy, Retry, RetryConfig, RetryStats};

/// Builds [`Retry`] with a policy; the services it builds share that policy's state (with
/// [`HttpPolicy`]: one budget and one set of counters).
#[derive(Debug, Clone)]
pub struct RetryLayer<P = HttpPolicy> {
    policy: P,
}

impl RetryLayer {
    /// A layer with the [`HttpPolicy`] of `config`.
    pub fn new(config: RetryConfig) -> Self {
        Self::with_policy(HttpPolicy::new(config))
    }
}

impl RetryLayer {
    /// A layer of `config` sharing this one's counters and budget (see
    /// [`HttpPolicy::reconfigured`]).
    pub fn reconfigured(&self, config: RetryConfig) -> Self {
        Self::with_policy(self.policy.reconfigured(config))
    }
}

impl<P> RetryLayer<P> {
    /// A layer with `policy`.
    pub fn with_policy(policy: P) -> Self {
        Self { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<C> RetryLayer<HttpPolicy<C>> {
    /// The counters of every service this layer built.
    pub fn stats(&self) -> RetryStats {
        self.policy.stats()
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy.clone())
    }
}
