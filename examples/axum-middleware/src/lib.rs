//! Reverse proxying as middleware: [`switchyard::ForwardLayer`] around an axum
//! application sends every request under `/api` to the backends and passes the others to
//! the application, untouched.
//!
//! ```text
//!   request ─▶ ForwardLayer ── path under /api ──▶ switchyard::Proxy ─▶ backends
//!                    │
//!                    └──────── anything else ────▶ the application's handlers
//! ```
//!
//! Unlike mounting the proxy as a route (`examples/axum-gateway`), the layer decides
//! before the application's handlers run, with any
//! [`Predicate`](switchyard::forward::Predicate): a path prefix here, a
//! [`Host`](switchyard::forward::Host) or a closure over the request elsewhere. Forwarded
//! requests keep their path (`/api/users` reaches a backend as `/api/users`); the others
//! reach the application exactly as they came.
//!
//! `Router::layer` wraps every route and the fallback, so a path the application has no
//! route for is forwarded too when it matches. The layer is as ready as the route it
//! wraps (always, in axum) and readies the proxy inside each forwarded request's future,
//! so no request waits in `poll_ready`, where axum would not expect it to.
//!
//! As in the gateway example, axum is asked for each connection's address so that the
//! proxy can append it to `X-Forwarded-For` (with the gateway's [`with_client_addr`]);
//! the application gets its requests without that extension.

use std::future::Future;

use axum::routing::get;
use axum::Router;
use example_axum_gateway::with_client_addr;
use http::HeaderMap;
use switchyard::forward::PathPrefix;
use switchyard::{ForwardLayer, Proxy};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The application: its own routes, wrapped in a layer that forwards `/api` to `proxy`.
pub fn app(proxy: Proxy) -> Router {
    let proxy = proxy.map_request(with_client_addr);
    Router::new()
        .route("/", get(|| async { "the application\n" }))
        .route("/headers", get(echo_headers))
        .layer(ForwardLayer::new(proxy, PathPrefix::new("/api")))
}

/// Answers with the request headers the application saw, one `name: value` per line.
async fn echo_headers(headers: HeaderMap) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", value.to_str().unwrap_or("?")))
        .collect()
}

/// Serves the application on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    example_axum_gateway::serve_app(listener, app(proxy), shutdown).await
}
