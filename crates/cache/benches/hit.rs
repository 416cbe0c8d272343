//! The cache's cost per request against the bare inner service (a service that answers at
//! once with a 1 KiB body): a hit (lookup, response built from the stored one, body read),
//! and a miss whose response is not storable (`no-store`), which goes through the upstream
//! path (coalescing table, boxed future) and passes the body through.

#[path = "../../../benches/common.rs"]
mod common;

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use common::{call_now, runtime};
use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Empty, Full};
use switchyard_cache::{CacheConfig, CacheLayer};
use tower::{Layer, Service};

/// Answers at once with 1 KiB and the given `Cache-Control`.
#[derive(Clone)]
struct Origin(&'static str);

impl<B> Service<Request<B>> for Origin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        let res = Response::builder()
            .header("cache-control", self.0)
            .header("content-type", "text/plain")
            .header("etag", "\"v1\"")
            .body(Full::new(Bytes::from_static(&[b'x'; 1024])))
            .unwrap();
        ready(Ok(res))
    }
}

fn get() -> Request<Empty<Bytes>> {
    common::get("/products/42?lang=en", "shop.example.com")
}

/// One request through `svc`, its body read: everything here completes at once.
fn once<S, RB>(svc: &mut S) -> usize
where
    S: Service<Request<Empty<Bytes>>, Response = Response<RB>>,
    S::Error: std::fmt::Debug,
    RB: Body<Data = Bytes> + Unpin,
    RB::Error: std::fmt::Debug,
{
    let res = call_now(svc, get());
    let body = res.into_body().collect().now_or_never().unwrap().unwrap();
    body.to_bytes().len()
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut group = c.benchmark_group("cache");

    let mut bare = Origin("max-age=600");
    group.bench_function("bare service", |b| b.iter(|| once(&mut bare)));

    let layer = CacheLayer::new(CacheConfig::default());
    let mut hit = layer.layer(Origin("max-age=600"));
    once(&mut hit);
    group.bench_function("hit", |b| b.iter(|| once(&mut hit)));
    assert_eq!(layer.handle().stats().misses, 1);

    let layer = CacheLayer::new(CacheConfig::default());
    let mut miss = layer.layer(Origin("no-store"));
    group.bench_function("miss, not storable", |b| b.iter(|| once(&mut miss)));
    assert_eq!(layer.handle().stats().hits, 0);
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
