//! Hedging end to end on loopback: one backend of two turns slow (its circuit breaker off,
//! so only hedging can help). With `hedge_after`, a request whose first attempt went to the
//! slow backend gets a second attempt on the fast one, which answers: no client waits for
//! the slow backend, and the hedges are counted.

use std::time::Duration;

use switchyard::ProxyConfig;
use switchyard_tests::{client, get, FaultBackend, TestProxy};
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

/// A proxy with `hedge_after` over a fast backend and a slow one (both returned: a
/// backend stops when dropped).
async fn fast_and_slow(hedge_after: Option<Duration>) -> (TestProxy, FaultBackend, FaultBackend) {
    let (fast, slow) = (
        FaultBackend::start("fast").await,
        FaultBackend::start("slow").await,
    );
    slow.set_delay(SLOW);
    let proxy = TestProxy::over(config(hedge_after), [fast.backend(), slow.backend()]).await;
    (proxy, fast, slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_hedged_around() {
    let (proxy, _fast, slow) = fast_and_slow(Some(Duration::from_millis(50))).await;

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
        slow.requests("/work") >= 4,
        "the slow backend got first attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hedging_requests_wait_for_the_slow_backend() {
    let (proxy, _fast, _slow) = fast_and_slow(None).await;

    let (slowest, by) = gets(&proxy, 4).await;
    assert!(slowest >= SLOW, "slowest {slowest:?}");
    assert!(by.iter().any(|b| b == "slow"), "{by:?}");
    assert_eq!(proxy.proxy.retry_stats().hedges, 0);
}
