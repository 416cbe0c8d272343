//! RFC 9111's decisions: what may be stored (§3), when a stored response may be used
//! (§4.2, §4.2.4), and answering from one (§4.3.2).

use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use tokio::time::Instant;

use crate::body::CacheBody;
use crate::directives::{RequestDirectives, ResponseDirectives};
use crate::entry::{heuristically_cacheable, Head};
use crate::key::Vary;
use crate::range;
use crate::status::CacheStatus;
use crate::{CacheConfig, Entry};

/// `Cache-Status` detail of a stale response served while it is refreshed.
pub(crate) const STALE_WHILE_REVALIDATE: &str = "stale-while-revalidate";
/// `Cache-Status` detail of a stale response served within the request's `max-stale`.
pub(crate) const MAX_STALE: &str = "max-stale";
/// `Cache-Status` detail of a stale response served because the upstream failed.
pub(crate) const STALE_IF_ERROR: &str = "stale-if-error";

/// What to do with the stored response selected for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Serve it: it is fresh enough for the request.
    Fresh,
    /// Serve it although it is stale; the detail says why.
    Stale(&'static str),
    /// Go upstream (conditionally, if it has a validator); the stored response was
    /// stale (`true`) or the request's directives ruled it out (`false`).
    Validate { stale: bool },
}

/// Decides whether `entry`, `age` old, satisfies a request with `req` directives.
pub(crate) fn decide(
    entry: &Entry,
    age: Duration,
    req: &RequestDirectives,
    config: &CacheConfig,
) -> Use {
    let lifetime = entry.freshness_lifetime();
    let fresh = lifetime > age;
    let dirs = entry.directives();
    if dirs.no_cache {
        return Use::Validate { stale: true };
    }
    if req.no_cache || req.max_age.is_some_and(|max| age > max) {
        return Use::Validate { stale: !fresh };
    }
    if fresh {
        return match req.min_fresh {
            Some(min) if lifetime - age < min => Use::Validate { stale: false },
            _ => Use::Fresh,
        };
    }
    if !dirs.may_serve_stale() {
        return Use::Validate { stale: true };
    }
    let staleness = age - lifetime;
    if req.max_stale.is_some_and(|max| staleness <= max) {
        return Use::Stale(MAX_STALE);
    }
    let window = dirs
        .stale_while_revalidate
        .unwrap_or(config.stale_while_revalidate);
    if !window.is_zero() && staleness <= window {
        return Use::Stale(STALE_WHILE_REVALIDATE);
    }
    Use::Validate { stale: true }
}

/// Whether `entry`, `age` old, may stand in for a failed upstream response (RFC 5861
/// §4, with the configured default window).
pub(crate) fn stale_if_error(entry: &Entry, age: Duration, config: &CacheConfig) -> bool {
    let dirs = entry.directives();
    let lifetime = entry.freshness_lifetime();
    let window = dirs.stale_if_error.unwrap_or(config.stale_if_error);
    dirs.may_serve_stale() && age >= lifetime && !window.is_zero() && age - lifetime <= window
}

/// The upstream statuses that count as failures for `stale-if-error`.
pub(crate) fn is_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Statuses this cache stores (RFC 9111 §3): every final status but 206 (partial
/// content, judged as the 200 it is part of: see `upstream`), 304 (it updates a stored
/// response) and 416 (it is about the request's range, not the resource: stored, it
/// would answer every request for the URL). Those that are not heuristically cacheable
/// (302, 307, 400, 500, …) only with explicit freshness or `public` (see
/// `worth_storing`).
fn understood(status: StatusCode) -> bool {
    !(status.is_informational() || matches!(status.as_u16(), 206 | 304 | 416))
}

/// The fields the response varies on, if a response to a request with `req_headers` and
/// `req` directives may be stored (RFC 9111 §3, §3.5), before its freshness is known.
pub(crate) fn storable(
    req_headers: &HeaderMap,
    req: &RequestDirectives,
    status: StatusCode,
    headers: &HeaderMap,
    config: &CacheConfig,
) -> Option<Vec<HeaderName>> {
    if req.no_store || !understood(status) {
        return None;
    }
    let dirs = ResponseDirectives::parse(headers, &config.targeted_fields);
    if dirs.no_store || dirs.private {
        return None;
    }
    // A response to an authenticated request only when it says shared caches may keep it.
    if req_headers.contains_key(header::AUTHORIZATION)
        && !(dirs.public || dirs.s_maxage.is_some() || dirs.must_revalidate)
    {
        return None;
    }
    // A cookie-setting response only when explicitly public; the cookie itself is never
    // stored (see `Head::new`).
    if headers.contains_key(header::SET_COOKIE) && !dirs.public {
        return None;
    }
    let too_large = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > config.max_object_size);
    if too_large {
        return None;
    }
    match Vary::of(headers) {
        Vary::Any => None,
        Vary::Fields(fields) => Some(fields),
    }
}

