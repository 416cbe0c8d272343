//! The configuration file. The `[proxy]` table as the file writes it: the specification's
//! flat keys, turned into and out of the layers' own settings (defaults come from
//! [`ProxyConfig::default`], so they are declared once). And reading a TOML file so that
//! every problem in it is reported with its key and line ([`Document`], [`Problem`]).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchyard_balance::{BalanceConfig, Policy};
use switchyard_breaker::BreakerConfig;
use switchyard_cache::{CacheConfig, SharedConfig};
use switchyard_health::{HealthConfig, SrvSettings, StatusRange};
use switchyard_pool::{Http1Engine, PoolConfig};
use switchyard_retry::RetryConfig;
use toml_edit::{ImDocument, Item, Table};

use super::{Backend, ByteSize, ConfigProblem, ProxyConfig};

/// The flat `[proxy]` table. Each key is documented on the layer setting it maps to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct ProxyFile {
    /// Accepted for the specification's files: only "round_robin"; `balancer` chooses.
    load_balancer_type: LoadBalancerType,
    /// The balancer's policy: "round_robin", "least_request" or "peak_ewma".
    #[serde(with = "policy_name")]
    balancer: Policy,
    #[serde(with = "humantime_serde")]
    slow_start: Duration,
    circuit_breaker_enabled: bool,
    circuit_breaker_threshold: u32,
    #[serde(with = "humantime_serde")]
    circuit_breaker_timeout: Duration,
    max_connections_per_backend: usize,
    /// The pool's `connect_timeout` and `wait_timeout`.
    #[serde(with = "humantime_serde")]
    connection_timeout: Duration,
    #[serde(with = "humantime_serde")]
    idle_conn_timeout: Duration,
    max_idle_per_backend: usize,
    h2_max_streams_per_connection: usize,
    /// The pool's `http1` engine: "native" or "hyper".
    backend_http1: Http1Engine,
    backend_ca_file: Option<PathBuf>,
    backend_client_cert_file: Option<PathBuf>,
    backend_client_key_file: Option<PathBuf>,
    max_retries: u32,
    #[serde(with = "humantime_serde")]
    retry_delay: Duration,
    retry_backoff: bool,
    retry_non_idempotent: bool,
    cache_enabled: bool,
    #[serde(with = "humantime_serde")]
    cache_ttl: Duration,
    cache_max_size: ByteSize,
    cache_max_object_size: ByteSize,
    #[serde(with = "humantime_serde")]
    cache_stale_if_error: Duration,
    #[serde(with = "humantime_serde")]
    cache_stale_while_revalidate: Duration,
    #[serde(with = "humantime_serde")]
    cache_coalesce_wait: Duration,
    #[serde(with = "humantime_serde")]
    cache_heuristic_max: Duration,
    #[serde(with = "switchyard_cache::header_names")]
    cache_targeted_fields: Vec<http::HeaderName>,
    /// The shared tier's `url`; unset: no shared tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_shared: Option<String>,
    /// The shared tier's `timeout` (each Redis command's).
    #[serde(with = "humantime_serde")]
    cache_shared_timeout: Duration,
    health_check_enabled: bool,
    #[serde(with = "humantime_serde")]
    health_check_interval: Duration,
    health_check_path: String,
    #[serde(with = "humantime_serde")]
    health_check_timeout: Duration,
    health_check_expected_status: StatusRange,
    health_check_rise: u32,
    health_check_fall: u32,
    health_check_max_concurrent: usize,
    health_check_panic_mode: bool,
    #[serde(with = "humantime_serde")]
    dns_refresh: Duration,
    #[serde(with = "humantime_serde")]
    dns_min_ttl: Duration,
    #[serde(with = "humantime_serde")]
    dns_max_ttl: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_server: Option<std::net::SocketAddr>,
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    /// The retry layer's `attempt_timeout`; unset: a third of `request_timeout`.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    attempt_timeout: Option<Duration>,
    /// The retry layer's `hedge_after`; unset: no hedging.
    #[serde(with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    hedge_after: Option<Duration>,
    preserve_host: bool,
    #[serde(with = "humantime_serde")]
    upgrade_idle_timeout: Duration,
    upgrade_protocols: Vec<String>,
    metrics_enabled: bool,
    trace_enabled: bool,
    generate_traceparent: bool,
}

