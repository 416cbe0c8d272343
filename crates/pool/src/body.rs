use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use switchyard_core::BoxError;

use crate::service::{NativeConn, Release};
use crate::tls::Stream;

/// The native engine's response body.
type NativeBody<B> = switchyard_h1::ResponseBody<Stream, B>;

/// A response body from the pool. When it has been read to the end its connection goes
/// back to the pool (HTTP/1.1) or its stream is released (HTTP/2); dropped half read,
/// its HTTP/1.1 connection is closed, as it cannot carry another request.
pub struct PooledBody<B> {
    body: Inner<B>,
    release: Option<Release<B>>,
}

// A pool runs one engine, so each body is one variant; boxing would allocate per request.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Inner<B> {
    Hyper(Incoming),
    Native(NativeBody<B>),
}

impl<B> Inner<B> {
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Hyper(b) => b.is_end_stream(),
            Self::Native(b) => b.is_finished(),
        }
    }

    /// The native connection, when it can carry another request.
    fn take_connection(&mut self) -> Option<NativeConn> {
        match self {
            Self::Hyper(_) => None,
            Self::Native(b) => b.take_connection(),
        }
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            if self.body.is_end_stream() {
                release.done(self.body.take_connection());
            } else {
                release.abandon();
            }
        }
    }
}

impl<B> From<Incoming> for Inner<B> {
    fn from(body: Incoming) -> Self {
        Self::Hyper(body)
    }
}

impl<B> From<NativeBody<B>> for Inner<B> {
    fn from(body: NativeBody<B>) -> Self {
        Self::Native(body)
    }
}

impl<B> PooledBody<B> {
    /// A body whose connection goes back with `release`, or, without one, whose
    /// connection is not the pool's any more.
    pub(crate) fn new(body: impl Into<Inner<B>>, release: Option<Release<B>>) -> Self {
        let mut body = Self {
            body: body.into(),
            release,
        };
        if body.body.is_end_stream() {
            // Nothing to read (204, HEAD, Content-Length: 0): the connection is free now,
            // whether or not anyone polls this body.
            body.finish();
        }
        body
    }

    fn finish(&mut self) {
        if let Some(release) = self.release.take() {
            release.done(self.body.take_connection());
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

impl<B> Body for PooledBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = match &mut this.body {
            Inner::Hyper(b) => ready!(Pin::new(b).poll_frame(cx)).map(|f| f.map_err(Into::into)),
            Inner::Native(b) => ready!(Pin::new(b).poll_frame(cx)).map(|f| f.map_err(Into::into)),
        };
        match &frame {
            Some(Ok(_)) if !this.body.is_end_stream() => {}
            Some(Err(_)) => {
                if let Some(release) = this.release.take() {
                    release.abandon();
                }
            }
            // The last frame, or the end.
            _ => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Inner::Hyper(b) => b.size_hint(),
            Inner::Native(b) => b.size_hint(),
        }
    }
}
