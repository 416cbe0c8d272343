use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A cache layer's settings.
///
/// Deserializes from TOML or JSON with these field names; durations are human strings
/// (`"5m"`, `"30s"`), sizes are byte counts. Missing keys take their defaults, unknown keys
/// are an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness given to a storable response that carries none of its own (no
    /// `s-maxage`, `max-age` or `Expires`): RFC 9111's heuristic freshness, allowed for the
    /// heuristically cacheable statuses and for `public` responses. Default 5 min. `0`
    /// stores only responses that say how long they stay fresh (or that can be revalidated).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Bound on the memory the stored responses take, in bytes: bodies, header names and
    /// values and keys, plus a fixed overhead per response. Default 100 MiB.
    pub max_size: u64,
    /// The largest response stored, in bytes (body and headers). Default 8 MiB. A larger
    /// response still streams to its client, it is just not stored; one whose
    /// `Content-Length` says so up front is not even buffered.
    pub max_object_size: u64,
    /// How long past its freshness a response may be served when the upstream fails
    /// (an error, or 500, 502, 503, 504), for responses without a `stale-if-error`
    /// directive of their own. Default 0: only when the response asks for it.
    #[serde(with = "humantime_serde")]
    pub stale_if_error: Duration,
    /// How long past its freshness a response may be served while it is refreshed in the
    /// background, for responses without a `stale-while-revalidate` directive of their
    /// own. Default 0: only when the response asks for it.
    #[serde(with = "humantime_serde")]
    pub stale_while_revalidate: Duration,
    /// How long a request for a URL that another request is already fetching waits for that
    /// response before going upstream itself. Default 5 s: long enough for a typical
    /// backend response to arrive and be stored, short enough that a stalled or slow
    /// transfer does not hold its followers for the whole request timeout.
    #[serde(with = "humantime_serde")]
    pub coalesce_wait: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_size: 100 * 1024 * 1024,
            max_object_size: 8 * 1024 * 1024,
            stale_if_error: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            coalesce_wait: Duration::from_secs(5),
        }
    }
}
