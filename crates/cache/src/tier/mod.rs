//! The shared tier: a second store on Redis, shared by a fleet of proxies, consulted on a
//! local miss and filled when the local store stores.
//!
//! Why this shape:
//! - **Local first.** A hit in the local [`Store`](crate::Store) never reaches this
//!   module; only a request about to go upstream asks Redis, and what it finds is copied
//!   into the local store (not written back).
//! - **Never in the way.** Every command runs under [`SharedConfig::timeout`]; failures
//!   and timeouts feed a breaker ([`gate`]) that skips Redis for
//!   [`SharedConfig::open_for`] after [`SharedConfig::failure_threshold`] in a row. A
//!   request that gets nothing from Redis goes upstream as it would without the tier.
//!   Writes, deletions and publications run on tasks of their own: no client waits for
//!   them.
//! - **One fill per key across the fleet.** An instance about to fetch a URL nobody has
//!   stored takes a lock in Redis (`SET NX PX`); the others poll Redis for its response
//!   for at most [`SharedConfig::lock_wait`], then fetch it themselves. The lock is
//!   released with the write of the response, or when the fetch ends without one.
//! - **Invalidation reaches every instance.** Unsafe requests and purges delete the key in
//!   Redis and publish it on a channel every instance subscribes to, dropping its local
//!   copy. An invalidation Redis does not take (it is down, slow, or its breaker open) is
//!   kept and sent again as soon as Redis answers, so it is late, never lost. An instance
//!   whose subscription dropped may have missed messages meanwhile: when it subscribes
//!   again it clears its local store (what Redis's own client-side caching asks of its
//!   clients), and refills from Redis and the backends.
//!
//! Keys are `<namespace>:v1:<SHA-256 of the URL, hex>`, locks
//! `<namespace>:v1:lock:<same>`, the channel `<namespace>:v1:invalidate`; `v1` is the
//! value format's version ([`codec`]).
//!
//! The client is the `redis` crate's tokio [`ConnectionManager`]: one multiplexed
//! connection shared by every request, re-established by itself after a failure.

mod codec;
mod config;
mod gate;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::{Client, RedisResult};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

pub use config::SharedConfig;

use crate::stats::bump;
use crate::{CacheConfig, Store, Variants};
use codec::Clocks;
use gate::Gate;

/// How long the background tasks wait before connecting again after a failure.
const RECONNECT: Duration = Duration::from_millis(250);

/// The most URLs whose invalidation waits for Redis; past it the wait is for one
/// invalidation of every URL, which covers them all.
const MAX_PENDING: usize = 10_000;

/// The longest one connection attempt may take (the background tasks' own, never a
/// request's).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the shared tier did, for [`CacheStats::shared`](crate::CacheStats::shared).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SharedStats {
    /// Lookups that found the URL in Redis.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Commands that failed or timed out.
    pub errors: u64,
    /// Commands not sent: the breaker was open or there was no connection yet.
    pub skipped: u64,
    /// Responses written to Redis.
    pub writes: u64,
    /// Invalidations received from other instances.
    pub invalidations_received: u64,
    /// Invalidations Redis has not taken yet (it was down or the breaker open): they are
    /// sent again when it answers. Every URL at once counts as one.
    pub invalidations_pending: u64,
    /// Times the local store was cleared because the subscription to the invalidation
    /// channel had dropped (messages may have been missed meanwhile).
    pub resubscribe_clears: u64,
    /// Commands sent (pipelines count once).
    pub calls: u64,
    /// Their latency added up, in microseconds (timeouts count their whole wait).
    pub latency_micros: u64,
    /// Whether the command connection is up: made, and its last command succeeded.
    pub connected: bool,
    /// Whether this instance listens to the invalidation channel.
    pub subscribed: bool,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    writes: AtomicU64,
    invalidations_received: AtomicU64,
    resubscribe_clears: AtomicU64,
    calls: AtomicU64,
    latency_micros: AtomicU64,
    subscribed: AtomicBool,
}

/// The Redis tier of one cache (all its clones share it).
pub(crate) struct RedisTier {
    config: SharedConfig,
    cache: CacheConfig,
    /// The local store, for invalidations from other instances.
    store: Arc<dyn Store>,
    /// Set once the first connection is made; it reconnects by itself after that.
    conn: OnceLock<ConnectionManager>,
    gate: Gate,
    stats: Counters,
    /// Invalidations Redis did not take yet.
    pending: Lock<Pending>,
    runtime: Handle,
    /// Tells the tier's own messages apart on the channel.
    instance: u64,
    channel: String,
    /// Dropped with the tier: its background tasks end.
    _shutdown: watch::Sender<()>,
}

// Held to add or take invalidations, only after a Redis command failed and when Redis
// answers again: never on a request's path, never across an await.
#[allow(clippy::disallowed_types)]
type Lock<T> = std::sync::Mutex<T>;

