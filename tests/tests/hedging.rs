//! Hedging end to end on loopback: one backend of two turns slow (its circuit breaker off,
//! so only hedging can help). With `hedge_after`, a request whose first attempt went to the
//! slow backend gets a second attempt on the fast one, which answers: no client waits for
//! the slow backend, and the hedges are counted.

use std::time::Duration;

use switchyard::{Backend, ProxyConfig};
use switchyard_test::{Fleet, Script, Step};
use switchyard_tests::{client, get, TestProxy};
use tokio::time::Instant;

const SLOW: Duration = Duration::from_secs(2);

fn config(hedge_after: Option<Duration>) -> ProxyConfig {
    let mut config = switchyard_tests::config();
    config.request_timeout = Duration::from_secs(10);
    config.retry.attempt_timeout = Some(Duration::from_secs(5));
    config.retry.hedge_after = hedge_after;
    config.breaker.enabled = false;
    config
}

/// A fast backend and one that answers after [`SLOW`]. Their answers say `no-store`, as
/// every dynamic answer of the test backends does, so that the proxy's cache keeps none.
async fn fast_and_slow() -> Fleet {
    let answer = |step: Step| Script::always(step.header("cache-control", "no-store"));
    Fleet::bind([
        ("fast", answer(Step::ok())),
        ("slow", answer(Step::delay(SLOW))),
    ])
    .await
}

/// Sends `n` GETs one after another; returns the slowest answer's time and the backends
/// that answered.
async fn gets(proxy: &TestProxy, n: usize) -> (Duration, Vec<String>) {
    let client = client();
    let mut slowest = Duration::ZERO;
    let mut by = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let (status, backend, _) = get(&client, &proxy.url("/work")).await;
        assert_eq!(status, 200);
        slowest = slowest.max(start.elapsed());
        by.push(backend);
    }
    (slowest, by)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_hedged_around() {
    let fleet = fast_and_slow().await;
    let proxy = TestProxy::over(
        config(Some(Duration::from_millis(50))),
        fleet.entries(Backend::new),
    )
    .await;

    let (slowest, by) = gets(&proxy, 10).await;
    assert!(
        slowest < SLOW / 2,
        "no request waited for the slow backend: slowest {slowest:?}"
    );
    assert!(by.iter().all(|b| b == "fast"), "{by:?}");
    let stats = proxy.proxy.retry_stats();
    // Round robin sends every other first attempt to the slow backend; each is hedged.
    assert!(stats.hedges >= 4, "{stats:?}");
    assert_eq!(stats.hedge_wins, stats.hedges, "{stats:?}");
    assert_eq!(stats.retries, 0, "{stats:?}");
    assert!(
        fleet["slow"].requests().len() >= 4,
        "the slow backend got first attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hedging_requests_wait_for_the_slow_backend() {
    let fleet = fast_and_slow().await;
    let proxy = TestProxy::over(config(None), fleet.entries(Backend::new)).await;

    let (slowest, by) = gets(&proxy, 4).await;
    assert!(slowest >= SLOW, "slowest {slowest:?}");
    assert!(by.iter().any(|b| b == "slow"), "{by:?}");
    assert_eq!(proxy.proxy.retry_stats().hedges, 0);
}
