//! Cost of the metrics layers: ready + call + await of a `service_fn` that answers at once,
//! bare and wrapped, next to the cost of the two clock reads each layer makes; then two
//! threads recording into one registry at once, with the recorders striped (the default)
//! and with a single stripe.

#[path = "../common.rs"]
mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::time::Duration;

use common::{call_now, on_two_threads, runtime};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use switchyard_metrics::MetricsRegistry;
use tower::{service_fn, Layer, Service};

type Answer = Ready<Result<Response<()>, Infallible>>;

fn ok(_req: Request<()>) -> Answer {
    ready(Ok(Response::new(())))
}

fn once<S>(svc: &mut S) -> Response<()>
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
{
    call_now(svc, Request::new(()))
}

/// `iters` requests on each of two threads, each through its own service from `make`.
fn two_threads<S, F>(iters: u64, make: F) -> Duration
where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible>,
    F: Fn() -> S + Sync,
{
    on_two_threads(iters, |n| {
        let mut svc = make();
        for _ in 0..n {
            once(&mut svc);
        }
    })
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("metrics");

    let mut bare = service_fn(ok);
    group.bench_function("bare service", |b| b.iter(|| once(&mut bare)));

    // What the layer cannot do without: reading the clock at call and at the answer.
    group.bench_function("two clock reads", |b| {
        b.iter(|| tokio::time::Instant::now().elapsed())
    });

    // The least an exact count costs per request: one uncontended locked add (a request
    // needs two: started, and finished).
    let counter = std::sync::atomic::AtomicU64::new(0);
    group.bench_function("one atomic add", |b| {
        b.iter(|| std::hint::black_box(&counter).fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    });

    let metrics = MetricsRegistry::new();
    let mut proxy = metrics.layer().layer(service_fn(ok));
    group.bench_function("proxy-wide layer", |b| b.iter(|| once(&mut proxy)));

    let mut both = metrics
        .layer()
        .layer(metrics.backend("a").layer(service_fn(ok)));
    group.bench_function("proxy-wide + backend layers", |b| {
        b.iter(|| once(&mut both))
    });

    group.bench_function("bare service, 2 threads", |b| {
        b.iter_custom(|iters| two_threads(iters, || service_fn(ok)))
    });
    group.bench_function("two clock reads, 2 threads", |b| {
        b.iter_custom(|iters| {
            on_two_threads(iters, |n| {
                for _ in 0..n {
                    std::hint::black_box(tokio::time::Instant::now().elapsed());
                }
            })
        })
    });
    let striped = MetricsRegistry::new();
    group.bench_function("proxy-wide layer, 2 threads, striped", |b| {
        b.iter_custom(|iters| two_threads(iters, || striped.layer().layer(service_fn(ok))))
    });
    let single = MetricsRegistry::with_stripes(1);
    group.bench_function("proxy-wide layer, 2 threads, 1 stripe", |b| {
        b.iter_custom(|iters| two_threads(iters, || single.layer().layer(service_fn(ok))))
    });
    group.finish();

    // The numbers recorded are exact whatever the contention.
    let s = single.snapshot();
    assert_eq!(s.total_requests, s.successful_requests);
    assert_eq!(s.in_flight, 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
