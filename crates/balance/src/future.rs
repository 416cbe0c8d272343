//! The response future of [`Balance`](crate::Balance).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use tokio::time::Instant;

use crate::load::Load;

pin_project! {
    /// The chosen endpoint's response future, or [`NoBackendsAvailable`](crate::NoBackendsAvailable).
    /// Under a load-aware policy it counts the request in flight on its endpoint until the
    /// response head (or until dropped), and under `peak_ewma` records how long that took.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: switchyard_core::future::ResponseFuture<F>,
        load: Option<InFlight>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F, load: Option<InFlight>) -> Self {
        Self {
            inner: switchyard_core::future::ResponseFuture::called(fut),
            load,
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        Self {
            inner: switchyard_core::future::ResponseFuture::failed(err),
            load: None,
        }
    }
}

// Yields what the endpoint's future did (its error boxed), once the request is counted out.
impl<F> Future for ResponseFuture<F>
where
    switchyard_core::future::ResponseFuture<F>: Future,
{
    type Output = <switchyard_core::future::ResponseFuture<F> as Future>::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Some(load) = this.load.take() {
            load.done();
        }
        Poll::Ready(out)
    }
}

/// A request in flight on an endpoint; dropping it ends the count.
#[derive(Debug)]
pub(crate) struct InFlight {
    load: Arc<Load>,
    /// When the request was sent, if its latency is recorded.
    sent: Option<Instant>,
}

impl InFlight {
    /// Counts a request sent on `load`'s endpoint (at `sent`, if it is timed).
    pub(crate) fn new(load: Arc<Load>, sent: Option<Instant>) -> Self {
        load.start();
        Self { load, sent }
    }

    fn done(self) {
        if let Some(sent) = self.sent {
            let now = Instant::now();
            self.load.observe(now.saturating_duration_since(sent), now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.finish();
    }
}
