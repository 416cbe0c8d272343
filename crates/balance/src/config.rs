//! The balancer's settings: which endpoint a request goes to, and how a new one is eased in.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How [`Balance`](crate::Balance) chooses among the ready endpoints. Every policy
/// respects weights and skips endpoints that are not ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Smooth weighted round robin (nginx's): each endpoint in turn, in proportion to its
    /// weight, whatever its load. Named `round_robin`.
    #[default]
    RoundRobin,
    /// Power of two choices by requests in flight (Envoy's `LEAST_REQUEST`, HAProxy's
    /// `random(2)`): two endpoints drawn at random, the one with the fewer requests in
    /// flight per unit of weight (`(in_flight + 1) / weight`) wins. Named `least_request`.
    LeastRequest,
    /// Power of two choices by peak-EWMA latency (linkerd's default): the cost of an
    /// endpoint is its latency estimate × `(in_flight + 1)` / weight. The estimate jumps to
    /// a slower response at once and forgets it over seconds, so a backend that turns slow
    /// loses its share within a few requests. Named `peak_ewma`.
    PeakEwma,
}

impl Policy {
    /// Every policy, in the order of their names in [`Policy::NAMES`].
    pub const ALL: [Policy; 3] = [Policy::RoundRobin, Policy::LeastRequest, Policy::PeakEwma];
    /// The names [`FromStr`] accepts.
    pub const NAMES: [&'static str; 3] = ["round_robin", "least_request", "peak_ewma"];

    /// The policy's name, as the configuration writes it.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether requests' load is recorded for this policy.
    pub(crate) fn measures(self) -> bool {
        self != Policy::RoundRobin
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// A policy name that is none of [`Policy::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPolicy(String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown balancer `{}` (expected one of: {})",
            self.0,
            Policy::NAMES.join(", ")
        )
    }
}

impl std::error::Error for UnknownPolicy {}

/// The balancer's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalanceConfig {
    /// How an endpoint is chosen.
    pub policy: Policy,
    /// Slow start: an endpoint that joins the set (a new backend, one whose health checks
    /// pass again, one enabled again) starts at a tenth of its weight, which grows linearly
    /// to its full weight over this window (Envoy's and HAProxy's `slowstart`), so that a
    /// cold cache or JIT behind it is not flooded. Zero: off, full weight at once.
    pub slow_start: Duration,
}
