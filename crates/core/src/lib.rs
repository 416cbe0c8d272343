//! What every switchyard layer shares: the leaf errors and their classification, the
//! classifier of responses the breaker and the retries judge by ([`Classify`]), the route
//! hint the retry layer leaves for the balancer ([`RouteHint`]) and the layers below hand
//! the request's head back to ([`ReturnHead`], [`GiveBack`]), the sliding window of
//! counts behind the breaker's rate trip and the retry budget ([`SlidingCounts`]), the
//! response future of a layer that may fail before calling its inner service
//! ([`future::ResponseFuture`]), the accessors every service has
//! ([`inner_accessors!`]), the declarations every crate repeats (leaf errors with
//! [`leaf_error!`], settings with their defaults with [`with_defaults!`], statistics
//! counters with [`counters!`]), and the per-request decision trace the layers write to
//! ([`trace`]).
//!
//! Each layer that can fail on its own returns [`BoxError`], as tower's layers do; the
//! failure itself is one of the leaf error types here, so that a layer further up (the
//! error-to-response layer, a retry policy, a circuit breaker) can tell *what* failed by
//! walking the error's `source()` chain with [`ErrorKind::of`], whatever wrapped it on the
//! way up.

mod accessors;
pub mod classify;
mod clock;
mod counters;
mod deadline;
mod defaults;
mod error;
pub mod future;
mod head;
mod hint;
pub mod trace;
mod window;

pub use classify::{Classify, GrpcClassifier, HttpClassifier, Outcome, StatusClassifier};
pub use clock::nanos_since;
pub use deadline::{Deadline, WithDeadline};
pub use error::{
    AttemptTimeout, BoxError, CircuitOpen, ClientBodyError, ConnectError, ConnectErrorKind,
    ErrorKind, NoBackendsAvailable, PoolTimeout, RequestTimeout,
};
pub use head::{GiveBack, ReturnHead};
pub use hint::RouteHint;
pub use trace::{Alternative, AttemptSlot, Balanced, Trace, TraceContext, Traced, TRACEPARENT_LEN};
pub use window::SlidingCounts;
