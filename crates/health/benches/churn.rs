//! The request path while the registry changes: one balanced request over 1,000
//! backends, steady, and while a backend is added or removed every millisecond on another
//! thread (far more churn than any fleet sees). The request path reads the balancer's
//! snapshot, so the two should match.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::future::Ready;
use switchyard_balance::Balance;
use switchyard_health::{AdminState, BackendSpec, Endpoints, HealthConfig, Registry, Tracked};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

#[derive(Clone)]
struct Svc(SocketAddr);

impl Service<()> for Svc {
    type Response = SocketAddr;
    type Error = Infallible;
    type Future = Ready<Result<SocketAddr, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        futures::future::ready(Ok(self.0))
    }
}

struct Factory;

impl Endpoints for Factory {
    type Service = Svc;

    fn make(&self, _: &BackendSpec, addr: SocketAddr) -> Result<Svc, tower::BoxError> {
        Ok(Svc(addr))
    }
}

fn spec(i: u32) -> BackendSpec {
    BackendSpec {
        id: format!("b{i}"),
        url: format!("http://127.0.{}.{}:80", i / 256, i % 256)
            .parse()
            .unwrap(),
        weight: 1,
        http2: false,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = HealthConfig {
        enabled: false,
        ..HealthConfig::default()
    };
    let (registry, balance) = rt.block_on(async {
        let (registry, discovery) = Registry::new(config, Factory);
        let balance: Balance<Tracked<Svc>, ()> = Balance::weighted(discovery);
        for i in 0..1000 {
            registry.add(spec(i), AdminState::Enabled).unwrap();
        }
        balance
            .endpoint_count()
            .wait_for(|&n| n == 1000)
            .await
            .unwrap();
        (registry, balance)
    });

    let run = |iters: u64, balance: &Balance<Tracked<Svc>, ()>| {
        let mut balance = balance.clone();
        rt.block_on(async move {
            let start = Instant::now();
            for _ in 0..iters {
                let svc = balance.ready().await.unwrap();
                std::hint::black_box(svc.call(()).await.unwrap());
            }
            start.elapsed()
        })
    };

    let mut group = c.benchmark_group("request over 1000 backends");
    group.bench_function("steady", |b| b.iter_custom(|iters| run(iters, &balance)));

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (registry, stop) = (registry.clone(), stop.clone());
        rt.spawn(async move {
            let mut changes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                registry.add(spec(5000), AdminState::Enabled).unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                registry.remove("b5000").unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
                changes += 2;
            }
            changes
        })
    };
    group.bench_function("while backends are added and removed", |b| {
        b.iter_custom(|iters| run(iters, &balance))
    });
    stop.store(true, Ordering::Relaxed);
    let changes = rt.block_on(churn).unwrap();
    eprintln!("registry changes applied during the churn benchmark: {changes}");
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
