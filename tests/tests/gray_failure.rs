//! A gray failure end to end on loopback: one backend of three turns slow while its health
//! checks stay fast. Attempts to it are cut off at the attempt timeout, retried on the
//! others, and counted as timeouts by its circuit breaker, which takes it out within a
//! second; its probes keep it out while it stays slow, and let it back once it is fast.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use switchyard::ProxyConfig;
use switchyard_tests::{load, FaultBackend, Load, TestProxy};
use tokio::time::{sleep, sleep_until, Instant};
use tower::ServiceExt;

const BUCKET: Duration = Duration::from_millis(250);

fn config() -> ProxyConfig {
    let mut config = switchyard_tests::config();
    config.request_timeout = Duration::from_secs(1);
    // Short and constant open times, so that probes happen within the test.
    config.breaker.timeout = Duration::from_secs(1);
    config.breaker.max_timeout = Duration::from_secs(1);
    // Health checks on and fast: they keep saying the slow backend is fine.
    config.health.enabled = true;
    config.health.interval = Duration::from_millis(100);
    config
}

fn mean(buckets: &[usize]) -> f64 {
    buckets.iter().sum::<usize>() as f64 / buckets.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_with_a_fast_health_check_is_taken_out_and_let_back() {
    let [a, b, c] = FaultBackend::start_all(["a", "b", "c"]).await;
    let proxy = TestProxy::over(config(), [a.backend(), b.backend(), c.backend()]).await;
    let breakers = proxy.proxy.circuit_breaker().clone();

    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let (slow_at, fast_at) = (1_500, 5_000);
    let spec = Load {
        connections: 32,
        duration: Duration::from_millis(7_000),
        max_requests: usize::MAX,
        request_timeout: Duration::from_secs(3),
        bucket: BUCKET,
        ..Load::new(proxy.addr, "/work")
    };
    let run = tokio::spawn(async move { load(&spec).await });

    sleep_until(at(slow_at)).await;
    // c turns slow; its /health stays fast.
    c.set_delay(Duration::from_secs(3));
    sleep_until(at(slow_at + 1_000)).await;
    assert!(
        !breakers.state("c").unwrap().is_closed(),
        "taken out within a second"
    );
    let out_at = c.requests("/work");
    // While it stays slow, its probes keep it out.
    while Instant::now() < at(fast_at) {
        let state = breakers.state("c").unwrap();
        assert!(!state.is_closed(), "let back while slow: {state}");
        sleep(Duration::from_millis(20)).await;
    }
    let probes = c.requests("/work") - out_at;
    assert!(
        probes <= 5,
        "{probes} requests reached the slow backend while out"
    );

    // c is fast again.
    c.set_delay(Duration::ZERO);
    let before = c.requests("/work");
    let report = run.await.unwrap();
    assert!(
        breakers.state("c").unwrap().is_closed(),
        "let back once fast: {}",
        breakers.state("c").unwrap()
    );
    assert!(c.requests("/work") > before + 10, "serves requests again");

    let failed = report.errors + report.responses() - report.count(200);
    assert!(failed <= 5, "{failed} requests failed: {report:?}");
    assert!(
        report.max_latency <= Duration::from_millis(1_250),
        "a request took {:?}",
        report.max_latency
    );
    let bucket = |ms: u64| (ms / BUCKET.as_millis() as u64) as usize;
    let healthy = mean(&report.completions[1..bucket(slow_at)]);
    let degraded = mean(&report.completions[bucket(slow_at + 1_000)..bucket(fast_at)]);
    assert!(
        degraded >= healthy / 2.0,
        "throughput fell from {healthy:.0} to {degraded:.0} per bucket: {:?}",
        report.completions
    );
}

#[tokio::test]
async fn a_client_that_goes_away_early_counts_for_nothing() {
    let slow = FaultBackend::start("slow").await;
    slow.set_delay(Duration::from_secs(3));
    let mut config = config();
    config.health.enabled = false;
    // One failure would trip it.
    config.breaker.threshold = 1;
    let proxy = TestProxy::over(config, [slow.backend()]).await;
    let breakers = proxy.proxy.circuit_breaker();
    let url = proxy.url("/work");
    let get = || Request::get(&url).body(String::new()).unwrap();

    // The client gives up after 100 ms, long before the attempt timeout (333 ms).
    let gone = tokio::time::timeout(
        Duration::from_millis(100),
        proxy.proxy.clone().oneshot(get()),
    );
    assert!(gone.await.is_err(), "answered before the backend could");
    sleep(Duration::from_millis(600)).await;
    assert_eq!(slow.requests("/work"), 1, "the request reached the backend");
    assert!(breakers.state("slow").unwrap().is_closed());
    assert_eq!(breakers.trips("slow"), Some(0), "no failure counted");

    // A client that waits: the attempt times out, and that counts.
    let res = proxy.proxy.clone().oneshot(get()).await.unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());
    let _ = res.into_body().collect().await;
    assert_eq!(breakers.trips("slow"), Some(1));
}
