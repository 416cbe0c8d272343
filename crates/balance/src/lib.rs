//! Balancing over a dynamic set of endpoints: round robin, least request, peak EWMA.
//!
//! [`Balance`] spreads requests over the services yielded by a
//! [`tower::discover::Discover`] stream, by one of three [`Policy`]s:
//!
//! - **`round_robin`** (the default): endpoints are visited in **smooth weighted
//!   round-robin** order (nginx's algorithm): with equal weights that is plain round robin,
//!   with weights 5:1:1 it is `a a b a c a a`, interleaved rather than clumped. Blind to
//!   load: a backend that turns slow keeps its share.
//! - **`least_request`**: power of two choices (Envoy's `LEAST_REQUEST`, HAProxy's
//!   `random(2)`): two endpoints drawn at random, the one with fewer requests in flight
//!   per unit of weight wins.
//! - **`peak_ewma`**: power of two choices by cost = latency estimate × (requests in
//!   flight + 1) / weight (linkerd's default; the estimate is tower's `PeakEwma`: a slower
//!   response replaces it at once, faster ones are averaged in with a 10 s decay). A
//!   backend that turns slow loses its share within a few requests.
//!
//! The load-aware policies keep each endpoint's load in atomics (requests in flight, from
//! the call to the response head, and the estimate), so a pick costs two random draws and
//! two loads whatever the number of endpoints, and takes no lock.
//!
//! **Slow start** ([`BalanceConfig::slow_start`]): an endpoint that joins the set (added,
//! healthy again, enabled again) starts at a tenth of its weight, which grows linearly to
//! the full weight over the window, under every policy.
//!
//! # How it differs from `tower::balance`
//!
//! - **It never parks a request.** tower's p2c balancer returns `Pending` from `poll_ready`
//!   until some endpoint is ready, which under axum (which treats services as always ready)
//!   means a request waits forever when every backend is down. `Balance` polls each
//!   candidate once, skips those that are not ready (an open circuit breaker, a saturated
//!   pool) and, when none is, fails the request at once with
//!   [`NoBackendsAvailable`].
//! - **It is `Clone` and clones share one endpoint set.** The set lives in an
//!   [`ArcSwap`](arc_swap::ArcSwap) snapshot written by a background task that drives the
//!   `Discover` stream; the request path does one atomic load and one `fetch_add`, never a
//!   lock. Endpoint services must therefore be `Clone` (a hyper client, a breaker handle…):
//!   each request readies its own clone of the chosen endpoint.
//! - **Weights.** [`Balance::weighted`] reads each endpoint's weight through [`Weight`]
//!   (wrap services in [`Weighted`]); [`Balance::new`] gives every endpoint weight 1.
//!
//! Per-request cost is O(1) while the chosen endpoint (or, under the load-aware
//! policies, one of the two drawn) is ready; only when it is not does the balancer scan
//! the other endpoints, once each.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::convert::Infallible;
//! use switchyard_balance::{Balance, Weighted};
//! use tower::discover::Change;
//! use tower::{service_fn, Service, ServiceExt};
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! for (id, weight) in [("a", 2), ("b", 1)] {
//!     let svc = service_fn(move |_req: ()| async move { Ok::<_, Infallible>(id) });
//!     tx.send(Ok::<_, Infallible>(Change::Insert(id, Weighted::new(svc, weight)))).unwrap();
//! }
//! let discover = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
//! let mut balance = Balance::weighted(discover);
//! balance.endpoint_count().wait_for(|&n| n == 2).await.unwrap();
//!
//! let mut seen = Vec::new();
//! for _ in 0..3 {
//!     seen.push(balance.ready().await.unwrap().call(()).await.unwrap());
//! }
//! assert_eq!(seen, ["a", "b", "a"]);
//! # }
//! ```

mod config;
pub mod future;
mod layer;
mod load;
mod schedule;
mod service;
mod slow_start;
mod weight;

pub use config::{BalanceConfig, Policy, UnknownPolicy};
pub use future::ResponseFuture;
pub use layer::{BalanceLayer, WeightedBalanceLayer};
pub use service::Balance;
pub use switchyard_core::NoBackendsAvailable;
pub use switchyard_core::RouteHint;
pub use weight::{Weight, Weighted};

/// Smooth weighted round-robin order, exposed for tests and tools.
pub use schedule::smooth_weighted_order;
