//! Circuit breakers in the standard stack, end to end on loopback.

use std::collections::HashMap;
use std::time::Duration;

use http::StatusCode;
use switchyard::{Backend, BreakerState};
use switchyard_server::ServerConfig;
use switchyard_tests::{backend, backend_with, client, get, BackendOptions, TestProxy};

fn failing() -> BackendOptions {
    BackendOptions::failing_with(500)
}

async fn tally(proxy: &TestProxy, n: usize) -> HashMap<(StatusCode, String), usize> {
    let client = client();
    let mut seen = HashMap::new();
    for _ in 0..n {
        let (status, backend, _) = get(&client, &proxy.url("/")).await;
        *seen.entry((status, backend)).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn a_failing_backend_is_cut_off_until_its_timeout() {
    let (a, b) = (backend("a").await, backend("b").await);
    let bad = backend_with("bad", failing()).await;
    let mut config = switchyard_tests::config();
    // Long enough that the 30 requests below finish inside it on a loaded machine.
    config.breaker.timeout = Duration::from_secs(2);
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &b, &bad]).await;

    // Round robin sends every third request to `bad` until its fifth 500 trips it.
    let seen = tally(&proxy, 15).await;
    assert_eq!(
        seen[&(StatusCode::INTERNAL_SERVER_ERROR, "bad".to_owned())],
        5
    );
    assert!(matches!(
        proxy.proxy.circuit_breaker().state("bad"),
        Some(BreakerState::Open { .. })
    ));

    // Open: the others serve everything.
    let seen = tally(&proxy, 30).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[&(StatusCode::OK, "a".to_owned())] + seen[&(StatusCode::OK, "b".to_owned())],
        30
    );
    assert_eq!(bad.request_count(), 5);

    // After the timeout one probe reaches it; it fails, and the breaker opens again.
    tokio::time::sleep(Duration::from_millis(2050)).await;
    let seen = tally(&proxy, 9).await;
    assert_eq!(bad.request_count(), 6, "{seen:?}");
    assert_eq!(proxy.proxy.circuit_breaker().trips("bad"), Some(2));
}

#[tokio::test]
async fn every_breaker_open_is_503_at_once() {
    let (x, y) = (
        backend_with("x", failing()).await,
        backend_with("y", failing()).await,
    );
    let proxy = TestProxy::with(&[&x, &y]).await;
    let seen = tally(&proxy, 10).await;
    assert_eq!(seen.values().sum::<usize>(), 10);
    let before = proxy.proxy.retry_stats();
    // Both open now (30 s): answered without waiting for anything, not even a retry's
    // backoff, since a backoff would find every circuit still open.
    let answer =
        tokio::time::timeout(Duration::from_secs(5), get(&client(), &proxy.url("/"))).await;
    let (status, _, body) = answer.expect("an open circuit made the client wait");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no backend is available\n");
    assert_eq!(x.request_count() + y.request_count(), 10);
    let after = proxy.proxy.retry_stats();
    assert_eq!(after.requests - before.requests, 1);
    assert_eq!(after.attempts - before.attempts, 1, "{after:?}");
    assert_eq!(after.retries, before.retries);
}

#[tokio::test]
async fn a_backend_that_does_not_resolve_gets_no_traffic_and_trips_its_breaker() {
    let good = backend("good").await;
    let mut config = switchyard_tests::config();
    config.health.dns_min_ttl = Duration::from_millis(20);
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&good]).await;
    let mut events = proxy.proxy.circuit_breaker().subscribe();
    let url = "http://switchyard-test.invalid:80".parse().unwrap();
    proxy
        .proxy
        .add_backend(Backend::new("nowhere", url))
        .unwrap();
    proxy.proxy.settled().await;
    // A name that does not resolve is no endpoint: nothing is sent its way, nothing is
    // retried, and the client sees no error.
    let seen = tally(&proxy, 10).await;
    assert_eq!(
        seen,
        HashMap::from([((StatusCode::OK, "good".to_owned()), 10)])
    );
    assert_eq!(proxy.proxy.retry_stats().retries, 0);
    let status = proxy.proxy.health_status();
    let nowhere = status.get("nowhere").unwrap();
    assert!(nowhere.endpoints.is_empty());
    assert!(
        nowhere
            .error
            .as_deref()
            .unwrap()
            .contains("switchyard-test.invalid"),
        "{:?}",
        nowhere.error
    );
    // Each failed resolution counts like a refused connection: five open the circuit.
    let opened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let t = events.recv().await.unwrap();
            if &*t.id == "nowhere" && matches!(t.to, BreakerState::Open { .. }) {
                return;
            }
        }
    })
    .await;
    assert!(opened.is_ok(), "the breaker of `nowhere` did not open");
    assert!(
        proxy
            .proxy
            .health_status()
            .get("nowhere")
            .unwrap()
            .passive
            .as_deref()
            == Some("circuit open")
    );
}