/// Invalidations to send again: each URL with whether to publish it, or every URL.
#[derive(Debug, Default)]
struct Pending {
    urls: HashMap<String, bool>,
    all: bool,
}

impl Pending {
    fn len(&self) -> u64 {
        if self.all {
            1
        } else {
            self.urls.len() as u64
        }
    }
}

/// An instance's claim on fetching a URL for the whole fleet: released (deleted in
/// Redis) when dropped, or with the write of the response it fetched.
pub(crate) struct RemoteLock {
    tier: Weak<RedisTier>,
    key: Option<String>,
}

/// What a claim on a URL's fetch found.
pub(crate) enum Claim {
    /// This instance fetches it.
    Won(RemoteLock),
    /// Another instance is fetching it.
    Taken,
    /// Redis could not say.
    Unknown,
}

impl RedisTier {
    /// Starts a tier on the current tokio runtime: a task connects (and keeps trying
    /// until Redis is there), another listens for invalidations. `None` without a runtime
    /// or with a URL the client refuses.
    pub(crate) fn start(
        config: SharedConfig,
        cache: CacheConfig,
        store: Arc<dyn Store>,
    ) -> Option<Arc<Self>> {
        let runtime = Handle::try_current().ok()?;
        let client = match Client::open(config.url.as_str()) {
            Ok(client) => client,
            Err(e) => {
                tracing::warn!(url = %config.url, error = %e, "shared cache tier disabled");
                return None;
            }
        };
        let (shutdown, closed) = watch::channel(());
        let channel = format!("{}:v1:invalidate", config.namespace);
        let tier = Arc::new(Self {
            gate: Gate::new(config.failure_threshold, config.open_for),
            config,
            cache,
            store,
            conn: OnceLock::new(),
            stats: Counters::default(),
            pending: Lock::default(),
            runtime: runtime.clone(),
            instance: instance_id(),
            channel,
            _shutdown: shutdown,
        });
        runtime.spawn(connect(
            Arc::downgrade(&tier),
            client.clone(),
            closed.clone(),
        ));
        runtime.spawn(listen(Arc::downgrade(&tier), client, closed));
        Some(tier)
    }

    fn key(&self, url: &str) -> String {
        format!("{}:v1:{}", self.config.namespace, digest(url))
    }

    fn lock_key(&self, url: &str) -> String {
        format!("{}:v1:lock:{}", self.config.namespace, digest(url))
    }

