//! A request body that can be sent again: kept as the first attempt streams it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use switchyard_core::{BoxError, RouteHint};

/// The body of one attempt. The first attempt streams the original body and keeps a copy
/// of what it sends, up to a cap; a later attempt sends that copy again, then carries on
/// with whatever of the original was not read yet. Data is shared as `Bytes`, never copied.
pub struct ReplayBody<B> {
    shared: Arc<Shared<B>>,
    attempt: u32,
    /// The next kept chunk this attempt sends.
    pos: usize,
    trailers_sent: bool,
    /// The original was empty: nothing to keep, nothing to lock.
    empty: bool,
}

// One lock per request, held only within a poll and never across an await; attempts are
// sequential, so it is uncontended.
#[allow(clippy::disallowed_types)]
type Lock<T> = std::sync::Mutex<T>;

struct Shared<B> {
    state: Lock<State<B>>,
    size_hint: SizeHint,
    /// Which endpoint the latest attempt went to, for the balancer.
    hint: RouteHint,
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

/// A handle kept by the retry layer, to make the bodies of later attempts.
pub(crate) struct Replay<B> {
    shared: Arc<Shared<B>>,
    empty: bool,
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// Wraps `body` for its first attempt, keeping up to `max` bytes for replays.
    pub(crate) fn new(body: B, max: usize) -> (Self, Replay<B>) {
        let empty = body.is_end_stream();
        let shared = Arc::new(Shared {
            size_hint: body.size_hint(),
            hint: RouteHint::new(),
            state: Lock::new(State {
                body: Some(body),
                chunks: Vec::new(),
                kept: 0,
                max,
                trailers: None,
                ended: empty,
                overflowed: false,
                attempt: 0,
            }),
        });
        let first = Self {
            shared: shared.clone(),
            attempt: 0,
            pos: 0,
            trailers_sent: false,
            empty,
        };
        (first, Replay { shared, empty })
    }
}

impl<B> ReplayBody<B> {
    /// The route hint the attempts of this request share: a balancer below the retry
    /// layer records each attempt's endpoint in it, and steers a retry elsewhere.
    pub fn route_hint(&self) -> &RouteHint {
        &self.shared.hint
    }
}

/// Finds the [`RouteHint`] of a request under the retry layer, for
/// `switchyard_balance::Balance::route_hints`: it travels with the request's body, so it
/// costs no extension map.
pub fn route_hint<B>(req: &Request<ReplayBody<B>>) -> Option<&RouteHint> {
    Some(req.body().route_hint())
}

impl<B> Replay<B> {
    /// The body of the next attempt, or `None` when the body was too large to keep.
    pub(crate) fn next(&self) -> Option<ReplayBody<B>> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.overflowed {
            return None;
        }
        state.attempt += 1;
        Some(ReplayBody {
            shared: self.shared.clone(),
            attempt: state.attempt,
            pos: 0,
            trailers_sent: false,
            empty: self.empty,
        })
    }

    /// Whether the body outgrew the replay buffer.
    pub(crate) fn overflowed(&self) -> bool {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .overflowed
    }
}

/// An older attempt's body was polled after a newer attempt started.
#[derive(Debug)]
struct Superseded;

impl std::fmt::Display for Superseded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body superseded by a retry")
    }
}

impl std::error::Error for Superseded {}

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
        if self.empty {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let mut state = this.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.attempt != this.attempt {
            return Poll::Ready(Some(Err(Superseded.into())));
        }
        if let Some(chunk) = state.chunks.get(this.pos) {
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if state.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
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
                            this.pos += 1;
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    state.trailers = Some(trailers.clone());
                    this.trailers_sent = true;
                }
                if state.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                    state.ended = true;
                    state.body = None;
                    if state.trailers.is_none() {
                        this.trailers_sent = true;
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.empty {
            return true;
        }
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.ended
            && self.pos >= state.chunks.len()
            && (self.trailers_sent || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        // Every attempt sends the whole body from the start.
        self.shared.size_hint
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("attempt", &self.attempt)
            .finish()
    }
}
