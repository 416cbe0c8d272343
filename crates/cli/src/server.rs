//! Serves a [`Proxy`] on a listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge), limits on
//! what a client may do, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use switchyard::config::ConfigProblem;
use switchyard::{body, Body, ByteSize, ClientAddr, Proxy};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Limits on client connections, so that one bad client cannot hurt the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// A client must send a request's whole header within this time, or the connection is
    /// closed. The same bound closes an HTTP/1.1 keep-alive connection left idle.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request header block accepted (at least 8KiB); larger gets 431.
    pub max_header_size: ByteSize,
    /// Largest request body accepted, when set; a larger `Content-Length` gets 413 and a
    /// streamed body that grows past it is cut off.
    pub max_request_body: Option<ByteSize>,
    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Accept HTTP/2 with prior knowledge (h2c) beside HTTP/1.1.
    pub http2: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            max_header_size: ByteSize(64 * 1024),
            max_request_body: None,
            shutdown_timeout: Duration::from_secs(30),
            http2: true,
        }
    }
}

impl ServerConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.header_read_timeout.is_zero() {
            problems.push(ConfigProblem {
                key: "header_read_timeout".into(),
                message: "must be longer than 0s".into(),
            });
        }
        if self.max_header_size.bytes() < 8192 {
            problems.push(ConfigProblem {
                key: "max_header_size".into(),
                message: "must be at least 8KiB".into(),
            });
        }
        problems
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let max_header = usize::try_from(self.max_header_size.bytes()).unwrap_or(usize::MAX);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_buf_size(max_header.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
        if self.http2 {
            builder
        } else {
            builder.http1_only()
        }
    }
}

/// Serves `proxy` on `listener` until `shutdown` resolves, then stops accepting and lets
/// requests in flight finish for up to `config.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    proxy: Proxy,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = config.builder();
    let max_body = config.max_request_body.map(|b| b.bytes());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service =
            hyper::service::service_fn(move |req| handle(proxy.clone(), req, remote, max_body));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(timeout = ?config.shutdown_timeout, "shutting down: waiting for in-flight requests");
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
}

async fn handle(
    proxy: Proxy,
    mut req: Request<Incoming>,
    remote: SocketAddr,
    max_body: Option<u64>,
) -> Result<Response<Body>, Infallible> {
    let log = tracing::enabled!(target: "switchyard::access", tracing::Level::DEBUG).then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            tokio::time::Instant::now(),
        )
    });
    req.extensions_mut().insert(ClientAddr(remote));
    let res = match max_body {
        Some(max) if content_length(&req).is_some_and(|len| len > max) => {
            status(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Some(max) => {
            let limit = usize::try_from(max).unwrap_or(usize::MAX);
            proxy.oneshot(req.map(|b| Limited::new(b, limit))).await?
        }
        None => proxy.oneshot(req).await?,
    };
    if let Some((method, uri, start)) = log {
        tracing::debug!(
            target: "switchyard::access",
            %remote, %method, %uri, status = res.status().as_u16(), elapsed = ?start.elapsed(),
        );
    }
    Ok(res)
}

fn content_length<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn status(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(body::full(format!("{status}\n")));
    *res.status_mut() = status;
    res
}
