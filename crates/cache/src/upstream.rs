//! The paths that go upstream: a GET miss or revalidation (coalesced, conditional, stored
//! as it streams, stale on failure), a background refresh, and everything passed through.

use std::borrow::Cow;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::{CacheBody, Tee};
use crate::directives::RequestDirectives;
use crate::entry::{Head, Times};
use crate::flight::{FlightGuard, Join};
use crate::key::{resolve_same_origin, vary_values};
use crate::policy::{
    answer_part, decide, is_failure, serve, serve_part, stale_if_error, storable, worth_storing,
    Use, STALE_IF_ERROR,
};
use crate::range;
use crate::shared::Shared;
use crate::stats::bump;
use crate::status::{CacheStatus, Fwd};
use crate::tier::Claim;
use crate::Entry;

/// The `Cache-Status` detail of a response found in the shared tier.
const SHARED_TIER: &str = "shared";

/// The request's own validators, replaced by the stored response's when revalidating.
/// (Its `If-Range` stays with its `Range`: when the stored response turns out not to
/// match, the origin's answer to the range is the client's.)
const CONDITIONALS: [header::HeaderName; 4] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// A GET going upstream for a URL.
pub(crate) struct Forward<S> {
    shared: Arc<Shared>,
    inner: S,
    key: String,
    fwd: Fwd,
    /// The stored response selected for the request, if any: revalidated when it has a
    /// validator, served when the upstream fails and `stale-if-error` allows.
    candidate: Option<Arc<Entry>>,
    directives: RequestDirectives,
    /// The lead of the URL's fetch, when this request has it.
    guard: Option<FlightGuard>,
    /// A background refresh: no client waits for it.
    background: bool,
}

impl<S> Forward<S> {
    /// A client's request, with what the lookup found.
    pub(crate) fn new(
        shared: Arc<Shared>,
        inner: S,
        key: String,
        fwd: Fwd,
        candidate: Option<Arc<Entry>>,
        directives: RequestDirectives,
    ) -> Self {
        Self {
            shared,
            inner,
            key,
            fwd,
            candidate,
            directives,
            guard: None,
            background: false,
        }
    }

    pub(crate) async fn run<B, RB>(
        mut self,
        mut req: Request<B>,
    ) -> Result<Response<CacheBody<RB>>, S::Error>
    where
        S: Service<Request<B>, Response = Response<RB>>,
        RB: Body<Data = Bytes>,
    {
        if let Some(res) = self.coalesce(req.method(), req.headers()).await {
            return Ok(res);
        }
        if let Some(res) = self.ask_shared_tier(req.method(), req.headers()).await {
            return Ok(res);
        }
        let req_headers = req.headers().clone();
        let validating = match &self.candidate {
            Some(c) => set_validators(req.headers_mut(), c.headers()),
            None => false,
        };
        let stats = &self.shared.stats;
        if validating {
            bump(&stats.revalidations);
        }
        if !self.background {
            bump(&stats.misses);
        }
        let sent = Instant::now();
        let result = match self.inner.ready().await {
            Ok(svc) => svc.call(req).await,
            Err(e) => Err(e),
        };
        let times = Times::now(sent);

        let res = match (result, self.fallback(times.response)) {
            (Err(_), Some(stale)) => {
                return Ok(self.serve_stale_if_error(&stale, times, &req_headers, None))
            }
            (Err(e), None) => return Err(e),
            (Ok(res), Some(stale)) if is_failure(res.status()) => {
                let status = Some(res.status().as_u16());
                return Ok(self.serve_stale_if_error(&stale, times, &req_headers, status));
            }
            (Ok(res), _) => res,
        };
        if validating && res.status() == StatusCode::NOT_MODIFIED {
            return Ok(self.refreshed(res.headers(), times, &req_headers));
        }
        Ok(self.respond(res, times, &req_headers))
    }

