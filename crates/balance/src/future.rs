use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use switchyard_core::BoxError;

pin_project! {
    /// The response future of [`Balance`](crate::Balance).
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
    pub(crate) fn called(fut: F) -> Self {
        Self {
            state: State::Called { fut },
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
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
