//! Request coalescing and stale-while-revalidate's background refresh, on paused time.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use http_body_util::BodyExt;
use support::*;
use switchyard_cache::CacheConfig;
use tokio::time::{advance, sleep};
use tower::{Layer, ServiceExt};

/// Sends `n` requests for `path` at once, each on its own task; their responses in order.
async fn concurrently(
    svc: &switchyard_cache::Cache<Backend>,
    path: &'static str,
    n: usize,
) -> Vec<Got> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(send(svc, get(path)))).collect();
    let mut got = Vec::with_capacity(n);
    for task in tasks {
        got.push(task.await.unwrap());
    }
    got
}

/// A backend answering `v0`, `v1`, … with `cache_control`, each after `delay`.
fn versions(cache_control: &'static str, delay: Duration) -> Backend {
    Backend::new(move |_, n| ok(&[("cache-control", cache_control)], &format!("v{n}")))
        .delayed(delay)
}

#[tokio::test(start_paused = true)]
async fn concurrent_misses_for_one_url_make_one_upstream_request() {
    let backend = versions("max-age=60", Duration::from_millis(100));
    let svc = cache(CacheConfig::default(), &backend);

    let got = concurrently(&svc, "/cold", 100).await;
    assert_eq!(backend.calls(), 1);
    assert!(got.iter().all(|g| g.status == 200 && g.text() == "v0"));
    let collapsed = got
        .iter()
        .filter(|g| g.cache_status() == "switchyard; fwd=uri-miss; ttl=60; collapsed")
        .count();
    assert_eq!(collapsed, 99);
    let stats = svc.handle().stats();
    assert_eq!((stats.misses, stats.coalesced, stats.hits), (1, 99, 99));
}

#[tokio::test(start_paused = true)]
async fn followers_of_an_uncacheable_response_go_upstream_themselves() {
    let backend = versions("no-store", Duration::from_millis(100));
    let svc = cache(CacheConfig::default(), &backend);

    let got = concurrently(&svc, "/private", 10).await;
    let bodies: HashSet<&str> = got.iter().map(Got::text).collect();
    assert_eq!(bodies.len(), 10, "each got its own response");
    assert_eq!(backend.calls(), 10);
    assert_eq!(svc.handle().stats().coalesced, 9);
    // They waited for the leader's response head only, not longer.
    assert_eq!(
        backend.arrived(1) - backend.arrived(0),
        Duration::from_millis(100)
    );
}

#[tokio::test(start_paused = true)]
async fn a_follower_waits_at_most_coalesce_wait() {
    let backend = versions("max-age=60", secs(10));
    let config = CacheConfig {
        coalesce_wait: secs(1),
        ..CacheConfig::default()
    };
    let svc = cache(config, &backend);
    let leader = tokio::spawn(send(&svc, get("/slow")));
    sleep(Duration::from_millis(1)).await;
    let follower = send(&svc, get("/slow")).await;
    assert_eq!(backend.calls(), 2);
    // It came 1 ms after the leader and waited 1 s.
    assert_eq!(
        backend.arrived(1) - backend.arrived(0),
        Duration::from_millis(1001)
    );
    assert_eq!(follower.cache_status(), "switchyard; fwd=uri-miss; stored");
    assert_eq!(leader.await.unwrap().text(), "v0");
}

