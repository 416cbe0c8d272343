//! The response future of [`Cache`](crate::Cache).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::CacheBody;

type Upstream<RB, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<RB>>, E>> + Send>>;

pin_project! {
    /// The response future of [`Cache`](crate::Cache): a response answered from the cache is ready at
    /// once (no allocation for the future); one that goes upstream is boxed.
    pub struct ResponseFuture<RB, E> {
        kind: Kind<RB, E>,
    }
}

enum Kind<RB, E> {
    Ready(Option<Response<CacheBody<RB>>>),
    Upstream(Upstream<RB, E>),
}

impl<RB, E> ResponseFuture<RB, E> {
    pub(crate) fn ready(response: Response<CacheBody<RB>>) -> Self {
        Self {
            kind: Kind::Ready(Some(response)),
        }
    }

    pub(crate) fn upstream<F>(fut: F) -> Self
    where
        F: Future<Output = Result<Response<CacheBody<RB>>, E>> + Send + 'static,
    {
        Self {
            kind: Kind::Upstream(Box::pin(fut)),
        }
    }
}

impl<RB, E> fmt::Debug for ResponseFuture<RB, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Ready(_) => "Ready",
            Kind::Upstream(_) => "Upstream",
        };
        f.debug_tuple("ResponseFuture").field(&kind).finish()
    }
}

impl<RB, E> Future for ResponseFuture<RB, E> {
    type Output = Result<Response<CacheBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind {
            Kind::Ready(response) => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            Kind::Upstream(fut) => fut.as_mut().poll(cx),
        }
    }
}
