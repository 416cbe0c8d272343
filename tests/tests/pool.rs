//! The per-backend connection pool against real backends on loopback: the cap, reuse,
//! idle reaping, backends that close connections, wait timeouts, HTTP/2, typed connect
//! errors, and stats that match what the backend saw.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use switchyard::{Backend, ErrorKind};
use switchyard_pool::{
    ConnectError, ConnectErrorKind, Http1Engine, Pool, PoolConfig, PoolStats, PoolTimeout, Protocol,
};
use switchyard_server::ServerConfig;
use switchyard_tests::{
    backend, backend_with, client, get, BackendOptions, TestBackend, TestProxy,
};
use tower::ServiceExt;

type TestPool = Pool<Empty<Bytes>>;

fn pool(b: &TestBackend, config: PoolConfig) -> TestPool {
    Pool::new(b.addr.to_string().parse().unwrap(), config)
}

/// HTTP/2 (h2c), with at most `max_streams` streams on a connection.
fn http2(max_streams: usize) -> PoolConfig {
    PoolConfig {
        protocol: Protocol::Http2,
        h2_max_streams: max_streams,
        ..PoolConfig::default()
    }
}

/// A pool over `b` that closes connections idle for 90 s.
fn idle_for_90s(b: &TestBackend) -> TestPool {
    let idle_timeout = Duration::from_secs(90);
    pool(
        b,
        PoolConfig {
            idle_timeout,
            ..PoolConfig::default()
        },
    )
}

/// Sends a GET for `path` and reads the whole body; returns the status and the body.
async fn fetch(pool: &TestPool, path: &str) -> Result<(StatusCode, Bytes), switchyard::BoxError> {
    let req = Request::get(path).body(Empty::new()).unwrap();
    let res = pool.clone().oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Sends `n` GETs for `path` one after another, each answered 200; returns their bodies.
async fn fetch_ok(pool: &TestPool, path: &str, n: usize) -> Vec<Bytes> {
    let mut bodies = Vec::new();
    for _ in 0..n {
        let (status, body) = fetch(pool, path).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{path}");
        bodies.push(body);
    }
    bodies
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let a = backend("a").await;
    let pool = pool(&a, PoolConfig::default());
    for body in fetch_ok(&pool, "/", 10).await {
        assert_eq!(&body[..], b"a");
    }
    assert_eq!(a.accepted(), 1, "the backend saw more than one connection");
    let stats = pool.stats();
    assert_eq!(
        (
            stats.created,
            stats.reused,
            stats.open,
            stats.idle,
            stats.in_use
        ),
        (1, 9, 1, 1, 0)
    );
}

#[tokio::test]
async fn cap_bounds_connections_and_everyone_is_served() {
    let a = backend("a").await;
    let pool = pool(
        &a,
        PoolConfig {
            max_connections: 4,
            ..PoolConfig::default()
        },
    );
    let results = join_all((0..64).map(|_| fetch(&pool, "/delay/20"))).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok((StatusCode::OK, _)))),
        "{results:?}"
    );
    assert!(
        a.accepted() <= 4,
        "backend saw {} connections",
        a.accepted()
    );
    let stats = pool.stats();
    assert_eq!(stats.created as usize, a.accepted());
    assert_eq!(stats.reused, 64 - stats.created);
    assert_eq!(
        (stats.in_use, stats.waiting, stats.wait_timeouts),
        (0, 0, 0)
    );
}

