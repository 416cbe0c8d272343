//! Configuration, with the specification's defaults.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use switchyard_balance::BalanceConfig;
use switchyard_breaker::BreakerConfig;
use switchyard_cache::CacheConfig;
use switchyard_health::HealthConfig;
use switchyard_pool::{CertKey, CertKeyError, Http1Engine, PoolConfig, Protocol, TlsConfig};
use switchyard_retry::RetryConfig;

use self::file::ProxyFile;
pub use self::file::{Discovery, DiscoveryKind};

pub mod file;

/// The proxy's configuration: each layer's own settings, and the facade's.
/// `ProxyConfig::default()` is the specification's `DefaultProxyConfig`; its values are
/// the layers' own defaults (`PoolConfig::default()` and so on), which are the
/// specification's.
///
/// Deserializes from TOML/JSON with the specification's flat keys in snake_case
/// (`max_retries`, `cache_ttl`, `health_check_interval`…); durations are human strings
/// (`"100ms"`, `"30s"`, `"5m"`), sizes are `"100MiB"` or a byte count. Unknown keys are an
/// error. It serializes to the same keys. Settings a layer has but the file does not name
/// (the retry budget, the breaker's half-open probes…) keep the layer's defaults.
///
/// ```
/// use std::time::Duration;
/// use switchyard::ProxyConfig;
///
/// let mut config = ProxyConfig::default();
/// config.retry.max_retries = 1;
/// config.health.interval = Duration::from_secs(5);
/// config.cache = None;
/// assert!(config.validate().is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ProxyFile", into = "ProxyFile")]
#[doc(alias = "DefaultProxyConfig")]
pub struct ProxyConfig {
    /// Each backend's connection pool. Its `protocol` is each backend's own; its `tls`,
    /// when set in code (a custom verifier…), is used for `https` backends instead of
    /// `backend_ca_file` and the client certificate. The file's `connection_timeout`
    /// sets both `connect_timeout` and `wait_timeout`. Its `http1` engine is the file's
    /// `backend_http1`; the default (native) can be overridden with the environment
    /// variable `SWITCHYARD_BACKEND_HTTP1=native|hyper`, read by [`ProxyConfig::default`]
    /// (so that a whole test suite can run on either engine).
    pub pool: PoolConfig,
    /// How the balancer chooses a backend (the file's `balancer`: `round_robin`,
    /// `least_request` or `peak_ewma`) and eases new ones in (`slow_start`, `"0s"`: off).
    pub balance: BalanceConfig,
    /// Retries. Without a `deadline` of its own, no attempt starts after
    /// `request_timeout`; without an `attempt_timeout` of its own, an attempt waits at most
    /// a third of `request_timeout` for its response head (so that two retries fit).
    pub retry: RetryConfig,
    /// Each backend's circuit breaker (`enabled: false`: none trips).
    pub breaker: BreakerConfig,
    /// The response cache for GET responses; `None`: no cache in the stack.
    pub cache: Option<CacheConfig>,
    /// Active health checks (`enabled: false`: every enabled backend is routable) and
    /// the re-resolution of backends given by host name.
    pub health: HealthConfig,
    /// Count and time requests, proxy-wide and per backend (`Proxy::metrics`, the admin
    /// API's `/metrics`). Off, requests pass the metrics layers unrecorded.
    pub metrics: bool,
    /// Bound on a whole request, retries included.
    pub request_timeout: Duration,
    /// Forward the client's `Host` header (`true`), or send the backend's authority.
    pub preserve_host: bool,
    /// An upgraded connection (WebSocket) that carries no byte either way for this long
    /// is closed; zero: only when a side closes it.
    pub upgrade_idle_timeout: Duration,
    /// PEM file of the certificate authorities trusted for `https` backends, instead of
    /// the Mozilla roots built in (a private CA's backends).
    pub backend_ca_file: Option<PathBuf>,
    /// PEM certificate chain presented to `https` backends that ask the client for one
    /// (mutual TLS); with `backend_client_key_file`.
    pub backend_client_cert_file: Option<PathBuf>,
    /// PEM private key of `backend_client_cert_file`.
    pub backend_client_key_file: Option<PathBuf>,
    /// The protocols a client's `Upgrade` may switch to (compared without ASCII case, on
    /// the name before any `/version`); an upgrade to any other is removed and the
    /// request goes on as a plain one. `h2c` never goes through, even listed.
    pub upgrade_protocols: Vec<String>,
    /// Keep a decision trace of every request (cache outcome, attempts, backends, retry
    /// decisions): in the JSON access log, the `Switchyard-Trace` response header asked
    /// for with the admin token, and the admin API's live tail ([`Proxy::traces`]).
    ///
    /// Off by default: it costs ~3.8k instructions of a ~37.6k proxied request
    /// (`benches/README.md`), over the 2 % a default-on feature may cost.
    ///
    /// [`Proxy::traces`]: crate::Proxy::traces
    pub trace: bool,
    /// Take part in W3C Trace Context: continue a request's valid `traceparent` with the
    /// proxy's own span id, or start a new trace when it has none (or an invalid one), so
    /// that every backend gets one. Off: `traceparent` and `tracestate` pass untouched.
    pub generate_traceparent: bool,
}

