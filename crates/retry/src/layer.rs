use tower::Layer;

use crate::service::Heads;
use crate::{HttpPolicy, Retry, RetryConfig, RetryStats};

/// Builds [`Retry`] with a policy; the services it builds share that policy's state (with
/// [`HttpPolicy`]: one budget and one set of counters).
#[derive(Debug, Clone)]
pub struct RetryLayer<P = HttpPolicy> {
    policy: P,
    heads: Heads,
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
        Self {
            policy: self.policy.reconfigured(config),
            heads: self.heads,
        }
    }
}

impl<P> RetryLayer<P> {
    /// A layer with `policy`.
    pub fn with_policy(policy: P) -> Self {
        Self {
            policy,
            heads: Heads::Copied,
        }
    }

    /// Sends a retry with the head the services below hand back instead of a copy made
    /// before the first attempt (see [`RouteHint`](switchyard_core::RouteHint)); a request
    /// whose head does not come back is not retried. Only for a stack that hands every
    /// head back: switchyard's balancer (with [`Balance::unsent`]), circuit breaker and
    /// pool do. Hedged requests are still copied, as both attempts are in flight at once.
    ///
    /// [`Balance::unsent`]: https://docs.rs/switchyard-balance
    pub fn heads_returned(mut self) -> Self {
        self.heads = Heads::Returned;
        self
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
        Retry::new(inner, self.policy.clone()).with_heads(self.heads)
    }
}
