//! Forwards the requests that match a predicate to a proxy and passes the others to the
//! wrapped service: reverse proxying as middleware (the specification's
//! `ProxyMiddleware`).
//!
//! [`Forward`] wraps an application. Each request is tested with a [`Predicate`] (a
//! [`PathPrefix`], a [`Host`], or a closure): a match goes to the proxy (any service,
//! usually a [`Proxy`](crate::Proxy)), anything else to the application. Neither side sees
//! a rewritten request: method, URI, headers and body are passed on as they came, so a
//! forwarded `/api/users` reaches the backend as `/api/users`. (To strip a prefix, mount
//! the proxy under it with axum's `Router::nest_service` instead.)
//!
//! # Readiness
//!
//! `Forward` is as ready as the application: `poll_ready` is the application's, as for
//! any middleware, and a request that is not forwarded goes to the application readied
//! by it. A forwarded request goes to a clone of the proxy that is readied inside the
//! response future, as axum's router and `tower::util::Oneshot` do, because only the
//! request says whether the proxy is needed. A proxy that is not ready therefore holds up
//! only the requests it gets. The proxy must be `Clone`; a `Proxy` is cheap to clone. Under
//! axum the application (a `Router`'s route) is always ready, and so is `Forward`.
//!
//! # Responses and errors
//!
//! The response body is an [`Either`]: the application's body on the left, the proxy's
//! on the right, so neither is boxed again. The proxy's error converts into the
//! application's: with axum both are `Infallible`, and so is `Forward`.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::convert::Infallible;
//! use http::{Request, Response};
//! use http_body_util::Either;
//! use switchyard::forward::PathPrefix;
//! use switchyard::ForwardLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! // In a real application the proxy is a `switchyard::Proxy`; anything `Clone` will do.
//! let proxy = service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new("from a backend".to_owned()))
//! });
//! let app = service_fn(|_req: Request<String>| async {
//!     Ok::<_, Infallible>(Response::new("from the app".to_owned()))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(ForwardLayer::new(proxy, PathPrefix::new("/api")))
//!     .service(app);
//!
//! let res = svc.clone().oneshot(Request::get("/api/users").body(String::new())?).await?;
//! assert!(matches!(res.body(), Either::Right(_)));
//! let res = svc.oneshot(Request::get("/apiary").body(String::new())?).await?;
//! assert!(matches!(res.body(), Either::Left(_)));
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{header, Request, Response};
use http_body_util::Either;
use pin_project_lite::pin_project;
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};

/// Decides which requests [`Forward`] sends to the proxy. Implemented for
/// `Fn(&Request<B>) -> bool` closures.
pub trait Predicate<B> {
    /// Whether `req` goes to the proxy.
    fn forward(&self, req: &Request<B>) -> bool;
}

impl<B, F> Predicate<B> for F
where
    F: Fn(&Request<B>) -> bool,
{
    fn forward(&self, req: &Request<B>) -> bool {
        self(req)
    }
}

/// Matches paths under a prefix, segment by segment: `/api` matches `/api` and
/// `/api/users`, not `/apiary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix {
    /// Without a trailing `/` (empty for the prefix `/`, which matches every path).
    prefix: String,
}

impl PathPrefix {
    /// Matches `prefix` and the paths below it. A trailing `/` is ignored.
    ///
    /// # Panics
    ///
    /// When `prefix` does not start with `/` (it could never match), as axum does for
    /// route paths.
    pub fn new(prefix: &str) -> Self {
        assert!(
            prefix.starts_with('/'),
            "a path prefix must start with `/`, got `{prefix}`"
        );
        Self {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }
}

impl<B> Predicate<B> for PathPrefix {
    fn forward(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

/// Matches requests for one host: the URI's authority (HTTP/2's `:authority`, or an
/// absolute-form HTTP/1.1 target), else the `Host` header. Case-insensitive; the port is
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    host: String,
}

impl Host {
    /// Matches requests for `host` (a name or an address, without a port).
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_ascii_lowercase(),
        }
    }
}

