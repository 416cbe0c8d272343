//! The per-backend service at the bottom of the stack: rewrites the request URI to the
//! backend and sends it on a shared, pooled hyper client.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use switchyard_core::BoxError;
use tower::Service;

use crate::body::{self, Body};
use crate::ProxyConfig;

/// The client every endpoint sends on. Connections are pooled per backend authority.
pub type HttpClient = Client<HttpConnector, Body>;

/// Builds the shared client from the proxy's connection settings.
pub fn client(config: &ProxyConfig) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connection_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.idle_conn_timeout)
        .pool_max_idle_per_host(config.max_connections_per_backend)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// One backend: every request it takes is sent to its scheme and authority.
///
/// Cheap to clone (one reference count): the balancer clones the chosen endpoint for
/// every request.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    scheme: Scheme,
    authority: Authority,
    client: HttpClient,
}

impl HttpEndpoint {
    /// An endpoint for the backend at `url` (`http://host:port`; a path is ignored).
    pub fn new(url: &Uri, client: HttpClient) -> Result<Self, String> {
        let scheme = match url.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => return Err("https backends are not supported yet; use http".into()),
            Some(other) => return Err(format!("unsupported scheme `{other}`; use http")),
            None => return Err(format!("`{url}` has no scheme; write http://{url}")),
        };
        let authority = url
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        Ok(Self {
            inner: Arc::new(Inner {
                scheme,
                authority,
                client,
            }),
        })
    }

    /// The backend's authority (`host:port`).
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }
}

impl Service<Request<Body>> for HttpEndpoint {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // hyper-util's client queues internally; per-backend limits belong to the pool.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(self.inner.scheme.clone());
        parts.authority = Some(self.inner.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are set");
        // Backends are spoken to over HTTP/1.1 whatever the client spoke.
        *req.version_mut() = Version::HTTP_11;
        ResponseFuture {
            inner: self.inner.client.request(req),
        }
    }
}

pin_project! {
    /// The response future of [`HttpEndpoint`].
    pub struct ResponseFuture {
        #[pin]
        inner: hyper_util::client::legacy::ResponseFuture,
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.project().inner.poll(cx))?;
        Poll::Ready(Ok(res.map(body::boxed)))
    }
}
