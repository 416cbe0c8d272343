//! The balancer policies end to end on loopback: one backend of three answers 200 ms late
//! (a gray failure its health checks would not see). Round robin keeps sending it a third
//! of the requests, and every client that lands there waits; the load-aware policies send
//! it a small share, and the proxy answers more requests in the same time.

use std::time::Duration;

use switchyard::Policy;
use switchyard_tests::{load, FaultBackend, Load, TestProxy};

/// What one run saw: the slow backend's share of the requests, and the responses.
struct Run {
    share: f64,
    responses: usize,
}

async fn run(policy: Policy) -> Run {
    let [a, b, c] = FaultBackend::start_all(["a", "b", "c"]).await;
    c.set_delay(Duration::from_millis(200));
    let mut config = switchyard_tests::config();
    config.balance.policy = policy;
    let proxy = TestProxy::over(config, [a.backend(), b.backend(), c.backend()]).await;
    let report = load(&Load {
        connections: 16,
        duration: Duration::from_millis(1_500),
        max_requests: usize::MAX,
        ..Load::new(proxy.addr, "/work")
    })
    .await;
    assert_eq!(report.errors, 0, "{policy}: {report:?}");
    assert_eq!(
        report.count(200),
        report.responses(),
        "{policy}: {report:?}"
    );
    let total = [&a, &b, &c]
        .map(|x| x.requests("/work"))
        .iter()
        .sum::<usize>();
    let run = Run {
        share: c.requests("/work") as f64 / total as f64,
        responses: report.responses(),
    };
    eprintln!(
        "{policy}: {} responses in 1.5 s, {:.1} % to the slow backend",
        run.responses,
        run.share * 100.0
    );
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_aware_policies_route_around_a_slow_backend() {
    let round_robin = run(Policy::RoundRobin).await;
    assert!(
        (round_robin.share - 1.0 / 3.0).abs() < 0.05,
        "round robin is blind to load: {:.3}",
        round_robin.share
    );
    for policy in [Policy::LeastRequest, Policy::PeakEwma] {
        let aware = run(policy).await;
        // Well under round robin's third (2-3 % on a quiet machine; a loaded one slows
        // the fast backends too, which narrows the gap).
        assert!(
            aware.share < 0.2,
            "{policy}: {:.3} of the requests went to the slow backend",
            aware.share
        );
        assert!(
            aware.responses > round_robin.responses * 3 / 2,
            "{policy}: {} responses against round robin's {}",
            aware.responses,
            round_robin.responses
        );
    }
}

/// A reload that names another balancer switches the running proxy's picks from the next
/// request on, over the same backends and connections.
#[tokio::test]
async fn a_reload_switches_the_balancer_policy() {
    let (a, b, c) = (
        switchyard_tests::backend("a").await,
        switchyard_tests::backend("b").await,
        switchyard_tests::backend("c").await,
    );
    let proxy = TestProxy::with(&[&a, &b, &c]).await;
    let client = switchyard_tests::client();
    let picks = || async {
        let mut seen = Vec::new();
        for _ in 0..30 {
            let (_, backend, _) = switchyard_tests::get(&client, &proxy.url("/")).await;
            seen.push(backend);
        }
        seen
    };
    // Round robin: one request at a time goes to each backend in turn.
    let before = picks().await;
    assert!(
        before.windows(4).all(|w| w[0] == w[3] && w[0] != w[1]),
        "{before:?}"
    );

    let mut config = (*proxy.proxy.config()).clone();
    config.balance.policy = Policy::LeastRequest;
    let done = proxy.proxy.reconfigure(config).unwrap();
    assert_eq!(done.applied, ["balancer"]);
    assert_eq!(proxy.proxy.config().balance.policy, Policy::LeastRequest);
    // Least request with every backend idle: two drawn at random, the first wins a tie,
    // so the strict turn is gone (its odds of surviving 30 picks are 3^-29).
    let after = picks().await;
    assert!(
        !after.windows(4).all(|w| w[0] == w[3] && w[0] != w[1]),
        "{after:?}"
    );
    assert_eq!(after.len(), 30);
}