#[tokio::test(start_paused = true)]
async fn requests_that_must_see_the_origin_are_not_coalesced() {
    let backend = versions("max-age=60", Duration::from_millis(100));
    let svc = cache(CacheConfig::default(), &backend);
    let leader = tokio::spawn(send(&svc, get("/a")));
    sleep(Duration::from_millis(1)).await;
    let res = send(&svc, request("GET", "/a", &[("cache-control", "no-cache")])).await;
    assert_eq!(
        backend.arrived(1) - backend.arrived(0),
        Duration::from_millis(1)
    );
    assert_eq!(res.text(), "v1");
    leader.await.unwrap();
    assert_eq!(svc.handle().stats().coalesced, 0);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_refreshes_once() {
    let backend = Backend::new(|_, n| {
        ok(
            &[("cache-control", "max-age=10, stale-while-revalidate=60")],
            &format!("v{n}"),
        )
    })
    .delayed(Duration::from_millis(100));
    let svc = stored_aged(CacheConfig::default(), &backend, 15).await;

    let stale = send(&svc, get("/a")).await;
    assert_eq!(stale.text(), "v0");
    assert_eq!(
        stale.cache_status(),
        "switchyard; hit; ttl=-5; detail=stale-while-revalidate"
    );
    sleep(Duration::from_millis(1)).await;
    assert_eq!(backend.calls(), 2, "the refresh went upstream");
    // A second stale request while the refresh is running starts no other.
    let again = send(&svc, get("/a")).await;
    assert_eq!(again.text(), "v0");

    sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.calls(), 2);
    let fresh = send(&svc, get("/a")).await;
    assert_eq!(fresh.text(), "v1");
    assert_eq!(fresh.cache_status(), "switchyard; hit; ttl=10");
    let stats = svc.handle().stats();
    assert_eq!((stats.stale_served, stats.hits, stats.stores), (2, 3, 2));
}

#[tokio::test(start_paused = true)]
async fn background_refresh_revalidates_and_the_default_window_applies() {
    let backend = Backend::new(|req, _| {
        if req.headers().contains_key("if-none-match") {
            return Ok(response(304, &[("cache-control", "max-age=30")], ""));
        }
        ok(
            &[("cache-control", "max-age=10"), ("etag", "\"e\"")],
            "body",
        )
    });
    let config = CacheConfig {
        stale_while_revalidate: secs(30),
        ..CacheConfig::default()
    };
    let svc = stored_aged(config, &backend, 20).await;
    let stale = send(&svc, get("/a")).await;
    assert!(stale
        .cache_status()
        .ends_with("detail=stale-while-revalidate"));
    sleep(Duration::from_millis(1)).await;
    assert_eq!(backend.headers(1)["if-none-match"], "\"e\"");
    let fresh = send(&svc, get("/a")).await;
    assert_eq!(fresh.cache_status(), "switchyard; hit; ttl=30");
    assert_eq!(fresh.text(), "body");

    // Beyond the window: revalidated in the foreground.
    advance(secs(61)).await;
    let res = send(&svc, get("/a")).await;
    assert_eq!(
        res.cache_status(),
        "switchyard; fwd=stale; fwd-status=304; ttl=30"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hit_does_not_wait_for_the_inner_service_to_be_ready() {
    let (mock, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let svc = switchyard_cache::CacheLayer::new(CacheConfig::default()).layer(mock);
    let call = |path: &str| svc.clone().oneshot(get(path));

    handle.allow(1);
    let first = tokio::spawn(call("/a"));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_response(response(200, &[("cache-control", "max-age=60")], "stored"));
    first
        .await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();

    // The inner service is not ready now: a hit is answered anyway, a miss waits.
    let mut miss = tokio::spawn(call("/b"));
    let hit = call("/a").await.unwrap();
    assert_eq!(hit.headers()["cache-status"], "switchyard; hit; ttl=60");
    assert!(tokio::time::timeout(secs(1), &mut miss).await.is_err());
    handle.allow(1);
    let (req, reply) = handle.next_request().await.unwrap();
    assert_eq!(req.uri(), "/b");
    reply.send_response(response(200, &[], "b"));
    assert_eq!(miss.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn fits_a_boxed_send_stack() {
    // As in switchyard's stack: a boxed, cloneable inner service, and the cache itself
    // boxed again (which needs its future to be `Send + 'static`).
    let backend = Backend::new(|_, n| ok(&[("cache-control", "max-age=60")], &format!("v{n}")));
    let inner = tower::util::BoxCloneService::new(backend.clone());
    let svc = tower::util::BoxCloneService::new(
        switchyard_cache::CacheLayer::new(CacheConfig::default()).layer(inner),
    );
    for _ in 0..2 {
        let res = tokio::spawn(svc.clone().oneshot(get("/a")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "v0");
    }
    assert_eq!(backend.calls(), 1);
}
