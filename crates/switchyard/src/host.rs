//! A request's host, checked before anything keys on it or forwards it.
//!
//! The `Host` header and the request target's authority name the origin a request is for;
//! the cache keys on them and the backend routes on them. A value that different parsers
//! read differently (`a, b`, `user@host`, `host/path`, two `Host` headers, an
//! absolute-form target naming another host than `Host`) is how requests get smuggled
//! past one hop's idea of the origin to another's, so [`StrictHost`] answers such a
//! request with `400 Bad Request` without calling the inner service.
//!
//! [`check`] is the rule, as a pure function:
//! - exactly one `Host` header, a valid `host[:port]` (RFC 9112 §3.2, RFC 9110 §7.2):
//!   a reg-name (letters, digits, `-._~`, `%XX`, and RFC 3986 sub-delims but the comma,
//!   which lists would split on), an IPv4 address, or an `[IPv6]` literal, then an
//!   optional port of one to five digits no greater than 65535. No userinfo, path, query,
//!   whitespace, control character, empty host or empty port;
//! - a request target with an authority (absolute form, or HTTP/2's `:authority`) must
//!   hold a valid one too, and a `Host` beside it must name the same authority (ASCII case
//!   aside): RFC 9113 §8.3.1 calls an HTTP/2 request whose `host` differs from its
//!   `:authority` malformed;
//! - an HTTP/1.1 request must name its host one way or the other; HTTP/1.0 need not.
//!
//! A valid host costs one pass over its bytes and no allocation.

use std::fmt;
use std::future::Future;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// Why a request's host was refused by [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidHost {
    /// An HTTP/1.1 request named no host: no `Host` header and no authority in its target.
    Missing,
    /// More than one `Host` header.
    Multiple,
    /// A `Host` header that is not a valid `host[:port]`.
    Malformed,
    /// A request target whose authority is not a valid `host[:port]` (userinfo, …).
    MalformedAuthority,
    /// A `Host` header that names another authority than the request target.
    Mismatch,
}

impl fmt::Display for InvalidHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "the request names no host",
            Self::Multiple => "the request has more than one Host header",
            Self::Malformed => "the Host header is not a valid host[:port]",
            Self::MalformedAuthority => "the request target's authority is not a valid host[:port]",
            Self::Mismatch => "the Host header differs from the request target's authority",
        })
    }
}

impl std::error::Error for InvalidHost {}

/// Checks a request's host (see the [module docs](self)).
pub fn check(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), InvalidHost> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(InvalidHost::Multiple);
    }
    if let Some(host) = host {
        if !is_valid_host(host.as_bytes()) {
            return Err(InvalidHost::Malformed);
        }
    }
    match (uri.authority(), host) {
        (Some(authority), host) => {
            let authority = authority.as_str().as_bytes();
            if !is_valid_host(authority) {
                return Err(InvalidHost::MalformedAuthority);
            }
            match host {
                Some(host) if !host.as_bytes().eq_ignore_ascii_case(authority) => {
                    Err(InvalidHost::Mismatch)
                }
                _ => Ok(()),
            }
        }
        (None, Some(_)) => Ok(()),
        (None, None) if version == Version::HTTP_11 => Err(InvalidHost::Missing),
        (None, None) => Ok(()),
    }
}

/// Whether `value` is a valid `host[:port]`: a reg-name, IPv4 address or `[IPv6]` literal,
/// then an optional port of one to five digits no greater than 65535. See the
/// [module docs](self).
pub fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => {
            let Some(close) = value.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &value[1..close];
            let is_ipv6 =
                std::str::from_utf8(literal).is_ok_and(|text| text.parse::<Ipv6Addr>().is_ok());
            if !is_ipv6 {
                return false;
            }
            match &value[close + 1..] {
                [] => return true,
                [b':', port @ ..] => (&value[..=close], Some(port)),
                _ => return false,
            }
        }
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        },
    };
    let host_ok = host.first() == Some(&b'[') || is_reg_name(host);
    host_ok && port.is_none_or(is_port)
}

/// A non-empty RFC 3986 reg-name without commas (an IPv4 address is one too).
fn is_reg_name(name: &[u8]) -> bool {
    if name.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        match name[i] {
            b'%' => {
                let hex = name.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if REG_NAME[usize::from(b)] => i += 1,
            _ => return false,
        }
    }
    true
}

/// One to five digits, at most 65535.
fn is_port(port: &[u8]) -> bool {
    (1..=5).contains(&port.len())
        && port.iter().all(u8::is_ascii_digit)
        && port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) <= 65535
}

/// The bytes a reg-name holds as they are: RFC 3986's unreserved and sub-delims, but the
/// comma.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

/// Answers a request whose host fails [`check`] with `400 Bad Request`, without calling
/// the inner service; passes the others on untouched. See the [module docs](self).
///
/// The refusal's body is the response body type's `Default` (empty for the usual ones).
#[derive(Debug, Clone)]
pub struct StrictHost<S> {
    inner: S,
}

impl<S> StrictHost<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A layer of it.
    pub fn layer() -> StrictHostLayer {
        StrictHostLayer
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for StrictHost<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let kind = match check(req.version(), req.uri(), req.headers()) {
            Ok(()) => Kind::Inner {
                fut: self.inner.call(req),
            },
            Err(e) => {
                tracing::debug!(reason = %e, "refused a request for its host");
                Kind::Refused {
                    res: Some(bad_request()),
                }
            }
        };
        ResponseFuture { kind }
    }
}

fn bad_request<B: Default>() -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::BAD_REQUEST;
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Builds [`StrictHost`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StrictHostLayer;

impl StrictHostLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for StrictHostLayer {
    type Service = StrictHost<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StrictHost::new(inner)
    }
}

