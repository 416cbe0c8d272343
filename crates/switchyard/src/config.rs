//! Configuration, with the specification's defaults.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use switchyard_breaker::BreakerConfig;
use switchyard_cache::CacheConfig;
use switchyard_health::{HealthConfig, StatusRange};
use switchyard_pool::{CertKey, CertKeyError, PoolConfig, Protocol, TlsConfig};
use switchyard_retry::RetryConfig;

/// The proxy's configuration. `ProxyConfig::default()` is the specification's
/// `DefaultProxyConfig`.
///
/// Deserializes from TOML/JSON with the specification's field names in snake_case;
/// durations are human strings (`"100ms"`, `"30s"`, `"5m"`), sizes are `"100MiB"` or a
/// byte count. Unknown keys are an error. Besides the specification's keys it holds each
/// layer's own settings (breaker, retries, cache, health checks and DNS, pool, metrics);
/// `cache_config()`, `health_config()` and the like turn them into each crate's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[doc(alias = "DefaultProxyConfig")]
pub struct ProxyConfig {
    /// How requests are spread over backends.
    pub load_balancer_type: LoadBalancerType,
    /// Whether each backend gets a circuit breaker.
    pub circuit_breaker_enabled: bool,
    /// Consecutive failures that open a backend's circuit.
    pub circuit_breaker_threshold: u32,
    /// How long an open circuit stays open before probing.
    #[serde(with = "humantime_serde")]
    pub circuit_breaker_timeout: Duration,
    /// Hard cap on open connections to one backend.
    pub max_connections_per_backend: usize,
    /// Bound on connecting to a backend (DNS and TCP).
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "humantime_serde")]
    pub idle_conn_timeout: Duration,
    /// Idle connections kept per backend.
    pub max_idle_per_backend: usize,
    /// Concurrent streams on one HTTP/2 backend connection before another is opened.
    pub h2_max_streams_per_connection: usize,
    /// PEM file of the certificate authorities trusted for `https` backends, instead of
    /// the Mozilla roots built in (a private CA's backends).
    pub backend_ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to `https` backends that ask the client for one
    /// (mutual TLS); with `backend_client_key_file`.
    pub backend_client_cert_file: Option<PathBuf>,
    /// PEM private key of `backend_client_cert_file`.
    pub backend_client_key_file: Option<PathBuf>,
    /// TLS settings for `https` backends given in code (a custom verifier…); they take
    /// precedence over `backend_ca_file` and the client certificate. Not read from a file.
    #[serde(skip)]
    pub backend_tls: Option<TlsConfig>,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    /// Whether retry delays double each time (100 ms, 200 ms, 400 ms …).
    pub retry_backoff: bool,
    /// Retry POST and PATCH too (only idempotent methods are retried by default).
    pub retry_non_idempotent: bool,
    /// Whether GET responses are cached.
    pub cache_enabled: bool,
    /// Freshness given to cacheable responses that carry none.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
    /// Memory bound of the response cache.
    pub cache_max_size: ByteSize,
    /// The largest response the cache stores (larger ones stream through).
    pub cache_max_object_size: ByteSize,
    /// How long past freshness a stored response may answer when the backends fail, for
    /// responses that carry no `stale-if-error` of their own (0: only when they do).
    #[serde(with = "humantime_serde")]
    pub cache_stale_if_error: Duration,
    /// How long past freshness a stored response may be served while it is refreshed in
    /// the background, for responses without `stale-while-revalidate` (0: only with it).
    #[serde(with = "humantime_serde")]
    pub cache_stale_while_revalidate: Duration,
    /// How long a request waits for a concurrent request fetching the same URL before
    /// going to the backends itself.
    #[serde(with = "humantime_serde")]
    pub cache_coalesce_wait: Duration,
    /// Whether backends are checked actively.
    pub health_check_enabled: bool,
    /// Time between health checks of one backend.
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// Path requested by health checks.
    pub health_check_path: String,
    /// Bound on one health check (connect, request, response head).
    #[serde(with = "humantime_serde")]
    pub health_check_timeout: Duration,
    /// Statuses that pass a health check: `"2xx"`, `"200"` or `"200-399"`.
    pub health_check_expected_status: StatusRange,
    /// Passing checks in a row that bring an unhealthy backend back.
    pub health_check_rise: u32,
    /// Failed checks in a row that take a backend out of rotation.
    pub health_check_fall: u32,
    /// Health checks in flight at once, over all backends.
    pub health_check_max_concurrent: usize,
    /// When every backend is unhealthy, route to all of them rather than refuse traffic.
    pub health_check_panic_mode: bool,
    /// How often backends given by host name are re-resolved (the system resolver gives
    /// no TTL).
    #[serde(with = "humantime_serde")]
    pub dns_refresh: Duration,
    /// Shortest time between two resolutions of a name (and the retry delay after a
    /// failed one).
    #[serde(with = "humantime_serde")]
    pub dns_min_ttl: Duration,
    /// Longest time between two resolutions of a name.
    #[serde(with = "humantime_serde")]
    pub dns_max_ttl: Duration,
    /// Bound on a whole request, retries included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Forward the client's `Host` header (`true`), or send the backend's authority.
    pub preserve_host: bool,
    /// An upgraded connection (WebSocket) that carries no byte either way for this long
    /// is closed; `0s`: only when a side closes it.
    #[serde(with = "humantime_serde")]
    pub upgrade_idle_timeout: Duration,
    /// The protocols a client's `Upgrade` may switch to (compared without ASCII case, on
    /// the name before any `/version`); an upgrade to any other is removed and the
    /// request goes on as a plain one. `h2c` never goes through, even listed.
    pub upgrade_protocols: Vec<String>,
    /// Count and time requests, proxy-wide and per backend (`Proxy::metrics`, the admin
    /// API's `/metrics`). Off, requests pass the metrics layers unrecorded.
    pub metrics_enabled: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let health = HealthConfig::default();
        let cache = CacheConfig::default();
        Self {
            load_balancer_type: LoadBalancerType::RoundRobin,
            circuit_breaker_enabled: true,
            circuit_breaker_threshold: 5,
            circuit_breaker_timeout: Duration::from_secs(30),
            max_connections_per_backend: 100,
            connection_timeout: Duration::from_secs(10),
            idle_conn_timeout: Duration::from_secs(90),
            max_idle_per_backend: 100,
            h2_max_streams_per_connection: 100,
            backend_ca_file: None,
            backend_client_cert_file: None,
            backend_client_key_file: None,
            backend_tls: None,
            max_retries: 3,
            retry_delay: Duration::from_millis(100),
            retry_backoff: true,
            retry_non_idempotent: false,
            cache_enabled: true,
            cache_ttl: Duration::from_secs(300),
            cache_max_size: ByteSize(cache.max_size),
            cache_max_object_size: ByteSize(cache.max_object_size),
            cache_stale_if_error: cache.stale_if_error,
            cache_stale_while_revalidate: cache.stale_while_revalidate,
            cache_coalesce_wait: cache.coalesce_wait,
            health_check_enabled: true,
            health_check_interval: Duration::from_secs(10),
            health_check_path: "/health".to_owned(),
            health_check_timeout: health.timeout,
            health_check_expected_status: health.expected_status,
            health_check_rise: health.rise,
            health_check_fall: health.fall,
            health_check_max_concurrent: health.max_concurrent,
            health_check_panic_mode: health.panic_mode,
            dns_refresh: health.dns_refresh,
            dns_min_ttl: health.dns_min_ttl,
            dns_max_ttl: health.dns_max_ttl,
            request_timeout: Duration::from_secs(30),
            preserve_host: true,
            upgrade_idle_timeout: Duration::from_secs(3600),
            upgrade_protocols: vec!["websocket".to_owned()],
            metrics_enabled: true,
        }
    }
}

