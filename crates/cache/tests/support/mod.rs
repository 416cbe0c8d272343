//! A scripted backend and helpers shared by the cache's integration tests.

#![allow(dead_code, unreachable_pub)] // each test file uses its own share of the helpers

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{FutureExt, TryFutureExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use switchyard_cache::{Cache, CacheConfig, CacheLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What the backend does with its `n`th request (0-based; the request without its body).
pub type Script = dyn Fn(&Request<()>, usize) -> Result<Response<Body>, BoxError> + Send + Sync;

// Test bookkeeping, not a request path.
#[allow(clippy::disallowed_types)]
pub type Mutex<T> = std::sync::Mutex<T>;

/// A backend that answers from a script, counting and recording the requests it gets.
#[derive(Clone)]
pub struct Backend {
    script: Arc<Script>,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(Instant, http::request::Parts)>>>,
    delay: Duration,
}

impl Backend {
    pub fn new(
        script: impl Fn(&Request<()>, usize) -> Result<Response<Body>, BoxError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            script: Arc::new(script),
            calls: Arc::new(AtomicUsize::new(0)),
            seen: Arc::default(),
            delay: Duration::ZERO,
        }
    }

    /// Every response takes `delay` to come (on tokio's clock).
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Requests received so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The headers of the `n`th request received.
    pub fn headers(&self, n: usize) -> HeaderMap {
        self.seen.lock().unwrap()[n].1.headers.clone()
    }

    /// The method of the `n`th request received.
    pub fn method(&self, n: usize) -> http::Method {
        self.seen.lock().unwrap()[n].1.method.clone()
    }

    /// When the `n`th request arrived.
    pub fn arrived(&self, n: usize) -> Instant {
        self.seen.lock().unwrap()[n].0
    }
}

/// Generic over the request body, as a real backend client is (it also spares the tests
/// rustc's "implementation is not general enough" on spawned futures).
impl<B> Service<Request<B>> for Backend {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let req = req.map(|_| ());
        let result = (self.script)(&req, n);
        let (parts, ()) = req.into_parts();
        self.seen.lock().unwrap().push((Instant::now(), parts));
        let delay = self.delay;
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            result
        })
    }
}

/// A cache with `config` over `backend`.
pub fn cache(config: CacheConfig, backend: &Backend) -> Cache<Backend> {
    CacheLayer::new(config).layer(backend.clone())
}

/// A cache with `config` over `backend` that stored `/a` `age` seconds ago.
pub async fn stored_aged(config: CacheConfig, backend: &Backend, age: u64) -> Cache<Backend> {
    let svc = cache(config, backend);
    send(&svc, get("/a")).await;
    tokio::time::advance(secs(age)).await;
    svc
}

/// A body of `text`.
pub fn body(text: &str) -> Body {
    Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A response with `status`, `headers` and `text` as its body.
pub fn response(status: u16, headers: &[(&str, &str)], text: &str) -> Response<Body> {
    let mut res = Response::new(body(text));
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        res.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    res
}

/// A 200 with `headers` and `text`.
pub fn ok(headers: &[(&str, &str)], text: &str) -> Result<Response<Body>, BoxError> {
    Ok(response(200, headers, text))
}

/// A request in origin-form, as a reverse proxy sees it, for `example.com`.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "example.com");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    request("GET", path, &[])
}

/// What a client received.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    /// The `Cache-Status` value.
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    /// The `Age` value, in seconds.
    pub fn age(&self) -> Option<u64> {
        self.headers
            .get("age")
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// Sends `req` through `svc` and reads the whole response.
///
/// Built from combinators rather than an `async` block, so that it can be spawned:
/// rustc cannot prove a spawned `async` block holding a `Cache<_>` call `Send` when the
/// body type carries a `'static` trait object (a "higher-ranked lifetime error").
pub fn send(
    svc: &Cache<Backend>,
    req: Request<Body>,
) -> impl Future<Output = Got> + Send + 'static {
    try_send(svc, req).map(|res| res.expect("a response"))
}

/// Sends `req` through `svc`: the response read whole, or the error.
pub fn try_send(
    svc: &Cache<Backend>,
    req: Request<Body>,
) -> impl Future<Output = Result<Got, BoxError>> + Send + 'static {
    svc.clone().oneshot(req).and_then(|res| {
        let (parts, body) = res.into_parts();
        body.collect().map_ok(move |collected| Got {
            status: parts.status,
            headers: parts.headers,
            body: collected.to_bytes(),
        })
    })
}

/// An HTTP date `offset_secs` from now on the wall clock.
pub fn http_date(offset_secs: i64) -> String {
    http_date_from(SystemTime::now(), offset_secs)
}

/// An HTTP date `offset_secs` from `base`.
pub fn http_date_from(base: SystemTime, offset_secs: i64) -> String {
    let at = if offset_secs >= 0 {
        base + Duration::from_secs(offset_secs as u64)
    } else {
        base - Duration::from_secs(offset_secs.unsigned_abs())
    };
    httpdate::fmt_http_date(at)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The boundary of a `multipart/byteranges` response.
pub fn boundary(got: &Got) -> &str {
    let content_type = got.header("content-type").unwrap();
    content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("{content_type}"))
}

/// A `multipart/byteranges` body of `text/plain` `parts` (`Content-Range`, bytes).
pub fn multipart(boundary: &str, parts: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (content_range, part) in parts {
        body.push_str(&format!("--{boundary}\r\nContent-Type: text/plain\r\n"));
        body.push_str(&format!("Content-Range: {content_range}\r\n\r\n{part}\r\n"));
    }
    body + &format!("--{boundary}--\r\n")
}
