//! The backend registry: admin operations, active checks, DNS, and the balancer's feed.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Uri;
use tokio::sync::{broadcast, mpsc, watch, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::discover::Change;
use tower::BoxError;

use crate::check::{Checker, HttpChecker};
use crate::hickory::HickoryResolver;
use crate::resolve::{Resolver, SystemResolver};
use crate::status::{AdminState, BackendStatus, EndpointStatus, Health, HealthEvent, HealthReport};
use crate::tracked::{InFlight, Tracked};
use crate::HealthConfig;

mod admin;
mod checks;
mod discover;
mod dns;
mod drain;
mod srv;

pub use discover::{Discovery, Event};
pub use drain::Drain;
pub use srv::{SrvSettings, SrvSettingsError};

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
    fn make(&self, backend: &BackendSpec, addr: SocketAddr) -> Result<Self::Service, BoxError>;

    /// `service` will get no more requests (its backend was removed, or its address is
    /// gone from DNS): close what it holds.
    fn retire(&self, _backend: &BackendSpec, _service: &Self::Service) {}

    /// `backend` was removed from the registry.
    fn removed(&self, _backend: &BackendSpec) {}

    /// Resolving `backend`'s name failed.
    fn resolve_failed(&self, _backend: &BackendSpec, _error: &str) {}

    /// The endpoint of `backend` at `addr` passed `rise` checks in a row after its checks
    /// had marked it unhealthy: it is back in the balancer's set. Called on that transition
    /// only, not when an unknown endpoint passes its first check, nor on checks that keep
    /// passing. The facade closes the backend's circuit breaker here, so that a restarted
    /// backend takes traffic at once instead of after the breaker's open time.
    fn recovered(&self, _backend: &BackendSpec, _addr: SocketAddr) {}

    /// A passive signal about `backend` from the request path to show in its status,
    /// such as `"circuit open"`.
    fn passive(&self, _backend: &BackendSpec) -> Option<String> {
        None
    }

    /// Whether requests may go to `backend` now, as far as the request path knows: the
    /// facade says no while its circuit breaker is not closed. A `dns+srv://` backend's
    /// priority group whose targets are all unavailable hands the traffic to the next
    /// group (see the [crate docs](crate#dns-srv)); call
    /// [`Registry::availability_changed`] when the answer may have changed.
    fn available(&self, _backend: &BackendSpec) -> bool {
        true
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
    resolver: Option<Arc<dyn Resolver>>,
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

    /// Resolves names (and SRV names) with `resolver` instead of [`SystemResolver`] (or
    /// a [`HickoryResolver`] on the configuration's `dns_server`).
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// The registry, and the discovery stream to hand to the balancer. Must be called
    /// within a tokio runtime (checks and resolutions run on tasks).
    pub fn build(self) -> (Registry<E>, Discovery<E::Service>) {
        let (changes, rx) = mpsc::unbounded_channel();
        let (progress, _) = watch::channel(Progress::default());
        let own_resolver = self.resolver.is_some();
        let resolvers = match self.resolver {
            Some(resolver) => Resolvers::new(Some(resolver)),
            None => Resolvers::of_server(self.config.dns_server),
        };
        let inner = Inner {
            permits: Arc::new(Semaphore::new(self.config.max_concurrent.max(1))),
            config: watch::Sender::new(Arc::new(self.config)),
            factory: self.factory,
            checker: self.checker,
            resolvers: watch::Sender::new(Arc::new(resolvers)),
            own_resolver,
            resolve_failures: AtomicU64::new(0),
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
    /// The settings in force; the check loops follow its changes.
    config: watch::Sender<Arc<HealthConfig>>,
    factory: E,
    checker: Arc<dyn Checker>,
    /// The name servers in force; the resolution loops follow their changes.
    resolvers: watch::Sender<Arc<Resolvers>>,
    /// The builder was given a resolver: `dns_server` does not replace it.
    own_resolver: bool,
    /// Failed resolutions, A/AAAA and SRV.
    resolve_failures: AtomicU64,
    state: AdminLock<State<E::Service>>,
    changes: mpsc::UnboundedSender<Event<E::Service>>,
    events: broadcast::Sender<HealthEvent>,
    /// Bounds the checks in flight over all backends.
    permits: Arc<Semaphore>,
    progress: watch::Sender<Progress>,
    generations: AtomicU64,
}

/// How names are resolved.
pub(super) struct Resolvers {
    /// A and AAAA lookups.
    pub(super) names: Arc<dyn Resolver>,
    /// SRV lookups, which need a resolver that speaks DNS: `names` when it was given, else
    /// the system's name servers, read when the first SRV name is resolved.
    pub(super) srv: OnceLock<Arc<dyn Resolver>>,
}

impl Resolvers {
    /// With `resolver`, or the system's.
    fn new(resolver: Option<Arc<dyn Resolver>>) -> Self {
        let srv = OnceLock::new();
        if let Some(resolver) = &resolver {
            let _ = srv.set(resolver.clone());
        }
        Self {
            names: resolver.unwrap_or_else(|| Arc::new(SystemResolver)),
            srv,
        }
    }

    /// Asking the name server at `server`, or the system's.
    fn of_server(server: Option<SocketAddr>) -> Self {
        Self::new(server.map(|addr| Arc::new(HickoryResolver::with_server(addr)) as _))
    }
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
    /// For a target of a `dns+srv://` backend: that backend and the record's priority.
    origin: Option<srv::Origin>,
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
        // Ends a wait for the permits of a lowered `max_concurrent`.
        self.permits.close();
    }
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
            resolver: None,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<HealthConfig> {
        self.inner.config()
    }

    /// Applies `config` from now on, keeping every endpoint's health and its run of
    /// successes or failures: each check loop takes the new interval at once (its next
    /// round comes one new interval after its last), and the next round checks the new
    /// path, with the new timeout and expected statuses, judged by the new `rise` and
    /// `fall`. A new `panic_mode` is applied at once, new DNS bounds at the next
    /// resolution, a new `max_concurrent` to the checks that start from now on.
    ///
    /// Checks turned on (`enabled`) start at each check loop's next round, every endpoint
    /// routable as it is until they judge it; turned off, they stop, and every endpoint's
    /// health is forgotten (`unknown`, routable: its circuit breaker still guards it).
    ///
    /// A new `dns_server` (unless the builder was given a resolver) resolves every name
    /// at once, and from then on: a backend's addresses, and a `dns+srv://` backend's
    /// targets, change with its answers (a name or URL with a name server of its own keeps
    /// it). Returns whether anything changed.
    pub fn reconfigure(&self, config: HealthConfig) -> bool {
        let inner = &self.inner;
        let old = inner.config();
        if *old == config {
            return false;
        }
        let stopped = old.enabled && !config.enabled;
        let server = (old.dns_server != config.dns_server && !inner.own_resolver)
            .then_some(config.dns_server);
        let (was, now) = (old.max_concurrent.max(1), config.max_concurrent.max(1));
        if now > was {
            inner.permits.add_permits(now - was);
        } else if now < was {
            // The surplus permits come back from the checks in flight.
            let permits = inner.permits.clone();
            let surplus = u32::try_from(was - now).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(taken) = permits.acquire_many_owned(surplus).await {
                    taken.forget();
                }
            });
        }
        inner.config.send_replace(Arc::new(config));
        if let Some(server) = server {
            inner
                .resolvers
                .send_replace(Arc::new(Resolvers::of_server(server)));
        }
        let mut state = inner.lock();
        if stopped {
            inner.forget_health(&mut state);
        }
        inner.reconcile(&mut state);
        true
    }

    /// The endpoint factory.
    pub fn endpoints(&self) -> &E {
        &self.inner.factory
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

    /// Subscribes to health transitions, panic mode changes, resolutions and removals.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// Whether panic mode is on.
    pub fn panic(&self) -> bool {
        self.inner.lock().panic
    }

    /// Resolutions that failed (A/AAAA and SRV) since the registry was built; each kept
    /// the last good addresses or targets.
    pub fn resolve_failures(&self) -> u64 {
        self.inner.resolve_failures.load(Ordering::Relaxed)
    }

    /// A handle that does not keep the registry (and its tasks) alive.
    pub fn downgrade(&self) -> WeakRegistry<E> {
        WeakRegistry {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Looks again at which priority group of each `dns+srv://` backend takes traffic,
    /// after [`Endpoints::available`] may have changed its answer (a circuit breaker
    /// opened or closed).
    pub fn availability_changed(&self) {
        let mut state = self.inner.lock();
        self.inner.reconcile(&mut state);
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

/// A [`Registry`] that may be gone: see [`Registry::downgrade`].
pub struct WeakRegistry<E: Endpoints> {
    inner: std::sync::Weak<Inner<E>>,
}

impl<E: Endpoints> WeakRegistry<E> {
    /// The registry, while it exists.
    pub fn upgrade(&self) -> Option<Registry<E>> {
        self.inner.upgrade().map(|inner| Registry { inner })
    }
}

impl<E: Endpoints> fmt::Debug for WeakRegistry<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakRegistry").finish_non_exhaustive()
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
    /// The settings in force.
    fn config(&self) -> Arc<HealthConfig> {
        self.config.borrow().clone()
    }

    /// Checks were turned off: no endpoint keeps a health they judged, nor a run of
    /// results.
    fn forget_health(&self, state: &mut State<E::Service>) {
        let now = Instant::now();
        for member in &mut state.members {
            for ep in &mut member.endpoints {
                let before = ep.health;
                (ep.consecutive_failures, ep.consecutive_successes) = (0, 0);
                if before == Health::Unknown {
                    continue;
                }
                ep.health = Health::Unknown;
                ep.last_transition = Some(now);
                let _ = self.events.send(HealthEvent::Transition {
                    backend: member.spec.id.clone(),
                    addr: ep.addr,
                    from: before,
                    to: Health::Unknown,
                });
            }
        }
    }

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
        let key = Self::key(member, ep.addr);
        let endpoint = Tracked::new(
            ep.service.clone(),
            member.spec.weight,
            key.backend.clone(),
            member.inflight.clone(),
        );
        // The receiver lives as long as the balancer; without one there is nobody to tell.
        let _ = self.changes.send(Ok(Change::Insert(key, endpoint)));
    }

    fn withdraw(&self, member: &Member<E::Service>, addr: SocketAddr) {
        let _ = self
            .changes
            .send(Ok(Change::Remove(Self::key(member, addr))));
    }

    /// Brings the balancer's set in line with admin states and health: an endpoint is
    /// routed when its backend is enabled and it is not unhealthy, or, in panic mode,
    /// when every endpoint of the enabled backends is unhealthy.
    ///
    /// Targets of a `dns+srv://` backend count as enabled only in their backend's
    /// preferred priority group, or in a healthy group it stands in for (see
    /// [`srv::preferred`]).
    fn reconcile(&self, state: &mut State<E::Service>) {
        let groups = srv::preferred(&state.members, |spec| self.factory.available(spec));
        let in_group = |m: &Member<E::Service>| {
            m.origin
                .as_ref()
                .is_none_or(|o| groups.iter().any(|g| o.is_in(g)))
        };
        let mut candidates = state
            .members
            .iter()
            .filter(|m| m.admin == AdminState::Enabled && in_group(m))
            .flat_map(|m| &m.endpoints)
            .peekable();
        let some = candidates.peek().is_some();
        let all_down = candidates.all(|ep| ep.health == Health::Unhealthy);
        let panic = self.config().panic_mode && some && all_down;
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
            let enabled = member.admin == AdminState::Enabled && in_group(member);
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
}
