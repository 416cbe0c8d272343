use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::header::{HeaderValue, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_core::{
    BoxError, ConnectError, ConnectErrorKind, PoolTimeout, ReturnHead, RouteHint,
};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower::Service;

use crate::body::PooledBody;
use crate::connect;
use crate::idle::IdleSet;
use crate::linger::Linger;
use crate::stats::{Closed, Counters};
use crate::tls::Stream;
use crate::{Http1Engine, PoolConfig, PoolStats, Protocol};

/// One backend's connection pool, as a service. Cheap to clone; clones share the pool.
/// See the [crate docs](crate).
pub struct Pool<B> {
    inner: Arc<Inner<B>>,
}

/// The response future of [`Pool`].
pub type ResponseFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<PooledBody<B>>, BoxError>> + Send + 'static>>;

struct Inner<B> {
    authority: Authority,
    /// Connect here instead of resolving `authority` (an address resolved by discovery).
    addr: Option<SocketAddr>,
    host: HeaderValue,
    /// `Some` for an `https` backend; new settings come with [`Pool::reconfigure`], and
    /// are read when a connection is dialled.
    tls: ArcSwapOption<connect::Tls>,
    /// An `https` backend: fixed when the pool is made.
    https: bool,
    /// Counts the changes of TLS settings or HTTP/1.1 engine: a connection made under an
    /// earlier one is not used for another request.
    generation: AtomicU64,
    /// Its protocol is fixed when the pool is made; its limits, timeouts, engine and TLS
    /// change with [`Pool::reconfigure`] and are read where they apply.
    config: ArcSwap<PoolConfig>,
    counters: Counters,
    closed: AtomicBool,
    /// HTTP/1.1: one permit per request in flight, so at most `max_connections` are busy.
    /// tokio's semaphore queues waiters first come, first served.
    permits: Arc<Semaphore>,
    /// At most `max_idle` (and no more than `max_connections`).
    idle: IdleSet<Idle<B>>,
    /// The fewest idle connections a request left behind since the reaper's last shrink:
    /// that many were never needed in that time (see [`Inner::shrink`]).
    idle_low: AtomicUsize,
    /// `config`'s idle timeout in nanoseconds, read by every request that takes an idle
    /// connection (an atomic load instead of a load of the whole configuration).
    idle_timeout: AtomicU64,
    /// Whether requests go out on the native HTTP/1.1 engine (`config`'s protocol and
    /// engine), read by every request.
    native: AtomicBool,
    /// HTTP/2: the open connections, read on every request, written when one is dialled or
    /// found closed.
    h2: ArcSwap<Vec<Arc<H2Conn<B>>>>,
    /// Serializes HTTP/2 dials (slow path only) so a burst opens one connection, not many.
    h2_dial: tokio::sync::Mutex<()>,
    /// Signalled when an HTTP/2 stream ends, for requests waiting at the cap.
    h2_released: Notify,
    epoch: Instant,
    reaper: Option<AbortHandle>,
}

struct Idle<B> {
    sender: H1Conn<B>,
    since: Instant,
    /// The pool's generation when it was dialled.
    generation: u64,
}

/// A native HTTP/1.1 backend connection.
pub(crate) type NativeConn = switchyard_h1::Connection<Stream>;

/// An HTTP/1.1 connection of either engine ([`Http1Engine`](crate::Http1Engine)). A pool
/// runs one engine; boxing the native one would allocate per request.
#[allow(clippy::large_enum_variant)]
enum H1Conn<B> {
    Hyper(http1::SendRequest<B>),
    Native(NativeConn),
}

impl<B> H1Conn<B> {
    /// The backend closed it (or, native, sent bytes unasked): it cannot be used.
    fn is_closed(&mut self) -> bool {
        match self {
            Self::Hyper(sender) => sender.is_closed(),
            Self::Native(conn) => conn.is_closed(),
        }
    }
}

struct H2Conn<B> {
    sender: http2::SendRequest<B>,
    streams: AtomicUsize,
    /// Nanoseconds since the pool's epoch when the last stream ended.
    last_used: AtomicU64,
}

impl<B> Drop for Inner<B> {
    fn drop(&mut self) {
        if let Some(reaper) = &self.reaper {
            reaper.abort();
        }
        // Ends a wait for the permits of a lowered cap (see `Pool::reconfigure`).
        self.permits.close();
    }
}

impl<B> Pool<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A pool for the backend at `authority` (`host:port`). Spawns its idle reaper, so it
    /// must be called within a tokio runtime.
    pub fn new(authority: Authority, config: PoolConfig) -> Self {
        Self::build(authority, None, config)
    }

    /// A pool for the backend named `authority` that connects to `addr` without resolving
    /// the name: for one address of a backend whose name discovery resolved. Requests keep
    /// `authority` as their `Host`.
    pub fn with_address(authority: Authority, addr: SocketAddr, config: PoolConfig) -> Self {
        Self::build(authority, Some(addr), config)
    }

    fn build(authority: Authority, addr: Option<SocketAddr>, config: PoolConfig) -> Self {
        let mut config = config;
        config.max_connections = config.max_connections.max(1);
        config.h2_max_streams = config.h2_max_streams.max(1);
        let host = HeaderValue::from_str(authority.as_str())
            .expect("an authority is a valid header value");
        let tls = dial_tls(&authority, &config);
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<B>>| {
            let reaper = tokio::spawn(reap(weak.clone()));
            Inner {
                authority,
                addr,
                host,
                https: tls.is_some(),
                tls: ArcSwapOption::from(tls.map(Arc::new)),
                generation: AtomicU64::new(0),
                permits: Arc::new(Semaphore::new(config.max_connections)),
                idle: IdleSet::new(idle_capacity(&config)),
                idle_low: AtomicUsize::new(0),
                idle_timeout: AtomicU64::new(nanos(config.idle_timeout)),
                native: AtomicBool::new(is_native(&config)),
                h2: ArcSwap::from_pointee(Vec::new()),
                h2_dial: tokio::sync::Mutex::new(()),
                h2_released: Notify::new(),
                counters: Counters::default(),
                closed: AtomicBool::new(false),
                epoch: Instant::now(),
                reaper: Some(reaper.abort_handle()),
                config: ArcSwap::from_pointee(config),
            }
        });
        Self { inner }
    }
}

