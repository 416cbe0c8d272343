//! The registry driving a real balancer, with a test double for checks and DNS; time is
//! paused, so intervals are exact.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use http::StatusCode;
use switchyard_balance::Balance;
use switchyard_health::{
    AdminState, BackendSpec, CheckError, CheckTarget, Checker, Endpoints, Health, HealthConfig,
    HealthEvent, Registry, Resolved, Resolver, Tracked,
};
use tokio::sync::Semaphore;
use tower::{BoxError, Service, ServiceExt};

/// An endpoint that answers with its address, after taking a permit from `gate` when
/// one is set (so a test can hold requests in flight).
#[derive(Clone)]
struct Svc {
    addr: SocketAddr,
    gate: Option<Arc<Semaphore>>,
}

impl Service<()> for Svc {
    type Response = SocketAddr;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<SocketAddr, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        let (addr, gate) = (self.addr, self.gate.clone());
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.acquire().await.unwrap().forget();
            }
            Ok(addr)
        })
    }
}

#[derive(Default)]
struct Factory {
    gate: Option<Arc<Semaphore>>,
    retired: RwLock<Vec<SocketAddr>>,
    resolve_failures: AtomicUsize,
    recovered: RwLock<Vec<SocketAddr>>,
}

impl Endpoints for Factory {
    type Service = Svc;

    fn make(&self, _: &BackendSpec, addr: SocketAddr) -> Result<Svc, BoxError> {
        Ok(Svc {
            addr,
            gate: self.gate.clone(),
        })
    }

    fn retire(&self, _: &BackendSpec, service: &Svc) {
        self.retired.write().unwrap().push(service.addr);
    }

    fn resolve_failed(&self, _: &BackendSpec, _: &str) {
        self.resolve_failures.fetch_add(1, Ordering::SeqCst);
    }

    fn recovered(&self, backend: &BackendSpec, addr: SocketAddr) {
        assert_eq!(backend.url.port_u16(), Some(addr.port()));
        self.recovered.write().unwrap().push(addr);
    }
}

/// Health checks answered from a set of failing addresses; counts checks per address.
#[derive(Clone, Default)]
struct FakeChecker {
    down: Arc<RwLock<HashSet<SocketAddr>>>,
    checks: Arc<RwLock<HashMap<SocketAddr, usize>>>,
    /// The path of the last check.
    path: Arc<RwLock<String>>,
    delay: Duration,
}

impl FakeChecker {
    fn set_down(&self, addr: SocketAddr, down: bool) {
        let mut set = self.down.write().unwrap();
        if down {
            set.insert(addr);
        } else {
            set.remove(&addr);
        }
    }

    fn checks(&self, addr: SocketAddr) -> usize {
        self.checks.read().unwrap().get(&addr).copied().unwrap_or(0)
    }
}

impl Checker for FakeChecker {
    fn check(&self, target: CheckTarget) -> BoxFuture<'static, Result<StatusCode, CheckError>> {
        *self.checks.write().unwrap().entry(target.addr).or_default() += 1;
        *self.path.write().unwrap() = target.path.clone();
        let down = self.down.read().unwrap().contains(&target.addr);
        let delay = self.delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Ok(if down {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            })
        })
    }
}

/// Names resolved from a table that tests change; a missing name fails.
#[derive(Clone, Default)]
struct FakeResolver {
    table: Arc<RwLock<HashMap<String, Vec<SocketAddr>>>>,
}

impl Resolver for FakeResolver {
    fn resolve(&self, host: String, _port: u16) -> BoxFuture<'static, io::Result<Resolved>> {
        let found = self.table.read().unwrap().get(&host).cloned();
        Box::pin(async move {
            match found {
                Some(addrs) => Ok(Resolved {
                    addrs,
                    ttl: Some(Duration::from_secs(10)),
                }),
                None => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
            }
        })
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn spec(id: &str, url: &str) -> BackendSpec {
    BackendSpec {
        id: id.into(),
        url: url.parse().unwrap(),
        weight: 1,
        http2: false,
    }
}

type Lb = Balance<Tracked<Svc>, ()>;

struct Setup {
    registry: Registry<Factory>,
    balance: Lb,
    checker: FakeChecker,
    resolver: FakeResolver,
}

fn setup(config: HealthConfig, factory: Factory) -> Setup {
    let checker = FakeChecker::default();
    let resolver = FakeResolver::default();
    let (registry, discovery) = Registry::builder(config, factory)
        .checker(checker.clone())
        .resolver(resolver.clone())
        .build();
    let balance = Balance::weighted(discovery);
    Setup {
        registry,
        balance,
        checker,
        resolver,
    }
}

impl Setup {
    /// Adds the backend `id` at `url`, in `state`.
    fn add(&self, id: &str, url: &str, state: AdminState) {
        self.registry.add(spec(id, url), state).unwrap();
    }

