//! Stored responses and their age and freshness (RFC 9111 §4.2).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::time::Instant;

use crate::directives::{delta_seconds, ResponseDirectives};
use crate::key::{vary_matches, VaryValues};
use crate::parts::Parts;
use crate::CacheConfig;

/// Variants kept per URL; storing another drops the oldest.
const MAX_VARIANTS: usize = 16;

/// Counted per stored response on top of its bytes: the struct, the header map's table.
const ENTRY_OVERHEAD: u64 = 256;

/// Counted per header line on top of its name and value.
const HEADER_OVERHEAD: u64 = 16;

/// Counted per run of a partial response's bytes on top of them.
const RUN_OVERHEAD: u64 = 32;

/// A stored response: its head and body, when it was fetched, and the request header
/// values its `Vary` selected; or a partial response: the ranges of one representation
/// that `206`s brought, waiting for the rest.
#[derive(Debug)]
pub struct Entry {
    head: Head,
    body: Bytes,
    /// The ranges held of a partial response (its `body` is empty).
    parts: Option<Parts>,
    weight: u64,
}

/// A stored response without its body: what is known when the response head arrives.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    /// The response's header fields as stored: without hop-by-hop fields, `Age`,
    /// `Set-Cookie` and the targeted fields, with a `Date`. What a hit sends as it is.
    pub(crate) headers: HeaderMap,
    /// The targeted fields ([`CacheConfig::targeted_fields`]) the response had: kept
    /// aside, out of what clients see, for a `304` to update.
    pub(crate) targeted: HeaderMap,
    pub(crate) vary: VaryValues,
    pub(crate) request_time: Instant,
    pub(crate) response_time: Instant,
    /// RFC 9111's `corrected_initial_age`.
    pub(crate) initial_age: Duration,
    pub(crate) lifetime: Duration,
    /// Whether the lifetime came from the response (not the heuristic).
    pub(crate) explicit: bool,
    pub(crate) directives: ResponseDirectives,
}

/// When a response was asked for and arrived, on tokio's clock, and the wall-clock time it
/// arrived (only to compare with its `Date`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Times {
    pub(crate) request: Instant,
    pub(crate) response: Instant,
    pub(crate) wall: SystemTime,
}

impl Times {
    /// Taken as a response head arrives for a request sent at `request`.
    pub(crate) fn now(request: Instant) -> Self {
        Self {
            request,
            response: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// The fields a response served from the store gets beside the stored ones.
const SERVED_FIELDS: usize = 4;

impl Head {
    /// The head of a response to store, under `config`'s heuristic freshness and
    /// targeted fields.
    pub(crate) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        vary: VaryValues,
        times: Times,
        config: &CacheConfig,
    ) -> Self {
        let directives = ResponseDirectives::parse(headers, &config.targeted_fields);
        // Room for what serving it adds (`Age`, `Cache-Status`, the proxy's `Via` and
        // `Date`): a hit's copy of the map then takes them without growing and rehashing.
        let mut stored = HeaderMap::with_capacity(headers.keys_len() + SERVED_FIELDS);
        copy_storable(headers, &mut stored);
        let initial_age = initial_age(headers, times);
        ensure_date(&mut stored, times.wall);
        let freshness = Freshness::of(status, &stored, &directives, config, times.wall);
        let targeted = take_targeted(&mut stored, &config.targeted_fields);
        Self {
            status,
            headers: stored,
            targeted,
            vary,
            request_time: times.request,
            response_time: times.response,
            initial_age,
            lifetime: freshness.lifetime,
            explicit: freshness.explicit,
            directives,
        }
    }

    /// This head updated by a `304 Not Modified` (RFC 9111 §3.2, §4.3.4): every field
    /// the 304 carries replaces the stored one (`ETag`, `Content-Encoding`,
    /// `Content-Range`, `Content-MD5`, the targeted fields included), except those never
    /// stored (hop-by-hop fields, those `Connection` lists, `Age`, `Set-Cookie`) and
    /// `Content-Length` (it describes the 304, not the stored body); age and freshness
    /// start again from the 304.
    pub(crate) fn refreshed(
        &self,
        not_modified: &HeaderMap,
        times: Times,
        config: &CacheConfig,
    ) -> Self {
        let mut headers = self.headers.clone();
        for (name, value) in &self.targeted {
            headers.append(name, value.clone());
        }
        let mut update = HeaderMap::new();
        copy_storable(not_modified, &mut update);
        update.remove(header::CONTENT_LENGTH);
        // The 304 is a message received now: without a Date, it gets one (RFC 9110 §6.6.1).
        ensure_date(&mut update, times.wall);
        for name in update.keys() {
            headers.remove(name);
        }
        for (name, value) in &update {
            headers.append(name, value.clone());
        }
        let directives = ResponseDirectives::parse(&headers, &config.targeted_fields);
        let freshness = Freshness::of(self.status, &headers, &directives, config, times.wall);
        let targeted = take_targeted(&mut headers, &config.targeted_fields);
        Self {
            status: self.status,
            headers,
            targeted,
            vary: self.vary.clone(),
            request_time: times.request,
            response_time: times.response,
            initial_age: initial_age(not_modified, times),
            lifetime: freshness.lifetime,
            explicit: freshness.explicit,
            directives,
        }
    }

    /// The memory a response with this head and a body of `body` bytes takes.
    pub(crate) fn weight(&self, body: usize) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .chain(&self.targeted)
            .map(|(n, v)| (n.as_str().len() + v.len()) as u64 + HEADER_OVERHEAD)
            .sum();
        let vary: u64 = self
            .vary
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.as_ref().map_or(0, HeaderValue::len)) as u64)
            .sum();
        ENTRY_OVERHEAD + headers + vary + body as u64
    }

    /// The stored response, with a `Content-Length` for its whole body (a HEAD answered
    /// from it says how long the GET would be).
    pub(crate) fn into_entry(mut self, body: Bytes) -> Entry {
        if self.status != StatusCode::NO_CONTENT {
            self.headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let weight = self.weight(body.len());
        Entry {
            head: self,
            body,
            parts: None,
            weight,
        }
    }

    /// A stored partial response: a `206` with this head (less the `Content-Length` of
    /// the part it came with) holding `parts`, weighing their bytes.
    pub(crate) fn into_partial(mut self, parts: Parts) -> Entry {
        self.status = StatusCode::PARTIAL_CONTENT;
        self.headers.remove(header::CONTENT_LENGTH);
        let weight = self.weight(parts.held()) + RUN_OVERHEAD * parts.runs() as u64;
        Entry {
            head: self,
            body: Bytes::new(),
            parts: Some(parts),
            weight,
        }
    }

    pub(crate) fn has_validator(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }
}

