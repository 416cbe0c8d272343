//! The shared cache tier: two proxies over one real `redis-server`, started by the test
//! on a free loopback port (`tests/redis/setup.sh` installs Debian's package when it is
//! missing) and killed by PID at the end. A response fetched through one proxy is a hit
//! through the other, invalidations reach both, a cold key is fetched about once for the
//! fleet, ranges are answered from what the tier holds but a `206` is never written to
//! it, `Vary` holds across instances, and Redis going away fails no request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use http::{Request, StatusCode};
use switchyard::{Backend, CacheConfig, CacheStats, SharedConfig, SharedStats};
use switchyard_tests::redis::{RedisServer, Relay};
use switchyard_tests::{client, full, send_reading, serve_on_loopback, TestProxy};
use tokio::time::Instant;

/// The host every request names, as a load balancer in front of a fleet passes it on: the
/// cache keys on it, so both proxies key a path alike.
const HOST: &str = "shop.test";

/// The origin's answer's freshness.
const FRESH: [(&str, &str); 1] = [("cache-control", "public, max-age=60")];

/// The origin: counts requests per path. `/item/{name}` is fresh for a minute (whatever
/// the `Range`), `/slow/{name}` too after 200 ms, `/partial` is a `206`, `/lang` varies on
/// `Accept-Language`.
#[derive(Clone, Default)]
struct Origin {
    seen: Arc<std::sync::RwLock<HashMap<String, Arc<AtomicUsize>>>>,
}

impl Origin {
    fn count(&self, path: &str) {
        let hit = self.seen.read().unwrap().get(path).cloned();
        let counter = hit.unwrap_or_else(|| {
            let mut seen = self.seen.write().unwrap();
            seen.entry(path.to_owned()).or_default().clone()
        });
        counter.fetch_add(1, Ordering::SeqCst);
    }

    fn requests(&self, path: &str) -> usize {
        let seen = self.seen.read().unwrap();
        seen.get(path).map_or(0, |c| c.load(Ordering::SeqCst))
    }

