//! The backend registry: admin operations, active checks, DNS, and the balancer's feed.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use http::{StatusCode, Uri};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tower::discover::Change;

use crate::check::{CheckTarget, Checker, HttpChecker};
use crate::resolve::{Resolved, Resolver, SystemResolver};
use crate::status::{AdminState, BackendStatus, EndpointStatus, Health, HealthEvent, HealthReport};
use crate::tracked::{InFlight, Tracked};
use crate::HealthConfig;

// Admin operations, check results and resolutions take this lock; requests never do (they
// read the balancer's snapshot). Never held across an await.
#[allow(clippy::disallowed_types)]
type AdminLock<T> = std::sync::Mutex<T>;

/// A backend as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Unique id.
    pub id: String,
    /// `http://host:port`; a host name is resolved, and each address becomes an endpoint.
    pub url: Uri,
    /// Share of traffic relative to the other backends; each of the backend's addresses
    /// gets this weight.
    pub weight: u32,
    /// Whether the backend speaks HTTP/2 by prior knowledge (health checks use it too).
    pub http2: bool,
}

/// Makes the services behind endpoints, and hears about their life. The facade's
/// implementation builds a circuit breaker over a connection pool per address.
pub trait Endpoints: Send + Sync + 'static {
    /// The endpoint service. The balancer clones it for every request.
    type Service: Clone + Send + Sync + 'static;

    /// The service for `backend` at `addr`.
    fn make(&self, backend: &BackendSpec, addr: SocketAddr) -> Result<Self::Service, String>;

    /// `service` will get no more requests (its backend was removed, or its address is
    /// gone from DNS): close what it holds.
    fn retire(&self, _backend: &BackendSpec, _service: &Self::Service) {}

    /// `backend` was removed from the registry.
    fn removed(&self, _backend: &BackendSpec) {}

    /// Resolving `backend`'s name failed.
    fn resolve_failed(&self, _backend: &BackendSpec, _error: &str) {}

    /// A passive signal about `backend` from the request path to show in its status,
    /// such as `"circuit open"`.
    fn passive(&self, _backend: &BackendSpec) -> Option<String> {
        None
    }
}

/// The balancer's key for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// The backend's id.
    pub backend: Arc<str>,
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// Distinguishes a backend re-added under the same id.
    generation: u64,
}

/// What the registry feeds the balancer.
pub type Event<S> = Result<Change<EndpointKey, Tracked<S>>, Infallible>;