impl Entry {
    /// The status code: `206` for a partial response.
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    /// Whether it is a partial response: ranges of a representation, which answer range
    /// requests for the bytes they hold, and only those.
    pub fn is_partial(&self) -> bool {
        self.parts.is_some()
    }

    /// The header fields as stored: the response's, less hop-by-hop fields, `Age` (computed
    /// on each use), `Set-Cookie` (never handed to another client) and the targeted
    /// fields (for this cache only), with a `Date`.
    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The body, shared by every response served from it (empty for a partial response).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request header values the response was selected with (its `Vary` fields; `None`
    /// for a field the request did not have).
    pub fn vary(&self) -> impl Iterator<Item = (&HeaderName, Option<&HeaderValue>)> {
        self.head.vary.iter().map(|(n, v)| (n, v.as_ref()))
    }

    /// When the request that fetched (or last revalidated) it was sent.
    pub fn request_time(&self) -> Instant {
        self.head.request_time
    }

    /// When its response (or last `304`) arrived.
    pub fn response_time(&self) -> Instant {
        self.head.response_time
    }

    /// Its age at `now` (RFC 9111 §4.2.3's `current_age`).
    pub fn age(&self, now: Instant) -> Duration {
        self.head.initial_age + now.saturating_duration_since(self.head.response_time)
    }

    /// How long it stays fresh, counted from age 0.
    pub fn freshness_lifetime(&self) -> Duration {
        self.head.lifetime
    }

    /// The memory it is counted as taking, in bytes.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    pub(crate) fn parts(&self) -> Option<&Parts> {
        self.parts.as_ref()
    }

    pub(crate) fn directives(&self) -> &ResponseDirectives {
        &self.head.directives
    }
}

/// The responses stored for one URL: one per set of `Vary`-selected request header
/// values, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Variants {
    entries: Vec<Arc<Entry>>,
    weight: u64,
}

impl Variants {
    /// The stored responses, oldest first.
    pub fn entries(&self) -> &[Arc<Entry>] {
        &self.entries
    }

    /// Their weight together, in bytes.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// The newest response whose `Vary` fields match `request` (RFC 9111 §4.1).
    pub(crate) fn select(&self, request: &HeaderMap) -> Option<&Arc<Entry>> {
        self.entries
            .iter()
            .rev()
            .find(|e| vary_matches(&e.head.vary, request))
    }

    /// These variants with `entry` in place of those selected by the same request header
    /// values.
    pub(crate) fn with(&self, entry: Arc<Entry>) -> Variants {
        let mut entries: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| e.head.vary != entry.head.vary)
            .cloned()
            .collect();
        if entries.len() >= MAX_VARIANTS {
            entries.drain(..=entries.len() - MAX_VARIANTS);
        }
        entries.push(entry);
        Self::from_entries(entries)
    }

    /// These variants without `entry` (compared by identity).
    pub(crate) fn without(&self, entry: &Arc<Entry>) -> Variants {
        let entries: Vec<Arc<Entry>> = self
            .entries
            .iter()
            .filter(|e| !Arc::ptr_eq(e, entry))
            .cloned()
            .collect();
        Self::from_entries(entries)
    }

    pub(crate) fn from_entries(entries: Vec<Arc<Entry>>) -> Variants {
        let weight = entries.iter().map(|e| e.weight).sum();
        Variants { entries, weight }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A response's freshness lifetime (RFC 9111 §4.2.1) and whether it was explicit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    pub(crate) lifetime: Duration,
    pub(crate) explicit: bool,
}

