use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::FutureExt;
use switchyard_core::{
    Alternative, AttemptSlot, Balanced, BoxError, ErrorKind, NoBackendsAvailable, RouteHint,
};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::discover::{Change, Discover};
use tower::Service;

use crate::future::{InFlight, ResponseFuture};
use crate::load::Load;
use crate::schedule::smooth_weighted_order;
use crate::slow_start;
use crate::weight::Weight;
use crate::{BalanceConfig, Policy};

/// Spreads requests over the endpoints of a [`Discover`] stream by a [`Policy`] (smooth
/// weighted round robin by default), skipping endpoints that are not ready and failing
/// fast with [`NoBackendsAvailable`] when none is. See the [crate docs](crate).
pub struct Balance<S, Req> {
    shared: Arc<Shared<S>>,
    /// The endpoint readied by `poll_ready`, taken by `call`.
    ready: Option<Picked<S>>,
    /// Finds a retry's [`RouteHint`] in a request, if requests carry one.
    hint: fn(&Req) -> Option<&RouteHint>,
    /// Endpoints skipped while readying `ready`, for the request's trace.
    skipped: Skipped,
    /// Finds an attempt's [`AttemptSlot`] in a request, if requests are traced.
    trace: fn(&Req) -> Option<&AttemptSlot>,
    /// Takes a request no endpoint was found for (see [`Balance::unsent`]).
    unsent: fn(Req),
    _req: PhantomData<fn(Req)>,
}

/// An endpoint chosen for a request.
struct Picked<S> {
    id: u64,
    svc: S,
    /// Its load, when the policy records it.
    load: Option<Arc<Load>>,
    /// When it was chosen, if the request's latency is recorded (peak EWMA): one clock
    /// read serves the choice and the measure.
    at: Option<Instant>,
    /// The policy it was chosen by.
    policy: Policy,
    /// Under a power-of-two-choices policy, when it was one of the two drawn: its cost,
    /// and the other's id and cost.
    drawn: Option<Drawn>,
}

/// How an endpoint's weight and name are read.
type Of<S> = (fn(&S) -> u32, fn(&S) -> Option<Arc<str>>);

/// The two endpoints of a power-of-two-choices draw, as the chosen one saw them.
#[derive(Debug, Clone, Copy)]
struct Drawn {
    cost: f64,
    other: u64,
    other_cost: f64,
}

struct Shared<S> {
    set: Arc<ArcSwap<EndpointSet<S>>>,
    /// The policy, as its index in [`Policy::ALL`]: it can change while requests flow.
    policy: AtomicU8,
    cursor: AtomicUsize,
    count: watch::Receiver<usize>,
    /// The slow-start window, followed by the driver.
    slow_start: watch::Sender<Duration>,
    driver: AbortHandle,
}

impl<S> Drop for Shared<S> {
    fn drop(&mut self) {
        // The last clone is gone: nobody reads the set any more.
        self.driver.abort();
    }
}

/// One published snapshot of the endpoint set.
struct EndpointSet<S> {
    services: Vec<S>,
    /// Each endpoint's id, unique for the balancer's life (a replaced endpoint gets a new
    /// one); ids start at 1.
    ids: Vec<u64>,
    /// Indices into `services`, one full smooth-weighted cycle.
    schedule: Vec<u32>,
    /// Each endpoint's load.
    loads: Vec<Arc<Load>>,
    /// Each endpoint's weight now (reduced while it is in its slow start).
    weights: Vec<f64>,
    /// Each endpoint's name ([`Weight::name`]), for decision traces.
    names: Vec<Option<Arc<str>>>,
}

impl<S> EndpointSet<S> {
    fn empty() -> Self {
        Self {
            services: Vec::new(),
            ids: Vec::new(),
            schedule: Vec::new(),
            loads: Vec::new(),
            weights: Vec::new(),
            names: Vec::new(),
        }
    }
}