/// `SWITCHYARD_BACKEND_HTTP1`, when set to `native` or `hyper`.
fn http1_from_env() -> Option<Http1Engine> {
    match std::env::var("SWITCHYARD_BACKEND_HTTP1").ok()?.as_str() {
        "native" => Some(Http1Engine::Native),
        "hyper" => Some(Http1Engine::Hyper),
        _ => None,
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            pool: PoolConfig {
                http1: http1_from_env().unwrap_or_default(),
                ..PoolConfig::default()
            },
            balance: BalanceConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            cache: Some(CacheConfig::default()),
            health: HealthConfig::default(),
            metrics: true,
            request_timeout: Duration::from_secs(30),
            preserve_host: true,
            upgrade_idle_timeout: Duration::from_secs(3600),
            upgrade_protocols: vec!["websocket".to_owned()],
            trace: false,
            generate_traceparent: true,
            backend_ca_file: None,
            backend_client_cert_file: None,
            backend_client_key_file: None,
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
    /// The TLS settings for `https` backends: `pool.tls`, else the CAs of
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

    /// A digest of what the backend TLS files hold now (zero when `pool.tls` stands in
    /// for them): it changes when one of them is rewritten, so that a reload of the same
    /// paths can tell a renewed certificate.
    pub(crate) fn tls_files(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        if self.pool.tls.is_some() {
            return 0;
        }
        let mut digest = std::collections::hash_map::DefaultHasher::new();
        for file in [
            &self.backend_ca_file,
            &self.backend_client_cert_file,
            &self.backend_client_key_file,
        ] {
            file.as_deref()
                .map(std::fs::read)
                .map(Result::ok)
                .hash(&mut digest);
        }
        digest.finish()
    }

    /// The TLS settings, and what kept any file of them from loading.
    fn load_tls(&self) -> (TlsConfig, Vec<ConfigProblem>) {
        if let Some(tls) = &self.pool.tls {
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
            Some(Err(e)) => {
                problem("backend_ca_file", e.to_string());
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

    /// The retry settings the proxy runs with: `retry`, bounded by `request_timeout`
    /// unless it has a deadline of its own, each attempt by a third of it unless it has an
    /// attempt timeout of its own.
    pub(crate) fn bounded_retry(&self) -> RetryConfig {
        RetryConfig {
            deadline: self.retry.deadline.or(Some(self.request_timeout)),
            attempt_timeout: Some(self.attempt_timeout()),
            ..self.retry.clone()
        }
    }

    /// How long one attempt waits for its response head: `retry.attempt_timeout`, by
    /// default a third of `request_timeout`.
    pub fn attempt_timeout(&self) -> Duration {
        self.retry
            .attempt_timeout
            .unwrap_or(self.request_timeout / 3)
    }

    /// Checks values that parse but make no sense, returning every problem found. Keys
    /// are the file's.
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
            self.breaker.threshold >= 1,
            "circuit_breaker_threshold",
            "must be at least 1",
        );
        check(
            !self.breaker.timeout.is_zero(),
            "circuit_breaker_timeout",
            "must be longer than 0s",
        );
        check(
            self.pool.max_connections >= 1,
            "max_connections_per_backend",
            "must be at least 1",
        );
        check(
            self.pool.h2_max_streams >= 1,
            "h2_max_streams_per_connection",
            "must be at least 1",
        );
        check(
            !self.pool.connect_timeout.is_zero(),
            "connection_timeout",
            "must be longer than 0s",
        );
        check(
            !self.request_timeout.is_zero(),
            "request_timeout",
            "must be longer than 0s",
        );
        if let Some(attempt) = self.retry.attempt_timeout {
            check(
                !attempt.is_zero(),
                "attempt_timeout",
                "must be longer than 0s",
            );
            check(
                attempt <= self.request_timeout,
                "attempt_timeout",
                "must not exceed request_timeout",
            );
        }
        if let Some(hedge) = self.retry.hedge_after {
            check(!hedge.is_zero(), "hedge_after", "must be longer than 0s");
            check(
                hedge < self.attempt_timeout(),
                "hedge_after",
                "must be shorter than attempt_timeout",
            );
        }
        if let Some(cache) = &self.cache {
            check(
                cache.max_object_size <= cache.max_size,
                "cache_max_object_size",
                "must not exceed cache_max_size",
            );
            if let Some(shared) = &cache.shared {
                if let Some(problem) = shared.url_problem() {
                    check(false, "cache_shared", &problem);
                }
                check(
                    !shared.timeout.is_zero(),
                    "cache_shared_timeout",
                    "must be longer than 0s",
                );
            }
        }
        problems.extend(self.load_tls().1);
        for (key, message) in self.health.problems() {
            let key = match key {
                "dns_refresh" | "dns_min_ttl" | "dns_max_ttl" => key.to_owned(),
                other => format!("health_check_{other}"),
            };
            problems.push(ConfigProblem { key, message });
        }
        problems
    }
}

/// What [`Proxy::reconfigure`](crate::Proxy::reconfigure) changed: the settings applied
/// to new requests, and those that changed but are read only when the proxy is built.
/// Names are the `[proxy]` table's keys or, for a group of them, their common prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconfigured {
    /// Settings in force for new requests.
    pub applied: Vec<&'static str>,
    /// Settings that changed and were kept as they were: they take effect after a restart
    /// (or a binary upgrade). Every `[proxy]` setting applies while the proxy runs, so
    /// [`Proxy::reconfigure`](crate::Proxy::reconfigure) leaves it empty; a caller that
    /// reloads more (a listener, say) lists there what it could not apply.
    pub need_restart: Vec<&'static str>,
}

impl ProxyConfig {
    /// What changed when `new` replaces `self` on a running proxy (all of it applies).
    pub(crate) fn changes(&self, new: &ProxyConfig) -> Reconfigured {
        let mut done = Reconfigured::default();
        let mut note = |changed: bool, name: &'static str| {
            if changed {
                done.applied.push(name);
            }
        };
        note(self.retry != new.retry, "retry");
        note(self.breaker != new.breaker, "circuit_breaker");
        note(self.cache != new.cache, "cache");
        note(
            self.request_timeout != new.request_timeout,
            "request_timeout",
        );
        note(self.preserve_host != new.preserve_host, "preserve_host");
        let upgrades = (self.upgrade_idle_timeout, &self.upgrade_protocols)
            != (new.upgrade_idle_timeout, &new.upgrade_protocols);
        note(upgrades, "upgrade");
        // The limits and timeouts; a new engine or TLS drains the pools' connections.
        let limits = |pool: &PoolConfig| PoolConfig {
            tls: None,
            http1: Http1Engine::default(),
            ..pool.clone()
        };
        note(limits(&self.pool) != limits(&new.pool), "connection pool");
        note(self.pool.http1 != new.pool.http1, "backend_http1");
        let tls = (
            &self.backend_ca_file,
            &self.backend_client_cert_file,
            &self.backend_client_key_file,
            &self.pool.tls,
        ) != (
            &new.backend_ca_file,
            &new.backend_client_cert_file,
            &new.backend_client_key_file,
            &new.pool.tls,
        );
        note(tls, "backend TLS");
        // The checks' settings, apart from whether they run and the name server.
        let checks = |h: &HealthConfig| HealthConfig {
            enabled: false,
            dns_server: None,
            ..h.clone()
        };
        note(checks(&self.health) != checks(&new.health), "health_check");
        note(
            self.health.enabled != new.health.enabled,
            "health_check_enabled",
        );
        note(
            self.health.dns_server != new.health.dns_server,
            "dns_server",
        );
        note(self.metrics != new.metrics, "metrics_enabled");
        note(self.balance.policy != new.balance.policy, "balancer");
        note(
            self.balance.slow_start != new.balance.slow_start,
            "slow_start",
        );
        done
    }
}