impl<B> Pool<B> {
    /// The backend's authority.
    pub fn authority(&self) -> &Authority {
        &self.inner.authority
    }

    /// The pool's settings in force.
    pub fn config(&self) -> Arc<PoolConfig> {
        self.inner.config.load_full()
    }

    /// Applies `config` from now on: its limits and timeouts (`max_connections`,
    /// `max_idle`, `connect_timeout`, `wait_timeout`, `idle_timeout` and `h2_max_streams`)
    /// keeping the connections, and its HTTP/1.1 engine and TLS settings (for a pool that
    /// speaks TLS; `tls: None` keeps its settings) draining them. The protocol stays the one
    /// the pool was made with.
    ///
    /// A new connection and a request that starts waiting for one see the new values at
    /// once. A lower `max_connections` lets no new request in until fewer than it are in
    /// flight; requests in flight finish. A lower `max_idle` (or cap) closes the idle
    /// connections beyond it now, the oldest first.
    ///
    /// A new engine or new TLS settings (compared as [`TlsConfig`](crate::TlsConfig)
    /// values: the same settings loaded again are new ones) apply to the connections dialled
    /// from now on. Those made before take no new request: the idle ones close now, the busy
    /// ones once their response ends (requests in flight finish on them).
    pub fn reconfigure(&self, config: PoolConfig) {
        let inner = &self.inner;
        let mut next = None;
        let old = inner.config.rcu(|now| {
            let tls = match (&now.tls, &config.tls) {
                (Some(_), Some(tls)) => Some(tls.clone()),
                _ => now.tls.clone(),
            };
            let config = PoolConfig {
                max_connections: config.max_connections.max(1),
                h2_max_streams: config.h2_max_streams.max(1),
                protocol: now.protocol,
                tls,
                ..config.clone()
            };
            next = Some(config.clone());
            config
        });
        let Some(new) = next else { return };
        (inner.idle_timeout).store(nanos(new.idle_timeout), Ordering::Relaxed);
        (inner.native).store(is_native(&new), Ordering::Relaxed);
        let engine = new.protocol == Protocol::Http1 && new.http1 != old.http1;
        if engine || new.tls != old.tls {
            inner.renew(&new);
        }
        if new.max_connections > old.max_connections {
            inner
                .permits
                .add_permits(new.max_connections - old.max_connections);
        } else if new.max_connections < old.max_connections {
            // Takes the surplus permits: the free ones now, the others as requests in
            // flight give them back, before any request that comes after (tokio's
            // semaphore is fair).
            let mut surplus = old.max_connections - new.max_connections;
            while surplus > 0 {
                let Ok(free) = inner.permits.try_acquire() else {
                    break;
                };
                free.forget();
                surplus -= 1;
            }
            if surplus > 0 {
                let permits = inner.permits.clone();
                let surplus = u32::try_from(surplus).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(surplus).await {
                        taken.forget();
                    }
                });
            }
        }
        let capacity = idle_capacity(&new);
        if capacity != inner.idle.capacity() {
            inner
                .idle
                .resize(capacity, |_| inner.counters.closed(Closed::Evicted));
            inner
                .idle_low
                .fetch_min(inner.idle.len(), Ordering::Relaxed);
        }
        inner.trim_h2(new.max_connections);
    }

    /// A snapshot of the pool's counters, read from atomics.
    pub fn stats(&self) -> PoolStats {
        let inner = &self.inner;
        let idle = match inner.config.load().protocol {
            Protocol::Http1 => inner.idle.len() as u64,
            Protocol::Http2 => inner
                .h2
                .load()
                .iter()
                .filter(|c| c.streams.load(Ordering::Relaxed) == 0)
                .count() as u64,
        };
        inner.counters.snapshot(idle)
    }

    /// Drains the pool: idle connections close now, busy ones when their response ends,
    /// and none is put back. For a backend that is being removed.
    pub fn close(&self) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::SeqCst);
        inner.evict_all();
    }
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B> fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("authority", &self.inner.authority)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<B> Service<Request<B>> for Pool<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<PooledBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<B>;

    /// Always ready: a request that finds the cap reached waits in the response future,
    /// in arrival order and bounded by `wait_timeout`, rather than parking the caller here
    /// (which would stall a balancer's other backends).
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        if inner.native.load(Ordering::Relaxed) {
            return Box::pin(send_native(inner, req));
        }
        match inner.config.load().protocol {
            Protocol::Http1 => Box::pin(send_h1(inner, copy_head_back(req))),
            Protocol::Http2 => Box::pin(send_h2(inner, copy_head_back(req))),
        }
    }
}

