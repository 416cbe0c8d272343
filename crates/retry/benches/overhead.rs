//! The retry layer's cost on a request that succeeds at once (a bodyless GET): bare inner
//! service, switchyard's `Retry`, and `tower::retry::Retry` with an equivalent policy.

#[path = "../../../benches/common.rs"]
mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};

use bytes::Bytes;
use common::{call_now, runtime, Ok200};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::Empty;
use switchyard_retry::{ReplayBody, RetryConfig, RetryLayer};
use tower::{Layer, Service};

/// tower's retry with the same decisions: 502/503/504 retried up to 3 times.
#[derive(Clone)]
struct Policy(u32);

impl<B: Clone> tower::retry::Policy<Request<B>, Response<()>, Infallible> for Policy {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<()>, Infallible>,
    ) -> Option<Self::Future> {
        match result {
            Ok(res) if matches!(res.status().as_u16(), 502..=504) && self.0 > 0 => {
                self.0 -= 1;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Some(req.clone())
    }
}

fn get() -> Request<Empty<Bytes>> {
    common::get("http://backend/path?q=1", "example.com")
}

fn once<S: Service<Request<Empty<Bytes>>>>(svc: &mut S) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    call_now(svc, get())
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("retry");
    let mut bare = Ok200;
    group.bench_function("bare service", |b| b.iter(|| once(&mut bare)));
    let inner = tower::service_fn(|_req: Request<ReplayBody<Empty<Bytes>>>| {
        ready(Ok::<_, Infallible>(Response::new(())))
    });
    let mut ours = RetryLayer::new(RetryConfig::default()).layer(inner);
    group.bench_function("switchyard Retry", |b| b.iter(|| once(&mut ours)));
    let mut theirs = tower::retry::Retry::new(Policy(3), Ok200);
    group.bench_function("tower::retry::Retry", |b| b.iter(|| once(&mut theirs)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
