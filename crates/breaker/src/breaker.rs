use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use switchyard_core::{Outcome, SlidingCounts};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::{BreakerConfig, RateTrip};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
/// Between states while a trip writes the open deadline: treated as open.
const TRIPPING: u8 = 3;
const FORCED_OPEN: u8 = 4;

/// A breaker's state as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests are rejected until `until`.
    Open {
        /// When probing may start.
        until: Instant,
    },
    /// Probe requests are let through to test the backend.
    HalfOpen,
    /// Opened by an operator; stays open until forced closed.
    ForcedOpen,
}

impl State {
    /// Whether requests flow normally.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }

    /// A short name: `closed`, `open`, `half_open`, `forced_open`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
            Self::ForcedOpen => "forced_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A change of state of one breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The breaker's id (the backend's).
    pub id: Arc<str>,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
}

#[repr(align(128))]
struct Hot {
    state: AtomicU8,
    /// Consecutive failures while closed.
    failures: AtomicU32,
}

/// Whether a request may go through, decided in `poll_ready`.
#[derive(Debug)]
pub(crate) enum Admission {
    Closed,
    /// A half-open probe, for the probe generation it was admitted in.
    Probe(u64),
    Rejected,
}

/// One backend's breaker: its state in atomics, shared by every clone of the service.
pub struct Breaker {
    /// Read by every request: kept on a cache line of its own, away from the reference
    /// count that every request's clone of the `Arc` writes.
    hot: Hot,
    id: Arc<str>,
    /// Read on a failure, a probe and a trip; replaced by [`Breaker::set_config`].
    config: ArcSwap<BreakerConfig>,
    /// `config.enabled`, read by every admission and result without loading `config`.
    enabled: AtomicBool,
    epoch: Instant,
    /// Nanoseconds since `epoch` when an open breaker may probe.
    open_until: AtomicU64,
    /// Re-trips since the breaker was last closed: the exponent of the open time.
    reopens: AtomicU32,
    /// Increases at every trip; a probe's result counts only in its own generation.
    generation: AtomicU64,
    probes: AtomicU32,
    probe_successes: AtomicU32,
    trips: AtomicU64,
    window: Option<Window>,
    events: broadcast::Sender<Transition>,
}

impl Breaker {
    /// A closed breaker named `id` that publishes its transitions on `events`.
    pub fn new(
        id: impl Into<Arc<str>>,
        config: BreakerConfig,
        events: broadcast::Sender<Transition>,
    ) -> Self {
        let window = config.rate.map(Window::new);
        Self {
            id: id.into(),
            epoch: Instant::now(),
            hot: Hot {
                state: AtomicU8::new(CLOSED),
                failures: AtomicU32::new(0),
            },
            open_until: AtomicU64::new(0),
            reopens: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
            trips: AtomicU64::new(0),
            window,
            events,
            enabled: AtomicBool::new(config.enabled),
            config: ArcSwap::from_pointee(config),
        }
    }

    /// A breaker with its own transition channel (see [`Breaker::subscribe`]).
    pub fn standalone(id: impl Into<Arc<str>>, config: BreakerConfig) -> Self {
        Self::new(id, config, broadcast::channel(64).0)
    }

    /// The breaker's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The breaker's id, shared.
    pub fn id_arc(&self) -> &Arc<str> {
        &self.id
    }

    /// The breaker's settings.
    pub fn config(&self) -> Arc<BreakerConfig> {
        self.config.load_full()
    }

    /// Replaces the breaker's settings, keeping its state: the next admission and the next
    /// result are judged by `config` (a lower threshold trips at the next failure past it;
    /// an open circuit keeps the open time it was given). A changed `rate` applies to
    /// breakers made afterwards: this one keeps its window.
    pub fn set_config(&self, config: BreakerConfig) {
        self.enabled.store(config.enabled, Ordering::Release);
        self.config.store(Arc::new(config));
    }