impl<B> Predicate<B> for Host {
    fn forward(&self, req: &Request<B>) -> bool {
        // An absolute URI's authority wins over `Host` (RFC 9112 §3.2.2), and is where
        // HTTP/2 puts `:authority`.
        if let Some(authority) = req.uri().authority() {
            return authority.host().eq_ignore_ascii_case(&self.host);
        }
        let Some(host) = req.headers().get(header::HOST) else {
            return false;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let name = match host.rsplit_once(':') {
            // `name:8080` and `[::1]:8080`; a bare `[::1]` has no port to strip.
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        name.eq_ignore_ascii_case(&self.host)
    }
}

/// Sends the requests that match `predicate` to `proxy`, the others to the wrapped
/// service. See the [module docs](self).
#[derive(Clone)]
pub struct Forward<S, P, F> {
    inner: S,
    proxy: P,
    predicate: F,
}

impl<S, P, F> Forward<S, P, F> {
    /// Wraps `inner`, forwarding the requests that match `predicate` to `proxy`.
    pub fn new(inner: S, proxy: P, predicate: F) -> Self {
        Self {
            inner,
            proxy,
            predicate,
        }
    }

    /// The proxy.
    pub fn proxy(&self) -> &P {
        &self.proxy
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S: fmt::Debug, P: fmt::Debug, F> fmt::Debug for Forward<S, P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("inner", &self.inner)
            .field("proxy", &self.proxy)
            .field("predicate", &std::any::type_name::<F>())
            .finish()
    }
}

impl<S, P, F, B, ResBody, ProxyBody> Service<Request<B>> for Forward<S, P, F>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    P: Service<Request<B>, Response = Response<ProxyBody>> + Clone,
    P::Error: Into<S::Error>,
    F: Predicate<B>,
{
    type Response = Response<Either<ResBody, ProxyBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, Oneshot<P, Request<B>>>;

    /// The application's readiness; the proxy is readied per forwarded request.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let kind = if self.predicate.forward(&req) {
            Kind::Proxy {
                fut: self.proxy.clone().oneshot(req),
            }
        } else {
            Kind::App {
                fut: self.inner.call(req),
            }
        };
        ResponseFuture { kind }
    }
}

/// Builds [`Forward`]. Cheap to clone when the proxy is.
#[derive(Clone)]
pub struct ForwardLayer<P, F> {
    proxy: P,
    predicate: F,
}

impl<P, F> ForwardLayer<P, F> {
    /// Forwards the requests that match `predicate` to `proxy`.
    pub fn new(proxy: P, predicate: F) -> Self {
        Self { proxy, predicate }
    }
}

impl<P: fmt::Debug, F> fmt::Debug for ForwardLayer<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardLayer")
            .field("proxy", &self.proxy)
            .field("predicate", &std::any::type_name::<F>())
            .finish()
    }
}

impl<S, P: Clone, F: Clone> Layer<S> for ForwardLayer<P, F> {
    type Service = Forward<S, P, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Forward::new(inner, self.proxy.clone(), self.predicate.clone())
    }
}

