//! Scripted backends to test a tower stack before a deploy.
//!
//! Retries, circuit breakers and caches are configured against failures that are hard to
//! produce on demand: "backend B answers 503 with `Retry-After: 2` twice, then is 800 ms
//! slow, then resets". This crate makes that a [`Script`] of [`Step`]s that a
//! [`ScriptedBackend`] follows, records what every backend saw in a [`Journal`] (each
//! request, when it arrived on the tokio clock, on which connection, which attempt), and
//! reads what the client got into a [`Got`]. Tests then assert on both.
//!
//! - **In process** a backend is a `tower::Service<Request<B>>`: put it under your own
//!   `ServiceBuilder` stack. Under `#[tokio::test(start_paused = true)]` every delay,
//!   backoff and timeout runs on the paused clock, so a test of a 30 s scenario takes
//!   milliseconds and gives the same times every run.
//! - **On loopback** ([`ScriptedBackend::bind`], [`Fleet::bind`]) it serves HTTP/1.1 on a
//!   port of 127.0.0.1, for what only real sockets show: a connection pool, resets,
//!   refused connections, a body cut short, a whole proxy. Its timings run on the tokio
//!   clock too, paused or not. There it also switches protocols
//!   ([`Step::upgrade`] runs a scripted [`Tunnel`] after the `101`), is crashed and
//!   started again on its port ([`ScriptedBackend::kill`],
//!   [`ScriptedBackend::restart`]), and with the `tls` feature serves HTTPS with a
//!   certificate from a CA made for the test (`Ca`, `Builder::tls`).
//!
//! A [`Fleet`] is backends with names sharing one journal, for a balancer or a proxy
//! over several.
//!
//! # Example
//!
//! A timeout layer in front of a backend that is slow once, then fast:
//!
//! ```
//! use std::time::Duration;
//! use http::Request;
//! use switchyard_test::{send, ScriptedBackend, Script, Step};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let backend = ScriptedBackend::new(
//!     "b",
//!     Script::new([Step::delay(Duration::from_secs(5)), Step::ok().body("fast")]),
//! );
//! let stack = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .service(backend.clone());
//!
//! let slow = send(stack.clone(), Request::new(String::new())).await;
//! assert!(slow.is_err(), "the first answer comes after the timeout");
//! let fast = send(stack, Request::new(String::new())).await.unwrap();
//! fast.assert_status(200).assert_backend("b");
//! assert_eq!(fast.text(), "fast");
//!
//! backend.assert_requests(2);
//! // On the paused clock: the second request came as the first timed out.
//! backend.assert_times(&[Duration::ZERO, Duration::from_secs(1)]);
//! # }
//! ```
//!
//! # Worked examples
//!
//! The crate's tests (`crates/test-kit/tests/worked_examples.rs`) show one per layer:
//!
//! - **Your retry policy**: a backend answers `503` with `Retry-After` twice; the retry
//!   layer waits exactly what it is told and the third attempt succeeds, at times the
//!   journal shows on the paused clock.
//! - **Your breaker thresholds**: failures in a row open the circuit, calls fail fast
//!   while it is open, and a probe after the open time closes it again.
//! - **Your cache rules**: a cacheable answer is served from the cache until it is
//!   stale, and the backend's journal shows only the requests that reached it.
//! - **A whole proxy over a fleet**: `switchyard::Proxy` over a loopback fleet where one
//!   backend resets every connection; every client request still succeeds, and the
//!   journal shows the retries on the others.
//!
//! # What each step does
//!
//! | step | in process | on loopback |
//! |---|---|---|
//! | [`Step::ok`], [`Step::status`] | the response | the response |
//! | [`Step::after`], [`Step::delay`] | waits first (tokio clock) | same |
//! | [`Step::slow_body`] | chunks on the tokio clock | chunked, on the tokio clock |
//! | [`Step::truncated_body`] | body ends in [`error::Truncated`] | connection closed mid-body |
//! | [`Step::reset`] | fails with [`error::Reset`] | socket closed with a reset |
//! | [`Step::refuse`] | fails with a refused `ConnectError` | listener closed, open connections closed after their answer in flight |
//! | [`Step::hang`] | never answers | never answers |
//! | [`Step::upgrade`] | `101` (no connection to tunnel on) | `101`, then the [`Tunnel`] |

#![warn(missing_docs)]

mod backend;
mod body;
mod client;
pub mod error;
mod fleet;
mod journal;
mod loopback;
mod script;
#[cfg(feature = "tls")]
mod tls;

pub use backend::{Builder, ResponseFuture, ScriptedBackend, BACKEND_HEADER, HEALTH_PATH};
pub use body::ScriptBody;
pub use client::{send, Got};
pub use fleet::Fleet;
pub use journal::{Journal, Seen, Tunnelled, REQUEST_ID};
pub use script::{Script, Step, Tunnel};
#[cfg(feature = "tls")]
pub use tls::Ca;

/// The error type of in-process calls and response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
