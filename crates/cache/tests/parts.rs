//! Partial responses (RFC 9111 §3.3–3.4): the origin's `206`s stored as parts of their
//! representation, combined while they share a strong validator, answering the ranges
//! they hold, and becoming the complete `200` once they cover it; on paused time.

mod support;

use std::sync::Arc;

use support::*;
use switchyard_cache::CacheConfig;
use tokio::time::{advance, sleep, Instant};

const URL: &str = "http://example.com/a";

/// The representation the origin has now: its bytes and its `ETag` (`None`: a weak one),
/// the status it fails with, if it fails, whether it answers `If-None-Match`, and its
/// `Cache-Control`.
#[derive(Clone)]
struct Current {
    body: &'static str,
    etag: &'static str,
    fail: Option<u16>,
    conditional: bool,
    cache_control: &'static str,
}

/// An origin serving the representation in `current` as `text/plain`, cacheable as its
/// `cache_control` says (`max-age=60` unless changed): `304` to an `If-None-Match` of its `ETag`; a `206` of one `bytes=a-b` (or
/// `a-`) range, unless an `If-Range` does not match its `ETag`; the whole `200`
/// otherwise (several ranges included).
fn origin(current: &Arc<Mutex<Current>>) -> Backend {
    let current = current.clone();
    Backend::new(move |req, _| {
        let Current {
            body,
            etag,
            fail,
            conditional,
            cache_control,
        } = current.lock().unwrap().clone();
        if let Some(status) = fail {
            return Ok(response(status, &[], "down"));
        }
        let headers = [
            ("cache-control", cache_control),
            ("etag", etag),
            ("content-type", "text/plain"),
        ];
        if conditional
            && req
                .headers()
                .get("if-none-match")
                .is_some_and(|v| v == etag)
        {
            return Ok(response(304, &headers, ""));
        }
        let if_range = req.headers().get("if-range");
        let range = req
            .headers()
            .get("range")
            .filter(|_| if_range.is_none_or(|v| v == etag))
            .and_then(|v| v.to_str().unwrap().strip_prefix("bytes="))
            .filter(|r| !r.contains(','));
        let Some((first, last)) = range.and_then(|r| r.split_once('-')) else {
            return ok(&headers, body);
        };
        let first: usize = first.parse().unwrap();
        let last: usize = last.parse().unwrap_or(body.len() - 1);
        let content_range = format!("bytes {first}-{last}/{}", body.len());
        let mut res = response(206, &headers, &body[first..=last]);
        let value = content_range.parse().unwrap();
        res.headers_mut().insert("content-range", value);
        Ok(res)
    })
}

fn representation(body: &'static str, etag: &'static str) -> Arc<Mutex<Current>> {
    Arc::new(Mutex::new(Current {
        body,
        etag,
        fail: None,
        conditional: true,
        cache_control: "max-age=60",
    }))
}

fn ranged(range: &str) -> http::Request<Body> {
    request("GET", "/a", &[("range", range)])
}

/// Whether what is stored for `/a` is a partial response.
fn partial(svc: &switchyard_cache::Cache<Backend>) -> Option<bool> {
    let variants = svc.handle().store().get(URL)?;
    Some(variants.entries()[0].is_partial())
}

