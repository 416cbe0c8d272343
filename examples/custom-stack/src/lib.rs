//! A proxy stack built by hand from switchyard's layers.
//!
//! The facade's [`switchyard::Proxy`] gives the standard stack with runtime backend
//! management. Each layer also stands alone; this example picks a few and stacks them
//! with `ServiceBuilder` over a fixed list of backends, keeping typed errors instead of
//! error responses, and maps them by hand with [`switchyard::Error::status`].
//!
//! ```text
//!   stack():            Timeout (2 s) ─▶ ProxyHeaders ─▶ Balance (round robin) ─▶ HttpEndpoint × n
//!   resilient_client(): Retry ─▶ CircuitBreaker ─▶ hyper-util Client (one upstream)
//! ```
//!
//! The second shows the retry and breaker layers with no balancer and no switchyard pool:
//! around a plain hyper client calling one service, as an application calling a flaky
//! dependency would use them.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use http::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard::endpoint::HttpEndpoint;
use switchyard::layers::balance::Balance;
use switchyard::layers::breaker::CircuitBreakers;
use switchyard::layers::retry::{ReplayBody, RetryLayer};
use switchyard::{
    Body, BoxError, BreakerConfig, Error, InvalidBackendUrl, PoolConfig, ProxyHeadersLayer,
    RetryConfig,
};
use tower::discover::ServiceList;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The hand-built stack: forwards a request to one of `backends` in turn, failing with a
/// typed [`Error`].
pub fn stack(
    backends: &[Uri],
    timeout: Duration,
) -> Result<BoxCloneSyncService<Request<Body>, Response<Body>, Error>, InvalidBackendUrl> {
    let endpoints = backends
        .iter()
        .map(|url| HttpEndpoint::new(url, PoolConfig::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let service = ServiceBuilder::new()
        .map_err(|e: BoxError| Error::from(e))
        .timeout(timeout)
        .layer(ProxyHeadersLayer::new())
        .service(Balance::new(ServiceList::new(endpoints)));
    Ok(BoxCloneSyncService::new(service))
}

/// Forwards one request, answering failures with the status switchyard would choose.
///
/// (A combinator rather than an `async fn`: the future's type is then nameable, which
/// keeps it `Send` for `tokio::spawn` whatever lifetimes the boxed error carries.)
pub fn forward(
    stack: BoxCloneSyncService<Request<Body>, Response<Body>, Error>,
    req: Request<Body>,
) -> impl Future<Output = Response<Body>> + Send {
    stack.oneshot(req).map(|result| match result {
        Ok(res) => res,
        Err(err) => {
            let mut res = Response::new(switchyard::body::full(format!("{}\n", err.status())));
            *res.status_mut() = err.status();
            res
        }
    })
}

/// A client of one upstream with retries and a circuit breaker, and nothing else: a
/// hyper-util client (its own connection pool) under a circuit breaker under
/// [`RetryLayer`]. A 502/503/504 or a failed connection is retried with backoff; once
/// the breaker has seen `breaker.threshold` failures in a row, calls fail at once with
/// `CircuitOpen` (a 503 by [`Error::status`]) until its timeout has passed. Returns the
/// breaker's handle too, to read its state.
pub fn resilient_client(
    retry: RetryConfig,
    breaker: BreakerConfig,
) -> (
    BoxCloneSyncService<Request<Body>, Response<Body>, Error>,
    CircuitBreakers,
) {
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let breakers = CircuitBreakers::new(breaker);
    let service = ServiceBuilder::new()
        .map_err(|e: BoxError| Error::from(e))
        .layer(RetryLayer::new(retry))
        .map_request(|req: Request<ReplayBody<Body>>| {
            req.map(|b| b.into_passthrough().unwrap_or_else(switchyard::body::boxed))
        })
        .layer(breakers.layer("upstream"))
        .map_response(|res: Response<hyper::body::Incoming>| res.map(switchyard::body::boxed))
        .service(client);
    (BoxCloneSyncService::new(service), breakers)
}
