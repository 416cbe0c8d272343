use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;
use futures::FutureExt;
use switchyard_core::{AttemptSlot, BoxError, ErrorKind, NoBackendsAvailable, RouteHint};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tower::discover::{Change, Discover};
use tower::Service;

use crate::schedule::smooth_weighted_order;
use crate::weight::Weight;
use crate::ResponseFuture;

/// Spreads requests over the endpoints of a [`Discover`] stream in smooth weighted
/// round-robin order, skipping endpoints that are not ready and failing fast with
/// [`NoBackendsAvailable`] when none is. See the [crate docs](crate).
pub struct Balance<S, Req> {
    shared: Arc<Shared<S>>,
    /// The endpoint readied by `poll_ready` (with its id), taken by `call`.
    ready: Option<(u64, S)>,
    /// Finds a retry's [`RouteHint`] in a request, if requests carry one.
    hint: fn(&Req) -> Option<&RouteHint>,
    /// Endpoints skipped while readying `ready`, for the request's trace.
    skipped: Skipped,
    /// Finds an attempt's [`AttemptSlot`] in a request, if requests are traced.
    trace: fn(&Req) -> Option<&AttemptSlot>,
    _req: PhantomData<fn(Req)>,
}

struct Shared<S> {
    set: Arc<ArcSwap<EndpointSet<S>>>,
    cursor: AtomicUsize,
    count: watch::Receiver<usize>,
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
}

impl<S> EndpointSet<S> {
    fn empty() -> Self {
        Self {
            services: Vec::new(),
            ids: Vec::new(),
            schedule: Vec::new(),
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
        Self::with_weights(discover, |_| 1)
    }

    /// Balances over `discover` in proportion to each endpoint's [`Weight`].
    pub fn weighted<D>(discover: D) -> Self
    where
        D: Discover<Service = S> + Send + 'static,
        D::Key: Send,
        D::Error: Into<BoxError>,
        S: Weight,
    {
        Self::with_weights(discover, |s| s.weight())
    }

    fn with_weights<D>(discover: D, weight_of: fn(&S) -> u32) -> Self
    where
        D: Discover<Service = S> + Send + 'static,
        D::Key: Send,
        D::Error: Into<BoxError>,
    {
        let set = Arc::new(ArcSwap::from_pointee(EndpointSet::empty()));
        let (count_tx, count) = watch::channel(0);
        let mut driver = Driver {
            discover: Box::pin(discover),
            endpoints: Vec::new(),
            next_id: 0,
            set: set.clone(),
            count: count_tx,
            weight_of,
        };
        // Endpoints the stream already holds (a static list, a pre-filled channel) are in
        // place before the first request; later changes arrive through the task.
        let live = driver.apply_ready(None);
        let driver = tokio::spawn(async move {
            if live {
                driver.run().await;
            }
        });
        let shared = Shared {
            set,
            cursor: AtomicUsize::new(0),
            count,
            driver: driver.abort_handle(),
        };
        Self {
            shared: Arc::new(shared),
            ready: None,
            hint: |_| None,
            skipped: Skipped::default(),
            trace: |_| None,
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
}

impl<S, Req> Balance<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    /// Picks the next endpoint in schedule order that is ready now, other than `avoid`.
    /// Endpoints that are not ready are skipped, each visited at most once; `None` when no
    /// endpoint is ready.
    fn select(
        &self,
        cx: &mut Context<'_>,
        avoid: Option<u64>,
        skipped: &mut Skipped,
    ) -> Option<(u64, S)> {
        let set = self.shared.set.load();
        let n = set.services.len();
        if n == 0 {
            return None;
        }
        let pos = self.shared.cursor.fetch_add(1, Ordering::Relaxed) % set.schedule.len();
        let first = set.schedule[pos] as usize;
        for offset in 0..n {
            let i = (first + offset) % n;
            if Some(set.ids[i]) == avoid {
                continue;
            }
            let mut svc = set.services[i].clone();
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => return Some((set.ids[i], svc)),
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    if ErrorKind::of(&*e) == ErrorKind::CircuitOpen {
                        skipped.open = skipped.open.saturating_add(1);
                    } else {
                        skipped.busy = skipped.busy.saturating_add(1);
                    }
                    tracing::debug!(endpoint = (first + offset) % n, "endpoint failed; skipped")
                }
                Poll::Pending => {
                    skipped.busy = skipped.busy.saturating_add(1);
                    tracing::trace!(
                        endpoint = (first + offset) % n,
                        "endpoint not ready; skipped"
                    )
                }
            }
        }
        None
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
        if let Some(slot) = (self.trace)(&req) {
            slot.skipped(skipped.open, skipped.busy);
        }
        if let Some(hint) = (self.hint)(&req) {
            // A retry: go elsewhere than the previous attempt when something else is ready.
            if let (Some(last), Some((id, _))) = (hint.last(), &ready) {
                if *id == last {
                    if let Some(other) = self.select(noop, Some(last), &mut Skipped::default()) {
                        ready = Some(other);
                    }
                }
            }
            if let Some((id, _)) = &ready {
                hint.set(*id);
            }
        }
        match ready {
            Some((_, mut svc)) => ResponseFuture::called(svc.call(req)),
            None => ResponseFuture::failed(NoBackendsAvailable::new().into()),
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

/// Owns the discovery stream and the endpoint list it describes; publishes snapshots.
struct Driver<D: Discover> {
    discover: Pin<Box<D>>,
    endpoints: Vec<(D::Key, u64, D::Service)>,
    next_id: u64,
    set: Arc<ArcSwap<EndpointSet<D::Service>>>,
    count: watch::Sender<usize>,
    weight_of: fn(&D::Service) -> u32,
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
                Some(Some(Ok(Change::Insert(key, svc)))) => {
                    self.next_id += 1;
                    let id = self.next_id;
                    match self.endpoints.iter_mut().find(|(k, _, _)| *k == key) {
                        Some(slot) => (slot.1, slot.2) = (id, svc),
                        None => self.endpoints.push((key, id, svc)),
                    }
                }
                Some(Some(Ok(Change::Remove(key)))) => self.endpoints.retain(|(k, _, _)| *k != key),
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

    fn publish(&self) {
        let weights: Vec<u32> = self
            .endpoints
            .iter()
            .map(|(_, _, s)| (self.weight_of)(s))
            .collect();
        self.set.store(Arc::new(EndpointSet {
            services: self.endpoints.iter().map(|(_, _, s)| s.clone()).collect(),
            ids: self.endpoints.iter().map(|(_, id, _)| *id).collect(),
            schedule: smooth_weighted_order(&weights),
        }));
        self.count.send_replace(self.endpoints.len());
        tracing::debug!(endpoints = self.endpoints.len(), "endpoint set updated");
    }

    /// Waits for changes and applies them until the stream ends.
    async fn run(mut self) {
        loop {
            let change =
                futures::future::poll_fn(|cx| self.discover.as_mut().poll_discover(cx)).await;
            if !self.apply_ready(Some(change)) {
                return;
            }
        }
    }
}