    /// Runs one command (or pipeline) made by `command` on the connection, within the
    /// timeout and the breaker; `None` when it was skipped, failed or timed out.
    async fn call<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.gate.allows() {
            bump(&self.stats.skipped);
            return None;
        }
        self.send(command).await
    }

    /// Runs one command within the timeout, whatever the breaker says.
    async fn send<T, F, Fut>(&self, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(conn) = self.conn.get().cloned() else {
            bump(&self.stats.skipped);
            return None;
        };
        let started = Instant::now();
        let result = tokio::time::timeout(self.config.timeout, command(conn)).await;
        bump(&self.stats.calls);
        self.stats
            .latency_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(Ok(value)) => {
                self.gate.success();
                Some(value)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared cache tier command failed");
                self.failed()
            }
            Err(_) => self.failed(),
        }
    }

    fn failed<T>(&self) -> Option<T> {
        bump(&self.stats.errors);
        self.gate.failure();
        None
    }

    /// The variants Redis has for `url`.
    pub(crate) async fn get(&self, url: &str) -> Option<Variants> {
        let key = self.key(url);
        let value: Option<Vec<u8>> = self
            .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await?;
        self.found(value)
    }

    fn found(&self, value: Option<Vec<u8>>) -> Option<Variants> {
        let variants = value.and_then(|v| codec::decode(v.into(), Clocks::now(), &self.cache));
        bump(match variants {
            Some(_) => &self.stats.hits,
            None => &self.stats.misses,
        });
        variants
    }

    /// Claims the fetch of `url` for the fleet.
    pub(crate) async fn claim(self: &Arc<Self>, url: &str) -> Claim {
        let key = self.lock_key(url);
        let ttl = self.config.lock_ttl.as_millis().max(1) as u64;
        let instance = self.instance;
        let set = {
            let key = key.clone();
            move |mut c: ConnectionManager| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(instance)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<Option<String>>(&mut c)
                    .await
            }
        };
        match self.call(set).await {
            Some(Some(_)) => Claim::Won(RemoteLock {
                tier: Arc::downgrade(self),
                key: Some(key),
            }),
            Some(None) => Claim::Taken,
            None => Claim::Unknown,
        }
    }

    /// Polls Redis for the response another instance is fetching for `url`, until it is
    /// there, the other instance gives up its lock, Redis fails, or `lock_wait` is over.
    pub(crate) async fn wait_for(&self, url: &str) -> Option<Variants> {
        let deadline = Instant::now() + self.config.lock_wait;
        let (key, lock) = (self.key(url), self.lock_key(url));
        loop {
            tokio::time::sleep(self.config.poll_interval).await;
            let (key, lock) = (key.clone(), lock.clone());
            let (value, locked): (Option<Vec<u8>>, bool) = self
                .call(|mut c| async move {
                    redis::pipe()
                        .cmd("GET")
                        .arg(key)
                        .cmd("EXISTS")
                        .arg(lock)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if value.is_some() || !locked || Instant::now() >= deadline {
                return self.found(value);
            }
        }
    }

    /// Writes `variants` for `url` (on a task of its own), releasing `lock` with it.
    pub(crate) fn put(self: &Arc<Self>, url: &str, variants: &Variants, lock: Option<RemoteLock>) {
        let clocks = Clocks::now();
        let Some(ttl) = codec::ttl(variants, clocks.now, &self.cache) else {
            return;
        };
        let value = codec::encode(variants, clocks);
        if value.len() as u64 > self.config.max_object_size {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(url))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .ignore();
        if let Some(key) = lock.and_then(|mut l| l.key.take()) {
            pipe.cmd("DEL").arg(key).ignore();
        }
        let tier = self.clone();
        self.runtime.spawn(async move {
            let written = tier
                .call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                .await;
            if written.is_some() {
                bump(&tier.stats.writes);
            }
        });
    }

    /// Deletes what Redis has for `url` and, when `publish`, tells the other instances to
    /// drop their copies (on a task of its own). `None` for `url` is every URL. Kept and
    /// sent again when Redis answers, if it does not take it now.
    pub(crate) fn invalidate(self: &Arc<Self>, url: Option<&str>, publish: bool) {
        let tier = self.clone();
        let url = url.map(str::to_owned);
        self.runtime.spawn(async move {
            if !tier.send_invalidation(url.as_deref(), publish).await {
                tier.keep(url, publish);
            }
        });
    }

    /// Sends one invalidation; whether Redis took it.
    async fn send_invalidation(&self, url: Option<&str>, publish: bool) -> bool {
        let message = format!("{} {}", self.instance, url.unwrap_or(""));
        let mut pipe = redis::pipe();
        match url {
            Some(url) => {
                pipe.cmd("DEL").arg(self.key(url)).ignore();
            }
            None => {
                if !self.delete_all().await {
                    return false;
                }
            }
        }
        if publish || url.is_none() {
            pipe.cmd("PUBLISH").arg(&self.channel).arg(message).ignore();
        }
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
            .is_some()
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        // Each change is one insert or assignment: a panic cannot leave it half made.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an invalidation Redis did not take, to send it again when it answers.
    fn keep(&self, url: Option<String>, publish: bool) {
        let mut pending = self.pending();
        match url {
            _ if pending.all => {}
            Some(url) if pending.urls.len() < MAX_PENDING => {
                *pending.urls.entry(url).or_default() |= publish;
            }
            _ => {
                pending.all = true;
                pending.urls = HashMap::new();
            }
        }
    }

    /// Sends the invalidations kept while Redis did not answer; those it still does not
    /// take are kept again.
    async fn resend(&self) {
        let Pending { urls, all } = std::mem::take(&mut *self.pending());
        if all {
            if !self.send_invalidation(None, true).await {
                self.keep(None, true);
            }
            return;
        }
        let mut urls = urls.into_iter();
        while let Some((url, publish)) = urls.next() {
            if !self.send_invalidation(Some(&url), publish).await {
                self.keep(Some(url), publish);
                for (url, publish) in urls.by_ref() {
                    self.keep(Some(url), publish);
                }
            }
        }
    }

    /// Deletes every key of the namespace's current format; whether it got through.
    async fn delete_all(&self) -> bool {
        let pattern = format!("{}:v1:*", self.config.namespace);
        let mut cursor = 0u64;
        loop {
            let pattern = pattern.clone();
            let Some((next, keys)) = self
                .call(|mut c| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async::<(u64, Vec<String>)>(&mut c)
                        .await
                })
                .await
            else {
                return false;
            };
            if !keys.is_empty() {
                let deleted = self
                    .call(|mut c| async move {
                        redis::cmd("DEL").arg(keys).query_async::<()>(&mut c).await
                    })
                    .await;
                if deleted.is_none() {
                    return false;
                }
            }
            if next == 0 {
                return true;
            }
            cursor = next;
        }
    }

    /// A message from the invalidation channel: `<instance> <url>`, an empty URL for all.
    fn received(&self, payload: &str) {
        let Some((from, url)) = payload.split_once(' ') else {
            return;
        };
        if from.parse() == Ok(self.instance) {
            return;
        }
        bump(&self.stats.invalidations_received);
        if url.is_empty() {
            self.store.clear();
        } else {
            self.store.remove(url);
        }
    }

    pub(crate) fn stats(&self) -> SharedStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let s = &self.stats;
        SharedStats {
            hits: get(&s.hits),
            misses: get(&s.misses),
            errors: get(&s.errors),
            skipped: get(&s.skipped),
            writes: get(&s.writes),
            invalidations_received: get(&s.invalidations_received),
            invalidations_pending: self.pending().len(),
            resubscribe_clears: get(&s.resubscribe_clears),
            calls: get(&s.calls),
            latency_micros: get(&s.latency_micros),
            connected: self.conn.get().is_some() && self.gate.is_healthy(),
            subscribed: s.subscribed.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        let (Some(tier), Some(key)) = (self.tier.upgrade(), self.key.take()) else {
            return;
        };
        let runtime = tier.runtime.clone();
        runtime.spawn(async move {
            tier.call(
                |mut c| async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await },
            )
            .await;
        });
    }
}