/// An admin operation that could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// A backend with this id exists.
    Duplicate(String),
    /// No backend has this id.
    NotFound(String),
    /// The backend cannot be used as given.
    Invalid {
        /// The backend's id.
        id: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Duplicate(id) => write!(f, "backend `{id}` already exists"),
            RegistryError::NotFound(id) => write!(f, "no backend `{id}`"),
            RegistryError::Invalid { id, reason } => write!(f, "backend `{id}`: {reason}"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// A backend in [`Registry::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The backend.
    pub spec: BackendSpec,
    /// What the operator set.
    pub admin: AdminState,
    /// Its addresses now.
    pub addrs: Vec<SocketAddr>,
}

/// The backends, their health, and the stream of endpoint changes a balancer consumes.
/// Cheap to clone; clones share everything. See the [crate docs](crate).
pub struct Registry<E: Endpoints> {
    inner: Arc<Inner<E>>,
}

impl<E: Endpoints> Clone for Registry<E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// Builds a [`Registry`] with another checker or resolver.
pub struct RegistryBuilder<E> {
    config: HealthConfig,
    factory: E,
    checker: Arc<dyn Checker>,
    resolver: Arc<dyn Resolver>,
}

impl<E> fmt::Debug for RegistryBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<E: Endpoints> RegistryBuilder<E> {
    /// Checks endpoints with `checker` instead of [`HttpChecker`].
    pub fn checker(mut self, checker: impl Checker) -> Self {
        self.checker = Arc::new(checker);
        self
    }

    /// Resolves names with `resolver` instead of [`SystemResolver`].
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// The registry, and the discovery stream to hand to the balancer. Must be called
    /// within a tokio runtime (checks and resolutions run on tasks).
    pub fn build(self) -> (Registry<E>, Discovery<E::Service>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let (progress, _) = watch::channel(Progress::default());
        let inner = Inner {
            permits: Arc::new(Semaphore::new(self.config.max_concurrent.max(1))),
            config: self.config,
            factory: self.factory,
            checker: self.checker,
            resolver: self.resolver,
            state: AdminLock::new(State {
                members: Vec::new(),
                panic: false,
            }),
            changes,
            events: broadcast::channel(256).0,
            progress,
            generations: AtomicU64::new(0),
        };
        (
            Registry {
                inner: Arc::new(inner),
            },
            Discovery { rx },
        )
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// Endpoints the balancer has been told to route to.
    routed: usize,
    /// Backends whose name has not been resolved once yet.
    unresolved: usize,
}

struct Inner<E: Endpoints> {
    config: HealthConfig,
    factory: E,
    checker: Arc<dyn Checker>,
    resolver: Arc<dyn Resolver>,
    state: AdminLock<State<E::Service>>,
    changes: mpsc::UnboundedSender<Event<E::Service>>,
    events: broadcast::Sender<HealthEvent>,
    /// Bounds the checks in flight over all backends.
    permits: Arc<Semaphore>,
    progress: watch::Sender<Progress>,
    generations: AtomicU64,
}

struct State<S> {
    members: Vec<Member<S>>,
    panic: bool,
}

struct Member<S> {
    spec: BackendSpec,
    generation: u64,
    admin: AdminState,
    /// The host name to resolve and the port; `None` for an IP address.
    name: Option<(String, u16)>,
    /// A resolution has been attempted (always true for an IP address).
    resolved: bool,
    dns_error: Option<String>,
    inflight: Arc<InFlight>,
    endpoints: Vec<Ep<S>>,
    tasks: Vec<AbortHandle>,
}

struct Ep<S> {
    addr: SocketAddr,
    service: S,
    routed: bool,
    health: Health,
    consecutive_failures: u32,
    consecutive_successes: u32,
    checks: u64,
    last_check: Option<Instant>,
    last_response_time: Option<Duration>,
    last_error: Option<String>,
    last_transition: Option<Instant>,
}

impl<S> Ep<S> {
    fn new(addr: SocketAddr, service: S) -> Self {
        Self {
            addr,
            service,
            routed: false,
            health: Health::Unknown,
            consecutive_failures: 0,
            consecutive_successes: 0,
            checks: 0,
            last_check: None,
            last_response_time: None,
            last_error: None,
            last_transition: None,
        }
    }

    fn status(&self) -> EndpointStatus {
        EndpointStatus {
            addr: self.addr,
            health: self.health,
            routed: self.routed,
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
            checks: self.checks,
            last_check: self.last_check,
            last_response_time: self.last_response_time,
            last_error: self.last_error.clone(),
            last_transition: self.last_transition,
        }
    }
}

impl<E: Endpoints> Drop for Inner<E> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for member in &state.members {
            for task in &member.tasks {
                task.abort();
            }
        }
    }
}

/// The outcome of one check of one endpoint.
struct Checked {
    backend: Arc<str>,
    generation: u64,
    addr: SocketAddr,
    result: Result<(), String>,
    elapsed: Duration,
}

impl<E: Endpoints> Registry<E> {
    /// A registry checking with [`HttpChecker`] and resolving with [`SystemResolver`];
    /// returns it with the discovery stream to hand to the balancer. Must be called within
    /// a tokio runtime.
    pub fn new(config: HealthConfig, endpoints: E) -> (Self, Discovery<E::Service>) {
        Self::builder(config, endpoints).build()
    }

