//! Metrics through the whole proxy: after a known mix of requests (successes, 5xx seen by
//! the client, retries, cache hits) the snapshot and the Prometheus text show exactly
//! those counts, and the backends' numbers add up.

use std::collections::HashMap;

use http::{Request, StatusCode};
use switchyard::TextFormat;
use switchyard_server::ServerConfig;
use switchyard_tests::{backend, backend_with, client, full, BackendOptions, TestProxy};

/// The value of the Prometheus sample `series` (name and labels as written).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn counts_match_what_clients_and_backends_saw() {
    let a = backend("a").await;
    let x = backend_with("x", BackendOptions::failing_with(503)).await;
    let mut config = switchyard_tests::config();
    // x answers 503 to everything: keep its breaker closed so every request is counted
    // the same way whatever the order.
    config.breaker.threshold = 1000;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &x]).await;
    let client = client();
    let paths = [
        "/",
        "/",
        "/",
        "/",
        "/cacheable/60",
        "/cacheable/60",
        "/cacheable/60",
        "/status/500",
        "/status/404",
        "/",
    ];
    let mut server_errors = 0;
    let mut hits = 0;
    for path in paths {
        let req = Request::get(proxy.url(path)).body(full("")).unwrap();
        let res = client.request(req).await.unwrap();
        server_errors += u64::from(res.status().is_server_error());
        let cache = res
            .headers()
            .get("cache-status")
            .map(|v| v.to_str().unwrap().to_owned());
        hits += u64::from(cache.is_some_and(|c| c.starts_with("switchyard; hit")));
        http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap();
    }
    assert!(hits >= 1, "the cacheable path was served from the cache");
    assert!(
        server_errors >= 1,
        "/status/500 reached the client as a 5xx"
    );

    let m = proxy.proxy.metrics();
    let retries = proxy.proxy.retry_stats().retries;
    assert!(retries >= 1, "x's 503s were retried");
    assert_eq!(m.total_requests, paths.len() as u64);
    assert_eq!(m.failed_requests, server_errors);
    assert_eq!(m.successful_requests, paths.len() as u64 - server_errors);
    assert_eq!((m.in_flight, m.cancelled_requests), (0, 0));
    assert_eq!(m.cache_hits, hits);
    assert_eq!(m.total_retries, retries);
    assert_eq!(m.latency.count, paths.len() as u64);
    assert!(m.average_response_time > std::time::Duration::ZERO);

    // Each backend's numbers are what it saw; together they are every attempt: the
    // requests that were not cache hits, plus the retries.
    let seen = HashMap::from([
        ("a", a.request_count() as u64),
        ("x", x.request_count() as u64),
    ]);
    for (id, b) in &m.backend_metrics {
        assert_eq!(b.requests, seen[id.as_str()], "backend {id}");
        assert_eq!(b.in_flight, 0);
    }
    let x_metrics = &m.backend_metrics["x"];
    assert_eq!(
        x_metrics.failures, x_metrics.requests,
        "x answered 503 to everything"
    );
    assert_eq!(x_metrics.success_rate, Some(0.0));
    let attempts: u64 = m.backend_metrics.values().map(|b| b.requests).sum();
    assert_eq!(attempts, m.total_requests - m.cache_hits + m.total_retries);

    let text = proxy.proxy.encode_metrics(TextFormat::Prometheus);
    let successes = m.successful_requests as f64;
    assert_eq!(
        sample(&text, r#"switchyard_requests_total{outcome="success"}"#),
        successes
    );
    assert_eq!(
        sample(&text, r#"switchyard_requests_total{outcome="failure"}"#),
        server_errors as f64
    );
    assert_eq!(sample(&text, "switchyard_cache_hits_total"), hits as f64);
    assert_eq!(sample(&text, "switchyard_retries_total"), retries as f64);
    assert_eq!(
        sample(
            &text,
            r#"switchyard_backend_requests_total{backend="x",outcome="failure"}"#
        ),
        seen["x"] as f64
    );
    assert_eq!(sample(&text, r#"switchyard_backend_up{backend="a"}"#), 1.0);
    assert_eq!(
        sample(&text, r#"switchyard_backend_circuit_open{backend="x"}"#),
        0.0
    );
    assert_eq!(
        sample(&text, r#"switchyard_backend_weight{backend="a"}"#),
        1.0
    );
    assert_eq!(sample(&text, "switchyard_panic_mode"), 0.0);
    assert_eq!(sample(&text, "switchyard_dns_resolve_failures_total"), 0.0);
}

#[tokio::test]
async fn with_metrics_off_nothing_is_counted() {
    let a = backend("a").await;
    let mut config = switchyard_tests::config();
    config.metrics = false;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let (status, _, _) = switchyard_tests::get(&client(), &proxy.url("/")).await;
    assert_eq!(status, StatusCode::OK);
    let m = proxy.proxy.metrics();
    assert_eq!(m.total_requests, 0);
    assert!(m.backend_metrics.is_empty());
}
