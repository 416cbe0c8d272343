//! Range requests answered from a stored response (RFC 9110 §14, §13.1.5).
//!
//! A stored complete `200` answers a GET with `Range: bytes=…` as a `206 Partial
//! Content` of one range (`a-b`, `a-`, `-n`), a slice of the stored body (no copy), or as
//! `416 Range Not Satisfiable` when no range is satisfiable. A `Range` that does not
//! parse, asks for several satisfiable ranges (no `multipart/byteranges`: RFC 9110
//! §14.2 lets a server ignore `Range`), or comes with an `If-Range` that does not match
//! is ignored: the full `200` is served.
//!
//! A `206` from the origin is stored only when it holds the whole representation
//! ([`whole_length`]), as the `200` it amounts to.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

/// More ranges than this in one request and the field is ignored (the full response is
/// cheaper than evaluating them).
const MAX_RANGES: usize = 64;

/// What a GET's `Range` selects of a stored representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selected {
    /// The whole representation (no `Range`, or one to ignore).
    Full,
    /// One range of its bytes.
    Partial(Range<usize>),
    /// No range is satisfiable.
    Unsatisfiable,
}

/// One `range-spec` of a `bytes` range (RFC 9110 §14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `first-` or `first-last`.
    From { first: u64, last: Option<u64> },
    /// `-length`: the last `length` bytes.
    Suffix(u64),
}

impl Spec {
    /// The bytes it selects of a representation of `len` bytes, if it is satisfiable.
    fn resolve(self, len: u64) -> Option<Range<u64>> {
        match self {
            Spec::From { first, .. } if first >= len => None,
            Spec::From { first, last } => {
                let end = last.map_or(len, |last| last.saturating_add(1).min(len));
                Some(first..end)
            }
            Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(len.saturating_sub(n)..len),
        }
    }
}

/// What the request's `Range` (evaluated with its `If-Range`) selects of a stored
/// representation with `stored` fields and `len` bytes.
pub(crate) fn select(req: &HeaderMap, stored: &HeaderMap, len: usize) -> Selected {
    let mut lines = req.get_all(header::RANGE).iter();
    let (Some(range), None) = (lines.next(), lines.next()) else {
        return Selected::Full;
    };
    let Some(specs) = parse(range) else {
        return Selected::Full;
    };
    if !if_range_holds(req.get(header::IF_RANGE), stored) {
        return Selected::Full;
    }
    if len == 0 {
        // Nothing to take a part of: RFC 9110 §14.2 lets the whole (empty) one be sent.
        return Selected::Full;
    }
    let len = len as u64;
    let mut satisfiable = specs.iter().filter_map(|spec| spec.resolve(len));
    match (satisfiable.next(), satisfiable.next()) {
        (None, _) => Selected::Unsatisfiable,
        (Some(r), None) => Selected::Partial(r.start as usize..r.end as usize),
        (Some(_), Some(_)) => Selected::Full,
    }
}

/// The `range-spec`s of a `bytes` `Range` value; `None` when it is not one (another
/// unit, a syntax error, a `first` past `last`, too many ranges).
fn parse(value: &HeaderValue) -> Option<Vec<Spec>> {
    let value = value.to_str().ok()?.trim();
    let (unit, set) = value.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    // A list: empty elements are allowed and ignored (RFC 9110 §5.6.1.2).
    for item in set.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if specs.len() == MAX_RANGES {
            return None;
        }
        let (first, last) = item.split_once('-')?;
        let spec = match (first.is_empty(), last.is_empty()) {
            (true, _) => Spec::Suffix(digits(last)?),
            (false, true) => Spec::From {
                first: digits(first)?,
                last: None,
            },
            (false, false) => {
                let (first, last) = (digits(first)?, digits(last)?);
                if last < first {
                    return None;
                }
                Spec::From {
                    first,
                    last: Some(last),
                }
            }
        };
        specs.push(spec);
    }
    (!specs.is_empty()).then_some(specs)
}

/// `1*DIGIT`, saturating at `u64::MAX` (a position past any representation).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

/// RFC 9110 §13.1.5: without `If-Range`, `Range` applies; with one, only when it matches
/// the stored representation: an entity tag by strong comparison with its `ETag`, an
/// HTTP-date exactly its `Last-Modified`, itself strong (at least a second before its
/// `Date`). Anything else (a weak tag, an invalid value) does not match.
fn if_range_holds(if_range: Option<&HeaderValue>, stored: &HeaderMap) -> bool {
    let Some(if_range) = if_range else {
        return true;
    };
    let Ok(condition) = if_range.to_str().map(str::trim) else {
        return false;
    };
    if condition.starts_with('"') || condition.starts_with("W/") {
        let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
        return condition.starts_with('"') && etag.is_some_and(|etag| etag.trim() == condition);
    }
    let date = |name| {
        let value = stored.get(name)?.to_str().ok()?;
        httpdate::parse_http_date(value).ok()
    };
    let Ok(since) = httpdate::parse_http_date(condition) else {
        return false;
    };
    let strong = |modified: SystemTime| {
        date(header::DATE).is_some_and(|d| d >= modified + Duration::from_secs(1))
    };
    date(header::LAST_MODIFIED).is_some_and(|modified| modified == since && strong(modified))
}

