//! What the benchmarks share. Each bench target includes this file with
//! `#[path = "…/benches/common.rs"] mod common;` and uses what it needs.

// Benchmarks measure wall-clock time; not every bench uses every helper.
#![allow(dead_code, clippy::disallowed_types, clippy::disallowed_methods)]

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use http::Response;
use tower::{Service, ServiceExt};

/// The runtime a bench enters: current-thread, with time (the layers' timers need it).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Readies `svc` and calls it with `req`: both must complete at once.
pub(crate) fn call_now<S, R>(svc: &mut S, req: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let svc = svc.ready().now_or_never().unwrap().unwrap();
    svc.call(req).now_or_never().unwrap().unwrap()
}

/// A bodiless GET of `uri` with `Host: host` and a browser's few other headers.
pub(crate) fn get<B: Default>(uri: &str, host: &str) -> http::Request<B> {
    http::Request::get(uri)
        .header("host", host)
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(B::default())
        .unwrap()
}

/// Wall time of `work(iters)` run on two threads at once: the time of one iteration on each
/// thread while the other runs too.
pub(crate) fn on_two_threads(iters: u64, work: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| work(iters));
        }
    });
    start.elapsed()
}

/// A service that answers any request at once with an empty 200.
#[derive(Clone)]
pub(crate) struct Ok200;

impl<R> Service<R> for Ok200 {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: R) -> Self::Future {
        ready(Ok(Response::new(())))
    }
}