    async fn start() -> (Self, Backend) {
        let origin = Self::default();
        let app = Router::new()
            .route(
                "/item/{name}",
                get(
                    |State(o): State<Origin>, UrlPath(name): UrlPath<String>| async move {
                        o.count(&format!("/item/{name}"));
                        (FRESH, format!("item {name}"))
                    },
                )
                .post(
                    |State(o): State<Origin>, UrlPath(name): UrlPath<String>| async move {
                        o.count(&format!("POST /item/{name}"));
                        "updated"
                    },
                ),
            )
            .route(
                "/slow/{name}",
                get(
                    |State(o): State<Origin>, UrlPath(name): UrlPath<String>| async move {
                        o.count(&format!("/slow/{name}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        (FRESH, format!("slow {name}"))
                    },
                ),
            )
            .route(
                "/partial",
                get(|State(o): State<Origin>| async move {
                    o.count("/partial");
                    let head = [
                        ("cache-control", "public, max-age=60"),
                        ("content-range", "bytes 0-1/10"),
                    ];
                    (StatusCode::PARTIAL_CONTENT, head, "01")
                }),
            )
            .route(
                "/lang",
                get(|State(o): State<Origin>, headers: HeaderMap| async move {
                    o.count("/lang");
                    let lang = headers
                        .get("accept-language")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    let head = [
                        ("cache-control", "public, max-age=60"),
                        ("vary", "Accept-Language"),
                    ];
                    (head, format!("hello in {lang}")).into_response()
                }),
            )
            .with_state(origin.clone());
        let addr: SocketAddr = serve_on_loopback(|listener| async move {
            axum::serve(listener, app).await.unwrap();
        })
        .await;
        let backend = Backend {
            id: "origin".into(),
            ..format!("http://{addr}").parse().unwrap()
        };
        (origin, backend)
    }
}

/// A proxy over `origin` with a shared tier on `redis`, once its tier is connected and
/// subscribed.
async fn proxy(origin: &Backend, redis: &RedisServer, shared: SharedConfig) -> TestProxy {
    proxy_at(origin, redis.url(), shared).await
}

/// The same with Redis at `url`.
async fn proxy_at(origin: &Backend, url: String, shared: SharedConfig) -> TestProxy {
    let mut config = switchyard_tests::config();
    config.cache = Some(CacheConfig {
        shared: Some(SharedConfig { url, ..shared }),
        ..CacheConfig::default()
    });
    let proxy = TestProxy::over(config, [origin.clone()]).await;
    wait_for(&proxy, "the tier to connect and subscribe", |s| {
        s.connected && s.subscribed
    })
    .await;
    proxy
}

/// Redis, the origin, and two proxies over the origin sharing a tier on that Redis.
async fn two_instances(shared: SharedConfig) -> (RedisServer, Origin, TestProxy, TestProxy) {
    let redis = RedisServer::start().await;
    let (origin, backend) = Origin::start().await;
    let one = proxy(&backend, &redis, shared.clone()).await;
    let two = proxy(&backend, &redis, shared).await;
    (redis, origin, one, two)
}

/// The settings of the tests but the outage's: a generous timeout, a slow machine under a
/// parallel test run must not open the breaker.
fn patient() -> SharedConfig {
    SharedConfig {
        timeout: Duration::from_millis(500),
        ..SharedConfig::default()
    }
}

fn shared_stats(proxy: &TestProxy) -> SharedStats {
    cache_stats(proxy).shared.expect("a shared tier")
}

fn cache_stats(proxy: &TestProxy) -> CacheStats {
    proxy.proxy.cache().expect("a cache").stats()
}

/// Waits (up to 10 s) until `ready` holds of `proxy`'s shared tier.
async fn wait_for(proxy: &TestProxy, what: &str, ready: impl Fn(&SharedStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready(&shared_stats(proxy)) {
        assert!(
            Instant::now() < deadline,
            "waited for {what}: {:?}",
            shared_stats(proxy)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `method path` through `proxy`, returning status, `Cache-Status` and body.
async fn fetch(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("host", HOST);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send_reading(&client(), req.body(full("")).unwrap(), "cache-status").await
}

async fn get_ok(proxy: &TestProxy, path: &str) -> (String, String) {
    let (status, cache, body) = fetch(proxy, "GET", path, &[]).await;
    assert_eq!(status, StatusCode::OK, "{path}: {cache}");
    (cache, body)
}

#[tokio::test]
async fn a_response_fetched_through_one_instance_is_a_hit_through_the_other() {
    let (_redis, origin, one, two) = two_instances(patient()).await;

    let (cache, body) = get_ok(&one, "/item/a").await;
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("switchyard; fwd=uri-miss; stored", "item a")
    );
    wait_for(&one, "the write to Redis", |s| s.writes == 1).await;

    let (cache, body) = get_ok(&two, "/item/a").await;
    assert!(
        cache.starts_with("switchyard; hit") && cache.ends_with("detail=shared"),
        "{cache}"
    );
    assert_eq!(body, "item a");
    // Kept in the second instance's own store: the next hit does not ask Redis.
    let (cache, _) = get_ok(&two, "/item/a").await;
    assert!(
        cache.starts_with("switchyard; hit") && !cache.contains("shared"),
        "{cache}"
    );
    assert_eq!(origin.requests("/item/a"), 1, "the origin saw one request");
    assert_eq!(shared_stats(&two).hits, 1);
    assert_eq!(cache_stats(&two).hits, 2);
    let text = two.proxy.encode_metrics(switchyard::TextFormat::Prometheus);
    assert!(
        text.contains("switchyard_cache_shared_hits_total 1"),
        "{text}"
    );
    assert!(text.contains("switchyard_cache_shared_up 1"), "{text}");
}

/// Once the invalidation reached `proxy`, `path` is a miss there again: the origin sees its
/// second request.
async fn dropped_on(proxy: &TestProxy, origin: &Origin, path: &str) {
    wait_for(proxy, "the invalidation to arrive", |s| {
        s.invalidations_received == 1
    })
    .await;
    let (cache, _) = get_ok(proxy, path).await;
    assert_eq!(cache, "switchyard; fwd=uri-miss; stored");
    assert_eq!(origin.requests(path), 2);
}

/// Stores `path` on both: fetched through one, found in Redis through the other.
async fn fill(one: &TestProxy, two: &TestProxy, path: &str) {
    let writes = shared_stats(one).writes;
    get_ok(one, path).await;
    wait_for(one, "the write", |s| s.writes > writes).await;
    assert!(get_ok(two, path).await.0.contains("hit"));
    assert!(get_ok(one, path).await.0.contains("hit"));
}

#[tokio::test]
async fn a_purge_or_a_post_through_one_instance_drops_the_response_on_both() {
    let (_redis, origin, one, two) = two_instances(patient()).await;

    fill(&one, &two, "/item/p").await;
    assert_eq!(origin.requests("/item/p"), 1);

    // A purge through the first.
    let uri = format!("http://{HOST}/item/p").parse().unwrap();
    assert!(one.proxy.cache().unwrap().purge(&uri));
    dropped_on(&two, &origin, "/item/p").await;

    // A POST through the second.
    fill(&one, &two, "/item/q").await;
    let (status, _, body) = fetch(&two, "POST", "/item/q", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "updated"));
    dropped_on(&one, &origin, "/item/q").await;
}

#[tokio::test]
async fn an_invalidation_redis_missed_reaches_the_fleet_when_it_answers_again() {
    let redis = RedisServer::start().await;
    let mut relay = Relay::start(redis.addr()).await;
    let (origin, backend) = Origin::start().await;
    // The first instance reaches Redis through a relay that is cut for a while.
    let one = proxy_at(&backend, relay.url(), patient()).await;
    let two = proxy(&backend, &redis, patient()).await;
    fill(&one, &two, "/item/p").await;

    relay.cut().await;
    let uri = format!("http://{HOST}/item/p").parse().unwrap();
    assert!(one.proxy.cache().unwrap().purge(&uri));
    wait_for(&one, "the invalidation to wait for Redis", |s| {
        s.invalidations_pending == 1
    })
    .await;
    // Cut off, the second instance cannot know yet.
    assert!(get_ok(&two, "/item/p").await.0.contains("hit"));

    relay.restore().await;
    wait_for(&one, "the invalidation to be sent", |s| {
        s.invalidations_pending == 0
    })
    .await;
    dropped_on(&two, &origin, "/item/p").await;
}

#[tokio::test]
async fn an_instance_that_lost_its_subscription_drops_its_local_copies() {
    let mut redis = RedisServer::start().await;
    let (origin, backend) = Origin::start().await;
    let one = proxy(&backend, &redis, patient()).await;
    let two = proxy(&backend, &redis, patient()).await;
    fill(&one, &two, "/item/r").await;

    // Redis crashes; a POST through the first invalidates while it is down.
    redis.kill();
    let (status, _, _) = fetch(&one, "POST", "/item/r", &[]).await;
    assert_eq!(status, StatusCode::OK);
    redis.restart().await;
    // The second subscribes again and, having maybe missed messages, drops what it has.
    wait_for(&two, "the second to subscribe again", |s| {
        s.subscribed && s.resubscribe_clears == 1
    })
    .await;
    wait_for(&one, "the kept invalidation to be sent", |s| {
        s.invalidations_pending == 0
    })
    .await;
    let (cache, body) = get_ok(&two, "/item/r").await;
    assert_eq!(
        (cache.as_str(), body.as_str()),
        ("switchyard; fwd=uri-miss; stored", "item r")
    );
    assert_eq!(origin.requests("/item/r"), 2);
}

#[tokio::test]
async fn forty_concurrent_requests_for_a_cold_key_over_both_reach_the_origin_at_most_twice() {
    let (_redis, origin, one, two) = two_instances(patient()).await;
    let (one, two) = (Arc::new(one), Arc::new(two));
    let requests = (0..40).map(|i| {
        let proxy = if i % 2 == 0 { one.clone() } else { two.clone() };
        tokio::spawn(async move { get_ok(&proxy, "/slow/cold").await })
    });
    for answer in futures::future::join_all(requests).await {
        assert_eq!(answer.unwrap().1, "slow cold");
    }
    let n = origin.requests("/slow/cold");
    assert!((1..=2).contains(&n), "the origin saw {n} requests");
}

#[tokio::test]
async fn ranges_are_answered_from_the_tier_and_a_206_is_never_written_to_it() {
    let redis = RedisServer::start().await;
    let (origin, backend) = Origin::start().await;
    let one = proxy(&backend, &redis, patient()).await;
    let two = proxy(&backend, &redis, patient()).await;
    let range = |r| [("range", r)];

    // The origin ignores the range: its 200 is stored, in Redis too.
    let (status, _, body) = fetch(&one, "GET", "/item/r", &range("bytes=0-3")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "item r"));
    wait_for(&one, "the write to Redis", |s| s.writes == 1).await;
    let (status, cache, body) = fetch(&two, "GET", "/item/r", &range("bytes=-1")).await;
    assert_eq!((status, body.as_str()), (StatusCode::PARTIAL_CONTENT, "r"));
    assert!(cache.ends_with("detail=shared"), "{cache}");
    assert_eq!(origin.requests("/item/r"), 1);

    // A partial response is passed on, and stored nowhere.
    for proxy in [&one, &two] {
        let (status, cache, body) = fetch(proxy, "GET", "/partial", &range("bytes=0-1")).await;
        assert_eq!((status, body.as_str()), (StatusCode::PARTIAL_CONTENT, "01"));
        assert_eq!(cache, "switchyard; fwd=uri-miss");
    }
    assert_eq!(origin.requests("/partial"), 2);
    assert_eq!(shared_stats(&one).writes + shared_stats(&two).writes, 1);
}

#[tokio::test]
async fn vary_holds_across_instances() {
    let (_redis, origin, one, two) = two_instances(patient()).await;
    let lang = |l| [("accept-language", l)];

    let (_, _, body) = fetch(&one, "GET", "/lang", &lang("fr")).await;
    assert_eq!(body, "hello in fr");
    wait_for(&one, "the write", |s| s.writes == 1).await;
    // Stored through the first for French: not an answer for English through the second.
    let (_, cache, body) = fetch(&two, "GET", "/lang", &lang("en")).await;
    assert_eq!(body, "hello in en");
    assert!(
        cache.contains("fwd=") && cache.contains("stored"),
        "{cache}"
    );
    assert_eq!(origin.requests("/lang"), 2);
    wait_for(&two, "the write", |s| s.writes == 1).await;
    // Each instance now finds both languages.
    let (_, cache, body) = fetch(&two, "GET", "/lang", &lang("fr")).await;
    assert_eq!(body, "hello in fr");
    assert!(cache.contains("hit"), "{cache}");
    let (_, cache, body) = fetch(&one, "GET", "/lang", &lang("en")).await;
    assert_eq!(body, "hello in en");
    assert!(cache.contains("hit") && cache.contains("shared"), "{cache}");
    assert_eq!(origin.requests("/lang"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_fails_no_request_and_the_tier_comes_back_by_itself() {
    let timeout = Duration::from_millis(50);
    let outage = SharedConfig {
        timeout,
        failure_threshold: 3,
        open_for: Duration::from_millis(200),
        ..SharedConfig::default()
    };
    let (mut redis, origin, one, two) = two_instances(outage).await;
    let (one, two) = (Arc::new(one), Arc::new(two));

    // Clients over both instances, each asking for new and known keys, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let proxy = if c % 2 == 0 { one.clone() } else { two.clone() };
            let (stop, sent) = (stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut failed = 0;
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let path = format!("/item/{}", i % 50);
                    let started = Instant::now();
                    let (status, _, _) = fetch(&proxy, "GET", &path, &[]).await;
                    failed += usize::from(status != StatusCode::OK);
                    slowest = slowest.max(started.elapsed());
                    sent.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (failed, slowest)
            })
        })
        .collect();
    let sent_by = |n| {
        let sent = sent.clone();
        async move {
            while sent.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    sent_by(100).await;
    redis.kill();
    sent_by(sent.load(Ordering::Relaxed) + 200).await;
    let errors = shared_stats(&one).errors + shared_stats(&two).errors;
    assert!(errors > 0, "the tier noticed the outage");
    redis.restart().await;
    wait_for(&one, "the tier to come back", |s| {
        s.connected && s.subscribed
    })
    .await;
    wait_for(&two, "the tier to come back", |s| {
        s.connected && s.subscribed
    })
    .await;
    sent_by(sent.load(Ordering::Relaxed) + 100).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let (failed, slowest) = client.await.unwrap();
        assert_eq!(failed, 0, "no request failed");
        assert!(
            slowest < timeout * 6,
            "no request was slower than a few Redis timeouts: {slowest:?}"
        );
    }

    // Back: a new response through one is a shared hit through the other.
    let writes = shared_stats(&one).writes;
    get_ok(&one, "/item/after").await;
    wait_for(&one, "a write after the restart", |s| s.writes > writes).await;
    let (cache, _) = get_ok(&two, "/item/after").await;
    assert!(cache.ends_with("detail=shared"), "{cache}");
    assert_eq!(origin.requests("/item/after"), 1);
}
