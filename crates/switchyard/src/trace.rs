//! The top of the stack's side of the decision trace and of W3C Trace Context: each
//! request gets a [`Trace`] in its extensions (which the retry layer, the balancer and the
//! circuit breakers below fill in), its `traceparent` continued or started, and its
//! `Switchyard-Trace` header taken out; once the response head is out the trace is
//! finished, published to [`Traces`] (the recent requests and the live tail), and, when
//! the request carried the admin token in `Switchyard-Trace`, returned in that header.
//!
//! The cache's outcome is read from the response's `Cache-Status` member that the cache
//! layer writes (RFC 9211): it already says what the cache did and why, so the cache
//! writes nothing twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use arc_swap::ArcSwapOption;
use http::header::{Entry, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;
use pin_project_lite::pin_project;
use serde_json::{json, Map, Value};
use switchyard_core::trace::{AttemptEnd, CacheOutcome, Decision, Done};
use switchyard_core::{Trace, TraceContext};
use tokio::sync::broadcast::{self, error::RecvError};
use tower::{Layer, Service};

use crate::body::Body;
use crate::ClientAddr;

/// `Switchyard-Trace`: on a request, the admin token asking for the trace; on its
/// response, the trace as compact JSON. Never forwarded to a backend.
pub const SWITCHYARD_TRACE: HeaderName = HeaderName::from_static("switchyard-trace");
/// W3C Trace Context's `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C Trace Context's `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// How many finished traces [`Traces::recent`] keeps.
pub const RECENT: usize = 100;
/// How many traces a live subscriber may fall behind before it misses some.
const LIVE_BUFFER: usize = 1024;

/// Where finished traces go: the last [`RECENT`] requests, and a live feed for whoever
/// subscribes. Publishing takes no lock while nobody subscribes (the recent ring is a row
/// of atomic pointers, and the subscribers are counted in an atomic: the broadcast
/// channel's own count takes its lock), and never waits: a subscriber that lags misses
/// traces.
#[derive(Clone)]
pub struct Traces(Arc<Hub>);

struct Hub {
    recent: Box<[ArcSwapOption<Trace>]>,
    next: AtomicUsize,
    live: broadcast::Sender<Trace>,
    subscribers: AtomicUsize,
    token: ArcSwapOption<String>,
}

impl Default for Traces {
    fn default() -> Self {
        Self(Arc::new(Hub {
            recent: (0..RECENT).map(|_| ArcSwapOption::empty()).collect(),
            next: AtomicUsize::new(0),
            live: broadcast::channel(LIVE_BUFFER).0,
            subscribers: AtomicUsize::new(0),
            token: ArcSwapOption::empty(),
        }))
    }
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("published", &self.0.next.load(Ordering::Relaxed))
            .finish()
    }
}

impl Traces {
    /// The token a request must carry in `Switchyard-Trace` to get its trace back (the
    /// admin API's); `None`: no request gets it.
    pub fn set_token(&self, token: Option<&str>) {
        self.0.token.store(
            token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::new(t.to_owned())),
        );
    }

    /// Finished traces from now on. A subscriber that falls more than 1024 behind misses
    /// the oldest (`RecvError::Lagged`).
    pub fn subscribe(&self) -> Subscription {
        self.0.subscribers.fetch_add(1, Ordering::AcqRel);
        Subscription {
            live: self.0.live.subscribe(),
            hub: self.0.clone(),
        }
    }

    /// The last [`RECENT`] finished traces, oldest first.
    pub fn recent(&self) -> Vec<Trace> {
        let next = self.0.next.load(Ordering::Acquire);
        let n = self.0.recent.len();
        (next.saturating_sub(n)..next)
            .filter_map(|i| self.0.recent[i % n].load_full())
            .map(|t| (*t).clone())
            .collect()
    }

    fn publish(&self, trace: &Trace) {
        let i = self.0.next.fetch_add(1, Ordering::AcqRel);
        let n = self.0.recent.len();
        self.0.recent[i % n].store(Some(Arc::new(trace.clone())));
        if self.0.subscribers.load(Ordering::Acquire) > 0 {
            let _ = self.0.live.send(trace.clone());
        }
    }

    fn authorizes(&self, offered: &HeaderValue) -> bool {
        let token = self.0.token.load();
        token
            .as_deref()
            .is_some_and(|t| tokens_match(offered.as_bytes(), t.as_bytes()))
    }
}

