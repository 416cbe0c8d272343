use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;

use crate::prometheus::{self, TextFormat};
use crate::recorder::Recorder;
use crate::{BackendMetrics, BackendSnapshot, Latency, MetricsLayer, MetricsSnapshot};

/// The most stripes a recorder gets by default (each holds an 11 KiB histogram): beyond
/// 8 cores, some share a stripe.
const MAX_DEFAULT_STRIPES: usize = 8;

/// Counters of the response cache, read at snapshot and scrape time from the
/// [cache source](MetricsRegistry::cache_source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounters {
    /// Responses served from the cache.
    pub hits: u64,
    /// Cacheable requests the cache could not answer.
    pub misses: u64,
}

type CacheSource = Arc<dyn Fn() -> CacheCounters + Send + Sync>;
type RetrySource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where a proxy's numbers are kept: the proxy-wide recorder, one recorder per backend, the
/// sources of other layers' counters, and extra collectors.
///
/// Cheap to clone; clones share everything. Requests never touch the registry: layers
/// hold their recorder from the moment they are built. Only adding and removing a backend,
/// setting a source, registering a collector, taking a snapshot and encoding read or write
/// the registry's own state (`ArcSwap`ed, no lock).
#[derive(Clone)]
pub struct MetricsRegistry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    stripes: usize,
    /// Whether the recorders record ([`MetricsRegistry::set_enabled`]).
    on: Arc<AtomicBool>,
    pub(crate) proxy: Arc<Recorder>,
    pub(crate) backends: ArcSwap<BTreeMap<Arc<str>, Arc<Recorder>>>,
    pub(crate) hooks: ArcSwap<Hooks>,
}

#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) cache: Option<CacheSource>,
    pub(crate) retries: Option<RetrySource>,
    pub(crate) collectors: Vec<Arc<dyn Collector>>,
}

impl Hooks {
    pub(crate) fn cache(&self) -> Option<CacheCounters> {
        self.cache.as_ref().map(|f| f())
    }

    pub(crate) fn retries(&self) -> Option<u64> {
        self.retries.as_ref().map(|f| f())
    }
}