/// A connection (HTTP/1.1) or stream (HTTP/2) in use by one request. Whatever happens
/// to the request, dropping this accounts for it: put back by [`Release::done`], closed
/// otherwise.
pub(crate) struct Release<B> {
    inner: Arc<Inner<B>>,
    held: Option<Held<B>>,
}

#[allow(clippy::large_enum_variant)]
enum Held<B> {
    /// `sender` is `None` while a native connection is in its response body.
    H1 {
        sender: Option<H1Conn<B>>,
        _permit: OwnedSemaphorePermit,
        /// The pool's generation when the connection was dialled.
        generation: u64,
    },
    H2 {
        conn: Arc<H2Conn<B>>,
    },
}

impl<B> Release<B> {
    fn new(inner: Arc<Inner<B>>, held: Held<B>) -> Self {
        inner.counters.in_use.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            held: Some(held),
        }
    }

    fn sender(&mut self) -> &mut http1::SendRequest<B> {
        match &mut self.held {
            Some(Held::H1 {
                sender: Some(H1Conn::Hyper(sender)),
                ..
            }) => sender,
            _ => unreachable!("only hyper's HTTP/1.1 releases hold a sender"),
        }
    }

    /// Takes the connection out of use, closed for `why`, keeping the request's permit.
    fn retire(mut self, why: Closed) -> Option<OwnedSemaphorePermit> {
        self.close(why)
    }

    /// Closes what is held, if anything: an HTTP/1.1 connection is dropped (its permit
    /// returned to the caller), an HTTP/2 stream ends.
    fn close(&mut self, why: Closed) -> Option<OwnedSemaphorePermit> {
        let held = self.held.take()?;
        self.inner.counters.in_use.fetch_sub(1, Ordering::Relaxed);
        match held {
            Held::H1 {
                sender, _permit, ..
            } => {
                drop(sender);
                self.inner.counters.closed(why);
                Some(_permit)
            }
            Held::H2 { conn } => {
                self.inner.end_stream(&conn);
                None
            }
        }
    }

    /// The response was read to the end: the connection can carry another request. A
    /// native connection comes back from its body as `native`, if it can.
    pub(crate) fn done(mut self, native: Option<NativeConn>) {
        self.inner.counters.in_use.fetch_sub(1, Ordering::Relaxed);
        match self.held.take() {
            Some(Held::H1 {
                sender,
                _permit,
                generation,
            }) => {
                let Some(sender) = sender.or(native.map(H1Conn::Native)) else {
                    // The backend ended the connection with the response.
                    self.inner.counters.closed(Closed::Backend);
                    return;
                };
                // Back to the idle set before the permit is released, so that a request
                // let in by that permit finds it there instead of dialling.
                let inner = &self.inner;
                let evicted = |_| inner.counters.closed(Closed::Evicted);
                match inner.closed.load(Ordering::Relaxed) || !inner.current(generation) {
                    true => evicted(sender),
                    false => {
                        let since = Instant::now();
                        let idle = Idle {
                            sender,
                            since,
                            generation,
                        };
                        inner.idle.push(idle, |idle| evicted(idle.sender));
                    }
                }
            }
            Some(Held::H2 { conn }) => self.inner.end_stream(&conn),
            None => {}
        }
    }

    /// The response was abandoned or broke: an HTTP/1.1 connection cannot be reused.
    pub(crate) fn abandon(self) {
        drop(self);
    }
}

