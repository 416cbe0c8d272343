//! Early responses: a backend may answer a request (413, 401, a redirect) before it has read
//! the body, then close the connection with the rest of the body unread, which makes its
//! kernel reset the connection. The answer is already in our receive buffer, but hyper's
//! HTTP/1.1 client writes the body in a loop and reports the first failed write as the
//! request's error, ahead of the response it has not yet read.
//!
//! [`Linger`] holds such a write error back for a moment: the write waits while the read
//! side goes on, so the response head (and what arrived of its body) reaches the caller.
//! The error is let through as soon as the read side ends (the end of the stream or an
//! error: the backend is gone), or after [`GRACE`] at the latest.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// How long a failed write waits for the read side at most.
pub(crate) const GRACE: Duration = Duration::from_secs(1);

pin_project! {
    /// A backend connection whose failed writes wait for the response; see the
    /// [module docs](self).
    pub(crate) struct Linger<T> {
        #[pin]
        io: T,
        state: State,
    }
}

enum State {
    Open,
    /// A write failed: the error is held until the read side ends or the grace is over.
    Failed {
        error: io::Error,
        grace: Pin<Box<Sleep>>,
    },
    /// The read side ended (or the grace is over): writes fail at once.
    Closed(io::ErrorKind),
}

impl<T> Linger<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            state: State::Open,
        }
    }
}

/// The peer has gone: a write failed because the connection was reset or shut down.
fn peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

impl State {
    /// What a write must return, given the result of the write to the socket. `None`
    /// runs the write (the state is `Open`).
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Error>> {
        match self {
            Self::Open => None,
            Self::Closed(kind) => Some(Poll::Ready(io::Error::from(*kind))),
            Self::Failed { grace, .. } => {
                if grace.as_mut().poll(cx).is_pending() {
                    return Some(Poll::Pending);
                }
                Some(Poll::Ready(self.close()))
            }
        }
    }

    /// Ends the grace: the held error, if any, to return now.
    fn close(&mut self) -> io::Error {
        let kind = match self {
            Self::Closed(kind) => *kind,
            Self::Failed { error, .. } => error.kind(),
            Self::Open => io::ErrorKind::BrokenPipe,
        };
        match std::mem::replace(self, Self::Closed(kind)) {
            Self::Failed { error, .. } => error,
            _ => io::Error::from(kind),
        }
    }

    /// A write failed with `error`: hold it, or return it if it is not a peer gone.
    fn fail<R>(&mut self, error: io::Error, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if !peer_gone(&error) {
            return Poll::Ready(Err(error));
        }
        tracing::trace!(%error, "backend write failed; reading its response first");
        *self = Self::Failed {
            error,
            grace: Box::pin(tokio::time::sleep(GRACE)),
        };
        match self.poll_held(cx) {
            Some(Poll::Ready(error)) => Poll::Ready(Err(error)),
            _ => Poll::Pending,
        }
    }
}

/// Runs a write unless an earlier one failed; holds a failure back.
macro_rules! write_through {
    ($this:ident, $cx:ident, $write:expr) => {{
        if let Some(held) = $this.state.poll_held($cx) {
            return held.map(Err);
        }
        match ready!($write) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) => $this.state.fail(e, $cx),
        }
    }};
}

impl<T: AsyncRead> AsyncRead for Linger<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let (before, room) = (buf.filled().len(), buf.remaining() > 0);
        let read = ready!(this.io.poll_read(cx, buf));
        let ended = read.is_err() || (room && buf.filled().len() == before);
        if ended && matches!(this.state, State::Failed { .. }) {
            // Nothing more will come: the held write error may go.
            this.state.close();
        }
        Poll::Ready(read)
    }
}

impl<T: AsyncWrite> AsyncWrite for Linger<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        write_through!(this, cx, this.io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        write_through!(this, cx, this.io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        write_through!(this, cx, this.io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing needs no grace: the connection is being dropped anyway.
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::{Linger, GRACE};

    const ANSWER: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";

    #[tokio::test(start_paused = true)]
    async fn a_failed_write_waits_until_the_answer_is_read() {
        let (ours, mut backend) = duplex(1024);
        let mut conn = Linger::new(ours);
        backend.write_all(ANSWER).await.unwrap();
        drop(backend);

        // The backend is gone: the write fails, but the failure is held back.
        let held = tokio::time::timeout(Duration::from_millis(10), conn.write_all(b"body"));
        assert!(held.await.is_err(), "the write error was not held");
        // The answer is read to the end of the stream...
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, ANSWER);
        // ...and then writes fail at once.
        let e = conn.write_all(b"body").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_write_error_comes_out_after_the_grace() {
        let (ours, backend) = duplex(1024);
        let mut conn = Linger::new(ours);
        drop(backend);
        let start = Instant::now();
        let e = conn.write_all(b"body").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert_eq!(start.elapsed(), GRACE);
    }

    #[tokio::test]
    async fn writes_to_a_live_peer_go_through() {
        let (ours, mut backend) = duplex(1024);
        let mut conn = Linger::new(ours);
        conn.write_all(b"request").await.unwrap();
        let mut got = [0u8; 7];
        backend.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"request");
    }
}
