//! The response future of a layer that either calls its inner service or fails before
//! calling it.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::BoxError;
use pin_project_lite::pin_project;

pin_project! {
    /// The inner service's response future, or an error found before calling it (a readiness
    /// error kept for `call`, no endpoint to call). Either way the error is a [`BoxError`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Called { #[pin] fut: F },
        Failed { err: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    /// The inner service was called: `fut` is its response future.
    pub fn called(fut: F) -> Self {
        Self {
            state: State::Called { fut },
        }
    }

    /// The request failed before the inner service was called.
    pub fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed { err: Some(err) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { fut } => Poll::Ready(ready!(fut.poll(cx)).map_err(Into::into)),
            StateProj::Failed { err } => {
                Poll::Ready(Err(err.take().expect("polled after completion")))
            }
        }
    }
}
