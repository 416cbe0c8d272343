//! The response future of [`CircuitBreaker`](crate::CircuitBreaker), and the ticket an
//! admitted request holds on the breaker.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use switchyard_core::{BoxError, CircuitOpen, Classify, Deadline, Outcome};

use crate::breaker::{Admission, Breaker};

/// An admitted request's claim on the breaker: reports its outcome once. A request dropped
/// before its outcome is known counts as a timeout if its [`Deadline`] had passed (whoever
/// gave up on it, gave up because the backend was too slow), and otherwise as nothing: it
/// releases its probe slot.
pub(crate) struct Ticket {
    breaker: Arc<Breaker>,
    pub(crate) admission: Admission,
    /// The request's deadline, read when it is sent.
    deadline: Option<Deadline>,
    recorded: bool,
}

impl Ticket {
    pub(crate) fn new(breaker: &Arc<Breaker>, admission: Admission) -> Self {
        Self {
            breaker: breaker.clone(),
            admission,
            deadline: None,
            recorded: false,
        }
    }

    /// The ticket of a request sent with `deadline`.
    pub(crate) fn sent(mut self, deadline: Option<Deadline>) -> Self {
        self.deadline = deadline;
        self
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        match self.deadline {
            Some(deadline) if deadline.has_passed() => {
                tracing::debug!(backend = %self.breaker.id(), "request dropped past its deadline: a timeout");
                self.breaker
                    .record(&self.admission, Outcome::Failure { retry_after: None });
            }
            _ => self.breaker.cancel(&self.admission),
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct ResponseFuture<F, C> {
        #[pin]
        pub(crate) state: State<F>,
        pub(crate) breaker: Option<Ticket>,
        pub(crate) classifier: C,
    }
}

pin_project! {
    #[project = StateProj]
    pub(crate) enum State<F> {
        Called { #[pin] fut: F },
        Rejected,
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Called { fut } => ready!(fut.poll(cx)).map_err(Into::into),
            StateProj::Rejected => return Poll::Ready(Err(CircuitOpen::new().into())),
        };
        if let Some(mut ticket) = this.breaker.take() {
            let outcome = this.classifier.classify(result.as_ref());
            ticket.breaker.record(&ticket.admission, outcome);
            ticket.recorded = true;
        }
        Poll::Ready(result)
    }
}
