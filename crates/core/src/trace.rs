//! The decision trace of one request: what the stack decided for it, written by the layers
//! as they decide, read once the response head is out.
//!
//! A [`Trace`] is made by the proxy's top layer and carried in the request's extensions
//! (it is an `Arc`: the retry layer's copies of the request share it). The retry layer
//! takes an [`AttemptSlot`] for each attempt and puts it in that attempt's extensions, where
//! the balancer notes the endpoints it skipped and the circuit breaker the backend it
//! admitted the attempt to. Every cell is written once by one layer, with atomics or a
//! [`OnceLock`]: no lock, one allocation per request.
//!
//! [`TraceContext`] is the W3C Trace Context (`traceparent`) of the request, which the
//! trace names it by.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Method, Uri};
use tokio::time::Instant;

use crate::ErrorKind;

/// At most this many attempts of a request are traced; more are counted
/// ([`Trace::untraced_attempts`]).
pub const MAX_TRACED_ATTEMPTS: usize = 8;

/// The decision trace of one request. Cheap to clone: clones share the record.
#[derive(Clone)]
pub struct Trace(Arc<Record>);

struct Record {
    start: Instant,
    method: Method,
    uri: Uri,
    client: Option<SocketAddr>,
    context: Option<TraceContext>,
    attempts: [Attempt; MAX_TRACED_ATTEMPTS],
    next: AtomicUsize,
    done: OnceLock<Done>,
}

/// What the request came to, set once its response head is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// The response's status.
    pub status: u16,
    /// From the request's arrival to its response head.
    pub elapsed: Duration,
    /// The response body's length, when known with the head.
    pub bytes: Option<u64>,
    /// What the response cache did, when the request went through it.
    pub cache: Option<CacheOutcome>,
}

/// What the response cache did with a request (from its `Cache-Status` member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOutcome {
    /// `hit`, `stale` (served stale), `miss`, `revalidated`, `coalesced` (answered by
    /// another request's fetch) or `bypassed`.
    pub outcome: &'static str,
    /// Why, when the cache says: RFC 9211's `fwd` reason (`uri-miss`, `vary-miss`,
    /// `partial`, `stale`, `request`, `method`, `bypass`) or its `detail`.
    pub reason: Option<&'static str>,
    /// The response was stored.
    pub stored: bool,
}

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// The request's first attempt.
    First,
    /// A retry after a failed attempt.
    Retry,
    /// A hedge sent beside a slow first attempt.
    Hedge,
}

impl AttemptKind {
    /// `first`, `retry` or `hedge`.
    pub fn name(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Retry => "retry",
            Self::Hedge => "hedge",
        }
    }

    fn from_u8(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::First),
            2 => Some(Self::Retry),
            3 => Some(Self::Hedge),
            _ => None,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptEnd {
    /// A response with this status.
    Status(u16),
    /// A failure without a response.
    Error(ErrorKind),
    /// Dropped unanswered: the other attempt of a hedged pair answered first.
    Abandoned,
}

impl AttemptEnd {
    fn encode(self) -> u16 {
        match self {
            Self::Status(s) => s.min(999),
            Self::Error(kind) => 1000 + kind as u16,
            Self::Abandoned => 2000,
        }
    }

    fn decode(n: u16) -> Option<Self> {
        match n {
            0 => None,
            1..=999 => Some(Self::Status(n)),
            2000 => Some(Self::Abandoned),
            _ => ErrorKind::ALL
                .get(usize::from(n - 1000))
                .map(|k| Self::Error(*k)),
        }
    }
}

/// What the retry layer decided after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Sent again after this delay.
    Retried {
        /// The backoff before the retry.
        after: Duration,
    },
    /// The attempt's result is the request's: `why` it was not retried (`success`,
    /// `not_retryable`, `max_retries`, `budget_exhausted`, `deadline`, `body_too_large`,
    /// `retry_after_too_long`, `once`: a request that is never sent twice).
    Returned {
        /// Why not retried.
        why: &'static str,
    },
}

#[derive(Default)]
struct Attempt {
    kind: AtomicU8,
    backend: OnceLock<Arc<str>>,
    /// Micros from the request's start.
    started: AtomicU32,
    /// Micros from the request's start, plus one; 0 while in flight.
    ended: AtomicU32,
    end: AtomicU16,
    decision: OnceLock<Decision>,
    skipped_open: AtomicU16,
    skipped_busy: AtomicU16,
    probe: AtomicBool,
    balanced: OnceLock<Balanced>,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX - 1)
}

