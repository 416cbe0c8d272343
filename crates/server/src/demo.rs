//! `switchyard demo`: the embedded backends the binary runs behind the proxy, in one
//! process.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Starts a demo backend on `addr` (port 0 for any). It answers every path with
/// `hello from <id>` and an `x-backend: <id>` header (not cacheable: `no-store`),
/// `/static/...` with a response the proxy may cache for a minute, and `/health` with
/// `ok`. Returns the address it listens on; it serves until the runtime stops.
pub async fn spawn_backend(id: &'static str, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                let path = req.uri().path();
                let (body, cache_control) = if path == "/health" {
                    ("ok\n".to_owned(), "no-store")
                } else if path.starts_with("/static/") {
                    (
                        format!("static {path}, served by {id}\n"),
                        "public, max-age=60",
                    )
                } else {
                    let text = format!("hello from {id}: {} {}\n", req.method(), req.uri());
                    (text, "no-store")
                };
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(StatusCode::OK)
                        .header("x-backend", id)
                        .header("content-type", "text/plain; charset=utf-8")
                        .header("cache-control", cache_control)
                        .body(Full::new(Bytes::from(body)))
                        .expect("valid response"),
                )
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

/// Starts the demo's backends `backend-1` to `backend-3` on free 127.0.0.1 ports (see
/// [`spawn_backend`]): each one's id, address and entry for the proxy.
pub async fn spawn_three() -> std::io::Result<Vec<(&'static str, SocketAddr, switchyard::Backend)>>
{
    let mut backends = Vec::new();
    for id in ["backend-1", "backend-2", "backend-3"] {
        let addr = spawn_backend(id, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{addr}").parse();
        let url = url.expect("a socket address is a URL's authority");
        backends.push((id, addr, switchyard::Backend::new(id, url)));
    }
    Ok(backends)
}

/// The text printed when the demo starts.
pub fn banner(
    listen: SocketAddr,
    backends: &[(&str, SocketAddr)],
    admin: Option<SocketAddr>,
) -> String {
    let mut s = format!("switchyard demo: proxy on http://{listen}, round robin over\n");
    for (id, addr) in backends {
        s.push_str(&format!("  {id} on http://{addr}\n"));
    }
    if let Some(admin) = admin {
        s.push_str(&format!(
            "\nDashboard: http://{admin}/   (admin API: http://{admin}/backends, /stats)\n"
        ));
    }
    s.push_str(&format!(
        "\nTry:\n  curl -i http://{listen}/hello          # answered by a backend; see x-backend\n  \
         for i in 1 2 3 4 5 6; do curl -s http://{listen}/; done   # round robin\n  \
         curl --http2-prior-knowledge -i http://{listen}/h2       # HTTP/2 in, HTTP/1.1 out\n  \
         curl -si http://{listen}/static/app.css | grep -i cache-status   # twice: the second is a cache hit\n\n\
         Stop with Ctrl-C.\n"
    ));
    s
}
