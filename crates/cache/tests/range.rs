//! Range requests (RFC 9110 §14, RFC 9111 §3.3–3.4): answered from a stored `200` as
//! `206` (one part, or `multipart/byteranges`) or `416`, `If-Range`, ranges that are
//! ignored, and misses that go upstream as they are; on paused time. (Parts stored from
//! the origin's `206`s: `parts.rs`.)

mod support;

use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use switchyard_cache::CacheConfig;
use tokio::time::{advance, sleep};
use tower::ServiceExt;

const BODY: &str = "0123456789";
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:00:00 GMT";

/// A backend answering `BODY` with an `ETag`, a `Last-Modified` and `cache-control`, and
/// `304` to a matching `If-None-Match`.
fn backend(cache_control: &'static str) -> Backend {
    Backend::new(move |req, _| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Ok(response(304, &[("cache-control", cache_control)], ""));
        }
        ok(
            &[
                ("cache-control", cache_control),
                ("etag", "\"v1\""),
                ("last-modified", LAST_MODIFIED),
            ],
            BODY,
        )
    })
}

fn ranged(path: &str, range: &str) -> http::Request<Body> {
    request("GET", path, &[("range", range)])
}

/// A cache over `backend` with `/a` stored.
async fn stored(backend: &Backend) -> switchyard_cache::Cache<Backend> {
    let svc = cache(CacheConfig::default(), backend);
    let first = send(&svc, get("/a")).await;
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss; stored");
    svc
}

