//! Range requests answered from a stored response (RFC 9110 §14, §13.1.5).
//!
//! A stored complete `200` answers a GET with `Range: bytes=…` as a `206 Partial
//! Content` of one range (`a-b`, `a-`, `-n`), a slice of the stored body (no copy), as a
//! `206` `multipart/byteranges` of several (overlapping or touching ones coalesced), or
//! as `416 Range Not Satisfiable` when no range is satisfiable. A `Range` that does not
//! parse, asks for more than [`MAX_RANGES`] ranges (the full response is cheaper than
//! that many parts, and sends no byte twice), or comes with an `If-Range` that does not
//! match is ignored: the full `200` is served.
//!
//! A stored partial response ([`Parts`]) answers the ranges it holds the same way.
//!
//! A `206` from the origin is stored as the `200` it amounts to when it holds the whole
//! representation ([`whole_length`]), else as a part ([`part_of`]) when it has a strong
//! validator ([`strong_validator`]) to combine parts by.

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::parts::Parts;

/// More ranges than this in one request and the field is ignored: the full response is
/// served rather than that many parts.
const MAX_RANGES: usize = 16;

/// What a GET's `Range` selects of a stored representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Selected {
    /// The whole representation (no `Range`, or one to ignore).
    Full,
    /// Ranges of its bytes, in the order they were asked for, none overlapping or
    /// touching another (those that did are coalesced into one).
    Partial(Vec<Range<usize>>),
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
    let satisfiable: Vec<Range<usize>> = specs
        .iter()
        .filter_map(|spec| spec.resolve(len as u64))
        .map(|r| r.start as usize..r.end as usize)
        .collect();
    if satisfiable.is_empty() {
        return Selected::Unsatisfiable;
    }
    Selected::Partial(coalesce(satisfiable))
}

/// RFC 9110 §14.6: ranges that overlap or touch are sent as one (in the place of the
/// first of them); the others stay in the order they were asked for. So no byte is sent
/// twice, whatever the request repeats.
fn coalesce(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    'merge: loop {
        for i in 0..ranges.len() {
            for j in i + 1..ranges.len() {
                let (a, b) = (&ranges[i], &ranges[j]);
                if a.start <= b.end && b.start <= a.end {
                    ranges[i] = a.start.min(b.start)..a.end.max(b.end);
                    ranges.remove(j);
                    continue 'merge;
                }
            }
        }
        return ranges;
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
    let Ok(since) = httpdate::parse_http_date(condition) else {
        return false;
    };
    strong_last_modified(stored) == Some(since)
}

/// The `Last-Modified` of a response with `headers` when it is a strong validator (RFC
/// 9110 §8.8.2.2): at least a second before its `Date`.
fn strong_last_modified(headers: &HeaderMap) -> Option<SystemTime> {
    let date = |name| {
        let value = headers.get(name)?.to_str().ok()?;
        httpdate::parse_http_date(value).ok()
    };
    let modified = date(header::LAST_MODIFIED)?;
    let date = date(header::DATE)?;
    (date >= modified + Duration::from_secs(1)).then_some(modified)
}

/// A response's strong validator (RFC 9110 §8.8), which tells whether two partial
/// responses are of one representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Validator {
    /// A strong entity tag.
    ETag(HeaderValue),
    /// A strong `Last-Modified`, for a response without an entity tag.
    LastModified(SystemTime),
}

/// The strong validator of a response with `headers`: its `ETag` unless weak, else its
/// `Last-Modified` if strong.
pub(crate) fn strong_validator(headers: &HeaderMap) -> Option<Validator> {
    match headers.get(header::ETAG) {
        Some(etag) if etag.as_bytes().starts_with(b"\"") => Some(Validator::ETag(etag.clone())),
        _ => strong_last_modified(headers).map(Validator::LastModified),
    }
}

/// Turns `res`, a stored `200` whose body is `body`, into the answer to a GET with `req`
/// fields: unchanged, a `206` with the selected parts of `body`, or a `416`; returns the
/// body to send.
pub(crate) fn answer(req: &HeaderMap, res: &mut Response<()>, body: &Bytes) -> Bytes {
    let whole = |r: Range<usize>| Some(body.slice(r));
    answer_from(req, res, body.len(), whole).unwrap_or_else(|| body.clone())
}

