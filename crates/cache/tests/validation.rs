//! Revalidation (RFC 9111 §4.3) and serving stale responses when the upstream fails
//! (RFC 5861 `stale-if-error`), on paused time.

mod support;

use support::*;
use switchyard_cache::CacheConfig;
use tokio::time::advance;

/// Answers 200 with `etag` and `max-age=10` at first, then 304 with `max-age=100` and a new
/// `x-version` to requests whose `If-None-Match` matches.
fn etag_backend() -> Backend {
    Backend::new(|req, n| {
        if req
            .headers()
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            return Ok(response(
                304,
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=100"),
                    ("x-version", "2"),
                    ("content-length", "0"),
                    ("set-cookie", "seen=1"),
                ],
                "",
            ));
        }
        ok(
            &[
                ("etag", "\"v1\""),
                ("cache-control", "max-age=10"),
                ("x-version", "1"),
            ],
            &format!("body{n}"),
        )
    })
}

#[tokio::test(start_paused = true)]
async fn not_modified_refreshes_the_stored_headers() {
    let backend = etag_backend();
    let svc = stored_aged(CacheConfig::default(), &backend, 10).await;

    let res = send(&svc, get("/a")).await;
    assert_eq!(backend.headers(1)["if-none-match"], "\"v1\"");
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "body0", "the stored body");
    assert_eq!(res.header("x-version"), Some("2"), "headers from the 304");
    assert_eq!(res.header("content-length"), Some("5"), "not the 304's");
    assert_eq!(
        res.header("set-cookie"),
        Some("seen=1"),
        "the 304's cookie, for this client"
    );
    assert_eq!(
        res.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=100"
    );
    assert_eq!(res.age(), Some(0));

    // Fresh again for the 304's max-age, with its headers and without its cookie.
    advance(secs(50)).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=50");
    assert_eq!(hit.header("x-version"), Some("2"));
    assert_eq!(hit.header("set-cookie"), None);
    assert_eq!(backend.calls(), 2);
    let stats = svc.handle().stats();
    assert_eq!((stats.revalidations, stats.not_modified), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn last_modified_is_revalidated_with_if_modified_since() {
    let last_modified = http_date(-3600);
    let backend = Backend::new(move |req, n| {
        if req.headers().get("if-modified-since").is_some() {
            return Ok(response(304, &[], ""));
        }
        ok(
            &[
                ("last-modified", &last_modified),
                ("cache-control", "max-age=10"),
            ],
            &format!("v{n}"),
        )
    });
    let svc = cache(CacheConfig::default(), &backend);
    let first = send(&svc, get("/a")).await;
    advance(secs(11)).await;
    let res = send(&svc, get("/a")).await;
    assert_eq!(
        backend.headers(1)["if-modified-since"],
        first.header("last-modified").unwrap()
    );
    assert_eq!(res.text(), "v0");
    assert_eq!(
        res.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=10"
    );
}

#[tokio::test(start_paused = true)]
async fn response_no_cache_is_revalidated_every_time() {
    let backend = Backend::new(|req, n| {
        if req.headers().contains_key("if-none-match") {
            return Ok(response(304, &[], ""));
        }
        ok(
            &[("etag", "\"x\""), ("cache-control", "no-cache")],
            &format!("v{n}"),
        )
    });
    let svc = cache(CacheConfig::default(), &backend);
    assert_eq!(
        send(&svc, get("/a")).await.cache_status(),
        "switchyard; fwd=uri-miss; stored"
    );
    for n in 1..=2 {
        let res = send(&svc, get("/a")).await;
        assert_eq!(res.text(), "v0");
        assert_eq!(
            res.cache_status(),
            "switchyard; fwd=stale; fwd-status=304; ttl=300"
        );
        assert_eq!(backend.headers(n)["if-none-match"], "\"x\"");
    }
}

#[tokio::test(start_paused = true)]
async fn a_changed_response_replaces_the_stored_one() {
    let backend = Backend::new(|_, n| {
        let etag = format!("\"{n}\"");
        ok(
            &[("etag", &etag), ("cache-control", "max-age=10")],
            &format!("v{n}"),
        )
    });
    let svc = stored_aged(CacheConfig::default(), &backend, 10).await;
    let res = send(&svc, get("/a")).await;
    assert_eq!(res.cache_status(), "switchyard; fwd=stale; stored");
    assert_eq!(res.text(), "v1");
    assert_eq!(send(&svc, get("/a")).await.text(), "v1");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn client_validators_get_304_from_a_fresh_response() {
    let last_modified = http_date(-3600);
    let lm = last_modified.clone();
    let backend = Backend::new(move |_, _| {
        ok(
            &[
                ("etag", "W/\"e1\""),
                ("last-modified", &lm),
                ("cache-control", "max-age=60"),
            ],
            "body",
        )
    });
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/a")).await;

    let res = send(
        &svc,
        request("GET", "/a", &[("if-none-match", "\"e0\", \"e1\"")]),
    )
    .await;
    assert_eq!(res.status, 304);
    assert!(res.body.is_empty());
    assert_eq!(res.header("etag"), Some("W/\"e1\""));
    assert_eq!(res.cache_status(), "switchyard; hit; ttl=60");

    let res = send(
        &svc,
        request("GET", "/a", &[("if-modified-since", &last_modified)]),
    )
    .await;
    assert_eq!(res.status, 304);

    let res = send(&svc, request("GET", "/a", &[("if-none-match", "\"e2\"")])).await;
    assert_eq!((res.status.as_u16(), res.text()), (200, "body"));
    let earlier = http_date(-7200);
    let res = send(
        &svc,
        request("GET", "/a", &[("if-modified-since", &earlier)]),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(backend.calls(), 1);
}

/// Fresh for 10 s with the given extra directives; then fails as `failure` says.
fn failing_after_first(cc: &'static str, failure: u16) -> Backend {
    Backend::new(move |_, n| match (n, failure) {
        (0, _) => ok(&[("cache-control", cc)], "stale body"),
        (_, 0) => Err("connection refused".into()),
        (_, status) => Ok(response(status, &[], "upstream error page")),
    })
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_when_the_upstream_fails() {
    for (failure, status) in [
        (0, "switchyard; fwd=stale; ttl=-10; detail=stale-if-error"),
        (
            503,
            "switchyard; fwd=stale; fwd-status=503; ttl=-10; detail=stale-if-error",
        ),
        (
            500,
            "switchyard; fwd=stale; fwd-status=500; ttl=-10; detail=stale-if-error",
        ),
    ] {
        let backend = failing_after_first("max-age=10, stale-if-error=60", failure);
        let svc = cache(CacheConfig::default(), &backend);
        send(&svc, get("/a")).await;
        advance(secs(20)).await;
        let res = send(&svc, get("/a")).await;
        assert_eq!(
            (res.status.as_u16(), res.text()),
            (200, "stale body"),
            "{failure}"
        );
        assert_eq!(res.cache_status(), status);
        assert_eq!(res.age(), Some(20));
        assert_eq!(svc.handle().stats().stale_served, 1);

        // Past the window, the failure itself.
        advance(secs(60)).await;
        let res = try_send(&svc, get("/a")).await;
        match failure {
            0 => assert!(res.is_err()),
            s => assert_eq!(res.unwrap().status, s),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_stale_if_error_the_failure_is_returned() {
    for cc in [
        "max-age=10",
        "max-age=10, stale-if-error=60, must-revalidate",
    ] {
        let backend = failing_after_first(cc, 503);
        let svc = cache(CacheConfig::default(), &backend);
        send(&svc, get("/a")).await;
        advance(secs(20)).await;
        let res = send(&svc, get("/a")).await;
        assert_eq!(res.status, 503, "{cc}");
        assert_eq!(res.text(), "upstream error page");
        assert_eq!(res.cache_status(), "switchyard; fwd=stale");

        let erroring = failing_after_first(cc, 0);
        let svc = cache(CacheConfig::default(), &erroring);
        send(&svc, get("/a")).await;
        advance(secs(20)).await;
        let err = try_send(&svc, get("/a")).await.unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
    }
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_default_comes_from_the_config() {
    let backend = failing_after_first("max-age=10", 502);
    let config = CacheConfig {
        stale_if_error: secs(60),
        ..CacheConfig::default()
    };
    let svc = stored_aged(config, &backend, 30).await;
    let res = send(&svc, get("/a")).await;
    assert_eq!(res.text(), "stale body");
    assert_eq!(
        res.cache_status(),
        "switchyard; fwd=stale; fwd-status=502; ttl=-20; detail=stale-if-error"
    );
}
