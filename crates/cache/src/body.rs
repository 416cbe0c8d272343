//! The response body: stored bytes, or the upstream's body passed through (and kept, as
//! it streams, when the response is being stored).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::entry::Head;
use crate::flight::FlightGuard;
use crate::shared::Shared;
use crate::upstream::Kept;

pin_project! {
    /// The body of a response through [`Cache`](crate::Cache): either a stored body
    /// (shared `Bytes`, sent as one frame) or the upstream's body, frame by frame as it
    /// arrives. A response being stored is copied aside as it streams and stored once it
    /// has ended; it is given up (and still streamed) once it outgrows
    /// [`max_object_size`](crate::CacheConfig::max_object_size), carries trailers, or
    /// fails.
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full { data: Option<Bytes> },
        Stream {
            #[pin]
            body: B,
            tee: Option<Box<Tee>>,
        },
    }
}

impl<B> CacheBody<B> {
    /// A body of `data`, in one frame.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }

    /// `body`, passed through.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Stream { body, tee: None },
        }
    }

    /// The upstream's body when this one only passes it through (it is neither a stored
    /// body nor being stored): a caller that boxes bodies can then hand it on as it is,
    /// rather than box a wrapper around it.
    pub fn into_passthrough(self) -> Result<B, Self> {
        match self.kind {
            Kind::Stream { body, tee: None } => Ok(body),
            kind => Err(Self { kind }),
        }
    }
}

impl<B: Body<Data = Bytes>> CacheBody<B> {
    /// `body`, stored by `tee` once it has all arrived. A body that is already over is
    /// stored at once: a client may never poll it.
    pub(crate) fn tee(body: B, tee: Tee) -> Self {
        if body.is_end_stream() {
            Box::new(tee).finish();
            return Self::new(body);
        }
        Self {
            kind: Kind::Stream {
                body,
                tee: Some(Box::new(tee)),
            },
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full { data } => f
                .debug_struct("CacheBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream { tee, .. } => f
                .debug_struct("CacheBody::Stream")
                .field("storing", &tee.is_some())
                .finish(),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Stream { mut body, tee } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        let kept = match (tee.as_mut(), frame.data_ref()) {
                            (Some(t), Some(data)) => t.push(data),
                            // Trailers are not stored: a response with them is not.
                            _ => false,
                        };
                        if !kept {
                            *tee = None;
                        } else if body.is_end_stream() {
                            tee.take().expect("kept").finish();
                        }
                    }
                    Some(Err(_)) => *tee = None,
                    None => {
                        if let Some(t) = tee.take() {
                            t.finish();
                        }
                    }
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Stream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Stream { body, .. } => body.size_hint(),
        }
    }
}

/// A response being stored as it streams.
pub(crate) struct Tee {
    shared: Arc<Shared>,
    key: String,
    head: Head,
    buf: BytesMut,
    /// Body bytes allowed.
    limit: usize,
    /// What is stored: a `206` only when the body is as long as its `Content-Range` says.
    kind: Kept,
    /// Held until the response is stored (or given up), so that requests waiting for it
    /// look it up only then.
    _guard: Option<FlightGuard>,
}

impl Tee {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: String,
        head: Head,
        limit: usize,
        size_hint: Option<u64>,
        kind: Kept,
        guard: Option<FlightGuard>,
    ) -> Self {
        let capacity = size_hint.map_or(0, |n| n.min(limit as u64) as usize);
        Self {
            shared,
            key,
            head,
            buf: BytesMut::with_capacity(capacity),
            limit,
            kind,
            _guard: guard,
        }
    }

    /// Keeps `data`; `false` once the body outgrows the limit.
    fn push(&mut self, data: &Bytes) -> bool {
        if self.buf.len() + data.len() > self.limit {
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    fn finish(self: Box<Self>) {
        let Tee {
            shared,
            key,
            head,
            buf,
            kind,
            mut _guard,
            ..
        } = *self;
        let lock = _guard.as_mut().and_then(FlightGuard::take_remote);
        match kind {
            Kept::Whole => shared.store(key, Arc::new(head.into_entry(buf.freeze())), lock),
            Kept::Exactly(len) if len == buf.len() => {
                shared.store(key, Arc::new(head.into_entry(buf.freeze())), lock);
            }
            Kept::Part(part) if part.end - part.start == buf.len() as u64 => {
                shared.store_part(key, head, part, buf.freeze());
            }
            // Shorter or longer than its `Content-Range` said: not stored.
            Kept::Exactly(_) | Kept::Part(_) => {}
        }
        // `_guard` drops last: waiting requests find the response stored.
    }
}

impl fmt::Debug for Tee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tee")
            .field("key", &self.key)
            .field("len", &self.buf.len())
            .finish()
    }
}
