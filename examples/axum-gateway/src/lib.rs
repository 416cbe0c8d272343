//! An axum application that answers its own routes and forwards everything under `/api`
//! to a pool of backends through switchyard's standard stack.
//!
//! ```text
//!   GET /          ─▶ handler            (the application's own routes)
//!   GET /healthz   ─▶ handler
//!   ANY /api/...   ─▶ switchyard::Proxy ─▶ backends (round robin, breakers, retries)
//! ```
//!
//! The proxy is mounted with [`Router::nest_service`], which strips the prefix: a request
//! for `/api/users?page=2` reaches a backend as `/users?page=2` (and `/api` as `/`), so
//! backends serve their API at their root and do not know where the gateway mounts them.
//! To forward the path as it came, mount the proxy with
//! `route_service("/api/{*rest}", proxy)` instead.
//!
//! [`switchyard::Proxy`] fits axum as it is: it is `Clone + Send + Sync`, accepts any
//! request body, never fails (a failure is a 503, 504 or 502 response) and is always
//! ready, so axum, which calls services without waiting for readiness, never parks a
//! request in it. When every backend is down the proxy answers 503 while the
//! application's own routes keep working.
//!
//! WebSockets under `/api` pass through too: `axum::serve` serves connections with
//! upgrades, so the proxy finds the client's upgrade handle in the request and, when the
//! backend answers `101 Switching Protocols`, joins the two connections.
//!
//! One thing axum does not do for the proxy is tell it who the client is: switchyard
//! appends the client's address to `X-Forwarded-For` from a [`ClientAddr`] request
//! extension, which its own server inserts. Here [`serve`] asks axum for each
//! connection's address (`into_make_service_with_connect_info`) and [`with_client_addr`]
//! turns it into a `ClientAddr` on the way to the proxy.

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::routing::get;
use axum::Router;
use switchyard::{Backend, ClientAddr, Proxy, ProxyConfig};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// The gateway's router: its own routes, and `/api` forwarded through `proxy`.
pub fn router(proxy: Proxy) -> Router {
    Router::new()
        .route("/", get(|| async { "switchyard gateway: try /api/\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .nest_service("/api", proxy.map_request(with_client_addr))
}

/// What the examples' binaries make of their arguments `[LISTEN [BACKEND_URL...]]`: the
/// address to listen on (default `127.0.0.1:8080`), and a proxy with the default settings
/// over the backends, numbered `backend-0`, `backend-1`… in the order given.
pub fn from_args(
    mut args: impl Iterator<Item = String>,
) -> Result<(String, Proxy), Box<dyn std::error::Error>> {
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let proxy = Proxy::new(ProxyConfig::default());
    for (i, url) in args.enumerate() {
        proxy.add_backend(Backend::new(format!("backend-{i}"), url.parse()?))?;
    }
    Ok((listen, proxy))
}

/// Copies the client's address from axum's `ConnectInfo` into the [`ClientAddr`]
/// extension that switchyard reads for `X-Forwarded-For`.
pub fn with_client_addr(mut req: Request) -> Request {
    if let Some(&ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        req.extensions_mut().insert(ClientAddr::new(addr));
    }
    req
}

/// Serves the gateway on `listener` until `shutdown` resolves, then lets requests in
/// flight finish.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_app(listener, router(proxy), shutdown).await
}

/// Serves `app` on `listener` with each connection's address (for [`with_client_addr`])
/// until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
