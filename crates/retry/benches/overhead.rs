//! The retry layer's cost on a request that succeeds at once (a bodyless GET): bare inner
//! service, switchyard's `Retry`, and `tower::retry::Retry` with an equivalent policy.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt;
use http::{Request, Response};
use http_body_util::Empty;
use switchyard_retry::{ReplayBody, RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone)]
struct Ok200;

impl<B> Service<Request<B>> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}

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
    Request::get("http://backend/path?q=1")
        .header("host", "example.com")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(Empty::new())
        .unwrap()
}

fn once<S: Service<Request<Empty<Bytes>>>>(svc: &mut S) -> S::Response
where
    S::Error: std::fmt::Debug,
{
    let svc = svc.ready().now_or_never().unwrap().unwrap();
    svc.call(get()).now_or_never().unwrap().unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
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