impl<B> Drop for Release<B> {
    fn drop(&mut self) {
        // Neither put back nor retired: the request was dropped or its response broke.
        self.close(Closed::Error);
    }
}

impl<B> Inner<B> {
    /// The generation a connection dialled now belongs to. Read before the TLS settings it
    /// is dialled with: those are stored before the generation changes.
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a connection of `generation` may take another request.
    fn current(&self, generation: u64) -> bool {
        generation == self.generation()
    }

    /// Puts the engine and TLS settings of `config` in force: the TLS settings for the
    /// connections dialled from now on, then a new generation, so that those made before
    /// take no new request; the idle ones close now.
    fn renew(&self, config: &PoolConfig) {
        if self.https {
            self.tls
                .store(dial_tls(&self.authority, config).map(Arc::new));
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.evict_all();
    }

    /// Closes the idle HTTP/1.1 connections and takes the HTTP/2 ones out of use (their
    /// streams in flight finish).
    fn evict_all(&self) {
        while let Some(idle) = self.idle.pop() {
            drop(idle);
            self.counters.closed(Closed::Evicted);
        }
        let h2 = self.h2.swap(Arc::new(Vec::new()));
        for _ in h2.iter() {
            self.counters.closed(Closed::Evicted);
        }
    }

    fn idle_for(&self, since: Instant, now: Instant) -> bool {
        let timeout = Duration::from_nanos(self.idle_timeout.load(Ordering::Relaxed));
        now.saturating_duration_since(since) >= timeout
    }

    /// Closes idle HTTP/2 connections beyond `max_connections`, the least recently used
    /// first.
    fn trim_h2(&self, max_connections: usize) {
        let conns = self.h2.load();
        if conns.len() <= max_connections {
            return;
        }
        let mut closed = 0;
        self.h2.rcu(|conns| {
            let mut idle: Vec<_> = (conns.iter())
                .filter(|c| c.streams.load(Ordering::Acquire) == 0)
                .map(|c| (c.last_used.load(Ordering::Relaxed), Arc::as_ptr(c)))
                .collect();
            idle.sort_unstable();
            idle.truncate(conns.len().saturating_sub(max_connections));
            closed = idle.len();
            (conns.iter())
                .filter(|c| !idle.iter().any(|(_, p)| std::ptr::eq(*p, Arc::as_ptr(c))))
                .cloned()
                .collect::<Vec<_>>()
        });
        for _ in 0..closed {
            self.counters.closed(Closed::Evicted);
        }
    }

    /// Takes a usable idle connection of `engine` and its generation, closing the
    /// expired, the dead, those of an earlier generation and those of the other engine (a
    /// request that started before the engine changed dialled it) on the way.
    fn pop_idle(&self, engine: Http1Engine) -> Option<(H1Conn<B>, u64)> {
        let now = Instant::now();
        loop {
            let (popped, left) = self.idle.pop_counted();
            let Some(mut idle) = popped else {
                self.note_idle_left(left);
                return None;
            };
            let native = matches!(idle.sender, H1Conn::Native(_));
            if idle.sender.is_closed() {
                self.counters.closed(Closed::Backend);
            } else if self.idle_for(idle.since, now) {
                self.counters.closed(Closed::IdleTimeout);
            } else if !self.current(idle.generation) || native != (engine == Http1Engine::Native) {
                self.counters.closed(Closed::Evicted);
            } else {
                self.note_idle_left(left);
                return Some((idle.sender, idle.generation));
            }
        }
    }

    /// Lowers the idle low-water mark to `left`, what a request just left in the idle
    /// set. A load first: once the mark has settled, requests only read its line.
    #[inline]
    fn note_idle_left(&self, left: usize) {
        if left < self.idle_low.load(Ordering::Relaxed) {
            self.idle_low.fetch_min(left, Ordering::Relaxed);
        }
    }

    /// Closes the idle connections that no request needed during the last idle timeout,
    /// the oldest first. Reuse is first in, first out, so under steady traffic every idle
    /// connection is taken now and then and none stays idle for a whole idle timeout on
    /// its own: without this, a pool grown by a burst would keep its size for good. The
    /// low-water mark says how many were spare all along.
    fn shrink(&self) {
        let spare = self.idle_low.load(Ordering::Relaxed).min(self.idle.len());
        for _ in 0..spare {
            let Some(mut idle) = self.idle.pop() else {
                break;
            };
            if idle.sender.is_closed() {
                self.counters.closed(Closed::Backend);
            } else {
                self.counters.closed(Closed::IdleTimeout);
            }
        }
        self.idle_low.store(self.idle.len(), Ordering::Relaxed);
    }

    fn end_stream(&self, conn: &H2Conn<B>) {
        conn.streams.fetch_sub(1, Ordering::AcqRel);
        conn.last_used.store(self.now_nanos(), Ordering::Relaxed);
        self.h2_released.notify_one();
    }

    fn now_nanos(&self) -> u64 {
        switchyard_core::nanos_since(self.epoch)
    }

    /// One pass of the reaper: closes idle connections past the idle timeout and those the
    /// backend closed; with `shrink`, also those spare for the whole last idle timeout.
    fn reap(&self, shrink: bool) {
        let now = Instant::now();
        for _ in 0..self.idle.len() {
            let Some(mut idle) = self.idle.pop() else {
                break;
            };
            if idle.sender.is_closed() {
                self.counters.closed(Closed::Backend);
            } else if self.idle_for(idle.since, now) {
                self.counters.closed(Closed::IdleTimeout);
            } else {
                self.idle
                    .push(idle, |_| self.counters.closed(Closed::Evicted));
            }
        }
        if shrink {
            self.shrink();
        }
        let conns = self.h2.load();
        let now = self.now_nanos();
        let timeout = self.idle_timeout.load(Ordering::Relaxed);
        let expired = |c: &H2Conn<B>| {
            c.sender.is_closed()
                || (c.streams.load(Ordering::Acquire) == 0
                    && now.saturating_sub(c.last_used.load(Ordering::Relaxed)) >= timeout)
        };
        if conns.iter().any(|c| expired(c)) {
            self.h2.rcu(|conns| {
                conns
                    .iter()
                    .filter(|c| !expired(c))
                    .cloned()
                    .collect::<Vec<_>>()
            });
            for c in conns.iter().filter(|c| expired(c)) {
                let why = if c.sender.is_closed() {
                    Closed::Backend
                } else {
                    Closed::IdleTimeout
                };
                self.counters.closed(why);
            }
        }
    }
}

/// What dialling the backend at `authority` over TLS takes, when `config` has TLS.
fn dial_tls(authority: &Authority, config: &PoolConfig) -> Option<connect::Tls> {
    config.tls.as_ref().map(|tls| connect::Tls {
        connector: tls.connector(config.protocol),
        name: crate::tls::server_name(authority.host()).map_err(|e| e.to_string()),
        h2: config.protocol == Protocol::Http2,
    })
}

/// The idle set's capacity: `max_idle`, and never more than can be open.
fn idle_capacity(config: &PoolConfig) -> usize {
    config.max_idle.min(config.max_connections)
}

/// `d` in whole nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether `config` sends on the native HTTP/1.1 engine.
fn is_native(config: &PoolConfig) -> bool {
    config.protocol == Protocol::Http1 && config.http1 == Http1Engine::Native
}

fn reap_every(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(5))
}

