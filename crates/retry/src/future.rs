use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::Request;
use pin_project_lite::pin_project;
use switchyard_core::{AttemptTimeout, BoxError, Deadline};
use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::error::BodyTooLarge;
use crate::replay::{Replay, ReplayBody};
use crate::Policy;

pin_project! {
    /// The response future of [`Retry`](crate::Retry).
    pub struct ResponseFuture<S, P, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        // One timer, made when first needed and reset after: the deadline of the attempt
        // in flight, or the end of a backoff.
        #[pin]
        timer: Option<Sleep>,
        // Whether the timer bounds the attempt in flight.
        timed: bool,
        // Makes the retries; readied again before each.
        service: S,
        policy: P,
        // `None` for a request sent once.
        retry: Option<Retrying<B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Calling { #[pin] fut: F },
        // Waiting before the next attempt (on the timer).
        Backoff,
        // Waiting for the service to be ready for the next attempt.
        Ready,
    }
}

/// What the attempts after the first are made of.
struct Retrying<B> {
    parts: Parts,
    replay: Replay<B>,
    /// The body of the next attempt, made when the retry is decided.
    next: Option<ReplayBody<B>>,
}

impl<S, P, B> ResponseFuture<S, P, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// A request that is sent once: its only attempt is `first`, due by `deadline`.
    pub(crate) fn once(
        first: S::Future,
        deadline: Option<Deadline>,
        service: S,
        policy: P,
    ) -> Self {
        Self {
            state: State::Calling { fut: first },
            timer: deadline.map(|d| tokio::time::sleep_until(d.instant())),
            timed: deadline.is_some(),
            service,
            policy,
            retry: None,
        }
    }

    /// A request whose first attempt is `first`, due by `deadline`; a retry sends `parts`
    /// again with the next body of `replay`.
    pub(crate) fn retrying(
        first: S::Future,
        deadline: Option<Deadline>,
        service: S,
        policy: P,
        parts: Parts,
        replay: Replay<B>,
    ) -> Self {
        Self {
            retry: Some(Retrying {
                parts,
                replay,
                next: None,
            }),
            ..Self::once(first, deadline, service, policy)
        }
    }
}

/// Sets `timer` to fire at `at`, making it the first time.
fn arm(mut timer: Pin<&mut Option<Sleep>>, at: Instant) {
    match timer.as_mut().as_pin_mut() {
        Some(sleep) => sleep.reset(at),
        None => timer.set(Some(tokio::time::sleep_until(at))),
    }
}

impl<S, P, B> Future for ResponseFuture<S, P, B>
where
    S: Service<Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    P: Policy<Request<B>, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let result = match fut.poll(cx) {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            let timer = this.timer.as_mut().as_pin_mut();
                            let Some(timer) = timer.filter(|_| *this.timed) else {
                                return Poll::Pending;
                            };
                            ready!(timer.poll(cx));
                            // Out of time: dropping the attempt past its deadline counts it
                            // as a timeout of its backend (its breaker reads the deadline).
                            this.state.set(State::Ready);
                            this.policy.on_attempt_timeout();
                            tracing::debug!("attempt timed out; abandoned");
                            Err(AttemptTimeout::new().into())
                        }
                    };
                    *this.timed = false;
                    let Some(retry) = this.retry.as_mut() else {
                        return Poll::Ready(result);
                    };
                    let replayable = !retry.replay.overflowed();
                    let Some(delay) = this.policy.retry(&result, replayable) else {
                        return Poll::Ready(result);
                    };
                    drop(result);
                    let Some(next) = retry.replay.next() else {
                        this.policy.on_body_too_large();
                        return Poll::Ready(Err(BodyTooLarge::new().into()));
                    };
                    retry.next = Some(next);
                    arm(this.timer.as_mut(), Instant::now() + delay);
                    this.state.set(State::Backoff);
                }
                StateProj::Backoff => {
                    let timer = this.timer.as_mut().as_pin_mut();
                    ready!(timer.expect("armed for the backoff").poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    if let Err(err) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(err.into()));
                    }
                    let retry = this.retry.as_mut().expect("only a retry waits");
                    let body = retry.next.take().expect("made when the retry was decided");
                    this.policy.on_retry();
                    let mut parts = retry.parts.clone();
                    if let Some(deadline) = this.policy.attempt_deadline() {
                        parts.extensions.insert(deadline);
                        arm(this.timer.as_mut(), deadline.instant());
                        *this.timed = true;
                    }
                    let fut = this.service.call(Request::from_parts(parts, body));
                    this.state.set(State::Calling { fut });
                }
            }
        }
    }
}

impl<S, P, B> std::fmt::Debug for ResponseFuture<S, P, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retrying", &self.retry.is_some())
            .field("timed", &self.timed)
            .finish()
    }
}
