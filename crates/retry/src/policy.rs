//! What is retried and when: the [`Policy`] trait, and [`HttpPolicy`], the one built from a
//! [`RetryConfig`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use serde::Serialize;
use switchyard_core::{
    BoxError, Classify, Deadline, ErrorKind, NoBackendsAvailable, Outcome, StatusClassifier,
};
use tokio::time::Instant;

use crate::budget::Budget;
use crate::RetryConfig;

/// Decides, for each request through [`Retry`](crate::Retry), whether and when to send it
/// again. Like `tower::retry::Policy`, the service clones the policy for every request, so
/// that a clone can keep the state of one request (its start, its retries so far); what
/// its requests share (a budget, counters) sits behind an `Arc`.
///
/// The retry layer does the sending: it keeps the request head and the body
/// ([`ReplayBody`](crate::ReplayBody)), sleeps, readies the inner service and calls it.
pub trait Policy<Req, Res> {
    /// A request arrives, before its first attempt: how many bytes of its body may be kept
    /// to send it again, or `None` when it is sent once whatever happens.
    fn start(&mut self, req: &Req) -> Option<usize>;

    /// An attempt ended with `result`: how long to wait before sending the request again,
    /// or `None` to return `result`. `replayable` is false when the body outgrew what
    /// [`start`](Policy::start) allowed to keep, so that it cannot be sent again.
    fn retry(&mut self, result: &Result<Res, BoxError>, replayable: bool) -> Option<Duration>;

    /// An attempt is about to be sent (the first one included): the instant by which it
    /// must have its response head, or `None` for no bound of its own. The retry layer
    /// puts it in the attempt's extensions, where the circuit breaker reads it, and
    /// abandons the attempt when it passes, which ends in
    /// [`AttemptTimeout`](switchyard_core::AttemptTimeout) given to
    /// [`retry`](Policy::retry).
    fn attempt_deadline(&mut self) -> Option<Deadline> {
        None
    }

    /// When the whole request must be answered by, if it must: a retry that waits this
    /// long for the inner service to be ready fails with
    /// [`RequestTimeout`](switchyard_core::RequestTimeout). (Attempts are bounded by
    /// [`attempt_deadline`](Policy::attempt_deadline), backoffs by
    /// [`retry`](Policy::retry).)
    fn request_deadline(&self) -> Option<Deadline> {
        None
    }

    /// The attempt in flight was abandoned at its [`attempt_deadline`](Policy::attempt_deadline).
    fn on_attempt_timeout(&mut self) {}

    /// The retry [`retry`](Policy::retry) asked for is being sent: the wait is over and
    /// the inner service is ready.
    fn on_retry(&mut self) {}

    /// The retry [`retry`](Policy::retry) asked for cannot be made after all: the body
    /// outgrew its limit meanwhile. The request fails with
    /// [`BodyTooLarge`](crate::error::BodyTooLarge).
    fn on_body_too_large(&mut self) {}

    /// For a request that may be sent again (see [`start`](Policy::start)) and whose body
    /// is complete: how long its first attempt may go without a response before a second,
    /// hedged attempt is sent beside it (the balancer steers it to another backend); the
    /// first response wins and the other attempt is dropped. `None` (the default) never
    /// hedges.
    fn hedge_after(&mut self) -> Option<Duration> {
        None
    }

    /// The delay [`hedge_after`](Policy::hedge_after) gave has passed with the first
    /// attempt still in flight: whether to send the hedge (a policy with a budget may
    /// refuse). Called at most once per request.
    fn hedge(&mut self) -> bool {
        false
    }

    /// The hedged attempt answered first.
    fn on_hedge_won(&mut self) {}

    /// Why the last [`retry`](Policy::retry) returned `None`, for the request's decision
    /// trace: `success`, `not_retryable`, `max_retries`, `budget_exhausted`, `deadline`,
    /// `body_too_large`, `retry_after_too_long`. `None` (the default) when the policy does
    /// not say.
    fn declined(&self) -> Option<&'static str> {
        None
    }
}

/// The policy built from a [`RetryConfig`] (see the [crate docs](crate) for what it
/// retries). Responses are judged by a [`Classify`], by default a [`StatusClassifier`] of
/// [`RetryConfig::statuses`] and [`RetryConfig::grpc_statuses`]: what it calls a failure is
/// retried. Errors are retried by their [`ErrorKind`]: a failed connect and the proxy's
/// own refusals (open circuit, no backend, no connection in time), and for idempotent
/// methods a connection that broke mid-request or an attempt that timed out.
///
/// Clones share one budget and one set of counters.
pub struct HttpPolicy<C = StatusClassifier> {
    shared: Arc<Shared<C>>,
    /// When the request must be answered by (set by `start`): the earlier of the
    /// [`Deadline`] it came with and [`RetryConfig::deadline`] from its arrival.
    deadline: Option<Instant>,
    idempotent: bool,
    retries: u32,
    /// Why the pending retry is made.
    reason: Option<Reason>,
    /// Why the last retry was declined.
    declined: Option<&'static str>,
}

