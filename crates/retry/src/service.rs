use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::Body;
use switchyard_core::trace::{AttemptKind, ResponseStatus};
use switchyard_core::{BoxError, RouteHint, Trace};
use tower::Service;

use crate::future::{begin, set_deadline, Head, ResponseFuture};
use crate::replay::ReplayBody;
use crate::{HttpPolicy, Policy, RetryStats};

/// Retries failed requests as its [`Policy`] decides. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct Retry<S, P = HttpPolicy> {
    inner: S,
    policy: P,
    heads: Heads,
}

/// Where a retry's request head comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heads {
    /// A copy made before the first attempt.
    Copied,
    /// The head the services below hand back (to [`RouteHint::returning_heads`]).
    Returned,
}

impl<S, P> Retry<S, P> {
    /// Retries requests to `inner` as `policy` decides.
    pub fn new(inner: S, policy: P) -> Self {
        Self {
            inner,
            policy,
            heads: Heads::Copied,
        }
    }

    pub(crate) fn with_heads(mut self, heads: Heads) -> Self {
        self.heads = heads;
        self
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S, C> Retry<S, HttpPolicy<C>> {
    /// The counters shared with the layer that built this service.
    pub fn stats(&self) -> RetryStats {
        self.policy.stats()
    }
}

impl<S, P, B> Service<Request<B>> for Retry<S, P>
where
    S: Service<Request<ReplayBody<B>>> + Clone,
    S::Error: Into<BoxError>,
    S::Response: ResponseStatus,
    P: Policy<Request<B>, S::Response> + Clone,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, P, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The readied service makes the first attempt; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut policy = self.policy.clone();
        let limit = policy.start(&req);
        let deadline = policy.attempt_deadline();
        let (mut parts, body) = req.into_parts();
        if let Some(deadline) = deadline {
            // The breaker below reads it: an attempt abandoned past it is a timeout.
            set_deadline(&mut parts.extensions, deadline);
        }
        let trace = parts.extensions.get::<Trace>().cloned();
        let slot = begin(trace.as_ref(), AttemptKind::First, &mut parts.extensions);
        let Some(limit) = limit else {
            // Never sent twice: the request goes down as it is, uncopied and unhinted.
            let first = inner.call(Request::from_parts(parts, ReplayBody::passthrough(body)));
            return ResponseFuture::once(first, deadline, inner, policy, (trace, slot));
        };
        // A hedge sends the body a second time while the first attempt may still be
        // reading it: only a body that is already complete is hedged.
        let hedge_after = policy.hedge_after().filter(|_| body.is_end_stream());
        let (first, replay) = ReplayBody::new(body, limit);
        // The balancer below records each attempt's endpoint here, and steers a retry
        // (or a hedge) elsewhere; the services below hand the head back to it, when they
        // do.
        let head = match self.heads {
            // A hedge sends the head while the first attempt still has it.
            Heads::Returned if hedge_after.is_none() => {
                let hint = Arc::new(RouteHint::returning_heads());
                parts.extensions.insert(hint.clone());
                Head::Returned(hint)
            }
            _ => {
                parts.extensions.insert(Arc::new(RouteHint::new()));
                Head::Kept(Box::new(parts.clone()))
            }
        };
        let first = inner.call(Request::from_parts(parts, first));
        ResponseFuture::retrying(first, deadline, inner, policy, head, replay, (trace, slot))
            .hedged_after(hedge_after)
    }
}
