//! Retries in the standard stack, end to end on loopback, over scripted backends: `good`
//! answers 200, `bad` 503, `refusing` refuses every connection.

use bytes::Bytes;
use http::{Request, StatusCode};
use switchyard::{Backend, ProxyConfig};
use switchyard_test::{Fleet, Script, Step};
use switchyard_tests::{backend, client, full, get, send, BackgroundGets, TestProxy};

/// Backends answering as `steps` say, in order. Every answer says `no-store`, as the
/// other test backends' dynamic answers do, so that the proxy's cache keeps none.
async fn fleet(steps: &[(&'static str, Step)]) -> Fleet {
    let script = |step: &Step| Script::always(step.clone().header("cache-control", "no-store"));
    Fleet::bind(steps.iter().map(|(id, step)| (*id, script(step)))).await
}

fn good() -> (&'static str, Step) {
    ("good", Step::ok())
}

fn bad() -> (&'static str, Step) {
    ("bad", Step::status(503))
}

/// Posts `body` to `/upload` through `proxy`.
async fn upload(proxy: &TestProxy, body: impl Into<Bytes>) -> (StatusCode, String, String) {
    let req = Request::post(proxy.url("/upload"))
        .body(full(body))
        .unwrap();
    send(&client(), req).await
}

fn without_breaker() -> ProxyConfig {
    let mut config = switchyard_tests::config();
    config.breaker.enabled = false;
    config
}

#[tokio::test]
async fn failed_gets_are_retried_on_the_other_backend() {
    let fleet = fleet(&[good(), bad()]).await;
    let proxy = TestProxy::over(without_breaker(), fleet.entries(Backend::new)).await;
    let client = client();
    for _ in 0..20 {
        let (status, backend, _) = get(&client, &proxy.url("/")).await;
        assert_eq!((status, backend.as_str()), (StatusCode::OK, "good"));
    }
    let stats = proxy.proxy.retry_stats();
    // Every request that met `bad` was retried once, on `good`.
    assert_eq!(stats.retries as usize, fleet["bad"].request_count());
    assert_eq!(stats.retries_status, stats.retries);
    assert_eq!(fleet["good"].request_count(), 20);
    assert_eq!(stats.requests, 20);
}

#[tokio::test]
async fn posts_are_not_retried_by_default() {
    let fleet = fleet(&[bad()]).await;
    let proxy = TestProxy::over(without_breaker(), fleet.entries(Backend::new)).await;
    let (status, _, _) = upload(&proxy, "payload").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    fleet["bad"].assert_requests(1);
    assert_eq!(proxy.proxy.retry_stats().retries, 0);
}

#[tokio::test]
async fn opted_in_posts_are_replayed_to_another_backend() {
    let fleet = fleet(&[bad(), good()]).await;
    let mut config = without_breaker();
    config.retry.non_idempotent = true;
    let proxy = TestProxy::over(config, fleet.entries(Backend::new)).await;
    let body = "x".repeat(10_000);
    let (status, backend, _) = upload(&proxy, body.clone()).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "good"));
    assert_eq!(
        fleet["good"].requests()[0].body_len,
        Some(body.len()),
        "the replayed body lost bytes"
    );
    fleet.assert_counts(&[("bad", 1), ("good", 1)]);
}