/// Finished traces as they come: see [`Traces::subscribe`].
pub struct Subscription {
    live: broadcast::Receiver<Trace>,
    hub: Arc<Hub>,
}

impl Subscription {
    /// The next finished trace; `Lagged(n)` when `n` were missed.
    pub async fn recv(&mut self) -> Result<Trace, RecvError> {
        self.live.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

/// Whether a token offered is the one expected, compared in time independent of where
/// they differ.
pub fn tokens_match(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Makes [`RequestTrace`]s.
#[derive(Debug, Clone)]
pub struct RequestTraceLayer {
    traces: Traces,
    trace: bool,
    generate_traceparent: bool,
}

impl RequestTraceLayer {
    /// Publishes to `traces`; `trace`: keep decision traces; `generate_traceparent`: take
    /// part in W3C Trace Context (see [`ProxyConfig`](crate::ProxyConfig)).
    pub fn new(traces: Traces, trace: bool, generate_traceparent: bool) -> Self {
        Self {
            traces,
            trace,
            generate_traceparent,
        }
    }
}

impl<S> Layer<S> for RequestTraceLayer {
    type Service = RequestTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTrace {
            inner,
            layer: self.clone(),
        }
    }
}

/// Traces each request: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct RequestTrace<S> {
    inner: S,
    layer: RequestTraceLayer,
}

impl<S> RequestTrace<S> {
    switchyard_core::inner_accessors!(inner: S);
}

/// Continues the request's `traceparent` or starts one (and drops a `tracestate` that
/// belonged to an invalid one); returns the context.
fn trace_context<B>(req: &mut Request<B>, generate: bool) -> Option<TraceContext> {
    let headers = req.headers_mut();
    if !generate {
        let given = headers.get(TRACEPARENT)?;
        return TraceContext::continue_from(given.as_bytes());
    }
    // One lookup whether the request has one or not (most have none).
    let (context, invalid) = match headers.entry(TRACEPARENT) {
        Entry::Occupied(mut given) => {
            let context = TraceContext::continue_from(given.get().as_bytes());
            let invalid = context.is_none();
            let context = context.unwrap_or_else(TraceContext::generate);
            given.insert(traceparent_value(&context));
            (context, invalid)
        }
        Entry::Vacant(slot) => {
            let context = TraceContext::generate();
            slot.insert(traceparent_value(&context));
            (context, false)
        }
    };
    if invalid {
        headers.remove(TRACESTATE);
    }
    Some(context)
}

/// The `traceparent` header the backends get, formatted on the stack.
fn traceparent_value(context: &TraceContext) -> HeaderValue {
    HeaderValue::from_bytes(&context.traceparent_bytes()).expect("hex digits and dashes")
}

impl<S, B> Service<Request<B>> for RequestTrace<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let layer = &self.layer;
        let asked = req.headers_mut().remove(SWITCHYARD_TRACE);
        let context = trace_context(&mut req, layer.generate_traceparent);
        let trace = layer.trace.then(|| {
            let client = req.extensions().get::<ClientAddr>().map(ClientAddr::addr);
            let trace = Trace::new(req.method().clone(), req.uri().clone(), client, context);
            req.extensions_mut().insert(trace.clone());
            trace
        });
        let answer = asked.is_some_and(|token| layer.traces.authorizes(&token));
        ResponseFuture {
            inner: self.inner.call(req),
            trace: trace.map(|trace| Finish {
                trace,
                traces: layer.traces.clone(),
                answer,
            }),
        }
    }
}

struct Finish {
    trace: Trace,
    traces: Traces,
    /// Whether the response carries the trace back.
    answer: bool,
}