pin_project! {
    /// The response future of [`Forward`].
    pub struct ResponseFuture<A, P> {
        #[pin]
        kind: Kind<A, P>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<A, P> {
        App { #[pin] fut: A },
        Proxy { #[pin] fut: P },
    }
}

impl<A, P> fmt::Debug for ResponseFuture<A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<A, P, ResBody, ProxyBody, E, PE> Future for ResponseFuture<A, P>
where
    A: Future<Output = Result<Response<ResBody>, E>>,
    P: Future<Output = Result<Response<ProxyBody>, PE>>,
    PE: Into<E>,
{
    type Output = Result<Response<Either<ResBody, ProxyBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match self.project().kind.project() {
            KindProj::App { fut } => ready!(fut.poll(cx)).map(|res| res.map(Either::Left)),
            KindProj::Proxy { fut } => ready!(fut.poll(cx))
                .map(|res| res.map(Either::Right))
                .map_err(Into::into),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::FutureExt;
    use tower_test::mock;

    use super::*;

    type Mock = mock::Mock<Request<&'static str>, Response<&'static str>>;

    fn request(uri: &str) -> Request<&'static str> {
        Request::get(uri)
            .header("x-client", "kept")
            .body("payload")
            .unwrap()
    }

    #[tokio::test]
    async fn matching_requests_go_to_the_proxy_and_the_rest_to_the_app_untouched() {
        let (app, mut app_handle) = mock::pair::<Request<&'static str>, Response<&'static str>>();
        let (proxy, mut proxy_handle) = mock::pair();
        let svc: Forward<Mock, Mock, _> = Forward::new(app, proxy, PathPrefix::new("/api"));

        let to_app = tokio::spawn(svc.clone().oneshot(request("/apiary?x=1")));
        let (req, send) = app_handle.next_request().await.unwrap();
        assert_eq!(req.uri(), "/apiary?x=1");
        assert_eq!(req.headers()["x-client"], "kept");
        assert_eq!(*req.body(), "payload");
        send.send_response(Response::new("app"));
        let res = to_app.await.unwrap().unwrap();
        assert!(matches!(res.into_body(), Either::Left("app")));

        let to_proxy = tokio::spawn(svc.oneshot(request("/api/users")));
        let (req, send) = proxy_handle.next_request().await.unwrap();
        assert_eq!(req.uri(), "/api/users");
        assert_eq!(req.headers()["x-client"], "kept");
        send.send_response(Response::new("backend"));
        let res = to_proxy.await.unwrap().unwrap();
        assert!(matches!(res.into_body(), Either::Right("backend")));
    }

    #[tokio::test]
    async fn a_proxy_that_is_not_ready_holds_up_only_forwarded_requests() {
        let (app, mut app_handle) = mock::pair::<Request<&'static str>, Response<&'static str>>();
        let (proxy, mut proxy_handle) = mock::pair();
        proxy_handle.allow(0);
        let mut svc: Forward<Mock, Mock, _> = Forward::new(app, proxy, PathPrefix::new("/api"));

        // Ready, whatever the proxy's readiness.
        assert!(svc.ready().now_or_never().is_some());
        let mut forwarded = svc.call(request("/api"));
        assert!((&mut forwarded).now_or_never().is_none());

        let to_app = tokio::spawn(svc.clone().oneshot(request("/")));
        let (_, send) = app_handle.next_request().await.unwrap();
        send.send_response(Response::new("app"));
        assert!(to_app.await.unwrap().is_ok());

        proxy_handle.allow(1);
        let forwarded = tokio::spawn(forwarded);
        let (_, send) = proxy_handle.next_request().await.unwrap();
        send.send_response(Response::new("backend"));
        assert!(forwarded.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn readiness_is_the_apps() {
        let (app, mut app_handle) = mock::pair::<Request<&'static str>, Response<&'static str>>();
        let (proxy, _proxy_handle) = mock::pair();
        app_handle.allow(0);
        let mut svc: Forward<Mock, Mock, _> = Forward::new(app, proxy, PathPrefix::new("/api"));
        assert!(svc.ready().now_or_never().is_none());
        app_handle.allow(1);
        assert!(svc.ready().now_or_never().is_some());
    }

    #[tokio::test]
    async fn proxy_errors_convert_into_the_apps() {
        let app =
            tower::service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
        let proxy = tower::service_fn(|_: Request<()>| async {
            Err::<Response<()>, _>(std::io::Error::other("backend gone"))
        });
        let app = app.map_err(|never| -> std::io::Error { match never {} });
        let svc = Forward::new(app, proxy, |req: &Request<()>| req.uri().path() == "/p");
        let err = svc
            .oneshot(Request::get("/p").body(()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "backend gone");
    }

    fn forwarded(p: &impl Predicate<()>, req: http::request::Builder) -> bool {
        p.forward(&req.body(()).unwrap())
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let api = PathPrefix::new("/api/");
        for (path, expected) in [
            ("/api", true),
            ("/api/", true),
            ("/api/users?page=2", true),
            ("/apiary", false),
            ("/", false),
            ("/v1/api", false),
        ] {
            assert_eq!(forwarded(&api, Request::get(path)), expected, "{path}");
        }
        assert!(forwarded(&PathPrefix::new("/"), Request::get("/anything")));
    }

    #[test]
    #[should_panic(expected = "must start with `/`")]
    fn a_prefix_without_a_slash_is_refused() {
        PathPrefix::new("api");
    }

    #[test]
    fn hosts_match_the_host_header_or_the_authority() {
        let host = Host::new("API.example.com");
        let get = |uri: &str| Request::get(uri);
        assert!(forwarded(&host, get("/").header("host", "api.example.com")));
        assert!(forwarded(
            &host,
            get("/").header("host", "Api.Example.Com:8080")
        ));
        assert!(forwarded(&host, get("http://api.example.com:8443/x")));
        assert!(forwarded(&host, get("http://user@api.example.com/x")));
        assert!(!forwarded(&host, get("/").header("host", "example.com")));
        assert!(!forwarded(
            &host,
            get("/").header("host", "api.example.com.evil")
        ));
        assert!(!forwarded(&host, get("/")));
        // The authority wins over the header, as HTTP/1.1 and HTTP/2 say.
        assert!(forwarded(
            &host,
            get("http://api.example.com/").header("host", "other")
        ));
        assert!(!forwarded(
            &host,
            get("http://other/").header("host", "api.example.com")
        ));

        let v6 = Host::new("[::1]");
        assert!(forwarded(&v6, get("/").header("host", "[::1]:3000")));
        assert!(forwarded(&v6, get("/").header("host", "[::1]")));
        assert!(forwarded(&v6, get("http://[::1]:3000/")));
    }
}