impl fmt::Display for Reconfigured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.applied.is_empty() {
            parts.push(format!("applied {}", self.applied.join(", ")));
        }
        if !self.need_restart.is_empty() {
            parts.push(format!(
                "changes to {} take effect after a restart",
                self.need_restart.join(", ")
            ));
        }
        match parts.is_empty() {
            true => f.write_str("no proxy setting changed"),
            false => f.write_str(&parts.join("; ")),
        }
    }
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
    /// `dns+srv://_http._tcp.web.service.consul` stands for the targets of that name's SRV
    /// records, each a backend of its own (id `{id}/{target}:{port}`, the record's port and
    /// weight; only the lowest priority group that is up takes traffic);
    /// `?dns_server=ADDR:PORT&min_ttl=5s&max_ttl=300s` after the name gives it a name server
    /// and TTL bounds of its own.
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
            (Some("http" | "https" | "dns+srv"), Some(_)) => None,
            (Some(other), _) if !["http", "https", "dns+srv"].contains(&other) => Some(format!(
                "unsupported scheme `{other}`; use http, https or dns+srv"
            )),
            (None, _) => Some(format!(
                "`{}` has no scheme; write http://{}",
                self.url, self.url
            )),
            _ => Some(format!("`{}` has no host", self.url)),
        };
        let settings = (self.url.scheme_str() == Some("dns+srv"))
            .then(|| switchyard_health::SrvSettings::from_url(&self.url).err())
            .flatten()
            .map(|e| e.to_string());
        if let Some(message) = url_problem.or(settings) {
            problems.push(ConfigProblem {
                key: "url".into(),
                message,
            });
        }
        problems
    }
}

