//! Proxy semantics for headers: what a hop keeps to itself, and what a proxy adds.
//!
//! On the way to the backend [`ProxyHeaders`]:
//! - removes hop-by-hop headers: `Connection` and every header it lists, `Keep-Alive`,
//!   `Proxy-Connection`, `TE` (except `TE: trailers`, which gRPC needs end to end),
//!   `Trailer`, `Transfer-Encoding`, `Upgrade` (RFC 9110 §7.6.1), and `HTTP2-Settings`,
//!   which only an `h2c` upgrade uses (RFC 9113 §3.1);
//! - appends the client's address to `X-Forwarded-For` (from the [`ClientAddr`] request
//!   extension, which the server, `switchyard-server`, inserts), and sets
//!   `X-Forwarded-Proto` and `X-Forwarded-Host`; with a client certificate in that
//!   extension, sets `X-Forwarded-Client-Cert` in place of any the client sent;
//! - appends `Via: <version> switchyard`;
//! - keeps the client's `Host` (for HTTP/2 clients their `:authority`, the URI authority,
//!   even beside a `host` header), or with `preserve_host(false)` drops it so the
//!   backend's authority is sent. That the host is valid is
//!   [`StrictHost`](crate::host::StrictHost)'s to check, above the cache.
//!
//! On the way back it removes hop-by-hop headers and appends `Via` to the response.
//!
//! An HTTP/1.1 client's upgrade (WebSocket) keeps its `Upgrade` and `Connection: upgrade`
//! both ways, and on `101 Switching Protocols` the client and backend connections are
//! joined, bytes copied both ways until either closes. That takes the client connection's
//! upgrade handle, which hyper's server puts in the request's extensions when it serves
//! with upgrades (`serve_connection_with_upgrades`, as the `switchyard` binary and
//! `axum::serve` do); without one the request goes on as a plain one, its upgrade headers
//! removed. Upgrades need an HTTP/1.1 backend. Only the protocols of
//! [`upgrade_protocols`](ProxyHeaders::upgrade_protocols) (by default `websocket`) are
//! forwarded; any other upgrade is removed and the request goes on as a plain one, and
//! `h2c` never goes through. A backend's `101` the proxy cannot join (to a request whose
//! upgrade it did not take, or to a protocol the client did not ask for) becomes `502`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::upgrade::{self, Tunnels, Upgrade};

/// The client of a connection, inserted into every request's extensions by the server
/// (`switchyard-server`) so that [`ProxyHeaders`] can append its address to
/// `X-Forwarded-For`, and name its certificate in `X-Forwarded-Client-Cert`. A request
/// without one gets no `X-Forwarded-For` entry.
///
/// Build it once per connection: it keeps the address's header form, so a request costs
/// a reference count instead of formatting the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    addr: SocketAddr,
    ip: HeaderValue,
    cert: Option<HeaderValue>,
}

impl ClientAddr {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Self {
            addr,
            ip,
            cert: None,
        }
    }

    /// The client presented a certificate that the listener verified: `value` (as
    /// `Hash=<hex SHA-256>`) is sent as `X-Forwarded-Client-Cert`, in place of any the
    /// client sent.
    pub fn with_forwarded_cert(mut self, value: HeaderValue) -> Self {
        self.cert = Some(value);
        self
    }

    /// The `X-Forwarded-Client-Cert` value naming the client's verified certificate.
    pub fn forwarded_cert(&self) -> Option<&HeaderValue> {
        self.cert.as_ref()
    }

    /// The client's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The client's IP address as a header value, for [`append_forwarded_for`].
    pub fn ip(&self) -> &HeaderValue {
        &self.ip
    }
}

/// How long an upgraded connection may be silent both ways, unless set otherwise.
const DEFAULT_UPGRADE_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The upgrade protocols forwarded unless set otherwise.
fn default_upgrade_protocols() -> Arc<[Box<str>]> {
    Arc::new(["websocket".into()])
}

/// Removes the hop-by-hop headers of one message (RFC 9110 §7.6.1). `TE: trailers` is
/// kept, as HTTP/2 and gRPC require it to reach the origin.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names (standard names compare
    // as small integers) saves seven hashed removals.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            if name != header::TE {
                headers.remove(name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    let te_trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &HTTP2_SETTINGS,
    ] {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == HTTP2_SETTINGS
}

/// Appends the client's address (in header form) to `X-Forwarded-For`.
pub fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    // One lookup (the name hashed once) whether or not the client sent one.
    match headers.entry(X_FORWARDED_FOR.clone()) {
        Entry::Vacant(vacant) => {
            vacant.insert(ip.clone());
        }
        Entry::Occupied(mut occupied) => {
            let mut value = Vec::new();
            for prior in occupied.iter() {
                value.extend_from_slice(prior.as_bytes());
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(ip.as_bytes());
            let joined = HeaderValue::from_bytes(&value).unwrap_or_else(|_| ip.clone());
            // Replaces every prior line with the one joined value.
            occupied.insert(joined);
        }
    }
}

fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_09 => "0.9 switchyard",
        Version::HTTP_10 => "1.0 switchyard",
        Version::HTTP_2 => "2 switchyard",
        Version::HTTP_3 => "3 switchyard",
        _ => "1.1 switchyard",
    })
}

/// Applies the request half of proxy semantics (see the [module docs](self)).
pub fn prepare_request<B>(req: &mut Request<B>, preserve_host: bool) {
    let authority = || {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    };
    let header = || req.headers().get(header::HOST).cloned();
    // HTTP/2 and later name the host in `:authority`; a `host` beside it does not win
    // (RFC 9113 §8.3.1).
    let (host, in_place) = if req.version() >= Version::HTTP_2 {
        (authority().or_else(header), false)
    } else {
        match header() {
            Some(host) => (Some(host), true),
            None => (authority(), false),
        }
    };
    let proto = HeaderValue::from_static(match req.uri().scheme_str() {
        Some("https") => "https",
        _ => "http",
    });
    let client = req.extensions().get::<ClientAddr>().cloned();
    let version = req.version();
    let headers = req.headers_mut();
    strip_hop_by_hop(headers);
    // X-Forwarded-For/-Proto/-Host and Via: grow the map once, not per insert.
    headers.reserve(4);

    if let Some(client) = client {
        append_forwarded_for(headers, &client.ip);
        if let Some(cert) = client.cert {
            headers.insert(X_FORWARDED_CLIENT_CERT.clone(), cert);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), proto);
    if let Some(host) = &host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
    headers.append(header::VIA, via(version));
    match host {
        // The client's own `Host` (one at most: the server refuses more) is already there.
        Some(_) if preserve_host && in_place => {}
        Some(host) if preserve_host => {
            headers.insert(header::HOST, host);
        }
        _ => {
            headers.remove(header::HOST);
        }
    }
}

/// Applies the response half of proxy semantics.
pub fn prepare_response<B>(res: &mut Response<B>) {
    let version = res.version();
    strip_hop_by_hop(res.headers_mut());
    res.headers_mut().append(header::VIA, via(version));
}

/// Applies proxy header semantics around an inner service. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ProxyHeaders<S> {
    inner: S,
    /// The settings: those of the layer that built it.
    layer: ProxyHeadersLayer,
}

impl<S> ProxyHeaders<S> {
    /// Wraps `inner`, keeping the client's `Host`.
    pub fn new(inner: S) -> Self {
        ProxyHeadersLayer::new().layer(inner)
    }

    /// Whether the client's `Host` is forwarded (default) or replaced by the backend's.
    pub fn preserve_host(self, preserve: bool) -> Self {
        self.with(|layer| layer.preserve_host(preserve))
    }

    /// The upgraded connections (WebSocket tunnels) this service opened, and its clones.
    pub fn tunnels(&self) -> &Tunnels {
        &self.layer.tunnels
    }

    /// How long an upgraded connection (WebSocket) may carry no byte either way before it
    /// is closed; `None`: until a side closes it. Default one hour.
    pub fn upgrade_idle_timeout(self, idle: Option<Duration>) -> Self {
        self.with(|layer| layer.upgrade_idle_timeout(idle))
    }

    /// The protocols a client's upgrade may switch to (`websocket` by default), compared
    /// without ASCII case on the name before any `/version`. An upgrade to any other is
    /// removed, and the request goes on as a plain one. `h2c` is never forwarded, nor its
    /// `HTTP2-Settings`, even when listed.
    pub fn upgrade_protocols<I>(self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.with(|layer| layer.upgrade_protocols(protocols))
    }

    /// Changes the settings with one of the layer's builder methods.
    fn with(mut self, set: impl FnOnce(ProxyHeadersLayer) -> ProxyHeadersLayer) -> Self {
        self.layer = set(self.layer);
        self
    }

    /// A layer with the default settings.
    pub fn layer() -> ProxyHeadersLayer {
        ProxyHeadersLayer::new()
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ProxyHeaders<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let layer = &self.layer;
        let upgrade = Upgrade::take(
            &mut req,
            &layer.upgrade_protocols,
            layer.upgrade_idle_timeout,
            &layer.tunnels,
        );
        prepare_request(&mut req, layer.preserve_host);
        if let Some(upgrade) = &upgrade {
            upgrade.restore_request(&mut req);
        }
        ResponseFuture {
            inner: self.inner.call(req),
            upgrade,
        }
    }
}

/// Builds [`ProxyHeaders`].
#[derive(Debug, Clone)]
pub struct ProxyHeadersLayer {
    preserve_host: bool,
    upgrade_idle_timeout: Option<Duration>,
    upgrade_protocols: Arc<[Box<str>]>,
    tunnels: Tunnels,
}

impl ProxyHeadersLayer {
    /// A layer that keeps the client's `Host`.
    pub fn new() -> Self {
        Self {
            preserve_host: true,
            upgrade_idle_timeout: Some(DEFAULT_UPGRADE_IDLE_TIMEOUT),
            upgrade_protocols: default_upgrade_protocols(),
            tunnels: Tunnels::default(),
        }
    }

