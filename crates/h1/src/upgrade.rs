//! Protocol upgrades: `101 Switching Protocols`, and CONNECT answered with a 2xx.
//!
//! A request that asks for an upgrade (HTTP/1.1 with an `Upgrade` field, or CONNECT)
//! carries an [`OnUpgrade`] extension. When the service answers it with 101 (or a 2xx to
//! CONNECT), the engine writes the head, stops speaking HTTP on the connection and hands
//! the I/O, with any bytes it had read past the request, to the [`OnUpgrade`] future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use crate::error::Error;

/// The I/O an upgraded connection runs on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A connection taken over from HTTP/1.1.
pub struct Upgraded {
    io: Box<dyn Io>,
    read_buf: Bytes,
}

impl Upgraded {
    pub(crate) fn new(io: Box<dyn Io>, read_buf: Bytes) -> Self {
        Self { io, read_buf }
    }

    /// The I/O, and the bytes the client sent after the request that were already read:
    /// they come first.
    pub fn into_parts(self) -> (Box<dyn Io>, Bytes) {
        (self.io, self.read_buf)
    }
}

/// Reads the bytes read past the head first, then the connection.
impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read_buf.is_empty() {
            let n = self.read_buf.len().min(buf.remaining());
            buf.put_slice(&self.read_buf.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("read_buf", &self.read_buf.len())
            .finish_non_exhaustive()
    }
}

/// A request extension that resolves to the [`Upgraded`] connection once the response
/// that switches protocols has been written; an error if the connection did not switch.
///
/// `Clone` because `http::Extensions` wants it: clones share one slot, and the first
/// clone to see the connection takes it.
#[derive(Debug, Clone)]
pub struct OnUpgrade {
    // Only requests that ask for an upgrade pay for this, and the lock is only ever
    // tried from `poll`, never held across an await.
    rx: Arc<tokio::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>,
}

impl OnUpgrade {
    pub(crate) fn pair() -> (oneshot::Sender<Upgraded>, OnUpgrade) {
        let (tx, rx) = oneshot::channel();
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        (tx, OnUpgrade { rx })
    }
}

impl Future for OnUpgrade {
    type Output = Result<Upgraded, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(mut slot) = self.rx.try_lock() else {
            // Another clone is being polled this very moment: try again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        let Some(rx) = slot.as_mut() else {
            return Poll::Ready(Err(Error::no_upgrade()));
        };
        let upgraded = ready!(Pin::new(rx).poll(cx));
        *slot = None;
        Poll::Ready(upgraded.map_err(|_| Error::no_upgrade()))
    }
}
