//! The response cache in the standard stack: hits touch no backend, stale answers stand in
//! for dead backends, unsafe methods invalidate, and it can be turned off.

use std::time::Duration;

use http::{Request, StatusCode};
use switchyard::{Backend, CacheConfig, ProxyConfig};
use switchyard_server::ServerConfig;
use switchyard_test::{Fleet, Script, Step};
use switchyard_tests::{backend, client, full, send_reading, TestProxy, RANGED};

async fn fetch(proxy: &TestProxy, method: &str, path: &str) -> (StatusCode, String, String) {
    let req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .body(full(""))
        .unwrap();
    send_reading(&client(), req, "cache-status").await
}

#[tokio::test]
async fn a_hit_is_answered_without_a_backend() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::with(&[&a, &b]).await;
    let first = fetch(&proxy, "GET", "/cacheable/60").await;
    assert_eq!(
        first,
        (
            StatusCode::OK,
            "switchyard; fwd=uri-miss; stored".into(),
            "a GET".into()
        )
    );
    for _ in 0..5 {
        let (status, cache, body) = fetch(&proxy, "GET", "/cacheable/60").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a GET"));
        assert!(cache.starts_with("switchyard; hit"), "{cache}");
    }
    assert_eq!(a.request_count() + b.request_count(), 1);
    // Uncacheable answers are forwarded every time, round robin.
    let (_, cache, _) = fetch(&proxy, "GET", "/").await;
    assert_eq!(cache, "switchyard; fwd=uri-miss");
    fetch(&proxy, "GET", "/").await;
    assert_eq!(a.request_count() + b.request_count(), 3);
    let stats = proxy.proxy.cache().unwrap().stats();
    assert_eq!((stats.hits, stats.stores), (5, 1));
}

#[tokio::test]
async fn a_stale_answer_stands_in_for_dead_backends_when_allowed() {
    let a = backend("a").await;
    let mut config = switchyard_tests::config();
    config.cache = Some(CacheConfig {
        stale_if_error: Duration::from_secs(60),
        ..CacheConfig::default()
    });
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    // max-age=0: stale at once, kept because it may answer errors.
    let (status, _, body) = fetch(&proxy, "GET", "/cacheable/0").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a GET"));
    a.kill();
    let (status, cache, body) = fetch(&proxy, "GET", "/cacheable/0").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a GET"));
    assert!(
        cache.contains("fwd=stale") && cache.contains("detail=stale-if-error"),
        "{cache}"
    );
    // Without a stored answer the error is the client's (502, or 503 once the breaker
    // has opened on the refused connections).
    let (status, _, _) = fetch(&proxy, "GET", "/cacheable/1").await;
    assert!(status.is_server_error(), "{status}");
}

#[tokio::test]
async fn a_post_invalidates_the_stored_get() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    fetch(&proxy, "GET", "/cacheable/60").await;
    assert!(fetch(&proxy, "GET", "/cacheable/60")
        .await
        .1
        .starts_with("switchyard; hit"));
    let (status, _, body) = fetch(&proxy, "POST", "/cacheable/60").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a POST"));
    let (_, cache, _) = fetch(&proxy, "GET", "/cacheable/60").await;
    assert_eq!(cache, "switchyard; fwd=uri-miss; stored");
    assert_eq!(a.request_count(), 3);
}

#[tokio::test]
async fn with_the_cache_off_every_request_reaches_a_backend() {
    let config = ProxyConfig {
        cache: None,
        ..switchyard_tests::config()
    };
    let a = backend("a").await;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    for _ in 0..3 {
        let (status, cache, _) = fetch(&proxy, "GET", "/cacheable/60").await;
        assert_eq!((status, cache.as_str()), (StatusCode::OK, ""));
    }
    assert_eq!(a.request_count(), 3);
    assert!(proxy.proxy.cache().is_none());
}