#[tokio::test(start_paused = true)]
async fn a_stored_response_answers_single_ranges_with_206() {
    let backend = backend("max-age=60");
    let svc = stored(&backend).await;
    for (range, part, content_range) in [
        ("bytes=0-4", "01234", "bytes 0-4/10"),
        ("bytes=5-", "56789", "bytes 5-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=-30", BODY, "bytes 0-9/10"),
        ("bytes=8-1000", "89", "bytes 8-9/10"),
        ("bytes=3-3", "3", "bytes 3-3/10"),
    ] {
        let got = send(&svc, ranged("/a", range)).await;
        assert_eq!(got.status, 206, "{range}");
        assert_eq!(got.text(), part, "{range}");
        assert_eq!(got.header("content-range"), Some(content_range), "{range}");
        let length = part.len().to_string();
        assert_eq!(got.header("content-length"), Some(length.as_str()));
        assert_eq!(got.header("etag"), Some("\"v1\""));
        assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");
    }
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unsatisfiable_range_gets_416() {
    let backend = backend("max-age=60");
    let svc = stored(&backend).await;
    for range in ["bytes=10-", "bytes=20-30", "bytes=-0", "bytes=10-20, 30-"] {
        let got = send(&svc, ranged("/a", range)).await;
        assert_eq!(got.status, 416, "{range}");
        assert_eq!(got.header("content-range"), Some("bytes */10"));
        assert_eq!(got.header("content-length"), Some("0"), "{range}");
        assert_eq!(got.text(), "", "{range}");
    }
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalid_and_too_many_ranges_get_the_full_response() {
    let backend = backend("max-age=60");
    let svc = stored(&backend).await;
    for range in [
        "bytes=5-1",
        "bytes=x-",
        "bytes=0-1-2",
        "lines=0-1",
        // 17 ranges: more than a request may ask for at once.
        "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9,0-0,1-1,2-2,3-3,4-4,5-5,6-6",
    ] {
        let got = send(&svc, ranged("/a", range)).await;
        assert_eq!(got.status, 200, "{range}");
        assert_eq!(got.text(), BODY, "{range}");
        assert_eq!(got.header("content-range"), None);
        assert_eq!(got.header("content-length"), Some("10"));
    }
    // One satisfiable range among unsatisfiable ones is that range.
    let got = send(&svc, ranged("/a", "bytes=2-3, 50-60")).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "23"));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn if_range_serves_the_range_only_when_it_matches() {
    let backend = backend("max-age=60");
    let svc = stored(&backend).await;
    for (if_range, partial) in [
        ("\"v1\"", true),
        ("\"v0\"", false),
        ("W/\"v1\"", false),
        (LAST_MODIFIED, true),
        ("Sun, 06 Nov 1994 07:59:59 GMT", false),
        ("not a date", false),
    ] {
        let req = request(
            "GET",
            "/a",
            &[("range", "bytes=0-1"), ("if-range", if_range)],
        );
        let got = send(&svc, req).await;
        let expected = if partial { (206, "01") } else { (200, BODY) };
        assert_eq!((got.status.as_u16(), got.text()), expected, "{if_range}");
    }
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn head_and_other_statuses_ignore_range_and_validators_come_first() {
    let backend = Backend::new(|req, _| match req.uri().path() {
        "/missing" => Ok(response(404, &[("cache-control", "max-age=60")], "nope")),
        _ => ok(&[("cache-control", "max-age=60"), ("etag", "\"v1\"")], BODY),
    });
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/a")).await;
    send(&svc, get("/missing")).await;

    let head = send(&svc, request("HEAD", "/a", &[("range", "bytes=0-1")])).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("10"));
    assert_eq!(head.cache_status(), "switchyard; hit; ttl=60");

    let missing = send(&svc, ranged("/missing", "bytes=0-1")).await;
    assert_eq!((missing.status.as_u16(), missing.text()), (404, "nope"));

    // RFC 9110 §13.2.2: If-None-Match is evaluated before Range.
    let req = request(
        "GET",
        "/a",
        &[("range", "bytes=0-1"), ("if-none-match", "\"v1\"")],
    );
    assert_eq!(send(&svc, req).await.status, 304);
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_range_is_a_slice_of_the_stored_body() {
    let backend = backend("max-age=60");
    let svc = stored(&backend).await;
    let variants = svc.handle().store().get("http://example.com/a").unwrap();
    let stored = variants.entries()[0].body().clone();

    let res = svc
        .clone()
        .oneshot(ranged("/a", "bytes=2-5"))
        .await
        .unwrap();
    let mut body = res.into_body();
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(frame, "2345");
    assert_eq!(frame.as_ptr(), stored[2..].as_ptr(), "no copy");
    assert!(body.frame().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_range_miss_goes_upstream_as_it_is_and_its_206_is_not_stored() {
    let backend = Backend::new(|req, n| match req.headers().get("range") {
        Some(range) => {
            assert_eq!(range, "bytes=0-1");
            let headers = [
                ("cache-control", "max-age=60"),
                ("content-range", "bytes 0-1/10"),
            ];
            Ok(response(206, &headers, "01"))
        }
        None => ok(&[("cache-control", "max-age=60")], &format!("full{n}")),
    });
    let svc = cache(CacheConfig::default(), &backend);

    let partial = send(&svc, ranged("/a", "bytes=0-1")).await;
    assert_eq!((partial.status.as_u16(), partial.text()), (206, "01"));
    assert_eq!(partial.header("content-range"), Some("bytes 0-1/10"));
    assert_eq!(partial.cache_status(), "switchyard; fwd=uri-miss");
    assert_eq!(backend.headers(0)["range"], "bytes=0-1");
    assert!(svc.handle().store().is_empty(), "206 not stored");

    let full = send(&svc, get("/a")).await;
    assert_eq!((full.status.as_u16(), full.text()), (200, "full1"));
    assert_eq!(full.cache_status(), "switchyard; fwd=uri-miss; stored");
    let part = send(&svc, ranged("/a", "bytes=0-1")).await;
    assert_eq!((part.status.as_u16(), part.text()), (206, "fu"));
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_answer_to_a_range_miss_is_stored() {
    // The origin ignores Range: its 200 is a complete response, stored and used.
    let backend = Backend::new(|_, n| ok(&[("cache-control", "max-age=60")], &format!("v{n}-abc")));
    let svc = cache(CacheConfig::default(), &backend);
    let first = send(&svc, ranged("/a", "bytes=0-1")).await;
    assert_eq!((first.status.as_u16(), first.text()), (200, "v0-abc"));
    let second = send(&svc, ranged("/a", "bytes=-3")).await;
    assert_eq!((second.status.as_u16(), second.text()), (206, "abc"));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_origin_s_416_to_a_range_is_not_stored() {
    // A cacheable 416 answers the range it was asked for, not the URL: stored, it would
    // answer every later request for it.
    let backend = Backend::new(|req, n| {
        if req.headers().contains_key("range") {
            let headers = [
                ("cache-control", "max-age=60"),
                ("content-range", "bytes */10"),
            ];
            return Ok(response(416, &headers, ""));
        }
        ok(&[("cache-control", "max-age=60")], &format!("full{n}"))
    });
    let svc = cache(CacheConfig::default(), &backend);
    let got = send(&svc, ranged("/a", "bytes=20-")).await;
    assert_eq!(got.status, 416);
    assert_eq!(got.cache_status(), "switchyard; fwd=uri-miss");
    assert!(svc.handle().store().is_empty());
    let got = send(&svc, get("/a")).await;
    assert_eq!((got.status.as_u16(), got.text()), (200, "full1"));
    assert_eq!(got.cache_status(), "switchyard; fwd=uri-miss; stored");
}

/// `/a` stored with `cache_control` (a lifetime of 10 s), then asked for `range` with a
/// matching `If-Range` once stale.
async fn stale_range(
    cache_control: &'static str,
    range: &str,
) -> (Backend, switchyard_cache::Cache<Backend>, Got) {
    let backend = backend(cache_control);
    let svc = stored(&backend).await;
    advance(secs(11)).await;
    let req = request("GET", "/a", &[("range", range), ("if-range", "\"v1\"")]);
    let got = send(&svc, req).await;
    (backend, svc, got)
}

#[tokio::test(start_paused = true)]
async fn a_stale_response_revalidated_for_a_range_answers_the_range() {
    let (backend, _, got) = stale_range("max-age=10", "bytes=1-2").await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "12"));
    assert_eq!(
        got.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=10"
    );
    // The origin got the stored validator, and the client's range with its If-Range.
    let sent = backend.headers(1);
    assert_eq!(sent["if-none-match"], "\"v1\"");
    assert_eq!(sent["range"], "bytes=1-2");
    assert_eq!(sent["if-range"], "\"v1\"");
}

#[tokio::test(start_paused = true)]
async fn a_background_refresh_fetches_the_whole_response() {
    let (backend, svc, got) =
        stale_range("max-age=10, stale-while-revalidate=60", "bytes=0-0").await;
    assert_eq!((got.status.as_u16(), got.text()), (206, "0"));
    assert!(got
        .cache_status()
        .ends_with("detail=stale-while-revalidate"));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(backend.calls(), 2);
    let sent = backend.headers(1);
    assert!(!sent.contains_key("range") && !sent.contains_key("if-range"));
    let fresh = send(&svc, ranged("/a", "bytes=9-")).await;
    assert_eq!(fresh.cache_status(), "switchyard; hit; ttl=10");
    assert_eq!(fresh.text(), "9");
}

#[tokio::test(start_paused = true)]
async fn a_range_request_follows_a_fetch_in_flight_but_never_leads_one() {
    let backend = Backend::new(|req, n| match req.headers().get("range") {
        Some(_) => Ok(response(206, &[("content-range", "bytes 0-0/2")], "p")),
        None => ok(&[("cache-control", "max-age=60")], &format!("{n}x")),
    })
    .delayed(Duration::from_millis(100));
    let svc = cache(CacheConfig::default(), &backend);

    // A full GET leads; a range request waits for it and is answered from its response.
    let full = tokio::spawn(send(&svc, get("/a")));
    sleep(Duration::from_millis(10)).await;
    let part = send(&svc, ranged("/a", "bytes=1-")).await;
    assert_eq!(full.await.unwrap().text(), "0x");
    assert_eq!((part.status.as_u16(), part.text()), (206, "x"));
    assert!(part.cache_status().ends_with("collapsed"));
    assert_eq!(backend.calls(), 1);

    // A range miss does not make a full GET wait for its partial response.
    let part = tokio::spawn(send(&svc, ranged("/b", "bytes=0-0")));
    sleep(Duration::from_millis(10)).await;
    let full = send(&svc, get("/b")).await;
    assert_eq!(full.text(), "2x");
    assert_eq!(full.cache_status(), "switchyard; fwd=uri-miss; stored");
    assert_eq!(part.await.unwrap().status, 206);
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_206_holding_the_whole_representation_is_stored_as_its_200() {
    let backend = Backend::new(|req, _| {
        // `/short` claims the whole representation but sends half of it.
        let body = if req.uri().path() == "/short" {
            "01234"
        } else {
            BODY
        };
        let headers = [
            ("cache-control", "max-age=60"),
            ("content-range", "bytes 0-9/10"),
        ];
        Ok(response(206, &headers, body))
    });
    let svc = cache(CacheConfig::default(), &backend);

    let first = send(&svc, ranged("/a", "bytes=0-")).await;
    assert_eq!((first.status.as_u16(), first.text()), (206, BODY));
    assert_eq!(first.header("content-range"), Some("bytes 0-9/10"));
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss; stored");
    let full = send(&svc, get("/a")).await;
    assert_eq!((full.status.as_u16(), full.text()), (200, BODY));
    assert_eq!(full.header("content-range"), None);
    assert_eq!(full.header("content-length"), Some("10"));
    assert_eq!(full.cache_status(), "switchyard; hit; ttl=60");
    let part = send(&svc, ranged("/a", "bytes=-2")).await;
    assert_eq!((part.status.as_u16(), part.text()), (206, "89"));
    assert_eq!(backend.calls(), 1);

    let short = send(&svc, ranged("/short", "bytes=0-")).await;
    assert_eq!((short.status.as_u16(), short.text()), (206, "01234"));
    let store = svc.handle().store().clone();
    assert!(
        store.get("http://example.com/short").is_none(),
        "not stored"
    );
}

/// A backend answering `BODY` as `text/plain`, with an `ETag`.
fn typed_backend() -> Backend {
    Backend::new(|_, _| {
        let headers = [
            ("cache-control", "max-age=60"),
            ("etag", "\"v1\""),
            ("content-type", "text/plain"),
        ];
        ok(&headers, BODY)
    })
}

#[tokio::test(start_paused = true)]
async fn several_ranges_get_a_multipart_byteranges_206() {
    let backend = typed_backend();
    let svc = stored(&backend).await;
    let got = send(&svc, ranged("/a", "bytes=0-1,5-9")).await;
    assert_eq!(got.status, 206);
    let first = boundary(&got);
    assert_eq!(first.len(), 16);
    assert!(first.bytes().all(|b| b.is_ascii_hexdigit()), "{first}");
    let expected = multipart(first, &[("bytes 0-1/10", "01"), ("bytes 5-9/10", "56789")]);
    assert_eq!(got.text(), expected);
    let length = expected.len().to_string();
    assert_eq!(got.header("content-length"), Some(length.as_str()));
    assert_eq!(got.header("content-range"), None);
    assert_eq!(got.header("etag"), Some("\"v1\""));
    assert_eq!(got.cache_status(), "switchyard; hit; ttl=60");

    // In the order asked for; an unsatisfiable one left out.
    let got = send(&svc, ranged("/a", "bytes=-2, 50-60, 1-2")).await;
    let expected = multipart(
        boundary(&got),
        &[("bytes 8-9/10", "89"), ("bytes 1-2/10", "12")],
    );
    assert_eq!((got.status.as_u16(), got.text()), (206, expected.as_str()));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn overlapping_ranges_are_coalesced_so_no_byte_is_sent_twice() {
    let backend = typed_backend();
    let svc = stored(&backend).await;
    // Touching or overlapping: one part, a plain 206.
    for range in ["bytes=0-3,4-5", "bytes=2-5,0-3", "bytes=0-5,1-1,2-3"] {
        let got = send(&svc, ranged("/a", range)).await;
        assert_eq!(
            (got.status.as_u16(), got.text()),
            (206, "012345"),
            "{range}"
        );
        assert_eq!(got.header("content-range"), Some("bytes 0-5/10"));
        assert_eq!(got.header("content-type"), Some("text/plain"));
    }
    // Sixteen times the whole body: once.
    let abuse = format!("bytes={}", vec!["0-"; 16].join(","));
    let got = send(&svc, ranged("/a", &abuse)).await;
    assert_eq!((got.status.as_u16(), got.text()), (206, BODY));
    assert_eq!(got.header("content-range"), Some("bytes 0-9/10"));
    // Some merged, the rest kept apart.
    let got = send(&svc, ranged("/a", "bytes=7-8,0-1,1-2,9-9")).await;
    let expected = multipart(
        boundary(&got),
        &[("bytes 7-9/10", "789"), ("bytes 0-2/10", "012")],
    );
    assert_eq!((got.status.as_u16(), got.text()), (206, expected.as_str()));
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn several_ranges_with_an_if_range_that_does_not_match_get_the_full_200() {
    let backend = typed_backend();
    let svc = stored(&backend).await;
    for (if_range, status) in [("\"v1\"", 206), ("\"v2\"", 200)] {
        let req = request(
            "GET",
            "/a",
            &[("range", "bytes=0-1,5-6"), ("if-range", if_range)],
        );
        let got = send(&svc, req).await;
        assert_eq!(got.status, status, "{if_range}");
        if status == 200 {
            assert_eq!(got.text(), BODY);
            assert_eq!(got.header("content-type"), Some("text/plain"));
            assert_eq!(got.header("content-length"), Some("10"));
        }
    }
    assert_eq!(backend.calls(), 1);
}