struct Shared<C> {
    config: RetryConfig,
    classifier: C,
    /// Shared with the policies [`HttpPolicy::reconfigured`] makes.
    budget: Arc<Budget>,
    stats: Arc<Counters>,
}

impl HttpPolicy {
    /// The policy of `config`.
    pub fn new(config: RetryConfig) -> Self {
        let classifier = StatusClassifier::new(config.statuses.clone())
            .grpc_statuses(config.grpc_statuses.clone());
        Self::with_classifier(config, classifier)
    }
}

impl HttpPolicy {
    /// A policy of `config` for requests from now on, as when a configuration is reloaded:
    /// it goes on counting in this policy's counters, and draws from this policy's budget
    /// while `config.budget` is the same. Requests that started with this policy finish
    /// with its settings.
    pub fn reconfigured(&self, config: RetryConfig) -> Self {
        let shared = &self.shared;
        let budget = match config.budget == shared.config.budget {
            true => shared.budget.clone(),
            false => Arc::new(Budget::new(config.budget)),
        };
        let classifier = StatusClassifier::new(config.statuses.clone())
            .grpc_statuses(config.grpc_statuses.clone());
        Self::from_parts(config, classifier, budget, shared.stats.clone())
    }
}

impl<C> HttpPolicy<C> {
    /// The policy of `config`, retrying the responses `classifier` calls failures instead of
    /// [`RetryConfig::statuses`] and [`RetryConfig::grpc_statuses`].
    pub fn with_classifier(config: RetryConfig, classifier: C) -> Self {
        let budget = Arc::new(Budget::new(config.budget));
        Self::from_parts(config, classifier, budget, Arc::default())
    }

    fn from_parts(
        config: RetryConfig,
        classifier: C,
        budget: Arc<Budget>,
        stats: Arc<Counters>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                classifier,
                budget,
                stats,
            }),
            deadline: None,
            idempotent: false,
            retries: 0,
            reason: None,
            declined: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.shared.config
    }

    /// The counters of every request this policy (or a clone) decided on.
    pub fn stats(&self) -> RetryStats {
        self.shared.stats.snapshot()
    }
}

impl<C> Clone for HttpPolicy<C> {
    /// A clone for a new request: it shares the budget and the counters.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            deadline: None,
            idempotent: false,
            retries: 0,
            reason: None,
            declined: None,
        }
    }
}

impl<C> fmt::Debug for HttpPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPolicy")
            .field("config", &self.shared.config)
            .finish()
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<B, RB, C> Policy<Request<B>, Response<RB>> for HttpPolicy<C>
where
    C: Classify<Response<RB>>,
{
    fn start(&mut self, req: &Request<B>) -> Option<usize> {
        let shared = &*self.shared;
        let config = &shared.config;
        // One clock read serves the budget and the deadline.
        let now = Instant::now();
        let given = req.extensions().get::<Deadline>().map(|d| d.instant());
        let own = config.deadline.map(|d| now + d);
        self.deadline = earliest(given, own);
        bump(&shared.stats.requests);
        shared.budget.deposit(now);
        // The first attempt.
        bump(&shared.stats.attempts);
        self.idempotent = idempotent(req.method());
        let retryable = config.max_retries > 0 && (config.non_idempotent || self.idempotent);
        retryable.then_some(config.max_replay_body)
    }

    fn retry(
        &mut self,
        result: &Result<Response<RB>, BoxError>,
        replayable: bool,
    ) -> Option<Duration> {
        let shared = &*self.shared;
        let config = &shared.config;
        let declined = &mut self.declined;
        let mut decline = |why| {
            *declined = Some(why);
            None
        };
        let (reason, retry_after) = match result {
            Ok(res) => match shared.classifier.classify(Ok(res)) {
                Outcome::Failure { retry_after } => (Reason::Status, retry_after),
                Outcome::Success | Outcome::Ignore => return decline("success"),
            },
            Err(err) => match Reason::of(err, self.idempotent) {
                Some(reason) => (reason, None),
                None => return decline("not_retryable"),
            },
        };
        if self.retries >= config.max_retries {
            return decline("max_retries");
        }
        let delay = match retry_after {
            Some(after) if after > config.retry_after_cap => {
                return decline("retry_after_too_long")
            }
            Some(after) => after,
            None => config.delay_for(self.retries + 1),
        };
        if let Some(deadline) = self.deadline {
            if Instant::now() + delay >= deadline {
                return decline("deadline");
            }
        }
        if !replayable {
            bump(&shared.stats.body_too_large);
            return decline("body_too_large");
        }
        if !shared.budget.withdraw() {
            bump(&shared.stats.budget_exhausted);
            tracing::debug!("retry budget spent; returning the failure");
            return decline("budget_exhausted");
        }
        tracing::debug!(?reason, retry = self.retries + 1, ?delay, "retrying");
        self.reason = Some(reason);
        Some(delay)
    }

    fn on_retry(&mut self) {
        self.retries += 1;
        let stats = &self.shared.stats;
        if let Some(reason) = self.reason.take() {
            stats.retried(reason);
        }
        bump(&stats.attempts);
    }

    fn on_body_too_large(&mut self) {
        bump(&self.shared.stats.body_too_large);
    }

    fn attempt_deadline(&mut self) -> Option<Deadline> {
        let timeout = self.shared.config.attempt_timeout?;
        earliest(Some(Instant::now() + timeout), self.deadline).map(Deadline::at)
    }

    fn on_attempt_timeout(&mut self) {
        bump(&self.shared.stats.attempt_timeouts);
    }

    fn request_deadline(&self) -> Option<Deadline> {
        self.deadline.map(Deadline::at)
    }

    fn hedge_after(&mut self) -> Option<Duration> {
        self.shared.config.hedge_after.filter(|_| self.idempotent)
    }

    fn hedge(&mut self) -> bool {
        let shared = &*self.shared;
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        // Hedges spend the retry budget: a fleet that turns slow is not sent twice the load.
        if !shared.budget.withdraw() {
            tracing::debug!("retry budget spent; not hedging");
            return false;
        }
        bump(&shared.stats.hedges);
        bump(&shared.stats.attempts);
        true
    }

    fn on_hedge_won(&mut self) {
        bump(&self.shared.stats.hedge_wins);
    }

    fn declined(&self) -> Option<&'static str> {
        self.declined
    }
}