/// The specification's `load_balancer_type`: round robin (smooth weighted round robin
/// when weights differ) is the only one; another value is an error naming the key.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LoadBalancerType {
    #[default]
    RoundRobin,
}

/// A [`Policy`] written by its name.
mod policy_name {
    use serde::{Deserialize, Deserializer, Serializer};
    use switchyard_balance::Policy;

    pub(super) fn serialize<S: Serializer>(policy: &Policy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(policy.name())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Default for ProxyFile {
    fn default() -> Self {
        ProxyConfig::default().into()
    }
}

impl From<ProxyFile> for ProxyConfig {
    fn from(f: ProxyFile) -> Self {
        let LoadBalancerType::RoundRobin = f.load_balancer_type;
        Self {
            pool: PoolConfig {
                max_connections: f.max_connections_per_backend,
                max_idle: f.max_idle_per_backend,
                connect_timeout: f.connection_timeout,
                wait_timeout: f.connection_timeout,
                idle_timeout: f.idle_conn_timeout,
                h2_max_streams: f.h2_max_streams_per_connection,
                http1: f.backend_http1,
                ..PoolConfig::default()
            },
            balance: BalanceConfig {
                policy: f.balancer,
                slow_start: f.slow_start,
            },
            retry: RetryConfig {
                max_retries: f.max_retries,
                delay: f.retry_delay,
                backoff: f.retry_backoff,
                non_idempotent: f.retry_non_idempotent,
                attempt_timeout: f.attempt_timeout,
                hedge_after: f.hedge_after,
                ..RetryConfig::default()
            },
            breaker: BreakerConfig {
                enabled: f.circuit_breaker_enabled,
                threshold: f.circuit_breaker_threshold,
                timeout: f.circuit_breaker_timeout,
                ..BreakerConfig::default()
            },
            cache: f.cache_enabled.then_some(CacheConfig {
                ttl: f.cache_ttl,
                max_size: f.cache_max_size.bytes(),
                max_object_size: f.cache_max_object_size.bytes(),
                stale_if_error: f.cache_stale_if_error,
                stale_while_revalidate: f.cache_stale_while_revalidate,
                coalesce_wait: f.cache_coalesce_wait,
                heuristic_max: f.cache_heuristic_max,
                targeted_fields: f.cache_targeted_fields,
                shared: f.cache_shared.map(|url| SharedConfig {
                    url,
                    timeout: f.cache_shared_timeout,
                    ..SharedConfig::default()
                }),
            }),
            health: HealthConfig {
                enabled: f.health_check_enabled,
                interval: f.health_check_interval,
                path: f.health_check_path,
                timeout: f.health_check_timeout,
                expected_status: f.health_check_expected_status,
                rise: f.health_check_rise,
                fall: f.health_check_fall,
                max_concurrent: f.health_check_max_concurrent,
                panic_mode: f.health_check_panic_mode,
                dns_refresh: f.dns_refresh,
                dns_min_ttl: f.dns_min_ttl,
                dns_max_ttl: f.dns_max_ttl,
                dns_server: f.dns_server,
            },
            metrics: f.metrics_enabled,
            request_timeout: f.request_timeout,
            preserve_host: f.preserve_host,
            upgrade_idle_timeout: f.upgrade_idle_timeout,
            upgrade_protocols: f.upgrade_protocols,
            trace: f.trace_enabled,
            generate_traceparent: f.generate_traceparent,
            backend_ca_file: f.backend_ca_file,
            backend_client_cert_file: f.backend_client_cert_file,
            backend_client_key_file: f.backend_client_key_file,
        }
    }
}

/// The file's keys of a configuration. What the file cannot say (a TLS configuration
/// given in code, the layers' other settings) is left out; a disabled cache shows the
/// cache's defaults.
impl From<ProxyConfig> for ProxyFile {
    fn from(c: ProxyConfig) -> Self {
        let ProxyConfig {
            pool,
            balance,
            retry,
            breaker,
            cache,
            health,
            metrics,
            request_timeout,
            preserve_host,
            upgrade_idle_timeout,
            upgrade_protocols,
            trace,
            generate_traceparent,
            backend_ca_file,
            backend_client_cert_file,
            backend_client_key_file,
        } = c;
        let cache_enabled = cache.is_some();
        let cache = cache.unwrap_or_default();
        Self {
            load_balancer_type: LoadBalancerType::RoundRobin,
            balancer: balance.policy,
            slow_start: balance.slow_start,
            circuit_breaker_enabled: breaker.enabled,
            circuit_breaker_threshold: breaker.threshold,
            circuit_breaker_timeout: breaker.timeout,
            max_connections_per_backend: pool.max_connections,
            connection_timeout: pool.connect_timeout,
            idle_conn_timeout: pool.idle_timeout,
            max_idle_per_backend: pool.max_idle,
            h2_max_streams_per_connection: pool.h2_max_streams,
            backend_http1: pool.http1,
            backend_ca_file,
            backend_client_cert_file,
            backend_client_key_file,
            max_retries: retry.max_retries,
            retry_delay: retry.delay,
            retry_backoff: retry.backoff,
            retry_non_idempotent: retry.non_idempotent,
            cache_enabled,
            cache_ttl: cache.ttl,
            cache_max_size: ByteSize(cache.max_size),
            cache_max_object_size: ByteSize(cache.max_object_size),
            cache_stale_if_error: cache.stale_if_error,
            cache_stale_while_revalidate: cache.stale_while_revalidate,
            cache_coalesce_wait: cache.coalesce_wait,
            cache_heuristic_max: cache.heuristic_max,
            cache_targeted_fields: cache.targeted_fields,
            cache_shared_timeout: (cache.shared.as_ref())
                .map_or(SharedConfig::default().timeout, |s| s.timeout),
            cache_shared: cache.shared.map(|s| s.url),
            health_check_enabled: health.enabled,
            health_check_interval: health.interval,
            health_check_path: health.path,
            health_check_timeout: health.timeout,
            health_check_expected_status: health.expected_status,
            health_check_rise: health.rise,
            health_check_fall: health.fall,
            health_check_max_concurrent: health.max_concurrent,
            health_check_panic_mode: health.panic_mode,
            dns_refresh: health.dns_refresh,
            dns_min_ttl: health.dns_min_ttl,
            dns_max_ttl: health.dns_max_ttl,
            dns_server: health.dns_server,
            request_timeout,
            attempt_timeout: retry.attempt_timeout,
            hedge_after: retry.hedge_after,
            preserve_host,
            upgrade_idle_timeout,
            upgrade_protocols,
            metrics_enabled: metrics,
            trace_enabled: trace,
            generate_traceparent,
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`proxy.retry_delay`, `backends[1].url`), when one can be named.
    pub key: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with `key` at `line`, either unknown when `None`.
    pub fn at(key: Option<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        let message = message.into();
        Self { key, line, message }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A configuration file that could not be used: every problem found, with the file's path.
#[derive(Debug)]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.problems.as_slice() {
            [one] => write!(f, "{path}: {one}"),
            many => {
                write!(f, "{path}: {} problems", many.len())?;
                for p in many {
                    write!(f, "\n  {path}: {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// A TOML text with the line of each of its keys, to report problems by key and line.
#[derive(Debug)]
pub struct Document<'a> {
    text: &'a str,
    keys: KeySpans,
}

impl<'a> Document<'a> {
    /// Parses `text` as TOML; a syntax error is the one problem.
    pub fn parse(text: &'a str) -> Result<Self, Vec<Problem>> {
        let doc = ImDocument::parse(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            vec![Problem::at(None, line, e.message().trim())]
        })?;
        let keys = KeySpans::of(&doc);
        Ok(Self { text, keys })
    }

    /// A problem with the dotted `key`, at its line in the text.
    pub fn problem(&self, key: String, message: impl Into<String>) -> Problem {
        let line = self.line(&key);
        Problem::at(Some(key), line, message)
    }

    /// The 1-based line of the dotted `key` (`proxy.retry_delay`, `discovery[0]`).
    pub fn line(&self, key: &str) -> Option<usize> {
        self.keys.line_of(key, self.text)
    }

    /// Deserializes the text, collecting every key that does not deserialize instead of
    /// stopping at the first: each offending key is reported (with its line in the original
    /// text), taken out, and the rest deserialized again.
    pub fn deserialize<T: DeserializeOwned>(&self) -> (Option<T>, Vec<Problem>) {
        let mut problems = Vec::new();
        let Ok(mut doc) = self.text.parse::<toml_edit::DocumentMut>() else {
            return (None, problems);
        };
        let mut current = self.text.to_owned();
        // Bounded: every pass removes one key, or stops.
        for _ in 0..64 {
            let err = match toml::from_str::<T>(&current) {
                Ok(config) => return (Some(config), problems),
                Err(err) => err,
            };
            let key = err.span().and_then(|span| {
                let spans = ImDocument::parse(current.as_str())
                    .ok()
                    .map(|d| KeySpans::of(&d))?;
                spans.key_at(&span)
            });
            let line = match &key {
                Some(key) => self.keys.line_of(key, self.text),
                None => err.span().map(|s| line_of(&current, s.start)),
            };
            problems.push(Problem::at(key.clone(), line, err.message().trim()));
            match key {
                Some(key) if remove_key(&mut doc, &key) => current = doc.to_string(),
                _ => break,
            }
        }
        (None, problems)
    }
}

/// Removes `path` (`proxy.retry_delay`, `backends[1].url`) from the document; `false` when
/// it names no key that can be removed on its own (an array element, say).
fn remove_key(doc: &mut toml_edit::DocumentMut, path: &str) -> bool {
    let mut segments: Vec<&str> = path.split('.').collect();
    let Some(last) = segments.pop() else {
        return false;
    };
    if last.ends_with(']') {
        return false;
    }
    let mut item = doc.as_item_mut();
    for segment in segments {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let Some(next) = item.get_mut(name) else {
            return false;
        };
        item = next;
        if let Some(i) = index {
            let Some(next) = item.get_mut(i) else {
                return false;
            };
            item = next;
        }
    }
    item.as_table_like_mut()
        .is_some_and(|t| t.remove(last).is_some())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Every key of the document with the span of its key and of its value.
#[derive(Debug)]
struct KeySpans {
    entries: Vec<(String, Range<usize>, Range<usize>)>,
}

impl KeySpans {
    fn of(doc: &ImDocument<&str>) -> Self {
        let mut entries = Vec::new();
        walk(doc.as_table(), "", &mut entries);
        Self { entries }
    }

    /// The innermost key whose value contains `span`.
    fn key_at(&self, span: &Range<usize>) -> Option<String> {
        self.entries
            .iter()
            .filter(|(_, key, value)| {
                (value.start <= span.start && span.end <= value.end.max(value.start + 1))
                    || (key.start <= span.start && span.start < key.end)
            })
            .min_by_key(|(_, _, value)| value.len())
            .map(|(k, _, _)| k.clone())
    }

    fn line_of(&self, key: &str, text: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, key, _)| line_of(text, key.start))
    }
}

fn walk(table: &Table, prefix: &str, out: &mut Vec<(String, Range<usize>, Range<usize>)>) {
    for (key, item) in table.iter() {
        let path = if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        let key_span = table.key(key).and_then(|k| k.span()).unwrap_or(0..0);
        let value_span = item.span().unwrap_or(key_span.clone());
        out.push((path.clone(), key_span, value_span));
        match item {
            Item::Table(t) => walk(t, &path, out),
            Item::Value(toml_edit::Value::InlineTable(t)) => {
                let t = t.clone().into_table();
                walk(&t, &path, out);
            }
            Item::ArrayOfTables(array) => {
                for (i, t) in array.iter().enumerate() {
                    let (elem, span) = (format!("{path}[{i}]"), t.span().unwrap_or(0..0));
                    out.push((elem.clone(), span.clone(), span));
                    walk(t, &elem, out);
                }
            }
            _ => {}
        }
    }
}

/// One `[[discovery]]` entry of the configuration file: backends found in DNS, the same
/// as a `dns+srv://NAME` backend (`type = "srv"`, the default) or a backend given by a
/// host name and `port` (`type = "dns"`, resolved to its A/AAAA records).
///
/// ```toml
/// [[discovery]]
/// name = "_http._tcp.web.service.consul"
/// dns_server = "127.0.0.1:8600"   # else the [proxy] dns_server, else the system's
/// min_ttl = "5s"                  # else the [proxy] dns_min_ttl
/// max_ttl = "300s"                # else the [proxy] dns_max_ttl
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// The SRV name, or the host name of a `dns` entry.
    pub name: String,
    /// `srv` or `dns`.
    #[serde(rename = "type", default)]
    pub kind: DiscoveryKind,
    /// The backend's id; the name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The port of a `dns` entry's addresses (an SRV record names its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The name server for this name (and its SRV targets' names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_server: Option<std::net::SocketAddr>,
    /// The shortest time between resolutions of this name.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_ttl: Option<Duration>,
    /// The longest time between resolutions of this name.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_ttl: Option<Duration>,
    /// A `dns` entry's weight (an SRV record's target has its record's weight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// How a [`Discovery`] name is looked up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// SRV records: targets with their ports, weights and priorities.
    #[default]
    Srv,
    /// A/AAAA records of a host name, on `port`.
    Dns,
}

impl Discovery {
    /// The backend this entry stands for: `dns+srv://NAME` with the entry's name server
    /// and TTL bounds in its query (see [`switchyard_health::SrvSettings`]), or
    /// `http://NAME:PORT`.
    pub fn backend(&self) -> Result<Backend, ConfigProblem> {
        let url = match self.kind {
            DiscoveryKind::Srv => {
                let settings = SrvSettings {
                    dns_server: self.dns_server,
                    min_ttl: self.min_ttl,
                    max_ttl: self.max_ttl,
                };
                let query = Some(settings.query()).filter(|q| !q.is_empty());
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                format!("dns+srv://{}{query}", self.name)
            }
            DiscoveryKind::Dns => format!("http://{}:{}", self.name, self.port.unwrap_or(80)),
        };
        let url = url.parse().map_err(|e| problem("name", format!("{e}")))?;
        let id = self.id.clone().unwrap_or_else(|| self.name.clone());
        Ok(Backend::new(id, url).weight(self.weight.unwrap_or(1)))
    }

    /// Checks the entry, returning every problem (keys relative to the entry).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let srv = self.kind == DiscoveryKind::Srv;
        let only = |key: &str, there: bool, kind: &str| {
            there.then(|| problem(key, format!("applies to type = \"{kind}\" entries only")))
        };
        problems.extend(only("port", srv && self.port.is_some(), "dns"));
        problems.extend(only("weight", srv && self.weight.is_some(), "dns"));
        // A host name's addresses are resolved by the [proxy] name server and TTLs.
        for (key, set) in [
            ("dns_server", self.dns_server.is_some()),
            ("min_ttl", self.min_ttl.is_some()),
            ("max_ttl", self.max_ttl.is_some()),
        ] {
            problems.extend(only(key, !srv && set, "srv"));
        }
        if !srv && self.port.is_none() {
            problems.push(problem(
                "port",
                "a `dns` entry needs the port of its addresses",
            ));
        }
        if let (Some(min), Some(max)) = (self.min_ttl, self.max_ttl) {
            if min > max {
                problems.push(problem("min_ttl", "must not be longer than max_ttl"));
            }
        }
        if self.name.trim().is_empty() || self.name.contains(['/', '?', ':', ' ']) {
            problems.push(problem("name", "must be a DNS name"));
        } else if problems.is_empty() {
            match self.backend() {
                // The URL is made of the name.
                Ok(backend) => problems.extend(backend.validate().into_iter().map(|p| {
                    let key = if p.key == "url" { "name" } else { &p.key };
                    problem(key, p.message)
                })),
                Err(p) => problems.push(p),
            }
        }
        problems
    }
}

fn problem(key: &str, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        key: key.to_owned(),
        message: message.into(),
    }
}
