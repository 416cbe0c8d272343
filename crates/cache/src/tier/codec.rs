//! The value kept in Redis for one URL: its variants, each with its stored head, its
//! body and what the freshness rules need (when it was requested and received, its
//! corrected initial age and freshness lifetime, the request header values its `Vary`
//! selected). Times cross instances as wall-clock milliseconds; tokio's clock is this
//! process's own.
//!
//! Layout (big-endian): `FORMAT`, entry count (u16), then per entry: status (u16),
//! request and response time (u64 ms since the Unix epoch), initial age and lifetime
//! (u64 ms), explicit (u8), the stored headers, the targeted headers, the `Vary` values
//! (u16 count; name, present (u8), value) and the body (u32 length, bytes). A header list
//! is a u16 count of (u16 name length, name, u32 value length, value).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::directives::ResponseDirectives;
use crate::entry::Head;
use crate::{CacheConfig, Entry, Variants};

/// The format's version, first in every value: a value of another version is ignored.
const FORMAT: u8 = 1;

/// The clocks at one moment: tokio's, to measure, and the wall's, to share.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clocks {
    pub(crate) now: Instant,
    pub(crate) wall: SystemTime,
}

impl Clocks {
    pub(crate) fn now() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    fn wall_ms_of(self, t: Instant) -> u64 {
        let wall = self.wall - self.now.saturating_duration_since(t);
        wall.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64
    }

    fn instant_of_wall_ms(self, ms: u64) -> Instant {
        let wall = UNIX_EPOCH + Duration::from_millis(ms);
        let ago = self.wall.duration_since(wall).unwrap_or_default();
        self.now.checked_sub(ago).unwrap_or(self.now)
    }
}

pub(crate) fn encode(variants: &Variants, clocks: Clocks) -> Bytes {
    let mut out = BytesMut::with_capacity(variants.weight() as usize + 64);
    out.put_u8(FORMAT);
    // Partial responses stay in the instance that has them.
    let entries: Vec<_> = variants
        .entries()
        .iter()
        .filter(|e| !e.is_partial())
        .collect();
    out.put_u16(entries.len() as u16);
    for entry in entries {
        let head = entry.head();
        out.put_u16(head.status.as_u16());
        out.put_u64(clocks.wall_ms_of(head.request_time));
        out.put_u64(clocks.wall_ms_of(head.response_time));
        out.put_u64(head.initial_age.as_millis() as u64);
        out.put_u64(head.lifetime.as_millis() as u64);
        out.put_u8(u8::from(head.explicit));
        put_headers(&mut out, &head.headers);
        put_headers(&mut out, &head.targeted);
        out.put_u16(head.vary.len() as u16);
        for (name, value) in head.vary.iter() {
            put_name(&mut out, name);
            match value {
                Some(v) => {
                    out.put_u8(1);
                    put_value(&mut out, v);
                }
                None => out.put_u8(0),
            }
        }
        out.put_u32(entry.body().len() as u32);
        out.put_slice(entry.body());
    }
    out.freeze()
}

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    out.put_u16(headers.len() as u16);
    for (name, value) in headers {
        put_name(out, name);
        put_value(out, value);
    }
}

fn put_name(out: &mut BytesMut, name: &HeaderName) {
    out.put_u16(name.as_str().len() as u16);
    out.put_slice(name.as_str().as_bytes());
}

fn put_value(out: &mut BytesMut, value: &HeaderValue) {
    out.put_u32(value.len() as u32);
    out.put_slice(value.as_bytes());
}

/// The variants in `value`, or `None` when it is not a value of this format (another
/// version, or damaged).
pub(crate) fn decode(mut value: Bytes, clocks: Clocks, config: &CacheConfig) -> Option<Variants> {
    let r = &mut value;
    if get_u8(r)? != FORMAT {
        return None;
    }
    let count = get_u16(r)?;
    let mut entries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let status = StatusCode::from_u16(get_u16(r)?).ok()?;
        // A partial response is never stored: a value holding one is not of this cache.
        if status == StatusCode::PARTIAL_CONTENT {
            return None;
        }
        let request_time = clocks.instant_of_wall_ms(get_u64(r)?);
        let response_time = clocks.instant_of_wall_ms(get_u64(r)?);
        let initial_age = Duration::from_millis(get_u64(r)?);
        let lifetime = Duration::from_millis(get_u64(r)?);
        let explicit = get_u8(r)? != 0;
        let headers = get_headers(r)?;
        let targeted = get_headers(r)?;
        let vary_count = get_u16(r)?;
        let mut vary = Vec::with_capacity(vary_count as usize);
        for _ in 0..vary_count {
            let name = get_name(r)?;
            let value = match get_u8(r)? {
                0 => None,
                _ => Some(get_value(r)?),
            };
            vary.push((name, value));
        }
        let len = get_u32(r)? as usize;
        let body = take(r, len)?;
        // The directives as they were parsed when the response was stored: from its
        // fields and its targeted fields together.
        let mut all = headers.clone();
        for (name, value) in &targeted {
            all.append(name, value.clone());
        }
        let directives = ResponseDirectives::parse(&all, &config.targeted_fields);
        let head = Head {
            status,
            headers,
            targeted,
            vary: vary.into_boxed_slice(),
            request_time,
            response_time,
            initial_age,
            lifetime,
            explicit,
            directives,
        };
        entries.push(Arc::new(head.into_entry(body)));
    }
    r.is_empty().then(|| Variants::from_entries(entries))
}

fn take(r: &mut Bytes, n: usize) -> Option<Bytes> {
    (r.remaining() >= n).then(|| r.split_to(n))
}

