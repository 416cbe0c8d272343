use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use crate::flight::Flights;
use crate::stats::{bump, Counters};
use crate::{CacheConfig, CacheStats, Entry, Store, Variants};

/// What every clone of a cache service shares: the settings, the store, the table of
/// fetches in flight and the counters.
pub(crate) struct Shared {
    pub(crate) config: CacheConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) flights: Arc<Flights>,
    /// Shared with the layers [`CacheHandle::reconfigured`](crate::CacheHandle) makes.
    pub(crate) stats: Arc<Counters>,
}

/// What is stored for a request's URL.
pub(crate) struct Lookup {
    /// Something is stored for the URL.
    pub(crate) found: bool,
    /// The stored response selected for the request's `Vary` fields.
    pub(crate) entry: Option<Arc<Entry>>,
}

impl Shared {
    pub(crate) fn new(config: CacheConfig, store: Arc<dyn Store>) -> Self {
        Self {
            config,
            store,
            flights: Arc::new(Flights::new()),
            stats: Arc::default(),
        }
    }

    /// The same store, fetches in flight and counters under `config`.
    pub(crate) fn reconfigured(&self, config: CacheConfig) -> Self {
        Self {
            config,
            store: self.store.clone(),
            flights: self.flights.clone(),
            stats: self.stats.clone(),
        }
    }

    pub(crate) fn lookup(&self, key: &str, request: &HeaderMap) -> Lookup {
        let variants = self.store.get(key);
        Lookup {
            found: variants.is_some(),
            entry: variants.and_then(|v| v.select(request).cloned()),
        }
    }

    /// Stores `entry` for `key`, in place of the variant with the same `Vary` values.
    pub(crate) fn store(&self, key: String, entry: Arc<Entry>) {
        let variants = match self.store.get(&key) {
            Some(v) => v.with(entry),
            None => Variants::default().with(entry),
        };
        if self.store.insert(key, Arc::new(variants)) {
            bump(&self.stats.stores);
        }
    }

    /// Removes one stored variant of `key`.
    pub(crate) fn remove(&self, key: &str, entry: &Arc<Entry>) {
        let Some(variants) = self.store.get(key) else {
            return;
        };
        let rest = variants.without(entry);
        if rest.is_empty() {
            self.store.remove(key);
        } else {
            self.store.insert(key.to_owned(), Arc::new(rest));
        }
    }

    /// Removes everything stored for `key`.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let removed = self.store.remove(key);
        if removed {
            bump(&self.stats.invalidations);
        }
        removed
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.stats.snapshot(
            self.store.evictions(),
            self.store.bytes_used(),
            self.store.len() as u64,
        )
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}
