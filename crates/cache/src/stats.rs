use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::SharedStats;

/// What the cache did, read from atomics (and the store's size).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Responses answered from the cache without the request going upstream: fresh hits,
    /// stale responses served while revalidating or within `max-stale`, requests that
    /// waited for a concurrent request's response (also counted in `coalesced`).
    pub hits: u64,
    /// GET and HEAD requests that went upstream (revalidations included).
    pub misses: u64,
    /// Stale responses served: while revalidating in the background, within a request's
    /// `max-stale`, or because the upstream failed (`stale-if-error`).
    pub stale_served: u64,
    /// Conditional requests sent upstream to revalidate a stored response (in the
    /// foreground or in the background).
    pub revalidations: u64,
    /// Revalidations answered `304 Not Modified`: the stored response was reused.
    pub not_modified: u64,
    /// Requests that waited for a concurrent request for the same URL instead of going
    /// upstream at once.
    pub coalesced: u64,
    /// Responses stored (new, replaced or refreshed).
    pub stores: u64,
    /// URLs evicted by the store to make room.
    pub evictions: u64,
    /// URLs removed by an unsafe request or a purge.
    pub invalidations: u64,
    /// The memory the stored responses take, in bytes.
    pub bytes_used: u64,
    /// URLs with a stored response.
    pub entries: u64,
    /// The shared tier's figures, when there is one.
    pub shared: Option<SharedStats>,
}

switchyard_core::counters! {
    pub(crate) struct Counters {
        pub(crate) hits,
        pub(crate) misses,
        pub(crate) stale_served,
        pub(crate) revalidations,
        pub(crate) not_modified,
        pub(crate) coalesced,
        pub(crate) stores,
        pub(crate) invalidations,
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    /// A snapshot, with the store's own figures.
    pub(crate) fn snapshot(&self, evictions: u64, bytes_used: u64, entries: u64) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            stale_served: get(&self.stale_served),
            revalidations: get(&self.revalidations),
            not_modified: get(&self.not_modified),
            coalesced: get(&self.coalesced),
            stores: get(&self.stores),
            evictions,
            invalidations: get(&self.invalidations),
            bytes_used,
            entries,
            shared: None,
        }
    }
}
