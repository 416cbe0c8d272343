//! One health check: a `GET` of the check path on one endpoint.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, Request, StatusCode};
use http_body_util::Empty;
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_pool::{Protocol, TlsConfig};
use tokio::net::TcpStream;

use crate::error::CheckError;

/// Where a check goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    /// The backend's id.
    pub backend: String,
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// The backend's `host:port`, sent as the `Host` header.
    pub authority: String,
    /// The request path, from the configuration.
    pub path: String,
    /// Whether the backend speaks HTTP/2 by prior knowledge.
    pub http2: bool,
    /// Whether the backend is an `https` one: the check runs over TLS.
    pub https: bool,
}

/// Runs health checks. The registry bounds each check with the configured timeout,
/// measures it, and compares the status with the expected range; a checker only performs
/// the request.
pub trait Checker: Send + Sync + 'static {
    /// Checks `target`: the response's status, or why there is none.
    fn check(&self, target: CheckTarget) -> BoxFuture<'static, Result<StatusCode, CheckError>>;
}

/// The default [`Checker`]: a `GET` on a new connection, HTTP/1.1 or HTTP/2 as the backend
/// speaks, over TLS for an `https` backend, closed after the response head. A fresh
/// connection per check tests what a new request would need (accepting and the TLS
/// handshake, not only a warm pooled socket), as HAProxy does.
#[derive(Debug, Clone)]
pub struct HttpChecker {
    tls: TlsConfig,
}

impl HttpChecker {
    /// A checker that trusts `tls`'s certificate authorities on `https` backends. Use the
    /// settings the backends' pools use, so that a check passes when a request would.
    pub fn with_tls(tls: TlsConfig) -> Self {
        Self { tls }
    }
}

impl Default for HttpChecker {
    /// Trusts Mozilla's certificate authorities, as [`TlsConfig::webpki_roots`].
    fn default() -> Self {
        Self::with_tls(TlsConfig::webpki_roots())
    }
}

impl Checker for HttpChecker {
    fn check(&self, target: CheckTarget) -> BoxFuture<'static, Result<StatusCode, CheckError>> {
        let tls = self.tls.clone();
        Box::pin(async move { http_check(&target, tls).await })
    }
}

async fn http_check(target: &CheckTarget, tls: TlsConfig) -> Result<StatusCode, CheckError> {
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| CheckError::new(format!("connect {}", target.addr), e))?;
    let _ = stream.set_nodelay(true);
    if !target.https {
        return check_on(target, TokioIo::new(stream)).await;
    }
    let authority: http::uri::Authority = target
        .authority
        .parse()
        .map_err(|e| CheckError::new(format!("bad authority {}", target.authority), e))?;
    let host = authority.host();
    let protocol = if target.http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    let stream = tls
        .handshake(host, stream, protocol)
        .await
        .map_err(|e| CheckError::new(format!("TLS handshake with {}", target.authority), e))?;
    check_on(target, TokioIo::new(stream)).await
}

async fn check_on<I>(target: &CheckTarget, io: I) -> Result<StatusCode, CheckError>
where
    I: Read + Write + Unpin + Send + 'static,
{
    let scheme = if target.https { "https" } else { "http" };
    let req = |uri: String| {
        Request::get(uri)
            .header(header::HOST, &target.authority)
            .header(header::USER_AGENT, "switchyard-health-check")
            .body(Empty::<Bytes>::new())
            .map_err(|e| CheckError::new("bad check request", e))
    };
    let res = if target.http2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| CheckError::new("HTTP/2 handshake", e))?;
        tokio::spawn(conn);
        let uri = format!("{scheme}://{}{}", target.authority, target.path);
        sender.send_request(req(uri)?).await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| CheckError::new("handshake", e))?;
        tokio::spawn(conn);
        sender.send_request(req(target.path.clone())?).await
    };
    res.map(|r| r.status())
        .map_err(|e| CheckError::new("request", e))
}