impl MetricsRegistry {
    /// An empty registry whose recorders have one stripe per core, up to 8.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_stripes(cores.min(MAX_DEFAULT_STRIPES))
    }

    /// An empty registry whose recorders have `stripes` stripes (rounded up to a power of
    /// two, from 1 to 64). One stripe is enough when a single thread serves the proxy; each
    /// stripe costs 11 KiB per recorder (the proxy's and each backend's).
    pub fn with_stripes(stripes: usize) -> Self {
        let stripes = stripes.clamp(1, 64).next_power_of_two();
        let on = Arc::new(AtomicBool::new(true));
        Self {
            inner: Arc::new(Inner {
                stripes,
                proxy: Arc::new(Recorder::new(stripes, on.clone())),
                on,
                backends: ArcSwap::default(),
                hooks: ArcSwap::default(),
            }),
        }
    }

    /// Turns recording on or off for every layer of this registry (the proxy's and every
    /// backend's), from their next request on; on by default. While off, requests pass
    /// through the layers unrecorded (one relaxed load each), and snapshots and the
    /// Prometheus output are those of an empty registry: no backends, no sources, no
    /// collectors, all zero. Turned on again, the numbers go on from where they stood
    /// (what happened meanwhile was not counted).
    pub fn set_enabled(&self, on: bool) {
        self.inner.on.store(on, Ordering::Relaxed);
    }

    /// Whether recording is on (see [`set_enabled`](Self::set_enabled)).
    pub fn is_enabled(&self) -> bool {
        self.inner.on.load(Ordering::Relaxed)
    }

    /// What snapshots and the Prometheus output show while recording is off.
    fn off() -> Self {
        Self::with_stripes(1)
    }

    pub(crate) fn proxy_recorder(&self) -> &Arc<Recorder> {
        &self.inner.proxy
    }

    /// The layer recording the proxy-wide numbers.
    pub fn layer(&self) -> MetricsLayer {
        MetricsLayer::new(self)
    }

    /// The numbers of backend `id`, made (at zero) if it has none yet: call it when the
    /// backend's endpoint stack is built and put the returned layer on it.
    pub fn backend(&self, id: &str) -> BackendMetrics {
        let existing = self.inner.backends.load().get(id).cloned();
        let recorder = existing.unwrap_or_else(|| {
            let mut chosen = None;
            self.inner.backends.rcu(|map| {
                let mut map = BTreeMap::clone(map);
                let recorder = map.entry(Arc::from(id)).or_insert_with(|| {
                    Arc::new(Recorder::new(self.inner.stripes, self.inner.on.clone()))
                });
                chosen = Some(recorder.clone());
                map
            });
            chosen.expect("rcu runs its closure at least once")
        });
        BackendMetrics::new(Arc::from(id), recorder)
    }

    /// Forgets backend `id`: it leaves snapshots and the Prometheus output at once. Layers
    /// still holding its numbers go on recording into them unseen until they are dropped;
    /// adding the id again starts from zero (Prometheus reads that as a counter reset).
    /// `false` if there was no such backend.
    pub fn remove_backend(&self, id: &str) -> bool {
        let mut removed = false;
        self.inner.backends.rcu(|map| {
            let mut map = BTreeMap::clone(map);
            removed = map.remove(id).is_some();
            map
        });
        removed
    }

    /// Reads cache hits and misses from `source` at each snapshot and scrape (typically
    /// `move || { let s = cache.stats(); CacheCounters { hits: s.hits, misses: s.misses } }`).
    /// Replaces any earlier source.
    pub fn cache_source<F>(&self, source: F)
    where
        F: Fn() -> CacheCounters + Send + Sync + 'static,
    {
        let source: CacheSource = Arc::new(source);
        self.update_hooks(|h| h.cache = Some(source.clone()));
    }

    /// Reads the number of retries made from `source` at each snapshot and scrape
    /// (typically `move || retry_layer.stats().retries`). Replaces any earlier source.
    pub fn retry_source<F>(&self, source: F)
    where
        F: Fn() -> u64 + Send + Sync + 'static,
    {
        let source: RetrySource = Arc::new(source);
        self.update_hooks(|h| h.retries = Some(source.clone()));
    }

    /// Adds `collector`'s metrics to the Prometheus output: it is called at each scrape, after
    /// switchyard's own metrics, and its names get the `switchyard_` prefix. Use it for other
    /// layers' numbers (pool connections, breaker states). A collector that fails is left
    /// out of that scrape; the rest of the output stands.
    pub fn register_collector<C: Collector>(&self, collector: C) {
        let collector: Arc<dyn Collector> = Arc::new(collector);
        self.update_hooks(|h| h.collectors.push(collector.clone()));
    }

    fn update_hooks(&self, f: impl Fn(&mut Hooks)) {
        self.inner.hooks.rcu(|hooks| {
            let mut hooks = Hooks::clone(hooks);
            f(&mut hooks);
            hooks
        });
    }

    /// All the numbers now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        if !self.is_enabled() {
            return Self::off().snapshot();
        }
        let proxy = self.inner.proxy.read();
        let hooks = self.inner.hooks.load_full();
        let cache = hooks.cache().unwrap_or_default();
        MetricsSnapshot {
            total_requests: proxy.started,
            successful_requests: proxy.succeeded,
            failed_requests: proxy.failed,
            cancelled_requests: proxy.cancelled,
            in_flight: proxy.in_flight(),
            average_response_time: proxy.average(),
            latency: Latency::from_reading(&proxy),
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            total_retries: hooks.retries().unwrap_or(0),
            backend_metrics: self
                .inner
                .backends
                .load()
                .iter()
                .map(|(id, r)| (id.to_string(), BackendSnapshot::from_reading(&r.read())))
                .collect(),
        }
    }

    /// The metrics in the OpenMetrics 1.0 text format (ending `# EOF`), which Prometheus
    /// scrapes; serve it with [`TextFormat::OpenMetrics`]'s
    /// [content type](TextFormat::content_type).
    pub fn encode_prometheus(&self) -> String {
        self.encode(TextFormat::OpenMetrics)
    }

    /// The metrics in `format`.
    pub fn encode(&self, format: TextFormat) -> String {
        if !self.is_enabled() {
            return Self::off().encode(format);
        }
        prometheus::encode(&self.inner, format)
    }
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MetricsRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backends: Vec<_> = self.inner.backends.load().keys().cloned().collect();
        f.debug_struct("MetricsRegistry")
            .field("stripes", &self.inner.stripes)
            .field("backends", &backends)
            .finish_non_exhaustive()
    }
}