/// A problem found by [`ProxyConfig::validate`]: the key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, dotted from the top of the `[proxy]` table (`circuit_breaker_threshold`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.message)
    }
}

impl ProxyConfig {
    /// The connection pool settings of one backend.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            max_connections: self.max_connections_per_backend,
            max_idle: self.max_idle_per_backend,
            connect_timeout: self.connection_timeout,
            wait_timeout: self.connection_timeout,
            idle_timeout: self.idle_conn_timeout,
            protocol: Protocol::Http1,
            h2_max_streams: self.h2_max_streams_per_connection,
            tls: None,
        }
    }

    /// The TLS settings for `https` backends: `backend_tls`, else the CAs of
    /// `backend_ca_file` (or the Mozilla roots) with the client certificate of
    /// `backend_client_cert_file`, if any. A file that cannot be loaded (which
    /// [`validate`](Self::validate) reports) is logged and left out: the built-in roots
    /// are trusted, or no client certificate is presented.
    pub fn tls_config(&self) -> TlsConfig {
        let (tls, problems) = self.load_tls();
        for p in problems {
            tracing::error!("{}: {}", p.key, p.message);
        }
        tls
    }

    /// The TLS settings, and what kept any file of them from loading.
    fn load_tls(&self) -> (TlsConfig, Vec<ConfigProblem>) {
        if let Some(tls) = &self.backend_tls {
            return (tls.clone(), Vec::new());
        }
        let mut problems = Vec::new();
        let mut problem = |key: &str, message: String| {
            problems.push(ConfigProblem {
                key: key.into(),
                message,
            })
        };
        let mut tls = match self.backend_ca_file.as_deref().map(TlsConfig::from_ca_file) {
            Some(Ok(tls)) => tls,
            Some(Err(message)) => {
                problem("backend_ca_file", message);
                TlsConfig::webpki_roots()
            }
            None => TlsConfig::webpki_roots(),
        };
        let (cert_key, key_key) = ("backend_client_cert_file", "backend_client_key_file");
        match (
            &self.backend_client_cert_file,
            &self.backend_client_key_file,
        ) {
            (None, None) => {}
            (Some(_), None) => problem(key_key, format!("is needed with {cert_key}")),
            (None, Some(_)) => problem(cert_key, format!("is needed with {key_key}")),
            (Some(cert), Some(key)) => match CertKey::from_files(cert, key) {
                Ok(client) => tls = tls.with_client_cert(client),
                Err(CertKeyError::Certificate(message)) => problem(cert_key, message),
                Err(CertKeyError::Key(message)) => problem(key_key, message),
            },
        }
        (tls, problems)
    }

    /// The retry layer's settings: attempts stay within `request_timeout`.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.max_retries,
            delay: self.retry_delay,
            backoff: self.retry_backoff,
            non_idempotent: self.retry_non_idempotent,
            deadline: Some(self.request_timeout),
            ..RetryConfig::default()
        }
    }

    /// The circuit breaker settings of one backend.
    pub fn breaker_config(&self) -> BreakerConfig {
        BreakerConfig {
            enabled: self.circuit_breaker_enabled,
            threshold: self.circuit_breaker_threshold,
            timeout: self.circuit_breaker_timeout,
            ..BreakerConfig::default()
        }
    }

    /// The response cache's settings.
    pub fn cache_config(&self) -> CacheConfig {
        CacheConfig {
            ttl: self.cache_ttl,
            max_size: self.cache_max_size.bytes(),
            max_object_size: self.cache_max_object_size.bytes(),
            stale_if_error: self.cache_stale_if_error,
            stale_while_revalidate: self.cache_stale_while_revalidate,
            coalesce_wait: self.cache_coalesce_wait,
        }
    }

    /// The health checker's and resolver's settings.
    pub fn health_config(&self) -> HealthConfig {
        HealthConfig {
            enabled: self.health_check_enabled,
            interval: self.health_check_interval,
            path: self.health_check_path.clone(),
            timeout: self.health_check_timeout,
            expected_status: self.health_check_expected_status,
            rise: self.health_check_rise,
            fall: self.health_check_fall,
            max_concurrent: self.health_check_max_concurrent,
            panic_mode: self.health_check_panic_mode,
            dns_refresh: self.dns_refresh,
            dns_min_ttl: self.dns_min_ttl,
            dns_max_ttl: self.dns_max_ttl,
        }
    }

    /// Checks values that parse but make no sense, returning every problem found.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, message: &str| {
            if !ok {
                problems.push(ConfigProblem {
                    key: key.to_owned(),
                    message: message.to_owned(),
                });
            }
        };
        check(
            self.circuit_breaker_threshold >= 1,
            "circuit_breaker_threshold",
            "must be at least 1",
        );
        check(
            !self.circuit_breaker_timeout.is_zero(),
            "circuit_breaker_timeout",
            "must be longer than 0s",
        );
        check(
            self.max_connections_per_backend >= 1,
            "max_connections_per_backend",
            "must be at least 1",
        );
        check(
            self.h2_max_streams_per_connection >= 1,
            "h2_max_streams_per_connection",
            "must be at least 1",
        );
        check(
            !self.connection_timeout.is_zero(),
            "connection_timeout",
            "must be longer than 0s",
        );
        check(
            !self.request_timeout.is_zero(),
            "request_timeout",
            "must be longer than 0s",
        );
        check(
            self.cache_max_object_size <= self.cache_max_size,
            "cache_max_object_size",
            "must not exceed cache_max_size",
        );
        problems.extend(self.load_tls().1);
        for (key, message) in self.health_config().problems() {
            let key = match key {
                "dns_refresh" | "dns_min_ttl" | "dns_max_ttl" => key.to_owned(),
                other => format!("health_check_{other}"),
            };
            problems.push(ConfigProblem { key, message });
        }
        problems
    }
}