/// Turns `res`, a stored `200` whose body is `body`, into the answer to a GET with `req`
/// fields: unchanged, a `206` with the selected slice of `body`, or a `416`; returns the
/// body to send.
pub(crate) fn answer(req: &HeaderMap, res: &mut Response<()>, body: &Bytes) -> Bytes {
    let len = body.len();
    match select(req, res.headers(), len) {
        Selected::Full => body.clone(),
        Selected::Partial(range) => {
            let content_range = format!("bytes {}-{}/{len}", range.start, range.end - 1);
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = res.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len()));
            insert_content_range(headers, &content_range);
            body.slice(range)
        }
        Selected::Unsatisfiable => {
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            // The stored representation's own fields describe a body not sent.
            let headers = res.headers_mut();
            let date = headers.remove(header::DATE);
            headers.clear();
            if let Some(date) = date {
                headers.insert(header::DATE, date);
            }
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            insert_content_range(headers, &format!("bytes */{len}"));
            Bytes::new()
        }
    }
}

/// The length of the representation a `206` holds whole (RFC 9111 §3.4): its
/// `Content-Range` is `bytes 0-(n-1)/n`. `None` for a part of one, or another unit.
pub(crate) fn whole_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let rest = value.to_str().ok()?.strip_prefix("bytes ")?;
    let (range, complete) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, complete) = (digits(first)?, digits(last)?, digits(complete)?);
    (first == 0 && last.checked_add(1) == Some(complete)).then_some(complete)
}

fn insert_content_range(headers: &mut HeaderMap, value: &str) {
    let value = HeaderValue::from_str(value).expect("digits, a dash, a slash and a star");
    headers.insert(header::CONTENT_RANGE, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selected(range: &str, len: usize) -> Selected {
        let mut req = HeaderMap::new();
        req.insert(header::RANGE, range.parse().unwrap());
        select(&req, &HeaderMap::new(), len)
    }

    #[test]
    fn single_ranges_suffixes_and_open_ends() {
        assert_eq!(selected("bytes=0-4", 10), Selected::Partial(0..5));
        assert_eq!(selected("bytes=5-", 10), Selected::Partial(5..10));
        assert_eq!(selected("bytes=-3", 10), Selected::Partial(7..10));
        assert_eq!(selected("bytes=-30", 10), Selected::Partial(0..10));
        assert_eq!(selected("bytes=8-30", 10), Selected::Partial(8..10));
        assert_eq!(selected("BYTES=1-1", 10), Selected::Partial(1..2));
        assert_eq!(selected("bytes=, 2-3,", 10), Selected::Partial(2..4));
        let huge = "bytes=0-99999999999999999999999";
        assert_eq!(selected(huge, 10), Selected::Partial(0..10));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(selected("bytes=10-", 10), Selected::Unsatisfiable);
        assert_eq!(selected("bytes=-0", 10), Selected::Unsatisfiable);
        assert_eq!(selected("bytes=20-30, 40-", 10), Selected::Unsatisfiable);
    }

    #[test]
    fn invalid_or_multiple_ranges_are_ignored() {
        for range in [
            "bytes=5-4",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=-",
            "bytes=",
            "bytes 0-1",
            "items=0-1",
            "bytes=+1-2",
            "bytes=0-1,x",
        ] {
            assert_eq!(selected(range, 10), Selected::Full, "{range}");
        }
        assert_eq!(selected("bytes=0-1, 4-5", 10), Selected::Full);
        assert_eq!(selected("bytes=0-1, 40-50", 10), Selected::Partial(0..2));
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(selected(&many, 10), Selected::Full);
        assert_eq!(selected("bytes=0-1", 0), Selected::Full);
    }

    #[test]
    fn a_206_holds_the_whole_representation_when_it_ranges_over_all_of_it() {
        let whole = |content_range: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_RANGE, content_range.parse().unwrap());
            whole_length(&headers)
        };
        assert_eq!(whole("bytes 0-9/10"), Some(10));
        for part in [
            "bytes 0-8/10",
            "bytes 1-9/10",
            "bytes 0-9/*",
            "bytes */10",
            "items 0-9/10",
            "bytes 0-9/11",
        ] {
            assert_eq!(whole(part), None, "{part}");
        }
        assert_eq!(whole_length(&HeaderMap::new()), None);
    }

    #[test]
    fn if_range_compares_strongly() {
        let mut stored = HeaderMap::new();
        stored.insert(header::ETAG, "\"v1\"".parse().unwrap());
        stored.insert(
            header::DATE,
            "Sun, 06 Nov 1994 08:49:40 GMT".parse().unwrap(),
        );
        let modified = "Sun, 06 Nov 1994 08:00:00 GMT";
        stored.insert(header::LAST_MODIFIED, modified.parse().unwrap());
        let check = |stored: &HeaderMap, v: &str| if_range_holds(Some(&v.parse().unwrap()), stored);
        let holds = |v: &str| check(&stored, v);
        assert!(holds("\"v1\""));
        assert!(!holds("\"v2\""));
        assert!(!holds("W/\"v1\""));
        assert!(holds(modified));
        assert!(!holds("Sun, 06 Nov 1994 08:00:01 GMT"));
        assert!(!holds("yesterday"));
        stored.insert(header::ETAG, "W/\"v1\"".parse().unwrap());
        assert!(!check(&stored, "W/\"v1\""));
        // A Last-Modified as late as the Date is weak.
        stored.insert(header::DATE, modified.parse().unwrap());
        assert!(!check(&stored, modified));
    }
}
