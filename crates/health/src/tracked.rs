//! Counting a backend's requests in flight, so a drain knows when it is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use switchyard_balance::Weight;
use tokio::sync::Notify;
use tower::Service;

/// Requests in flight on one backend (all its endpoints).
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub(crate) fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct Guard(Arc<InFlight>);

impl Guard {
    fn new(inflight: &Arc<InFlight>) -> Self {
        inflight.count.fetch_add(1, Ordering::AcqRel);
        Self(inflight.clone())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// An endpoint as the balancer sees it: the service, its backend's weight and id, and the count
/// of requests in flight (until the response head; a pool that is closed after a drain
/// still finishes the bodies it is streaming).
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    weight: u32,
    backend: Arc<str>,
    inflight: Arc<InFlight>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, weight: u32, backend: Arc<str>, inflight: Arc<InFlight>) -> Self {
        Self {
            inner,
            weight,
            backend,
            inflight,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> Weight for Tracked<S> {
    fn weight(&self) -> u32 {
        self.weight
    }

    /// The backend's id.
    fn name(&self) -> Option<Arc<str>> {
        Some(self.backend.clone())
    }
}

impl<S, Req> Service<Req> for Tracked<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let guard = Guard::new(&self.inflight);
        TrackedFuture {
            inner: self.inner.call(req),
            _guard: guard,
        }
    }
}

pin_project! {
    /// The response future of [`Tracked`].
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        _guard: Guard,
    }
}

impl<F> std::fmt::Debug for TrackedFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrackedFuture")
    }
}

impl<F: Future> Future for TrackedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
