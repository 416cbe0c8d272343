use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower::Service;

use crate::body::CacheBody;
use crate::directives::RequestDirectives;
use crate::future::ResponseFuture;
use crate::key::primary_key;
use crate::policy::{answer_part, decide, serve, Use, STALE_WHILE_REVALIDATE};
use crate::shared::Shared;
use crate::stats::bump;
use crate::status::{CacheStatus, Fwd};
use crate::upstream::{pass, refresh_in_background, Forward};
use crate::{CacheConfig, CacheHandle, CacheLayer};

/// A shared HTTP response cache in front of `S`. See the [crate docs](crate).
///
/// A clone shares the store, the fetches in flight and the counters.
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Cache<S> {
    /// Caches `inner`'s responses in a store of its own (a [`MemoryStore`](crate::MemoryStore)).
    pub fn new(inner: S, config: CacheConfig) -> Self {
        CacheLayer::new(config).wrap(inner)
    }

    /// A layer that builds [`Cache`]s sharing one store; a shortcut for
    /// [`CacheLayer::new`].
    pub fn layer(config: CacheConfig) -> CacheLayer {
        CacheLayer::new(config)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A handle on the store and counters, shared with every clone of this service.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.shared.clone())
    }

    switchyard_core::inner_accessors!(inner: S);
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .finish()
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Requests the cache leaves alone although they are GET or HEAD: protocol upgrades
/// (WebSocket). (A `Range` is answered from a stored response; see `range`.)
fn bypass<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

impl<S, B, RB> Service<Request<B>> for Cache<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Default + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<CacheBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<RB, S::Error>;

    /// Always ready: a hit needs nothing from the inner service, so it is not held up
    /// while the inner service is busy or failing. A request that goes upstream readies
    /// a clone of the inner service in its response future, and an inner readiness
    /// error is that request's error (or, with `stale-if-error`, answered from the cache).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let method = req.method();
        let get_or_head = *method == Method::GET || *method == Method::HEAD;
        if !get_or_head || bypass(&req) {
            let fwd = if get_or_head {
                Fwd::Bypass
            } else {
                Fwd::Method
            };
            let invalidate = (!is_safe(method)).then(|| primary_key(req.uri(), req.headers()));
            let fut = pass(shared.clone(), self.inner.clone(), req, fwd, invalidate);
            return ResponseFuture::upstream(fut);
        }

        let key = primary_key(req.uri(), req.headers());
        let directives = RequestDirectives::parse(req.headers());
        let now = Instant::now();
        let lookup = shared.lookup(&key, req.headers());
        let mut fwd = if lookup.found {
            Fwd::VaryMiss
        } else {
            Fwd::UriMiss
        };
        let mut candidate = None;
        if let Some(entry) = lookup.entry.as_ref().filter(|e| e.is_partial()) {
            // A partial response answers only the ranges it holds: while fresh, or stale
            // where a complete response would be served stale (`stale-while-revalidate`,
            // refreshing the parts in the background; the request's `max-stale`). Else,
            // holding what is asked, it is revalidated with its strong validator (a 304
            // freshens it and it answers) and served stale if the origin fails within
            // `stale-if-error`; otherwise the request goes upstream as a miss would.
            fwd = Fwd::Partial;
            if *method == Method::GET {
                let headers = req.headers();
                let decision = decide(entry, entry.age(now), &directives, &shared.config);
                let status = match decision {
                    Use::Stale(detail) => CacheStatus::hit().detail(detail),
                    _ => CacheStatus::hit(),
                };
                let answer = answer_part(entry, now, headers, status);
                match (decision, answer) {
                    (Use::Fresh, Some(res)) => {
                        bump(&shared.stats.hits);
                        return ResponseFuture::ready(res);
                    }
                    (Use::Stale(detail), Some(res)) => {
                        bump(&shared.stats.stale_served);
                        bump(&shared.stats.hits);
                        if detail == STALE_WHILE_REVALIDATE {
                            refresh_in_background(shared, &self.inner, &key, entry, &req);
                        }
                        return ResponseFuture::ready(res);
                    }
                    (Use::Validate { stale }, Some(_)) => {
                        fwd = if stale { Fwd::Stale } else { Fwd::Request };
                        candidate = Some(entry.clone());
                    }
                    (_, None) => {}
                }
            }
        } else if let Some(entry) = lookup.entry {
            let decision = decide(&entry, entry.age(now), &directives, &shared.config);
            let status = match decision {
                Use::Fresh => Some(CacheStatus::hit()),
                Use::Stale(detail) => {
                    bump(&shared.stats.stale_served);
                    if detail == STALE_WHILE_REVALIDATE {
                        refresh_in_background(shared, &self.inner, &key, &entry, &req);
                    }
                    Some(CacheStatus::hit().detail(detail))
                }
                Use::Validate { stale } => {
                    fwd = if stale { Fwd::Stale } else { Fwd::Request };
                    None
                }
            };
            if let Some(status) = status {
                bump(&shared.stats.hits);
                return ResponseFuture::ready(serve(&entry, now, method, req.headers(), status));
            }
            candidate = Some(entry);
        }

        if directives.only_if_cached {
            return ResponseFuture::ready(gateway_timeout());
        }
        if *method == Method::HEAD {
            // HEAD is answered from a stored GET but never stored itself.
            bump(&shared.stats.misses);
            let fut = pass(shared.clone(), self.inner.clone(), req, fwd, None);
            return ResponseFuture::upstream(fut);
        }
        let forward = Forward::new(
            shared.clone(),
            self.inner.clone(),
            key,
            fwd,
            candidate,
            directives,
        );
        ResponseFuture::upstream(forward.run(req))
    }
}

/// RFC 9111 §5.2.1.7: `only-if-cached` and nothing usable stored.
fn gateway_timeout<RB>() -> Response<CacheBody<RB>> {
    let mut res = Response::new(CacheBody::empty());
    *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    CacheStatus::default()
        .detail("only-if-cached")
        .append_to(res.headers_mut());
    res
}