    /// A builder, to plug in another [`Checker`] or [`Resolver`].
    pub fn builder(config: HealthConfig, endpoints: E) -> RegistryBuilder<E> {
        RegistryBuilder {
            config,
            factory: endpoints,
            checker: Arc::new(HttpChecker::default()),
            resolver: Arc::new(SystemResolver),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.inner.config
    }

    /// The endpoint factory.
    pub fn endpoints(&self) -> &E {
        &self.inner.factory
    }

    /// Adds a backend in state `admin` (specification `AddBackend`). A backend given by
    /// IP address is routable at once; one given by name once its name has resolved.
    pub fn add(&self, spec: BackendSpec, admin: AdminState) -> Result<(), RegistryError> {
        let id = spec.id.clone();
        let invalid = |reason: String| RegistryError::Invalid {
            id: id.clone(),
            reason,
        };
        let (host, port) = host_port(&spec.url).map_err(invalid)?;
        let inner = &self.inner;
        let mut state = inner.lock();
        if state.members.iter().any(|m| m.spec.id == spec.id) {
            return Err(RegistryError::Duplicate(spec.id));
        }
        let generation = inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let mut member = Member {
            generation,
            admin,
            name: None,
            resolved: true,
            dns_error: None,
            inflight: Arc::default(),
            endpoints: Vec::new(),
            tasks: Vec::new(),
            spec,
        };
        match host.parse::<IpAddr>() {
            Ok(ip) => {
                let addr = SocketAddr::new(ip, port);
                let service = inner.factory.make(&member.spec, addr).map_err(invalid)?;
                member.endpoints.push(Ep::new(addr, service));
            }
            Err(_) => {
                member.name = Some((host, port));
                member.resolved = false;
            }
        }
        let id: Arc<str> = member.spec.id.as_str().into();
        let weak = Arc::downgrade(inner);
        if let Some((host, port)) = member.name.clone() {
            let task = tokio::spawn(resolve_loop(
                weak.clone(),
                id.clone(),
                generation,
                host,
                port,
            ));
            member.tasks.push(task.abort_handle());
        }
        if inner.config.enabled {
            // A random phase within the first interval spreads the checks of many
            // backends over the interval; each keeps its phase afterwards.
            let offset = inner.config.interval.mul_f64(1.0 - fastrand::f64());
            let task = tokio::spawn(check_loop(weak, id, generation, offset));
            member.tasks.push(task.abort_handle());
        }
        tracing::info!(id = %member.spec.id, url = %member.spec.url, weight = member.spec.weight, admin = %admin, "backend added");
        state.members.push(member);
        inner.reconcile(&mut state);
        Ok(())
    }

    /// Removes a backend at once (specification `RemoveBackend`): it gets no new
    /// requests, requests in flight on it finish. See [`Registry::drain`] for a removal
    /// that waits for them.
    pub fn remove(&self, id: &str) -> Result<Listed, RegistryError> {
        self.inner.remove(id, None)
    }

    /// Sets a backend's weight; the balancer uses it for the next request.
    pub fn set_weight(&self, id: &str, weight: u32) -> Result<(), RegistryError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        let member = find(&mut state, id)?;
        member.spec.weight = weight;
        for ep in member.endpoints.iter().filter(|ep| ep.routed) {
            inner.insert(member, ep);
        }
        tracing::info!(%id, weight, "backend weight changed");
        Ok(())
    }

    /// Lets a disabled or draining backend take traffic again.
    pub fn enable(&self, id: &str) -> Result<(), RegistryError> {
        self.inner.set_admin(id, AdminState::Enabled).map(drop)
    }

    /// Stops sending a backend requests; it stays listed and checked.
    pub fn disable(&self, id: &str) -> Result<(), RegistryError> {
        self.inner.set_admin(id, AdminState::Disabled).map(drop)
    }

    /// Drains a backend: no new requests; once the requests in flight have finished it is
    /// removed and its connections closed. The returned future completes then; the drain
    /// goes on whether or not it is awaited. Enabling the backend first cancels it.
    pub fn drain(&self, id: &str) -> Result<Drain, RegistryError> {
        let (inflight, generation) = self.inner.set_admin(id, AdminState::Draining)?;
        let weak = Arc::downgrade(&self.inner);
        let id = id.to_owned();
        let task = tokio::spawn(async move {
            inflight.idle().await;
            if let Some(inner) = weak.upgrade() {
                let _ = inner.remove(&id, Some(generation));
            }
        });
        Ok(Drain { task })
    }