#[tokio::test]
async fn with_every_backend_failing_the_last_answer_comes_back() {
    let fleet = fleet(&[bad()]).await;
    let proxy = TestProxy::over(without_breaker(), fleet.entries(Backend::new)).await;
    let (status, backend, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!(
        (status, backend.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "bad")
    );
    assert_eq!(fleet["bad"].request_count(), 4, "1 attempt + max_retries 3");
}

#[tokio::test]
async fn with_one_of_three_refusing_connections_every_get_succeeds() {
    let fleet = fleet(&[
        ("a", Step::ok()),
        ("b", Step::ok()),
        ("refusing", Step::refuse()),
    ])
    .await;
    let proxy = TestProxy::over(switchyard_tests::config(), fleet.entries(Backend::new)).await;
    let client = client();
    for _ in 0..30 {
        let (status, _, _) = get(&client, &proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(fleet["a"].request_count() + fleet["b"].request_count(), 30);
    assert!(proxy.proxy.retry_stats().retries_connect >= 1);
}

#[tokio::test]
async fn killing_a_backend_under_load_fails_no_request() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let proxy = TestProxy::with(&[&a, &b, &c]).await;
    let load = BackgroundGets::start(&proxy.url("/delay/5"), 8, 40);
    load.until_sent(80).await;
    b.kill();
    let (sent, failed) = load.finish().await;
    assert_eq!(sent, 320);
    assert_eq!(failed, 0, "client requests failed when a backend died");
    let stats = proxy.proxy.retry_stats();
    assert!(stats.retries >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_3_kib_body_is_replayed_and_a_1_mib_body_is_sent_once() {
    let fleet = fleet(&[bad(), good()]).await;
    let mut config = without_breaker();
    config.retry.non_idempotent = true;
    let proxy = TestProxy::over(config.clone(), fleet.entries(Backend::new)).await;
    let small = "s".repeat(3 * 1024);
    let (status, backend, _) = upload(&proxy, small).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "good"));
    assert_eq!(fleet["good"].requests()[0].body_len, Some(3072));

    let proxy = TestProxy::over(config, fleet.entries(Backend::new)).await;
    let (bad_before, good_before) = (fleet["bad"].request_count(), fleet["good"].request_count());
    let large = vec![b'L'; 1 << 20];
    let (status, backend, _) = upload(&proxy, large).await;
    assert_eq!(
        (status, backend.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "bad")
    );
    assert_eq!(
        (
            fleet["bad"].request_count() - bad_before,
            fleet["good"].request_count() - good_before
        ),
        (1, 0)
    );
    assert_eq!(proxy.proxy.retry_stats().body_too_large, 1);
}

/// Retries send the head the pool handed back rather than a copy made up front: every
/// attempt of a request, whichever way the one before it failed (a 503, a refused
/// connection, an attempt cut off at its deadline), reaches its backend with the target
/// and fields the client sent.
#[tokio::test]
async fn every_attempt_carries_the_clients_head_however_the_last_one_failed() {
    let fleet = fleet(&[
        good(),
        bad(),
        ("refusing", Step::refuse()),
        ("slow", Step::delay(std::time::Duration::from_secs(5))),
    ])
    .await;
    let mut config = without_breaker();
    config.retry.attempt_timeout = Some(std::time::Duration::from_millis(200));
    config.retry.max_retries = 4;
    let proxy = TestProxy::over(config, fleet.entries(Backend::new)).await;
    let client = client();
    for i in 0..8 {
        let req = Request::get(proxy.url(&format!("/head/{i}?q=a%20b")))
            .header("x-request", i.to_string())
            .header("x-list", "one")
            .header("x-list", "two")
            .body(full(""))
            .unwrap();
        let (status, backend, _) = send(&client, req).await;
        assert_eq!(
            (status, backend.as_str()),
            (StatusCode::OK, "good"),
            "request {i}"
        );
    }
    let stats = proxy.proxy.retry_stats();
    assert!(stats.retries_status >= 1, "{stats:?}");
    assert!(stats.retries_connect >= 1, "{stats:?}");
    assert!(stats.retries_timeout >= 1, "{stats:?}");
    let seen = fleet.journal().requests();
    assert!(seen.len() > 8, "some requests took more than one attempt");
    for s in &seen {
        let i = s.headers["x-request"].to_str().unwrap();
        assert_eq!(s.uri.path(), format!("/head/{i}"), "{s:?}");
        assert_eq!(s.uri.query(), Some("q=a%20b"));
        let list: Vec<_> = s.headers.get_all("x-list").iter().collect();
        assert_eq!(list, ["one", "two"], "{s:?}");
        assert_eq!(s.headers.get_all("x-request").iter().count(), 1);
        assert_eq!(s.headers.get_all("host").iter().count(), 1);
    }
}
