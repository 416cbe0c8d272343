//! The per-backend service at the bottom of the stack: the backend's own connection pool.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, Uri};
use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use switchyard_pool::{Pool, PoolConfig, PoolStats, TlsConfig};
use tower::Service;

use crate::body::{self, Body};
use crate::error::InvalidBackendUrl;

/// One backend: every request it takes is sent to its authority on its own connection
/// pool. Cheap to clone (one reference count): the balancer clones the chosen endpoint for
/// every request.
///
/// `B` is the request body it sends: the proxy's [`Body`] by default.
#[derive(Debug)]
pub struct HttpEndpoint<B = Body> {
    pool: Pool<B>,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<B> HttpEndpoint<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// An endpoint for the backend at `url` (`http://host:port` or `https://host:port`; a
    /// path is ignored), with a new pool. An `https` backend is spoken to over TLS with
    /// `config.tls`, or Mozilla's roots when that is `None`. Must be called within a tokio
    /// runtime (the pool spawns its reaper).
    pub fn new(url: &Uri, config: PoolConfig) -> Result<Self, InvalidBackendUrl> {
        let authority = authority(url)?;
        Ok(Self {
            pool: Pool::new(authority, tls_for(url, config)),
        })
    }

    /// An endpoint for one address of the backend at `url`: it connects to `addr` without
    /// resolving the URL's host, which stays the requests' authority.
    pub fn with_address(
        url: &Uri,
        addr: SocketAddr,
        config: PoolConfig,
    ) -> Result<Self, InvalidBackendUrl> {
        let authority = authority(url)?;
        Ok(Self {
            pool: Pool::with_address(authority, addr, tls_for(url, config)),
        })
    }
}

impl<B> HttpEndpoint<B> {
    /// The backend's authority (`host:port`).
    pub fn authority(&self) -> &Authority {
        self.pool.authority()
    }

    /// The backend's pool counters.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Applies the limits and timeouts of `config` to the backend's pool, keeping its
    /// connections (see [`Pool::reconfigure`]).
    pub fn reconfigure(&self, config: PoolConfig) {
        self.pool.reconfigure(config);
    }

    /// Drains the backend's pool: idle connections close now, busy ones after their
    /// response.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// `config` with TLS for an `https` URL (Mozilla's roots unless it has settings), and
/// without for an `http` one: the URL's scheme alone decides.
fn tls_for(url: &Uri, mut config: PoolConfig) -> PoolConfig {
    config.tls = match url.scheme_str() {
        Some("https") => Some(config.tls.unwrap_or_else(TlsConfig::webpki_roots)),
        _ => None,
    };
    config
}

/// The authority requests to the backend at `url` carry, with the port made explicit.
fn authority(url: &Uri) -> Result<Authority, InvalidBackendUrl> {
    let default_port = match url.scheme_str() {
        Some("http") => 80,
        Some("https") => 443,
        Some(_) => return Err(InvalidBackendUrl::unsupported_scheme(url)),
        None => return Err(InvalidBackendUrl::no_scheme(url)),
    };
    let authority = url
        .authority()
        .cloned()
        .ok_or_else(|| InvalidBackendUrl::no_host(url))?;
    let authority = match authority.port() {
        Some(_) => authority,
        None => format!("{}:{default_port}", authority.host())
            .parse::<Authority>()
            .map_err(|e| InvalidBackendUrl::authority(url, e))?,
    };
    Ok(authority)
}

impl<B> Service<Request<B>> for HttpEndpoint<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.pool.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.pool.call(req),
        }
    }
}

pin_project! {
    /// The response future of [`HttpEndpoint`].
    pub struct ResponseFuture<B = Body> {
        #[pin]
        inner: switchyard_pool::ResponseFuture<B>,
    }
}

impl<B> std::fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<B> Future for ResponseFuture<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(res.map(body::boxed)))
    }
}
