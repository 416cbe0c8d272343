//! A gRPC client balanced over several tonic servers, with a circuit breaker per server
//! and retries, built by hand from switchyard's layers over pooled HTTP/2 connections.
//!
//! ```text
//!   GreeterClient (tonic::client::Grpc)
//!     ─▶ grpc_status        switchyard's errors become gRPC statuses (UNAVAILABLE…)
//!        Retry              gRPC calls are POSTs: opted in; retries grpc-status
//!                           UNAVAILABLE; each retry goes to another server
//!        Balance            round robin over the servers, skipping open breakers
//!        CircuitBreaker     one per server, judging by gRPC status (GrpcClassifier)
//!        HttpEndpoint       one per server: its own pool of HTTP/2 connections
//! ```
//!
//! What the caller sees:
//!
//! - **A server that is down** (connection refused) costs nothing visible: the attempt
//!   fails before the request is sent, the breaker counts a failure, and the call is
//!   retried on another server. Once the breaker trips, the balancer skips that server
//!   until the breaker's timeout has passed.
//! - **A server that answers `UNAVAILABLE`** (draining, overloaded) is treated the same:
//!   [`GrpcClassifier`] counts it as a failure, and the retry layer, told to retry gRPC
//!   code 14 (`RetryConfig::grpc_statuses`), retries the call elsewhere. gRPC servers
//!   report errors in `grpc-status` with HTTP status 200 (a "trailers-only" response),
//!   which both layers read. Retrying is safe here because `SayHello` is idempotent;
//!   leave `UNAVAILABLE` unretried for methods that are not.
//! - **A caller's error** (`INVALID_ARGUMENT`, `NOT_FOUND`…) comes back at once: it is not
//!   retried and does not count against the server.
//! - **No server left**: `UNAVAILABLE` (and `DEADLINE_EXCEEDED` for a timeout), from
//!   [`grpc_status`].
//!
//! The breaker only sees a status sent in the response headers; one sent in trailers
//! after a message (rare for unary calls) passes as a success.

pub mod greeter;

use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri};
use switchyard::endpoint::HttpEndpoint;
use switchyard::layers::balance::{Balance, RouteHint};
use switchyard::layers::breaker::GrpcClassifier;
use switchyard::layers::retry::{ReplayBody, RetryLayer};
use switchyard::{
    Body, BoxError, BreakerConfig, CircuitBreakers, ErrorKind, InvalidBackendUrl, PoolConfig,
    Protocol, RetryConfig, RetryStats,
};
use tonic::{Code, Status};
use tower::discover::ServiceList;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::greeter::GreeterClient;

/// The balanced channel: a `tonic::client::GrpcService`, `Clone + Send + Sync`.
pub type Channel = BoxCloneSyncService<Request<tonic::body::Body>, Response<Body>, BoxError>;

/// The stack over a fixed set of servers, with handles on its breakers and retries.
#[derive(Debug, Clone)]
pub struct GrpcStack {
    channel: Channel,
    breakers: CircuitBreakers,
    retry: RetryLayer,
}

impl GrpcStack {
    /// Balances over `servers` (id and `http://host:port`), each behind a breaker with
    /// `breaker`, retrying with `retry` (see [`retry_config`]).
    ///
    /// Must be called within a tokio runtime (the pools and the balancer spawn tasks).
    pub fn new(
        servers: &[(&str, Uri)],
        breaker: BreakerConfig,
        retry: RetryConfig,
    ) -> Result<Self, InvalidBackendUrl> {
        let breakers = CircuitBreakers::new(breaker);
        let pool = PoolConfig {
            protocol: Protocol::Http2,
            ..PoolConfig::default()
        };
        let endpoints = servers
            .iter()
            .map(|(id, url)| {
                let endpoint = HttpEndpoint::new(url, pool.clone())?;
                let breaker = breakers.layer(id).classifier(GrpcClassifier);
                Ok(tower::Layer::layer(&breaker, endpoint))
            })
            .collect::<Result<Vec<_>, InvalidBackendUrl>>()?;
        let balance =
            Balance::new(ServiceList::new(endpoints)).route_hints(RouteHint::in_extensions);
        let retry = RetryLayer::new(retry);
        let stack = ServiceBuilder::new()
            .map_request(|req: Request<tonic::body::Body>| req.map(switchyard::body::boxed))
            .map_err(grpc_status)
            .layer(retry.clone())
            // A body the retry layer keeps for replays is boxed; any other passes as it is.
            .map_request(|req: Request<ReplayBody<Body>>| {
                req.map(|b| b.into_passthrough().unwrap_or_else(switchyard::body::boxed))
            })
            .service(balance);
        Ok(Self {
            channel: BoxCloneSyncService::new(stack),
            breakers,
            retry,
        })
    }

    /// The channel, for any generated or hand-written tonic client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A `Greeter` client on the channel.
    pub fn client(&self) -> GreeterClient<Channel> {
        GreeterClient::new(self.channel())
    }

    /// The servers' breakers, by id.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.breakers
    }

    /// Retry counters.
    pub fn retry_stats(&self) -> RetryStats {
        self.retry.stats()
    }
}

/// Retries for gRPC: a trailers-only response whose `grpc-status` is `UNAVAILABLE` (14)
/// is retried; every call is a POST, so non-idempotent methods are opted in (right for
/// `SayHello`, which is idempotent; leave it off for RPCs that are not). HTTP 503 is
/// retried too (a proxy in between may answer it). Failed connects and open breakers are
/// retried whatever the method: the request was not sent.
pub fn retry_config() -> RetryConfig {
    RetryConfig {
        non_idempotent: true,
        statuses: vec![StatusCode::SERVICE_UNAVAILABLE],
        grpc_statuses: vec![Code::Unavailable as u32],
        ..RetryConfig::default()
    }
}

/// Turns the stack's errors into gRPC statuses: a timeout is `DEADLINE_EXCEEDED`;
/// everything else (no server available, open breakers, refused or broken connections)
/// is `UNAVAILABLE`, as gRPC reports transport failures. The error stays the source.
pub fn grpc_status(err: BoxError) -> BoxError {
    let code = match ErrorKind::of(&*err) {
        ErrorKind::RequestTimeout => Code::DeadlineExceeded,
        _ => Code::Unavailable,
    };
    let mut status = Status::new(code, err.to_string());
    status.set_source(Arc::from(err));
    Box::new(status)
}