/// Turns `res`, a stored partial response holding `parts`, into the answer to a GET with
/// `req` fields: a `206` or a `416`, and the body to send; `None` when the request asks
/// for bytes the parts do not hold (the whole representation, or a range of it).
pub(crate) fn answer_parts(
    req: &HeaderMap,
    res: &mut Response<()>,
    parts: &Parts,
) -> Option<Bytes> {
    answer_from(req, res, parts.len(), |r| parts.slice(r))
}

/// The answer to `req` from a representation of `len` bytes cut with `slice`; `None`
/// (and `res` left as it was) when the full representation is to be sent, or `slice`
/// lacks a selected range.
fn answer_from(
    req: &HeaderMap,
    res: &mut Response<()>,
    len: usize,
    slice: impl Fn(Range<usize>) -> Option<Bytes>,
) -> Option<Bytes> {
    match select(req, res.headers(), len) {
        Selected::Full => None,
        Selected::Partial(ranges) => {
            let cut: Vec<(Range<usize>, Bytes)> = ranges
                .into_iter()
                .map(|r| Some((r.clone(), slice(r)?)))
                .collect::<Option<_>>()?;
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = res.headers_mut();
            let body = match &cut[..] {
                [(range, part)] => {
                    insert_content_range(headers, &content_range(range, len));
                    part.clone()
                }
                _ => multipart(headers, &cut, len),
            };
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            Some(body)
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
            Some(Bytes::new())
        }
    }
}

