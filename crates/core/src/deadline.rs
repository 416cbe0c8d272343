//! How the layers of one request agree on when an attempt has run out of time.

use std::time::Duration;

use tokio::time::Instant;

/// The instant by which a request must have its response head, carried in the request's
/// extensions.
///
/// Above the retry layer it is the request's deadline (the proxy puts it there from
/// `request_timeout`, before its timeout starts); the retry layer replaces it in each
/// attempt with that attempt's deadline (the earlier of its attempt timeout and the
/// request's deadline). The circuit breaker reads it when the attempt is sent: an attempt
/// dropped unanswered at or after its deadline is counted as a timeout of its backend; one
/// dropped before it (the client went away) says nothing about the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Self(at)
    }

    /// A deadline `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// The instant.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// Whether the deadline has passed.
    pub fn has_passed(self) -> bool {
        Instant::now() >= self.0
    }
}

/// A request that may carry a [`Deadline`]: implemented for `http::Request` (in its
/// extensions) and for `()` (never).
pub trait WithDeadline {
    /// The request's deadline, if it has one.
    fn deadline(&self) -> Option<Deadline>;
}

impl<B> WithDeadline for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }
}

impl WithDeadline for () {
    fn deadline(&self) -> Option<Deadline> {
        None
    }
}
