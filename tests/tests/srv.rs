//! DNS SRV discovery against a real name server: each test starts dnsmasq on a free
//! loopback port with `srv-host` and `host-record` lines (TTL 1 s), points the proxy's
//! `dns_server` at it, and adds one `dns+srv://` backend. Records are changed at run time
//! by restarting dnsmasq on the same port with another configuration (dnsmasq re-reads
//! only its hosts files on SIGHUP, not `srv-host` lines).

use std::collections::HashMap;
use std::time::Duration;

use switchyard::{Backend, ProxyConfig};
use switchyard_tests::dnsmasq::{srv, Dnsmasq, NAME};
use switchyard_tests::{client, get, tally, FaultBackend, TestProxy};
use tokio::time::{sleep, Instant};

fn config(dns: &Dnsmasq) -> ProxyConfig {
    let mut config = switchyard_tests::config();
    config.health.dns_server = Some(dns.addr);
    config.health.dns_min_ttl = Duration::from_millis(100);
    config.health.dns_max_ttl = Duration::from_secs(1);
    config
}

fn web() -> Backend {
    Backend::new("web", format!("dns+srv://{NAME}").parse().unwrap())
}

/// The id a target of `web` gets.
fn target_id(target: &str, backend: &FaultBackend) -> String {
    format!("web/{target}.service.consul:{}", backend.addr().port())
}