    /// The backends, in the order they were added (specification `ListBackends`).
    pub fn list(&self) -> Vec<Listed> {
        let state = self.inner.lock();
        state
            .members
            .iter()
            .map(|m| Listed {
                spec: m.spec.clone(),
                admin: m.admin,
                addrs: m.endpoints.iter().map(|ep| ep.addr).collect(),
            })
            .collect()
    }

    /// The services of backend `id`'s endpoints (for their stats), by address.
    pub fn services(&self, id: &str) -> Vec<(SocketAddr, E::Service)> {
        let state = self.inner.lock();
        state
            .members
            .iter()
            .find(|m| m.spec.id == id)
            .map(|m| {
                m.endpoints
                    .iter()
                    .map(|ep| (ep.addr, ep.service.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every backend's health (specification `GetHealthStatus`).
    pub fn status(&self) -> HealthReport {
        let inner = &self.inner;
        let state = inner.lock();
        let backends = state
            .members
            .iter()
            .map(|m| {
                let endpoints: Vec<EndpointStatus> = m.endpoints.iter().map(Ep::status).collect();
                let health = if endpoints.iter().any(|e| e.health == Health::Healthy) {
                    Health::Healthy
                } else if !endpoints.is_empty()
                    && endpoints.iter().all(|e| e.health == Health::Unhealthy)
                {
                    Health::Unhealthy
                } else {
                    Health::Unknown
                };
                BackendStatus {
                    id: m.spec.id.clone(),
                    url: m.spec.url.clone(),
                    weight: m.spec.weight,
                    admin: m.admin,
                    health,
                    consecutive_failures: endpoints
                        .iter()
                        .map(|e| e.consecutive_failures)
                        .max()
                        .unwrap_or(0),
                    response_time: endpoints.iter().filter_map(|e| e.last_response_time).max(),
                    error: m
                        .dns_error
                        .clone()
                        .or_else(|| endpoints.iter().find_map(|e| e.last_error.clone())),
                    passive: inner.factory.passive(&m.spec),
                    in_flight: m.inflight.get(),
                    endpoints,
                }
            })
            .collect();
        HealthReport {
            panic: state.panic,
            backends,
        }
    }

    /// Checks every endpoint now and returns when all checks are done (specification
    /// `HealthCheck()`); the periodic checks keep their schedule. With checks disabled
    /// nothing is checked.
    pub async fn check_now(&self) -> HealthReport {
        if self.inner.config.enabled {
            let targets = self.inner.targets(None);
            self.inner.run_checks(targets).await;
        }
        self.status()
    }

    /// Subscribes to health transitions, panic mode changes, resolutions and removals.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// Whether panic mode is on.
    pub fn panic(&self) -> bool {
        self.inner.lock().panic
    }

    /// Waits until every backend given by name has been resolved once, then returns how
    /// many endpoints the balancer has been told to route to.
    pub async fn resolved(&self) -> usize {
        let mut progress = self.inner.progress.subscribe();
        let routed = match progress.wait_for(|p| p.unresolved == 0).await {
            Ok(p) => p.routed,
            Err(_) => 0,
        };
        routed
    }
}

impl<E: Endpoints> fmt::Debug for Registry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("config", &self.inner.config)
            .field("backends", &self.list())
            .finish()
    }
}

impl<E: Endpoints> Inner<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<E::Service>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(member: &Member<E::Service>, addr: SocketAddr) -> EndpointKey {
        EndpointKey {
            backend: member.spec.id.as_str().into(),
            addr,
            generation: member.generation,
        }
    }

    fn insert(&self, member: &Member<E::Service>, ep: &Ep<E::Service>) {
        let endpoint = Tracked::new(
            ep.service.clone(),
            member.spec.weight,
            member.inflight.clone(),
        );
        // The receiver lives as long as the balancer; without one there is nobody to tell.
        let _ = self
            .changes
            .send(Ok(Change::Insert(Self::key(member, ep.addr), endpoint)));
    }

    fn withdraw(&self, member: &Member<E::Service>, addr: SocketAddr) {
        let _ = self
            .changes
            .send(Ok(Change::Remove(Self::key(member, addr))));
    }

    /// Brings the balancer's set in line with admin states and health: an endpoint is
    /// routed when its backend is enabled and it is not unhealthy, or, in panic mode,
    /// when every endpoint of the enabled backends is unhealthy.
    fn reconcile(&self, state: &mut State<E::Service>) {
        let mut candidates = state
            .members
            .iter()
            .filter(|m| m.admin == AdminState::Enabled)
            .flat_map(|m| &m.endpoints)
            .peekable();
        let some = candidates.peek().is_some();
        let all_down = candidates.all(|ep| ep.health == Health::Unhealthy);
        let panic = self.config.panic_mode && some && all_down;
        if panic != state.panic {
            state.panic = panic;
            if panic {
                tracing::warn!("every backend is unhealthy: panic mode, routing to all of them");
            } else {
                tracing::info!("panic mode over");
            }
            let _ = self.events.send(HealthEvent::Panic(panic));
        }
        let mut routed = 0;
        for member in &mut state.members {
            let enabled = member.admin == AdminState::Enabled;
            for j in 0..member.endpoints.len() {
                let ep = &member.endpoints[j];
                let want = enabled && (ep.health != Health::Unhealthy || panic);
                if want != ep.routed {
                    if want {
                        self.insert(member, ep);
                    } else {
                        self.withdraw(member, ep.addr);
                    }
                    member.endpoints[j].routed = want;
                }
                routed += usize::from(want);
            }
        }
        let unresolved = state.members.iter().filter(|m| !m.resolved).count();
        self.progress.send_replace(Progress { routed, unresolved });
    }

    fn set_admin(
        &self,
        id: &str,
        admin: AdminState,
    ) -> Result<(Arc<InFlight>, u64), RegistryError> {
        let mut state = self.lock();
        let member = find(&mut state, id)?;
        let before = member.admin;
        member.admin = admin;
        let out = (member.inflight.clone(), member.generation);
        if before != admin {
            tracing::info!(%id, from = %before, to = %admin, "backend state changed");
        }
        self.reconcile(&mut state);
        Ok(out)
    }

    /// Removes backend `id`; with `generation`, only that incarnation and only if it is
    /// still draining.
    fn remove(&self, id: &str, generation: Option<u64>) -> Result<Listed, RegistryError> {
        let mut state = self.lock();
        let pos = state
            .members
            .iter()
            .position(|m| {
                m.spec.id == id
                    && generation
                        .is_none_or(|g| m.generation == g && m.admin == AdminState::Draining)
            })
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        let member = state.members.remove(pos);
        for task in &member.tasks {
            task.abort();
        }
        for ep in &member.endpoints {
            if ep.routed {
                self.withdraw(&member, ep.addr);
            }
            self.factory.retire(&member.spec, &ep.service);
        }
        self.factory.removed(&member.spec);
        self.reconcile(&mut state);
        drop(state);
        tracing::info!(%id, "backend removed");
        let _ = self.events.send(HealthEvent::Removed {
            backend: id.to_owned(),
        });
        Ok(Listed {
            addrs: member.endpoints.iter().map(|ep| ep.addr).collect(),
            admin: member.admin,
            spec: member.spec,
        })
    }

    /// The endpoints to check: of one backend incarnation, or of all (`None`).
    fn targets(&self, only: Option<(&str, u64)>) -> Vec<(CheckTarget, u64)> {
        let state = self.lock();
        state
            .members
            .iter()
            .filter(|m| only.is_none_or(|(id, g)| m.spec.id == id && m.generation == g))
            .flat_map(|m| {
                let authority = m
                    .spec
                    .url
                    .authority()
                    .map(|a| a.as_str().to_owned())
                    .unwrap_or_default();
                m.endpoints.iter().map(move |ep| {
                    let target = CheckTarget {
                        backend: m.spec.id.clone(),
                        addr: ep.addr,
                        authority: authority.clone(),
                        path: self.config.path.clone(),
                        http2: m.spec.http2,
                        https: m.spec.url.scheme_str() == Some("https"),
                    };
                    (target, m.generation)
                })
            })
            .collect()
    }

    async fn run_checks(&self, targets: Vec<(CheckTarget, u64)>) {
        let checks = targets
            .into_iter()
            .map(|(target, generation)| self.check(target, generation));
        let results = futures::future::join_all(checks).await;
        let mut state = self.lock();
        let mut changed = false;
        for checked in results {
            changed |= self.apply(&mut state, checked);
        }
        if changed {
            self.reconcile(&mut state);
        }
    }

    async fn check(&self, target: CheckTarget, generation: u64) -> Checked {
        // The semaphore is never closed.
        let _permit = self.permits.acquire().await;
        let started = Instant::now();
        let backend: Arc<str> = target.backend.as_str().into();
        let addr = target.addr;
        let checked = tokio::time::timeout(self.config.timeout, self.checker.check(target)).await;
        let result = match checked {
            Ok(Ok(status)) if self.config.expected_status.contains(status) => Ok(()),
            Ok(Ok(status)) => Err(unexpected(status)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!(
                "no response within {}",
                humantime::format_duration(self.config.timeout)
            )),
        };
        Checked {
            backend,
            generation,
            addr,
            result,
            elapsed: started.elapsed(),
        }
    }

    /// Records one check; returns whether the endpoint's health changed.
    fn apply(&self, state: &mut State<E::Service>, checked: Checked) -> bool {
        let Some(member) = state
            .members
            .iter_mut()
            .find(|m| *m.spec.id == *checked.backend && m.generation == checked.generation)
        else {
            return false; // removed while it was being checked
        };
        let Some(ep) = member
            .endpoints
            .iter_mut()
            .find(|ep| ep.addr == checked.addr)
        else {
            return false;
        };
        let now = Instant::now();
        ep.checks += 1;
        ep.last_check = Some(now);
        ep.last_response_time = Some(checked.elapsed);
        let before = ep.health;
        match checked.result {
            Ok(()) => {
                ep.consecutive_successes += 1;
                ep.consecutive_failures = 0;
                ep.last_error = None;
                if before == Health::Unknown
                    || (before == Health::Unhealthy
                        && ep.consecutive_successes >= self.config.rise.max(1))
                {
                    ep.health = Health::Healthy;
                }
            }
            Err(e) => {
                ep.consecutive_failures += 1;
                ep.consecutive_successes = 0;
                if before != Health::Unhealthy && ep.consecutive_failures >= self.config.fall.max(1)
                {
                    ep.health = Health::Unhealthy;
                }
                ep.last_error = Some(e);
            }
        }
        if ep.health == before {
            return false;
        }
        ep.last_transition = Some(now);
        match ep.health {
            Health::Unhealthy => tracing::warn!(
                backend = %member.spec.id, addr = %ep.addr, error = ep.last_error.as_deref().unwrap_or(""),
                failures = ep.consecutive_failures, "endpoint unhealthy"
            ),
            _ => {
                tracing::info!(backend = %member.spec.id, addr = %ep.addr, from = %before, "endpoint healthy")
            }
        }
        let _ = self.events.send(HealthEvent::Transition {
            backend: member.spec.id.clone(),
            addr: ep.addr,
            from: before,
            to: ep.health,
        });
        true
    }

    /// Applies a resolution of backend `id`; returns the delay before the next one, or
    /// `None` when the backend is gone.
    fn resolved(
        &self,
        id: &str,
        generation: u64,
        outcome: io::Result<Resolved>,
    ) -> Option<Duration> {
        let mut state = self.lock();
        let member = state
            .members
            .iter_mut()
            .find(|m| m.spec.id == id && m.generation == generation)?;
        member.resolved = true;
        let delay = match outcome {
            Ok(Resolved { addrs, ttl }) if !addrs.is_empty() => {
                member.dns_error = None;
                let before: Vec<SocketAddr> = member.endpoints.iter().map(|ep| ep.addr).collect();
                let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut member.endpoints)
                    .into_iter()
                    .partition(|ep| !addrs.contains(&ep.addr));
                member.endpoints = kept;
                for ep in gone {
                    if ep.routed {
                        self.withdraw(member, ep.addr);
                    }
                    self.factory.retire(&member.spec, &ep.service);
                }
                for addr in addrs {
                    // Kept endpoints, and addresses listed twice, are there already.
                    if member.endpoints.iter().any(|ep| ep.addr == addr) {
                        continue;
                    }
                    match self.factory.make(&member.spec, addr) {
                        Ok(service) => member.endpoints.push(Ep::new(addr, service)),
                        Err(e) => {
                            tracing::warn!(%id, %addr, error = %e, "cannot use a resolved address")
                        }
                    }
                }
                let now: Vec<SocketAddr> = member.endpoints.iter().map(|ep| ep.addr).collect();
                if now != before {
                    tracing::info!(%id, addrs = ?now, "backend resolved");
                    let _ = self.events.send(HealthEvent::Resolved {
                        backend: id.to_owned(),
                        addrs: now,
                    });
                }
                self.config.dns_delay(ttl)
            }
            failed => {
                let error = match failed {
                    Ok(_) => format!("`{id}`: the name resolved to no address"),
                    Err(e) => format!(
                        "resolving `{}`: {e}",
                        member.name.as_ref().map_or("", |n| n.0.as_str())
                    ),
                };
                tracing::warn!(%id, %error, kept = member.endpoints.len(), "resolution failed; keeping the last addresses");
                self.factory.resolve_failed(&member.spec, &error);
                member.dns_error = Some(error.clone());
                let _ = self.events.send(HealthEvent::ResolveFailed {
                    backend: id.to_owned(),
                    error,
                });
                self.config.dns_min_ttl
            }
        };
        self.reconcile(&mut state);
        Some(delay)
    }
}

fn find<'a, S>(state: &'a mut State<S>, id: &str) -> Result<&'a mut Member<S>, RegistryError> {
    state
        .members
        .iter_mut()
        .find(|m| m.spec.id == id)
        .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
}

