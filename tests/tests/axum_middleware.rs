//! `examples/axum-middleware`: `switchyard::ForwardLayer` around an axum application,
//! served by `axum::serve` on loopback.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use switchyard::ProxyConfig;
use switchyard_tests::{
    backend, client, full, get, proxy_over, send, serve_on_loopback, TestBackend,
};

/// Serves the application over `backends`; the server stops with the test's runtime.
async fn app(backends: &[&TestBackend]) -> SocketAddr {
    let proxy = proxy_over(ProxyConfig::default(), backends).await;
    serve_on_loopback(|listener| {
        example_axum_middleware::serve(listener, proxy, std::future::pending())
    })
    .await
}

#[tokio::test]
async fn other_paths_reach_the_app_untouched() {
    let a = backend("a").await;
    let addr = app(&[&a]).await;
    let req = Request::get(format!("http://{addr}/headers"))
        .header("x-request-id", "r-1")
        .header("connection", "keep-alive")
        .body(full(""))
        .unwrap();
    let (status, backend, body) = send(&client(), req).await;
    assert_eq!(
        (status, backend.as_str()),
        (StatusCode::OK, ""),
        "not forwarded"
    );
    // Exactly what the client sent: no proxy header added, no hop-by-hop header removed.
    let mut lines: Vec<_> = body.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "connection: keep-alive".to_owned(),
            format!("host: {addr}"),
            "x-request-id: r-1".to_owned(),
        ]
    );

    // A path that only starts like the prefix is the app's (which has no such route).
    let (status, backend, _) = get(&client(), &format!("http://{addr}/apiary")).await;
    assert_eq!((status, backend.as_str()), (StatusCode::NOT_FOUND, ""));
    assert_eq!(a.request_count(), 0);
}

#[tokio::test]
async fn matching_paths_are_forwarded_as_they_came() {
    let (a, b) = (backend("a").await, backend("b").await);
    let addr = app(&[&a, &b]).await;
    let client = client();
    let mut seen = Vec::new();
    for path in ["/api", "/api/users", "/api/users?page=2", "/api/headers"] {
        let (status, backend, body) = get(&client, &format!("http://{addr}{path}")).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        // The backends answer their id for any path but `/headers`: `/api/headers` kept
        // its prefix, so it was not their `/headers`.
        assert_eq!(body, backend, "{path}");
        seen.push(backend);
    }
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "round robin: {seen:?}"
    );
    assert_eq!(a.request_count() + b.request_count(), 4);
}
