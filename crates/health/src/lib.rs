//! The backend registry: the source of a balancer's endpoints.
//!
//! A [`Registry`] holds the backends (id, URL, weight, admin state), checks them actively,
//! re-resolves the names of those given by host name, and feeds the result to a
//! [`switchyard_balance::Balance`] as a [`tower::discover::Discover`] stream of
//! [`Change`](tower::discover::Change)s. Requests never touch the registry: they read the
//! balancer's snapshot. Every admin operation, check result and resolution takes the
//! registry's own lock briefly, never across an await.
//!
//! # Endpoints
//!
//! Each address of a backend is one endpoint of the balancer: a backend given by IP
//! address has one, a backend given by name has one per address its name resolves to
//! (each with the backend's weight). The services behind endpoints come from an
//! [`Endpoints`] factory; switchyard's facade makes a circuit breaker over a connection
//! pool per address.
//!
//! # Active checks
//!
//! Every `interval` (10 s by default), each endpoint gets a `GET` of `path` (`/health`)
//! within `timeout`; a status in `expected_status` (2xx) passes. Each endpoint starts at a
//! random phase of the first interval, so a thousand backends are not probed in the same
//! instant, and at most `max_concurrent` checks run at once. Health is tri-state:
//!
//! - [`Health::Unknown`] until the first check: routable, so a fresh proxy serves at once;
//! - one passing check makes an unknown endpoint [`Health::Healthy`];
//! - `fall` (3) failed checks in a row make it [`Health::Unhealthy`]: it leaves the
//!   balancer's set;
//! - `rise` (2) passing checks in a row bring it back.
//!
//! [`Registry::check_now`] runs a round at once. Transitions are logged and published
//! ([`Registry::subscribe`]).
//!
//! # Active and passive signals
//!
//! Active checks decide **membership**: whether an endpoint is in the balancer's set.
//! The circuit breaker (a passive signal, from real requests) decides **readiness**
//! within that set: an open breaker makes the balancer skip the endpoint per request.
//! An endpoint takes traffic when its checks allow it *and* its breaker is closed. A
//! backend whose checks pass while its breaker is open is reported `healthy` with
//! `passive: "circuit open"`.
//!
//! One signal crosses over: when an endpoint the checks had marked unhealthy passes `rise`
//! checks again, [`Endpoints::recovered`] is called, and the facade closes the backend's
//! breaker (and forgets its doubled open time), so a restarted backend is back as soon as
//! its checks pass. A backend whose checks never failed (slow or failing requests but a
//! fast `/health`: a gray failure) is not re-admitted by its checks: only its breaker's own
//! half-open probes close its breaker.
//!
//! # Panic mode
//!
//! When every endpoint of the enabled backends is unhealthy, refusing all traffic is
//! rarely what anybody wants: with `panic_mode` (on by default) all of them are routed
//! anyway, [`HealthReport::panic`] says so, and a [`HealthEvent::Panic`] is published.
//!
//! # Admin states
//!
//! [`AdminState::Enabled`] backends take traffic; [`AdminState::Disabled`] ones are listed
//! and checked but take none; [`Registry::drain`] stops new requests, waits for those in
//! flight, then removes the backend and retires its endpoints (the facade closes their
//! pools).
//!
//! # DNS
//!
//! A backend given by host name is resolved at once and then again after its TTL, clamped
//! to `dns_min_ttl ..= dns_max_ttl` (the system resolver gives no TTL: `dns_refresh`). A
//! failed resolution keeps the last good addresses, is reported as the backend's error,
//! and is passed to [`Endpoints::resolve_failed`] (the facade counts it toward the
//! backend's circuit breaker, like a refused connection). Plug another resolver in with
//! [`RegistryBuilder::resolver`]; with [`HealthConfig::dns_server`] names are resolved by
//! [`HickoryResolver`] against that server.
//!
//! # DNS SRV
//!
//! A backend given as `dns+srv://_http._tcp.web.service.consul` (Consul's DNS interface,
//! a Kubernetes headless service) stands for the targets its SRV records name: each
//! becomes a backend of its own, with id `{id}/{target}:{port}`, the record's port, and
//! the record's weight (RFC 2782; 0 counts as 1), added and removed at each resolution
//! through the same path as admin operations (a removed target is drained). Its targets'
//! names are resolved like any backend's. Only the lowest priority group that has an
//! endpoint up takes traffic; when every endpoint of it is unhealthy, the next one does.
//! The next one also does when the group's targets are healthy but none is
//! [available](Endpoints::available) (their circuit breakers are open, after real requests
//! failed before the checks noticed): the group then stays in the balancer's set too,
//! where requests skip it while its breakers are open and their half-open probes find out
//! when it is back, which hands the traffic back to it
//! ([`Registry::availability_changed`]).
//! The name is re-resolved on the answer's TTL within `dns_min_ttl ..= dns_max_ttl`; a
//! failed resolution keeps the last targets, is logged, reported as the backend's error
//! and counted ([`Registry::resolve_failures`]). SRV lookups use `dns_server`, or the
//! name servers of `/etc/resolv.conf`. The URL's query can set these for one name
//! ([`SrvSettings`]): `dns+srv://NAME?dns_server=127.0.0.1:8600&min_ttl=5s&max_ttl=5m`;
//! its name server then resolves the targets' names too.

mod check;
mod config;
mod error;
mod hickory;
mod registry;
mod resolve;
mod status;
mod tracked;

pub use check::{CheckTarget, Checker, HttpChecker};
pub use config::{HealthConfig, StatusRange};
pub use error::{CheckError, RegistryError};
pub use hickory::HickoryResolver;
pub use registry::{
    BackendSpec, Discovery, Drain, EndpointKey, Endpoints, Event, Listed, Registry,
    RegistryBuilder, SrvSettings, SrvSettingsError, WeakRegistry,
};
pub use resolve::{Resolved, Resolver, SrvResolved, SrvTarget, SystemResolver};
pub use status::{AdminState, BackendStatus, EndpointStatus, Health, HealthEvent, HealthReport};
pub use tracked::{Tracked, TrackedFuture};
