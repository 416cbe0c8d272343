use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::service::Release;

pin_project! {
    /// A response body from the pool. When it has been read to the end its connection goes
    /// back to the pool (HTTP/1.1) or its stream is released (HTTP/2); dropped half read,
    /// its HTTP/1.1 connection is closed, as it cannot carry another request.
    pub struct PooledBody<B> {
        #[pin]
        body: Incoming,
        release: Option<Release<B>>,
    }

    impl<B> PinnedDrop for PooledBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(release) = this.release.take() {
                if this.body.is_end_stream() {
                    release.done();
                } else {
                    release.abandon();
                }
            }
        }
    }
}

impl<B> PooledBody<B> {
    pub(crate) fn new(body: Incoming, release: Release<B>) -> Self {
        let mut body = Self {
            body,
            release: Some(release),
        };
        if body.body.is_end_stream() {
            // Nothing to read (204, HEAD, Content-Length: 0): the connection is free now,
            // whether or not anyone polls this body.
            if let Some(release) = body.release.take() {
                release.done();
            }
        }
        body
    }
}

impl<B> PooledBody<B> {
    /// A body whose connection is not the pool's any more.
    pub(crate) fn unpooled(body: Incoming) -> Self {
        Self {
            body,
            release: None,
        }
    }
}

impl<B> std::fmt::Debug for PooledBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("done", &self.release.is_none())
            .finish()
    }
}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.body.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.body.is_end_stream() => {}
            Some(Err(_)) => {
                if let Some(release) = this.release.take() {
                    release.abandon();
                }
            }
            // The last frame, or the end.
            _ => {
                if let Some(release) = this.release.take() {
                    release.done();
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