impl Trace {
    /// A trace of a request arriving now.
    pub fn new(
        method: Method,
        uri: Uri,
        client: Option<SocketAddr>,
        context: Option<TraceContext>,
    ) -> Self {
        Self(Arc::new(Record {
            start: Instant::now(),
            method,
            uri,
            client,
            context,
            attempts: Default::default(),
            next: AtomicUsize::new(0),
            done: OnceLock::new(),
        }))
    }

    /// The trace a request carries in its extensions, if any.
    pub fn in_extensions<B>(req: &http::Request<B>) -> Option<&Trace> {
        req.extensions().get::<Trace>()
    }

    /// When the request arrived.
    pub fn start(&self) -> Instant {
        self.0.start
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.0.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &Uri {
        &self.0.uri
    }

    /// The client's address, when known.
    pub fn client(&self) -> Option<SocketAddr> {
        self.0.client
    }

    /// The request's W3C trace context, when it has one.
    pub fn context(&self) -> Option<&TraceContext> {
        self.0.context.as_ref()
    }

    /// A slot for a new attempt of `kind`, or `None` past [`MAX_TRACED_ATTEMPTS`].
    pub fn begin_attempt(&self, kind: AttemptKind) -> Option<AttemptSlot> {
        let index = self.0.next.fetch_add(1, Ordering::Relaxed);
        let attempt = self.0.attempts.get(index)?;
        attempt.kind.store(kind as u8 + 1, Ordering::Relaxed);
        attempt
            .started
            .store(micros(self.0.start.elapsed()), Ordering::Relaxed);
        Some(AttemptSlot {
            trace: self.clone(),
            index: index as u8,
        })
    }

    /// Attempts made beyond [`MAX_TRACED_ATTEMPTS`].
    pub fn untraced_attempts(&self) -> usize {
        self.0
            .next
            .load(Ordering::Relaxed)
            .saturating_sub(MAX_TRACED_ATTEMPTS)
    }

    /// The attempts, in the order they were made.
    pub fn attempts(&self) -> impl Iterator<Item = AttemptView> + '_ {
        let n = self.0.next.load(Ordering::Relaxed).min(MAX_TRACED_ATTEMPTS);
        self.0.attempts[..n].iter().map(|a| {
            let ended = a.ended.load(Ordering::Relaxed);
            let started = a.started.load(Ordering::Relaxed);
            AttemptView {
                kind: AttemptKind::from_u8(a.kind.load(Ordering::Relaxed))
                    .unwrap_or(AttemptKind::First),
                backend: a.backend.get().cloned(),
                start: Duration::from_micros(started.into()),
                duration: (ended > 0)
                    .then(|| Duration::from_micros((ended - 1).saturating_sub(started).into())),
                end: AttemptEnd::decode(a.end.load(Ordering::Relaxed)),
                decision: a.decision.get().copied(),
                skipped_open: a.skipped_open.load(Ordering::Relaxed),
                skipped_busy: a.skipped_busy.load(Ordering::Relaxed),
                probe: a.probe.load(Ordering::Relaxed),
                balanced: a.balanced.get().cloned(),
            }
        })
    }

    /// Records what the request came to; the first call wins.
    pub fn finish(&self, done: Done) {
        let _ = self.0.done.set(done);
    }

    /// What the request came to, once [`finish`](Self::finish)ed.
    pub fn done(&self) -> Option<&Done> {
        self.0.done.get()
    }
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("method", &self.0.method)
            .field("uri", &self.0.uri)
            .field("attempts", &self.attempts().collect::<Vec<_>>())
            .field("done", &self.done())
            .finish()
    }
}

/// How the balancer chose an attempt's endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Balanced {
    /// The policy in force: `round_robin`, `least_request` or `peak_ewma`.
    pub policy: &'static str,
    /// The endpoints in the set it chose from, ready or not.
    pub endpoints: u16,
    /// Under a power-of-two-choices policy, the chosen endpoint's cost when drawn (the
    /// lower is chosen; see the policy for what a cost is).
    pub cost: Option<f64>,
    /// Under a power-of-two-choices policy, the other endpoint drawn, which lost.
    pub alternative: Option<Alternative>,
}

/// The endpoint a power-of-two-choices draw passed over.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    /// Its backend, when the endpoint has a name.
    pub backend: Option<Arc<str>>,
    /// Its cost when drawn.
    pub cost: f64,
}