#[tokio::test]
async fn operators_can_force_a_breaker() {
    let (a, b) = (backend("a").await, backend("b").await);
    let proxy = TestProxy::with(&[&a, &b]).await;
    let breakers = proxy.proxy.circuit_breaker();
    let mut events = breakers.subscribe();
    assert!(breakers.force_open("a"));
    let seen = tally(&proxy, 6).await;
    assert_eq!(seen, HashMap::from([((StatusCode::OK, "b".to_owned()), 6)]));
    assert!(breakers.force_close("a"));
    let seen = tally(&proxy, 6).await;
    assert_eq!(seen.len(), 2);
    let e = events.recv().await.unwrap();
    assert_eq!((&*e.id, e.to), ("a", BreakerState::ForcedOpen));
    let e = events.recv().await.unwrap();
    assert_eq!((&*e.id, e.to), ("a", BreakerState::Closed));
}

#[tokio::test]
async fn with_breakers_disabled_a_failing_backend_keeps_its_share() {
    let (a, bad) = (backend("a").await, backend_with("bad", failing()).await);
    let mut config = switchyard_tests::config();
    config.breaker.enabled = false;
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &bad]).await;
    let seen = tally(&proxy, 20).await;
    assert_eq!(
        seen[&(StatusCode::INTERNAL_SERVER_ERROR, "bad".to_owned())],
        10
    );
}

/// Breakers turned off by a reconfiguration let a failing backend keep its share, and
/// turned back on they count its failures from then on and cut it off.
#[tokio::test]
async fn breakers_turned_off_and_on_at_run_time() {
    let (a, bad) = (backend("a").await, backend_with("bad", failing()).await);
    let mut config = switchyard_tests::config();
    config.breaker.timeout = Duration::from_secs(60);
    let proxy = TestProxy::start(config.clone(), ServerConfig::default(), &[&a, &bad]).await;
    let mut off = config.clone();
    off.breaker.enabled = false;
    proxy.proxy.reconfigure(off).unwrap();
    let seen = tally(&proxy, 20).await;
    assert_eq!(
        seen[&(StatusCode::INTERNAL_SERVER_ERROR, "bad".to_owned())],
        10
    );
    assert_eq!(
        proxy.proxy.circuit_breaker().state("bad"),
        Some(BreakerState::Closed)
    );

    proxy.proxy.reconfigure(config).unwrap();
    // Its fifth 500 from now on opens the circuit (the ten before did not count).
    let seen = tally(&proxy, 10).await;
    assert_eq!(
        seen[&(StatusCode::INTERNAL_SERVER_ERROR, "bad".to_owned())],
        5
    );
    assert!(matches!(
        proxy.proxy.circuit_breaker().state("bad"),
        Some(BreakerState::Open { .. })
    ));
    let seen = tally(&proxy, 10).await;
    assert_eq!(seen[&(StatusCode::OK, "a".to_owned())], 10, "{seen:?}");
}

/// The requests an open circuit turns away spread over the backends still closed, not
/// all onto the one after it in the rotation.
#[tokio::test]
async fn an_open_circuits_share_spreads_over_the_others() {
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);
    let bad = backend_with("bad", failing()).await;
    let mut config = switchyard_tests::config();
    config.breaker.timeout = Duration::from_secs(60);
    let proxy = TestProxy::start(config, ServerConfig::default(), &[&a, &b, &c, &bad]).await;
    // Every fourth request goes to `bad` until its fifth 500 opens its circuit.
    tally(&proxy, 20).await;
    assert!(matches!(
        proxy.proxy.circuit_breaker().state("bad"),
        Some(BreakerState::Open { .. })
    ));

    let seen = tally(&proxy, 300).await;
    for id in ["a", "b", "c"] {
        let n = seen[&(StatusCode::OK, id.to_owned())];
        // 75 each by the rotation, plus a third of `bad`'s 75 (± a few: drawn at random).
        assert!((80..=120).contains(&n), "{id} got {n} of 300: {seen:?}");
    }
}
