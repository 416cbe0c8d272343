use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::request::Parts;
use http::Request;
use pin_project_lite::pin_project;
use switchyard_core::trace::{AttemptEnd, AttemptKind, Decision, ResponseStatus};
use switchyard_core::{
    AttemptSlot, AttemptTimeout, BoxError, Deadline, ErrorKind, RequestTimeout, RouteHint, Trace,
};
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
        // A hedged attempt in flight beside the one in `state` (this and the hedge timer
        // boxed: most requests are never hedged, and every one moves this future).
        hedge: Option<Pin<Box<S::Future>>>,
        // Fires when the first attempt has gone unanswered for the hedge delay.
        hedge_timer: Option<Pin<Box<Sleep>>>,
        hedging: Hedging,
        // The attempt deadline of the hedge.
        hedge_deadline: Option<Deadline>,
        // Makes the retries; readied again before each.
        service: S,
        policy: P,
        // `None` for a request sent once.
        retry: Option<Retrying<B>>,
        // The request's decision trace, when it has one, and the slots of the attempt
        // awaited in `state` and of the hedge.
        trace: Option<Trace>,
        slot: Option<AttemptSlot>,
        hedge_slot: Option<AttemptSlot>,
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
        // The attempt in `state` failed or was abandoned; only the hedge is awaited.
        Hedged,
    }
}

/// Where a request stands with its one hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hedging {
    /// Not hedged, or no more: hedging is off, the hedge was refused, sent and done with,
    /// or the first attempt ended.
    Off,
    /// Waiting for the hedge timer.
    Armed,
    /// The policy allowed the hedge; waiting for the service to be ready to send it.
    Readying,
    /// The hedge is in flight.
    Sent,
}

/// What the attempts after the first are made of.
struct Retrying<B> {
    head: Head,
    replay: Replay<B>,
    /// The head and body of the next attempt, made when the retry is decided (boxed:
    /// most requests are never retried, and every one moves this future).
    next: Option<Box<(Parts, ReplayBody<B>)>>,
}

/// Where the head of the next attempt comes from.
pub(crate) enum Head {
    /// A copy kept from before the first attempt, copied again for each (boxed: the
    /// response future stays small for the requests whose heads come back).
    Kept(Box<Parts>),
    /// The hint the services below hand each attempt's head back to.
    Returned(Arc<RouteHint>),
}

impl Head {
    /// Whether there is a head to send again.
    fn is_back(&self) -> bool {
        match self {
            Head::Kept(_) => true,
            Head::Returned(hint) => hint.has_head(),
        }
    }

    /// The head of the next attempt, if there can be one: `None` when the services below
    /// did not hand the last one back.
    fn next(&self) -> Option<Parts> {
        match self {
            Head::Kept(parts) => Some((**parts).clone()),
            Head::Returned(hint) => {
                let mut parts = hint.take_head()?;
                parts.extensions.insert(hint.clone());
                Some(parts)
            }
        }
    }
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
        traced: Traced,
    ) -> Self {
        Self {
            state: State::Calling { fut: first },
            timer: deadline.map(|d| tokio::time::sleep_until(d.instant())),
            timed: deadline.is_some(),
            hedge: None,
            hedge_timer: None,
            hedging: Hedging::Off,
            hedge_deadline: None,
            service,
            policy,
            retry: None,
            trace: traced.0,
            slot: traced.1,
            hedge_slot: None,
        }
    }

    /// A request whose first attempt is `first`, due by `deadline`; a retry sends `head`
    /// again with the next body of `replay`.
    pub(crate) fn retrying(
        first: S::Future,
        deadline: Option<Deadline>,
        service: S,
        policy: P,
        head: Head,
        replay: Replay<B>,
        traced: Traced,
    ) -> Self {
        Self {
            retry: Some(Retrying {
                head,
                replay,
                next: None,
            }),
            ..Self::once(first, deadline, service, policy, traced)
        }
    }

    /// Hedges the first attempt after `delay`, if there is one.
    pub(crate) fn hedged_after(mut self, delay: Option<Duration>) -> Self {
        if let Some(delay) = delay {
            self.hedge_timer = Some(Box::pin(tokio::time::sleep(delay)));
            self.hedging = Hedging::Armed;
        }
        self
    }
}

/// The request's trace and the first attempt's slot in it, when it is traced.
pub(crate) type Traced = (Option<Trace>, Option<AttemptSlot>);

/// A new attempt's slot in `trace`, put in the attempt's extensions.
pub(crate) fn begin(
    trace: Option<&Trace>,
    kind: AttemptKind,
    extensions: &mut http::Extensions,
) -> Option<AttemptSlot> {
    let slot = trace?.begin_attempt(kind)?;
    extensions.insert(slot.clone());
    Some(slot)
}

