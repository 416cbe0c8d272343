//! Retries in the standard stack, end to end on loopback.

use http::{Request, StatusCode};
use switchyard::Backend;
use switchyard_server::ServerConfig;
use switchyard_tests::{
    backend, backend_with, client, full, get, send, BackendOptions, BackgroundGets, TestBackend,
    TestProxy,
};

fn unavailable() -> BackendOptions {
    BackendOptions::failing_with(503)
}

/// A backend `good` and one `bad` that answers 503.
async fn good_and_bad() -> (TestBackend, TestBackend) {
    (
        backend("good").await,
        backend_with("bad", unavailable()).await,
    )
}

/// A proxy over `backends` with its breaker off, so that only retries route around a
/// failing one; `non_idempotent` opts POSTs into retries.
async fn without_breaker(backends: &[&TestBackend], non_idempotent: bool) -> TestProxy {
    let mut config = switchyard_tests::config();
    config.breaker.enabled = false;
    config.retry.non_idempotent = non_idempotent;
    TestProxy::start(config, ServerConfig::default(), backends).await
}

/// POSTs `body` to `/upload` through `proxy`: (status, backend, answer).
async fn upload(proxy: &TestProxy, body: impl Into<bytes::Bytes>) -> (StatusCode, String, String) {
    let req = Request::post(proxy.url("/upload"))
        .body(full(body))
        .unwrap();
    send(&client(), req).await
}

#[tokio::test]
async fn failed_gets_are_retried_on_the_other_backend() {
    let (good, bad) = good_and_bad().await;
    let proxy = without_breaker(&[&good, &bad], false).await;
    let client = client();
    for _ in 0..20 {
        let (status, backend, _) = get(&client, &proxy.url("/")).await;
        assert_eq!((status, backend.as_str()), (StatusCode::OK, "good"));
    }
    let stats = proxy.proxy.retry_stats();
    // Every request that met `bad` was retried once, on `good`.
    assert_eq!(stats.retries as usize, bad.request_count());
    assert_eq!(stats.retries_status, stats.retries);
    assert_eq!(good.request_count(), 20);
    assert_eq!(stats.requests, 20);
}

#[tokio::test]
async fn posts_are_not_retried_by_default() {
    let bad = backend_with("bad", unavailable()).await;
    let proxy = without_breaker(&[&bad], false).await;
    let (status, _, _) = upload(&proxy, "payload").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(bad.request_count(), 1);
    assert_eq!(proxy.proxy.retry_stats().retries, 0);
}

#[tokio::test]
async fn opted_in_posts_are_replayed_to_another_backend() {
    let (good, bad) = good_and_bad().await;
    let proxy = without_breaker(&[&bad, &good], true).await;
    let body = "x".repeat(10_000);
    let (status, backend, answer) = upload(&proxy, body.clone()).await;
    assert_eq!((status, backend.as_str()), (StatusCode::OK, "good"));
    assert_eq!(
        answer,
        body.len().to_string(),
        "the replayed body lost bytes"
    );
    assert_eq!((bad.request_count(), good.request_count()), (1, 1));
}

#[tokio::test]
async fn with_every_backend_failing_the_last_answer_comes_back() {
    let bad = backend_with("bad", unavailable()).await;
    let proxy = without_breaker(&[&bad], false).await;
    let (status, backend, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!(
        (status, backend.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "bad")
    );
    assert_eq!(bad.request_count(), 4, "1 attempt + max_retries 3");
}

#[tokio::test]
async fn with_one_of_three_refusing_connections_every_get_succeeds() {
    let (a, b) = (backend("a").await, backend("b").await);
    let refused = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = TestProxy::with(&[&a, &b]).await;
    let url = format!("http://{refused}").parse().unwrap();
    proxy
        .proxy
        .add_backend(Backend::new("refusing", url))
        .unwrap();
    proxy.proxy.settled().await;
    let client = client();
    for _ in 0..30 {
        let (status, _, _) = get(&client, &proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(a.request_count() + b.request_count(), 30);
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
    let (good, bad) = good_and_bad().await;
    let proxy = without_breaker(&[&bad, &good], true).await;
    let small = "s".repeat(3 * 1024);
    let (status, backend, answer) = upload(&proxy, small).await;
    assert_eq!(
        (status, backend.as_str(), answer.as_str()),
        (StatusCode::OK, "good", "3072")
    );

    let proxy = without_breaker(&[&bad, &good], true).await;
    let (bad_before, good_before) = (bad.request_count(), good.request_count());
    let large = vec![b'L'; 1 << 20];
    let (status, backend, _) = upload(&proxy, large).await;
    assert_eq!(
        (status, backend.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "bad")
    );
    assert_eq!(
        (
            bad.request_count() - bad_before,
            good.request_count() - good_before
        ),
        (1, 0)
    );
    assert_eq!(proxy.proxy.retry_stats().body_too_large, 1);
}
