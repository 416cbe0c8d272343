//! `examples/axum-gateway`: an axum application with its own routes and `/api` forwarded
//! through the standard stack, served by `axum::serve` on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use switchyard::ProxyConfig;
use switchyard_tests::{backend, client, get, proxy_over, serve_on_loopback, TestBackend};

/// Serves the gateway over `backends`; the server stops with the test's runtime.
async fn gateway(config: ProxyConfig, backends: &[&TestBackend]) -> SocketAddr {
    let proxy = proxy_over(config, backends).await;
    serve_on_loopback(|listener| {
        example_axum_gateway::serve(listener, proxy, std::future::pending())
    })
    .await
}

#[tokio::test]
async fn own_routes_are_served_and_api_is_forwarded_round_robin() {
    let (a, b) = (backend("a").await, backend("b").await);
    let addr = gateway(ProxyConfig::default(), &[&a, &b]).await;
    let client = client();

    let (status, backend, body) = get(&client, &format!("http://{addr}/healthz")).await;
    assert_eq!(
        (status, backend.as_str(), body.as_str()),
        (StatusCode::OK, "", "ok\n")
    );

    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, backend, body) = get(&client, &format!("http://{addr}/api/x")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, backend, "the backend's own answer comes back");
        seen.push(backend);
    }
    assert!(seen[0] == "a" || seen[0] == "b", "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "alternates: {seen:?}"
    );
    assert_eq!((a.request_count(), b.request_count()), (2, 2));

    // The prefix is stripped: `/api/headers` is the backends' `/headers`, which lists the
    // request headers as the backend got them, proxy headers included.
    let (status, _, body) = get(&client, &format!("http://{addr}/api/headers")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("x-forwarded-for: 127.0.0.1"), "{body}");
}

#[tokio::test]
async fn with_every_backend_down_api_is_503_and_own_routes_still_work() {
    let (a, b) = (backend("a").await, backend("b").await);
    // Breakers that open at the first failure, and quick retries: the first request
    // after the crash trips both and is answered 503 at once.
    let mut config = ProxyConfig::default();
    config.breaker.threshold = 1;
    config.retry.delay = Duration::from_millis(1);
    let addr = gateway(config, &[&a, &b]).await;
    let client = client();
    let (status, _, _) = get(&client, &format!("http://{addr}/api/x")).await;
    assert_eq!(status, StatusCode::OK);

    a.kill();
    b.kill();
    for _ in 0..3 {
        let (status, backend, body) = get(&client, &format!("http://{addr}/api/x")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(backend, "");
    }
    let (status, _, body) = get(&client, &format!("http://{addr}/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("switchyard gateway"), "{body}");
    let (status, _, _) = get(&client, &format!("http://{addr}/healthz")).await;
    assert_eq!(status, StatusCode::OK);
}