fn unexpected(status: StatusCode) -> String {
    format!("unexpected status {status}")
}

/// The host and port of `url`, the port defaulting by scheme.
fn host_port(url: &Uri) -> Result<(String, u16), String> {
    let default_port = match url.scheme_str() {
        Some("http") | None => 80,
        Some("https") => 443,
        Some(other) => return Err(format!("unsupported scheme `{other}`")),
    };
    let authority = url
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    let host = authority.host().trim_matches(['[', ']']).to_owned();
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok((host, authority.port_u16().unwrap_or(default_port)))
}

/// Checks one backend incarnation's endpoints every interval, from a random phase.
async fn check_loop<E: Endpoints>(
    registry: Weak<Inner<E>>,
    id: Arc<str>,
    generation: u64,
    offset: Duration,
) {
    let mut next = Instant::now() + offset;
    loop {
        tokio::time::sleep_until(next).await;
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let targets = inner.targets(Some((&id, generation)));
        inner.run_checks(targets).await;
        next += inner.config.interval;
        // A round that overran its interval does not make the next ones bunch up.
        let now = Instant::now();
        if next < now {
            next = now + inner.config.interval;
        }
    }
}

/// Resolves one backend incarnation's name, again and again.
async fn resolve_loop<E: Endpoints>(
    registry: Weak<Inner<E>>,
    id: Arc<str>,
    generation: u64,
    host: String,
    port: u16,
) {
    loop {
        let Some(inner) = registry.upgrade() else {
            return;
        };
        let lookup = inner.resolver.resolve(host.clone(), port);
        let bound = inner.config.timeout.max(Duration::from_secs(5));
        let outcome = tokio::time::timeout(bound, lookup)
            .await
            .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
        let Some(delay) = inner.resolved(&id, generation, outcome) else {
            return;
        };
        drop(inner);
        tokio::time::sleep(delay).await;
    }
}

/// Completes when a drained backend has been removed (see [`Registry::drain`]).
#[derive(Debug)]
pub struct Drain {
    task: JoinHandle<()>,
}

impl Future for Drain {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.task).poll(cx).map(drop)
    }
}

/// The balancer's view of the registry: a stream of endpoint insertions and removals
/// (a [`tower::discover::Discover`]).
#[derive(Debug)]
pub struct Discovery<S> {
    rx: mpsc::UnboundedReceiver<Event<S>>,
}

impl<S> Stream for Discovery<S> {
    type Item = Event<S>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
