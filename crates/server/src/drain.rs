//! A request body that the proxy stopped reading (a backend answered before reading it, or
//! went away) is read to its end and discarded before the connection closes, within
//! bounds: hyper's server would otherwise close the connection with the upload unread,
//! and a client still sending gets a failed write, or a reset, instead of the answer.
//! Like nginx's lingering close, the drain is bounded in time ([`DRAIN_FOR`]) and in bytes
//! ([`DRAIN_MAX`]); past either, the connection closes as before. A body read to its end
//! leaves the connection open for the next request.
//!
//! HTTP/1.1 only: HTTP/2 ends an unread request stream on its own (`RST_STREAM` with
//! `NO_ERROR` after the response), and other streams go on.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Buf, Frame, SizeHint};

/// How long an abandoned request body is read at most.
pub(crate) const DRAIN_FOR: Duration = Duration::from_secs(10);

/// How many bytes of an abandoned request body are read at most.
pub(crate) const DRAIN_MAX: u64 = 256 * 1024 * 1024;

/// A request body that, dropped before its end, is drained by a task; see the
/// [module docs](self). The bounds sit on the struct because its `Drop` needs them.
pub(crate) struct Drain<B: Body + Send + Unpin + 'static> {
    body: Option<B>,
}

impl<B: Body + Send + Unpin + 'static> Drain<B> {
    pub(crate) fn new(body: B) -> Self {
        Self { body: Some(body) }
    }
}

impl<B: Body + Send + Unpin + 'static> Body for Drain<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B: Body + Send + Unpin + 'static> Drop for Drain<B> {
    fn drop(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut read = 0u64;
            let drain = std::future::poll_fn(|cx| loop {
                match Pin::new(&mut body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            read += data.remaining() as u64;
                            if read > DRAIN_MAX {
                                return Poll::Ready(false);
                            }
                        }
                    }
                    Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
                    Poll::Ready(None) => return Poll::Ready(true),
                    Poll::Pending => return Poll::Pending,
                }
            });
            let drained = tokio::time::timeout(DRAIN_FOR, drain).await;
            tracing::trace!(?drained, "abandoned request body drained");
        });
    }
}
