//! A gray failure end to end on loopback: one backend of three turns slow while its health
//! checks stay fast. Attempts to it are cut off at the attempt timeout, retried on the
//! others, and counted as timeouts by its circuit breaker, which takes it out within a
//! second; its probes keep it out while it stays slow, and let it back once it is fast.
//!
//! The backends are scripted (switchyard-test): when the slow one turns slow and fast
//! again is its script, on the clock from the moment it starts.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use switchyard::{Backend, ProxyConfig};
use switchyard_test::{Fleet, Script, Step};
use switchyard_tests::{load, Load, TestProxy};
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

/// A backend's answer, as the proxy's cache must not keep it: every request reaches a
/// backend.
fn answer() -> Step {
    Step::ok().header("cache-control", "no-store")
}

fn mean(buckets: &[usize]) -> f64 {
    buckets.iter().sum::<usize>() as f64 / buckets.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_with_a_fast_health_check_is_taken_out_and_let_back() {
    let (slow_at, fast_at) = (1_500, 5_000);
    let ms = Duration::from_millis;
    // c turns slow at `slow_at` and fast again at `fast_at`; its /health stays fast.
    let c = Script::new([
        answer().for_duration(ms(slow_at)),
        answer()
            .after(Duration::from_secs(3))
            .for_duration(ms(fast_at - slow_at)),
        answer(),
    ]);
    let fleet = Fleet::bind([
        ("a", Script::always(answer())),
        ("b", Script::always(answer())),
        ("c", c),
    ])
    .await;
    let start = fleet.journal().epoch();
    let proxy = TestProxy::over(config(), fleet.entries(Backend::new)).await;
    let breakers = proxy.proxy.circuit_breaker().clone();
    let c = &fleet["c"];

    let at = |ms: u64| start + Duration::from_millis(ms);
    let spec = Load {
        connections: 32,
        duration: Duration::from_millis(7_000),
        max_requests: usize::MAX,
        request_timeout: Duration::from_secs(3),
        bucket: BUCKET,
        ..Load::new(proxy.addr, "/work")
    };
    let run = tokio::spawn(async move { load(&spec).await });

    sleep_until(at(slow_at + 1_000)).await;
    assert!(
        !breakers.state("c").unwrap().is_closed(),
        "taken out within a second"
    );
    let out_at = c.request_count();
    // While it stays slow, its probes keep it out.
    while Instant::now() < at(fast_at) {
        let state = breakers.state("c").unwrap();
        assert!(!state.is_closed(), "let back while slow: {state}");
        sleep(Duration::from_millis(20)).await;
    }
    let probes = c.request_count() - out_at;
    assert!(
        probes <= 5,
        "{probes} requests reached the slow backend while out"
    );

    // c is fast again: its script has moved on.
    let before = c.request_count();
    let report = run.await.unwrap();
    assert!(
        breakers.state("c").unwrap().is_closed(),
        "let back once fast: {}",
        breakers.state("c").unwrap()
    );
    assert!(c.request_count() > before + 10, "serves requests again");

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
    let fleet = Fleet::bind([(
        "slow",
        Script::always(answer().after(Duration::from_secs(3))),
    )])
    .await;
    let slow = &fleet["slow"];
    let mut config = config();
    config.health.enabled = false;
    // One failure would trip it.
    config.breaker.threshold = 1;
    let proxy = TestProxy::over(config, fleet.entries(Backend::new)).await;
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
    assert_eq!(slow.request_count(), 1, "the request reached the backend");
    assert!(breakers.state("slow").unwrap().is_closed());
    assert_eq!(breakers.trips("slow"), Some(0), "no failure counted");

    // A client that waits: the attempt times out, and that counts.
    let res = proxy.proxy.clone().oneshot(get()).await.unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());
    let _ = res.into_body().collect().await;
    assert_eq!(breakers.trips("slow"), Some(1));
}