pin_project! {
    /// The response future of [`RequestTrace`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        trace: Option<Finish>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResponseFuture")
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some(Finish {
            trace,
            traces,
            answer,
        }) = this.trace.take()
        {
            trace.finish(Done {
                status: res.status().as_u16(),
                elapsed: trace.start().elapsed(),
                bytes: body_length(trace.method(), &res),
                cache: cache_outcome(res.headers()),
            });
            traces.publish(&trace);
            if answer {
                let compact = trace_json(&trace).to_string();
                if let Ok(value) = HeaderValue::try_from(compact) {
                    res.headers_mut().insert(SWITCHYARD_TRACE, value);
                }
            }
            res.extensions_mut().insert(trace);
        }
        Poll::Ready(Ok(res))
    }
}

/// The response body's length, when known with the head: from the body itself, or its
/// `Content-Length` (nothing for a HEAD, a 204 or a 304).
fn body_length(method: &http::Method, res: &Response<Body>) -> Option<u64> {
    let status = res.status();
    if method == http::Method::HEAD
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
    {
        return Some(0);
    }
    res.body().size_hint().exact().or_else(|| {
        let length = res.headers().get(http::header::CONTENT_LENGTH)?;
        length.to_str().ok()?.parse().ok()
    })
}

/// The cache's outcome, from its own (`switchyard`) member of `Cache-Status`.
fn cache_outcome(headers: &http::HeaderMap) -> Option<CacheOutcome> {
    let ours = headers
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .rfind(|member| member.trim_start().starts_with("switchyard"))?;
    let (mut hit, mut stored, mut collapsed) = (false, false, false);
    let (mut fwd, mut detail, mut fwd_status) = (None, None, None);
    for param in ours.split(';').skip(1).map(str::trim) {
        match param.split_once('=') {
            None if param == "hit" => hit = true,
            None if param == "stored" => stored = true,
            None if param == "collapsed" => collapsed = true,
            Some(("fwd", v)) => fwd = Some(known(v)),
            Some(("detail", v)) => detail = Some(known(v)),
            Some(("fwd-status", v)) => fwd_status = v.parse::<u16>().ok(),
            _ => {}
        }
    }
    let outcome = match (hit, detail.flatten(), fwd.flatten()) {
        (true, Some(_), _) => "stale",
        (true, None, _) => "hit",
        _ if collapsed => "coalesced",
        (_, _, Some("bypass" | "method")) => "bypassed",
        (_, _, Some("stale" | "request")) if fwd_status == Some(304) => "revalidated",
        _ => "miss",
    };
    Some(CacheOutcome {
        outcome,
        reason: fwd.flatten().or(detail.flatten()),
        stored,
    })
}

