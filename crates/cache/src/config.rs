use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::SharedConfig;

/// `CDN-Cache-Control` (RFC 9213).
const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// `Surrogate-Control`, as Varnish and Fastly read it (`max-age`, `no-store`).
const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// A cache layer's settings.
///
/// Deserializes from TOML or JSON with these field names; durations are human strings
/// (`"5m"`, `"30s"`), sizes are byte counts. Missing keys take their defaults, unknown keys
/// are an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Freshness given to a storable response that carries none of its own (no
    /// `s-maxage`, `max-age`, `Expires` or targeted field) and no `Last-Modified` to
    /// estimate one from: RFC 9111's heuristic freshness, allowed for the heuristically
    /// cacheable statuses and for `public` responses. Default 5 min. `0` turns heuristic
    /// freshness off (this one and [`heuristic_max`](Self::heuristic_max)'s): only responses
    /// that say how long they stay fresh (or that can be revalidated) are stored.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The cap on the freshness estimated from `Last-Modified` (RFC 9111 §4.2.2: 10 % of
    /// the time between `Last-Modified` and `Date`) for a response without explicit
    /// freshness, where heuristic freshness is allowed (see [`ttl`](Self::ttl)).
    /// Default 24 h. `0` turns the `Last-Modified` estimate off, leaving `ttl`.
    #[serde(with = "humantime_serde")]
    pub heuristic_max: Duration,
    /// The targeted cache-control fields this cache obeys (RFC 9213), most specific
    /// first: the first present in a response, with a valid non-empty value, replaces its
    /// `Cache-Control` and `Expires`. They are removed from every response sent to a
    /// client. Default `["CDN-Cache-Control", "Surrogate-Control"]`; empty: only
    /// `Cache-Control` counts.
    #[serde(with = "header_names")]
    pub targeted_fields: Vec<HeaderName>,
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
    /// A second tier on Redis, shared by every instance that names the same server and
    /// namespace: consulted when the local store misses, filled when it stores, purged
    /// together (see [`SharedConfig`]). Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            heuristic_max: Duration::from_secs(24 * 60 * 60),
            targeted_fields: vec![CDN_CACHE_CONTROL, SURROGATE_CONTROL],
            max_size: 100 * 1024 * 1024,
            max_object_size: 8 * 1024 * 1024,
            stale_if_error: Duration::ZERO,
            stale_while_revalidate: Duration::ZERO,
            coalesce_wait: Duration::from_secs(5),
            shared: None,
        }
    }
}

/// Serde for a list of header field names, as strings (for
/// [`CacheConfig::targeted_fields`], and settings built on it): `#[serde(with =
/// "switchyard_cache::header_names")]`. An invalid name is an error.
pub mod header_names {
    use http::HeaderName;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the names as a sequence of strings.
    pub fn serialize<S: Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(names.iter().map(HeaderName::as_str))
    }

    /// Reads a sequence of strings as header names.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HeaderName>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|n| {
                HeaderName::from_bytes(n.as_bytes())
                    .map_err(|_| D::Error::custom(format!("invalid header field name {n:?}")))
            })
            .collect()
    }
}