/// New limits apply to a pool that has connections: a higher cap opens more at once, a
/// lower idle limit closes the idle ones beyond it at once, and a lower cap holds new
/// requests until fewer are in flight.
#[tokio::test]
async fn reconfigured_limits_apply_to_the_open_pool() {
    let a = backend("a").await;
    let limits = |max_connections, max_idle| PoolConfig {
        max_connections,
        max_idle,
        ..PoolConfig::default()
    };
    let pool = pool(&a, limits(2, 100));
    let burst = |n| join_all((0..n).map(|_| fetch(&pool, "/delay/20")));
    assert!(burst(16).await.iter().all(|r| r.is_ok()));
    assert_eq!((pool.stats().open, pool.stats().idle), (2, 2));

    pool.reconfigure(limits(8, 100));
    assert!(burst(16).await.iter().all(|r| r.is_ok()));
    assert_eq!((pool.stats().open, pool.stats().idle), (8, 8));
    assert_eq!(a.accepted(), 8);

    pool.reconfigure(limits(3, 3));
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle, stats.closed.evicted), (3, 3, 5));
    assert_eq!(a.wait_closed(5).await, 5, "the backend saw them close");
    assert!(burst(16).await.iter().all(|r| r.is_ok()));
    let stats = pool.stats();
    assert_eq!((stats.open, stats.created), (3, 8), "no new connection");
    assert_eq!(pool.config().max_connections, 3);
}