    /// Lets the balancer apply the registry's changes.
    async fn settle(&self) {
        let routed = self.registry.resolved().await;
        let mut count = self.balance.endpoint_count();
        count.wait_for(|&n| n == routed).await.unwrap();
    }

    /// Where `n` requests go.
    async fn route(&self, n: usize) -> Vec<SocketAddr> {
        self.settle().await;
        let mut out = Vec::new();
        for _ in 0..n {
            match self.balance.clone().oneshot(()).await {
                Ok(a) => out.push(a),
                Err(e) => panic!("request failed: {e}"),
            }
        }
        out
    }
}

/// Backends `a` (127.0.0.1:1) and `b` (127.0.0.1:2).
fn two_backends(config: HealthConfig) -> Setup {
    two_backends_from(config, Factory::default())
}

/// [`two_backends`], their services made by `factory`.
fn two_backends_from(config: HealthConfig, factory: Factory) -> Setup {
    let s = setup(config, factory);
    for (id, url) in [("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")] {
        s.add(id, url, AdminState::Enabled);
    }
    s
}

fn config() -> HealthConfig {
    HealthConfig {
        interval: Duration::from_secs(10),
        ..HealthConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn failing_backend_leaves_after_fall_checks_and_rejoins_after_rise() {
    let s = two_backends(config());

    let report = s.registry.status();
    assert!(report.backends.iter().all(|b| b.health == Health::Unknown));
    assert!(report.backends.iter().all(|b| b.endpoints[0].checks == 0));
    assert_eq!(s.route(4).await, [addr(1), addr(2), addr(1), addr(2)]);

    // One interval: one check each, both pass.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(s.checker.checks(addr(2)), 1);
    assert_eq!(
        s.registry.status().get("b").unwrap().health,
        Health::Healthy
    );

    s.checker.set_down(addr(2), true);
    // fall = 3: after two failed checks b is still routed.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let b = s.registry.status().get("b").unwrap().clone();
    assert_eq!((b.health, b.consecutive_failures), (Health::Healthy, 2));
    assert_eq!(
        b.error.as_deref(),
        Some("unexpected status 503 Service Unavailable")
    );
    assert!(s.route(4).await.contains(&addr(2)));

    let mut events = s.registry.subscribe();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let b = s.registry.status().get("b").unwrap().clone();
    assert_eq!((b.health, b.consecutive_failures), (Health::Unhealthy, 3));
    assert!(!b.endpoints[0].routed);
    assert_eq!(
        events.recv().await.unwrap(),
        HealthEvent::Transition {
            backend: "b".into(),
            addr: addr(2),
            from: Health::Healthy,
            to: Health::Unhealthy
        }
    );
    assert_eq!(s.route(4).await, [addr(1); 4], "no new requests to b");

    // rise = 2: one passing check is not enough.
    s.checker.set_down(addr(2), false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        s.registry.status().get("b").unwrap().health,
        Health::Unhealthy
    );
    assert_eq!(s.route(2).await, [addr(1); 2]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        s.registry.status().get("b").unwrap().health,
        Health::Healthy
    );
    assert!(s.route(4).await.contains(&addr(2)), "b rejoined");
}

#[tokio::test(start_paused = true)]
async fn the_recovered_hook_fires_only_when_an_unhealthy_endpoint_rises() {
    let s = two_backends(HealthConfig {
        fall: 1,
        ..config()
    });
    // b's health and the recoveries heard so far, after `secs` more seconds.
    let s = &s;
    let after = |secs| async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let health = s.registry.status().get("b").unwrap().health;
        (
            health,
            s.registry.endpoints().recovered.read().unwrap().clone(),
        )
    };

    // Unknown → healthy, then healthy → healthy: not a recovery.
    assert_eq!(after(30).await, (Health::Healthy, vec![]));
    assert_eq!(s.checker.checks(addr(2)), 3);

    s.checker.set_down(addr(2), true);
    assert_eq!(after(20).await, (Health::Unhealthy, vec![]));

    // rise = 2: the first passing check is not enough, the second is.
    s.checker.set_down(addr(2), false);
    assert_eq!(after(10).await, (Health::Unhealthy, vec![]));
    assert_eq!(after(10).await, (Health::Healthy, vec![addr(2)]));

    // Checks that keep passing say nothing new.
    assert_eq!(after(30).await, (Health::Healthy, vec![addr(2)]));
}

/// New settings on a running registry: the check loops take the new interval at once and
/// the new path, `rise` and `fall` at their next round; every endpoint keeps its health.
#[tokio::test(start_paused = true)]
async fn reconfigured_checks_keep_the_health_states() {
    let fall_at_once = HealthConfig {
        fall: 1,
        ..config()
    };
    let s = two_backends(fall_at_once);
    // One round: b fails its first check and is out.
    s.checker.set_down(addr(2), true);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let health = |id| s.registry.status().get(id).unwrap().health;
    assert_eq!(
        (health("a"), health("b")),
        (Health::Healthy, Health::Unhealthy)
    );
    assert_eq!(*s.checker.path.read().unwrap(), "/health");
    let before = s.checker.checks(addr(1));

    s.checker.set_down(addr(2), false);
    assert!(s.registry.reconfigure(HealthConfig {
        interval: Duration::from_secs(1),
        path: "/ready".into(),
        rise: 4,
        ..config()
    }));
    assert_eq!(s.registry.config().interval, Duration::from_secs(1));
    // Kept until checks say otherwise.
    assert_eq!(
        (health("a"), health("b")),
        (Health::Healthy, Health::Unhealthy)
    );
    // The next round within a second (one second after the last one), then every second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let checks = s.checker.checks(addr(1)) - before;
    assert!((2..=3).contains(&checks), "{checks} checks in 2.5 s");
    assert_eq!(*s.checker.path.read().unwrap(), "/ready");
    assert_eq!(
        health("b"),
        Health::Unhealthy,
        "rise = 4: three passes are not enough"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(health("b"), Health::Healthy);
    assert!(!s.registry.reconfigure(s.registry.config().as_ref().clone()));
}

#[tokio::test(start_paused = true)]
async fn check_now_updates_status_without_waiting_for_the_interval() {
    let s = two_backends(HealthConfig {
        fall: 1,
        ..config()
    });
    s.checker.set_down(addr(2), true);
    let started = tokio::time::Instant::now();
    let report = s.registry.check_now().await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(report.get("a").unwrap().health, Health::Healthy);
    assert_eq!(report.get("b").unwrap().health, Health::Unhealthy);
    assert!(report.get("a").unwrap().endpoints[0].last_check.is_some());
    assert_eq!(s.route(3).await, [addr(1); 3]);
}

#[tokio::test(start_paused = true)]
async fn drain_finishes_in_flight_requests_then_removes_the_backend() {
    let gate = Arc::new(Semaphore::new(0));
    let factory = Factory {
        gate: Some(gate.clone()),
        ..Factory::default()
    };
    let s = two_backends_from(config(), factory);
    s.settle().await;

    // Two requests in flight: one on a, one on b.
    let first = tokio::spawn(s.balance.clone().oneshot(()));
    let second = tokio::spawn(s.balance.clone().oneshot(()));
    tokio::task::yield_now().await;
    let drain = s.registry.drain("b").unwrap();
    s.settle().await;
    let status = s.registry.status();
    assert_eq!(status.get("b").unwrap().admin, AdminState::Draining);
    assert_eq!(status.get("b").unwrap().in_flight, 1);

    // New requests go to a only; b is still listed while its request runs.
    let third = tokio::spawn(s.balance.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert!(s.registry.list().iter().any(|b| b.spec.id == "b"));
    assert!(s.registry.endpoints().retired.read().unwrap().is_empty());

    gate.add_permits(3);
    let mut seen = vec![
        first.await.unwrap().unwrap(),
        second.await.unwrap().unwrap(),
        third.await.unwrap().unwrap(),
    ];
    seen.sort();
    assert_eq!(
        seen,
        [addr(1), addr(1), addr(2)],
        "b's in-flight request completed"
    );
    drain.await;
    let ids: Vec<String> = s.registry.list().into_iter().map(|b| b.spec.id).collect();
    assert_eq!(ids, ["a"]);
    assert_eq!(*s.registry.endpoints().retired.read().unwrap(), [addr(2)]);
}

#[tokio::test(start_paused = true)]
async fn a_name_with_two_addresses_gives_two_endpoints_and_failures_keep_them() {
    let s = setup(config(), Factory::default());
    s.resolver
        .table
        .write()
        .unwrap()
        .insert("svc.internal".into(), vec![addr(7001), addr(7002)]);
    s.add("svc", "http://svc.internal:7000", AdminState::Enabled);
    let mut seen = s.route(4).await;
    seen.sort();
    assert_eq!(seen, [addr(7001), addr(7001), addr(7002), addr(7002)]);
    assert_eq!(s.registry.list()[0].addrs, [addr(7001), addr(7002)]);

    // The name stops resolving: the addresses stay, the error is reported and counted.
    s.resolver.table.write().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(10_500)).await; // re-resolved after the TTL
    let status = s.registry.status();
    let svc = status.get("svc").unwrap();
    assert_eq!(svc.endpoints.len(), 2);
    assert!(
        svc.error.as_deref().unwrap().contains("no such host"),
        "{:?}",
        svc.error
    );
    assert_eq!(
        s.registry
            .endpoints()
            .resolve_failures
            .load(Ordering::SeqCst),
        1
    );
    assert_eq!(s.route(2).await.len(), 2);

    // It resolves again, to one old and one new address.
    s.resolver
        .table
        .write()
        .unwrap()
        .insert("svc.internal".into(), vec![addr(7002), addr(7003)]);
    tokio::time::sleep(Duration::from_secs(1)).await; // retried after dns_min_ttl
    assert_eq!(s.registry.list()[0].addrs, [addr(7002), addr(7003)]);
    assert!(s.registry.status().get("svc").unwrap().error.is_none());
    assert_eq!(
        *s.registry.endpoints().retired.read().unwrap(),
        [addr(7001)]
    );
    let mut seen = s.route(4).await;
    seen.sort();
    assert_eq!(seen, [addr(7002), addr(7002), addr(7003), addr(7003)]);
}

#[tokio::test(start_paused = true)]
async fn panic_mode_routes_to_all_when_all_are_unhealthy() {
    let s = two_backends(HealthConfig {
        fall: 1,
        rise: 1,
        ..config()
    });
    s.checker.set_down(addr(1), true);
    s.checker.set_down(addr(2), true);
    let report = s.registry.check_now().await;
    assert!(report.panic);
    assert!(report
        .backends
        .iter()
        .all(|b| b.health == Health::Unhealthy));
    let mut seen = s.route(2).await;
    seen.sort();
    assert_eq!(
        seen,
        [addr(1), addr(2)],
        "requests still reach the backends"
    );

    // One recovers: panic is over and only it is routed.
    s.checker.set_down(addr(1), false);
    let report = s.registry.check_now().await;
    assert!(!report.panic);
    assert_eq!(s.route(2).await, [addr(1); 2]);
}

#[tokio::test(start_paused = true)]
async fn without_panic_mode_all_unhealthy_means_no_backend() {
    let s = setup(
        HealthConfig {
            fall: 1,
            panic_mode: false,
            ..config()
        },
        Factory::default(),
    );
    s.add("a", "http://127.0.0.1:1", AdminState::Enabled);
    s.checker.set_down(addr(1), true);
    assert!(!s.registry.check_now().await.panic);
    s.settle().await;
    let err = s.balance.clone().oneshot(()).await.unwrap_err();
    assert!(err.is::<switchyard_balance::NoBackendsAvailable>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn weights_and_admin_states_change_routing() {
    let s = setup(config(), Factory::default());
    s.add("a", "http://127.0.0.1:1", AdminState::Enabled);
    s.add("b", "http://127.0.0.1:2", AdminState::Disabled);
    assert_eq!(s.route(2).await, [addr(1); 2]);
    s.registry.enable("b").unwrap();
    s.registry.set_weight("b", 3).unwrap();
    let seen = s.route(4).await;
    assert_eq!(seen.iter().filter(|a| **a == addr(2)).count(), 3);
    s.registry.disable("a").unwrap();
    assert_eq!(s.route(2).await, [addr(2); 2]);
    assert_eq!(
        s.registry
            .add(spec("a", "http://127.0.0.1:9"), AdminState::Enabled),
        Err(switchyard_health::RegistryError::Duplicate("a".into()))
    );
    assert!(matches!(
        s.registry
            .add(spec("c", "ftp://127.0.0.1:9"), AdminState::Enabled),
        Err(switchyard_health::RegistryError::Invalid { .. })
    ));
    s.registry.remove("b").unwrap();
    assert_eq!(
        s.registry.remove("b"),
        Err(switchyard_health::RegistryError::NotFound("b".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn a_thousand_backends_are_all_checked_within_one_interval() {
    let checker = FakeChecker {
        delay: Duration::from_millis(50),
        ..FakeChecker::default()
    };
    let (registry, _discovery) = Registry::builder(
        HealthConfig {
            max_concurrent: 16,
            ..config()
        },
        Factory::default(),
    )
    .checker(checker.clone())
    .build();
    for port in 1..=1000u16 {
        registry
            .add(
                spec(&format!("b{port}"), &format!("http://127.0.0.1:{port}")),
                AdminState::Enabled,
            )
            .unwrap();
    }
    let start = tokio::time::Instant::now();
    let mut first_checks = Vec::new();
    // Every check starts within the first interval; the last ones finish within a check's
    // duration after it (16 at a time, 50 ms each).
    while first_checks.len() < 1000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        first_checks = registry
            .status()
            .backends
            .iter()
            .filter_map(|b| b.endpoints[0].last_check)
            .collect();
        assert!(start.elapsed() <= Duration::from_secs(10) + Duration::from_millis(500));
    }
    // Spread over the interval rather than all at once: no 1-second slice holds more
    // than a fifth of them.
    let mut per_second = [0usize; 11];
    for at in first_checks {
        per_second[(at - start).as_secs() as usize] += 1;
    }
    assert!(per_second.iter().all(|&n| n < 200), "{per_second:?}");
}