/// The earlier of two optional instants (`None` is no bound).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
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
    /// An idempotent request's attempt had no response head within its attempt timeout.
    Timeout,
}

impl Reason {
    /// Why an error is retried, if it is.
    fn of(err: &BoxError, idempotent: bool) -> Option<Self> {
        match ErrorKind::of(&**err) {
            ErrorKind::Connect => Some(Self::Connect),
            ErrorKind::CircuitOpen => Some(Self::CircuitOpen),
            // Only when some backend was busy: with none at all, or every circuit open,
            // a backoff's wait finds the same, and the client would wait for nothing.
            ErrorKind::NoBackendsAvailable if busy(err) => Some(Self::NoBackends),
            ErrorKind::PoolTimeout => Some(Self::PoolTimeout),
            // The request may have reached the backend: safe to resend only if idempotent.
            ErrorKind::Upstream if idempotent => Some(Self::Upstream),
            ErrorKind::AttemptTimeout if idempotent => Some(Self::Timeout),
            _ => None,
        }
    }
}

/// Whether the [`NoBackendsAvailable`] in `err`'s chain saw a backend that was only busy.
fn busy(err: &BoxError) -> bool {
    let err: &(dyn std::error::Error + 'static) = &**err;
    std::iter::successors(Some(err), |e| e.source())
        .find_map(|e| e.downcast_ref::<NoBackendsAvailable>())
        .is_some_and(NoBackendsAvailable::is_busy)
}

/// Retry counters, read from atomics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RetryStats {
    /// Requests seen.
    pub requests: u64,
    /// Attempts sent (first attempts and retries).
    pub attempts: u64,
    /// Retries made (the specification's `TotalRetries`): the sum of the `retries_*`
    /// counts.
    pub retries: u64,
    /// Retries of a 502, 503 or 504 (or another configured status).
    pub retries_status: u64,
    /// Retries of a failed connect.
    pub retries_connect: u64,
    /// Retries after the chosen backend's circuit was open.
    pub retries_circuit_open: u64,
    /// Retries after no backend was available while some were busy (none at all, or
    /// every circuit open, is answered at once).
    pub retries_no_backends: u64,
    /// Retries after waiting too long for a connection.
    pub retries_pool_timeout: u64,
    /// Retries of idempotent requests whose connection broke (a backend that went away).
    pub retries_upstream: u64,
    /// Retries of idempotent requests whose attempt timed out.
    pub retries_timeout: u64,
    /// Attempts abandoned at their attempt deadline (retried or not).
    pub attempt_timeouts: u64,
    /// Hedged attempts sent ([`RetryConfig::hedge_after`]); not counted in `retries`.
    pub hedges: u64,
    /// Hedged attempts that answered before the attempt they hedged.
    pub hedge_wins: u64,
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
    timeout: AtomicU64,
    attempt_timeouts: AtomicU64,
    hedges: AtomicU64,
    hedge_wins: AtomicU64,
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
            Reason::Timeout => &self.timeout,
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
            &self.upstream,
            &self.timeout,
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
            retries_timeout: get(&self.timeout),
            attempt_timeouts: get(&self.attempt_timeouts),
            hedges: get(&self.hedges),
            hedge_wins: get(&self.hedge_wins),
            budget_exhausted: get(&self.budget_exhausted),
            body_too_large: get(&self.body_too_large),
        }
    }
}
