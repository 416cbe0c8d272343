//! Turns the stack's errors into responses, so that the service is infallible as axum
//! requires.
//!
//! [`NoBackendsAvailable`](crate::NoBackendsAvailable) and
//! [`CircuitOpen`](crate::CircuitOpen) become `503 Service Unavailable`,
//! [`RequestTimeout`](crate::RequestTimeout) (and tower's `Elapsed`) and
//! [`AttemptTimeout`](crate::AttemptTimeout) `504 Gateway Timeout`,
//! anything else `502 Bad Gateway`. The response carries the [`ErrorKind`] in its
//! extensions for layers above (metrics, logging); its body is a short plain-text reason
//! that reveals nothing of the backend.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, HeaderValue, Response};
use pin_project_lite::pin_project;
use switchyard_core::future::ResponseFuture as Failable;
use switchyard_core::{BoxError, ErrorKind};
use tower::{Layer, Service};

use crate::body::{self, Body};
use crate::Error;

/// Answers the inner service's errors with 503/504/502 responses.
#[derive(Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    /// A readiness error of the inner service, answered by the next `call`.
    failed: Option<BoxError>,
}

impl<S: Clone> Clone for ErrorResponse<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S> ErrorResponse<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            failed: None,
        }
    }

    switchyard_core::inner_accessors!(inner: S);
}

/// The response for a failed forward.
pub fn error_response(err: &Error) -> Response<Body> {
    let reason = match err.kind() {
        ErrorKind::NoBackendsAvailable => "no backend is available\n",
        ErrorKind::CircuitOpen => "backend temporarily unavailable\n",
        ErrorKind::RequestTimeout | ErrorKind::AttemptTimeout => {
            "the backend did not answer in time\n"
        }
        ErrorKind::ClientBody => "bad request: the request body was malformed or cut off\n",
        _ => "bad gateway\n",
    };
    let mut res = Response::new(body::full(reason));
    *res.status_mut() = err.status();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.extensions_mut().insert(err.kind());
    res
}

impl<S, Req> Service<Req> for ErrorResponse<S>
where
    S: Service<Req, Response = Response<Body>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A readiness error is answered by `call` (without calling the inner service), so
        // that this service stays infallible.
        if self.failed.is_none() {
            if let Err(e) = ready!(self.inner.poll_ready(cx)) {
                self.failed = Some(e.into());
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = match self.failed.take() {
            Some(err) => Failable::failed(err),
            None => Failable::called(self.inner.call(req)),
        };
        ResponseFuture { inner }
    }
}

/// Builds [`ErrorResponse`].
#[derive(Debug, Clone, Default)]
pub struct ErrorResponseLayer;

impl ErrorResponseLayer {
    /// Creates the layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse::new(inner)
    }
}

pin_project! {
    /// The response future of [`ErrorResponse`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Failable<F>,
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match ready!(self.project().inner.poll(cx)) {
            Ok(res) => res,
            Err(err) => {
                let err = Error::from(err);
                tracing::debug!(error = %err, status = err.status().as_u16(), "forward failed");
                error_response(&err)
            }
        }))
    }
}
