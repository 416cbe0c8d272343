//! Health check and DNS settings.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How backends are checked and how their names are re-resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Whether backends are checked actively. Without checks every enabled backend is
    /// routable (its circuit breaker still guards it).
    pub enabled: bool,
    /// Time between two checks of one endpoint. Each endpoint's first check comes at a
    /// random point of the first interval, so many backends are not probed in the same
    /// instant, and keeps that phase afterwards.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Path requested by the check (`GET`).
    pub path: String,
    /// Bound on one check: connect, request and response head.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Statuses that count as healthy.
    pub expected_status: StatusRange,
    /// Consecutive successful checks that bring an unhealthy endpoint back.
    pub rise: u32,
    /// Consecutive failed checks that take an endpoint out of the balancer.
    pub fall: u32,
    /// Checks in flight at once, over all backends.
    pub max_concurrent: usize,
    /// When every endpoint is unhealthy, route to all of them anyway rather than refuse
    /// every request (Envoy's panic threshold at 0 %).
    pub panic_mode: bool,
    /// How often a backend given by host name is re-resolved when the resolver gives no
    /// TTL.
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// Lower bound on the time between two resolutions (and the retry delay after a failed
    /// one).
    #[serde(with = "humantime_serde")]
    pub dns_min_ttl: Duration,
    /// Upper bound on the time between two resolutions, whatever the TTL.
    #[serde(with = "humantime_serde")]
    pub dns_max_ttl: Duration,
    /// The name server that resolves backend names and `dns+srv://` names (a Consul
    /// agent's `127.0.0.1:8600`, say), with `hickory-resolver`; `None`: the system's
    /// resolver (`getaddrinfo` for names, `/etc/resolv.conf`'s servers for SRV).
    pub dns_server: Option<SocketAddr>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(10),
            path: "/health".to_owned(),
            timeout: Duration::from_secs(2),
            expected_status: StatusRange::SUCCESS,
            rise: 2,
            fall: 3,
            max_concurrent: 64,
            panic_mode: true,
            dns_refresh: Duration::from_secs(30),
            dns_min_ttl: Duration::from_secs(1),
            dns_max_ttl: Duration::from_secs(300),
            dns_server: None,
        }
    }
}

impl HealthConfig {
    /// The problems with this configuration, as (key, message) pairs; empty when valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.interval.is_zero() {
            out.push(("interval", "must be greater than 0".to_owned()));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "must be greater than 0".to_owned()));
        }
        if !self.path.starts_with('/') {
            out.push(("path", format!("`{}` must start with `/`", self.path)));
        } else if self.path.parse::<http::uri::PathAndQuery>().is_err() {
            out.push((
                "path",
                format!("`{}` is not a valid request path", self.path),
            ));
        }
        if self.rise == 0 {
            out.push(("rise", "must be at least 1".to_owned()));
        }
        if self.fall == 0 {
            out.push(("fall", "must be at least 1".to_owned()));
        }
        if self.max_concurrent == 0 {
            out.push(("max_concurrent", "must be at least 1".to_owned()));
        }
        if self.dns_min_ttl.is_zero() {
            out.push(("dns_min_ttl", "must be greater than 0".to_owned()));
        }
        if self.dns_max_ttl < self.dns_min_ttl {
            out.push((
                "dns_max_ttl",
                "must not be less than dns_min_ttl".to_owned(),
            ));
        }
        out
    }

    /// The time until the next resolution after one that gave `ttl`.
    pub(crate) fn dns_delay(&self, ttl: Option<Duration>) -> Duration {
        ttl.unwrap_or(self.dns_refresh)
            .clamp(self.dns_min_ttl, self.dns_max_ttl.max(self.dns_min_ttl))
    }
}

/// An inclusive range of HTTP statuses, written `"2xx"`, `"200"` or `"200-399"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    low: u16,
    high: u16,
}

impl StatusRange {
    /// Every 2xx status.
    pub const SUCCESS: Self = Self {
        low: 200,
        high: 299,
    };

    /// The statuses from `low` to `high`, both included.
    pub fn new(low: StatusCode, high: StatusCode) -> Self {
        Self {
            low: low.as_u16(),
            high: high.as_u16(),
        }
    }

    /// Whether `status` is in the range.
    pub fn contains(&self, status: StatusCode) -> bool {
        (self.low..=self.high).contains(&status.as_u16())
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else if self.low % 100 == 0 && self.high == self.low + 99 {
            write!(f, "{}xx", self.low / 100)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl FromStr for StatusRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let status = |t: &str| {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| {
                    format!("`{s}` is not a status, a class like `2xx` or a range like `200-399`")
                })
        };
        let s = s.trim();
        let range = if let Some(class) = s.strip_suffix("xx").or_else(|| s.strip_suffix("XX")) {
            let low = status(&format!("{class}00"))?;
            Self {
                low,
                high: low + 99,
            }
        } else if let Some((a, b)) = s.split_once('-') {
            Self {
                low: status(a)?,
                high: status(b)?,
            }
        } else {
            let n = status(s)?;
            Self { low: n, high: n }
        };
        if range.low > range.high {
            return Err(format!("`{s}`: the range is empty"));
        }
        Ok(range)
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges_parse_and_print() {
        let ok: StatusRange = "2xx".parse().unwrap();
        assert!(ok.contains(StatusCode::NO_CONTENT));
        assert!(!ok.contains(StatusCode::MOVED_PERMANENTLY));
        assert_eq!(ok.to_string(), "2xx");
        let wide: StatusRange = "200-399".parse().unwrap();
        assert!(wide.contains(StatusCode::FOUND));
        assert_eq!(wide.to_string(), "200-399");
        assert_eq!("204".parse::<StatusRange>().unwrap().to_string(), "204");
        assert!("399-200".parse::<StatusRange>().is_err());
        assert!("9xx".parse::<StatusRange>().is_err());
        assert!("ok".parse::<StatusRange>().is_err());
    }

    #[test]
    fn dns_delay_is_clamped() {
        let c = HealthConfig::default();
        assert_eq!(c.dns_delay(None), Duration::from_secs(30));
        assert_eq!(c.dns_delay(Some(Duration::ZERO)), Duration::from_secs(1));
        assert_eq!(
            c.dns_delay(Some(Duration::from_secs(86400))),
            Duration::from_secs(300)
        );
    }

    #[test]
    fn problems_name_the_key() {
        let c = HealthConfig {
            path: "health".into(),
            fall: 0,
            ..HealthConfig::default()
        };
        let keys: Vec<_> = c.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["path", "fall"]);
        assert!(HealthConfig::default().problems().is_empty());
    }
}