/// How requests are spread over backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LoadBalancerType {
    /// Round robin; when weights differ, smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
}

/// A size in bytes, written `"100MiB"`, `"512KiB"`, `"1GB"`, `"4096"` or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("`{s}` is not a size (examples: \"100MiB\", \"64KiB\", \"4096\")")
        })?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (use B, KB, KiB, MB, MiB, GB or GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A backend server (specification 15.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Unique id, used to remove it and in logs and metrics.
    pub id: String,
    /// Where requests go: `http://host:port`. A path, if any, is ignored.
    #[serde(with = "uri_string")]
    pub url: Uri,
    /// Share of the traffic relative to the other backends.
    #[serde(default = "one")]
    pub weight: u32,
    /// Inactive backends are listed but get no traffic.
    #[serde(default = "yes")]
    pub active: bool,
    /// `http1` (default) or `h2`: HTTP/2 with prior knowledge.
    #[serde(default)]
    pub protocol: Protocol,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

impl Backend {
    /// An active backend of weight 1.
    pub fn new(id: impl Into<String>, url: Uri) -> Self {
        Self {
            id: id.into(),
            url,
            weight: 1,
            active: true,
            protocol: Protocol::Http1,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the protocol spoken to the backend.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Sets whether the backend gets traffic.
    pub fn active(mut self, active: bool) -> Self {
        self.active = active;
        self
    }

    /// Checks the backend's fields, returning every problem (keys relative to the backend).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if self.id.trim().is_empty() {
            problems.push(ConfigProblem {
                key: "id".into(),
                message: "must not be empty".into(),
            });
        }
        if self.weight == 0 {
            problems.push(ConfigProblem {
                key: "weight".into(),
                message: "must be at least 1".into(),
            });
        }
        let url_problem = match (self.url.scheme_str(), self.url.authority()) {
            (Some("http" | "https"), Some(_)) => None,
            (Some(other), _) if other != "http" && other != "https" => {
                Some(format!("unsupported scheme `{other}`; use http or https"))
            }
            (None, _) => Some(format!(
                "`{}` has no scheme; write http://{}",
                self.url, self.url
            )),
            _ => Some(format!("`{}` has no host", self.url)),
        };
        if let Some(message) = url_problem {
            problems.push(ConfigProblem {
                key: "url".into(),
                message,
            });
        }
        problems
    }
}

mod uri_string {
    use http::Uri;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(uri: &Uri, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(uri)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Uri, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a URL: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_specifications() {
        let c = ProxyConfig::default();
        assert_eq!(c.load_balancer_type, LoadBalancerType::RoundRobin);
        assert!(c.circuit_breaker_enabled);
        assert_eq!(c.circuit_breaker_threshold, 5);
        assert_eq!(c.circuit_breaker_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections_per_backend, 100);
        assert_eq!(c.connection_timeout, Duration::from_secs(10));
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.retry_delay, Duration::from_millis(100));
        assert!(c.cache_enabled);
        assert_eq!(c.cache_ttl, Duration::from_secs(300));
        assert_eq!(c.cache_max_size, ByteSize(100 << 20));
        assert!(c.health_check_enabled);
        assert_eq!(c.health_check_interval, Duration::from_secs(10));
        assert_eq!(c.health_check_path, "/health");
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.upgrade_protocols, ["websocket"]);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn parses_human_durations_and_sizes() {
        let c: ProxyConfig = toml::from_str(
            r#"
            retry_delay = "250ms"
            request_timeout = "1m"
            cache_max_size = "64MiB"
            upgrade_protocols = ["websocket", "irc"]
            "#,
        )
        .unwrap();
        assert_eq!(c.retry_delay, Duration::from_millis(250));
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert_eq!(c.cache_max_size.bytes(), 64 << 20);
        assert_eq!(c.upgrade_protocols, ["websocket", "irc"]);
        assert_eq!(c.max_retries, 3, "unset keys keep their defaults");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = toml::from_str::<ProxyConfig>("max_retires = 3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_retires"), "{err}");
        let err = toml::from_str::<ProxyConfig>("retry_delay = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retry_delay"), "{err}");
        let err = toml::from_str::<ProxyConfig>("cache_max_size = \"12 parsecs\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("parsecs"), "{err}");
    }

    #[test]
    fn validation_reports_every_problem() {
        let c = ProxyConfig {
            circuit_breaker_threshold: 0,
            request_timeout: Duration::ZERO,
            health_check_path: "health".into(),
            ..ProxyConfig::default()
        };
        let keys: Vec<_> = c.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "circuit_breaker_threshold",
                "request_timeout",
                "health_check_path"
            ]
        );
    }

    #[test]
    fn sizes_round_trip() {
        for (text, bytes) in [
            ("100MiB", 100u64 << 20),
            ("64KiB", 64 << 10),
            ("1GB", 1_000_000_000),
            ("4096", 4096),
        ] {
            let parsed: ByteSize = text.parse().unwrap();
            assert_eq!(parsed.bytes(), bytes);
            assert_eq!(parsed.to_string().parse::<ByteSize>().unwrap(), parsed);
        }
        assert!("ten".parse::<ByteSize>().is_err());
    }
}