impl<S, Req> Balance<S, Req>
where
    S: Clone + Send + Sync + 'static,
{
    /// Balances over `discover`, every endpoint with weight 1 (plain round robin).
    ///
    /// Spawns the task that drives `discover`, so it must be called from within a tokio
    /// runtime. The task ends when the stream ends or the last clone of the balancer is
    /// dropped.
    pub fn new<D>(discover: D) -> Self
    where
        D: Discover<Service = S> + Send + 'static,
        D::Key: Send,
        D::Error: Into<BoxError>,
    {
        Self::with_weights(discover, (|_| 1, |_| None), BalanceConfig::default())
    }

    /// Balances over `discover` in proportion to each endpoint's [`Weight`].
    pub fn weighted<D>(discover: D) -> Self
    where
        D: Discover<Service = S> + Send + 'static,
        D::Key: Send,
        D::Error: Into<BoxError>,
        S: Weight,
    {
        Self::weighted_with(discover, BalanceConfig::default())
    }

    /// Balances over `discover` by `config`'s policy, in proportion to each endpoint's
    /// [`Weight`], easing new endpoints in over `config`'s slow start.
    pub fn weighted_with<D>(discover: D, config: BalanceConfig) -> Self
    where
        D: Discover<Service = S> + Send + 'static,
        D::Key: Send,
        D::Error: Into<BoxError>,
        S: Weight,
    {
        Self::with_weights(discover, (|s| s.weight(), |s| s.name()), config)
    }

    fn with_weights<D>(discover: D, (weight_of, name_of): Of<S>, config: BalanceConfig) -> Self
    where
        D: Discover<Service = S> + Send + 'static,
        D::Key: Send,
        D::Error: Into<BoxError>,
    {
        let set = Arc::new(ArcSwap::from_pointee(EndpointSet::empty()));
        let (count_tx, count) = watch::channel(0);
        let (windows, slow_starts) = watch::channel(config.slow_start);
        let mut driver = Driver {
            discover: Box::pin(discover),
            endpoints: Vec::new(),
            next_id: 0,
            set: set.clone(),
            count: count_tx,
            weight_of,
            name_of,
            slow_start: config.slow_start,
            slow_starts,
            ramping: false,
        };
        // Endpoints the stream already holds (a static list, a pre-filled channel) are in
        // place before the first request, at full weight; later changes arrive through the
        // task.
        let slow_start = std::mem::take(&mut driver.slow_start);
        let live = driver.apply_ready(None);
        driver.slow_start = slow_start;
        let driver = tokio::spawn(driver.run(live));
        let shared = Shared {
            set,
            policy: AtomicU8::new(config.policy as u8),
            cursor: AtomicUsize::new(0),
            count,
            slow_start: windows,
            driver: driver.abort_handle(),
        };
        Self {
            shared: Arc::new(shared),
            ready: None,
            hint: |_| None,
            skipped: Skipped::default(),
            trace: |_| None,
            unsent: drop,
            _req: PhantomData,
        }
    }
}

impl<S, Req> Balance<S, Req> {
    /// Reads a [`RouteHint`] from each request with `hint`: when the endpoint readied for
    /// a request is the one its previous attempt went to, another ready endpoint is chosen
    /// if there is one, and the chosen endpoint is recorded in the hint. The retry layer
    /// puts the hint in an `http::Request`'s extensions, where
    /// [`RouteHint::in_extensions`] reads it.
    pub fn route_hints(mut self, hint: fn(&Req) -> Option<&RouteHint>) -> Self {
        self.hint = hint;
        self
    }

    /// Reads an [`AttemptSlot`] from each request with `trace`, and records in it the
    /// endpoints skipped for it: with an open circuit, or not ready.
    /// [`AttemptSlot::in_extensions`] reads it from an `http::Request`'s extensions.
    pub fn attempt_traces(mut self, trace: fn(&Req) -> Option<&AttemptSlot>) -> Self {
        self.trace = trace;
        self
    }

    /// Gives a request no endpoint was found for to `unsent` instead of dropping it: with
    /// [`GiveBack::give_back`](switchyard_core::GiveBack), its head goes back to a retry
    /// layer that sends heads again rather than copies of them.
    pub fn unsent(mut self, unsent: fn(Req)) -> Self {
        self.unsent = unsent;
        self
    }
}

/// Endpoints passed over while looking for a ready one.
#[derive(Debug, Clone, Copy, Default)]
struct Skipped {
    /// Their circuit was open.
    open: u16,
    /// Not ready, or failed otherwise.
    busy: u16,
}

impl<S, Req> Balance<S, Req> {
    /// The number of endpoints in the current set, ready or not.
    pub fn len(&self) -> usize {
        self.shared.set.load().services.len()
    }

