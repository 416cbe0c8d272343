//! A request body that can be sent again: kept as the first attempt streams it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use switchyard_core::BoxError;

use crate::error::Superseded;

/// The body of one attempt. The first attempt streams the original body and keeps a copy
/// of what it sends, up to a cap; a later attempt sends that copy again, then carries on
/// with whatever of the original was not read yet. Data is shared as `Bytes`, never copied.
///
/// A request that is never retried, and the first attempt of one whose body is empty, send
/// the original body as it is: [`ReplayBody::into_passthrough`] gets it back, so that a
/// stack that boxes bodies below the retry layer need not box it again.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    /// The original, not kept.
    Passthrough(B),
    /// A retry of a request whose body was empty.
    Empty,
    /// An attempt of a kept body.
    Replay(Attempt<B>),
}

struct Attempt<B> {
    shared: Arc<Shared<B>>,
    attempt: u32,
    /// The next kept chunk this attempt sends.
    pos: usize,
    trailers_sent: bool,
}

// One lock per request, held only within a poll and never across an await; attempts are
// sequential, so it is uncontended.
#[allow(clippy::disallowed_types)]
type Lock<T> = std::sync::Mutex<T>;

struct Shared<B> {
    state: Lock<State<B>>,
    size_hint: SizeHint,
}

struct State<B> {
    /// The original, until it ends.
    body: Option<B>,
    chunks: Vec<Bytes>,
    kept: usize,
    max: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    /// More than `max` was read: the body can no longer be replayed.
    overflowed: bool,
    /// The newest attempt; older attempts' bodies stop.
    attempt: u32,
}

/// A handle kept by the retry layer, to make the bodies of later attempts. `None` for an
/// empty body: nothing to keep.
pub(crate) struct Replay<B> {
    shared: Option<Arc<Shared<B>>>,
}

impl<B> ReplayBody<B> {
    /// The original body, sent once.
    pub(crate) fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough(body),
        }
    }

    /// The original body when this attempt sends it as it is (a request that is never
    /// retried, or the first attempt of an empty body); `Err(self)` otherwise.
    pub fn into_passthrough(self) -> Result<B, Self> {
        match self.kind {
            Kind::Passthrough(body) => Ok(body),
            kind => Err(Self { kind }),
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Wraps `body` for its first attempt, keeping up to `max` bytes for replays.
    pub(crate) fn new(body: B, max: usize) -> (Self, Replay<B>) {
        if body.is_end_stream() {
            // Nothing to keep: later attempts send an empty body of their own.
            return (Self::passthrough(body), Replay { shared: None });
        }
        let shared = Arc::new(Shared {
            size_hint: body.size_hint(),
            state: Lock::new(State {
                body: Some(body),
                chunks: Vec::new(),
                kept: 0,
                max,
                trailers: None,
                ended: false,
                overflowed: false,
                attempt: 0,
            }),
        });
        let first = Self {
            kind: Kind::Replay(Attempt {
                shared: shared.clone(),
                attempt: 0,
                pos: 0,
                trailers_sent: false,
            }),
        };
        (
            first,
            Replay {
                shared: Some(shared),
            },
        )
    }
}

impl<B> Replay<B> {
    /// The body of the next attempt, or `None` when the body was too large to keep.
    pub(crate) fn next(&self) -> Option<ReplayBody<B>> {
        let Some(shared) = &self.shared else {
            return Some(ReplayBody { kind: Kind::Empty });
        };
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.overflowed {
            return None;
        }
        state.attempt += 1;
        Some(ReplayBody {
            kind: Kind::Replay(Attempt {
                shared: shared.clone(),
                attempt: state.attempt,
                pos: 0,
                trailers_sent: false,
            }),
        })
    }

    /// Whether the body outgrew the replay buffer.
    pub(crate) fn overflowed(&self) -> bool {
        self.shared.as_ref().is_some_and(|shared| {
            shared
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .overflowed
        })
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Passthrough(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Kind::Empty => Poll::Ready(None),
            Kind::Replay(attempt) => attempt.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough(body) => body.is_end_stream(),
            Kind::Empty => true,
            Kind::Replay(attempt) => {
                let state = attempt
                    .shared
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                state.ended
                    && attempt.pos >= state.chunks.len()
                    && (attempt.trailers_sent || state.trailers.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough(body) => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
            // Every attempt sends the whole body from the start.
            Kind::Replay(attempt) => attempt.shared.size_hint,
        }
    }
}

impl<B> Attempt<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.attempt != self.attempt {
            return Poll::Ready(Some(Err(Superseded::new().into())));
        }
        if let Some(chunk) = state.chunks.get(self.pos) {
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if state.ended {
            if !self.trailers_sent {
                self.trailers_sent = true;
                if let Some(trailers) = state.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        }
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.ended = true;
                state.body = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !state.overflowed {
                        if state.kept + data.len() > state.max {
                            state.overflowed = true;
                            state.chunks = Vec::new();
                        } else {
                            state.kept += data.len();
                            state.chunks.push(data.clone());
                            self.pos += 1;
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    state.trailers = Some(trailers.clone());
                    self.trailers_sent = true;
                }
                if state.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                    state.ended = true;
                    state.body = None;
                    if state.trailers.is_none() {
                        self.trailers_sent = true;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ReplayBody");
        match &self.kind {
            Kind::Passthrough(_) => d.field("passthrough", &true),
            Kind::Empty => d.field("empty", &true),
            Kind::Replay(attempt) => d.field("attempt", &attempt.attempt),
        };
        d.finish()
    }
}
