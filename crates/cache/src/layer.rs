use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{HeaderMap, Uri};
use tower::Layer;

use crate::key::primary_key;
use crate::shared::Shared;
use crate::{Cache, CacheConfig, CacheStats, MemoryStore, Store};

/// Wraps services in a [`Cache`]. Every service this layer builds, and every clone of
/// them, shares one store, one table of fetches in flight and one set of counters.
#[derive(Clone)]
pub struct CacheLayer {
    shared: Arc<Shared>,
}

impl CacheLayer {
    /// A layer with `config` over a new [`MemoryStore`] of `config.max_size`.
    pub fn new(config: CacheConfig) -> Self {
        let store = MemoryStore::new(config.max_size, config.max_object_size);
        Self::with_store(config, Arc::new(store))
    }

    /// A layer with `config` over `store` (whose own bounds then apply; `max_size` is not
    /// used).
    pub fn with_store(config: CacheConfig, store: Arc<dyn Store>) -> Self {
        Self {
            shared: Arc::new(Shared::new(config, store)),
        }
    }

    /// The operators' handle: purges and counters.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.shared.clone())
    }

    pub(crate) fn wrap<S>(self, inner: S) -> Cache<S> {
        Cache::from_shared(inner, self.shared)
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::from_shared(inner, self.shared.clone())
    }
}

/// A handle on a cache's store and counters, for operators: cheap to clone, shared with
/// the layer and every service it built.
#[derive(Clone)]
pub struct CacheHandle {
    shared: Arc<Shared>,
}

impl CacheHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Removes every stored response for `uri` (all its variants), in the shared tier and
    /// the other instances' local stores too when there is a shared tier. `uri` is absolute as
    /// clients ask for it (`http://example.com/path?q`); without a scheme it is taken as
    /// `http`. Returns whether anything was stored.
    pub fn purge(&self, uri: &Uri) -> bool {
        self.shared.invalidate(&primary_key(uri, &HeaderMap::new()))
    }

    /// Removes every stored response (in the shared tier and everywhere it reaches too).
    pub fn purge_all(&self) {
        if let Some(tier) = &self.shared.tier {
            tier.invalidate(None, true);
        }
        let n = self.shared.store.len() as u64;
        self.shared.store.clear();
        self.shared
            .stats
            .invalidations
            .fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot of the counters and the store's size.
    pub fn stats(&self) -> CacheStats {
        self.shared.stats()
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.shared.config
    }

    /// A layer of `config` over this cache's store, counters and fetches in flight, as
    /// when a configuration is reloaded: what is stored stays (a smaller `max_size` evicts
    /// down to it, see [`Store::resize`]) and is judged by `config` from then on;
    /// requests already in the cache finish with its old settings.
    pub fn reconfigured(&self, config: CacheConfig) -> CacheLayer {
        if config.max_size != self.shared.config.max_size {
            self.shared.store.resize(config.max_size);
        }
        CacheLayer {
            shared: Arc::new(self.shared.reconfigured(config)),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.shared, f)
    }
}