    /// Whether the current set has no endpoint at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver of the endpoint count, updated each time a batch of discovery changes
    /// has been applied; `wait_for` on it waits until the balancer has seen a change.
    pub fn endpoint_count(&self) -> watch::Receiver<usize> {
        self.shared.count.clone()
    }

    /// How endpoints are chosen.
    pub fn policy(&self) -> Policy {
        Policy::ALL[usize::from(self.shared.policy.load(Ordering::Relaxed))]
    }

    /// Chooses by `policy` from the next pick on, for every clone of this balancer.
    /// Requests in flight finish as they started: each load they recorded is released,
    /// and what was not recorded is not.
    pub fn set_policy(&self, policy: Policy) {
        self.shared.policy.store(policy as u8, Ordering::Relaxed);
    }

    /// The slow-start window in force.
    pub fn slow_start(&self) -> Duration {
        *self.shared.slow_start.borrow()
    }

    /// Eases endpoints in over `window` from now on, for every clone of this balancer
    /// (zero: off). Endpoints in their ramp go on ramping over the new window from when
    /// they joined: a shorter one brings them to full weight sooner, zero at once.
    pub fn set_slow_start(&self, window: Duration) {
        self.shared.slow_start.send_replace(window);
    }
}

impl<S, Req> Balance<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    /// Picks a ready endpoint other than `avoid`: by the policy first (the next in
    /// schedule order, or the cheaper of two drawn at random, then the other), then, when
    /// those are not ready, the others in turn from a random one, each visited at most
    /// once; `None` when no endpoint is ready.
    fn select(
        &self,
        cx: &mut Context<'_>,
        avoid: Option<u64>,
        skipped: &mut Skipped,
    ) -> Option<Picked<S>> {
        let set = self.shared.set.load();
        let n = set.services.len();
        if n == 0 {
            return None;
        }
        let policy = self.policy();
        let at = (policy == Policy::PeakEwma).then(Instant::now);
        let (first, second) = match policy {
            Policy::RoundRobin => {
                let pos = self.shared.cursor.fetch_add(1, Ordering::Relaxed) % set.schedule.len();
                (set.schedule[pos] as usize, None)
            }
            _ if n == 1 => (0, None),
            _ => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let cost = |i: usize| {
                    let load = &set.loads[i];
                    let cost = match at {
                        Some(now) => load.cost(now),
                        None => (load.in_flight() + 1) as f64,
                    };
                    cost / set.weights[i]
                };
                let (ca, cb) = (cost(a), cost(b));
                if cb < ca {
                    (b, Some((a, cb, ca)))
                } else {
                    (a, Some((b, ca, cb)))
                }
            }
        };
        let mut try_one = |i: usize, drawn: Option<Drawn>| {
            if Some(set.ids[i]) == avoid {
                return None;
            }
            let mut svc = set.services[i].clone();
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => Some(Picked {
                    id: set.ids[i],
                    svc,
                    load: policy.measures().then(|| set.loads[i].clone()),
                    at,
                    policy,
                    drawn,
                }),
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    if ErrorKind::of(&*e) == ErrorKind::CircuitOpen {
                        skipped.open = skipped.open.saturating_add(1);
                    } else {
                        skipped.busy = skipped.busy.saturating_add(1);
                    }
                    tracing::debug!(endpoint = i, "endpoint failed; skipped");
                    None
                }
                Poll::Pending => {
                    skipped.busy = skipped.busy.saturating_add(1);
                    tracing::trace!(endpoint = i, "endpoint not ready; skipped");
                    None
                }
            }
        };
        // Each of a drawn pair, should it be chosen, sees the other as its alternative.
        let drawn = |(other, cost, other_cost): (usize, f64, f64)| Drawn {
            cost,
            other: set.ids[other],
            other_cost,
        };
        let first_drawn = second.map(drawn);
        let second_drawn =
            second.map(|(i, first_cost, cost)| (i, drawn((first, cost, first_cost))));
        let picked = try_one(first, first_drawn)
            .or_else(|| second_drawn.and_then(|(i, drawn)| try_one(i, Some(drawn))));
        if picked.is_some() {
            return picked;
        }
        // The others, from a random one of them: the picks of an endpoint that is not
        // ready (its circuit open, a priority group on standby) spread evenly over the
        // ready ones instead of all landing on the next one in order.
        if n == 1 {
            return None;
        }
        let start = first + 1 + fastrand::usize(..n - 1);
        (0..n)
            .map(|offset| (start + offset) % n)
            .filter(|&i| i != first && Some(i) != second.map(|(i, ..)| i))
            .find_map(|i| try_one(i, None))
    }
}