/// Sends GETs until `done` holds for the answers so far (each answer counted by
/// backend), for at most `within`; returns how long that took.
async fn until(
    proxy: &TestProxy,
    within: Duration,
    done: impl Fn(&HashMap<String, usize>) -> bool,
) -> Duration {
    let (start, client) = (Instant::now(), client());
    let mut seen = HashMap::new();
    while !done(&seen) {
        assert!(start.elapsed() < within, "not within {within:?}: {seen:?}");
        let (status, backend, _) = get(&client, &proxy.url("/")).await;
        if status.is_success() {
            *seen.entry(backend).or_insert(0) += 1;
        }
        sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_added_and_removed_at_run_time_reach_the_balancer_within_a_ttl() {
    let [a, b, c] = FaultBackend::start_all(["a", "b", "c"]).await;
    let mut dns = Dnsmasq::start(&[srv("a", &a, 1, 1), srv("b", &b, 1, 1)]).await;
    let proxy = TestProxy::over(config(&dns), [web()]).await;
    let mut ids = proxy.backend_ids();
    ids.sort();
    assert_eq!(
        ids,
        ["web".to_owned(), target_id("a", &a), target_id("b", &b)]
    );
    let seen = tally(&proxy, 20).await;
    assert_eq!((seen["a"], seen["b"]), (10, 10), "{seen:?}");

    // Target c is added to the records.
    dns.serve(&[srv("a", &a, 1, 1), srv("b", &b, 1, 1), srv("c", &c, 1, 1)])
        .await;
    let took = until(&proxy, Duration::from_secs(5), |seen| {
        seen.contains_key("c")
    })
    .await;
    assert!(
        took < Duration::from_millis(2_500),
        "c reached after {took:?}"
    );

    // Target a is removed from the records.
    dns.serve(&[srv("b", &b, 1, 1), srv("c", &c, 1, 1)]).await;
    let start = Instant::now();
    while proxy.backend_ids().contains(&target_id("a", &a)) {
        assert!(
            start.elapsed() < Duration::from_millis(2_500),
            "a still listed"
        );
        sleep(Duration::from_millis(20)).await;
    }
    let before = a.requests("/");
    let seen = tally(&proxy, 20).await;
    assert_eq!((seen["b"], seen["c"]), (10, 10), "{seen:?}");
    assert_eq!(a.requests("/"), before, "a got requests after its removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_weights_split_the_traffic() {
    let [a, b] = FaultBackend::start_all(["a", "b"]).await;
    let dns = Dnsmasq::start(&[srv("a", &a, 5, 30), srv("b", &b, 5, 10)]).await;
    let proxy = TestProxy::over(config(&dns), [web()]).await;
    let seen = tally(&proxy, 200).await;
    // Weights 30 and 10 (RFC 2782's shares within a priority group): 3 to 1.
    assert_eq!((seen["a"], seen["b"]), (150, 50), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_priority_group_takes_over_when_the_first_is_down() {
    let [mut a, b] = FaultBackend::start_all(["a", "b"]).await;
    let dns = Dnsmasq::start(&[srv("a", &a, 10, 1), srv("b", &b, 20, 1)]).await;
    let mut config = config(&dns);
    config.health.enabled = true;
    config.health.interval = Duration::from_millis(100);
    config.health.timeout = Duration::from_millis(500);
    config.health.fall = 1;
    config.health.rise = 1;
    let proxy = TestProxy::over(config, [web()]).await;
    let seen = tally(&proxy, 20).await;
    assert_eq!(
        seen.get("a"),
        Some(&20),
        "only the lowest priority: {seen:?}"
    );

    // The priority-10 group goes down.
    a.kill().await;
    takes_over(&proxy, "b").await;

    // It comes back, and takes the traffic back.
    a.restart().await;
    takes_over(&proxy, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_priority_group_takes_over_while_the_breakers_of_the_first_are_open() {
    let (mut a, mut c, b) = (
        FaultBackend::start("a").await,
        FaultBackend::start("c").await,
        FaultBackend::start("b").await,
    );
    let records = [
        srv("a", &a, 10, 1),
        srv("c", &c, 10, 1),
        srv("b", &b, 20, 1),
    ];
    let dns = Dnsmasq::start(&records).await;
    // No active checks: only the breakers, fed by the requests, see the first group go.
    let mut config = config(&dns);
    config.breaker.threshold = 2;
    config.breaker.timeout = Duration::from_millis(500);
    config.breaker.max_timeout = Duration::from_secs(1);
    let proxy = TestProxy::over(config, [web()]).await;
    let seen = tally(&proxy, 20).await;
    assert_eq!((seen["a"], seen["c"]), (10, 10), "{seen:?}");

    // The priority-10 group dies; requests trip both breakers (some fail meanwhile).
    a.kill().await;
    c.kill().await;
    let breakers = proxy.proxy.circuit_breaker();
    let open = |backend: &FaultBackend, name: &str| {
        let state = breakers.state(&target_id(name, backend));
        state.is_some_and(|s| !s.is_closed())
    };
    let start = Instant::now();
    while !(open(&a, "a") && open(&c, "c")) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the breakers did not open"
        );
        let _ = get(&client(), &proxy.url("/")).await;
    }
    // From now on every request is answered, by b, though the breakers of a and c go
    // half-open again and again (their probes fail over to b).
    takes_over(&proxy, "b").await;
    let seen = tally(&proxy, 100).await;
    assert_eq!(seen.get("b"), Some(&100), "{seen:?}");

    // The first group comes back: its breakers' probes pass, and it takes the traffic back.
    a.restart().await;
    c.restart().await;
    until(&proxy, Duration::from_secs(5), |seen| {
        seen.get("a") >= Some(&3) && seen.get("c") >= Some(&3)
    })
    .await;
    let seen = tally(&proxy, 20).await;
    assert_eq!((seen["a"], seen["c"]), (10, 10), "{seen:?}");
}

/// Waits (5 s at most) until `backend` answers, then checks that it answers every request.
async fn takes_over(proxy: &TestProxy, backend: &str) {
    until(proxy, Duration::from_secs(5), |seen| {
        seen.get(backend) >= Some(&5)
    })
    .await;
    let seen = tally(proxy, 20).await;
    assert_eq!(seen.get(backend), Some(&20), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_name_server_keeps_the_last_targets_serving() {
    let [a, b] = FaultBackend::start_all(["a", "b"]).await;
    let mut dns = Dnsmasq::start(&[srv("a", &a, 1, 1), srv("b", &b, 1, 1)]).await;
    let proxy = TestProxy::over(config(&dns), [web()]).await;
    dns.stop();
    // Several TTLs pass, each re-resolution failing: the SRV name's, and the targets'
    // names' too.
    let mut events = proxy.proxy.health_events();
    let start = Instant::now();
    let mut failures = 0;
    while failures < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failed resolution"
        );
        if let switchyard::HealthEvent::ResolveFailed { backend, .. } = events.recv().await.unwrap()
        {
            failures += usize::from(backend == "web");
        }
    }
    let seen = tally(&proxy, 20).await;
    assert_eq!((seen["a"], seen["b"]), (10, 10), "{seen:?}");
    let status = proxy.proxy.health_status();
    let web = status.backends.iter().find(|b| b.id == "web").unwrap();
    let error = web.error.as_deref().unwrap_or_default();
    assert!(error.contains("resolving"), "{error}");
    assert!(proxy.proxy.resolve_failures() >= 2);
    let text = proxy
        .proxy
        .encode_metrics(switchyard::TextFormat::Prometheus);
    assert!(
        text.contains("switchyard_dns_resolve_failures_total "),
        "{text}"
    );
}