#[tokio::test]
async fn a_stale_answer_stands_in_for_a_backend_that_times_out() {
    let a = backend("a").await;
    let mut config = ProxyConfig {
        request_timeout: Duration::from_millis(300),
        ..switchyard_tests::config()
    };
    // One attempt takes the whole request timeout, so the backend is asked exactly once.
    config.retry.attempt_timeout = Some(config.request_timeout);
    config.cache = Some(CacheConfig {
        stale_if_error: Duration::from_secs(60),
        ..CacheConfig::default()
    });
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let (status, _, _) = fetch(&proxy, "GET", "/cacheable/0").await;
    assert_eq!(status, StatusCode::OK);
    // The stored answer is stale: the cache asks the backend again, which never answers.
    // The request timeout below the cache ends the attempt, and the cache answers with
    // what it has.
    let req = Request::get(proxy.url("/cacheable/0"))
        .header("x-test-hang", "1")
        .body(full(""))
        .unwrap();
    let res = client().request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let cache = res.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(
        cache.contains("fwd=stale") && cache.contains("detail=stale-if-error"),
        "{cache}"
    );
    assert_eq!(a.request_count(), 2);
    // A request for something never stored gets the 504.
    let req = Request::get(proxy.url("/cacheable/5"))
        .header("x-test-hang", "1")
        .body(full(""))
        .unwrap();
    assert_eq!(
        client().request(req).await.unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
}

/// Sends a GET for `path` through the proxy: status, headers, body.
async fn get_whole(proxy: &TestProxy, path: &str) -> (StatusCode, http::HeaderMap, String) {
    get_with(proxy, path, &[]).await
}

/// Sends a GET for `path` with `headers` through the proxy: status, headers, body.
async fn get_with(
    proxy: &TestProxy,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(proxy.url(path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = client().request(req.body(full("")).unwrap()).await;
    let (parts, body) = res.expect("the proxy answers").into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn a_304_updates_the_stored_headers_the_next_hit_shows() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let (_, first, _) = get_whole(&proxy, "/cacheable/versioned").await;
    assert_eq!(first["x-version"], "1");
    assert_eq!(first["cache-status"], "switchyard; fwd=uri-miss; stored");
    let (status, refreshed, body) = get_whole(&proxy, "/cacheable/versioned").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
    assert_eq!(refreshed["x-version"], "2");
    assert!(
        refreshed["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("switchyard; fwd=stale; fwd-status=304"),
        "{:?}",
        refreshed["cache-status"]
    );
    let (_, hit, body) = get_whole(&proxy, "/cacheable/versioned").await;
    assert_eq!(body, "a", "the stored body");
    assert_eq!(hit["x-version"], "2", "the 304's header");
    assert!(hit["cache-status"]
        .to_str()
        .unwrap()
        .starts_with("switchyard; hit"));
    assert_eq!(a.request_count(), 2);
}

#[tokio::test]
async fn a_targeted_field_overrides_cache_control_and_is_not_forwarded() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    for n in 0..3 {
        let (status, headers, body) = get_whole(&proxy, "/targeted").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "a"));
        assert_eq!(headers["cache-control"], "no-store", "passed on as it is");
        assert!(
            !headers.contains_key("cdn-cache-control"),
            "for this cache only"
        );
        if n > 0 {
            let cache = headers["cache-status"].to_str().unwrap();
            assert!(cache.starts_with("switchyard; hit; ttl="), "{cache}");
        }
    }
    assert_eq!(a.request_count(), 1);
}

/// Sends a GET for `path` with `Range: range` through the proxy: status, headers, body.
async fn get_range(
    proxy: &TestProxy,
    path: &str,
    range: &str,
) -> (StatusCode, http::HeaderMap, String) {
    get_with(proxy, path, &[("range", range)]).await
}

#[tokio::test]
async fn a_stale_part_stands_in_for_a_dead_backend_when_allowed() {
    let a = backend("a").await;
    let mut config = switchyard_tests::config();
    config.cache = Some(CacheConfig {
        stale_if_error: Duration::from_secs(60),
        ..CacheConfig::default()
    });
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    // max-age=0: the part is stale at once, kept because it may answer errors.
    let path = "/cacheable/ranged/stale";
    let (status, headers, body) = get_range(&proxy, path, "bytes=0-4").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "01234")
    );
    assert_eq!(headers["cache-status"], "switchyard; fwd=uri-miss; stored");
    a.kill();
    // Held: the part answers for the dead backend.
    let (status, headers, body) = get_range(&proxy, path, "bytes=1-3").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "123")
    );
    assert_eq!(headers["content-range"], "bytes 1-3/20");
    let cache = headers["cache-status"].to_str().unwrap();
    assert!(
        cache.contains("fwd=stale") && cache.contains("detail=stale-if-error"),
        "{cache}"
    );
    // Not held: the backend's failure.
    let (status, _, _) = get_range(&proxy, path, "bytes=10-12").await;
    assert!(status.is_server_error(), "{status}");
}

