//! A connection pool for one backend, as a `tower::Service<http::Request<B>>`.
//!
//! hyper-util's pooled client keys connections by authority and has no cap on how many it
//! opens to one host (hyperium/hyper#3785), nor stats. [`Pool`] is one backend's pool:
//!
//! - **A hard cap.** At most [`PoolConfig::max_connections`] connections are open to the
//!   backend. Over HTTP/1.1 a connection carries one request at a time, so a request that
//!   finds every connection busy waits, first come first served, for up to
//!   [`PoolConfig::wait_timeout`] and then fails with
//!   [`PoolTimeout`] (a 503 at the proxy).
//! - **Reuse first.** An idle connection is taken before a new one is dialled. Connections
//!   the backend closed are dropped, not handed out; a request that a just-closed connection
//!   could not send is sent on another.
//! - **Idle reaping** on `tokio::time`: connections idle for
//!   [`PoolConfig::idle_timeout`] are closed (checked when one is taken, and by a reaper
//!   task that stops when the pool is dropped). So are connections that the traffic left
//!   spare for a whole idle timeout: idle connections are reused first in, first out, so
//!   under steady traffic each is taken now and then, and a pool grown by a burst would
//!   otherwise keep its size. At most [`PoolConfig::max_idle`] are kept.
//! - **Two HTTP/1.1 engines** ([`PoolConfig::http1`], [`Http1Engine`]): hyper's
//!   `client::conn::http1`, or `switchyard-h1`'s native client (the default), whose
//!   connections have no task of their own: the request's task drives its connection,
//!   and an idle one is checked for a close (or bytes nobody asked for) before it is used.
//! - **HTTP/2** by prior knowledge ([`Protocol::Http2`]): requests share one multiplexed
//!   connection, and another is opened when every open one carries
//!   [`PoolConfig::h2_max_streams`] streams.
//! - **TLS** to `https` backends when [`PoolConfig::tls`] is set ([`TlsConfig`]: rustls,
//!   Mozilla's roots or your own CA, and a client certificate ([`CertKey`]) for backends
//!   that ask for one), with the backend's host as SNI and ALPN for the protocol; the
//!   handshake counts against the connect timeout.
//! - **Protocol upgrades**: an HTTP/1.1 connection whose backend answers `101 Switching
//!   Protocols` is handed to the upgrade (`hyper::upgrade::on` of the response, or the
//!   response's `switchyard_h1::OnUpgrade` extension on the native engine) and leaves
//!   the pool.
//! - **Typed connect errors** ([`ConnectError`]: refused,
//!   DNS, timeout, TLS), so a breaker or retry policy can classify them.
//! - **Stats** from atomics, never a lock: [`Pool::stats`].
//! - **Limits that change live**: [`Pool::reconfigure`] applies a new cap, idle limit and
//!   timeouts to a pool that has connections (a configuration reload): new connections and
//!   checkouts follow them at once, idle connections beyond a lower limit close, requests
//!   in flight finish. A new HTTP/1.1 engine or new TLS settings apply to the connections
//!   dialled from then on: those made before take no new request (the idle ones close at
//!   once, the busy ones when their response ends).
//!
//! A pool belongs to one backend instance: a backend removed and added again gets a new
//! pool, never the old connections. [`Pool::close`] drains it: idle connections close at
//! once, busy ones when their response ends.
//!
//! The request's URI may be absolute or origin-form; the pool sends it to its backend
//! (origin-form with a `Host` header over HTTP/1.1, when the request has none).
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), switchyard_core::BoxError> {
//! use switchyard_pool::{Pool, PoolConfig};
//! use tower::ServiceExt;
//!
//! let pool = Pool::new("127.0.0.1:3001".parse()?, PoolConfig::default());
//! let req = http::Request::get("/").body(http_body_util::Empty::<bytes::Bytes>::new())?;
//! let res = pool.clone().oneshot(req).await?;
//! println!("{} ({} connections open)", res.status(), pool.stats().open);
//! # Ok(()) }
//! ```

mod body;
mod config;
mod connect;
mod error;
mod idle;
mod linger;
mod service;
mod stats;
mod tls;

pub use body::PooledBody;
pub use config::{Http1Engine, PoolConfig, Protocol};
pub use error::{CaError, CertKeyError};
pub use service::{Pool, ResponseFuture};
pub use stats::{ClosedStats, PoolStats};
pub use switchyard_core::{ConnectError, ConnectErrorKind, PoolTimeout};
pub use tls::{ca_roots, ca_roots_from_file, crypto_provider, CertKey, TlsConfig};