    /// Joins the URL's fetch: leads it, or waits for the leader's response and answers
    /// from it when it was stored. A request that must see the origin (`no-cache`) neither
    /// waits for another, nor does one that will not store what it gets (`no-store`). A
    /// `Range` request follows but never leads: it goes upstream as it is, and a partial
    /// response is not stored for others to use.
    /// (It takes the request's head by parts: a request body need not be `Sync`.)
    async fn coalesce<RB>(
        &mut self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<CacheBody<RB>>> {
        if self.background || self.directives.no_cache || self.directives.no_store {
            return None;
        }
        let shared = &self.shared;
        let ranged = headers.contains_key(header::RANGE);
        let mut done = if ranged {
            shared.flights.follow(&self.key)?
        } else {
            match shared.flights.join(&self.key) {
                Join::Lead(guard) => {
                    self.guard = Some(guard);
                    return None;
                }
                Join::Follow(done) => done,
            }
        };
        bump(&shared.stats.coalesced);
        let _ = tokio::time::timeout(shared.config.coalesce_wait, done.changed()).await;
        let now = Instant::now();
        let found = shared.lookup(&self.key, headers).entry;
        if let Some(entry) = found.as_ref().filter(|e| e.is_partial()) {
            let status = CacheStatus {
                collapsed: true,
                ..CacheStatus::fwd(self.fwd)
            };
            let (directives, config) = (&self.directives, &shared.config);
            if *method == Method::GET {
                if let Some(res) = serve_part(entry, now, headers, directives, config, status) {
                    bump(&shared.stats.hits);
                    return Some(res);
                }
            }
        } else if let Some(entry) = found {
            match decide(&entry, entry.age(now), &self.directives, &shared.config) {
                Use::Fresh => {
                    bump(&shared.stats.hits);
                    let status = CacheStatus {
                        collapsed: true,
                        ..CacheStatus::fwd(self.fwd)
                    };
                    return Some(serve(&entry, now, method, headers, status));
                }
                Use::Validate { stale: false } => self.fwd = Fwd::Request,
                _ => self.fwd = Fwd::Stale,
            }
            self.candidate = Some(entry);
        }
        // Not stored (or not in time): go upstream, leading the next requests if nobody
        // else does by now.
        if !ranged {
            self.guard = shared.flights.lead(&self.key);
        }
        None
    }

    /// Asks the shared tier before going upstream: answers from what it has when that is
    /// fresh for the request (and keeps it in the local store), or takes its stale copy
    /// as the one to revalidate. Nobody else in the fleet storing the URL yet, the request
    /// that leads its fetch here claims it for the fleet; when another instance has, it
    /// waits a bounded time for that instance's response. A request that must see the
    /// origin (`no-cache`) and a background refresh skip the tier.
    async fn ask_shared_tier<RB>(
        &mut self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<Response<CacheBody<RB>>> {
        let tier = self.shared.tier.clone()?;
        if self.background || self.directives.no_cache {
            return None;
        }
        let mut found = tier.get(&self.key).await;
        if found.is_none() && !self.directives.no_store {
            if let Some(guard) = self.guard.as_mut() {
                match tier.claim(&self.key).await {
                    Claim::Won(lock) => guard.hold(lock),
                    Claim::Taken => found = tier.wait_for(&self.key).await,
                    Claim::Unknown => {}
                }
            }
        }
        let found = found?;
        let shared = &self.shared;
        shared.adopt(&self.key, &found);
        let entry = found.select(headers)?.clone();
        let now = Instant::now();
        match decide(&entry, entry.age(now), &self.directives, &shared.config) {
            Use::Fresh => {
                bump(&shared.stats.hits);
                let status = CacheStatus::hit().detail(SHARED_TIER);
                Some(serve(&entry, now, method, headers, status))
            }
            Use::Validate { stale } if self.candidate.is_none() => {
                self.fwd = if stale { Fwd::Stale } else { Fwd::Request };
                self.candidate = Some(entry);
                None
            }
            _ => None,
        }
    }

    /// The stale response to serve if the upstream fails: only a stale one, only for a
    /// client that did not ask for a newer one, only within `stale-if-error`.
    fn fallback(&self, now: Instant) -> Option<Arc<Entry>> {
        self.candidate
            .as_ref()
            .filter(|c| {
                !self.background
                    && self.fwd == Fwd::Stale
                    && self.directives.max_age.is_none()
                    && stale_if_error(c, c.age(now), &self.shared.config)
            })
            .cloned()
    }

    fn serve_stale_if_error<RB>(
        &self,
        stale: &Entry,
        times: Times,
        req_headers: &HeaderMap,
        fwd_status: Option<u16>,
    ) -> Response<CacheBody<RB>> {
        bump(&self.shared.stats.stale_served);
        let status = CacheStatus {
            fwd_status,
            ..CacheStatus::fwd(Fwd::Stale)
        }
        .detail(STALE_IF_ERROR);
        match stale.is_partial() {
            // Chosen as a candidate only when its parts held what is asked.
            true => answer_part(stale, times.response, req_headers, status)
                .expect("the parts held the range when the request went upstream"),
            false => serve(stale, times.response, &Method::GET, req_headers, status),
        }
    }

    /// Updates the stored response from a `304 Not Modified` and answers from it.
    fn refreshed<RB>(
        mut self,
        not_modified: &HeaderMap,
        times: Times,
        req_headers: &HeaderMap,
    ) -> Response<CacheBody<RB>> {
        let shared = &self.shared;
        let stored = self
            .candidate
            .as_ref()
            .expect("revalidated a stored response");
        bump(&shared.stats.not_modified);
        let head = stored.head().refreshed(not_modified, times, &shared.config);
        // A cookie in the 304 is for this client (below) and never stored: the stored
        // response was chosen without it, as a stored 200 is kept without its cookie.
        let keep = !(head.directives.no_store || head.directives.private);
        let entry = Arc::new(match stored.parts() {
            Some(parts) => head.into_partial(parts.clone()),
            None => head.into_entry(stored.body().clone()),
        });
        if self.directives.no_store {
            // The request's `no-store` (RFC 9111 §5.2.1.5): nothing of this exchange is
            // stored; the stored response stays as it was.
        } else if keep {
            let lock = self.guard.as_mut().and_then(FlightGuard::take_remote);
            shared.store(self.key.clone(), entry.clone(), lock);
        } else {
            shared.remove(&self.key, stored);
        }
        let status = CacheStatus {
            fwd_status: Some(304),
            ..CacheStatus::fwd(self.fwd)
        };
        let mut res = match entry.is_partial() {
            true => answer_part(&entry, times.response, req_headers, status)
                .expect("the parts held the range when the request went upstream"),
            false => serve(&entry, times.response, &Method::GET, req_headers, status),
        };
        // A cookie the origin set in its 304 was meant for this client (and is not stored).
        for cookie in not_modified.get_all(header::SET_COOKIE) {
            res.headers_mut().append(header::SET_COOKIE, cookie.clone());
        }
        res
        // The guard drops here, once the refreshed response is stored.
    }

    /// A full response from upstream: stored as it streams when it may be (a `206` as
    /// the `200` it amounts to when it holds the whole representation, else as a part of
    /// it), passed through otherwise.
    fn respond<RB: Body<Data = Bytes>>(
        mut self,
        res: Response<RB>,
        times: Times,
        req_headers: &HeaderMap,
    ) -> Response<CacheBody<RB>> {
        let config = &self.shared.config;
        let (mut parts, body) = res.into_parts();
        let mut status = CacheStatus::fwd(self.fwd);
        let kind = match parts.status {
            StatusCode::PARTIAL_CONTENT => Kept::of_206(&parts.headers, config.max_object_size),
            _ => Some(Kept::Whole),
        };
        let (stored_status, stored_headers) = match kind {
            // RFC 9111 §3.4: judged, and stored, as the 200 it is (part of), without the
            // fields of the 206 alone.
            Some(Kept::Exactly(_) | Kept::Part(_)) => {
                let mut headers = parts.headers.clone();
                headers.remove(header::CONTENT_RANGE);
                (StatusCode::OK, Cow::Owned(headers))
            }
            _ => (parts.status, Cow::Borrowed(&parts.headers)),
        };
        let head = kind
            .and_then(|_| {
                storable(
                    req_headers,
                    &self.directives,
                    stored_status,
                    &stored_headers,
                    config,
                )
            })
            .map(|fields| {
                let vary = vary_values(&fields, req_headers);
                Head::new(stored_status, &stored_headers, vary, times, config)
            })
            .filter(|head| worth_storing(head, config));
        let limit = head
            .as_ref()
            .map(|head| config.max_object_size.saturating_sub(head.weight(0)));
        let hint = body.size_hint();
        let body = match (head, limit, kind) {
            (Some(head), Some(limit), Some(kind)) if hint.lower() <= limit => {
                status.stored = true;
                let (shared, key) = (self.shared.clone(), self.key.clone());
                let tee = Tee::new(
                    shared,
                    key,
                    head,
                    limit as usize,
                    hint.exact(),
                    kind,
                    self.guard.take(),
                );
                CacheBody::tee(body, tee)
            }
            _ => CacheBody::new(body),
        };
        if let Some(stale) = &self.candidate {
            let s = parts.status.as_u16();
            // The origin answered with a response that replaces the stored one but is not
            // stored itself: do not keep serving the old one.
            if !status.stored && s != 304 && s < 500 {
                self.shared.remove(&self.key, stale);
            }
        }
        strip_targeted(&mut parts.headers, &config.targeted_fields);
        status.append_to(&mut parts.headers);
        Response::from_parts(parts, body)
    }
}

/// What of an upstream response is kept once its body has all arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kept {
    /// The response as it is.
    Whole,
    /// A `206` holding the whole representation of this length, as its `200`.
    Exactly(usize),
    /// A `206` of one range, as a part of its representation, to combine with the
    /// parts stored already.
    Part(range::Part),
}

impl Kept {
    /// What of a `206` with `headers` is kept: all of a representation as its `200`; one
    /// range of a representation no longer than `max_size` with a strong validator (by
    /// which parts are told to be of one representation), as a part; else nothing.
    fn of_206(headers: &HeaderMap, max_size: u64) -> Option<Kept> {
        if let Some(len) = range::whole_length(headers) {
            return Some(Kept::Exactly(len as usize));
        }
        let part = range::part_of(headers)?;
        let validated = range::strong_validator(headers).is_some();
        (validated && part.len <= max_size).then_some(Kept::Part(part))
    }
}

/// Removes the targeted fields, meant for this cache, from a response to a client.
fn strip_targeted(headers: &mut HeaderMap, targets: &[header::HeaderName]) {
    for name in targets {
        headers.remove(name);
    }
}

/// Puts the stored response's validators on the request in place of the client's;
/// `false` when it has none.
fn set_validators(req: &mut HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored.get(header::ETAG).cloned();
    let last_modified = stored.get(header::LAST_MODIFIED).cloned();
    if etag.is_none() && last_modified.is_none() {
        return false;
    }
    for name in &CONDITIONALS {
        req.remove(name);
    }
    if let Some(etag) = etag {
        req.insert(header::IF_NONE_MATCH, etag);
    }
    if let Some(date) = last_modified {
        req.insert(header::IF_MODIFIED_SINCE, date);
    }
    true
}

/// Starts refreshing `entry` on a task of its own, unless its URL is already being
/// fetched or there is no tokio runtime to run it on.
pub(crate) fn refresh_in_background<S, B, RB>(
    shared: &Arc<Shared>,
    inner: &S,
    key: &str,
    entry: &Arc<Entry>,
    req: &Request<B>,
) where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    B: Default + Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(guard) = shared.flights.lead(key) else {
        return;
    };
    let mut refresh = Request::new(B::default());
    *refresh.method_mut() = Method::GET;
    *refresh.uri_mut() = req.uri().clone();
    *refresh.version_mut() = req.version();
    *refresh.headers_mut() = req.headers().clone();
    *refresh.extensions_mut() = req.extensions().clone();
    // The refresh is no part of the request that set it off: its attempts stay out of
    // that request's decision trace (published already).
    refresh.extensions_mut().remove::<switchyard_core::Trace>();
    // Without the request's validators (the stored response's take their place) and
    // its `If-Range`. A complete response is refreshed whole (without the `Range`), to
    // store it; parts with the range that was asked for, which they hold: a 304 freshens
    // them, a new response is stored by the usual rules.
    for name in CONDITIONALS.iter().chain([&header::IF_RANGE]) {
        refresh.headers_mut().remove(name);
    }
    if !entry.is_partial() {
        refresh.headers_mut().remove(header::RANGE);
    }
    let forward = Forward {
        guard: Some(guard),
        background: true,
        ..Forward::new(
            shared.clone(),
            inner.clone(),
            key.to_owned(),
            Fwd::Stale,
            Some(entry.clone()),
            RequestDirectives::default(),
        )
    };
    runtime.spawn(async move {
        if let Ok(res) = forward.run(refresh).await {
            // Reading the body to its end is what stores it.
            let mut body = pin!(res.into_body());
            while let Some(Ok(_)) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {}
        }
    });
}

/// A request the cache does not answer, passed upstream; a successful unsafe one
/// invalidates what is stored for `invalidate` and for its `Location` and
/// `Content-Location` on the same origin (RFC 9111 §4.4).
pub(crate) async fn pass<S, B, RB>(
    shared: Arc<Shared>,
    inner: S,
    req: Request<B>,
    fwd: Fwd,
    invalidate: Option<String>,
) -> Result<Response<CacheBody<RB>>, S::Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    let mut res = inner.oneshot(req).await?;
    let status = res.status();
    if let Some(key) = invalidate.filter(|_| status.is_success() || status.is_redirection()) {
        shared.invalidate(&key);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let targets: Vec<String> = res
                .headers()
                .get_all(&name)
                .iter()
                .filter_map(|v: &HeaderValue| resolve_same_origin(&key, v))
                .collect();
            for target in targets {
                shared.invalidate(&target);
            }
        }
    }
    strip_targeted(res.headers_mut(), &shared.config.targeted_fields);
    CacheStatus::fwd(fwd).append_to(res.headers_mut());
    Ok(res.map(CacheBody::new))
}