#[tokio::test]
async fn a_stale_part_answers_at_once_while_the_backend_revalidates_it() {
    // The part, stale at once; then a 304 to its revalidation, fresh for a minute; then
    // 503s, which no request should meet.
    let part = Step::status(206)
        .header("cache-control", "public, max-age=0")
        .header("etag", "\"r1\"")
        .header("content-type", "text/plain")
        .header("content-range", "bytes 0-4/20")
        .body("01234");
    let not_modified = Step::status(304)
        .header("cache-control", "public, max-age=60")
        .header("etag", "\"r1\"");
    let script = Script::new([part, not_modified, Step::status(503).forever()]);
    let fleet = Fleet::bind([("a", script)]).await;
    let mut config = switchyard_tests::config();
    config.cache = Some(CacheConfig {
        stale_while_revalidate: Duration::from_secs(60),
        ..CacheConfig::default()
    });
    let proxy = TestProxy::over(config, fleet.entries(Backend::new)).await;
    let path = "/ranged";
    let (status, headers, body) = get_range(&proxy, path, "bytes=0-4").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "01234")
    );
    assert_eq!(headers["cache-status"], "switchyard; fwd=uri-miss; stored");

    // Held and stale, within stale-while-revalidate: the part answers at once.
    let (status, headers, body) = get_range(&proxy, path, "bytes=1-3").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "123")
    );
    assert_eq!(headers["content-range"], "bytes 1-3/20");
    let cache = headers["cache-status"].to_str().unwrap();
    assert!(
        cache.starts_with("switchyard; hit;") && cache.ends_with("detail=stale-while-revalidate"),
        "{cache}"
    );
    // The backend then sees the revalidation: the range, with the part's validator; its
    // 304 refreshes the stored part (a second store, counted once it is in).
    let stats = || proxy.proxy.cache().unwrap().stats();
    for _ in 0..500 {
        if stats().stores == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = fleet["a"].requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].headers["if-none-match"], "\"r1\"");
    assert_eq!(seen[1].headers["range"], "bytes=1-3");
    assert_eq!((stats().stores, stats().not_modified), (2, 1));

    // Its 304 freshened the part: a plain hit, the backend not asked.
    let (status, headers, body) = get_range(&proxy, path, "bytes=0-2").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "012")
    );
    let cache = headers["cache-status"].to_str().unwrap();
    assert!(
        cache.starts_with("switchyard; hit; ttl=") && !cache.contains("detail"),
        "{cache}"
    );
    assert_eq!(fleet["a"].request_count(), 2);
}

#[tokio::test]
async fn ranges_from_the_backend_are_combined_and_served_from_the_cache() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let path = "/cacheable/ranged";
    let (status, headers, body) = get_range(&proxy, path, "bytes=0-4").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "01234")
    );
    assert_eq!(headers["content-range"], "bytes 0-4/20");
    assert_eq!(headers["cache-status"], "switchyard; fwd=uri-miss; stored");

    // Held: from the cache.
    let (status, headers, body) = get_range(&proxy, path, "bytes=1-3").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, "123")
    );
    assert_eq!(headers["content-range"], "bytes 1-3/20");
    assert_eq!(headers["content-length"], "3");
    let cache = headers["cache-status"].to_str().unwrap();
    assert!(cache.starts_with("switchyard; hit; ttl="), "{cache}");
    assert_eq!(a.request_count(), 1);

    // Not held: from the backend; the two parts make the whole representation.
    let (status, headers, body) = get_range(&proxy, path, "bytes=5-").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PARTIAL_CONTENT, &RANGED[5..])
    );
    assert_eq!(headers["cache-status"], "switchyard; fwd=partial; stored");
    assert_eq!(a.request_count(), 2);

    let (status, headers, body) = get_whole(&proxy, path).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, RANGED));
    assert_eq!(headers["content-length"], "20");
    assert!(!headers.contains_key("content-range"));
    let cache = headers["cache-status"].to_str().unwrap();
    assert!(cache.starts_with("switchyard; hit; ttl="), "{cache}");

    // Two ranges: multipart/byteranges, byte for byte.
    let (status, headers, body) = get_range(&proxy, path, "bytes=0-1,-2").await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    let content_type = headers["content-type"].to_str().unwrap();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap();
    let part = |range: &str, data: &str| {
        format!(
            "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: {range}\r\n\r\n{data}\r\n"
        )
    };
    let expected =
        part("bytes 0-1/20", "01") + &part("bytes 18-19/20", "ij") + &format!("--{boundary}--\r\n");
    assert_eq!(body, expected);
    assert_eq!(
        headers["content-length"],
        expected.len().to_string().as_str()
    );
    assert_eq!(a.request_count(), 2);
}