/// Reaps every quarter of the idle timeout in force (see [`reap_every`]), following it
/// when [`Pool::reconfigure`] changes it.
async fn reap<B>(pool: Weak<Inner<B>>) {
    let timeout_now = || Some(pool.upgrade()?.config.load().idle_timeout);
    let Some(mut idle_timeout) = timeout_now() else {
        return;
    };
    let ticks = |every| {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let mut tick = ticks(reap_every(idle_timeout));
    let mut window = Instant::now();
    loop {
        tick.tick().await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let shrink = now.saturating_duration_since(window) >= idle_timeout;
        if shrink {
            window = now;
        }
        inner.reap(shrink);
        let current = inner.config.load().idle_timeout;
        if current != idle_timeout {
            idle_timeout = current;
            tick = ticks(reap_every(current));
            tick.reset();
        }
    }
}

/// [`prepare_h1`] for a head that goes back to a retry: what it changes is undone then.
fn prepare_native(head: &mut ReturnHead, host: &HeaderValue) {
    if let Some(uri) = origin_form(&head.uri) {
        head.set_uri(uri);
    }
    head.add_host(host);
    head.version = Version::HTTP_11;
}

/// `uri` in origin form (path and query), when it is not already.
fn origin_form(uri: &Uri) -> Option<Uri> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return None;
    }
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Some(Uri::from(path))
}

