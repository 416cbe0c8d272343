//! Overhead of the breaker in the closed state: ready + call + await of a service that
//! answers at once, bare and behind the breaker; and two threads hammering one breaker.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)] // benchmarks measure wall-clock time

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt;
use http::Response;
use switchyard_breaker::{BreakerConfig, CircuitBreakerLayer};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
struct Ok200;

impl Service<()> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

fn once<S: Service<()>>(svc: &mut S) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let svc = svc.ready().now_or_never().unwrap().unwrap();
    svc.call(()).now_or_never().unwrap().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("breaker");
    let mut bare = Ok200;
    group.bench_function("bare service", |b| b.iter(|| once(&mut bare)));
    let layer = CircuitBreakerLayer::new(BreakerConfig::default());
    let mut wrapped = layer.layer(Ok200);
    group.bench_function("closed breaker", |b| b.iter(|| once(&mut wrapped)));

    // Two threads on one breaker: time per request on each.
    let shared = Arc::new(layer);
    group.bench_function("closed breaker, 2 threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let layer = shared.clone();
                    s.spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_time()
                            .build()
                            .unwrap();
                        let _guard = rt.enter();
                        let mut svc = layer.layer(Ok200);
                        for _ in 0..iters {
                            once(&mut svc);
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
