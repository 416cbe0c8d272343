//! Retries for HTTP requests through a balancer, as a `tower::Layer`.
//!
//! [`Retry`] sits above the balancer so that every attempt picks a backend again, and
//! tells the balancer (through the [`RouteHint`](switchyard_core::RouteHint) that travels
//! with the request's [`ReplayBody`]; give the balancer [`route_hint`]) which backend the
//! previous attempt went to, so that a retry goes elsewhere when another backend is ready.
//!
//! - **What is retried.** Only idempotent methods (GET, HEAD, OPTIONS, TRACE, PUT,
//!   DELETE), unless [`RetryConfig::non_idempotent`] opts POST and PATCH in. Only
//!   failures that say the request did not do its work: a failed connect, the chosen
//!   backend's circuit open, no backend available, no free connection in time, and the
//!   statuses in [`RetryConfig::statuses`] (502, 503, 504); for idempotent methods also a
//!   connection that broke mid-request (a backend that went away). Never a 4xx. The
//!   decision is made on the response head, before any of its body reaches the client.
//! - **When.** After [`RetryConfig::delay`], doubled at each retry when
//!   [`RetryConfig::backoff`] is on (100, 200, 400 ms), capped at
//!   [`RetryConfig::max_delay`], spread by [`Jitter`] (equal jitter by default: each delay
//!   is uniform between half and all of its exponential value). A 503 or 429 with
//!   `Retry-After` is retried after exactly that long if it is within
//!   [`RetryConfig::retry_after_cap`], and returned as it is otherwise. No attempt starts
//!   after [`RetryConfig::deadline`].
//! - **How often.** A budget ([`BudgetConfig`]) allows retries up to a ratio of the
//!   requests over a sliding window plus a small floor per second, in atomics on tokio's
//!   clock; when it is spent the failure is returned as it is, so a failing fleet is not
//!   hit by a retry storm.
//! - **Bodies.** The request body is kept as the first attempt streams it
//!   ([`ReplayBody`]), up to [`RetryConfig::max_replay_body`] (64 KiB): a retry sends
//!   the same bytes. A larger body is still forwarded, just not retried.
//!
//! [`RetryStats`] counts requests, attempts, retries by reason and budget exhaustion.

mod budget;
mod config;
mod replay;
mod service;

pub use config::{BudgetConfig, Jitter, RetryConfig};
pub use replay::{route_hint, ReplayBody};
pub use service::{ResponseFuture, Retry, RetryLayer, RetryStats};