/// For the engines that take a request whole (hyper's, and HTTP/2): a retry above that
/// sends heads again gets a copy of this one, made before this backend's changes.
fn copy_head_back<B>(req: Request<B>) -> Request<B> {
    let (mut head, body) = req.into_parts();
    if let Some(hint) = RouteHint::take_returning(&mut head) {
        hint.put_head(head.clone());
        head.extensions.insert(hint);
    }
    Request::from_parts(head, body)
}

/// Sends over HTTP/1.1 in origin form with a `Host` header.
fn prepare_h1<B>(req: &mut Request<B>, host: &HeaderValue) {
    if let Some(uri) = origin_form(req.uri()) {
        *req.uri_mut() = uri;
    }
    if !req.headers().contains_key(HOST) {
        req.headers_mut().insert(HOST, host.clone());
    }
    *req.version_mut() = Version::HTTP_11;
}

/// Sends over HTTP/2: the URI absolute, with the request's `Host` (if any) as its
/// `:authority`, and no connection-specific header (HTTP/2 forbids them).
fn prepare_h2<B>(req: &mut Request<B>, backend: &Authority, tls: bool) {
    let headers = req.headers_mut();
    let authority = headers
        .remove(HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .unwrap_or_else(|| backend.clone());
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    if headers.get(TE).is_some_and(|te| te != "trailers") {
        headers.remove(TE);
    }
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
    parts.authority = Some(authority);
    parts.path_and_query = Some(path);
    *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are set");
    *req.version_mut() = Version::HTTP_2;
}

async fn acquire<B>(inner: &Inner<B>) -> Result<OwnedSemaphorePermit, BoxError> {
    if let Ok(permit) = inner.permits.clone().try_acquire_owned() {
        return Ok(permit);
    }
    inner.counters.waiting.fetch_add(1, Ordering::Relaxed);
    let wait = inner.config.load().wait_timeout;
    let waited = tokio::time::timeout(wait, inner.permits.clone().acquire_owned()).await;
    inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
    match waited {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(closed)) => Err(closed.into()),
        Err(_) => {
            Counters::bump(&inner.counters.wait_timeouts);
            Err(PoolTimeout::new().into())
        }
    }
}

/// Connects to the backend (TCP, then TLS for an `https` one). A failure is a connect
/// error.
async fn connect<B>(inner: &Inner<B>) -> Result<Stream, BoxError> {
    let timeout = inner.config.load().connect_timeout;
    let tls = inner.tls.load_full();
    connect::dial(&inner.authority, inner.addr, timeout, tls.as_deref())
        .await
        .map_err(|e| {
            Counters::bump(&inner.counters.connect_errors);
            e.into()
        })
}

/// The end of a dial: a failed handshake is a connect error; a success is a created
/// connection, whose task is spawned.
fn established<B, S, C>(inner: &Inner<B>, handshaken: hyper::Result<(S, C)>) -> Result<S, BoxError>
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    let (sender, conn) = match handshaken {
        Ok(pair) => pair,
        Err(e) => {
            Counters::bump(&inner.counters.connect_errors);
            return Err(e.into());
        }
    };
    Counters::bump(&inner.counters.created);
    let backend = inner.authority.clone();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%backend, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

