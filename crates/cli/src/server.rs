//! Serves a [`Proxy`] on a listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge), limits on
//! what a client may do, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::future::{self, Either};
use pin_project_lite::pin_project;

use http::{header, Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::{Deserialize, Serialize};
use switchyard::config::ConfigProblem;
use switchyard::{body, headers, Body, ByteSize, ClientAddr, Proxy, ProxyFuture};
use tokio::net::TcpListener;
use tower::Service;

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
        let service = Connection {
            proxy: proxy.clone(),
            client: ClientAddr::new(remote),
            max_body,
        };
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

type Ready = future::Ready<Result<Response<Body>, Infallible>>;

/// The service of one client connection.
struct Connection {
    proxy: Proxy,
    client: ClientAddr,
    max_body: Option<u64>,
}

impl hyper::service::Service<Request<Incoming>> for Connection {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready, AccessLog<ProxyFuture>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        handle(&self.proxy, req, &self.client, self.max_body)
    }
}

/// One request: the client's address for `X-Forwarded-For`, the body limit, and the
/// access log line. No async block: the future is the proxy's own, wrapped once.
fn handle(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    client: &ClientAddr,
    max_body: Option<u64>,
) -> Either<Ready, AccessLog<ProxyFuture>> {
    if let Some(max) = max_body {
        if content_length(&req).is_some_and(|len| len > max) {
            return Either::Left(future::ready(Ok(status(StatusCode::PAYLOAD_TOO_LARGE))));
        }
    }
    let log = tracing::enabled!(target: "switchyard::access", tracing::Level::DEBUG).then(|| {
        Box::new(LogLine {
            remote: client.addr(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            start: tokio::time::Instant::now(),
        })
    });
    // X-Forwarded-For is appended here, where the client is known, instead of through a
    // `ClientAddr` request extension: that saves an extension map per request. Stripping
    // first keeps the order ProxyHeaders uses (a client cannot have its own address removed
    // by listing X-Forwarded-For in `Connection`); ProxyHeaders' own pass is then a no-op.
    headers::strip_hop_by_hop(req.headers_mut());
    headers::append_forwarded_for(req.headers_mut(), client.ip());
    let mut proxy = proxy.clone();
    let inner = match max_body {
        Some(max) => {
            let limit = usize::try_from(max).unwrap_or(usize::MAX);
            proxy.call(req.map(|b| body::boxed(Limited::new(b, limit))))
        }
        None => proxy.call(req),
    };
    Either::Right(AccessLog { inner, log })
}

struct LogLine {
    remote: SocketAddr,
    method: http::Method,
    uri: http::Uri,
    start: tokio::time::Instant,
}

pin_project! {
    /// Logs one line when the response head is ready, if access logging is on.
    struct AccessLog<F> {
        #[pin]
        inner: F,
        log: Option<Box<LogLine>>,
    }
}

impl<F> Future for AccessLog<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        if let (Some(line), Ok(res)) = (this.log.take(), &res) {
            tracing::debug!(
                target: "switchyard::access",
                remote = %line.remote, method = %line.method, uri = %line.uri,
                status = res.status().as_u16(), elapsed = ?line.start.elapsed(),
            );
        }
        Poll::Ready(res)
    }
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