/// A `multipart/byteranges` body of `parts` (RFC 9110 §14.6), each with the
/// representation's `Content-Type` (which the response's own fields trade for the
/// multipart one and its boundary) and its `Content-Range`.
fn multipart(headers: &mut HeaderMap, parts: &[(Range<usize>, Bytes)], len: usize) -> Bytes {
    let content_type = headers.remove(header::CONTENT_TYPE);
    headers.remove(header::CONTENT_RANGE);
    // 64 random bits: a boundary no body holds but by a 2^-64 chance.
    let boundary = format!("{:016x}", RandomState::new().hash_one(len));
    let per_part = 80 + content_type.as_ref().map_or(0, HeaderValue::len);
    let size: usize = parts.iter().map(|(_, p)| p.len() + per_part).sum();
    let mut out = BytesMut::with_capacity(size + 32);
    for (range, part) in parts {
        out.put_slice(b"--");
        out.put_slice(boundary.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(content_type) = &content_type {
            out.put_slice(b"Content-Type: ");
            out.put_slice(content_type.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"Content-Range: ");
        out.put_slice(content_range(range, len).as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(part);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
    let value = format!("multipart/byteranges; boundary={boundary}");
    let value = HeaderValue::from_str(&value).expect("a token and hex digits");
    headers.insert(header::CONTENT_TYPE, value);
    out.freeze()
}

fn content_range(range: &Range<usize>, len: usize) -> String {
    format!("bytes {}-{}/{len}", range.start, range.end - 1)
}

/// One range of a representation, as a `206`'s `Content-Range` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Part {
    /// The range's bytes.
    pub(crate) start: u64,
    pub(crate) end: u64,
    /// The representation's length.
    pub(crate) len: u64,
}

/// The range of the representation a single-part `206` holds (`bytes a-b/len`, `b`
/// within `len`). `None` for another unit, an unknown length (`*`), or no (or several)
/// `Content-Range` fields, as in a `multipart/byteranges` one.
pub(crate) fn part_of(headers: &HeaderMap) -> Option<Part> {
    // A `multipart/byteranges` one holds its ranges in its body, not as one part.
    const MULTIPART: &[u8] = b"multipart/byteranges";
    let content_type = headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
    let prefix = content_type.and_then(|t| t.get(..MULTIPART.len()));
    if prefix.is_some_and(|p| p.eq_ignore_ascii_case(MULTIPART)) {
        return None;
    }
    let mut values = headers.get_all(header::CONTENT_RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let rest = value.to_str().ok()?.strip_prefix("bytes ")?;
    let (range, len) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let (first, last, len) = (digits(first)?, digits(last)?, digits(len)?);
    (first <= last && last < len).then_some(Part {
        start: first,
        end: last + 1,
        len,
    })
}

/// The length of the representation a `206` holds whole (RFC 9111 §3.4): its
/// `Content-Range` is `bytes 0-(n-1)/n`. `None` for a part of one, or another unit.
pub(crate) fn whole_length(headers: &HeaderMap) -> Option<u64> {
    part_of(headers)
        .filter(|p| p.start == 0 && p.end == p.len)
        .map(|p| p.len)
}

fn insert_content_range(headers: &mut HeaderMap, value: &str) {
    let value = HeaderValue::from_str(value).expect("digits, a dash, a slash and a star");
    headers.insert(header::CONTENT_RANGE, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(range: Range<usize>) -> Selected {
        Selected::Partial(Vec::from([range]))
    }

    fn selected(range: &str, len: usize) -> Selected {
        let mut req = HeaderMap::new();
        req.insert(header::RANGE, range.parse().unwrap());
        select(&req, &HeaderMap::new(), len)
    }

    #[test]
    fn single_ranges_suffixes_and_open_ends() {
        assert_eq!(selected("bytes=0-4", 10), one(0..5));
        assert_eq!(selected("bytes=5-", 10), one(5..10));
        assert_eq!(selected("bytes=-3", 10), one(7..10));
        assert_eq!(selected("bytes=-30", 10), one(0..10));
        assert_eq!(selected("bytes=8-30", 10), one(8..10));
        assert_eq!(selected("BYTES=1-1", 10), one(1..2));
        assert_eq!(selected("bytes=, 2-3,", 10), one(2..4));
        let huge = "bytes=0-99999999999999999999999";
        assert_eq!(selected(huge, 10), one(0..10));
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
        assert_eq!(
            selected("bytes=0-1, 4-5", 10),
            Selected::Partial(vec![0..2, 4..6])
        );
        assert_eq!(selected("bytes=0-1, 40-50", 10), one(0..2));
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        assert_eq!(selected(&many, 10), Selected::Full);
        assert_eq!(selected("bytes=0-1", 0), Selected::Full);
    }

    #[test]
    fn overlapping_and_touching_ranges_are_coalesced_in_request_order() {
        let partial = |range| match selected(range, 100) {
            Selected::Partial(ranges) => ranges,
            other => panic!("{range}: {other:?}"),
        };
        assert_eq!(partial("bytes=50-59, 0-9"), vec![50..60, 0..10]);
        assert_eq!(partial("bytes=0-9, 5-19, 30-39"), vec![0..20, 30..40]);
        assert_eq!(partial("bytes=0-9, 10-19"), vec![0..20]);
        assert_eq!(partial("bytes=0-0, 0-0, 0-0"), vec![0..1]);
        // 40-49 joins 0-9 and 20-29 only once 10-25 has bridged them.
        assert_eq!(
            partial("bytes=40-49, 0-9, 20-29, 10-25"),
            vec![40..50, 0..30]
        );
        assert_eq!(partial("bytes=-10, 90-"), vec![90..100]);
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES].join(","));
        assert_eq!(partial(&many), vec![0..1]);
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
        let part = |content_range: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_RANGE, content_range.parse().unwrap());
            part_of(&headers).map(|p| (p.start, p.end, p.len))
        };
        assert_eq!(part("bytes 2-5/10"), Some((2, 6, 10)));
        assert_eq!(part("bytes 9-9/10"), Some((9, 10, 10)));
        for bad in [
            "bytes 2-10/10",
            "bytes 5-2/10",
            "bytes 2-5/*",
            "bytes */10",
            "2-5/10",
        ] {
            assert_eq!(part(bad), None, "{bad}");
        }
        let mut multipart = HeaderMap::new();
        multipart.insert(header::CONTENT_RANGE, "bytes 2-5/10".parse().unwrap());
        let boundary = "multipart/byteranges; boundary=x";
        multipart.insert(header::CONTENT_TYPE, boundary.parse().unwrap());
        assert_eq!(part_of(&multipart), None);
    }

    #[test]
    fn strong_validators() {
        let validator = |fields: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in fields {
                headers.insert(*name, value.parse().unwrap());
            }
            strong_validator(&headers)
        };
        let etag = |v: &str| Some(Validator::ETag(v.parse().unwrap()));
        assert_eq!(validator(&[("etag", "\"a\"")]), etag("\"a\""));
        assert_eq!(validator(&[("etag", "W/\"a\"")]), None);
        let date = "Sun, 06 Nov 1994 08:49:40 GMT";
        let modified = "Sun, 06 Nov 1994 08:00:00 GMT";
        let since = httpdate::parse_http_date(modified).unwrap();
        let dated = [
            ("etag", "W/\"a\""),
            ("date", date),
            ("last-modified", modified),
        ];
        assert_eq!(validator(&dated), Some(Validator::LastModified(since)));
        assert_eq!(
            validator(&[("date", modified), ("last-modified", modified)]),
            None
        );
        assert_eq!(validator(&[("last-modified", modified)]), None);
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