impl<S, Req> Balance<S, Req> {
    /// How `picked` was chosen, for its attempt's trace.
    fn balanced(&self, picked: &Picked<S>) -> Balanced {
        let set = self.shared.set.load();
        let name = |id: u64| {
            let i = set.ids.iter().position(|&x| x == id)?;
            set.names[i].clone()
        };
        Balanced {
            policy: picked.policy.name(),
            endpoints: u16::try_from(set.ids.len()).unwrap_or(u16::MAX),
            cost: picked.drawn.map(|d| d.cost),
            alternative: picked.drawn.map(|d| Alternative {
                backend: name(d.other),
                cost: d.other_cost,
            }),
        }
    }
}

impl<S, Req> Service<Req> for Balance<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    /// Always ready: readies the next endpoint if one is ready now, and otherwise lets
    /// `call` fail with [`NoBackendsAvailable`] instead of parking the caller.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_none() {
            let mut skipped = Skipped::default();
            self.ready = self.select(cx, None, &mut skipped);
            self.skipped = skipped;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let noop = &mut Context::from_waker(Waker::noop());
        // A caller that skipped `poll_ready`, or whose poll found nothing, gets one more
        // look at the current set (endpoints may have become ready since).
        let mut skipped = std::mem::take(&mut self.skipped);
        let mut ready = self.ready.take().or_else(|| {
            skipped = Skipped::default();
            self.select(noop, None, &mut skipped)
        });
        if let Some(hint) = (self.hint)(&req) {
            // A retry: go elsewhere than the previous attempt when something else is ready.
            if let (Some(last), Some(picked)) = (hint.last(), &ready) {
                if picked.id == last {
                    if let Some(other) = self.select(noop, Some(last), &mut Skipped::default()) {
                        ready = Some(other);
                    }
                }
            }
            if let Some(picked) = &ready {
                hint.set(picked.id);
            }
        }
        if let Some(slot) = (self.trace)(&req) {
            slot.skipped(skipped.open, skipped.busy);
            if let Some(picked) = &ready {
                slot.balanced(self.balanced(picked));
            }
        }
        match ready {
            Some(Picked {
                mut svc, load, at, ..
            }) => {
                let in_flight = load.map(|load| InFlight::new(load, at));
                ResponseFuture::called(svc.call(req), in_flight)
            }
            None => {
                (self.unsent)(req);
                let error = match skipped.busy {
                    0 => NoBackendsAvailable::new(),
                    _ => NoBackendsAvailable::busy(),
                };
                ResponseFuture::failed(error.into())
            }
        }
    }
}

impl<S, Req> Clone for Balance<S, Req> {
    /// Clones share the endpoint set and the round-robin position; a clone starts with no
    /// readied endpoint.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            ready: None,
            hint: self.hint,
            skipped: Skipped::default(),
            trace: self.trace,
            unsent: self.unsent,
            _req: PhantomData,
        }
    }
}

impl<S, Req> fmt::Debug for Balance<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balance")
            .field("endpoints", &self.len())
            .field("ready", &self.ready.is_some())
            .finish()
    }
}

/// What one poll of a discovery stream gives: `None` while nothing is ready, then the
/// stream's item (`None` once it has ended).
type Polled<D> = Option<
    Option<Result<Change<<D as Discover>::Key, <D as Discover>::Service>, <D as Discover>::Error>>,
>;

/// One endpoint as the driver keeps it.
struct Entry<K, S> {
    key: K,
    id: u64,
    service: S,
    load: Arc<Load>,
    /// When it joined the set, while its slow start may still run.
    since: Option<Instant>,
}