impl Freshness {
    /// `s-maxage`, else `max-age`, else `Expires` − `Date` (unless the directives came
    /// from a targeted field), else where §4.2.2 allows a heuristic (a heuristically
    /// cacheable status, or `public`; a non-zero `ttl`) 10 % of `Date` − `Last-Modified`
    /// up to `heuristic_max`, else `ttl`; else 0. `received` stands in for a `Date` that
    /// does not parse (RFC 9110 §6.6.1).
    pub(crate) fn of(
        status: StatusCode,
        headers: &HeaderMap,
        directives: &ResponseDirectives,
        config: &CacheConfig,
        received: SystemTime,
    ) -> Self {
        let explicit = |lifetime| Freshness {
            lifetime,
            explicit: true,
        };
        if let Some(s) = directives.s_maxage {
            return explicit(s);
        }
        if let Some(m) = directives.max_age {
            return explicit(m);
        }
        let date = || http_date(headers.get(header::DATE)).unwrap_or(received);
        if let Some(expires) = headers
            .get(header::EXPIRES)
            .filter(|_| !directives.targeted)
        {
            // IMF-fixdate, RFC 850 or asctime (RFC 9110 §5.6.7); an invalid one (such
            // as "0") means already expired (RFC 9111 §5.3).
            return explicit(match http_date(Some(expires)) {
                Some(expires) => expires.duration_since(date()).unwrap_or_default(),
                None => Duration::ZERO,
            });
        }
        let allowed = heuristically_cacheable(status) || directives.public;
        let lifetime = if !allowed || config.ttl.is_zero() {
            Duration::ZERO
        } else {
            http_date(headers.get(header::LAST_MODIFIED))
                .filter(|_| !config.heuristic_max.is_zero())
                .and_then(|modified| date().duration_since(modified).ok())
                .map_or(config.ttl, |since| (since / 10).min(config.heuristic_max))
        };
        Freshness {
            lifetime,
            explicit: false,
        }
    }
}

/// RFC 9110 §15.1's heuristically cacheable statuses (206 left out: a partial response is
/// judged as the `200` it is part of, see `upstream`).
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

fn http_date(value: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(value?.to_str().ok()?).ok()
}

/// RFC 9111 §4.2.3's `corrected_initial_age`: the larger of the apparent age (arrival
/// minus `Date`, on the wall clock) and the response's `Age` plus the time the response
/// took to arrive.
fn initial_age(headers: &HeaderMap, times: Times) -> Duration {
    let apparent = http_date(headers.get(header::DATE))
        .and_then(|date| times.wall.duration_since(date).ok())
        .unwrap_or_default();
    let age = age_value(headers);
    let delay = times.response.saturating_duration_since(times.request);
    apparent.max(age + delay)
}

/// The `Age` (RFC 9111 §5.1): a delta-seconds (§1.2.2), digits only. A value that is not
/// one (negative, a fraction, a suffix or a parameter) counts as absent; of a list or of
/// several lines, the first valid value counts. Absent, it is 0 (§4.2.3's `age_value`).
pub(crate) fn age_value(headers: &HeaderMap) -> Duration {
    headers
        .get_all(header::AGE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .find(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(delta_seconds)
        .unwrap_or_default()
}

/// Moves the `targets` fields out of `headers`.
fn take_targeted(headers: &mut HeaderMap, targets: &[HeaderName]) -> HeaderMap {
    let mut taken = HeaderMap::new();
    for name in targets {
        if let header::Entry::Occupied(entry) = headers.entry(name) {
            let (name, values) = entry.remove_entry_mult();
            for value in values {
                taken.append(&name, value);
            }
        }
    }
    taken
}

/// RFC 9110 §6.6.1: a cache adds the `Date` it received a response without one.
fn ensure_date(headers: &mut HeaderMap, wall: SystemTime) {
    if !headers.contains_key(header::DATE) {
        if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(wall)) {
            headers.insert(header::DATE, date);
        }
    }
}

/// Copies the fields a cache keeps (RFC 9111 §3.1): not the connection's own fields nor
/// those `Connection` lists, not `Age` (recomputed on use), not `Set-Cookie` (one client's
/// cookie is never handed to another).
fn copy_storable(from: &HeaderMap, to: &mut HeaderMap) {
    let listed: Vec<&str> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for (name, value) in from {
        if is_hop_by_hop(name)
            || *name == header::AGE
            || *name == header::SET_COOKIE
            || listed.iter().any(|l| l.eq_ignore_ascii_case(name.as_str()))
        {
            continue;
        }
        to.append(name, value.clone());
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}