/// Parses a backend URL as the command line gives one: `host:port` or `scheme://host:port`
/// (`http://` is assumed when no scheme is given). The backend's id is the text itself,
/// trimmed; it is active, of weight 1, and spoken to over HTTP/1.
///
/// ```
/// let backend: switchyard::Backend = "127.0.0.1:3001".parse().unwrap();
/// assert_eq!(backend.url, "http://127.0.0.1:3001");
/// assert!("ftp://x:1".parse::<switchyard::Backend>().is_err());
/// ```
impl FromStr for Backend {
    type Err = ParseBackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let raw = s.trim();
        let err = |reason| ParseBackendError {
            raw: raw.to_owned(),
            reason,
        };
        let url = match raw.contains("://") {
            true => raw.parse(),
            false => format!("http://{raw}").parse(),
        };
        let backend = Backend::new(raw, url.map_err(|e| err(BackendText::NotUrl(e)))?);
        match backend.validate().into_iter().next() {
            Some(p) => Err(err(BackendText::Invalid(p.message))),
            None => Ok(backend),
        }
    }
}

/// Why a text is not a backend URL (see [`Backend`]'s `FromStr`).
#[derive(Debug)]
pub struct ParseBackendError {
    raw: String,
    reason: BackendText,
}

#[derive(Debug)]
enum BackendText {
    NotUrl(http::uri::InvalidUri),
    Invalid(String),
}

impl fmt::Display for ParseBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let raw = &self.raw;
        match &self.reason {
            BackendText::NotUrl(e) => write!(f, "`{raw}` is not a URL: {e}"),
            BackendText::Invalid(message) => write!(f, "`{raw}`: {message}"),
        }
    }
}

