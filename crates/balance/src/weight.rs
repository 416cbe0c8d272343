use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

/// An endpoint's share of the traffic relative to the others.
pub trait Weight {
    /// The weight; `0` is treated as `1`.
    fn weight(&self) -> u32;

    /// The endpoint's name, for a request's decision trace (the endpoint a
    /// power-of-two-choices draw passed over is named by it); none by default.
    fn name(&self) -> Option<Arc<str>> {
        None
    }
}

/// A service tagged with a weight, for [`Balance::weighted`](crate::Balance::weighted).
#[derive(Debug, Clone)]
pub struct Weighted<S> {
    inner: S,
    weight: u32,
}

impl<S> Weighted<S> {
    /// Tags `inner` with `weight` (`0` counts as `1`).
    pub fn new(inner: S, weight: u32) -> Self {
        Self {
            inner,
            weight: weight.max(1),
        }
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S> Weight for Weighted<S> {
    fn weight(&self) -> u32 {
        self.weight
    }
}

impl<S, Req> Service<Req> for Weighted<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}
