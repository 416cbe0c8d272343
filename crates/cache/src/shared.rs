use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::entry::Head;
use crate::flight::Flights;
use crate::parts::Parts;
use crate::range::{strong_validator, Part};
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
        let variants = Arc::new(self.store.get(&key).unwrap_or_default().with(entry));
        if !self.store.insert(key.clone(), variants.clone()) {
            return;
        }
        bump(&self.stats.stores);
        if let Some(tier) = &self.tier {
            tier.put(&key, &variants, lock);
        }
    }

    /// Stores `data`, the bytes of `part` of a representation (a `206` with `head`): with
    /// the parts stored for the same `Vary` values when they are of the same
    /// representation (the same strong validator and length), in their place otherwise
    /// (RFC 9111 §3.4). Parts that come to cover the representation are stored as its
    /// `200`. A complete response of the same representation stored already keeps its
    /// body and takes the part's head: the part freshens it.
    ///
    /// Two parts stored at the same moment may race (the later write wins, and the other
    /// part is fetched again when asked for): no lock is taken for them.
    pub(crate) fn store_part(&self, key: String, head: Head, part: Part, data: Bytes) {
        let (start, len) = (part.start as usize, part.len as usize);
        let validator = strong_validator(&head.headers);
        let stored = self.store.get(&key);
        let same = stored.as_ref().and_then(|v| {
            (v.entries().iter())
                .find(|e| e.head().vary == head.vary)
                .filter(|e| validator.is_some() && strong_validator(e.headers()) == validator)
        });
        let parts = match same.map(|e| (e, e.parts())) {
            // The complete response is stored: the part's head freshens it (the same
            // representation, so its header fields update the stored ones), and its body
            // stays.
            Some((complete, None)) => {
                let body = complete.body().clone();
                return self.store(key, Arc::new(head.into_entry(body)), None);
            }
            Some((_, Some(parts))) if parts.len() == len => parts.with(start, data),
            _ => Parts::new(len, start, data),
        };
        let entry = match parts.whole() {
            Some(body) => return self.store(key, Arc::new(head.into_entry(body)), None),
            None => Arc::new(head.into_partial(parts)),
        };
        // Parts stay in this instance: the shared tier holds complete responses only.
        let variants = stored.unwrap_or_default().with(entry);
        if self.store.insert(key, Arc::new(variants)) {
            bump(&self.stats.stores);
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
