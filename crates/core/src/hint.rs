//! How a retry tells the balancer which backend the previous attempt went to.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shared by the attempts of one request: the retry layer puts an `Arc<RouteHint>` in the
/// request's extensions, the balancer reads it there ([`RouteHint::in_extensions`]),
/// records the endpoint each attempt goes to, and avoids the previous one when another is
/// ready.
#[derive(Debug, Default)]
pub struct RouteHint(AtomicU64);

impl RouteHint {
    /// A hint with no attempt recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// The endpoint the last attempt went to (`None` before the first).
    pub fn last(&self) -> Option<u64> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// Records the endpoint an attempt goes to. Endpoint ids start at 1.
    pub fn set(&self, endpoint: u64) {
        self.0.store(endpoint, Ordering::Release);
    }

    /// The hint a request carries in its extensions (as an `Arc<RouteHint>`), if any: the
    /// reader to give `switchyard_balance::Balance::route_hints`.
    pub fn in_extensions<B>(req: &http::Request<B>) -> Option<&RouteHint> {
        req.extensions().get::<Arc<RouteHint>>().map(|hint| &**hint)
    }
}