/// One attempt as traced.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptView {
    /// Why it was made.
    pub kind: AttemptKind,
    /// The backend its circuit breaker admitted it to; `None` when no backend took it.
    pub backend: Option<Arc<str>>,
    /// When it was sent, from the request's arrival.
    pub start: Duration,
    /// How long it took, once it ended.
    pub duration: Option<Duration>,
    /// How it ended.
    pub end: Option<AttemptEnd>,
    /// What the retry layer decided after it.
    pub decision: Option<Decision>,
    /// Endpoints the balancer skipped for it because their circuit was open.
    pub skipped_open: u16,
    /// Endpoints the balancer skipped for it because they were not ready (busy).
    pub skipped_busy: u16,
    /// It was a half-open circuit's probe.
    pub probe: bool,
    /// How the balancer chose its endpoint, when a balancer that records it chose one.
    pub balanced: Option<Balanced>,
}

/// One attempt's place in its request's [`Trace`], carried in the attempt's extensions.
#[derive(Clone)]
pub struct AttemptSlot {
    trace: Trace,
    index: u8,
}

impl fmt::Debug for AttemptSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AttemptSlot({})", self.index)
    }
}

impl AttemptSlot {
    /// The slot an attempt carries in its extensions, if any.
    pub fn in_extensions<B>(req: &http::Request<B>) -> Option<&AttemptSlot> {
        req.extensions().get::<AttemptSlot>()
    }

    fn cells(&self) -> &Attempt {
        &self.trace.0.attempts[usize::from(self.index)]
    }

    /// The attempt went to `backend` (its breaker admitted it), as a probe of a half-open
    /// circuit when `probe`.
    pub fn admitted(&self, backend: &Arc<str>, probe: bool) {
        let cells = self.cells();
        let _ = cells.backend.set(backend.clone());
        if probe {
            cells.probe.store(true, Ordering::Relaxed);
        }
    }

    /// The balancer skipped endpoints for it: `open` with an open circuit, `busy` not ready.
    pub fn skipped(&self, open: u16, busy: u16) {
        let cells = self.cells();
        cells.skipped_open.store(open, Ordering::Relaxed);
        cells.skipped_busy.store(busy, Ordering::Relaxed);
    }

    /// How the balancer chose the attempt's endpoint; the first call wins.
    pub fn balanced(&self, balanced: Balanced) {
        let _ = self.cells().balanced.set(balanced);
    }

    /// The attempt ended; the first end recorded wins.
    pub fn ended(&self, end: AttemptEnd) {
        let cells = self.cells();
        let at = micros(self.trace.0.start.elapsed()).saturating_add(1);
        if cells
            .end
            .compare_exchange(0, end.encode(), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            cells.ended.store(at, Ordering::Relaxed);
        }
    }

    /// What the retry layer decided after the attempt.
    pub fn decided(&self, decision: Decision) {
        let _ = self.cells().decision.set(decision);
    }
}

/// A request that may carry an [`AttemptSlot`]: implemented for `http::Request` (in its
/// extensions) and for `()` (never).
pub trait Traced {
    /// The attempt's slot in its request's trace, if traced.
    fn attempt_slot(&self) -> Option<&AttemptSlot>;
}

impl<B> Traced for http::Request<B> {
    fn attempt_slot(&self) -> Option<&AttemptSlot> {
        AttemptSlot::in_extensions(self)
    }
}

impl Traced for () {
    fn attempt_slot(&self) -> Option<&AttemptSlot> {
        None
    }
}

/// A response whose status an attempt's trace records: implemented for `http::Response`.
pub trait ResponseStatus {
    /// The status code.
    fn status_code(&self) -> u16;
}

