//! The balancer's per-request overhead: ready + call + await of a service that answers at
//! once, bare and behind `Balance` over 3 and 1,000 endpoints (all ready), and over 1,000
//! endpoints of which half are not ready (the skip path).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::FutureExt;
use switchyard_balance::Balance;
use tower::discover::ServiceList;
use tower::{Service, ServiceExt};

/// An endpoint that answers at once; `ready: false` makes it report not ready.
#[derive(Clone)]
struct Endpoint {
    ready: bool,
}

impl Service<u64> for Endpoint {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req + 1))
    }
}

fn once<S: Service<u64>>(svc: &mut S) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let svc = svc.ready().now_or_never().unwrap().unwrap();
    svc.call(1).now_or_never().unwrap().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("balance");

    let mut bare = tower::service_fn(|req: u64| ready(Ok::<_, Infallible>(req + 1)));
    group.bench_function("bare service_fn", |b| b.iter(|| once(&mut bare)));

    for n in [3usize, 1_000] {
        let endpoints = (0..n).map(|_| Endpoint { ready: true });
        let mut balance = Balance::new(ServiceList::new(endpoints));
        assert_eq!(balance.len(), n);
        group.bench_with_input(BenchmarkId::new("round robin", n), &n, |b, _| {
            b.iter(|| once(&mut balance))
        });
    }

    let endpoints = (0..1_000).map(|i| Endpoint { ready: i % 2 == 0 });
    let mut half = Balance::new(ServiceList::new(endpoints));
    group.bench_function("round robin 1000, half not ready", |b| {
        b.iter(|| once(&mut half))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
