//! [`RecvBody`]: a request body, fed by the connection as the service reads it.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

use crate::chunked::{ChunkedDecoder, Decoded};
use crate::error::{Error, ParseError};

type Item = Result<Frame<Bytes>, Error>;

/// The body of a request handed to the service.
///
/// The connection reads the body from the socket only when this side has room for the
/// next frame (one frame ahead), and sends `100 Continue` when it is first polled.
#[derive(Debug)]
pub struct RecvBody {
    rx: Option<mpsc::Receiver<Item>>,
    remaining: Option<u64>,
    want: Option<oneshot::Sender<()>>,
}

impl RecvBody {
    /// A body with nothing in it.
    pub fn empty() -> Self {
        Self {
            rx: None,
            remaining: Some(0),
            want: None,
        }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if let Some(want) = self.want.take() {
            let _ = want.send(());
        }
        if self.remaining == Some(0) {
            return Poll::Ready(None);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        let item = ready!(rx.poll_recv(cx));
        if let (Some(Ok(frame)), Some(remaining)) = (&item, self.remaining.as_mut()) {
            if let Some(data) = frame.data_ref() {
                *remaining = remaining.saturating_sub(data.len() as u64);
            }
        }
        Poll::Ready(item)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// How the connection takes a request body out of its read buffer.
#[derive(Debug)]
pub(crate) enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl Decoder {
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        match self {
            Decoder::Length(0) => Ok(Decoded::Done),
            Decoder::Length(_) if buf.is_empty() => Ok(Decoded::NeedMore),
            Decoder::Length(remaining) => {
                let n = (*remaining).min(buf.len() as u64);
                *remaining -= n;
                Ok(Decoded::Data(buf.split_to(n as usize).freeze()))
            }
            Decoder::Chunked(chunked) => chunked.decode(buf),
        }
    }
}

/// What one [`Feeder::step`] did.
#[derive(Debug)]
pub(crate) enum Step {
    /// A frame went to the body.
    Fed,
    /// The body was polled for the first time: time for `100 Continue`.
    Continue,
    /// The whole body was read.
    Finished,
    /// The body was dropped before it was read to the end.
    Abandoned,
    /// The body is broken (bad framing, early EOF); the body was told.
    Failed,
}

/// The connection's end of a [`RecvBody`].
#[derive(Debug)]
pub(crate) struct Feeder {
    tx: Option<mpsc::Sender<Item>>,
    want: Option<oneshot::Receiver<()>>,
    decoder: Decoder,
    finished: bool,
    failed: bool,
}

impl Feeder {
    pub(crate) fn new(decoder: Decoder, expect_continue: bool) -> (RecvBody, Feeder) {
        let (tx, rx) = mpsc::channel(1);
        let (want_tx, want_rx) = if expect_continue {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let remaining = match decoder {
            Decoder::Length(n) => Some(n),
            Decoder::Chunked(_) => None,
        };
        let body = RecvBody {
            rx: Some(rx),
            remaining,
            want: want_tx,
        };
        let feeder = Feeder {
            tx: Some(tx),
            want: want_rx,
            decoder,
            finished: false,
            failed: false,
        };
        (body, feeder)
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Makes one step of progress. Every await in here is cancel safe: the state lives in
    /// `self` and in `buf`, so the connection can race this against the service.
    /// Pending forever once there is nothing left to do.
    pub(crate) async fn step<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        read_size: usize,
    ) -> Step {
        if let Some(want) = self.want.as_mut() {
            let wanted = want.await.is_ok();
            self.want = None;
            if wanted {
                return Step::Continue;
            }
            self.tx = None;
            return Step::Abandoned;
        }
        let Some(tx) = self.tx.as_ref() else {
            return std::future::pending().await;
        };
        let Ok(permit) = tx.reserve().await else {
            self.tx = None;
            return Step::Abandoned;
        };
        loop {
            let err = match self.decoder.decode(buf) {
                Ok(Decoded::Data(data)) => {
                    permit.send(Ok(Frame::data(data)));
                    return Step::Fed;
                }
                Ok(Decoded::Trailers(trailers)) => {
                    permit.send(Ok(Frame::trailers(trailers)));
                    return Step::Fed;
                }
                Ok(Decoded::Done) => {
                    drop(permit);
                    self.tx = None;
                    self.finished = true;
                    return Step::Finished;
                }
                Ok(Decoded::NeedMore) => {
                    buf.reserve(read_size);
                    match io.read_buf(buf).await {
                        Ok(0) => Error::incomplete(),
                        Ok(_) => continue,
                        Err(e) => Error::io(e),
                    }
                }
                Err(e) => Error::parse(e),
            };
            permit.send(Err(err));
            self.tx = None;
            self.failed = true;
            return Step::Failed;
        }
    }

    /// Reads the rest of the body, discarding it, so the connection can carry the next
    /// request: what `buf` holds, and at most `max` more bytes from `io` (a bounded
    /// lingering close; time is the caller's bound). False if the body is not read to its
    /// end.
    pub(crate) async fn drain_within<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        buf: &mut BytesMut,
        read_size: usize,
        mut max: u64,
    ) -> bool {
        if self.want.is_some() || self.failed {
            // `100 Continue` was never sent: the client may or may not send the body.
            return false;
        }
        while !self.finished {
            match self.decoder.decode(buf) {
                Ok(Decoded::Data(_)) | Ok(Decoded::Trailers(_)) => {}
                Ok(Decoded::Done) => self.finished = true,
                Ok(Decoded::NeedMore) if max > 0 => {
                    buf.reserve(read_size);
                    match io.read_buf(buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => max = max.saturating_sub(n as u64),
                    }
                }
                Ok(Decoded::NeedMore) | Err(_) => return false,
            }
        }
        self.tx = None;
        true
    }
}
