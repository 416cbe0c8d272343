//! Retries in the standard stack, end to end on loopback.

use http::{Request, StatusCode};
use switchyard::ProxyConfig;
use switchyard_cli::ServerConfig;
use switchyard_tests::{backend, backend_with, client, full, get, send, BackendOptions, TestProxy};

fn unavailable() -> BackendOptions {
    BackendOptions {
        fail_with: Some(503),
        ..BackendOptions::default()
    }
}

#[tokio::test]
async fn failed_gets_are_retried_on_the_other_backend() {
    let (good, bad) = (
        backend("good").await,
        backend_with("bad", unavailable()).await,
    );
    let config = ProxyConfig {
        circuit_breaker_enabled: false,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&good, &bad]).await;
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
    let config = ProxyConfig {
        circuit_breaker_enabled: false,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&bad]).await;
    let req = Request::post(proxy.url("/upload"))
        .body(full("payload"))
        .unwrap();
    let (status, _, _) = send(&client(), req).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(bad.request_count(), 1);
    assert_eq!(proxy.proxy.retry_stats().retries, 0);
}

#[tokio::test]
async fn opted_in_posts_are_replayed_to_another_backend() {
    let (good, bad) = (
        backend("good").await,
        backend_with("bad", unavailable()).await,
    );
    let config = ProxyConfig {
        circuit_breaker_enabled: false,
        retry_non_idempotent: true,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&bad, &good]).await;
    let body = "x".repeat(10_000);
    let req = Request::post(proxy.url("/upload"))
        .body(full(body.clone()))
        .unwrap();
    let (status, backend, answer) = send(&client(), req).await;
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
    let config = ProxyConfig {
        circuit_breaker_enabled: false,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&bad]).await;
    let (status, backend, _) = get(&client(), &proxy.url("/")).await;
    assert_eq!(
        (status, backend.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "bad")
    );
    assert_eq!(bad.request_count(), 4, "1 attempt + max_retries 3");
}
