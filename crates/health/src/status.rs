//! What the registry reports: per backend, per endpoint, and transitions.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;
use serde::Serialize;
use tokio::time::Instant;

/// An endpoint's health as active checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not checked yet (or checks are off). Routable.
    Unknown,
    /// The last checks passed. Routable.
    Healthy,
    /// `fall` consecutive checks failed, and `rise` have not passed since. Not routable,
    /// except in panic mode.
    Unhealthy,
}

impl Health {
    /// `"unknown"`, `"healthy"` or `"unhealthy"`.
    pub fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operator wants of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic when healthy.
    Enabled,
    /// Listed and checked, takes no traffic.
    Disabled,
    /// Takes no new requests; removed once the requests in flight have finished.
    Draining,
}

impl AdminState {
    /// `"enabled"`, `"disabled"` or `"draining"`.
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Disabled => "disabled",
            AdminState::Draining => "draining",
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One endpoint (one address of a backend).
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// The address.
    pub addr: SocketAddr,
    /// Its health.
    pub health: Health,
    /// Whether the balancer sends it requests now.
    pub routed: bool,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Passed checks in a row.
    pub consecutive_successes: u32,
    /// Checks run.
    pub checks: u64,
    /// When the last check finished.
    pub last_check: Option<Instant>,
    /// How long the last check took.
    pub last_response_time: Option<Duration>,
    /// Why the last failed check failed; cleared by a passing one.
    pub last_error: Option<String>,
    /// When the health last changed.
    pub last_transition: Option<Instant>,
}

/// A backend's status (specification `GetHealthStatus`).
#[derive(Debug, Clone)]
pub struct BackendStatus {
    /// The backend's id.
    pub id: String,
    /// Its URL.
    pub url: Uri,
    /// Its weight.
    pub weight: u32,
    /// What the operator set.
    pub admin: AdminState,
    /// Healthy when any endpoint is; unhealthy when every endpoint is; unknown otherwise
    /// (and while the name has not resolved).
    pub health: Health,
    /// Each resolved address.
    pub endpoints: Vec<EndpointStatus>,
    /// The most failed checks in a row of any endpoint (specification `ConsecutiveFails`).
    pub consecutive_failures: u32,
    /// The slowest last check of its endpoints (specification `ResponseTime`).
    pub response_time: Option<Duration>,
    /// The last resolution error, else the first endpoint's last check error
    /// (specification `ErrorMessage`).
    pub error: Option<String>,
    /// A passive signal from the request path (an open circuit breaker), as reported by
    /// the endpoint factory. It does not change `health`: see the crate docs.
    pub passive: Option<String>,
    /// Requests in flight.
    pub in_flight: usize,
}

impl BackendStatus {
    /// Specification `IsHealthy`: not known to be unhealthy.
    pub fn is_healthy(&self) -> bool {
        self.health != Health::Unhealthy
    }
}

/// Every backend's status, and whether panic mode is on.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// Every endpoint is unhealthy and panic mode routes to all of them anyway.
    pub panic: bool,
    /// The backends, in the order they were added.
    pub backends: Vec<BackendStatus>,
}

impl HealthReport {
    /// The status of backend `id`.
    pub fn get(&self, id: &str) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.id == id)
    }
}

/// A change the registry publishes (see `Registry::subscribe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// An endpoint's health changed.
    Transition {
        /// The backend.
        backend: String,
        /// The endpoint.
        addr: SocketAddr,
        /// Before.
        from: Health,
        /// After.
        to: Health,
    },
    /// Panic mode turned on (`true`) or off.
    Panic(bool),
    /// A backend's addresses changed after a resolution.
    Resolved {
        /// The backend.
        backend: String,
        /// Its addresses now.
        addrs: Vec<SocketAddr>,
    },
    /// Resolving a backend's name failed; its last addresses are kept.
    ResolveFailed {
        /// The backend.
        backend: String,
        /// Why.
        error: String,
    },
    /// A backend was removed (directly or at the end of a drain).
    Removed {
        /// The backend.
        backend: String,
    },
}