/// A new HTTP/1.1 engine drains the pool: its idle connections close at once, a request
/// in flight finishes on its connection, which then closes, and new requests get new
/// connections on the new engine, which are reused.
#[tokio::test]
async fn a_new_engine_drains_the_connections_made_before() {
    let a = backend("a").await;
    let engine = |http1| PoolConfig {
        http1,
        ..PoolConfig::default()
    };
    let pool = pool(&a, engine(Http1Engine::Native));
    let burst = |n| join_all((0..n).map(|_| fetch(&pool, "/delay/20")));
    assert!(burst(3).await.iter().all(|r| r.is_ok()));
    let slow = tokio::spawn({
        let pool = pool.clone();
        async move { fetch(&pool, "/delay/300").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((pool.stats().open, pool.stats().idle), (3, 2));

    pool.reconfigure(engine(Http1Engine::Hyper));
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle, stats.closed.evicted), (1, 0, 2));
    assert_eq!(
        a.wait_closed(2).await,
        2,
        "the backend saw the idle ones close"
    );
    fetch_ok(&pool, "/", 2).await;
    assert_eq!(a.accepted(), 4, "one new connection, reused");
    assert_eq!(
        slow.await.unwrap().unwrap().0,
        StatusCode::OK,
        "in flight, finished"
    );
    let stats = pool.stats();
    assert_eq!((stats.open, stats.idle, stats.closed.evicted), (1, 1, 3));
    assert_eq!(pool.config().http1, Http1Engine::Hyper);
}

#[tokio::test]
async fn waiting_past_the_timeout_is_a_pool_timeout() {
    let a = backend("a").await;
    let config = PoolConfig {
        max_connections: 1,
        wait_timeout: Duration::from_millis(100),
        ..PoolConfig::default()
    };
    let pool = pool(&a, config);
    // The only connection is taken by a request that never completes.
    let held = pool
        .clone()
        .oneshot(Request::get("/hang").body(Empty::new()).unwrap());
    let held = tokio::spawn(held);
    while a.request_count() == 0 {
        tokio::task::yield_now().await;
    }
    let err = fetch(&pool, "/").await.unwrap_err();
    assert!(err.is::<PoolTimeout>(), "{err}");
    assert_eq!(ErrorKind::of(&*err), ErrorKind::PoolTimeout);
    let stats = pool.stats();
    assert_eq!(
        (stats.wait_timeouts, stats.waiting, stats.in_use, stats.open),
        (1, 0, 1, 1)
    );
    assert_eq!(a.accepted(), 1);
    held.abort();
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_not_reused() {
    let a = backend_with(
        "a",
        BackendOptions {
            idle_close: Some(Duration::from_millis(50)),
            ..BackendOptions::default()
        },
    )
    .await;
    let pool = pool(&a, PoolConfig::default());
    fetch(&pool, "/").await.unwrap();
    assert_eq!(
        a.wait_closed(1).await,
        1,
        "backend did not close its idle connection"
    );
    // No error reaches the caller: the next request goes out on a new connection.
    let (status, _) = fetch(&pool, "/").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(a.accepted(), 2);
    let stats = pool.stats();
    assert_eq!(
        (stats.created, stats.reused, stats.closed.backend_closed),
        (2, 0, 1)
    );
}

#[tokio::test]
async fn connection_close_responses_are_honoured() {
    let a = backend("a").await;
    let pool = pool(&a, PoolConfig::default());
    fetch_ok(&pool, "/close", 3).await;
    assert_eq!(a.accepted(), 3);
    assert_eq!(a.wait_closed(3).await, 3);
    let stats = pool.stats();
    assert_eq!(stats.created, 3);
    assert_eq!(stats.reused, 0);
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let a = backend("a").await;
    let pool = idle_for_90s(&a);
    fetch(&pool, "/").await.unwrap();
    assert_eq!(pool.stats().idle, 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.stats().idle, 1, "closed before its idle timeout");
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = pool.stats();
    assert_eq!(
        (stats.idle, stats.open, stats.closed.idle_timeout),
        (0, 0, 1)
    );
    assert_eq!(
        a.wait_closed(1).await,
        1,
        "the backend's connection was not closed"
    );
}

/// A burst of 8 requests at once, then 30 rounds of `per_round` requests at once, one round
/// every 10 s, with a 90 s idle timeout: each of the burst's 8 connections is taken at
/// least every 80 s (reuse is first in, first out), so none is ever idle for a whole idle
/// timeout on its own. Checks the pool's open, created and idle-closed connections at the
/// end against `expected`; returns the backend and the pool's stats.
async fn burst_then_steady(
    per_round: usize,
    expected: (u64, u64, u64),
) -> (TestBackend, PoolStats) {
    let a = backend("a").await;
    let pool = idle_for_90s(&a);
    let burst = join_all((0..8).map(|_| fetch(&pool, "/delay/20"))).await;
    assert!(burst.iter().all(|r| r.is_ok()), "{burst:?}");
    assert_eq!((a.accepted(), pool.stats().idle), (8, 8));
    for _ in 0..30 {
        let round = join_all((0..per_round).map(|_| fetch(&pool, "/delay/20"))).await;
        assert!(round.iter().all(|r| r.is_ok()), "{round:?}");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let stats = pool.stats();
    assert_eq!(
        (stats.open, stats.created, stats.closed.idle_timeout),
        expected,
        "{stats:?}"
    );
    (a, stats)
}

/// The pool shrinks back to what steady traffic uses after a burst grew it.
#[tokio::test(start_paused = true)]
async fn connections_spare_for_an_idle_timeout_are_closed_under_steady_traffic() {
    let (a, stats) = burst_then_steady(1, (1, 8, 7)).await;
    assert_eq!(stats.reused, 30, "every steady request reused a connection");
    assert_eq!(
        a.wait_closed(7).await,
        7,
        "the backend saw the spare ones close"
    );
}

/// Shrinking stops at what the traffic uses: with three requests at a time the pool keeps
/// three connections and never dials again.
#[tokio::test(start_paused = true)]
async fn shrinking_keeps_the_connections_the_traffic_uses() {
    let (a, _) = burst_then_steady(3, (3, 8, 5)).await;
    assert_eq!(
        a.accepted(),
        8,
        "the backend saw a connection dialled again"
    );
}

#[tokio::test]
async fn http2_requests_share_one_connection() {
    let a = backend("a").await;
    let pool = pool(&a, http2(100));
    let results = join_all((0..100).map(|_| fetch(&pool, "/delay/20"))).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok((StatusCode::OK, _)))),
        "{results:?}"
    );
    assert_eq!(a.accepted(), 1, "HTTP/2 requests were not multiplexed");
    let stats = pool.stats();
    assert_eq!(
        (stats.created, stats.open, stats.in_use, stats.idle),
        (1, 1, 0, 1)
    );
}

#[tokio::test]
async fn http2_opens_another_connection_past_the_stream_limit() {
    let a = backend("a").await;
    let pool = pool(&a, http2(10));
    let results = join_all((0..30).map(|_| fetch(&pool, "/delay/50"))).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(a.accepted(), 3, "30 streams at 10 per connection");
    assert_eq!(pool.stats().created, 3);
}

