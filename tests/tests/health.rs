//! Active health checks, drain and panic mode through the whole proxy, against real
//! backends on 127.0.0.1.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use switchyard::{AdminState, Health, HealthConfig, ProxyConfig};
use switchyard_server::ServerConfig;
use switchyard_tests::{backend, client, get, tally, TestProxy};

fn checked() -> ProxyConfig {
    ProxyConfig {
        health: HealthConfig {
            // Long enough that only `check_now` runs checks during a test.
            interval: Duration::from_secs(3600),
            fall: 1,
            rise: 1,
            ..HealthConfig::default()
        },
        ..switchyard_tests::config()
    }
}

#[tokio::test]
async fn a_backend_that_fails_its_check_gets_no_traffic_until_it_passes() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::start(checked(), ServerConfig::default(), &[&a, &b]).await;
    let report = proxy.proxy.check_now().await;
    assert!(report.backends.iter().all(|s| s.health == Health::Healthy));
    assert!(report.backends[0].response_time.is_some());
    assert_eq!(a.request_count(), 1, "the check reached the backend");

    b.kill();
    let report = proxy.proxy.check_now().await;
    let status = report.get("b").unwrap();
    assert_eq!(status.health, Health::Unhealthy);
    assert!(
        status.error.as_deref().unwrap().contains("connect"),
        "{:?}",
        status.error
    );
    assert!(!report.panic);
    proxy.proxy.settled().await;
    assert_eq!(tally(&proxy, 6).await, HashMap::from([("a".to_owned(), 6)]));
    assert_eq!(proxy.proxy.retry_stats().retries, 0, "b was not even tried");
}

#[tokio::test]
async fn a_check_answered_with_an_unexpected_status_fails() {
    let a = backend("a").await;
    let mut config = checked();
    config.health.path = "/status/503".into();
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a]).await;
    let report = proxy.proxy.check_now().await;
    let status = report.get("a").unwrap();
    assert_eq!(status.health, Health::Unhealthy);
    // The only backend is unhealthy: panic mode still routes to it.
    assert!(report.panic);
    proxy.proxy.settled().await;
    assert_eq!(tally(&proxy, 2).await, HashMap::from([("a".to_owned(), 2)]));
}

#[tokio::test]
async fn draining_lets_the_request_in_flight_finish_then_removes_the_backend() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::start(checked(), ServerConfig::default(), &[&a, &b]).await;
    let client = client();
    // Round robin: the first request goes to a.
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url("/delay/300"));
        async move { get(&client, &url).await }
    });
    while a.request_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = proxy.proxy.drain_backend("a").unwrap();
    assert_eq!(
        proxy.proxy.health_status().get("a").unwrap().admin,
        AdminState::Draining
    );
    proxy.proxy.settled().await;
    assert_eq!(tally(&proxy, 4).await, HashMap::from([("b".to_owned(), 4)]));
    assert!(proxy.proxy.list_backends().iter().any(|b| b.id == "a"));

    let (status, id, _) = slow.await.unwrap();
    assert_eq!((status, id.as_str()), (StatusCode::OK, "a"));
    tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("the drain ended once the request was done");
    assert_eq!(proxy.backend_ids(), ["b"]);
    assert_eq!(a.request_count(), 1);
}
