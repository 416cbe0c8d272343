//! The `Cache-Status` field (RFC 9211) this cache adds to every response.

use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

/// `Cache-Status` (RFC 9211).
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The cache's name in `Cache-Status`.
const NAME: &str = "switchyard";

/// Why a request went upstream (RFC 9211 §2.2's `fwd` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// Nothing stored for the URL.
    UriMiss,
    /// Something stored for the URL, but not for this request's `Vary` fields.
    VaryMiss,
    /// The stored response was stale (or had to be revalidated).
    Stale,
    /// A partial response is stored, without the bytes the request asks for.
    Partial,
    /// The stored response was usable but the request's directives said no.
    Request,
    /// A method the cache does not answer.
    Method,
    /// A request the cache leaves alone (`Upgrade`).
    Bypass,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Partial => "partial",
            Fwd::Request => "request",
            Fwd::Method => "method",
            Fwd::Bypass => "bypass",
        }
    }
}

/// One `Cache-Status` member, as this cache writes it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CacheStatus {
    pub(crate) hit: bool,
    pub(crate) fwd: Option<Fwd>,
    /// The upstream's status, when it differs from the response's.
    pub(crate) fwd_status: Option<u16>,
    /// Remaining freshness in seconds of a response served from the cache (negative when
    /// stale).
    pub(crate) ttl: Option<i64>,
    pub(crate) stored: bool,
    pub(crate) collapsed: bool,
    pub(crate) detail: Option<&'static str>,
}

impl CacheStatus {
    pub(crate) fn hit() -> Self {
        Self {
            hit: true,
            ..Self::default()
        }
    }

    pub(crate) fn fwd(fwd: Fwd) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    pub(crate) fn detail(self, detail: &'static str) -> Self {
        Self {
            detail: Some(detail),
            ..self
        }
    }

    /// Remaining freshness: the lifetime less the age, in whole seconds as `max-age` and
    /// `Age` count them (so `ttl` is what a client computes from the two).
    pub(crate) fn ttl(self, lifetime: Duration, age: Duration) -> Self {
        Self {
            ttl: Some(lifetime.as_secs() as i64 - age.as_secs() as i64),
            ..self
        }
    }

    /// Appends this member to the response's `Cache-Status` (after those of caches
    /// nearer the origin, RFC 9211 §2).
    pub(crate) fn append_to(&self, headers: &mut HeaderMap) {
        let mut s = String::with_capacity(48);
        s.push_str(NAME);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd.as_str());
        }
        if let Some(status) = self.fwd_status {
            let _ = write!(s, "; fwd-status={status}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(s)) {
            headers.append(CACHE_STATUS, value);
        }
    }
}
