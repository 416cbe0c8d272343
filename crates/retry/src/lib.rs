//! Retries for HTTP requests through a balancer, as a `tower::Layer`.
//!
//! [`Retry`] sends a failed request again, after a backoff, as its [`Policy`] decides
//! ([`HttpPolicy`], built from a [`RetryConfig`], by default), keeping the request body so
//! that a retry sends the same bytes. It sits above the balancer so that every attempt
//! picks a backend again: each retryable request carries an `Arc<`[`RouteHint`]`>` in its
//! extensions, where the balancer records the backend an attempt went to and steers the
//! next attempt elsewhere (give the balancer
//! [`RouteHint::in_extensions`](switchyard_core::RouteHint::in_extensions)).
//!
//! The inner service takes `Request<`[`ReplayBody<B>`]`>`. A stack that boxes bodies below
//! the retry layer maps it with [`ReplayBody::into_passthrough`] first: a request that is
//! never retried, and the first attempt of one with an empty body, send the original body
//! as it is, so only a body that is kept for replays is boxed again.
//!
//! By default the layer copies each retryable request's head before the first attempt,
//! which works over any inner service. [`RetryLayer::heads_returned`] leaves that copy
//! out, for a stack whose services hand each attempt's head back to the route hint
//! (switchyard's pool when it has sent it, its balancer and breaker when they drop a
//! request unsent: see [`ReturnHead`](switchyard_core::ReturnHead) and
//! [`GiveBack`](switchyard_core::GiveBack)); a request whose head does not come back is
//! not retried.
//!
//! # The default policy
//!
//! - **What is retried.** Only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT,
//!   DELETE), unless [`RetryConfig::non_idempotent`] opts POST and PATCH in. Only
//!   failures that say the request did not do its work: a failed connect, the chosen
//!   backend's circuit open, no backend available while one was busy (with none at
//!   all, or every circuit open, a backoff would find the same: answered at once), no
//!   free connection in time, and the
//!   statuses in [`RetryConfig::statuses`] (502, 503, 504); for idempotent methods also a
//!   connection that broke mid-request (a backend that went away) and an attempt that
//!   timed out. Never a 4xx. The
//!   decision is made on the response head, before any of its body reaches the client.
//! - **When.** After [`RetryConfig::delay`], doubled at each retry when
//!   [`RetryConfig::backoff`] is on (100, 200, 400 ms), capped at
//!   [`RetryConfig::max_delay`], spread by [`Jitter`] (equal jitter by default: each delay
//!   is uniform between half and all of its exponential value). A 503 or 429 with
//!   `Retry-After` is retried after exactly that long if it is within
//!   [`RetryConfig::retry_after_cap`], and returned as it is otherwise. No attempt starts
//!   after [`RetryConfig::deadline`].
//! - **Attempt timeout.** With [`RetryConfig::attempt_timeout`], an attempt without a
//!   response head by then (or by the request's deadline, whichever comes first) is
//!   abandoned and fails with [`AttemptTimeout`](switchyard_core::AttemptTimeout), retried
//!   for idempotent methods like a broken connection. The attempt carries that deadline in
//!   its extensions (a [`Deadline`](switchyard_core::Deadline)), so that the circuit
//!   breaker below counts an abandoned attempt as a timeout of its backend. One timer per
//!   request serves the attempts' deadlines and the backoffs.
//! - **Hedging.** With [`RetryConfig::hedge_after`], an idempotent request with a complete
//!   body whose first attempt has no response by then gets a second attempt beside it,
//!   which the route hint steers to another backend; the first response wins and the
//!   other attempt is dropped (its breaker counts it as a timeout only if it was past its
//!   own deadline, as Envoy does). An attempt that fails without a response leaves the
//!   other to answer. One hedge per request, paid from the retry budget, counted in
//!   [`RetryStats::hedges`] and [`RetryStats::hedge_wins`].
//! - **How often.** A budget ([`BudgetConfig`]) allows retries up to a ratio of the
//!   requests over a sliding window plus a small floor per second, in atomics on tokio's
//!   clock; when it is spent the failure is returned as it is, so a failing fleet is not
//!   hit by a retry storm.
//! - **Bodies.** The request body is kept as the first attempt streams it
//!   ([`ReplayBody`]), up to [`RetryConfig::max_replay_body`] (64 KiB): a retry sends
//!   the same bytes. A larger body is still forwarded, just not retried.
//!
//! - **Which responses.** Judged by a [`Classify`](switchyard_core::Classify), the same
//!   trait the circuit breaker uses: by default a
//!   [`StatusClassifier`](switchyard_core::StatusClassifier) of [`RetryConfig::statuses`]
//!   and [`RetryConfig::grpc_statuses`]; [`HttpPolicy::with_classifier`] takes another.
//!
//! [`RetryStats`] counts requests, attempts, retries by reason and budget exhaustion.
//!
//! [`RouteHint`]: switchyard_core::RouteHint

mod budget;
mod config;
pub mod error;
mod future;
mod layer;
mod policy;
mod replay;
mod service;

pub use config::{BudgetConfig, Jitter, RetryConfig};
pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use policy::{HttpPolicy, Policy, RetryStats};
pub use replay::ReplayBody;
pub use service::Retry;
