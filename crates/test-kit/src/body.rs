//! The body of a scripted response.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{sleep, Sleep};

use crate::error::Truncated;
use crate::script::Plan;
use crate::BoxError;

/// The body of a scripted backend's response: complete, sent slowly in chunks on the
/// tokio clock, or cut short with a [`Truncated`] error. It is `Unpin` (its timer is
/// boxed), as most stacks want of a body.
#[derive(Debug)]
pub struct ScriptBody {
    state: State,
}

#[derive(Debug)]
enum State {
    Full {
        data: Option<Bytes>,
    },
    Slow {
        chunk: Bytes,
        left: usize,
        every: Duration,
        sleep: Pin<Box<Sleep>>,
    },
    Truncated {
        data: Option<Bytes>,
        declared: usize,
        /// Whether it has let the data go out before the error: a server may drop what
        /// it has not flushed when a body fails.
        yielded: bool,
    },
}

impl ScriptBody {
    pub(crate) fn new(plan: Plan) -> Self {
        let state = match plan {
            Plan::Full(data) => State::Full {
                data: (!data.is_empty()).then_some(data),
            },
            Plan::Slow {
                chunk,
                count,
                every,
            } => State::Slow {
                chunk,
                left: count,
                every,
                sleep: Box::pin(sleep(every)),
            },
            Plan::Truncated { declared, sent } => State::Truncated {
                data: Some(Bytes::from(vec![b'x'; sent])),
                declared,
                yielded: false,
            },
        };
        Self { state }
    }
}

impl Body for ScriptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().state {
            State::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            State::Slow {
                chunk,
                left,
                every,
                sleep,
            } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                ready!(sleep.as_mut().poll(cx));
                *left -= 1;
                let next = sleep.deadline() + *every;
                sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(Frame::data(chunk.clone()))))
            }
            State::Truncated {
                data,
                declared,
                yielded,
            } => match data.take() {
                Some(d) if !d.is_empty() => Poll::Ready(Some(Ok(Frame::data(d)))),
                _ if !*yielded => {
                    *yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                _ => {
                    let left = std::mem::take(declared);
                    if left == 0 {
                        Poll::Ready(None)
                    } else {
                        Poll::Ready(Some(Err(Box::new(Truncated::new()))))
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Full { data } => data.is_none(),
            State::Slow { left, .. } => *left == 0,
            State::Truncated { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            // Declared in full: the head says `Content-Length: declared`.
            State::Truncated { declared, .. } => SizeHint::with_exact(*declared as u64),
            State::Slow { .. } => SizeHint::default(),
        }
    }
}
