use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use serde::Serialize;
use switchyard_core::classify::retry_after;
use switchyard_core::{BoxError, ErrorKind};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use crate::budget::Budget;
use crate::replay::ReplayBody;
use crate::RetryConfig;

/// Retries failed requests. See the [crate docs](crate).
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    config: RetryConfig,
    budget: Budget,
    stats: Counters,
}

/// Builds [`Retry`]; its clones share one budget and one set of counters.
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// A layer with `config`.
    pub fn new(config: RetryConfig) -> Self {
        let budget = Budget::new(config.budget);
        Self {
            shared: Arc::new(Shared {
                config,
                budget,
                stats: Counters::default(),
            }),
        }
    }

    /// The counters of every service this layer built.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats.snapshot()
    }
}

impl fmt::Debug for RetryLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S> Retry<S> {
    /// The counters shared with the layer that built this service.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats.snapshot()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for Retry<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Retry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry").field("inner", &self.inner).finish()
    }
}

/// Why an attempt was retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Status,
    Connect,
    CircuitOpen,
    NoBackends,
    PoolTimeout,
    /// The connection broke during an idempotent request.
    Upstream,
}

/// Retry counters, read from atomics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryStats {
    /// Requests seen.
    pub requests: u64,
    /// Attempts sent (first attempts and retries).
    pub attempts: u64,
    /// Retries made (the specification's `TotalRetries`).
    pub retries: u64,
    /// Retries of a 502, 503 or 504 (or another configured status).
    pub retries_status: u64,
    /// Retries of a failed connect.
    pub retries_connect: u64,
    /// Retries after the chosen backend's circuit was open.
    pub retries_circuit_open: u64,
    /// Retries after no backend was available.
    pub retries_no_backends: u64,
    /// Retries after waiting too long for a connection.
    pub retries_pool_timeout: u64,
    /// Retries of idempotent requests whose connection broke (a backend that went away).
    pub retries_upstream: u64,
    /// Failures returned as they were because the budget was spent.
    pub budget_exhausted: u64,
    /// Failures not retried because the request body was too large to replay.
    pub body_too_large: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    attempts: AtomicU64,
    status: AtomicU64,
    connect: AtomicU64,
    circuit_open: AtomicU64,
    no_backends: AtomicU64,
    pool_timeout: AtomicU64,
    upstream: AtomicU64,
    budget_exhausted: AtomicU64,
    body_too_large: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn retried(&self, reason: Reason) {
        bump(match reason {
            Reason::Status => &self.status,
            Reason::Connect => &self.connect,
            Reason::CircuitOpen => &self.circuit_open,
            Reason::NoBackends => &self.no_backends,
            Reason::PoolTimeout => &self.pool_timeout,
            Reason::Upstream => &self.upstream,
        });
    }

    fn snapshot(&self) -> RetryStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by_reason = [
            &self.status,
            &self.connect,
            &self.circuit_open,
            &self.no_backends,
            &self.pool_timeout,
        ];
        RetryStats {
            requests: get(&self.requests),
            attempts: get(&self.attempts),
            retries: by_reason.iter().map(|c| get(c)).sum(),
            retries_status: get(&self.status),
            retries_connect: get(&self.connect),
            retries_circuit_open: get(&self.circuit_open),
            retries_no_backends: get(&self.no_backends),
            retries_pool_timeout: get(&self.pool_timeout),
            retries_upstream: get(&self.upstream),
            budget_exhausted: get(&self.budget_exhausted),
            body_too_large: get(&self.body_too_large),
        }
    }
}

/// The response future of [`Retry`].
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send + 'static>>;

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<S, B, RB> Service<Request<B>> for Retry<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<Response<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service makes the first attempt; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(attempts(inner, shared, req))
    }
}

async fn attempts<S, B, RB>(
    mut svc: S,
    shared: Arc<Shared>,
    req: Request<B>,
) -> Result<Response<RB>, BoxError>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let config = &shared.config;
    // One clock read serves the budget and the deadline.
    let start = Instant::now();
    bump(&shared.stats.requests);
    shared.budget.deposit(start);
    let idempotent = idempotent(req.method());
    let retryable = config.max_retries > 0 && (config.non_idempotent || idempotent);
    let (parts, body) = req.into_parts();
    let (first, replay) = ReplayBody::new(body, if retryable { config.max_replay_body } else { 0 });
    bump(&shared.stats.attempts);
    if !retryable {
        // Never sent twice: the head goes down as it is, uncopied.
        return svc
            .call(Request::from_parts(parts, first))
            .await
            .map_err(Into::into);
    }
    let mut body = first;
    let mut retries = 0;
    loop {
        let result = svc
            .call(Request::from_parts(parts.clone(), body))
            .await
            .map_err(Into::into);
        if retries >= config.max_retries {
            return result;
        }
        let Some(reason) = should_retry(config, idempotent, &result) else {
            return result;
        };
        let delay = match &result {
            Ok(res)
                if matches!(
                    res.status(),
                    StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
                ) =>
            {
                match retry_after(res.headers()) {
                    Some(after) if after > config.retry_after_cap => return result,
                    Some(after) => after,
                    None => config.delay_for(retries + 1),
                }
            }
            _ => config.delay_for(retries + 1),
        };
        if config
            .deadline
            .is_some_and(|deadline| start.elapsed() + delay >= deadline)
        {
            return result;
        }
        if replay.overflowed() {
            bump(&shared.stats.body_too_large);
            return result;
        }
        if !shared.budget.withdraw() {
            bump(&shared.stats.budget_exhausted);
            tracing::debug!("retry budget spent; returning the failure");
            return result;
        }
        drop(result);
        let Some(next) = replay.next() else {
            bump(&shared.stats.body_too_large);
            return Err("request body too large to replay".into());
        };
        tracing::debug!(?reason, retry = retries + 1, ?delay, "retrying");
        tokio::time::sleep(delay).await;
        retries += 1;
        shared.stats.retried(reason);
        body = next;
        svc.ready().await.map_err(Into::into)?;
        bump(&shared.stats.attempts);
    }
}

/// The `grpc-status` a response carries in its headers (a trailers-only gRPC error).
fn grpc_status<RB>(res: &Response<RB>) -> Option<u32> {
    res.headers()
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn should_retry<RB>(
    config: &RetryConfig,
    idempotent: bool,
    result: &Result<Response<RB>, BoxError>,
) -> Option<Reason> {
    match result {
        Ok(res) => (config.statuses.contains(&res.status())
            || (!config.grpc_statuses.is_empty()
                && grpc_status(res).is_some_and(|code| config.grpc_statuses.contains(&code))))
        .then_some(Reason::Status),
        Err(err) => match ErrorKind::of(&**err) {
            ErrorKind::Connect => Some(Reason::Connect),
            ErrorKind::CircuitOpen => Some(Reason::CircuitOpen),
            ErrorKind::NoBackendsAvailable => Some(Reason::NoBackends),
            ErrorKind::PoolTimeout => Some(Reason::PoolTimeout),
            // The request may have reached the backend: safe to resend only if idempotent.
            ErrorKind::Upstream if idempotent => Some(Reason::Upstream),
            _ => None,
        },
    }
}
