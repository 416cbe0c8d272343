//! Entry points for the fuzz targets (`fuzz/` at the repository root) and the test that
//! replays their corpora: the header parsing of this crate (`Cache-Control`, `Pragma`,
//! the targeted fields, `Age`, `Expires`, `Date`, `Last-Modified`, `Vary`, `Range`,
//! `If-Range`, `Content-Range`) run on one response and one request, with the properties
//! that must hold whatever they say asserted. Not part of the crate's API.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName};
use http::StatusCode;
use tokio::time::Instant;

use crate::directives::{RequestDirectives, ResponseDirectives};
use crate::entry::{age_value, Head, Times};
use crate::key::{vary_matches, vary_values, Vary};
use crate::policy::storable;
use crate::range::{self, Selected};
use crate::CacheConfig;

/// What a delta-seconds can be at most (RFC 9111 §1.2.2).
const DELTA_MAX: Duration = Duration::from_secs(1 << 31);

/// Parses everything the cache reads from a response with `status` and `response`'s
/// fields to a request with `request`'s fields, and panics if a property is broken:
/// durations within RFC 9111's bounds, the request its `Vary` values were taken from
/// (one line per field or several) matches them, and the stored head has a `Date`, no
/// hop-by-hop field, no `Age`, no `Set-Cookie` and no targeted field.
pub fn response(status: StatusCode, response: &HeaderMap, request: &HeaderMap) {
    let config = CacheConfig::default();
    let res = ResponseDirectives::parse(response, &config.targeted_fields);
    for d in [
        res.max_age,
        res.s_maxage,
        res.stale_while_revalidate,
        res.stale_if_error,
    ] {
        assert!(d.is_none_or(|d| d <= DELTA_MAX), "{res:?}");
    }
    let req = RequestDirectives::parse(request);
    for d in [req.max_age, req.min_fresh] {
        assert!(d.is_none_or(|d| d <= DELTA_MAX), "{req:?}");
    }
    assert!(
        req.max_stale
            .is_none_or(|d| d <= DELTA_MAX || d == Duration::MAX),
        "{req:?}"
    );
    assert!(age_value(response) <= DELTA_MAX);

    if let Vary::Fields(fields) = Vary::of(response) {
        for (i, name) in fields.iter().enumerate() {
            assert!(!fields[..i].contains(name), "{name} twice in {fields:?}");
        }
        let values = vary_values(&fields, request);
        assert!(vary_matches(&values, request), "{values:?} vs {request:?}");
        let mut one_line = HeaderMap::new();
        for (name, value) in values.iter() {
            if let Some(value) = value {
                one_line.insert(name, value.clone());
            }
        }
        assert!(
            vary_matches(&values, &one_line),
            "{values:?} vs {one_line:?}"
        );
    }
    let _ = storable(request, &req, status, response, &config);

    let now = Instant::now();
    let times = Times {
        request: now,
        response: now,
        // A fixed wall clock: the same input gives the same result on every run.
        wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    let head = Head::new(status, response, Box::new([]), times, &config);
    let stored = &head.headers;
    assert!(stored.contains_key(header::DATE));
    let never: [HeaderName; 5] = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::AGE,
        header::SET_COOKIE,
        header::UPGRADE,
    ];
    for name in never.iter().chain(&config.targeted_fields) {
        assert!(!stored.contains_key(name), "{name} stored: {stored:?}");
    }
    if let Some(lifetime) = res.s_maxage.or(res.max_age) {
        assert_eq!(head.lifetime, lifetime);
        assert!(head.explicit);
    }
    let refreshed = head.refreshed(response, times, &config);
    assert_eq!(refreshed.status, status);
    assert!(refreshed.headers.contains_key(header::DATE));

    // The request's `Range` (with its `If-Range`) against the stored response: a part is
    // a non-empty range within the body.
    for len in [0, 1, 10, 1 << 20] {
        match range::select(request, stored, len) {
            Selected::Partial(ranges) => {
                assert!(!ranges.is_empty());
                for (i, r) in ranges.iter().enumerate() {
                    assert!(r.start < r.end && r.end <= len, "{r:?} of {len}");
                    // Coalesced: no two overlap or touch, so no byte is sent twice.
                    for other in &ranges[i + 1..] {
                        assert!(r.end < other.start || other.end < r.start, "{ranges:?}");
                    }
                }
            }
            Selected::Unsatisfiable => assert!(len > 0),
            Selected::Full => {}
        }
    }
    if let Some(len) = range::whole_length(response) {
        assert!(len > 0);
    }
    if let Some(part) = range::part_of(response) {
        assert!(part.start < part.end && part.end <= part.len);
    }
    let _ = head.into_entry(bytes::Bytes::new());
}
