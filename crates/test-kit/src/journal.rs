//! What backends saw: a [`Journal`] of [`Seen`] requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use tokio::time::Instant;

/// The request header whose value groups the attempts of one request: a client that sets
/// it on a request (a proxy forwards it on every attempt) can count the attempts with
/// [`Journal::attempts`] and read each one's number in [`Seen::attempt`].
pub const REQUEST_ID: &str = "x-request-id";

/// One request a scripted backend received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Seen {
    /// The backend's name.
    pub backend: Arc<str>,
    /// The request's method.
    pub method: Method,
    /// Its target, as the backend received it (in process: the whole URI).
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
    /// When its head arrived, since the journal started, on the tokio clock.
    pub at: Duration,
    /// The loopback connection it came on, numbered from 1 per backend (`None` in
    /// process).
    pub connection: Option<u64>,
    /// Its attempt number: 1, plus the requests with the same [`REQUEST_ID`] the journal
    /// saw before it (1 for a request without one).
    pub attempt: u32,
    /// The length of its body, once read whole (`None` until then, or if the client
    /// broke it off).
    pub body_len: Option<usize>,
    /// Whether it was a health check (the backend's health path), answered from the
    /// health script.
    pub health: bool,
    /// The connection it switched to another protocol, if a [`Step::upgrade`] answered
    /// it: the protocol and the bytes that went through, so far.
    ///
    /// [`Step::upgrade`]: crate::Step::upgrade
    pub tunnel: Option<Tunnelled>,
}

/// A connection a backend switched to another protocol ([`Step::upgrade`]), as far as it
/// has gone: what the client sent through it and what the backend sent back.
///
/// [`Step::upgrade`]: crate::Step::upgrade
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tunnelled {
    /// The protocol switched to (the request's `Upgrade`).
    pub protocol: String,
    /// The bytes the backend read from the client, in order.
    pub received: Vec<u8>,
    /// The bytes the backend sent, in order.
    pub sent: Vec<u8>,
    /// Whether the tunnel has ended (closed by either side, or by the backend stopping).
    pub closed: bool,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{:?} {}: {} {}",
            self.at, self.backend, self.method, self.uri
        )?;
        if let Some(conn) = self.connection {
            write!(f, " (connection {conn})")?;
        }
        if self.attempt > 1 {
            write!(f, " (attempt {})", self.attempt)?;
        }
        if let Some(t) = &self.tunnel {
            write!(
                f,
                " (switched to {}: {} bytes in, {} out{})",
                t.protocol,
                t.received.len(),
                t.sent.len(),
                if t.closed { ", closed" } else { "" }
            )?;
        }
        Ok(())
    }
}

/// The requests one backend, or a whole [`Fleet`](crate::Fleet), received, in order of
/// arrival, with their times on the tokio clock. Cheap to clone: clones share the
/// record.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    epoch: Instant,
    // Test bookkeeping, locked briefly to push or copy, never across an `.await`: the
    // simplest correct thing here, and nowhere near a proxy's request path.
    #[allow(clippy::disallowed_types)]
    seen: std::sync::Mutex<Vec<Seen>>,
}

impl Journal {
    /// An empty journal whose times count from now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                seen: Default::default(),
            }),
        }
    }

    /// When it started: [`Seen::at`] counts from here.
    pub fn epoch(&self) -> Instant {
        self.inner.epoch
    }

    /// Every request recorded, health checks included.
    pub fn all(&self) -> Vec<Seen> {
        self.lock().clone()
    }

    /// The requests recorded, without health checks.
    pub fn requests(&self) -> Vec<Seen> {
        self.filtered(|s| !s.health)
    }

    /// The requests `backend` received, without health checks.
    pub fn of(&self, backend: &str) -> Vec<Seen> {
        self.filtered(|s| !s.health && &*s.backend == backend)
    }

    /// The health checks `backend` received.
    pub fn health_checks(&self, backend: &str) -> Vec<Seen> {
        self.filtered(|s| s.health && &*s.backend == backend)
    }

    /// The attempts of the request with [`REQUEST_ID`] `id`, in order.
    pub fn attempts(&self, id: &str) -> Vec<Seen> {
        self.filtered(|s| request_id(&s.headers) == Some(id))
    }

    /// When each request (health checks aside) arrived, since [`Journal::epoch`].
    pub fn times(&self) -> Vec<Duration> {
        self.requests().iter().map(|s| s.at).collect()
    }

    /// The time between each request (health checks aside) and the next.
    pub fn gaps(&self) -> Vec<Duration> {
        gaps(&self.times())
    }

    /// The requests, one a line, for a failure message.
    pub fn describe(&self) -> String {
        describe(&self.all())
    }

    pub(crate) fn record(&self, mut seen: Seen) -> usize {
        let mut all = self.lock();
        let id = request_id(&seen.headers);
        if id.is_some() {
            let earlier = all.iter().filter(|s| request_id(&s.headers) == id).count();
            seen.attempt = u32::try_from(earlier + 1).unwrap_or(u32::MAX);
        }
        all.push(seen);
        all.len() - 1
    }

    pub(crate) fn set_body_len(&self, index: usize, len: usize) {
        self.update(index, |seen| seen.body_len = Some(len));
    }

    /// Changes the request recorded at `index` (as [`Journal::record`] returned it).
    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut Seen)) {
        if let Some(seen) = self.lock().get_mut(index) {
            change(seen);
        }
    }

    fn filtered(&self, keep: impl Fn(&Seen) -> bool) -> Vec<Seen> {
        self.lock().iter().filter(|s| keep(s)).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Seen>> {
        // A panic while holding the lock is a failed test already; the record is still
        // worth reading.
        self.inner.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("requests", &self.lock().len())
            .finish()
    }
}

fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(REQUEST_ID).and_then(|v| v.to_str().ok())
}

pub(crate) fn gaps(times: &[Duration]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

pub(crate) fn describe(seen: &[Seen]) -> String {
    if seen.is_empty() {
        return "  (nothing)".to_owned();
    }
    seen.iter().map(|s| format!("  {s}\n")).collect()
}