#[tokio::test(start_paused = true)]
async fn parts_are_combined_into_the_complete_200() {
    let origin = origin(&representation("0123456789", "\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);

    let got = send(&svc, ranged("bytes=0-3")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "0123"));
    assert_eq!(got.header("content-range"), Some("bytes 0-3/10"));
    assert_eq!(got.cache_status(), "switchyard; fwd=uri-miss; stored");
    assert_eq!(partial(&svc), Some(true));

    // Within the part: a hit, a 206 cut from it.
    advance(secs(5)).await;
    let got = send(&svc, ranged("bytes=1-2")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(got.header("content-range"), Some("bytes 1-2/10"));
    assert_eq!(got.header("content-length"), Some("2"));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.header("etag"), Some("\"v1\""));
    assert_eq!(got.age(), Some(5));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=55");
    assert_eq!(origin.calls(), 1);

    // Past it: forwarded as it is; the new part joins the stored one.
    let got = send(&svc, ranged("bytes=2-5")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "2345"));
    assert_eq!(got.cache_status(), "switchyard; fwd=partial; stored");
    assert_eq!(origin.headers(1)["range"], "bytes=2-5");
    let got = send(&svc, ranged("bytes=0-5")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "012345"));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");

    // The whole representation is not held yet: forwarded.
    let got = send(&svc, request("HEAD", "/a", &[])).await;
    assert_eq!(got.cache_status(), "switchyard; fwd=partial");
    assert_eq!(origin.calls(), 3);

    // The last part: the parts become the complete response, stored as a 200.
    let got = send(&svc, ranged("bytes=6-")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "6789"));
    assert_eq!(got.cache_status(), "switchyard; fwd=partial; stored");
    assert_eq!(partial(&svc), Some(false));
    let variants = svc.handle().store().get(URL).unwrap();
    let entry = &variants.entries()[0];
    assert_eq!(entry.status(), 200);
    assert_eq!(entry.body(), "0123456789");
    assert!(!entry.headers().contains_key("content-range"));

    let got = send(&svc, get("/a")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "0123456789"));
    assert_eq!(got.header("content-length"), Some("10"));
    assert_eq!(got.header("content-range"), None);
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");
    let got = send(&svc, ranged("bytes=-3")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "789"));
    assert_eq!(got.header("content-range"), Some("bytes 7-9/10"));
    assert_eq!(origin.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn parts_answer_several_ranges_and_unsatisfiable_ones() {
    let origin = origin(&representation("0123456789", "\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-2")).await;
    send(&svc, ranged("bytes=7-9")).await;
    assert_eq!(partial(&svc), Some(true));

    let got = send(&svc, ranged("bytes=8-9,0-1")).await;
    assert_eq!(got.status, 206);
    let parts = [("bytes 8-9/10", "89"), ("bytes 0-1/10", "01")];
    let expected = multipart(boundary(&got), &parts);
    assert_eq!(got.text(), expected);
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");

    // The length is known: a range past it is unsatisfiable without asking the origin.
    let got = send(&svc, ranged("bytes=10-")).await;
    assert_eq!((got.status.as_u16(), got.text()), (416, ""));
    assert_eq!(got.header("content-range"), Some("bytes */10"));
    assert_eq!(origin.calls(), 2);

    // One of the ranges not held: forwarded. (This origin answers several ranges with
    // the whole 200, which takes the parts' place.)
    let got = send(&svc, ranged("bytes=0-1,4-5")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "0123456789"));
    assert_eq!(got.cache_status(), "switchyard; fwd=partial; stored");
    assert_eq!(origin.headers(2)["range"], "bytes=0-1,4-5");
    assert_eq!(partial(&svc), Some(false));
}

#[tokio::test(start_paused = true)]
async fn a_part_of_another_representation_replaces_the_parts() {
    let current = representation("0123456789", "\"v1\"");
    let origin = origin(&current);
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-4")).await;

    {
        let mut now = current.lock().unwrap();
        (now.body, now.etag) = ("abcdefghij", "\"v2\"");
    }
    let got = send(&svc, ranged("bytes=5-9")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "fghij"));
    // The v1 part is gone: 0-4 goes to the origin again, and v2's parts make it whole.
    let got = send(&svc, ranged("bytes=0-4")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "abcde"));
    assert_eq!(got.cache_status(), "switchyard; fwd=partial; stored");
    assert_eq!(origin.calls(), 3);
    let got = send(&svc, get("/a")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "abcdefghij"));
    assert_eq!(got.header("etag"), Some("\"v2\""));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");
}