/// Records how the attempt of `slot` ended.
fn end<R: ResponseStatus>(slot: Option<&AttemptSlot>, result: &Result<R, BoxError>) {
    if let Some(slot) = slot {
        slot.ended(match result {
            Ok(res) => AttemptEnd::Status(res.status_code()),
            Err(e) => AttemptEnd::Error(ErrorKind::of(&**e)),
        });
    }
}

/// Records that the attempt of `slot` was dropped unanswered for `why`.
fn dropped(slot: Option<AttemptSlot>, why: AttemptEnd) {
    if let Some(slot) = slot {
        slot.ended(why);
    }
}

/// Puts the attempt's deadline in `extensions`: over the request's own when it has one,
/// in place (no allocation, where an insert boxes the new one and frees the old).
pub(crate) fn set_deadline(extensions: &mut http::Extensions, deadline: Deadline) {
    match extensions.get_mut::<Deadline>() {
        Some(slot) => *slot = deadline,
        None => {
            extensions.insert(deadline);
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

/// Bounds the hedge, now the only attempt awaited, by its own deadline.
fn arm_for_hedge(timer: Pin<&mut Option<Sleep>>, timed: &mut bool, deadline: Option<Deadline>) {
    *timed = deadline.is_some();
    if let Some(deadline) = deadline {
        arm(timer, deadline.instant());
    }
}

/// The attempt awaited has not answered: returns `Pending`, or, when its deadline has
/// passed, abandons it. Abandoning the first attempt with a hedge in flight leaves the
/// hedge awaited alone (`continue`); otherwise it evaluates to the attempt's
/// [`AttemptTimeout`].
macro_rules! poll_pending_attempt {
    ($this:ident, $cx:ident) => {{
        let timer = $this.timer.as_mut().as_pin_mut();
        let Some(timer) = timer.filter(|_| *$this.timed) else {
            return Poll::Pending;
        };
        ready!(timer.poll($cx));
        // Out of time: dropping the attempt past its deadline counts it as a timeout of
        // its backend (its breaker reads the deadline).
        $this.policy.on_attempt_timeout();
        tracing::debug!("attempt timed out; abandoned");
        let timed_out = AttemptEnd::Error(ErrorKind::AttemptTimeout);
        if matches!(*$this.state, State::Calling { .. }) && $this.hedge.is_some() {
            dropped($this.slot.take(), timed_out);
            *$this.slot = $this.hedge_slot.take();
            $this.state.set(State::Hedged);
            arm_for_hedge($this.timer.as_mut(), $this.timed, *$this.hedge_deadline);
            continue;
        }
        *$this.hedge = None;
        dropped($this.hedge_slot.take(), timed_out);
        $this.state.set(State::Ready);
        let result = Err(AttemptTimeout::new().into());
        end($this.slot.as_ref(), &result);
        result
    }};
}

impl<S, P, B> Future for ResponseFuture<S, P, B>
where
    S: Service<Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    S::Response: ResponseStatus,
    P: Policy<Request<B>, S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Calling { fut } => match fut.poll(cx) {
                    Poll::Ready(Err(e)) if this.hedge.is_some() => {
                        // Failed without a response: the hedge may still give one.
                        dropped(
                            this.slot.take(),
                            AttemptEnd::Error(ErrorKind::of(&*e.into())),
                        );
                        *this.slot = this.hedge_slot.take();
                        this.state.set(State::Hedged);
                        arm_for_hedge(this.timer.as_mut(), this.timed, *this.hedge_deadline);
                        continue;
                    }
                    Poll::Ready(result) => {
                        // The first response wins: a hedge still in flight is dropped.
                        *this.hedge = None;
                        dropped(this.hedge_slot.take(), AttemptEnd::Abandoned);
                        let result = result.map_err(Into::into);
                        end(this.slot.as_ref(), &result);
                        result
                    }
                    Poll::Pending => {
                        if let Some(hedge) = this.hedge.as_mut().map(Pin::as_mut) {
                            if let Poll::Ready(result) = hedge.poll(cx) {
                                *this.hedge = None;
                                *this.hedging = Hedging::Off;
                                let result = result.map_err(Into::into);
                                end(this.hedge_slot.as_ref(), &result);
                                match result {
                                    Ok(res) => {
                                        // Dropping the first attempt counts it against its
                                        // backend only if it was past its deadline.
                                        this.policy.on_hedge_won();
                                        this.state.set(State::Ready);
                                        dropped(this.slot.take(), AttemptEnd::Abandoned);
                                        *this.slot = this.hedge_slot.take();
                                        Ok(res)
                                    }
                                    // The first attempt may still answer.
                                    Err(_) => {
                                        *this.hedge_slot = None;
                                        continue;
                                    }
                                }
                            } else {
                                poll_pending_attempt!(this, cx)
                            }
                        } else {
                            if *this.hedging == Hedging::Armed {
                                let timer = this.hedge_timer.as_mut().map(Pin::as_mut);
                                if timer.is_some_and(|t| t.poll(cx).is_ready()) {
                                    *this.hedging = if this.policy.hedge() {
                                        Hedging::Readying
                                    } else {
                                        Hedging::Off
                                    };
                                }
                            }
                            if *this.hedging == Hedging::Readying {
                                match this.service.poll_ready(cx) {
                                    Poll::Ready(Ok(())) => {
                                        let retry = this.retry.as_mut().expect("hedges retry");
                                        let head = retry.head.next();
                                        if let Some((mut parts, body)) =
                                            head.zip(retry.replay.next())
                                        {
                                            *this.hedge_deadline = this.policy.attempt_deadline();
                                            if let Some(deadline) = *this.hedge_deadline {
                                                set_deadline(&mut parts.extensions, deadline);
                                            }
                                            *this.hedge_slot = begin(
                                                this.trace.as_ref(),
                                                AttemptKind::Hedge,
                                                &mut parts.extensions,
                                            );
                                            tracing::debug!("first attempt slow; hedging");
                                            let fut =
                                                this.service.call(Request::from_parts(parts, body));
                                            *this.hedge = Some(Box::pin(fut));
                                            *this.hedging = Hedging::Sent;
                                            // Polled at once, so that it registers its waker.
                                            continue;
                                        }
                                        *this.hedging = Hedging::Off;
                                    }
                                    Poll::Ready(Err(_)) => *this.hedging = Hedging::Off,
                                    Poll::Pending => {}
                                }
                            }
                            poll_pending_attempt!(this, cx)
                        }
                    }
                },
                StateProj::Hedged => {
                    let hedge = this.hedge.as_mut().map(Pin::as_mut).expect("awaited");
                    match hedge.poll(cx) {
                        Poll::Ready(result) => {
                            *this.hedge = None;
                            if result.is_ok() {
                                this.policy.on_hedge_won();
                            }
                            let result = result.map_err(Into::into);
                            end(this.slot.as_ref(), &result);
                            result
                        }
                        Poll::Pending => poll_pending_attempt!(this, cx),
                    }
                }
                StateProj::Backoff => {
                    let timer = this.timer.as_mut().as_pin_mut();
                    ready!(timer.expect("armed for the backoff").poll(cx));
                    this.state.set(State::Ready);
                    continue;
                }
                StateProj::Ready => {
                    match this.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                        Poll::Pending => {
                            // No backend ready for the retry: it may wait until the
                            // request's deadline, no longer.
                            let Some(deadline) = this.policy.request_deadline() else {
                                return Poll::Pending;
                            };
                            if !*this.timed {
                                arm(this.timer.as_mut(), deadline.instant());
                                *this.timed = true;
                            }
                            let timer = this.timer.as_mut().as_pin_mut();
                            ready!(timer.expect("armed for the deadline").poll(cx));
                            return Poll::Ready(Err(RequestTimeout::new().into()));
                        }
                    }
                    *this.timed = false;
                    let retry = this.retry.as_mut().expect("only a retry waits");
                    let (mut parts, body) =
                        *retry.next.take().expect("made when the retry was decided");
                    this.policy.on_retry();
                    if let Some(deadline) = this.policy.attempt_deadline() {
                        set_deadline(&mut parts.extensions, deadline);
                        arm(this.timer.as_mut(), deadline.instant());
                        *this.timed = true;
                    }
                    *this.slot = begin(
                        this.trace.as_ref(),
                        AttemptKind::Retry,
                        &mut parts.extensions,
                    );
                    let fut = this.service.call(Request::from_parts(parts, body));
                    this.state.set(State::Calling { fut });
                    continue;
                }
            };
            // An attempt ended (the hedge, if any, is done with too).
            *this.timed = false;
            *this.hedging = Hedging::Off;
            let slot = this.slot.take();
            let Some(retry) = this.retry.as_mut() else {
                if let Some(slot) = slot {
                    slot.decided(Decision::Returned { why: "once" });
                }
                return Poll::Ready(result);
            };
            let replayable = !retry.replay.overflowed();
            if !retry.head.is_back() {
                // The services below kept the head (they hand back every head they are
                // given; a service that does not cannot be retried through).
                if let Some(slot) = slot {
                    slot.decided(Decision::Returned {
                        why: "head_not_returned",
                    });
                }
                return Poll::Ready(result);
            }
            let Some(delay) = this.policy.retry(&result, replayable) else {
                if let Some(slot) = slot {
                    let why = this.policy.declined().unwrap_or("not_retryable");
                    slot.decided(Decision::Returned { why });
                }
                return Poll::Ready(result);
            };
            if let Some(slot) = slot {
                slot.decided(Decision::Retried { after: delay });
            }
            drop(result);
            let Some(next) = retry.replay.next() else {
                this.policy.on_body_too_large();
                return Poll::Ready(Err(BodyTooLarge::new().into()));
            };
            let head = retry.head.next().expect("checked before deciding");
            retry.next = Some(Box::new((head, next)));
            arm(this.timer.as_mut(), Instant::now() + delay);
            this.state.set(State::Backoff);
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
            .field("hedging", &self.hedging)
            .finish()
    }
}