    /// Transitions from now on. A subscriber that falls more than the channel's capacity
    /// behind loses the oldest (and is told so by `recv`).
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.events.subscribe()
    }

    /// The current state. An open breaker whose time is up reports `HalfOpen`: the next
    /// request will be a probe.
    pub fn state(&self) -> State {
        match self.hot.state.load(Ordering::Acquire) {
            CLOSED => State::Closed,
            HALF_OPEN => State::HalfOpen,
            FORCED_OPEN => State::ForcedOpen,
            _ => {
                let until = self.open_until.load(Ordering::Acquire);
                if self.now() >= until {
                    State::HalfOpen
                } else {
                    State::Open {
                        until: self.instant(until),
                    }
                }
            }
        }
    }

    /// How many times the breaker has tripped.
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Opens the breaker until [`Breaker::force_close`].
    pub fn force_open(&self) {
        let from = self.state();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.hot.state.store(FORCED_OPEN, Ordering::Release);
        tracing::warn!(backend = %self.id, "circuit forced open");
        self.publish(from, State::ForcedOpen);
    }

    /// Closes the breaker and forgets past failures.
    pub fn force_close(&self) {
        let from = self.state();
        self.close_now();
        tracing::info!(backend = %self.id, "circuit forced closed");
        self.publish(from, State::Closed);
    }

    /// Closes an open or half-open breaker and forgets its doubling, because something
    /// other than its probes showed the backend is back (its active health checks passed
    /// again after failing). Returns whether it closed: a closed breaker is left as it is,
    /// and so is one forced open (only an operator closes that) or one that a failure is
    /// tripping at this very moment (the newer news wins).
    pub fn reset(&self) -> bool {
        let state = self.hot.state.load(Ordering::Acquire);
        if state != OPEN && state != HALF_OPEN {
            return false;
        }
        let from = self.state();
        if self
            .hot
            .state
            .compare_exchange(state, TRIPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.close_now();
        tracing::info!(backend = %self.id, from = %from, "circuit closed: backend passed its health checks");
        self.publish(from, State::Closed);
        true
    }

    fn close_now(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.hot.failures.store(0, Ordering::Relaxed);
        self.reopens.store(0, Ordering::Relaxed);
        if let Some(w) = &self.window {
            w.clear();
        }
        self.hot.state.store(CLOSED, Ordering::Release);
    }

    fn now(&self) -> u64 {
        switchyard_core::nanos_since(self.epoch)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn publish(&self, from: State, to: State) {
        // No subscriber is fine: the send fails and the event is gone.
        let _ = self.events.send(Transition {
            id: self.id.clone(),
            from,
            to,
        });
    }

    /// Records a failure seen outside any request, such as a failed resolution of the
    /// backend's name: while the circuit is closed it counts like a refused connection
    /// (specification 15.3); an open or probing circuit is left to its probes.
    pub fn record_failure(&self) {
        if self.enabled.load(Ordering::Acquire) && self.hot.state.load(Ordering::Acquire) == CLOSED
        {
            self.record_closed(Outcome::Failure { retry_after: None });
        }
    }

    /// Decides whether a request may go through now.
    pub(crate) fn admit(&self) -> Admission {
        if !self.enabled.load(Ordering::Acquire) {
            return Admission::Closed;
        }
        match self.hot.state.load(Ordering::Acquire) {
            CLOSED => Admission::Closed,
            HALF_OPEN => self.try_probe(),
            OPEN => {
                if self.now() < self.open_until.load(Ordering::Acquire) {
                    return Admission::Rejected;
                }
                if self
                    .hot
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    tracing::info!(backend = %self.id, "circuit half-open: probing");
                    let until = self.instant(self.open_until.load(Ordering::Acquire));
                    self.publish(State::Open { until }, State::HalfOpen);
                }
                self.try_probe()
            }
            _ => Admission::Rejected,
        }
    }

    fn try_probe(&self) -> Admission {
        let generation = self.generation.load(Ordering::Acquire);
        let mut n = self.probes.load(Ordering::Acquire);
        let probes = self.config.load().probes.max(1);
        loop {
            if n >= probes || self.hot.state.load(Ordering::Acquire) != HALF_OPEN {
                return Admission::Rejected;
            }
            match self
                .probes
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Admission::Probe(generation),
                Err(now) => n = now,
            }
        }
    }

    /// Records the result of a request admitted by [`Breaker::admit`].
    pub(crate) fn record(&self, admission: &Admission, outcome: Outcome) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        match *admission {
            Admission::Closed => self.record_closed(outcome),
            Admission::Probe(generation) => self.record_probe(generation, outcome),
            Admission::Rejected => {}
        }
    }

    fn record_closed(&self, outcome: Outcome) {
        // A result that arrives after the breaker left the closed state says nothing new.
        match outcome {
            Outcome::Success => {
                if self.hot.failures.load(Ordering::Relaxed) != 0 {
                    self.hot.failures.store(0, Ordering::Relaxed);
                }
                if let Some(w) = &self.window {
                    w.record(false);
                }
            }
            Outcome::Failure { retry_after } => {
                let n = self.hot.failures.fetch_add(1, Ordering::AcqRel) + 1;
                let by_rate = match &self.window {
                    Some(w) => {
                        w.record(true);
                        w.tripped()
                    }
                    None => false,
                };
                if n >= self.config.load().threshold.max(1) || by_rate {
                    self.trip(CLOSED, retry_after);
                }
            }
            Outcome::Ignore => {}
        }
    }

    fn record_probe(&self, generation: u64, outcome: Outcome) {
        if generation != self.generation.load(Ordering::Acquire) {
            return; // the breaker moved on since this probe was admitted
        }
        match outcome {
            Outcome::Success => {
                let ok = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
                self.probes.fetch_sub(1, Ordering::AcqRel);
                if ok >= self.config.load().probe_successes.max(1)
                    && self
                        .hot
                        .state
                        .compare_exchange(HALF_OPEN, TRIPPING, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.close_now();
                    tracing::info!(backend = %self.id, "circuit closed: backend recovered");
                    self.publish(State::HalfOpen, State::Closed);
                }
            }
            Outcome::Failure { retry_after } => self.trip(HALF_OPEN, retry_after),
            Outcome::Ignore => {
                self.probes.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Releases a probe slot whose request was dropped before it had a result.
    pub(crate) fn cancel(&self, admission: &Admission) {
        if let Admission::Probe(generation) = *admission {
            self.record_probe(generation, Outcome::Ignore);
        }
    }

    fn trip(&self, from: u8, retry_after: Option<Duration>) {
        if self
            .hot
            .state
            .compare_exchange(from, TRIPPING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // somebody else tripped it, or it was forced
        }
        let reopens = if from == HALF_OPEN {
            self.reopens.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            self.reopens.store(0, Ordering::Release);
            0
        };
        let open_for = match retry_after {
            Some(d) => d.min(self.config.load().retry_after_cap),
            None => self.backoff(reopens),
        };
        let until = self
            .now()
            .saturating_add(u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX));
        self.open_until.store(until, Ordering::Release);
        self.probes.store(0, Ordering::Release);
        self.probe_successes.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.hot.state.store(OPEN, Ordering::Release);
        self.trips.fetch_add(1, Ordering::Relaxed);
        let from = if from == HALF_OPEN {
            State::HalfOpen
        } else {
            State::Closed
        };
        tracing::warn!(backend = %self.id, open_for = ?open_for, from = %from, "circuit opened");
        self.publish(
            from,
            State::Open {
                until: self.instant(until),
            },
        );
    }

    /// The open time after `reopens` re-trips: the timeout doubled each time, capped, with
    /// jitter on the doubled ones.
    fn backoff(&self, reopens: u32) -> Duration {
        let config = self.config.load();
        let base = config.timeout;
        if reopens == 0 {
            return base;
        }
        let doubled = base.saturating_mul(1u32.checked_shl(reopens.min(31)).unwrap_or(u32::MAX));
        let capped = doubled.min(config.max_timeout);
        let jitter = config.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return capped;
        }
        let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
        capped.mul_f64(factor)
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("id", &self.id)
            .field("state", &self.state())
            .field("trips", &self.trips())
            .finish()
    }
}

/// The optional failure-rate trip: requests and failures over a sliding window.
struct Window {
    trip: RateTrip,
    counts: SlidingCounts,
}

impl Window {
    fn new(trip: RateTrip) -> Self {
        Self {
            trip,
            counts: SlidingCounts::new(trip.window),
        }
    }

    fn record(&self, failed: bool) {
        self.counts.add(1, u32::from(failed));
    }

    fn tripped(&self) -> bool {
        let (total, failed) = self.counts.sums();
        total >= u64::from(self.trip.min_requests)
            && total > 0
            && failed as f64 / total as f64 >= self.trip.failure_ratio
    }

    fn clear(&self) {
        self.counts.clear();
    }
}
