//! The cost of choosing an endpoint under each balancer policy: ready + call + await of an
//! endpoint that answers at once, over 3, 1,000 and 10,000 endpoints, all ready. The
//! load-aware policies also count the request in flight, and peak EWMA times it (two clock
//! reads); a pick itself is two random draws whatever the number of endpoints.

#[path = "../common.rs"]
mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};

use common::{call_now, runtime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard_balance::{Balance, BalanceConfig, Policy, Weighted};
use tower::discover::ServiceList;
use tower::service_fn;

fn answer(req: u64) -> Ready<Result<u64, Infallible>> {
    ready(Ok(req + 1))
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("pick");
    for policy in Policy::ALL {
        for n in [3usize, 1_000, 10_000] {
            let endpoints = (0..n).map(|_| Weighted::new(service_fn(answer), 1));
            let config = BalanceConfig {
                policy,
                ..BalanceConfig::default()
            };
            let mut balance = Balance::weighted_with(ServiceList::new(endpoints), config);
            assert_eq!(balance.len(), n);
            group.bench_with_input(BenchmarkId::new(policy.name(), n), &n, |b, _| {
                b.iter(|| call_now(&mut balance, 1))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