#[tokio::test(start_paused = true)]
async fn if_range_that_does_not_match_the_parts_gets_the_full_200() {
    let origin = origin(&representation("0123456789", "\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-4")).await;

    let req = request(
        "GET",
        "/a",
        &[("range", "bytes=0-1"), ("if-range", "\"v1\"")],
    );
    let got = send(&svc, req).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "01"));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");

    // Not the stored representation: the client wants the whole, which the parts are not.
    let req = request(
        "GET",
        "/a",
        &[("range", "bytes=0-1"), ("if-range", "\"v0\"")],
    );
    let got = send(&svc, req).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "0123456789"));
    assert_eq!(got.cache_status(), "switchyard; fwd=partial; stored");
    assert_eq!(origin.headers(1)["if-range"], "\"v0\"");
    // That 200 replaced the parts.
    assert_eq!(partial(&svc), Some(false));
    let got = send(&svc, get("/a")).await;
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_parts_are_revalidated_when_they_hold_the_range() {
    let origin = origin(&representation("0123456789", "\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-4")).await;
    advance(secs(61)).await;
    // Held, but stale: asked again with the parts' validator; the 304 freshens them and
    // they answer.
    let got = send(&svc, ranged("bytes=0-1")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "01"));
    assert_eq!(got.header("content-range"), Some("bytes 0-1/10"));
    assert_eq!(
        got.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=60"
    );
    assert_eq!(origin.calls(), 2);
    let asked = origin.headers(1);
    assert_eq!(asked["if-none-match"], "\"v1\"");
    assert_eq!(asked["range"], "bytes=0-1");
    assert_eq!(partial(&svc), Some(true));
    let got = send(&svc, ranged("bytes=3-4")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "34"));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");

    // Not held: forwarded as it is, without the validator; the new part joins them.
    let got = send(&svc, ranged("bytes=6-7")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "67"));
    assert_eq!(got.cache_status(), "switchyard; fwd=partial; stored");
    assert!(origin.headers(2).get("if-none-match").is_none());
    assert_eq!(origin.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn stale_parts_answer_when_the_origin_fails_within_stale_if_error() {
    let current = representation("0123456789", "\"v1\"");
    let origin = origin(&current);
    let config = CacheConfig {
        stale_if_error: secs(30),
        ..CacheConfig::default()
    };
    let svc = cache(config, &origin);
    send(&svc, ranged("bytes=0-4")).await;
    current.lock().unwrap().fail = Some(503);
    advance(secs(70)).await;
    let got = send(&svc, ranged("bytes=1-3")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "123"));
    assert_eq!(
        got.cache_status(),
        "switchyard; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error"
    );
    // A range the parts do not hold gets the origin's failure.
    let got = send(&svc, ranged("bytes=6-7")).await;
    assert_eq!(got.status.as_u16(), 503);
    // Past the window: the failure too.
    advance(secs(30)).await;
    let got = send(&svc, ranged("bytes=1-3")).await;
    assert_eq!(got.status.as_u16(), 503);
    assert_eq!(origin.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn parts_without_a_strong_validator_are_not_stored() {
    let origin = origin(&representation("0123456789", "W/\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);
    let got = send(&svc, ranged("bytes=0-4")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "01234"));
    assert_eq!(got.cache_status(), "switchyard; fwd=uri-miss");
    assert!(svc.handle().store().is_empty());

    // A Last-Modified a second or more before the Date is strong.
    let strong = Backend::new(|_, _| {
        let headers = [
            ("cache-control", "max-age=60"),
            ("last-modified", "Sun, 06 Nov 1994 08:00:00 GMT"),
            ("date", &http_date(0)),
            ("content-range", "bytes 2-3/10"),
        ];
        Ok(response(206, &headers, "23"))
    });
    let svc = cache(CacheConfig::default(), &strong);
    let got = send(&svc, ranged("bytes=2-3")).await;
    assert_eq!(got.cache_status(), "switchyard; fwd=uri-miss; stored");
    let got = send(&svc, ranged("bytes=2-2")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "2"));
    assert_eq!(strong.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn parts_count_against_the_size_bound() {
    let body: &'static str = "x".repeat(4000).leak();
    let origin = origin(&representation(body, "\"v1\""));
    let config = CacheConfig {
        max_object_size: 3000,
        ..CacheConfig::default()
    };
    let svc = cache(config, &origin);
    // A representation larger than an object may be: none of it is stored.
    let got = send(&svc, ranged("bytes=0-9")).await;
    assert_eq!(got.cache_status(), "switchyard; fwd=uri-miss");
    assert!(svc.handle().store().is_empty());

    let origin = self::origin(&representation(&body[..2000], "\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-999")).await;
    let store = svc.handle().store().clone();
    let one = store.bytes_used();
    assert!(one > 1000, "{one}");
    assert_eq!(svc.handle().stats().bytes_used, one);
    send(&svc, ranged("bytes=1500-1799")).await;
    let two = store.bytes_used();
    assert!(two >= one + 300, "{one} then {two}");
    assert_eq!(store.get(URL).unwrap().weight() + URL.len() as u64, two);
}

#[tokio::test(start_paused = true)]
async fn a_part_of_the_stored_complete_response_freshens_it() {
    // An origin that answers a conditional range with the range, not a 304.
    let current = representation("0123456789", "\"v1\"");
    current.lock().unwrap().conditional = false;
    let origin = origin(&current);
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, get("/a")).await;
    advance(secs(61)).await;
    // Stale: the range goes to the origin, whose 206 is of the same representation (the
    // same strong validator) as the stored 200.
    let got = send(&svc, ranged("bytes=0-3")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "0123"));
    assert_eq!(got.cache_status(), "switchyard; fwd=stale; stored");
    assert_eq!(origin.calls(), 2);
    // Its head freshened the stored 200 (RFC 9111 §3.4), which kept its body.
    assert_eq!(partial(&svc), Some(false));
    advance(secs(5)).await;
    let got = send(&svc, get("/a")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "0123456789"));
    assert_eq!(got.header("content-length"), Some("10"));
    assert_eq!(got.age(), Some(5));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=55");
    assert_eq!(origin.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_parts_are_served_at_once_while_revalidated_in_the_background() {
    // An origin that takes 10 s to answer: the stale answers do not wait for it.
    let origin = origin(&representation("0123456789", "\"v1\"")).delayed(secs(10));
    let config = CacheConfig {
        stale_while_revalidate: secs(30),
        ..CacheConfig::default()
    };
    let svc = cache(config, &origin);
    send(&svc, ranged("bytes=0-4")).await;
    advance(secs(55)).await;

    // Held, stale by 5 s, within the window: served at once, as when fresh.
    let asked = Instant::now();
    let got = send(&svc, ranged("bytes=1-2")).await;
    assert_eq!(
        Instant::now(),
        asked,
        "the stale part waited for the origin"
    );
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(got.header("content-range"), Some("bytes 1-2/10"));
    assert_eq!(got.header("content-length"), Some("2"));
    assert_eq!(got.header("etag"), Some("\"v1\""));
    assert_eq!(got.age(), Some(65));
    assert_eq!(
        got.cache_status(),
        "switchyard; hit; ttl=-5; detail=stale-while-revalidate"
    );
    // Several ranges while the refresh is under way: from the part too, and no second
    // request goes upstream.
    sleep(secs(1)).await;
    let got = send(&svc, ranged("bytes=3-4,0-0")).await;
    assert_eq!(got.status, 206);
    let parts = [("bytes 3-4/10", "34"), ("bytes 0-0/10", "0")];
    assert_eq!(got.text(), multipart(boundary(&got), &parts));
    assert!(got
        .cache_status()
        .ends_with("detail=stale-while-revalidate"));
    assert_eq!(origin.calls(), 2);

    // The refresh: the range asked for, with the part's validator, and no other request.
    sleep(secs(10)).await;
    assert_eq!(origin.calls(), 2);
    let refresh = origin.headers(1);
    assert_eq!(refresh["if-none-match"], "\"v1\"");
    assert_eq!(refresh["range"], "bytes=1-2");
    assert!(refresh.get("if-range").is_none());
    // Its 304 freshened the part: a plain hit now, the origin not asked.
    assert_eq!(partial(&svc), Some(true));
    let got = send(&svc, ranged("bytes=0-4")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "01234"));
    assert!(
        !got.cache_status().contains("detail"),
        "{}",
        got.cache_status()
    );
    assert!(got.cache_status().starts_with("switchyard; hit; ttl="));
    assert_eq!(origin.calls(), 2);
    let stats = svc.handle().stats();
    assert_eq!((stats.stale_served, stats.hits), (2, 3));
    assert_eq!((stats.revalidations, stats.not_modified), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn stale_parts_past_the_window_wait_for_the_origin() {
    // The response's own window, with none configured.
    let current = representation("0123456789", "\"v1\"");
    current.lock().unwrap().cache_control = "max-age=60, stale-while-revalidate=30";
    let origin = origin(&current);
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-4")).await;

    // Stale by 31 s: revalidated in the foreground, as before.
    advance(secs(91)).await;
    let got = send(&svc, ranged("bytes=1-2")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(
        got.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=60"
    );
    assert_eq!(origin.calls(), 2);
    assert_eq!(origin.headers(1)["if-none-match"], "\"v1\"");

    // Stale by 1 s: within the window, served at once, refreshed behind.
    advance(secs(61)).await;
    let got = send(&svc, ranged("bytes=1-2")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(
        got.cache_status(),
        "switchyard; hit; ttl=-1; detail=stale-while-revalidate"
    );
    sleep(secs(1)).await;
    assert_eq!(origin.calls(), 3);
    assert_eq!(origin.headers(2)["if-none-match"], "\"v1\"");
}

#[tokio::test(start_paused = true)]
async fn must_revalidate_forbids_serving_stale_parts() {
    let current = representation("0123456789", "\"v1\"");
    current.lock().unwrap().cache_control = "max-age=60, must-revalidate";
    let origin = origin(&current);
    let config = CacheConfig {
        stale_while_revalidate: secs(30),
        ..CacheConfig::default()
    };
    let svc = cache(config, &origin);
    send(&svc, ranged("bytes=0-4")).await;
    advance(secs(65)).await;
    let got = send(&svc, ranged("bytes=1-2")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(
        got.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=60"
    );
    // Nor within the request's max-stale.
    advance(secs(65)).await;
    let req = request(
        "GET",
        "/a",
        &[("range", "bytes=1-2"), ("cache-control", "max-stale=30")],
    );
    let got = send(&svc, req).await;
    assert!(got.cache_status().starts_with("switchyard; fwd=stale"));
    assert_eq!(origin.calls(), 3);
    assert_eq!(svc.handle().stats().stale_served, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_s_max_stale_takes_a_stale_part() {
    let origin = origin(&representation("0123456789", "\"v1\""));
    let svc = cache(CacheConfig::default(), &origin);
    send(&svc, ranged("bytes=0-4")).await;
    advance(secs(70)).await;
    let req = request(
        "GET",
        "/a",
        &[("range", "bytes=1-2"), ("cache-control", "max-stale=30")],
    );
    let got = send(&svc, req).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(
        got.cache_status(),
        "switchyard; hit; ttl=-10; detail=max-stale"
    );
    // Not a refresh: nothing went upstream.
    sleep(secs(1)).await;
    assert_eq!(origin.calls(), 1);
}
