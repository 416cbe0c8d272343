use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shared tier's settings: where Redis is and how little the cache waits for it.
///
/// Deserializes from TOML or JSON with these field names, durations as human strings
/// (`"10ms"`, `"2s"`). Missing keys take their defaults, unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharedConfig {
    /// The Redis server: `redis://[user:password@]host[:port][/db]` (or `rediss://` is
    /// refused: the client is built without TLS). Default `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// The longest the cache waits for one Redis command; past it the command counts as a
    /// failure and the request goes on without the tier. Default 10 ms.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures (errors or timeouts) that open the tier's breaker. Default 5.
    pub failure_threshold: u32,
    /// How long an open breaker skips Redis before one command tries it again.
    /// Default 2 s.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The largest value written to Redis for one URL (its variants, heads and bodies
    /// encoded), in bytes. Default 1 MiB.
    pub max_object_size: u64,
    /// How long the lock a fetching instance takes on a URL lives if it is never released
    /// (the instance died). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    /// How long an instance that finds the URL locked by another polls Redis for that
    /// instance's response before fetching it itself. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// The interval of that polling. Default 5 ms.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The first part of every key and of the invalidation channel, so that several
    /// fleets can share one Redis. Default `switchyard`.
    pub namespace: String,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            timeout: Duration::from_millis(10),
            failure_threshold: 5,
            open_for: Duration::from_secs(2),
            max_object_size: 1024 * 1024,
            lock_ttl: Duration::from_secs(5),
            lock_wait: Duration::from_secs(1),
            poll_interval: Duration::from_millis(5),
            namespace: "switchyard".into(),
        }
    }
}

impl SharedConfig {
    /// The defaults with `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Why [`url`](Self::url) cannot be used (it does not parse as a Redis URL, or
    /// asks for TLS), if it cannot.
    pub fn url_problem(&self) -> Option<String> {
        if self.url.starts_with("rediss://") {
            return Some("TLS to Redis (rediss://) is not supported".into());
        }
        redis::Client::open(self.url.as_str())
            .err()
            .map(|e| format!("not a Redis URL: {e}"))
    }
}
