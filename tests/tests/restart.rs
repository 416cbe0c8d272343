//! Backends as real processes, killed with SIGKILL and started again on their ports while
//! a load runs through the proxy: no request fails, and a restarted backend serves again
//! as soon as its health checks pass, not after its circuit breaker's open time. A backend
//! whose checks never failed is let back only by its breaker's own probe (that one needs
//! no process: its backends are scripted with switchyard-test).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use switchyard::{Backend, BreakerState, Health, HealthConfig, ProxyConfig};
use switchyard_test::{Fleet, Script, Step};
use switchyard_tests::{client, get, load, Load, TestProxy};
use tokio::time::{sleep, Instant};

/// One `switchyard-test-backend` process on a fixed port; killed when dropped, so a failing
/// test leaves nothing behind.
struct Process {
    name: &'static str,
    addr: SocketAddr,
    child: Option<Child>,
}

impl Process {
    async fn start(name: &'static str, addr: SocketAddr) -> Self {
        let mut process = Self {
            name,
            addr,
            child: None,
        };
        process.restart().await;
        process
    }

    /// Starts the process again on its port; returns once it accepts connections.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard-test-backend"))
            .arg(self.addr.to_string())
            .arg(self.name)
            .stdin(Stdio::null())
            .spawn()
            .expect("the backend starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            assert!(Instant::now() < deadline, "{} never listened", self.name);
            sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn backend(&self) -> Backend {
        Backend::new(self.name, format!("http://{}", self.addr).parse().unwrap())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `N` distinct loopback addresses nobody listens on: bound on port 0 together, then freed.
fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let listeners = [(); N].map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    listeners.map(|l| l.local_addr().unwrap())
}

fn checked(interval: Duration, rise: u32) -> ProxyConfig {
    ProxyConfig {
        health: HealthConfig {
            enabled: true,
            interval,
            timeout: interval,
            rise,
            fall: 1,
            ..HealthConfig::default()
        },
        ..switchyard_tests::config()
    }
}

/// Responses backend `id` gave through the proxy that were not failures.
fn successes(proxy: &TestProxy, id: &str) -> u64 {
    let metrics = proxy.proxy.metrics();
    metrics.backend_metrics.get(id).map_or(0, |b| b.successes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backends_restarted_on_their_ports_serve_once_their_checks_pass() {
    let interval = Duration::from_millis(200);
    let rise = 2;
    let [a, b, c] = free_addrs();
    let mut backends = [
        Process::start("a", a).await,
        Process::start("b", b).await,
        Process::start("c", c).await,
    ];
    let proxy = TestProxy::over(
        checked(interval, rise),
        backends.iter().map(Process::backend),
    )
    .await;
    let spec = Load {
        duration: Duration::from_millis(4500),
        max_requests: 1_000_000,
        ..Load::new(proxy.addr, "/")
    };
    let running = tokio::spawn(async move { load(&spec).await });

    sleep(Duration::from_secs(1)).await;
    for p in &mut backends[1..] {
        p.kill();
    }
    sleep(Duration::from_secs(1)).await;
    let report = proxy.proxy.health_status();
    for id in ["b", "c"] {
        assert_eq!(report.get(id).unwrap().health, Health::Unhealthy, "{id}");
        // The few clients here seldom reach a killed backend often enough to trip its
        // breaker before its check takes it out; heavier traffic does. Trip it as that
        // would: open for the default 30 s, far longer than the bound below.
        let breaker = proxy.proxy.circuit_breaker().breaker(id);
        while breaker.state().is_closed() {
            breaker.record_failure();
        }
        assert!(matches!(breaker.state(), BreakerState::Open { .. }), "{id}");
    }

    let before = ["b", "c"].map(|id| successes(&proxy, id));
    for p in &mut backends[1..] {
        p.restart().await;
    }
    let back = Instant::now();
    // Checked from a random phase: the `rise` passing checks take at most one interval
    // more, and the balancer a moment to route to the backend again.
    let bound = interval * (rise + 2);
    let mut served = [None; 2];
    while served.contains(&None) && back.elapsed() < bound * 3 {
        for (i, id) in ["b", "c"].into_iter().enumerate() {
            if served[i].is_none() && successes(&proxy, id) > before[i] {
                served[i] = Some(back.elapsed());
            }
        }
        sleep(Duration::from_millis(10)).await;
    }
    for (id, after) in ["b", "c"].into_iter().zip(served) {
        let after = after.unwrap_or_else(|| panic!("{id} not back after {:?}", bound * 3));
        assert!(after <= bound, "{id} back only after {after:?}");
        let breaker = proxy.proxy.circuit_breaker();
        assert_eq!(breaker.state(id), Some(BreakerState::Closed), "{id}");
    }

    let report = running.await.unwrap();
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.count(200), report.responses(), "{report:?}");
    assert!(report.responses() > 100, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_checks_never_failed_is_let_back_only_by_its_probe() {
    // As the process backends answer: never to be cached.
    let answer = |status| Step::status(status).header("cache-control", "no-store");
    // gray's requests fail, its health check passes: its fifth 500 trips its breaker.
    // Then it is fine again, and its checks keep passing.
    let fleet = Fleet::bind([
        ("a", Script::always(answer(200))),
        ("gray", Script::new([answer(500).times(5), answer(200)])),
    ])
    .await;
    let mut config = checked(Duration::from_millis(100), 1);
    config.breaker.timeout = Duration::from_millis(1500);
    let proxy = TestProxy::over(config, fleet.entries(Backend::new)).await;
    let report = proxy.proxy.check_now().await;
    assert!(report.backends.iter().all(|b| b.health == Health::Healthy));
    let client = client();

    let mut until = None;
    for _ in 0..40 {
        get(&client, &proxy.url("/")).await;
        if let Some(BreakerState::Open { until: t }) = proxy.proxy.circuit_breaker().state("gray") {
            until = Some(t);
            break;
        }
    }
    let until = until.expect("the breaker opened");
    let checks = |proxy: &TestProxy| {
        let report = proxy.proxy.health_status();
        let status = report.get("gray").unwrap();
        assert_eq!(status.health, Health::Healthy);
        assert_eq!(status.consecutive_failures, 0);
        status.endpoints[0].checks
    };
    let checks_at_trip = checks(&proxy);

    // Fine again, and its checks keep passing: it stays out for the whole open time.
    assert_eq!(fleet["gray"].request_count(), 5, "its five failures");
    let served = successes(&proxy, "gray");
    while Instant::now() + Duration::from_millis(100) < until {
        let (status, id, _) = get(&client, &proxy.url("/")).await;
        assert_eq!((status, id.as_str()), (StatusCode::OK, "a"));
        assert!(matches!(
            proxy.proxy.circuit_breaker().state("gray"),
            Some(BreakerState::Open { .. })
        ));
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(successes(&proxy, "gray"), served);
    assert!(
        checks(&proxy) >= checks_at_trip + 5,
        "checks passed meanwhile"
    );

    // Then a probe reaches it, succeeds, and closes the breaker.
    tokio::time::sleep_until(until).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (status, id, _) = get(&client, &proxy.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        seen.push(id);
    }
    assert!(seen.iter().any(|id| id == "gray"), "{seen:?}");
    assert_eq!(
        proxy.proxy.circuit_breaker().state("gray"),
        Some(BreakerState::Closed)
    );
}