async fn dial_h1<B>(inner: &Inner<B>) -> Result<http1::SendRequest<B>, BoxError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // Each stream type gets its own connection task, so plain TCP pays nothing for TLS.
    // With upgrades: a `101 Switching Protocols` hands the connection to the tunnel.
    // `Linger`: a response that arrives while the body is being sent is not lost to the
    // write error of a backend that closed without reading the rest.
    let h1 = http1::Builder::new();
    match connect(inner).await? {
        Stream::Tcp(s) => {
            let handshaken = h1.handshake(TokioIo::new(Linger::new(s))).await;
            established(inner, handshaken.map(|(s, c)| (s, c.with_upgrades())))
        }
        Stream::Tls(s) => {
            let handshaken = h1.handshake(TokioIo::new(Linger::new(*s))).await;
            established(inner, handshaken.map(|(s, c)| (s, c.with_upgrades())))
        }
    }
}

async fn send_h1<B>(
    inner: Arc<Inner<B>>,
    mut req: Request<B>,
) -> Result<Response<PooledBody<B>>, BoxError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    prepare_h1(&mut req, &inner.host);
    let mut permit = acquire(&inner).await?;
    loop {
        let (sender, reused, generation) = match inner.pop_idle(Http1Engine::Hyper) {
            Some((H1Conn::Hyper(sender), generation)) => (sender, true, generation),
            Some((H1Conn::Native(_), _)) => unreachable!("taken for the hyper engine"),
            // Boxed: dialling is the rare path, and inline it would make every request's
            // future as large as a TCP connect plus a handshake.
            None => {
                let generation = inner.generation();
                (Box::pin(dial_h1(&inner)).await?, false, generation)
            }
        };
        let mut conn = Release::new(
            inner.clone(),
            Held::H1 {
                sender: Some(H1Conn::Hyper(sender)),
                _permit: permit,
                generation,
            },
        );
        // A reused connection finishes its previous exchange first; a closed one is dropped.
        if conn.sender().ready().await.is_err() {
            permit = conn
                .retire(Closed::Backend)
                .expect("HTTP/1.1 holds a permit");
            if reused {
                continue;
            }
            return Err(ConnectError::new(
                ConnectErrorKind::Other,
                inner.authority.as_str(),
                Some("connection closed before the request was sent".into()),
            )
            .into());
        }
        match conn.sender().try_send_request(req).await {
            Ok(res) => return Ok(h1_answer(&inner, res, conn, reused)),
            Err(mut e) => match e.take_message() {
                // The backend closed a kept-alive connection before the request left: it
                // was not sent, so send it on another connection.
                Some(unsent) if reused => {
                    permit = conn
                        .retire(Closed::Backend)
                        .expect("HTTP/1.1 holds a permit");
                    req = unsent;
                }
                _ => {
                    drop(conn);
                    return Err(e.into_error().into());
                }
            },
        }
    }
}

/// An HTTP/1.1 response, counted; its body gives the connection back, unless the
/// connection now belongs to the upgrade (`hyper::upgrade::on` of the response, or its
/// `switchyard_h1::OnUpgrade`) and leaves the pool and its limit.
fn h1_answer<B, T>(
    inner: &Inner<B>,
    res: Response<T>,
    conn: Release<B>,
    reused: bool,
) -> Response<PooledBody<B>>
where
    T: Into<crate::body::Inner<B>>,
{
    if reused {
        Counters::bump(&inner.counters.reused);
    }
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        drop(conn.retire(Closed::Upgraded));
        return res.map(|body| PooledBody::new(body, None));
    }
    res.map(|body| PooledBody::new(body, Some(conn)))
}

async fn dial_native<B>(inner: &Inner<B>) -> Result<NativeConn, BoxError> {
    let stream = connect(inner).await?;
    Counters::bump(&inner.counters.created);
    Ok(switchyard_h1::Connection::new(
        stream,
        switchyard_h1::ClientConfig::default(),
    ))
}

