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
