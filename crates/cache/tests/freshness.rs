//! What is stored, for how long, and which requests may use it (RFC 9111 §3, §4.2,
//! §5.2), on paused time.

mod support;

use std::time::SystemTime;

use support::*;
use switchyard_cache::CacheConfig;
use tokio::time::advance;

/// A backend answering every request with `headers` and the request count as body.
fn answering(headers: &'static [(&'static str, &'static str)]) -> Backend {
    Backend::new(move |_req, n| ok(headers, &format!("v{n}")))
}

#[tokio::test(start_paused = true)]
async fn fresh_within_max_age_with_age_then_stale() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = cache(CacheConfig::default(), &backend);

    let first = send(&svc, get("/a")).await;
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss; stored");
    assert_eq!(first.text(), "v0");

    advance(secs(30)).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=30");
    assert_eq!(hit.age(), Some(30));
    assert_eq!(hit.text(), "v0");
    assert_eq!(backend.calls(), 1);

    advance(secs(30)).await;
    let stale = send(&svc, get("/a")).await;
    assert_eq!(stale.cache_status(), "switchyard; fwd=stale; stored");
    assert_eq!(stale.text(), "v1");
    assert_eq!(backend.calls(), 2);
    let stats = svc.handle().stats();
    assert_eq!((stats.hits, stats.misses, stats.stores), (1, 2, 2));
}

