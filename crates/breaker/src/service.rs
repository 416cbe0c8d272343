use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchyard_core::{
    BoxError, CircuitOpen, Classify, GiveBack, HttpClassifier, Traced, WithDeadline,
};
use tower::Service;

use crate::breaker::{Admission, Breaker};
use crate::future::{ResponseFuture, State, Ticket};

/// A service behind a circuit breaker. See the [crate docs](crate).
pub struct CircuitBreaker<S, C = HttpClassifier> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
    /// Admission granted by `poll_ready`, taken by `call` (dropped unused, it releases a
    /// probe slot).
    admitted: Option<Ticket>,
}

impl<S, C> CircuitBreaker<S, C> {
    /// Wraps `inner` with `breaker`, judging results with `classifier`.
    pub fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
            admitted: None,
        }
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    /// A clone shares the breaker and starts with no admission of its own.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.breaker.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    Req: WithDeadline + Traced + GiveBack,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// Fails at once with [`CircuitOpen`] while the breaker is open (and for half-open
    /// requests beyond the probe limit); never waits for the breaker.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.admitted.is_none() {
            match self.breaker.admit() {
                Admission::Rejected => return Poll::Ready(Err(CircuitOpen::new().into())),
                admission => self.admitted = Some(Ticket::new(&self.breaker, admission)),
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => {
                self.admitted = None;
                Poll::Ready(Err(e.into()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let ticket = match self.admitted.take() {
            Some(ticket) => ticket,
            // Called without a readiness check: decide now.
            None => match self.breaker.admit() {
                Admission::Rejected => {
                    // Not sent: a retry above may send its head elsewhere.
                    req.give_back();
                    return ResponseFuture {
                        state: State::Rejected,
                        breaker: None,
                        classifier: self.classifier.clone(),
                    };
                }
                admission => Ticket::new(&self.breaker, admission),
            },
        };
        if let Some(slot) = req.attempt_slot() {
            let probe = matches!(ticket.admission, Admission::Probe(_));
            slot.admitted(self.breaker.id_arc(), probe);
        }
        let ticket = ticket.sent(req.deadline());
        ResponseFuture {
            state: State::Called {
                fut: self.inner.call(req),
            },
            breaker: Some(ticket),
            classifier: self.classifier.clone(),
        }
    }
}
