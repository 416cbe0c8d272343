//! Overhead of the breaker in the closed state: ready + call + await of a service that
//! answers at once, bare and behind the breaker; and two threads hammering one breaker.

#[path = "../../../benches/common.rs"]
mod common;

use std::sync::Arc;

use common::{call_now, on_two_threads, runtime, Ok200};
use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_breaker::{BreakerConfig, CircuitBreakerLayer};
use tower::Layer;

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("breaker");
    let mut bare = Ok200;
    group.bench_function("bare service", |b| b.iter(|| call_now(&mut bare, ())));
    let layer = CircuitBreakerLayer::new(BreakerConfig::default());
    let mut wrapped = layer.layer(Ok200);
    group.bench_function("closed breaker", |b| b.iter(|| call_now(&mut wrapped, ())));

    // Two threads on one breaker: time per request on each.
    let shared = Arc::new(layer);
    group.bench_function("closed breaker, 2 threads", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |n| {
                let rt = runtime();
                let _guard = rt.enter();
                let mut svc = shared.layer(Ok200);
                for _ in 0..n {
                    call_now(&mut svc, ());
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