/// Owns the discovery stream and the endpoint list it describes; publishes snapshots.
struct Driver<D: Discover> {
    discover: Pin<Box<D>>,
    endpoints: Vec<Entry<D::Key, D::Service>>,
    next_id: u64,
    set: Arc<ArcSwap<EndpointSet<D::Service>>>,
    count: watch::Sender<usize>,
    weight_of: fn(&D::Service) -> u32,
    name_of: fn(&D::Service) -> Option<Arc<str>>,
    /// The slow-start window; zero when off.
    slow_start: Duration,
    /// Changes of the window ([`Balance::set_slow_start`]).
    slow_starts: watch::Receiver<Duration>,
    /// Whether the last snapshot has an endpoint in its slow start.
    ramping: bool,
}

impl<D> Driver<D>
where
    D: Discover,
    D::Service: Clone,
    D::Error: Into<BoxError>,
{
    /// Applies every change available now (starting with `first`, if any), then publishes
    /// one snapshot if anything changed. Returns `false` once the stream has ended.
    fn apply_ready(&mut self, first: Polled<D>) -> bool {
        let mut next = first.or_else(|| self.poll_now());
        let mut changed = false;
        let live = loop {
            match next {
                None => break true,
                Some(None) => break false,
                Some(Some(Err(e))) => {
                    let e: BoxError = e.into();
                    tracing::warn!(error = %e, "discovery failed; keeping the last endpoint set");
                    break false;
                }
                Some(Some(Ok(Change::Insert(key, service)))) => {
                    self.next_id += 1;
                    let id = self.next_id;
                    match self.endpoints.iter_mut().find(|e| e.key == key) {
                        // A new weight, say: the same endpoint, its load and ramp go on.
                        Some(entry) => (entry.id, entry.service) = (id, service),
                        None => self.endpoints.push(Entry {
                            key,
                            id,
                            service,
                            load: Arc::new(Load::new()),
                            since: (!self.slow_start.is_zero()).then(Instant::now),
                        }),
                    }
                }
                Some(Some(Ok(Change::Remove(key)))) => self.endpoints.retain(|e| e.key != key),
            }
            changed = true;
            next = self.poll_now();
        };
        if changed {
            self.publish();
        }
        live
    }

    fn poll_now(&mut self) -> Polled<D> {
        futures::future::poll_fn(|cx| self.discover.as_mut().poll_discover(cx)).now_or_never()
    }

    /// Publishes the endpoints with their weights now.
    fn publish(&mut self) {
        let now = Instant::now();
        let window = self.slow_start;
        let mut ramping = false;
        let weights: Vec<f64> = (self.endpoints.iter_mut())
            .map(|e| {
                let full = f64::from((self.weight_of)(&e.service).max(1));
                let fraction = e.since.and_then(|t| slow_start::fraction(t, now, window));
                if fraction.is_none() {
                    e.since = None;
                }
                ramping |= fraction.is_some();
                full * fraction.unwrap_or(1.0)
            })
            .collect();
        self.ramping = ramping;
        let schedule = smooth_weighted_order(&slow_start::schedule_weights(&weights, ramping));
        self.set.store(Arc::new(EndpointSet {
            services: self.endpoints.iter().map(|e| e.service.clone()).collect(),
            ids: self.endpoints.iter().map(|e| e.id).collect(),
            loads: self.endpoints.iter().map(|e| e.load.clone()).collect(),
            schedule,
            weights,
            names: self
                .endpoints
                .iter()
                .map(|e| (self.name_of)(&e.service))
                .collect(),
        }));
        self.count.send_replace(self.endpoints.len());
        tracing::debug!(
            endpoints = self.endpoints.len(),
            ramping,
            "endpoint set updated"
        );
    }

    /// Applies changes until the stream ends (`live` is `false` once it has), republishes
    /// the weights of endpoints in their slow start every step of the ramp, and follows
    /// a new slow-start window at once.
    async fn run(mut self, mut live: bool) {
        loop {
            let step = self.ramping.then(|| self.slow_start / slow_start::STEPS);
            if !live && step.is_none() {
                return;
            }
            let discover = &mut self.discover;
            let next = futures::future::poll_fn(|cx| discover.as_mut().poll_discover(cx));
            let ramp = async {
                match step {
                    Some(step) => tokio::time::sleep(step).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                change = next, if live => live = self.apply_ready(Some(change)),
                () = ramp => self.publish(),
                Ok(()) = self.slow_starts.changed() => {
                    self.slow_start = *self.slow_starts.borrow_and_update();
                    self.publish();
                }
            }
        }
    }
}