    /// Whether the client's `Host` is forwarded (default) or replaced by the backend's.
    pub fn preserve_host(mut self, preserve: bool) -> Self {
        self.preserve_host = preserve;
        self
    }

    /// The upgraded connections opened by every service this layer builds.
    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// See [`ProxyHeaders::upgrade_idle_timeout`].
    pub fn upgrade_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.upgrade_idle_timeout = idle;
        self
    }

    /// See [`ProxyHeaders::upgrade_protocols`].
    pub fn upgrade_protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.upgrade_protocols = protocol_list(protocols);
        self
    }
}

fn protocol_list<I>(protocols: I) -> Arc<[Box<str>]>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    protocols
        .into_iter()
        .map(|p| p.as_ref().trim().into())
        .collect()
}

impl Default for ProxyHeadersLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ProxyHeadersLayer {
    type Service = ProxyHeaders<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ProxyHeaders {
            inner,
            layer: self.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`ProxyHeaders`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        upgrade: Option<Upgrade>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let upgrade = this.upgrade.take();
        let switched = if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            let joined = upgrade.and_then(|u| u.answer(&mut res));
            if joined.is_none() {
                upgrade::refuse_switch(&mut res);
            }
            joined
        } else {
            None
        };
        prepare_response(&mut res);
        if let Some(protocol) = switched {
            upgrade::restore_response(&mut res, protocol);
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("/path?q=1");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut req = b.body(()).unwrap();
        req.extensions_mut()
            .insert(ClientAddr::new("10.0.0.7:5555".parse().unwrap()));
        req
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut req = request(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-end-to-end", "kept"),
        ]);
        prepare_request(&mut req, true);
        let h = req.headers();
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(h["x-end-to-end"], "kept");
    }

    /// The client's own address and verified certificate are set after the hop-by-hop
    /// headers are gone: naming them in `Connection` does not remove them.
    #[test]
    fn the_client_cannot_strip_what_the_server_says_about_it() {
        let mut req = request(&[
            ("connection", "x-forwarded-for, x-forwarded-client-cert"),
            ("x-forwarded-for", "192.0.2.1"),
            ("x-forwarded-client-cert", "Hash=forged"),
        ]);
        let client = ClientAddr::new("10.0.0.7:5555".parse().unwrap())
            .with_forwarded_cert(HeaderValue::from_static("Hash=00ff"));
        req.extensions_mut().insert(client);
        prepare_request(&mut req, true);
        let h = req.headers();
        assert_eq!(h["x-forwarded-for"], "10.0.0.7");
        assert_eq!(h["x-forwarded-client-cert"], "Hash=00ff");
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut req = request(&[("te", "trailers")]);
        prepare_request(&mut req, true);
        assert_eq!(req.headers()["te"], "trailers");
    }

    #[test]
    fn forwarding_headers_are_added() {
        let mut req = request(&[("host", "example.com"), ("x-forwarded-for", "192.0.2.1")]);
        prepare_request(&mut req, true);
        let h = req.headers();
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["via"], "1.1 switchyard");
        assert_eq!(h["host"], "example.com");
    }

    #[test]
    fn host_can_be_left_to_the_backend() {
        let mut req = request(&[("host", "example.com")]);
        prepare_request(&mut req, false);
        assert!(!req.headers().contains_key("host"));
        assert_eq!(req.headers()["x-forwarded-host"], "example.com");
    }

    /// An HTTP/2 request for `uri` (with a `Host` header when given), prepared.
    fn prepared_h2(uri: &str, host: Option<&str>) -> Request<()> {
        let mut req = Request::get(uri).version(Version::HTTP_2);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let mut req = req.body(()).unwrap();
        prepare_request(&mut req, true);
        req
    }

    #[test]
    fn http2_authority_becomes_host() {
        let req = prepared_h2("http://example.org:8443/x", None);
        assert_eq!(req.headers()["host"], "example.org:8443");
        assert_eq!(req.headers()["via"], "2 switchyard");
    }

    #[test]
    fn http2_authority_wins_over_a_host_header() {
        let req = prepared_h2("http://a.example/x", Some("other.example"));
        assert_eq!(req.headers()["host"], "a.example");
        assert_eq!(req.headers()["x-forwarded-host"], "a.example");
    }

    #[test]
    fn http2_settings_is_never_forwarded() {
        let mut req = request(&[("http2-settings", "AAMAAABkAAQAoAAAAAIAAAAA")]);
        prepare_request(&mut req, true);
        assert!(!req.headers().contains_key("http2-settings"));
    }

    #[test]
    fn response_hop_by_hop_removed_and_via_added() {
        let mut res = Response::builder()
            .header("connection", "close")
            .header("keep-alive", "timeout=5")
            .header("content-type", "text/plain")
            .body(())
            .unwrap();
        prepare_response(&mut res);
        assert!(!res.headers().contains_key("connection"));
        assert!(!res.headers().contains_key("keep-alive"));
        assert_eq!(res.headers()["content-type"], "text/plain");
        assert_eq!(res.headers()["via"], "1.1 switchyard");
    }
}