pin_project! {
    /// The response future of [`StrictHost`].
    #[derive(Debug)]
    pub struct ResponseFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, B> {
        Inner { #[pin] fut: F },
        Refused { res: Option<Response<B>> },
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => Poll::Ready(ready!(fut.poll(cx))),
            KindProj::Refused { res } => {
                Poll::Ready(Ok(res.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts() {
        for host in [
            "example.com",
            "a.example",
            "a.example.",
            "EXAMPLE.com",
            "localhost",
            "a-b_c~d.example",
            "xn--bcher-kva.example",
            "a.example:8080",
            "a.example:0",
            "a.example:65535",
            "a.example:00080",
            "127.0.0.1",
            "127.0.0.1:3000",
            "10.0.0.255:1",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::1]:443",
            "[::ffff:192.0.2.1]",
            "[fe80::1:2:3:4]",
            "%41.example",
            "a+b.example",
        ] {
            assert!(is_valid_host(host.as_bytes()), "{host} was refused");
        }
    }

    #[test]
    fn invalid_hosts() {
        for host in [
            "",
            ":80",
            "a, b",
            "a,b",
            "user@host",
            "user:pass@host:80",
            "@host",
            "host/path",
            "host/",
            "host?q",
            "host#frag",
            "a b",
            " a.example",
            "a.example ",
            "a\tb",
            "a\x7fb",
            "a\x01b",
            "a.example:",
            "a.example:65536",
            "a.example:99999",
            "a.example:123456",
            "a.example:8o",
            "a.example:-1",
            "a.example:+80",
            "a.example:80:80",
            "::1",
            "[::1",
            "::1]",
            "[::1]:",
            "[::1]x",
            "[::1]:65536",
            "[::1]]",
            "[not-ipv6]",
            "[v1.fe]",
            "[fe80::1%25eth0]",
            "[]",
            "%4",
            "%zz.example",
            "a\"b",
            "a<b>",
            "a\\b",
            "a{b}",
            "a|b",
            "é.example",
        ] {
            assert!(!is_valid_host(host.as_bytes()), "{host:?} was accepted");
        }
    }

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for host in hosts {
            map.append(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        map
    }

    fn checked(version: Version, uri: &str, hosts: &[&str]) -> Result<(), InvalidHost> {
        check(version, &uri.parse().unwrap(), &headers(hosts))
    }

    #[test]
    fn one_valid_host_header_passes() {
        assert_eq!(checked(Version::HTTP_11, "/", &["a.example"]), Ok(()));
        assert_eq!(checked(Version::HTTP_11, "/", &["[::1]:80"]), Ok(()));
        assert_eq!(checked(Version::HTTP_10, "/", &["a.example:81"]), Ok(()));
    }

    #[test]
    fn several_host_headers_are_refused() {
        let two = checked(Version::HTTP_11, "/", &["a.example", "a.example"]);
        assert_eq!(two, Err(InvalidHost::Multiple));
    }

    #[test]
    fn a_malformed_host_is_refused() {
        for host in ["a, b", "user@a.example", "a.example/x", "a b"] {
            let got = checked(Version::HTTP_11, "/", &[host]);
            assert_eq!(got, Err(InvalidHost::Malformed), "{host}");
        }
    }

    #[test]
    fn a_missing_host_is_refused_on_http11_only() {
        assert_eq!(
            checked(Version::HTTP_11, "/", &[]),
            Err(InvalidHost::Missing)
        );
        assert_eq!(checked(Version::HTTP_10, "/", &[]), Ok(()));
        // The target's authority names the host (absolute form, HTTP/2's `:authority`).
        assert_eq!(checked(Version::HTTP_11, "http://a.example/", &[]), Ok(()));
        assert_eq!(checked(Version::HTTP_2, "http://a.example/", &[]), Ok(()));
    }

    #[test]
    fn the_target_authority_must_agree_with_host() {
        let same = checked(
            Version::HTTP_11,
            "http://a.example:8080/x",
            &["a.example:8080"],
        );
        assert_eq!(same, Ok(()));
        let case = checked(Version::HTTP_2, "https://A.example/x", &["a.EXAMPLE"]);
        assert_eq!(case, Ok(()));
        for (uri, host) in [
            ("http://a.example/x", "b.example"),
            ("http://a.example/x", "a.example:80"),
            ("https://a.example:8443/x", "a.example"),
        ] {
            let got = checked(Version::HTTP_2, uri, &[host]);
            assert_eq!(got, Err(InvalidHost::Mismatch), "{uri} {host}");
        }
    }

    #[test]
    fn the_target_authority_must_be_valid() {
        for uri in ["http://user@a.example/", "http://u:p@a.example:80/"] {
            let got = checked(Version::HTTP_2, uri, &[]);
            assert_eq!(got, Err(InvalidHost::MalformedAuthority), "{uri}");
        }
    }

    #[tokio::test]
    async fn refused_requests_never_reach_the_inner_service() {
        use tower::ServiceExt;

        let (mock, mut handle) = tower_test::mock::pair::<Request<()>, Response<String>>();
        let svc = StrictHostLayer::new().layer(mock);
        let req = Request::get("/").header("host", "a, b").body(()).unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);

        let req = Request::get("/")
            .header("host", "a.example")
            .body(())
            .unwrap();
        let call = tokio::spawn(svc.oneshot(req));
        let (seen, send) = handle.next_request().await.unwrap();
        assert_eq!(seen.headers()["host"], "a.example");
        send.send_response(Response::new("ok".to_owned()));
        assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
