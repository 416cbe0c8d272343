//! Where responses are kept: the [`Store`] trait and the in-memory [`MemoryStore`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};

use crate::Variants;

/// A place to keep stored responses, keyed by URL (`scheme://authority/path?query`, see
/// the [crate docs](crate#keys)), each key holding that URL's [`Variants`].
///
/// The cache calls these methods on the request path, a hit included, so they must not
/// block: a store backed by a remote service (Redis, say) keeps what it serves in local
/// memory or answers `None`, and does its network I/O on tasks of its own.
pub trait Store: Send + Sync + 'static {
    /// The variants stored for `key`.
    fn get(&self, key: &str) -> Option<Arc<Variants>>;

    /// Stores `variants` under `key`, replacing what was there. Returns `false` when the
    /// store declined them (too large).
    fn insert(&self, key: String, variants: Arc<Variants>) -> bool;

    /// Removes what is stored under `key`; `true` if there was something.
    fn remove(&self, key: &str) -> bool;

    /// Removes everything.
    fn clear(&self);

    /// The memory the stored responses take, as their weights add up, in bytes.
    fn bytes_used(&self) -> u64;

    /// How many URLs have something stored.
    fn len(&self) -> usize;

    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bounds the store to `max_size` bytes from now on, evicting down to it (a
    /// configuration reload). A store that cannot change its bound keeps it (the default).
    fn resize(&self, max_size: u64) {
        let _ = max_size;
    }

    /// How many URLs' responses were evicted to make room (not removed, not replaced).
    fn evictions(&self) -> u64 {
        0
    }
}

/// The default [`Store`]: a [`quick_cache`] in memory, bounded by weight (the bytes of
/// bodies, headers and keys).
///
/// quick_cache is sharded (a lookup takes one shard's `std` read lock; it is built without
/// its `parking_lot` feature), evicts with S3-FIFO (one-hit wonders leave before popular
/// responses do), weighs items with a caller's weigher, and reports evictions, which
/// [`CacheStats::evictions`](crate::CacheStats::evictions) counts.
pub struct MemoryStore {
    cache: Entries,
    evictions: Arc<AtomicU64>,
    /// The heaviest item quick_cache admits (its per-shard "hot" target); follows
    /// [`Store::resize`].
    max_weight: AtomicU64,
}

type Entries = Cache<Box<str>, Arc<Variants>, ByteWeighter, DefaultHashBuilder, CountEvictions>;

/// quick_cache's share of a shard's weight for recently admitted items; an item heavier
/// than this share of its shard is not admitted.
const HOT_ALLOCATION: f64 = 0.97;

impl MemoryStore {
    /// A store of at most `max_size` bytes, able to hold responses of `max_object_size`.
    ///
    /// quick_cache bounds each shard separately, so the number of shards is chosen to keep
    /// a shard at least twice `max_object_size`, and the capacity rounded down to a multiple
    /// of it so the shards add up to at most `max_size`.
    pub fn new(max_size: u64, max_object_size: u64) -> Self {
        let per_shard = max_object_size.saturating_mul(2).max(1);
        let shards = (max_size / per_shard).clamp(1, 64);
        let shards = 1u64 << shards.ilog2();
        let capacity = max_size - max_size % shards;
        let evictions = Arc::new(AtomicU64::new(0));
        let options = OptionsBuilder::new()
            .shards(shards as usize)
            .hot_allocation(HOT_ALLOCATION)
            .weight_capacity(capacity)
            .estimated_items_capacity((max_size / (16 * 1024)).clamp(32, 1 << 20) as usize)
            .build()
            .expect("every option is set");
        let cache = Cache::with_options(
            options,
            ByteWeighter,
            DefaultHashBuilder::default(),
            CountEvictions(evictions.clone()),
        );
        let max_weight = AtomicU64::new(heaviest(&cache));
        Self {
            cache,
            evictions,
            max_weight,
        }
    }
}

/// The heaviest item `cache`'s shards admit.
fn heaviest(cache: &Entries) -> u64 {
    (cache.shard_capacity() as f64 * HOT_ALLOCATION) as u64
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.cache.capacity())
            .field("bytes_used", &self.cache.weight())
            .field("len", &self.cache.len())
            .finish()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<Arc<Variants>> {
        self.cache.get(key)
    }

    fn insert(&self, key: String, variants: Arc<Variants>) -> bool {
        let key = key.into_boxed_str();
        if ByteWeighter.weight(&key, &variants) > self.max_weight.load(Ordering::Relaxed) {
            // quick_cache would turn it away and report it as an eviction.
            self.cache.remove(&*key);
            return false;
        }
        self.cache.insert(key, variants);
        true
    }

    fn remove(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    fn clear(&self) {
        self.cache.clear();
    }

    fn bytes_used(&self) -> u64 {
        self.cache.weight()
    }

    fn len(&self) -> usize {
        self.cache.len()
    }

    fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The shards stay as [`MemoryStore::new`] chose them; each gets its share of
    /// `max_size`, and a smaller one evicts down to it now.
    fn resize(&self, max_size: u64) {
        let shards = self.cache.num_shards() as u64;
        self.cache.set_capacity(max_size - max_size % shards);
        (self.max_weight).store(heaviest(&self.cache), Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
struct ByteWeighter;

impl Weighter<Box<str>, Arc<Variants>> for ByteWeighter {
    fn weight(&self, key: &Box<str>, val: &Arc<Variants>) -> u64 {
        // Never 0: quick_cache never evicts weightless items.
        (key.len() as u64 + val.weight()).max(1)
    }
}

#[derive(Debug, Clone)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Box<str>, Arc<Variants>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Box<str>, _val: Arc<Variants>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}
