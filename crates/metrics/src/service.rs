use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use crate::future::ResponseFuture;
use crate::recorder::Recorder;
use crate::MetricsRegistry;

/// A service whose requests are counted and timed. See the [crate docs](crate).
///
/// Made by a [`MetricsLayer`](crate::MetricsLayer) (proxy-wide numbers) or a
/// [`BackendMetrics`](crate::BackendMetrics) (one backend's).
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    /// `None`: metrics are off and requests pass through unrecorded.
    recorder: Option<Arc<Recorder>>,
}

impl<S> Metrics<S> {
    /// Wraps `inner`, recording into `registry`'s proxy-wide numbers.
    pub fn new(inner: S, registry: &MetricsRegistry) -> Self {
        Self::with_recorder(inner, registry.proxy_recorder().clone())
    }

    pub(crate) fn with_recorder(inner: S, recorder: Arc<Recorder>) -> Self {
        Self {
            inner,
            recorder: Some(recorder),
        }
    }

    /// Wraps `inner` without recording anything: the same type as a recording service,
    /// for stacks where metrics can be turned off (see [`MetricsLayer::off`](crate::MetricsLayer::off)).
    pub fn off(inner: S) -> Self {
        Self {
            inner,
            recorder: None,
        }
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S: fmt::Debug> fmt::Debug for Metrics<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for Metrics<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    /// The inner service's readiness, untouched: nothing is recorded until `call`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Started before the inner `call`, which may do work of its own.
        let in_flight = (self.recorder.as_ref())
            .filter(|r| r.is_on())
            .map(|r| r.start());
        ResponseFuture {
            inner: self.inner.call(req),
            in_flight,
        }
    }
}