impl<B> ResponseStatus for http::Response<B> {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// A W3C Trace Context (`traceparent`, version 00): the trace id the request belongs to,
/// the proxy's own span id (the parent the backends see) and the caller's, if it sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id: 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The proxy's span id, sent to the backends as the parent.
    pub span_id: [u8; 8],
    /// The caller's span id, when the request came with a `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn generate() -> Self {
        Self {
            trace_id: nonzero(|| fastrand::u128(..).to_be_bytes()),
            span_id: nonzero(|| fastrand::u64(..).to_be_bytes()),
            parent_id: None,
            flags: 1,
        }
    }

    /// The context a valid `traceparent` value continues: its trace id and flags, with a
    /// new span id for the proxy. `None` for a value that is not valid (W3C Trace Context
    /// §3.2: treated as absent).
    pub fn continue_from(traceparent: &[u8]) -> Option<Self> {
        // version "-" trace-id "-" parent-id "-" flags; a later version may append fields.
        if traceparent.len() < 55 || (traceparent.len() > 55 && traceparent[55] != b'-') {
            return None;
        }
        let version = hex::<1>(&traceparent[0..2])?[0];
        if version == 0xff || (version == 0 && traceparent.len() != 55) {
            return None;
        }
        if traceparent[2] != b'-' || traceparent[35] != b'-' || traceparent[52] != b'-' {
            return None;
        }
        let trace_id = hex::<16>(&traceparent[3..35]).filter(|id| *id != [0; 16])?;
        let parent_id = hex::<8>(&traceparent[36..52]).filter(|id| *id != [0; 8])?;
        let flags = hex::<1>(&traceparent[53..55])?[0];
        Some(Self {
            trace_id,
            span_id: nonzero(|| fastrand::u64(..).to_be_bytes()),
            parent_id: Some(parent_id),
            flags,
        })
    }

    /// The `traceparent` value the backends get: this trace, the proxy's span as parent.
    pub fn traceparent(&self) -> String {
        let bytes = self.traceparent_bytes();
        bytes.iter().map(|&b| char::from(b)).collect()
    }

    /// The same value as bytes, made on the stack: `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent_bytes(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        write_hex(&mut out[3..35], &self.trace_id);
        write_hex(&mut out[36..52], &self.span_id);
        write_hex(&mut out[53..55], &[self.flags]);
        out
    }

    /// The trace id in lowercase hex, as logs show it.
    pub fn trace_id_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    /// The proxy's span id in lowercase hex.
    pub fn span_id_hex(&self) -> String {
        let mut s = String::with_capacity(16);
        push_hex(&mut s, &self.span_id);
        s
    }
}

fn nonzero<const N: usize>(mut random: impl FnMut() -> [u8; N]) -> [u8; N] {
    loop {
        let id = random();
        if id != [0; N] {
            return id;
        }
    }
}

/// Lowercase hex only, as `traceparent` requires.
fn hex<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The length of a version-00 `traceparent` value.
pub const TRACEPARENT_LEN: usize = 55;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

fn push_hex(s: &mut String, bytes: &[u8]) {
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// `bytes` in lowercase hex into `out` (twice as long).
fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let ctx = TraceContext::continue_from(SAMPLE.as_bytes()).unwrap();
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_id,
            Some([0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(ctx.flags, 1);
        let sent = ctx.traceparent();
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(sent.ends_with("-01"));
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::continue_from(bad.as_bytes()), None, "{bad}");
        }
        // A later version may carry more fields.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(TraceContext::continue_from(later.as_bytes()).is_some());
    }

    #[test]
    fn a_generated_traceparent_parses() {
        let ctx = TraceContext::generate();
        let back = TraceContext::continue_from(ctx.traceparent().as_bytes()).unwrap();
        assert_eq!(back.trace_id, ctx.trace_id);
        assert_eq!(back.parent_id, Some(ctx.span_id));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_recorded_in_order() {
        let trace = Trace::new(Method::GET, Uri::from_static("/x"), None, None);
        let first = trace.begin_attempt(AttemptKind::First).unwrap();
        first.skipped(1, 0);
        first.admitted(&Arc::from("a"), false);
        tokio::time::advance(Duration::from_millis(3)).await;
        first.ended(AttemptEnd::Status(503));
        first.ended(AttemptEnd::Abandoned);
        first.decided(Decision::Retried {
            after: Duration::from_millis(1),
        });
        let second = trace.begin_attempt(AttemptKind::Retry).unwrap();
        second.ended(AttemptEnd::Error(ErrorKind::CircuitOpen));
        let attempts: Vec<_> = trace.attempts().collect();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].backend.as_deref(), Some("a"));
        assert_eq!(attempts[0].end, Some(AttemptEnd::Status(503)));
        assert_eq!(attempts[0].duration, Some(Duration::from_millis(3)));
        assert_eq!(attempts[0].skipped_open, 1);
        assert_eq!(attempts[1].kind, AttemptKind::Retry);
        assert_eq!(
            attempts[1].end,
            Some(AttemptEnd::Error(ErrorKind::CircuitOpen))
        );
        assert_eq!(attempts[1].backend, None);
    }
}