/// [`send_h1`] on the native engine: the request's task drives its connection, which
/// comes back to the idle set from the response body.
///
/// Not an `async fn`: one keeps its arguments beside its locals, and the request it
/// would keep is the head it sends, a second time. The future (boxed per request) stays a
/// small allocation this way, its captures used in place.
fn send_native<B>(
    inner: Arc<Inner<B>>,
    req: Request<B>,
) -> impl Future<Output = Result<Response<PooledBody<B>>, BoxError>> + Send + 'static
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let (head, mut body) = req.into_parts();
    // The head stays with the attempt while it is sent, and goes back to a retry above
    // (if the request has one to go back to) however this attempt ends.
    let mut head = ReturnHead::new(head);
    prepare_native(&mut head, &inner.host);
    async move {
        let mut permit = acquire(&inner).await?;
        loop {
            let (conn, reused, generation) = match inner.pop_idle(Http1Engine::Native) {
                Some((H1Conn::Native(conn), generation)) => (conn, true, generation),
                Some((H1Conn::Hyper(_), _)) => unreachable!("taken for the native engine"),
                None => {
                    let generation = inner.generation();
                    (Box::pin(dial_native(&inner)).await?, false, generation)
                }
            };
            let release = Release::new(
                inner.clone(),
                Held::H1 {
                    sender: None,
                    _permit: permit,
                    generation,
                },
            );
            match conn.send_head(&mut head, body).await {
                Ok(res) => return Ok(h1_answer(&inner, res, release, reused)),
                Err(mut e) => match e.take_body() {
                    // Nothing of it left on a kept-alive connection the backend closed: send
                    // it on another connection.
                    Some(unsent) if reused => {
                        permit = release
                            .retire(Closed::Backend)
                            .expect("HTTP/1.1 holds a permit");
                        body = unsent;
                    }
                    _ => {
                        drop(release);
                        return Err(e.into_error().into());
                    }
                },
            }
        }
    }
}

async fn send_h2<B>(
    inner: Arc<Inner<B>>,
    mut req: Request<B>,
) -> Result<Response<PooledBody<B>>, BoxError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    prepare_h2(&mut req, &inner.authority, inner.https);
    let conn = h2_stream(&inner).await?;
    let mut sender = conn.sender.clone();
    // From here the stream is accounted for, however the request ends.
    let release = Release::new(inner.clone(), Held::H2 { conn });
    let res = sender.send_request(req).await?;
    Ok(res.map(|body| PooledBody::new(body, Some(release))))
}

/// Reserves a stream on an open HTTP/2 connection with room, dialling one when all are
/// full and the cap allows, or waiting for a stream to end when it does not.
async fn h2_stream<B>(inner: &Arc<Inner<B>>) -> Result<Arc<H2Conn<B>>, BoxError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let config = inner.config.load_full();
    let deadline = Instant::now() + config.wait_timeout;
    let max = config.h2_max_streams;
    let mut waited = false;
    loop {
        let released = inner.h2_released.notified();
        tokio::pin!(released);
        released.as_mut().enable();

        let conns = inner.h2.load_full();
        for conn in conns.iter().filter(|c| !c.sender.is_closed()) {
            let mut n = conn.streams.load(Ordering::Acquire);
            while n < max {
                match conn.streams.compare_exchange_weak(
                    n,
                    n + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        if waited {
                            inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                        }
                        return Ok(conn.clone());
                    }
                    Err(now) => n = now,
                }
            }
        }
        let live = conns.iter().filter(|c| !c.sender.is_closed()).count();
        if live < config.max_connections {
            let _dialling = inner.h2_dial.lock().await;
            if !Arc::ptr_eq(&conns, &inner.h2.load_full()) {
                continue; // someone else changed the set meanwhile: look again
            }
            let generation = inner.generation();
            let sender = Box::pin(dial_h2(inner)).await;
            let sender = match sender {
                Ok(sender) => sender,
                Err(e) => {
                    if waited {
                        inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            };
            if !inner.current(generation) {
                // Dialled with the settings a reconfiguration replaced meanwhile.
                inner.counters.closed(Closed::Evicted);
                continue;
            }
            let fresh = Arc::new(H2Conn {
                sender,
                streams: AtomicUsize::new(0),
                last_used: AtomicU64::new(inner.now_nanos()),
            });
            let mut dead = 0;
            inner.h2.rcu(|conns| {
                dead = conns.iter().filter(|c| c.sender.is_closed()).count();
                let mut next: Vec<_> = conns
                    .iter()
                    .filter(|c| !c.sender.is_closed())
                    .cloned()
                    .collect();
                next.push(fresh.clone());
                next
            });
            for _ in 0..dead {
                inner.counters.closed(Closed::Backend);
            }
            continue;
        }
        if !waited {
            waited = true;
            inner.counters.waiting.fetch_add(1, Ordering::Relaxed);
        }
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            inner.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            Counters::bump(&inner.counters.wait_timeouts);
            return Err(PoolTimeout::new().into());
        }
    }
}

async fn dial_h2<B>(inner: &Inner<B>) -> Result<http2::SendRequest<B>, BoxError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    match connect(inner).await? {
        Stream::Tcp(s) => established(inner, h2.handshake(TokioIo::new(s)).await),
        Stream::Tls(s) => established(inner, h2.handshake(TokioIo::new(*s)).await),
    }
}