#[tokio::test]
async fn connect_errors_are_typed() {
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let refused: TestPool = Pool::new(closed.to_string().parse().unwrap(), PoolConfig::default());
    let err = fetch(&refused, "/").await.unwrap_err();
    let connect = err.downcast_ref::<ConnectError>().expect("a ConnectError");
    assert_eq!(connect.kind(), ConnectErrorKind::Refused);
    assert_eq!(refused.stats().connect_errors, 1);
    assert_eq!(refused.stats().open, 0);

    let config = PoolConfig {
        connect_timeout: Duration::from_secs(5),
        ..PoolConfig::default()
    };
    let unknown: TestPool = Pool::new("switchyard-test.invalid:80".parse().unwrap(), config);
    let err = fetch(&unknown, "/").await.unwrap_err();
    let connect = err.downcast_ref::<ConnectError>().expect("a ConnectError");
    assert!(connect.is_dns(), "{connect}");
}

#[tokio::test]
async fn abandoned_responses_close_their_connection() {
    let a = backend("a").await;
    let pool = pool(&a, PoolConfig::default());
    let res = pool
        .clone()
        .oneshot(Request::get("/stream/1048576").body(Empty::new()).unwrap())
        .await
        .unwrap();
    drop(res); // a client that went away mid-body
    assert_eq!(a.wait_closed(1).await, 1);
    let stats = pool.stats();
    assert_eq!((stats.open, stats.in_use, stats.closed.error), (0, 0, 1));
    fetch(&pool, "/").await.unwrap();
    assert_eq!(pool.stats().created, 2);
}

#[tokio::test]
async fn through_the_proxy_the_cap_holds_and_stats_are_reported() {
    let a = backend("a").await;
    let mut config = switchyard_tests::config();
    config.pool.max_connections = 4;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let url = proxy.url("/delay/20");
    let client = client();
    let results = join_all((0..64).map(|_| get(&client, &url))).await;
    assert!(results.iter().all(|(s, _, _)| *s == StatusCode::OK));
    assert!(
        a.accepted() <= 4,
        "backend saw {} connections",
        a.accepted()
    );
    let stats = proxy.proxy.pool_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].0, "a");
    assert_eq!(stats[0].1.created as usize, a.accepted());
    assert_eq!(stats[0].1.created + stats[0].1.reused, 64);

    // Removing the backend closes its idle connections at once.
    proxy.proxy.remove_backend("a").unwrap();
    let open = a.accepted();
    assert_eq!(
        a.wait_closed(open).await,
        open,
        "idle connections of a removed backend stayed open"
    );
}

#[tokio::test]
async fn re_added_backend_gets_a_fresh_pool() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[&a]).await;
    let client = client();
    get(&client, &proxy.url("/")).await;
    proxy.proxy.remove_backend("a").unwrap();
    proxy.proxy.add_backend(Backend::new("a", a.url())).unwrap();
    proxy.proxy.settled().await;
    let (status, _, _) = get(&client, &proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        a.accepted(),
        2,
        "the old connection was reused after re-adding"
    );
    assert_eq!(proxy.proxy.pool_stats()[0].1.created, 1);
}

#[tokio::test]
async fn h2_backend_through_the_proxy() {
    let a = backend("a").await;
    let proxy = TestProxy::with(&[]).await;
    proxy
        .proxy
        .add_backend(Backend::new("a", a.url()).protocol(Protocol::Http2))
        .unwrap();
    proxy.proxy.settled().await;
    let client = client();
    let url = proxy.url("/headers");
    let results = join_all((0..20).map(|_| get(&client, &url))).await;
    for (status, backend, body) in &results {
        assert_eq!((*status, backend.as_str()), (StatusCode::OK, "a"), "{body}");
    }
    assert_eq!(a.accepted(), 1);
}