/// The cache's reasons as static strings (anything else is left out).
fn known(value: &str) -> Option<&'static str> {
    [
        "uri-miss",
        "vary-miss",
        "partial",
        "stale",
        "request",
        "method",
        "bypass",
        "stale-while-revalidate",
        "stale-if-error",
        "only-if-cached",
    ]
    .into_iter()
    .find(|k| *k == value)
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A trace as JSON: the request, what the cache did, each attempt and what came of it.
///
/// ```json
/// {"trace_id":"4bf9…","method":"GET","path":"/a","client":"127.0.0.1:50000",
///  "status":200,"bytes":5,"duration_ms":1.234,"backend":"b",
///  "cache":{"outcome":"miss","reason":"uri-miss","stored":true},
///  "attempts":[{"kind":"first","backend":"a","start_ms":0.1,"duration_ms":0.5,
///    "status":503,"decision":"retried","retry_after_ms":10.0,
///    "balancer":{"policy":"least_request","endpoints":3,"cost":1.0,
///      "alternative":{"backend":"c","cost":2.0}}},
///   {"kind":"retry","backend":"b",…,"status":200,"decision":"returned","why":"success"}]}
/// ```
pub fn trace_json(trace: &Trace) -> Value {
    let mut out = Map::new();
    if let Some(context) = trace.context() {
        out.insert("trace_id".into(), context.trace_id_hex().into());
        out.insert("span_id".into(), context.span_id_hex().into());
    }
    out.insert("method".into(), trace.method().as_str().into());
    let uri = trace.uri();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    out.insert("path".into(), path.into());
    if let Some(host) = uri.host() {
        out.insert("host".into(), host.into());
    }
    out.insert(
        "client".into(),
        trace.client().map(|c| c.to_string()).into(),
    );
    let done = trace.done();
    out.insert("status".into(), done.map(|d| d.status).into());
    out.insert("bytes".into(), done.and_then(|d| d.bytes).into());
    out.insert("duration_ms".into(), done.map(|d| ms(d.elapsed)).into());
    let attempts: Vec<_> = trace.attempts().collect();
    let answered = attempts
        .iter()
        .rev()
        .find(|a| matches!(a.end, Some(AttemptEnd::Status(_))))
        .and_then(|a| a.backend.as_deref());
    out.insert("backend".into(), answered.into());
    let cache = done
        .and_then(|d| d.cache)
        .map(|c| json!({ "outcome": c.outcome, "reason": c.reason, "stored": c.stored }));
    out.insert("cache".into(), cache.into());
    let attempts: Vec<Value> = attempts
        .iter()
        .map(|a| {
            let mut o = Map::new();
            o.insert("kind".into(), a.kind.name().into());
            o.insert("backend".into(), a.backend.as_deref().into());
            o.insert("start_ms".into(), ms(a.start).into());
            o.insert("duration_ms".into(), a.duration.map(ms).into());
            match a.end {
                Some(AttemptEnd::Status(status)) => o.insert("status".into(), status.into()),
                Some(AttemptEnd::Error(kind)) => o.insert("error".into(), kind.name().into()),
                Some(AttemptEnd::Abandoned) => o.insert("error".into(), "abandoned".into()),
                None => None,
            };
            match a.decision {
                Some(Decision::Retried { after }) => {
                    o.insert("decision".into(), "retried".into());
                    o.insert("retry_after_ms".into(), ms(after).into());
                }
                Some(Decision::Returned { why }) => {
                    o.insert("decision".into(), "returned".into());
                    o.insert("why".into(), why.into());
                }
                None => {}
            }
            if a.skipped_open > 0 {
                o.insert("skipped_open_circuits".into(), a.skipped_open.into());
            }
            if a.skipped_busy > 0 {
                o.insert("skipped_not_ready".into(), a.skipped_busy.into());
            }
            if a.probe {
                o.insert("probe".into(), true.into());
            }
            if let Some(b) = &a.balanced {
                let mut balancer = Map::new();
                balancer.insert("policy".into(), b.policy.into());
                balancer.insert("endpoints".into(), b.endpoints.into());
                if let Some(cost) = b.cost {
                    balancer.insert("cost".into(), cost.into());
                }
                if let Some(alt) = &b.alternative {
                    let alt = json!({ "backend": alt.backend.as_deref(), "cost": alt.cost });
                    balancer.insert("alternative".into(), alt);
                }
                o.insert("balancer".into(), balancer.into());
            }
            Value::Object(o)
        })
        .collect();
    out.insert("attempts".into(), attempts.into());
    if trace.untraced_attempts() > 0 {
        out.insert("untraced_attempts".into(), trace.untraced_attempts().into());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(value: &'static str) -> Option<CacheOutcome> {
        let mut headers = http::HeaderMap::new();
        headers.insert("cache-status", HeaderValue::from_static(value));
        cache_outcome(&headers)
    }

    #[test]
    fn the_cache_outcome_comes_from_our_cache_status_member() {
        let cases = [
            ("switchyard; hit; ttl=5", "hit", None, false),
            (
                "switchyard; hit; detail=stale-if-error",
                "stale",
                Some("stale-if-error"),
                false,
            ),
            (
                "origin; hit, switchyard; fwd=uri-miss; stored",
                "miss",
                Some("uri-miss"),
                true,
            ),
            (
                "switchyard; fwd=stale; fwd-status=304",
                "revalidated",
                Some("stale"),
                false,
            ),
            (
                "switchyard; fwd=uri-miss; collapsed",
                "coalesced",
                Some("uri-miss"),
                false,
            ),
            ("switchyard; fwd=method", "bypassed", Some("method"), false),
            (
                "switchyard; fwd=partial; stored",
                "miss",
                Some("partial"),
                true,
            ),
        ];
        for (value, outcome_, reason, stored) in cases {
            let expected = CacheOutcome {
                outcome: outcome_,
                reason,
                stored,
            };
            assert_eq!(outcome(value), Some(expected), "{value}");
        }
        assert_eq!(outcome("origin; hit"), None);
    }
}
