//! The response future of [`Metrics`](crate::Metrics).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::recorder::{InFlight, Outcome};

pin_project! {
    /// The response future of [`Metrics`](crate::Metrics): records the outcome and latency when the
    /// response head (or an error) arrives, and a cancellation if dropped before.
    pub struct ResponseFuture<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) in_flight: Option<InFlight>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_flight", &self.in_flight.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(in_flight) = this.in_flight.take() {
            let outcome = match &result {
                Ok(res) if !res.status().is_server_error() => Outcome::Success,
                _ => Outcome::Failure,
            };
            in_flight.finish(outcome);
        }
        Poll::Ready(result)
    }
}