#[tokio::test(start_paused = true)]
async fn age_counts_the_upstream_age_and_date() {
    let date = http_date(-20);
    let backend = Backend::new(move |req, _| match req.uri().path() {
        "/aged" => ok(&[("cache-control", "max-age=60"), ("age", "10")], "x"),
        _ => ok(&[("cache-control", "max-age=60"), ("date", &date)], "x"),
    });
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/aged")).await;
    send(&svc, get("/dated")).await;
    advance(secs(5)).await;
    assert_eq!(send(&svc, get("/aged")).await.age(), Some(15));
    let dated = send(&svc, get("/dated")).await;
    assert_eq!(
        dated.age(),
        Some(25),
        "apparent age 20 s from Date, then 5 s resident"
    );
    assert_eq!(dated.cache_status(), "switchyard; hit; ttl=35");

    // Aged past its lifetime by its Age alone.
    advance(secs(45)).await;
    send(&svc, get("/aged")).await;
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn s_maxage_wins_over_max_age() {
    let backend = answering(&[("cache-control", "max-age=10, s-maxage=100")]);
    let svc = stored_aged(CacheConfig::default(), &backend, 50).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=50");
    advance(secs(50)).await;
    send(&svc, get("/a")).await;
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn expires_relative_to_date() {
    let now = SystemTime::now();
    let (date, expires) = (http_date_from(now, 0), http_date_from(now, 60));
    let backend = Backend::new(move |req, n| match req.uri().path() {
        "/invalid" => ok(&[("expires", "0")], &format!("v{n}")),
        _ => ok(&[("date", &date), ("expires", &expires)], &format!("v{n}")),
    });
    let svc = stored_aged(CacheConfig::default(), &backend, 59).await;
    assert_eq!(send(&svc, get("/a")).await.text(), "v0");
    advance(secs(1)).await;
    assert_eq!(send(&svc, get("/a")).await.text(), "v1");

    // An invalid Expires is already expired, and overrides the heuristic.
    let first = send(&svc, get("/invalid")).await;
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss");
    send(&svc, get("/invalid")).await;
    assert_eq!(backend.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_is_the_configured_ttl() {
    let backend = answering(&[]);
    let config = CacheConfig {
        ttl: secs(10),
        ..CacheConfig::default()
    };
    let svc = stored_aged(config, &backend, 9).await;
    assert_eq!(
        send(&svc, get("/a")).await.cache_status(),
        "switchyard; hit; ttl=1"
    );
    advance(secs(1)).await;
    assert_eq!(send(&svc, get("/a")).await.text(), "v1");

    // A status that is not heuristically cacheable gets no heuristic.
    let redirect = Backend::new(|_, _| Ok(response(302, &[("location", "/b")], "")));
    let svc = cache(CacheConfig::default(), &redirect);
    send(&svc, get("/r")).await;
    send(&svc, get("/r")).await;
    assert_eq!(redirect.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn ttl_zero_stores_only_explicitly_fresh_responses() {
    let backend = Backend::new(|req, _| match req.uri().path() {
        "/explicit" => ok(&[("cache-control", "max-age=60")], "x"),
        _ => ok(&[("etag", "\"e\"")], "x"),
    });
    let config = CacheConfig {
        ttl: secs(0),
        ..CacheConfig::default()
    };
    let svc = cache(config, &backend);
    assert_eq!(
        send(&svc, get("/plain")).await.cache_status(),
        "switchyard; fwd=uri-miss"
    );
    send(&svc, get("/plain")).await;
    send(&svc, get("/explicit")).await;
    assert_eq!(
        send(&svc, get("/explicit")).await.cache_status(),
        "switchyard; hit; ttl=60"
    );
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn no_store_and_private_are_not_stored() {
    for cc in [
        "no-store",
        "private",
        "private=\"x-user\", max-age=60",
        "max-age=60, no-store",
    ] {
        let backend = Backend::new(move |_, _| ok(&[("cache-control", cc)], "x"));
        let svc = cache(CacheConfig::default(), &backend);
        let first = send(&svc, get("/a")).await;
        assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss", "{cc}");
        send(&svc, get("/a")).await;
        assert_eq!(backend.calls(), 2, "{cc}");
    }
}

#[tokio::test(start_paused = true)]
async fn request_no_store_is_not_stored() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = cache(CacheConfig::default(), &backend);
    let first = send(&svc, request("GET", "/a", &[("cache-control", "no-store")])).await;
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss");
    assert_eq!(
        send(&svc, get("/a")).await.cache_status(),
        "switchyard; fwd=uri-miss; stored"
    );
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn vary_keeps_one_variant_per_request_value() {
    let backend = Backend::new(|req, n| {
        let enc = req
            .headers()
            .get("accept-encoding")
            .map_or("none", |v| v.to_str().unwrap());
        ok(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
            &format!("{enc}-{n}"),
        )
    });
    let svc = cache(CacheConfig::default(), &backend);
    let gzip = || request("GET", "/a", &[("accept-encoding", "gzip")]);
    let br = || request("GET", "/a", &[("accept-encoding", "br")]);

    assert_eq!(
        send(&svc, gzip()).await.cache_status(),
        "switchyard; fwd=uri-miss; stored"
    );
    let hit = send(&svc, gzip()).await;
    assert_eq!(
        (hit.cache_status(), hit.text()),
        ("switchyard; hit; ttl=60", "gzip-0")
    );

    let other = send(&svc, br()).await;
    assert_eq!(other.cache_status(), "switchyard; fwd=vary-miss; stored");
    assert_eq!(other.text(), "br-1");
    let none = send(&svc, get("/a")).await;
    assert_eq!(none.cache_status(), "switchyard; fwd=vary-miss; stored");

    // All three variants are kept.
    assert_eq!(send(&svc, gzip()).await.text(), "gzip-0");
    assert_eq!(send(&svc, br()).await.text(), "br-1");
    assert_eq!(send(&svc, get("/a")).await.text(), "none-2");
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn vary_star_is_never_stored() {
    let backend = answering(&[("cache-control", "max-age=60"), ("vary", "*")]);
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/a")).await;
    assert_eq!(
        send(&svc, get("/a")).await.cache_status(),
        "switchyard; fwd=uri-miss"
    );
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn authorization_needs_the_response_to_allow_sharing() {
    let backend = Backend::new(|req, n| {
        let cc = match req.uri().path() {
            "/public" => "public, max-age=60",
            "/shared" => "s-maxage=60",
            "/revalidate" => "max-age=60, must-revalidate",
            _ => "max-age=60",
        };
        ok(&[("cache-control", cc)], &format!("v{n}"))
    });
    let svc = cache(CacheConfig::default(), &backend);
    let authed = |path| request("GET", path, &[("authorization", "Bearer alice")]);

    send(&svc, authed("/plain")).await;
    assert_eq!(
        send(&svc, authed("/plain")).await.text(),
        "v1",
        "not stored"
    );
    for path in ["/public", "/shared", "/revalidate"] {
        let first = send(&svc, authed(path)).await;
        assert_eq!(
            first.cache_status(),
            "switchyard; fwd=uri-miss; stored",
            "{path}"
        );
        assert!(send(&svc, authed(path))
            .await
            .cache_status()
            .starts_with("switchyard; hit"));
    }
    assert_eq!(backend.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn set_cookie_is_never_handed_to_another_client() {
    let backend = Backend::new(|req, n| {
        let cc = match req.uri().path() {
            "/public" => "public, max-age=60",
            _ => "max-age=60",
        };
        ok(
            &[("cache-control", cc), ("set-cookie", "session=alice")],
            &format!("v{n}"),
        )
    });
    let svc = cache(CacheConfig::default(), &backend);

    send(&svc, get("/private")).await;
    assert_eq!(send(&svc, get("/private")).await.text(), "v1", "not stored");

    let first = send(&svc, get("/public")).await;
    assert_eq!(
        first.header("set-cookie"),
        Some("session=alice"),
        "its own client gets it"
    );
    let hit = send(&svc, get("/public")).await;
    assert!(hit.cache_status().starts_with("switchyard; hit"));
    assert_eq!(hit.header("set-cookie"), None);
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_a_stored_get() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = cache(CacheConfig::default(), &backend);

    // A HEAD miss goes upstream as HEAD and is not stored.
    let head = send(&svc, request("HEAD", "/a", &[])).await;
    assert_eq!(head.cache_status(), "switchyard; fwd=uri-miss");
    assert_eq!(backend.method(0), "HEAD");
    send(&svc, get("/a")).await;
    assert_eq!(backend.calls(), 2);

    let head = send(&svc, request("HEAD", "/a", &[])).await;
    assert_eq!(head.cache_status(), "switchyard; hit; ttl=60");
    assert_eq!(head.header("content-length"), Some("2"));
    assert!(head.body.is_empty());
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn request_no_cache_and_pragma_go_upstream() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/a")).await;
    for h in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let res = send(&svc, request("GET", "/a", &[h])).await;
        assert_eq!(
            res.cache_status(),
            "switchyard; fwd=request; stored",
            "{h:?}"
        );
    }
    assert_eq!(backend.calls(), 3);
    assert_eq!(
        send(&svc, get("/a")).await.text(),
        "v2",
        "the newest response is stored"
    );
}

#[tokio::test(start_paused = true)]
async fn request_max_age_and_min_fresh() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = stored_aged(CacheConfig::default(), &backend, 30).await;

    let hit = send(
        &svc,
        request("GET", "/a", &[("cache-control", "max-age=40")]),
    )
    .await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=30");
    let hit = send(
        &svc,
        request("GET", "/a", &[("cache-control", "min-fresh=20")]),
    )
    .await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=30");
    assert_eq!(backend.calls(), 1);

    let res = send(
        &svc,
        request("GET", "/a", &[("cache-control", "min-fresh=40")]),
    )
    .await;
    assert_eq!(res.cache_status(), "switchyard; fwd=request; stored");
    advance(secs(20)).await;
    let res = send(
        &svc,
        request("GET", "/a", &[("cache-control", "max-age=10")]),
    )
    .await;
    assert_eq!(res.cache_status(), "switchyard; fwd=request; stored");
    assert_eq!(backend.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn request_max_stale_accepts_stale_unless_the_response_forbids_it() {
    let backend = Backend::new(|req, n| {
        let cc = match req.uri().path() {
            "/strict" => "max-age=10, must-revalidate",
            _ => "max-age=10",
        };
        ok(&[("cache-control", cc)], &format!("v{n}"))
    });
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/a")).await;
    send(&svc, get("/strict")).await;
    advance(secs(15)).await;

    let stale = send(
        &svc,
        request("GET", "/a", &[("cache-control", "max-stale=10")]),
    )
    .await;
    assert_eq!(
        stale.cache_status(),
        "switchyard; hit; ttl=-5; detail=max-stale"
    );
    assert_eq!(stale.text(), "v0");
    let any = send(
        &svc,
        request("GET", "/a", &[("cache-control", "max-stale")]),
    )
    .await;
    assert_eq!(any.text(), "v0");
    assert_eq!(backend.calls(), 2);

    let res = send(
        &svc,
        request("GET", "/a", &[("cache-control", "max-stale=2")]),
    )
    .await;
    assert_eq!(res.cache_status(), "switchyard; fwd=stale; stored");
    let res = send(
        &svc,
        request("GET", "/strict", &[("cache-control", "max-stale")]),
    )
    .await;
    assert_eq!(res.cache_status(), "switchyard; fwd=stale; stored");
    assert_eq!(backend.calls(), 4);
    assert_eq!(svc.handle().stats().stale_served, 2);
}

#[tokio::test(start_paused = true)]
async fn only_if_cached_answers_504_without_going_upstream() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = cache(CacheConfig::default(), &backend);
    let only = || request("GET", "/a", &[("cache-control", "only-if-cached")]);
    let miss = send(&svc, only()).await;
    assert_eq!(miss.status, 504);
    assert_eq!(miss.cache_status(), "switchyard; detail=only-if-cached");
    assert_eq!(backend.calls(), 0);

    send(&svc, get("/a")).await;
    let hit = send(&svc, only()).await;
    assert_eq!((hit.status.as_u16(), hit.text()), (200, "v0"));
    advance(secs(60)).await;
    assert_eq!(send(&svc, only()).await.status, 504, "stale is not usable");
    assert_eq!(backend.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn keys_take_the_host_and_ignore_the_method_and_backend() {
    let backend = answering(&[("cache-control", "max-age=60")]);
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/a?q=1")).await;
    // The same URL in absolute form.
    let abs = http::Request::get("http://EXAMPLE.com:80/a?q=1")
        .body(request("GET", "/", &[]).into_body())
        .unwrap();
    assert!(send(&svc, abs)
        .await
        .cache_status()
        .starts_with("switchyard; hit"));
    // Another host, another query: other URLs.
    let other = request("GET", "/a?q=1", &[]);
    let (mut parts, b) = other.into_parts();
    parts.headers.insert("host", "other.com".parse().unwrap());
    send(&svc, http::Request::from_parts(parts, b)).await;
    send(&svc, get("/a?q=2")).await;
    assert_eq!(backend.calls(), 3);
}

#[test]
fn config_reads_durations_and_sizes() {
    let config: CacheConfig = toml::from_str(
        "ttl = \"1m\"\nmax_size = 1048576\nstale_if_error = \"1h\"\ncoalesce_wait = \"250ms\"",
    )
    .unwrap();
    assert_eq!(config.ttl, secs(60));
    assert_eq!(config.max_size, 1 << 20);
    assert_eq!(config.stale_if_error, secs(3600));
    assert_eq!(config.coalesce_wait, std::time::Duration::from_millis(250));
    assert_eq!(
        config.max_object_size,
        CacheConfig::default().max_object_size
    );
    assert!(toml::from_str::<CacheConfig>("max_sise = 1").is_err());
}