impl fmt::Debug for RemoteLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteLock")
            .field("key", &self.key)
            .finish()
    }
}

/// Makes the command connection, retrying until it is made, then sends a `PING` every
/// `open_for` while commands fail, so that the tier comes back when Redis does even if no
/// request asks it; until the tier is dropped.
async fn connect(tier: Weak<RedisTier>, client: Client, mut closed: watch::Receiver<()>) {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_number_of_retries(1)
        .set_factor(50)
        .set_max_delay(RECONNECT.as_millis() as u64);
    loop {
        let attempt =
            redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone());
        let made = tokio::select! {
            made = attempt => made,
            _ = closed.changed() => return,
        };
        let Some(strong) = tier.upgrade() else { return };
        match made {
            Ok(conn) => {
                let _ = strong.conn.set(conn);
                break;
            }
            Err(e) => tracing::debug!(error = %e, "shared cache tier: cannot connect"),
        }
        drop(strong);
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT) => {}
            _ = closed.changed() => return,
        }
    }
    probe(tier, closed).await;
}

/// While commands fail, a `PING` every `open_for` (the connection manager reconnects on
/// the failures; a success closes the breaker); once Redis answers, the invalidations it
/// missed are sent again.
async fn probe(tier: Weak<RedisTier>, mut closed: watch::Receiver<()>) {
    loop {
        let Some(every) = tier.upgrade().map(|t| match t.pending().len() {
            0 => t.config.open_for.max(RECONNECT),
            _ => RECONNECT,
        }) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = closed.changed() => return,
        }
        let Some(tier) = tier.upgrade() else { return };
        if !tier.gate.is_healthy() {
            let ping = |mut c: ConnectionManager| async move {
                redis::cmd("PING").query_async::<()>(&mut c).await
            };
            if tier.send(ping).await.is_some() {
                tracing::info!("shared cache tier: Redis answers again");
            }
        }
        if tier.gate.is_healthy() && tier.pending().len() > 0 {
            tier.resend().await;
        }
    }
}

/// Listens on the invalidation channel, subscribing again whenever the connection drops,
/// until the tier is dropped.
async fn listen(tier: Weak<RedisTier>, client: Client, mut closed: watch::Receiver<()>) {
    let mut subscribed_before = false;
    loop {
        let Some(channel) = tier.upgrade().map(|t| t.channel.clone()) else {
            return;
        };
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            RedisResult::Ok(pubsub)
        };
        let subscribed = tokio::select! {
            s = tokio::time::timeout(CONNECT_TIMEOUT, subscribe) => s,
            _ = closed.changed() => return,
        };
        if let Ok(Ok(mut pubsub)) = subscribed {
            let set = |on: bool| {
                if let Some(t) = tier.upgrade() {
                    t.stats.subscribed.store(on, Ordering::Relaxed);
                }
            };
            if std::mem::replace(&mut subscribed_before, true) {
                // Messages published while it was down are lost to this instance.
                let Some(tier) = tier.upgrade() else { return };
                tier.store.clear();
                bump(&tier.stats.resubscribe_clears);
                tracing::info!("shared cache tier: subscribed again, local store cleared");
            }
            set(true);
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    msg = messages.next() => match msg {
                        Some(msg) => {
                            let Some(tier) = tier.upgrade() else { return };
                            if let Ok(payload) = msg.get_payload::<String>() {
                                tier.received(&payload);
                            }
                        }
                        None => break,
                    },
                    _ = closed.changed() => return,
                }
            }
            set(false);
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT) => {}
            _ = closed.changed() => return,
        }
    }
}

/// A URL's digest, in hex: keys of one length whatever the URL.
fn digest(url: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, url.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A number that tells this instance's messages from the others'.
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::process::id())
}
