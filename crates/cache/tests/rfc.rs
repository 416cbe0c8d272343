//! RFC 9111 / 9110 / 9213 corners: `Age` parsing, `304` updates, `Expires` formats,
//! targeted cache control, heuristic freshness, statuses, `Vary` normalisation and the
//! request's `no-store`, on paused time.

mod support;

use std::time::SystemTime;

use support::*;
use switchyard_cache::CacheConfig;
use tokio::time::advance;

/// A backend whose `/…` answers carry `headers` (the request count as body).
fn answering(headers: Vec<(&'static str, String)>) -> Backend {
    Backend::new(move |_req, n| {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        ok(&h, &format!("v{n}"))
    })
}

#[tokio::test(start_paused = true)]
async fn an_invalid_age_counts_as_absent_and_the_first_valid_one_counts() {
    for (age, reused) in [
        ("-7200", true),
        ("1.5", true),
        ("7200s", true),
        ("7200;a=1", true),
        ("abc, 10", true),
        ("0, 7200", true),
        ("7200, 0", false),
        ("7200\n0", false),
        ("0\n7200", true),
    ] {
        let mut h = vec![("cache-control", "max-age=3600".to_string())];
        for line in age.split('\n') {
            h.push(("age", line.to_string()));
        }
        let backend = answering(h);
        let svc = cache(CacheConfig::default(), &backend);
        send(&svc, get("/a")).await;
        advance(secs(1)).await;
        let second = send(&svc, get("/a")).await;
        assert_eq!(second.text() == "v0", reused, "Age: {age:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_304_updates_every_stored_field_it_carries() {
    let backend = Backend::new(|req, n| {
        if req.headers().contains_key("if-none-match") {
            return Ok(response(
                304,
                &[
                    ("etag", "\"v2\""),
                    ("cache-control", "max-age=100"),
                    ("content-encoding", "br"),
                    ("content-range", "bytes */2"),
                    ("content-md5", "new"),
                    ("content-length", "0"),
                    ("cdn-cache-control", "max-age=200"),
                    ("set-cookie", "s=1"),
                ],
                "",
            ));
        }
        ok(
            &[
                ("etag", "\"v1\""),
                ("cache-control", "max-age=10"),
                ("content-encoding", "gzip"),
                ("content-md5", "old"),
            ],
            &format!("b{n}"),
        )
    });
    let svc = stored_aged(CacheConfig::default(), &backend, 10).await;
    let refreshed = send(&svc, get("/a")).await;
    assert_eq!(
        refreshed.header("set-cookie"),
        Some("s=1"),
        "for this client"
    );
    advance(secs(150)).await;
    let hit = send(&svc, get("/a")).await;
    assert_eq!(
        hit.cache_status(),
        "switchyard; hit; ttl=50",
        "the 304's CDN-Cache-Control"
    );
    assert_eq!(hit.text(), "b0");
    assert_eq!(hit.header("etag"), Some("\"v2\""));
    assert_eq!(hit.header("content-encoding"), Some("br"));
    assert_eq!(hit.header("content-range"), Some("bytes */2"));
    assert_eq!(hit.header("content-md5"), Some("new"));
    assert_eq!(hit.header("content-length"), Some("2"), "the stored body's");
    assert_eq!(hit.header("set-cookie"), None, "never stored");
    assert_eq!(
        hit.header("cdn-cache-control"),
        None,
        "never sent to clients"
    );
    assert_eq!(backend.calls(), 2);
}

/// `at` as IMF-fixdate, RFC 850 and asctime dates.
fn three_formats(at: SystemTime) -> [String; 3] {
    let imf = httpdate::fmt_http_date(at); // "Sun, 06 Nov 1994 08:49:37 GMT"
    let p: Vec<&str> = imf.split([' ', ',']).filter(|s| !s.is_empty()).collect();
    let (wkday, day, mon, year, time) = (p[0], p[1], p[2], p[3], p[4]);
    let weekday = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    .into_iter()
    .find(|d| d.starts_with(wkday))
    .unwrap();
    let rfc850 = format!("{weekday}, {day}-{mon}-{} {time} GMT", &year[2..]);
    let asctime = format!(
        "{wkday} {mon} {:>2} {time} {year}",
        day.trim_start_matches('0')
    );
    [imf, rfc850, asctime]
}

#[tokio::test(start_paused = true)]
async fn expires_in_every_http_date_format() {
    let now = SystemTime::now();
    let mut cases: Vec<(String, Option<i64>)> = three_formats(now + secs(100))
        .into_iter()
        .map(|e| (e, Some(100)))
        .collect();
    cases.push(("Fri, 31 Dec 9999 23:59:59 GMT".into(), None));
    cases.push(("0".into(), Some(0)));
    cases.push(("garbage".into(), Some(0)));
    for (expires, ttl) in cases {
        let backend = answering(vec![
            ("date", http_date_from(now, 0)),
            ("expires", expires.clone()),
            ("etag", "\"e\"".to_string()),
        ]);
        let svc = cache(CacheConfig::default(), &backend);
        send(&svc, get("/a")).await;
        let second = send(&svc, get("/a")).await;
        match ttl {
            Some(0) => assert_eq!(backend.calls(), 2, "{expires}: already expired"),
            Some(ttl) => assert_eq!(
                second.cache_status(),
                format!("switchyard; hit; ttl={ttl}"),
                "{expires}"
            ),
            None => {
                assert!(second.cache_status().starts_with("switchyard; hit; ttl="));
                assert_eq!(backend.calls(), 1, "{expires}: far future");
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_targeted_field_overrides_cache_control_both_ways() {
    let backend = Backend::new(|req, n| match req.uri().path() {
        "/store" => ok(
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            &format!("v{n}"),
        ),
        "/nostore" => ok(
            &[
                ("cache-control", "max-age=60"),
                ("surrogate-control", "no-store"),
            ],
            &format!("v{n}"),
        ),
        _ => ok(
            &[
                ("cache-control", "max-age=5"),
                ("expires", "Fri, 31 Dec 9999 23:59:59 GMT"),
                ("surrogate-control", "max-age=30"),
                ("cdn-cache-control", "max-age=10"),
            ],
            &format!("v{n}"),
        ),
    });
    let svc = cache(CacheConfig::default(), &backend);
    let first = send(&svc, get("/store")).await;
    assert_eq!(first.header("cdn-cache-control"), None);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let hit = send(&svc, get("/store")).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=60");
    assert_eq!(hit.header("cdn-cache-control"), None);

    let first = send(&svc, get("/nostore")).await;
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss");
    assert_eq!(first.header("surrogate-control"), None);
    send(&svc, get("/nostore")).await;
    assert_eq!(backend.calls(), 3);

    // The first configured field wins; Expires does not count.
    send(&svc, get("/order")).await;
    let hit = send(&svc, get("/order")).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=10");
    assert_eq!(hit.header("surrogate-control"), None);

    // Configured away: Cache-Control rules, and the fields pass through.
    let config = CacheConfig {
        targeted_fields: vec![],
        ..CacheConfig::default()
    };
    let svc = cache(config, &backend);
    let res = send(&svc, get("/order")).await;
    assert_eq!(res.header("cdn-cache-control"), Some("max-age=10"));
    let hit = send(&svc, get("/order")).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=5");
}

#[tokio::test(start_paused = true)]
async fn heuristic_freshness_is_a_tenth_of_the_last_modified_age_capped() {
    let now = SystemTime::now();
    let date = http_date_from(now, 0);
    let backend = Backend::new(move |req, n| {
        let (status, modified) = match req.uri().path() {
            "/day" => (200, http_date_from(now, -1000)),
            "/old" => (404, http_date_from(now, -100 * 24 * 3600)),
            "/none" => (410, String::new()),
            _ => (302, http_date_from(now, -1000)),
        };
        let mut h = vec![("date", date.as_str())];
        if !modified.is_empty() {
            h.push(("last-modified", modified.as_str()));
        }
        Ok(response(status, &h, &format!("v{n}")))
    });
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, get("/day")).await;
    assert_eq!(
        send(&svc, get("/day")).await.cache_status(),
        "switchyard; hit; ttl=100"
    );
    send(&svc, get("/old")).await;
    assert_eq!(
        send(&svc, get("/old")).await.cache_status(),
        "switchyard; hit; ttl=86400"
    );
    send(&svc, get("/none")).await;
    assert_eq!(
        send(&svc, get("/none")).await.cache_status(),
        "switchyard; hit; ttl=300"
    );
    // 302 is not heuristically cacheable: not stored without explicit freshness.
    send(&svc, get("/redirect")).await;
    send(&svc, get("/redirect")).await;
    assert_eq!(backend.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn any_status_with_explicit_freshness_is_stored() {
    for status in [302, 307, 400, 403, 500, 503] {
        let backend = Backend::new(move |_, n| {
            Ok(response(
                status,
                &[("cache-control", "max-age=60")],
                &format!("v{n}"),
            ))
        });
        let svc = cache(CacheConfig::default(), &backend);
        send(&svc, get("/a")).await;
        let hit = send(&svc, get("/a")).await;
        assert_eq!(hit.status, status, "{status}");
        assert_eq!(hit.cache_status(), "switchyard; hit; ttl=60", "{status}");
        // Without explicit freshness it is not.
        let backend = Backend::new(move |_, n| Ok(response(status, &[], &format!("v{n}"))));
        let svc = cache(CacheConfig::default(), &backend);
        send(&svc, get("/a")).await;
        send(&svc, get("/a")).await;
        assert_eq!(backend.calls(), 2, "{status}");
    }
}

#[tokio::test(start_paused = true)]
async fn vary_matches_normalised_values() {
    let req =
        |lang: &str, ua: &str| request("GET", "/a", &[("accept-language", lang), ("x-ua", ua)]);
    let backend = answering(vec![
        ("cache-control", "max-age=60".into()),
        ("vary", "accept-language, x-ua".into()),
    ]);
    let svc = cache(CacheConfig::default(), &backend);
    send(&svc, req("en-US, fr", "a  b")).await;
    let hit = send(&svc, req("fr,en-us", "a b")).await;
    assert_eq!(hit.text(), "v0");
    let miss = send(&svc, req("fr", "a b")).await;
    assert_eq!(miss.text(), "v1");
    let miss = send(&svc, req("en-US, fr", "A b")).await;
    assert_eq!(miss.text(), "v2", "other fields keep their case");
}

#[tokio::test(start_paused = true)]
async fn pragma_and_request_no_store() {
    let backend = answering(vec![
        ("cache-control", "max-age=10".into()),
        ("etag", "\"e\"".into()),
    ]);
    let svc = cache(CacheConfig::default(), &backend);
    // A request's no-store: answered from the cache, but nothing of it stored.
    let first = send(&svc, request("GET", "/a", &[("cache-control", "no-store")])).await;
    assert_eq!(first.cache_status(), "switchyard; fwd=uri-miss");
    send(&svc, get("/a")).await;
    let hit = send(&svc, request("GET", "/a", &[("cache-control", "no-store")])).await;
    assert_eq!(hit.cache_status(), "switchyard; hit; ttl=10");
    // Pragma: no-cache without Cache-Control goes upstream; with it, it is ignored.
    send(&svc, request("GET", "/a", &[("pragma", "no-cache")])).await;
    assert_eq!(backend.calls(), 3);
    let hit = send(
        &svc,
        request(
            "GET",
            "/a",
            &[("pragma", "no-cache"), ("cache-control", "max-stale")],
        ),
    )
    .await;
    assert!(hit.cache_status().starts_with("switchyard; hit"));
    assert_eq!(backend.calls(), 3);
}
