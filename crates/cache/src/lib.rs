//! A shared HTTP response cache (RFC 9111), as a `tower::Layer`.
//!
//! [`Cache`] answers GET and HEAD requests from stored responses and stores the
//! responses it fetches, as a shared cache (a reverse proxy's) does: over
//! `http::Request<B>` → `http::Response<ResBody>`, usable in any hyper or axum stack. In
//! switchyard's stack it sits above retries and the balancer, so a hit touches no
//! backend at all.
//!
//! - **Stores** cacheable responses to GET (RFC 9111 rules: `no-store`, `private`, `Vary`,
//!   `Authorization`, `Set-Cookie`, freshness, [`CacheConfig::max_object_size`]), keyed by
//!   URL and `Vary` variant, and answers HEAD from them;
//! - **serves** them while fresh, revalidates stale ones, serves stale within
//!   `stale-while-revalidate` / `stale-if-error`, and honours the request's directives;
//! - **answers** `Range` requests from a stored `200` (`206 Partial Content`, a slice of
//!   the stored body; `multipart/byteranges` for several ranges; `416`; `If-Range`), and
//!   stores the origin's `206`s as parts of their representation, combined into its
//!   `200` once they cover it;
//! - **coalesces** concurrent misses for one URL into one upstream request;
//! - **invalidates** on unsafe requests; operators purge through [`CacheHandle`];
//! - **reports** each answer in a `Cache-Status` header (RFC 9211) and counts them in
//!   [`CacheStats`];
//! - stays within [`CacheConfig::max_size`] in a [`MemoryStore`], or any [`Store`].
//!
//! [`docs`] has the full rules, the `Cache-Status` values and the service's requirements.
//!
//! # Example
//!
//! ```
//! # async fn run() -> Result<(), std::convert::Infallible> {
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Empty, Full};
//! use switchyard_cache::{CacheConfig, CacheLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let layer = CacheLayer::new(CacheConfig::default());
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|_req: Request<Empty<Bytes>>| async {
//!     let res = Response::builder()
//!         .header("cache-control", "max-age=60")
//!         .body(Full::new(Bytes::from_static(b"hello")))
//!         .unwrap();
//!     Ok::<_, std::convert::Infallible>(res)
//! });
//! let get = || Request::get("http://example.com/").body(Empty::new()).unwrap();
//! let first = svc.clone().oneshot(get()).await?;
//! assert_eq!(first.headers()["cache-status"], "switchyard; fwd=uri-miss; stored");
//! first.into_body().collect().await?; // stored once its body has been read
//! let second = svc.oneshot(get()).await?;
//! assert_eq!(second.headers()["cache-status"], "switchyard; hit; ttl=60");
//! assert_eq!(handle.stats().hits, 1);
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(run()).unwrap();
//! ```

mod body;
mod config;
mod directives;
pub mod docs;
mod entry;
mod flight;
mod future;
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod layer;
mod parts;
mod policy;
mod range;
mod service;
mod shared;
mod stats;
mod status;
mod store;
mod tier;
mod upstream;

pub use body::CacheBody;
pub use config::{header_names, CacheConfig};
pub use entry::{Entry, Variants};
pub use future::ResponseFuture;
pub use layer::{CacheHandle, CacheLayer};
pub use service::Cache;
pub use stats::CacheStats;
pub use store::{MemoryStore, Store};
pub use tier::{SharedConfig, SharedStats};