impl std::error::Error for ParseBackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.reason {
            BackendText::NotUrl(e) => Some(e),
            BackendText::Invalid(_) => None,
        }
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
        assert!(c.breaker.enabled);
        assert_eq!(c.breaker.threshold, 5);
        assert_eq!(c.breaker.timeout, Duration::from_secs(30));
        assert_eq!(c.pool.max_connections, 100);
        assert_eq!(c.pool.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.pool.wait_timeout, Duration::from_secs(10));
        assert_eq!(c.retry.max_retries, 3);
        assert_eq!(c.retry.delay, Duration::from_millis(100));
        let cache = c.cache.clone().expect("the cache is on");
        assert_eq!(cache.ttl, Duration::from_secs(300));
        assert_eq!(cache.max_size, 100 << 20);
        assert!(c.health.enabled);
        assert_eq!(c.health.interval, Duration::from_secs(10));
        assert_eq!(c.health.path, "/health");
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.bounded_retry().deadline, Some(c.request_timeout));
        assert_eq!(c.upgrade_protocols, ["websocket"]);
        assert!(c.validate().is_empty());
        let file: ProxyConfig = toml::from_str("load_balancer_type = \"round_robin\"").unwrap();
        assert_eq!(file, c, "unset keys are the defaults");
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
        assert_eq!(c.retry.delay, Duration::from_millis(250));
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert_eq!(c.cache.unwrap().max_size, 64 << 20);
        assert_eq!(c.upgrade_protocols, ["websocket", "irc"]);
        assert_eq!(c.retry.max_retries, 3, "unset keys keep their defaults");
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
        let err = toml::from_str::<ProxyConfig>("load_balancer_type = \"least_conn\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("least_conn"), "{err}");
    }

    /// Every flat key lands in its layer's settings, and serializes back as it was.
    #[test]
    fn flat_keys_map_to_the_layers_and_back() {
        let text = r#"
            circuit_breaker_enabled = false
            max_idle_per_backend = 7
            connection_timeout = "3s"
            retry_non_idempotent = true
            cache_enabled = false
            health_check_fall = 9
            dns_max_ttl = "1m"
            metrics_enabled = false
        "#;
        let c: ProxyConfig = toml::from_str(text).unwrap();
        assert!(!c.breaker.enabled);
        assert_eq!(c.pool.max_idle, 7);
        assert_eq!(c.pool.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.pool.wait_timeout, Duration::from_secs(3));
        assert!(c.retry.non_idempotent);
        assert_eq!(c.cache, None);
        assert_eq!(c.health.fall, 9);
        assert_eq!(c.health.dns_max_ttl, Duration::from_secs(60));
        assert!(!c.metrics);
        let written = toml::to_string(&c).unwrap();
        for line in [
            "max_idle_per_backend = 7",
            "cache_enabled = false",
            "dns_max_ttl = \"1m\"",
        ] {
            assert!(written.contains(line), "{written}");
        }
        assert!(written.contains("load_balancer_type = \"round_robin\""));
        assert_eq!(toml::from_str::<ProxyConfig>(&written).unwrap(), c);
    }

    #[test]
    fn validation_reports_every_problem() {
        let mut c = ProxyConfig {
            request_timeout: Duration::ZERO,
            ..ProxyConfig::default()
        };
        c.breaker.threshold = 0;
        c.health.path = "health".into();
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
    fn attempt_timeout_defaults_to_a_third_of_the_request_timeout() {
        let c = ProxyConfig {
            request_timeout: Duration::from_secs(3),
            ..ProxyConfig::default()
        };
        assert_eq!(c.retry.attempt_timeout, None);
        assert_eq!(
            c.bounded_retry().attempt_timeout,
            Some(Duration::from_secs(1))
        );
        let c: ProxyConfig = toml::from_str(
            r#"
            request_timeout = "1s"
            attempt_timeout = "300ms"
            "#,
        )
        .unwrap();
        assert_eq!(c.retry.attempt_timeout, Some(Duration::from_millis(300)));
        assert_eq!(c.attempt_timeout(), Duration::from_millis(300));
        let written = toml::to_string(&c).unwrap();
        assert!(written.contains("attempt_timeout = \"300ms\""), "{written}");
        assert_eq!(toml::from_str::<ProxyConfig>(&written).unwrap(), c);
        let unset = toml::to_string(&ProxyConfig::default()).unwrap();
        assert!(!unset.contains("attempt_timeout"), "{unset}");
    }

    #[test]
    fn hedge_after_is_off_by_default_read_written_and_checked() {
        let unset = toml::to_string(&ProxyConfig::default()).unwrap();
        assert!(!unset.contains("hedge_after"), "{unset}");
        assert_eq!(ProxyConfig::default().retry.hedge_after, None);
        let c: ProxyConfig = toml::from_str(
            r#"
            request_timeout = "3s"
            hedge_after = "50ms"
            "#,
        )
        .unwrap();
        assert_eq!(c.retry.hedge_after, Some(Duration::from_millis(50)));
        assert_eq!(
            c.bounded_retry().hedge_after,
            Some(Duration::from_millis(50))
        );
        assert!(c.validate().is_empty());
        let written = toml::to_string(&c).unwrap();
        assert!(written.contains("hedge_after = \"50ms\""), "{written}");
        for (hedge, message) in [
            (Duration::ZERO, "must be longer than 0s"),
            (
                Duration::from_secs(1),
                "must be shorter than attempt_timeout",
            ),
        ] {
            let mut c = c.clone();
            c.retry.hedge_after = Some(hedge);
            let problems = c.validate();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, "hedge_after");
            assert_eq!(problems[0].message, message);
        }
    }

    #[test]
    fn backend_http1_engine_both_ways() {
        for (name, engine) in [
            ("native", Http1Engine::Native),
            ("hyper", Http1Engine::Hyper),
        ] {
            let c: ProxyConfig = toml::from_str(&format!("backend_http1 = \"{name}\"")).unwrap();
            assert_eq!(c.pool.http1, engine);
            let written = toml::to_string(&c).unwrap();
            assert!(
                written.contains(&format!("backend_http1 = \"{name}\"")),
                "{written}"
            );
            assert_eq!(toml::from_str::<ProxyConfig>(&written).unwrap(), c);
        }
        assert!(toml::from_str::<ProxyConfig>("backend_http1 = \"h3\"").is_err());
    }

    #[test]
    fn attempt_timeout_must_be_positive_and_within_the_request_timeout() {
        for (attempt, message) in [
            (Duration::ZERO, "must be longer than 0s"),
            (Duration::from_secs(2), "must not exceed request_timeout"),
        ] {
            let mut c = ProxyConfig {
                request_timeout: Duration::from_secs(1),
                ..ProxyConfig::default()
            };
            c.retry.attempt_timeout = Some(attempt);
            let problems = c.validate();
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key, "attempt_timeout");
            assert_eq!(problems[0].message, message);
        }
    }

    /// A reload switches the balancer's policy and slow start at once.
    #[test]
    fn a_reload_applies_the_balancer_policy_and_slow_start() {
        let old = ProxyConfig::default();
        let mut new = old.clone();
        new.balance.policy = switchyard_balance::Policy::PeakEwma;
        new.balance.slow_start = Duration::from_secs(30);
        let done = old.changes(&new);
        assert_eq!(done.applied, ["balancer", "slow_start"]);
        assert!(done.need_restart.is_empty(), "{done:?}");
    }

    /// A reload applies every setting, naming each that changed.
    #[test]
    fn a_reload_applies_every_setting() {
        let old = ProxyConfig::default();
        let mut new = old.clone();
        new.retry.max_retries = 0;
        new.request_timeout = Duration::from_secs(1);
        new.pool.max_connections = 5;
        new.pool.http1 = match old.pool.http1 {
            Http1Engine::Native => Http1Engine::Hyper,
            Http1Engine::Hyper => Http1Engine::Native,
        };
        new.backend_ca_file = Some("ca.pem".into());
        new.health.rise = 4;
        new.health.enabled = !old.health.enabled;
        new.health.dns_server = Some("127.0.0.1:8600".parse().unwrap());
        new.metrics = !old.metrics;
        let done = old.changes(&new);
        assert_eq!(
            done.applied,
            [
                "retry",
                "request_timeout",
                "connection pool",
                "backend_http1",
                "backend TLS",
                "health_check",
                "health_check_enabled",
                "dns_server",
                "metrics_enabled"
            ]
        );
        assert!(done.need_restart.is_empty(), "{done:?}");
        assert_eq!(
            done.to_string(),
            "applied retry, request_timeout, connection pool, backend_http1, backend TLS, \
             health_check, health_check_enabled, dns_server, metrics_enabled"
        );
        assert_eq!(new.changes(&new).to_string(), "no proxy setting changed");
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
