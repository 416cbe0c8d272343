//! A proxy stack built by hand from switchyard's layers.
//!
//! The facade's [`switchyard::Proxy`] gives the standard stack with runtime backend
//! management. Each layer also stands alone; this example picks a few and stacks them
//! with `ServiceBuilder` over a fixed list of backends, keeping typed errors instead of
//! error responses, and maps them by hand with [`switchyard::Error::status`].
//!
//! ```text
//!   Timeout (2 s) ─▶ ProxyHeaders ─▶ Balance (round robin) ─▶ HttpEndpoint × n
//! ```

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use http::{Request, Response, Uri};
use switchyard::endpoint::HttpEndpoint;
use switchyard::layers::balance::Balance;
use switchyard::{Body, BoxError, Error, PoolConfig, ProxyHeadersLayer};
use tower::discover::ServiceList;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

/// The hand-built stack: forwards a request to one of `backends` in turn, failing with a
/// typed [`Error`].
pub fn stack(
    backends: &[Uri],
    timeout: Duration,
) -> Result<BoxCloneSyncService<Request<Body>, Response<Body>, Error>, String> {
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