fn get_u8(r: &mut Bytes) -> Option<u8> {
    (r.remaining() >= 1).then(|| r.get_u8())
}

fn get_u16(r: &mut Bytes) -> Option<u16> {
    (r.remaining() >= 2).then(|| r.get_u16())
}

fn get_u32(r: &mut Bytes) -> Option<u32> {
    (r.remaining() >= 4).then(|| r.get_u32())
}

fn get_u64(r: &mut Bytes) -> Option<u64> {
    (r.remaining() >= 8).then(|| r.get_u64())
}

fn get_name(r: &mut Bytes) -> Option<HeaderName> {
    let len = get_u16(r)? as usize;
    HeaderName::from_bytes(&take(r, len)?).ok()
}

fn get_value(r: &mut Bytes) -> Option<HeaderValue> {
    let len = get_u32(r)? as usize;
    HeaderValue::from_maybe_shared(take(r, len)?).ok()
}

fn get_headers(r: &mut Bytes) -> Option<HeaderMap> {
    let count = get_u16(r)?;
    let mut headers = HeaderMap::with_capacity(count as usize);
    for _ in 0..count {
        let name = get_name(r)?;
        headers.append(name, get_value(r)?);
    }
    Some(headers)
}

/// How long Redis keeps `variants`: the longest any of them (partial responses left
/// out: they are not written) stays usable from `now`, its freshness plus its stale
/// windows (the response's `stale-while-revalidate` and `stale-if-error`, else the
/// configured ones); `None` when none is usable any more, or there is none to write.
pub(crate) fn ttl(variants: &Variants, now: Instant, config: &CacheConfig) -> Option<Duration> {
    variants
        .entries()
        .iter()
        .filter(|e| !e.is_partial())
        .map(|e| usable_for(e, now, config))
        .max()
        .filter(|ttl| !ttl.is_zero())
}

fn usable_for(entry: &Entry, now: Instant, config: &CacheConfig) -> Duration {
    let d = entry.directives();
    let swr = d
        .stale_while_revalidate
        .unwrap_or(config.stale_while_revalidate);
    let sie = d.stale_if_error.unwrap_or(config.stale_if_error);
    (entry.freshness_lifetime() + swr.max(sie)).saturating_sub(entry.age(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Times;
    use crate::parts::Parts;

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        fields
            .iter()
            .map(|&(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn round_trips_heads_bodies_and_times() {
        let config = CacheConfig::default();
        let headers = headers(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "max-age=90"),
            ("vary", "accept-language"),
        ]);
        let vary: Box<[_]> = vec![
            (
                HeaderName::from_static("accept-language"),
                Some(HeaderValue::from_static("fr")),
            ),
            (HeaderName::from_static("x-absent"), None),
        ]
        .into();
        let now = Instant::now();
        let times = Times {
            request: now,
            response: now,
            wall: SystemTime::now(),
        };
        let head = Head::new(StatusCode::OK, &headers, vary, times, &config);
        let entry = Arc::new(head.into_entry(Bytes::from_static(b"bonjour")));
        let variants = Variants::default().with(entry.clone());
        let clocks = Clocks::now();
        let back = decode(encode(&variants, clocks), clocks, &config).expect("decodes");
        let got = &back.entries()[0];
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.headers(), entry.headers());
        assert_eq!(got.body(), entry.body());
        assert_eq!(got.freshness_lifetime(), Duration::from_secs(90));
        assert_eq!(got.vary().count(), 2);
        assert_eq!(got.weight(), entry.weight());
        let age = got.age(clocks.now).as_millis();
        assert!(age <= 1, "age {age} ms");
        assert!(decode(Bytes::from_static(b"\x02"), clocks, &config).is_none());
        assert!(decode(Bytes::from_static(b"\x01\x00\x01"), clocks, &config).is_none());
    }

    #[test]
    fn partial_responses_are_not_written() {
        let config = CacheConfig::default();
        let times = Times::now(Instant::now());
        let head = |vary: &'static str| {
            let fields = headers(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")]);
            let vary = vec![(
                HeaderName::from_static("x-v"),
                Some(HeaderValue::from_static(vary)),
            )];
            Head::new(StatusCode::OK, &fields, vary.into(), times, &config)
        };
        let part = Parts::new(10, 2, Bytes::from_static(b"23"));
        let partial = Arc::new(head("a").into_partial(part));
        let variants = Variants::default().with(partial);
        assert_eq!(
            ttl(&variants, times.response, &config),
            None,
            "nothing to write"
        );
        let complete = Arc::new(head("b").into_entry(Bytes::from_static(b"whole")));
        let variants = variants.with(complete);
        assert_eq!(variants.entries().len(), 2);
        let clocks = Clocks::now();
        let back = decode(encode(&variants, clocks), clocks, &config).expect("decodes");
        assert_eq!(back.entries().len(), 1);
        assert_eq!(back.entries()[0].body(), "whole");
    }

    #[test]
    fn a_partial_response_is_not_taken_from_the_tier() {
        let headers = headers(&[
            ("cache-control", "max-age=60"),
            ("content-range", "bytes 0-1/10"),
        ]);
        let config = CacheConfig::default();
        let times = Times::now(Instant::now());
        let head = Head::new(
            StatusCode::PARTIAL_CONTENT,
            &headers,
            [].into(),
            times,
            &config,
        );
        let entry = Arc::new(head.into_entry(Bytes::from_static(b"ab")));
        let clocks = Clocks::now();
        let value = encode(&Variants::default().with(entry), clocks);
        assert!(decode(value, clocks, &config).is_none());
    }
}