/// Whether a response with `head`, once its freshness is known, is worth storing: it has
/// freshness (explicit, or the heuristic where allowed and configured), and it can be
/// used fresh, revalidated, or served stale.
pub(crate) fn worth_storing(head: &Head, config: &CacheConfig) -> bool {
    let dirs = &head.directives;
    let heuristic = !config.ttl.is_zero() && (heuristically_cacheable(head.status) || dirs.public);
    if !(head.explicit || heuristic) {
        return false;
    }
    let stale_windows = dirs.may_serve_stale()
        && [
            dirs.stale_while_revalidate
                .unwrap_or(config.stale_while_revalidate),
            dirs.stale_if_error.unwrap_or(config.stale_if_error),
        ]
        .iter()
        .any(|w| !w.is_zero());
    (!head.lifetime.is_zero() && !dirs.no_cache) || head.has_validator() || stale_windows
}

/// The response to a request (`method`, `req_headers`) answered from `entry`: the stored
/// response, or `304 Not Modified` when the request's own validators match it (RFC 9110
/// §13.2.2), or for a GET with `Range` of a stored `200` the part it asks for (see
/// [`range`]); with `Age` and `Cache-Status`.
pub(crate) fn serve<B>(
    entry: &Entry,
    now: Instant,
    method: &Method,
    req_headers: &HeaderMap,
    status: CacheStatus,
) -> Response<CacheBody<B>> {
    let age = entry.age(now);
    let (response, body) = if not_modified(entry.headers(), req_headers) {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        copy_304_fields(entry.headers(), res.headers_mut());
        (res, CacheBody::empty())
    } else {
        let mut res = Response::new(());
        *res.status_mut() = entry.status();
        *res.headers_mut() = entry.headers().clone();
        let body = if method == Method::HEAD {
            CacheBody::empty()
        } else if method == Method::GET && entry.status() == StatusCode::OK {
            CacheBody::full(range::answer(req_headers, &mut res, entry.body()))
        } else {
            CacheBody::full(entry.body().clone())
        };
        (res, body)
    };
    with_age(entry, age, status, response, body)
}

/// The answer to a GET with `req_headers` from `entry`, a stored partial response, if it
/// can give one: the entry is fresh for the request's `directives`, and holds the
/// range(s) asked for (a `206`), or knows none is satisfiable (a `416`).
pub(crate) fn serve_part<B>(
    entry: &Entry,
    now: Instant,
    req_headers: &HeaderMap,
    directives: &RequestDirectives,
    config: &CacheConfig,
    status: CacheStatus,
) -> Option<Response<CacheBody<B>>> {
    if decide(entry, entry.age(now), directives, config) != Use::Fresh {
        return None;
    }
    answer_part(entry, now, req_headers, status)
}

/// The answer to a GET with `req_headers` from `entry`, a stored partial response, fresh
/// or not: a `206` of the range(s) asked for, or a `416`; `None` when the parts do not
/// hold what is asked.
pub(crate) fn answer_part<B>(
    entry: &Entry,
    now: Instant,
    req_headers: &HeaderMap,
    status: CacheStatus,
) -> Option<Response<CacheBody<B>>> {
    let parts = entry.parts()?;
    let mut res = Response::new(());
    *res.headers_mut() = entry.headers().clone();
    let body = range::answer_parts(req_headers, &mut res, parts)?;
    Some(with_age(
        entry,
        entry.age(now),
        status,
        res,
        CacheBody::full(body),
    ))
}

/// `response` with `body`, and the `Age` and `Cache-Status` of `entry` at `age`.
fn with_age<B>(
    entry: &Entry,
    age: Duration,
    status: CacheStatus,
    mut response: Response<()>,
    body: CacheBody<B>,
) -> Response<CacheBody<B>> {
    let headers = response.headers_mut();
    headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    status
        .ttl(entry.freshness_lifetime(), age)
        .append_to(headers);
    let (parts, ()) = response.into_parts();
    Response::from_parts(parts, body)
}

/// RFC 9110 §15.4.5: the fields a 304 carries.
fn copy_304_fields(from: &HeaderMap, to: &mut HeaderMap) {
    let mut names = vec![
        header::CACHE_CONTROL,
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::EXPIRES,
        header::VARY,
    ];
    if !from.contains_key(header::ETAG) {
        names.push(header::LAST_MODIFIED);
    }
    for name in names {
        for value in from.get_all(&name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Whether the request's `If-None-Match` (or, without it, `If-Modified-Since`) says the
/// client already has this response.
fn not_modified(stored: &HeaderMap, req_headers: &HeaderMap) -> bool {
    let mut inm = req_headers.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        return inm
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .any(|tag| tag == "*" || weak_eq(tag, etag));
    }
    let since = req_headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// RFC 9110 §8.8.3.2's weak comparison.
fn weak_eq(a: &str, b: &str) -> bool {
    fn opaque(tag: &str) -> &str {
        let tag = tag.trim();
        tag.strip_prefix("W/").unwrap_or(tag)
    }
    opaque(a) == opaque(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists_and_weak_tags_match() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, "W/\"v1\"".parse().unwrap());
        let mut req = HeaderMap::new();
        req.insert(header::IF_NONE_MATCH, "\"v0\", \"v1\"".parse().unwrap());
        assert!(not_modified(&stored, &req));
        req.insert(header::IF_NONE_MATCH, "\"v2\"".parse().unwrap());
        assert!(!not_modified(&stored, &req));
        req.insert(header::IF_NONE_MATCH, "*".parse().unwrap());
        assert!(not_modified(&stored, &req));
    }
}
