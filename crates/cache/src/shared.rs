use std::fmt;
use std::sync::Arc;

use http::HeaderMap;

use crate::flight::Flights;
use crate::stats::{bump, Counters};
use crate::tier::{RedisTier, RemoteLock};
use crate::{CacheConfig, CacheStats, Entry, Store, Variants};

/// What every clone of a cache service shares: the settings, the store, the shared tier,
/// the table of fetches in flight and the counters.
pub(crate) struct Shared {
    pub(crate) config: CacheConfig,
    pub(crate) store: Arc<dyn Store>,
    /// The Redis tier, when [`CacheConfig::shared`] sets one.
    pub(crate) tier: Option<Arc<RedisTier>>,
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
        let tier = (config.shared.clone())
            .and_then(|shared| RedisTier::start(shared, config.clone(), store.clone()));
        Self {
            config,
            store,
            tier,
            flights: Arc::new(Flights::new()),
            stats: Arc::default(),
        }
    }

    /// The same store, shared tier, fetches in flight and counters under `config` (a
    /// changed `shared` setting takes effect after a restart).
    pub(crate) fn reconfigured(&self, config: CacheConfig) -> Self {
        Self {
            config,
            store: self.store.clone(),
            tier: self.tier.clone(),
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

    /// Stores `entry` for `key`, in place of the variant with the same `Vary` values, and
    /// writes the URL's variants to the shared tier, releasing the fleet-wide `lock` on its
    /// fetch with that write.
    pub(crate) fn store(&self, key: String, entry: Arc<Entry>, lock: Option<RemoteLock>) {
        let variants = match self.store.get(&key) {
            Some(v) => v.with(entry),
            None => Variants::default().with(entry),
        };
        let variants = Arc::new(variants);
        if !self.store.insert(key.clone(), variants.clone()) {
            return;
        }
        bump(&self.stats.stores);
        if let Some(tier) = &self.tier {
            tier.put(&key, &variants, lock);
        }
    }

    /// Keeps the variants found in the shared tier for `key` in the local store, with
    /// those stored locally for other `Vary` values; nothing is written back.
    pub(crate) fn adopt(&self, key: &str, found: &Variants) {
        let variants = match self.store.get(key) {
            Some(local) => {
                (found.entries().iter()).fold((*local).clone(), |v, e| v.with(e.clone()))
            }
            None => found.clone(),
        };
        self.store.insert(key.to_owned(), Arc::new(variants));
    }

    /// Removes one stored variant of `key` (and the URL from the shared tier).
    pub(crate) fn remove(&self, key: &str, entry: &Arc<Entry>) {
        if let Some(tier) = &self.tier {
            tier.invalidate(Some(key), false);
        }
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

    /// Removes everything stored for `key`, here, in the shared tier and in the other
    /// instances' local stores.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        if let Some(tier) = &self.tier {
            tier.invalidate(Some(key), true);
        }
        let removed = self.store.remove(key);
        if removed {
            bump(&self.stats.invalidations);
        }
        removed
    }

    pub(crate) fn stats(&self) -> CacheStats {
        let local = self.stats.snapshot(
            self.store.evictions(),
            self.store.bytes_used(),
            self.store.len() as u64,
        );
        CacheStats {
            shared: self.tier.as_ref().map(|t| t.stats()),
            ..local
        }
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
